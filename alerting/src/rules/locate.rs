//! Finds where groups and rules sit in block-style YAML, for error
//! positions (see the module docs of [`super`]).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuleLoc {
    /// Line and column of the `record`/`alert` value (or of the item).
    pub(crate) name: (usize, usize),
    /// Line and column of the `expr` value.
    pub(crate) expr: Option<(usize, usize)>,
}

#[derive(Debug, Default)]
pub(crate) struct Locations {
    /// Position of each group's `name` key, in order.
    pub(crate) groups: Vec<(usize, usize)>,
    /// Every rule of every group, in document order.
    pub(crate) rules: Vec<RuleLoc>,
}

/// One line as `(indent of the key, key, column of the value, whether the
/// line starts a list item at `item_indent`)`.
struct Line<'a> {
    item_indent: Option<usize>,
    key_indent: usize,
    key: &'a str,
    value_col: usize,
}

fn split(line: &str) -> Option<Line<'_>> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    if rest.is_empty() || rest.starts_with('#') {
        return None;
    }
    let (item_indent, key_indent, body) = match rest.strip_prefix('-') {
        Some(b) if b.is_empty() || b.starts_with(' ') => {
            let b2 = b.trim_start_matches(' ');
            (Some(indent), indent + 1 + (b.len() - b2.len()), b2)
        }
        _ => (None, indent, rest),
    };
    let colon = body
        .find(": ")
        .or_else(|| body.strip_suffix(':').map(|b| b.len()));
    let (key, value_col) = match colon {
        Some(c) if !body.starts_with(['"', '\'', '{', '[']) => {
            let after = &body[c + 1..];
            let pad = after.len() - after.trim_start().len();
            (&body[..c], key_indent + c + 1 + pad + 1)
        }
        _ => ("", key_indent + 1),
    };
    Some(Line {
        item_indent,
        key_indent,
        key,
        value_col,
    })
}

pub(crate) fn locate(text: &str) -> Locations {
    let mut out = Locations::default();
    let mut group_item: Option<usize> = None;
    let mut group_key: Option<usize> = None;
    let mut in_rules_at: Option<usize> = None;
    let mut rule_item: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let ln = i + 1;
        let Some(l) = split(raw) else { continue };
        if let Some(ii) = l.item_indent {
            if group_item.is_none() && out.groups.is_empty() && in_rules_at.is_none() {
                group_item = Some(ii);
            }
            if Some(ii) == group_item {
                out.groups.push((ln, l.key_indent + 1));
                group_key = Some(l.key_indent);
                in_rules_at = None;
                rule_item = None;
                continue;
            }
            if in_rules_at.is_some() && (rule_item.is_none() || rule_item == Some(ii)) {
                rule_item = Some(ii);
                out.rules.push(RuleLoc {
                    name: (ln, l.value_col),
                    expr: None,
                });
            }
        }
        if Some(l.key_indent) == group_key {
            if l.key == "rules" {
                in_rules_at = Some(l.key_indent);
                rule_item = None;
            } else {
                in_rules_at = None;
            }
            if l.key == "name" {
                if let Some(g) = out.groups.last_mut() {
                    *g = (ln, l.key_indent + 1);
                }
            }
            continue;
        }
        if let (Some(ri), Some(r)) = (rule_item, out.rules.last_mut()) {
            if l.key_indent > ri && l.key_indent <= ri + 2 + 1 {
                match l.key {
                    "record" | "alert" => r.name = (ln, l.value_col),
                    "expr" => r.expr = Some((ln, l.value_col)),
                    _ => {}
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_groups_and_rules() {
        let text = "groups:\n  - name: g1\n    rules:\n      - record: a\n        expr: sum(up)\n      - alert: B\n        labels:\n          alert: x\n        expr: up == 0\n  - name: g2\n    rules:\n    - expr: up\n      record: c\n";
        let l = locate(text);
        assert_eq!(l.groups, vec![(2, 5), (10, 5)]);
        assert_eq!(l.rules.len(), 3);
        assert_eq!(l.rules[0].name, (4, 17));
        assert_eq!(l.rules[0].expr, Some((5, 15)));
        assert_eq!(l.rules[1].name, (6, 16));
        assert_eq!(l.rules[1].expr, Some((9, 15)));
        assert_eq!(l.rules[2].name, (13, 15));
        assert_eq!(l.rules[2].expr, Some((12, 13)));
    }
}
