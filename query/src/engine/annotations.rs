//! Warnings and infos attached to a query result, with Prometheus's texts.
//!
//! Invariant: messages are unique (identical texts are merged, keeping the
//! first position), and insertion order is preserved.

use crate::parser::ast::PosRange;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnotationKind {
    Warning,
    Info,
}

/// One annotation. `pos` is the expression node it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub kind: AnnotationKind,
    pub msg: String,
    pub pos: PosRange,
}

impl Annotation {
    /// `PromQL warning: <msg> (<line>:<col>)`, with 1-based line and byte
    /// column of `pos.start` inside `query`.
    pub fn render(&self, query: &str) -> String {
        let prefix = match self.kind {
            AnnotationKind::Warning => "PromQL warning",
            AnnotationKind::Info => "PromQL info",
        };
        let (line, col) = line_col(query, self.pos.start as usize);
        format!("{prefix}: {} ({line}:{col})", self.msg)
    }
}

fn line_col(query: &str, offset: usize) -> (usize, usize) {
    let bytes = query.as_bytes();
    let offset = offset.min(bytes.len());
    let before = &bytes[..offset];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    (line, offset - line_start + 1)
}

/// The set of annotations of one query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    items: Vec<Annotation>,
}

impl Annotations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, kind: AnnotationKind, msg: String, pos: PosRange) {
        if self.items.iter().any(|a| a.msg == msg) {
            return;
        }
        self.items.push(Annotation { kind, msg, pos });
    }

    pub fn warn(&mut self, msg: String, pos: PosRange) {
        self.add(AnnotationKind::Warning, msg, pos);
    }

    pub fn info(&mut self, msg: String, pos: PosRange) {
        self.add(AnnotationKind::Info, msg, pos);
    }

    pub fn merge(&mut self, other: Annotations) {
        for a in other.items {
            self.add(a.kind, a.msg, a.pos);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Annotation> {
        self.items.iter()
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Annotation> {
        self.items
            .iter()
            .filter(|a| a.kind == AnnotationKind::Warning)
    }

    pub fn infos(&self) -> impl Iterator<Item = &Annotation> {
        self.items.iter().filter(|a| a.kind == AnnotationKind::Info)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Every annotation rendered against `query` (see [`Annotation::render`]).
    pub fn render_all(&self, query: &str) -> Vec<String> {
        self.items.iter().map(|a| a.render(query)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_byte_column() {
        let q = "histogram_count(delta(hist_counter[1m] smoothed))";
        let a = Annotation {
            kind: AnnotationKind::Warning,
            msg: "m".into(),
            pos: PosRange::new(22, 34),
        };
        assert_eq!(a.render(q), "PromQL warning: m (1:23)");
    }

    #[test]
    fn merges_identical_messages() {
        let mut a = Annotations::new();
        a.info("x".into(), PosRange::new(0, 1));
        a.info("x".into(), PosRange::new(3, 4));
        a.warn("y".into(), PosRange::new(0, 1));
        assert_eq!(a.len(), 2);
        assert_eq!(a.infos().count(), 1);
    }
}
