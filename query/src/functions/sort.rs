//! `sort`, `sort_desc`, `sort_by_label`, `sort_by_label_desc`. Ordering only
//! matters for instant queries; range queries warn, as Prometheus does.

use std::cmp::Ordering;

use crate::engine::eval::{Evaluator, RSeries, Val};
use crate::engine::QueryError;
use crate::parser::ast::Call;

use super::{string_arg, vector_arg};

/// Natural order: digit runs compare numerically, the rest byte-wise.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            let o = ab[i].cmp(&bb[j]);
            if o != Ordering::Equal {
                return o;
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

fn value_of(s: &RSeries) -> f64 {
    s.points.first().map_or(f64::NAN, |p| p.1)
}

/// Ascending (or descending) with NaN last either way.
fn by_value(a: f64, b: f64, desc: bool) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => {
            let o = a.partial_cmp(&b).unwrap_or(Ordering::Equal);
            if desc {
                o.reverse()
            } else {
                o
            }
        }
    }
}

pub(crate) fn eval(ev: &mut Evaluator<'_>, c: &Call) -> Result<Option<Val>, QueryError> {
    let name = c.func.as_str();
    if !matches!(
        name,
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc"
    ) {
        return Ok(None);
    }
    let Some(arg0) = c.args.first() else {
        return Err(QueryError::bad(format!(
            "wrong number of arguments for function \"{name}\""
        )));
    };
    let mut v = vector_arg(ev, arg0, name)?;
    if ev.qstep != 0 {
        ev.annos.warn(
            "sort is ineffective for range queries since results are always ordered by labels"
                .to_string(),
            c.pos,
        );
        return Ok(Some(Val::Vector(v)));
    }
    match name {
        "sort" | "sort_desc" => {
            let desc = name == "sort_desc";
            v.sort_by(|a, b| by_value(value_of(a), value_of(b), desc));
        }
        _ => {
            let mut names = Vec::new();
            for a in c.args.iter().skip(1) {
                names.push(string_arg(ev, a, name)?);
            }
            let desc = name == "sort_by_label_desc";
            v.sort_by(|a, b| {
                for n in &names {
                    let o = natural_cmp(a.labels.get_or_empty(n), b.labels.get_or_empty(n));
                    if o != Ordering::Equal {
                        return if desc { o.reverse() } else { o };
                    }
                }
                let o = a.labels.cmp(&b.labels);
                if desc {
                    o.reverse()
                } else {
                    o
                }
            });
        }
    }
    Ok(Some(Val::Vector(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("a2", "a10"), Ordering::Less);
        assert_eq!(natural_cmp("a10", "a10"), Ordering::Equal);
        assert_eq!(natural_cmp("b", "a10"), Ordering::Greater);
        assert_eq!(natural_cmp("a", "a1"), Ordering::Less);
    }
}
