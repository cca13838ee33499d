//! Canonical PromQL text for a syntax tree, as Prometheus's `String()` prints
//! it (used by `/api/v1/format_query` and by the conformance runner, which
//! reprints rewritten queries).
//!
//! Invariant: for every tree the parser produces, `parse(print(e))` yields the
//! same tree up to positions (tested over the conformance corpus).
//!
//! Deliberate differences from Prometheus:
//! - A duration written where a number is expected (`1h` in `x > 1h`) prints
//!   as seconds (`3600`): the AST does not keep how a number was written.
//! - `ignoring() group_left` prints in full; Prometheus drops the grouping
//!   when the matching label list is empty, which changes the meaning.
//! - Grouping and matching labels that are not legacy label names are quoted
//!   in both places (Prometheus quotes them only in aggregations).
//! - `+Inf` as the left operand of `^` prints as `Inf` (Prometheus's `+Inf ^ x`
//!   reads back as `+(Inf ^ x)`).
//! - `anchored`/`smoothed` print after `@` and `offset`; fill modifiers after
//!   the group modifiers, spaced like them (`fill (v)`, as the promql-parser
//!   crate prints them), and as `fill` only when both sides share a value.

use std::fmt::{self, Write};

use pharos_storage::labels::{write_go_quoted, MatchType, Matcher};

use super::ast::*;

/// Prometheus's `model.Duration` format (`1h30m`, `90d`, `0s`); weeks and
/// years only when they divide the value exactly. `ms` must be >= 0.
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut ms = ms;
    let mut out = String::new();
    let units: [(&str, i64, bool); 7] = [
        ("y", 365 * 24 * 3_600_000, true),
        ("w", 7 * 24 * 3_600_000, true),
        ("d", 24 * 3_600_000, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1_000, false),
        ("ms", 1, false),
    ];
    for (unit, mult, exact) in units {
        if exact && ms % mult != 0 {
            continue;
        }
        let v = ms / mult;
        if v > 0 {
            let _ = write!(out, "{v}{unit}");
            ms -= v * mult;
        }
    }
    out
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`, with Prometheus's spellings of
/// the special values.
pub fn format_number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        // Rust's Display is the shortest round-tripping decimal, never
        // exponent notation: the same digits Go prints with 'f', -1.
        format!("{v}")
    }
}

fn write_signed_duration(f: &mut fmt::Formatter<'_>, ms: i64) -> fmt::Result {
    if ms < 0 {
        write!(f, "-{}", format_duration(ms.saturating_neg()))
    } else {
        f.write_str(&format_duration(ms))
    }
}

/// Whether a label name needs quotes (Prometheus's `shouldQuoteName`).
fn needs_quotes(name: &str) -> bool {
    name.is_empty()
        || name
            .char_indices()
            .any(|(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
}

fn write_label_name(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    if needs_quotes(name) {
        write_go_quoted(f, name)
    } else {
        f.write_str(name)
    }
}

fn write_labels(f: &mut fmt::Formatter<'_>, names: &[String]) -> fmt::Result {
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_label_name(f, n)?;
    }
    Ok(())
}

fn matcher_string(m: &Matcher) -> String {
    let mut s = String::new();
    if needs_quotes(&m.name) {
        let _ = write_go_quoted(&mut s, &m.name);
    } else {
        s.push_str(&m.name);
    }
    s.push_str(m.kind.as_str());
    let _ = write_go_quoted(&mut s, &m.value);
    s
}

/// Go's `strconv.Quote` for a byte string: invalid UTF-8 bytes as `\xNN`.
fn write_go_quoted_bytes(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    f.write_char('"')?;
    for chunk in b.utf8_chunks() {
        let mut q = String::new();
        write_go_quoted(&mut q, chunk.valid())?;
        f.write_str(&q[1..q.len() - 1])?;
        for byte in chunk.invalid() {
            write!(f, "\\x{byte:02x}")?;
        }
    }
    f.write_char('"')
}

/// Go's `strconv.Quote` of a byte string: what Prometheus prints for a string
/// literal, e.g. in `invalid label name "a\xc5z"` (use with
/// [`StringLiteral::bytes`]).
pub fn go_quote_bytes(b: &[u8]) -> String {
    struct Q<'a>(&'a [u8]);
    impl fmt::Display for Q<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_go_quoted_bytes(f, self.0)
        }
    }
    Q(b).to_string()
}

fn write_at(f: &mut fmt::Formatter<'_>, at: &Option<AtModifier>) -> fmt::Result {
    match at {
        None => Ok(()),
        Some(AtModifier::Timestamp(ms)) => write!(f, " @ {:.3}", *ms as f64 / 1000.0),
        Some(AtModifier::Start) => f.write_str(" @ start()"),
        Some(AtModifier::End) => f.write_str(" @ end()"),
    }
}

fn write_offset(f: &mut fmt::Formatter<'_>, off: &Option<Duration>) -> fmt::Result {
    match off {
        None | Some(Duration::Literal(0)) => Ok(()),
        Some(Duration::Literal(ms)) => {
            f.write_str(" offset ")?;
            write_signed_duration(f, *ms)
        }
        Some(Duration::Expr(e)) => write!(f, " offset {e}"),
    }
}

fn write_extended(f: &mut fmt::Formatter<'_>, vs: &VectorSelector) -> fmt::Result {
    if vs.anchored {
        f.write_str(" anchored")?;
    }
    if vs.smoothed {
        f.write_str(" smoothed")?;
    }
    Ok(())
}

/// The selector part without modifiers: `name{matchers}`.
fn write_selector_body(f: &mut fmt::Formatter<'_>, vs: &VectorSelector) -> fmt::Result {
    let name = vs.name.as_deref().unwrap_or("");
    let mut labels: Vec<String> = vs
        .matchers
        .iter()
        .filter(|m| {
            !(m.name == "__name__"
                && m.kind == MatchType::Equal
                && m.value == name
                && !m.value.is_empty())
        })
        .map(matcher_string)
        .collect();
    f.write_str(name)?;
    if !labels.is_empty() {
        labels.sort();
        write!(f, "{{{}}}", labels.join(","))?;
    }
    Ok(())
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Duration::Literal(ms) => write_signed_duration(f, *ms),
            Duration::Expr(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for DurationOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DurationOp::Add => "+",
            DurationOp::Sub => "-",
            DurationOp::Mul => "*",
            DurationOp::Div => "/",
            DurationOp::Mod => "%",
            DurationOp::Pow => "^",
        })
    }
}

impl fmt::Display for DurationExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationExpr::Number(v) => f.write_str(&format_number(*v)),
            DurationExpr::Duration(ms) => write_signed_duration(f, *ms),
            DurationExpr::Step => f.write_str("step()"),
            DurationExpr::Range => f.write_str("range()"),
            DurationExpr::MinOf(a, b) => write!(f, "min_of({a}, {b})"),
            DurationExpr::MaxOf(a, b) => write!(f, "max_of({a}, {b})"),
            DurationExpr::Neg(e) => write!(f, "-{e}"),
            DurationExpr::Binary { op, lhs, rhs } => write!(f, "{lhs} {op} {rhs}"),
            DurationExpr::Paren(e) => write!(f, "({e})"),
        }
    }
}

impl fmt::Display for VectorSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_selector_body(f, self)?;
        write_at(f, &self.at)?;
        write_offset(f, &self.offset)?;
        write_extended(f, self)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(n) => f.write_str(&format_number(n.value)),
            Expr::String(s) => match &s.raw {
                Some(raw) => write_go_quoted_bytes(f, raw),
                None => write_go_quoted(f, &s.value),
            },
            Expr::VectorSelector(vs) => write!(f, "{vs}"),
            Expr::MatrixSelector(ms) => {
                write_selector_body(f, &ms.vs)?;
                write!(f, "[{}]", ms.range)?;
                write_at(f, &ms.vs.at)?;
                write_offset(f, &ms.vs.offset)?;
                write_extended(f, &ms.vs)
            }
            Expr::Subquery(sq) => {
                write!(f, "{}[{}:", sq.expr, sq.range)?;
                if let Some(step) = &sq.step {
                    if step != &Duration::Literal(0) {
                        write!(f, "{step}")?;
                    }
                }
                f.write_char(']')?;
                write_at(f, &sq.at)?;
                write_offset(f, &sq.offset)
            }
            Expr::Paren(p) => write!(f, "({})", p.expr),
            Expr::Unary(u) => {
                let op = match u.op {
                    UnaryOp::Neg => "-",
                    UnaryOp::Pos => "+",
                };
                write!(f, "{op}{}", u.expr)
            }
            Expr::Binary(b) => {
                match &*b.lhs {
                    // `+Inf ^ x` would read back as `+(Inf ^ x)`: the sign is
                    // a unary operator, which binds looser than `^`.
                    Expr::Number(n) if b.op == BinaryOp::Pow && n.value == f64::INFINITY => {
                        f.write_str("Inf")?
                    }
                    lhs => write!(f, "{lhs}")?,
                }
                write!(f, " {}{} {}", b.op.as_str(), op_modifiers(b), b.rhs)
            }
            Expr::Aggregate(a) => {
                f.write_str(a.op.as_str())?;
                if a.without {
                    f.write_str(" without (")?;
                    write_labels(f, &a.grouping)?;
                    f.write_str(") ")?;
                } else if !a.grouping.is_empty() {
                    f.write_str(" by (")?;
                    write_labels(f, &a.grouping)?;
                    f.write_str(") ")?;
                }
                f.write_char('(')?;
                if let Some(p) = &a.param {
                    write!(f, "{p}, ")?;
                }
                write!(f, "{})", a.expr)
            }
            Expr::Call(c) => {
                write!(f, "{}(", c.func)?;
                for (i, a) in c.args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_char(')')
            }
        }
    }
}

/// The text between a binary operator and its right operand, with a leading
/// space when non-empty: ` bool on (a) group_left (b) fill (0)`.
fn op_modifiers(b: &BinaryExpr) -> String {
    struct M<'a>(&'a BinaryExpr);
    impl fmt::Display for M<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.0.return_bool {
                f.write_str(" bool")?;
            }
            match &self.0.matching {
                Some(vm) => write_matching(f, vm),
                None => Ok(()),
            }
        }
    }
    M(b).to_string()
}

fn write_matching(f: &mut fmt::Formatter<'_>, vm: &VectorMatching) -> fmt::Result {
    let grouped = matches!(vm.card, Cardinality::ManyToOne | Cardinality::OneToMany);
    if vm.on || !vm.labels.is_empty() || grouped {
        f.write_str(if vm.on { " on (" } else { " ignoring (" })?;
        write_labels(f, &vm.labels)?;
        f.write_char(')')?;
        if grouped {
            f.write_str(if vm.card == Cardinality::ManyToOne {
                " group_left ("
            } else {
                " group_right ("
            })?;
            write_labels(f, &vm.include)?;
            f.write_char(')')?;
        }
    }
    match (vm.fill_left, vm.fill_right) {
        (Some(l), Some(r)) if l.to_bits() == r.to_bits() => {
            write!(f, " fill ({})", format_number(l))
        }
        (l, r) => {
            if let Some(l) = l {
                write!(f, " fill_left ({})", format_number(l))?;
            }
            if let Some(r) = r {
                write!(f, " fill_right ({})", format_number(r))?;
            }
            Ok(())
        }
    }
}

/// Lines longer than this are split by [`pretty`].
const MAX_LINE: usize = 100;

/// Prometheus's `Prettify` (the `/api/v1/format_query` output): the canonical
/// text if it fits in 100 characters, otherwise aggregations, calls,
/// parentheses and binary operators are split over lines, each level indented
/// by two spaces. Like Prometheus, a subquery that fits is not indented.
pub fn pretty(e: &Expr) -> String {
    let mut out = String::new();
    pretty_into(&mut out, e, 0);
    out
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn pretty_into(out: &mut String, e: &Expr, level: usize) {
    let flat = e.to_string();
    let split = flat.len() > MAX_LINE;
    match e {
        Expr::Aggregate(a) if split => {
            indent(out, level);
            out.push_str(a.op.as_str());
            if a.without || !a.grouping.is_empty() {
                // The grouping clause as the canonical form prints it.
                let head = Expr::Aggregate(AggregateExpr {
                    expr: Box::new(Expr::Number(NumberLiteral {
                        value: 0.0,
                        pos: PosRange::default(),
                    })),
                    param: None,
                    grouping: a.grouping.clone(),
                    ..a.clone()
                })
                .to_string();
                let clause = head
                    .strip_prefix(a.op.as_str())
                    .and_then(|h| h.strip_suffix("(0)"))
                    .unwrap_or("");
                out.push_str(clause);
            }
            out.push_str("(\n");
            if let Some(p) = &a.param {
                pretty_into(out, p, level + 1);
                out.push_str(",\n");
            }
            pretty_into(out, &a.expr, level + 1);
            out.push('\n');
            indent(out, level);
            out.push(')');
        }
        Expr::Binary(b) if split => {
            pretty_into(out, &b.lhs, level + 1);
            out.push('\n');
            indent(out, level);
            out.push_str(b.op.as_str());
            out.push_str(&op_modifiers(b));
            out.push('\n');
            pretty_into(out, &b.rhs, level + 1);
        }
        Expr::Call(c) if split => {
            indent(out, level);
            out.push_str(&c.func);
            out.push_str("(\n");
            for (i, a) in c.args.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                pretty_into(out, a, level + 1);
            }
            out.push('\n');
            indent(out, level);
            out.push(')');
        }
        Expr::Paren(p) if split => {
            indent(out, level);
            out.push_str("(\n");
            pretty_into(out, &p.expr, level + 1);
            out.push('\n');
            indent(out, level);
            out.push(')');
        }
        Expr::Subquery(sq) => {
            if split {
                pretty_into(out, &sq.expr, level);
                let inner = sq.expr.to_string();
                out.push_str(flat.get(inner.len()..).unwrap_or(""));
            } else {
                out.push_str(&flat);
            }
        }
        Expr::Unary(u) => {
            let mut child = String::new();
            pretty_into(&mut child, &u.expr, level);
            indent(out, level);
            out.push(if u.op == UnaryOp::Neg { '-' } else { '+' });
            out.push_str(child.trim());
        }
        _ => {
            indent(out, level);
            out.push_str(&flat);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, parse_with, ParseOptions};
    use super::*;

    fn canon(s: &str) -> String {
        parse_with(s, &ParseOptions::all())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    #[test]
    fn durations_print_like_model_duration() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(5_400_000), "1h30m");
        assert_eq!(format_duration(90 * 86_400_000), "90d");
        assert_eq!(format_duration(14 * 86_400_000), "2w");
        assert_eq!(format_duration(365 * 86_400_000), "1y");
        assert_eq!(format_duration(1_500), "1s500ms");
    }

    #[test]
    fn numbers_print_in_fixed_notation() {
        assert_eq!(format_number(1e6), "1000000");
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(1e-7), "0.0000001");
        assert_eq!(format_number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_number(f64::NAN), "NaN");
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            ("sum(x) BY (b, a)", "sum by (b, a) (x)"),
            ("SUM without() (x)", "sum without () (x)"),
            ("topk(3, x)", "topk(3, x)"),
            ("a + ON(x) GROUP_LEFT(y) b", "a + on (x) group_left (y) b"),
            ("a and b", "a and b"),
            ("a > bool 1", "a > bool 1"),
            ("x{b='2',a=~\"1\"}", "x{a=~\"1\",b=\"2\"}"),
            (
                "{\"my.metric\", \"a.b\"=\"x\"}",
                "{\"a.b\"=\"x\",__name__=\"my.metric\"}",
            ),
            ("x[5m] offset -1h @ 10", "x[5m] @ 10.000 offset -1h"),
            ("x[100]", "x[1m40s]"),
            ("rate(x[5m])[30m:] @ end()", "rate(x[5m])[30m:] @ end()"),
            ("x[5m:1m] offset 1d", "x[5m:1m] offset 1d"),
            ("-(1)", "-(1)"),
            ("- 1", "-1"),
            ("0x1f + 1e3", "31 + 1000"),
            ("\"a\\xc5z\"", "\"a\\xc5z\""),
            ("x[5m+1m]", "x[5m + 1m]"),
            ("x offset -step()*2", "x offset -step() * 2"),
            ("x[min_of(step()+1,1h)]", "x[min_of(step() + 1, 1h)]"),
            ("a + fill(0) b", "a + fill (0) b"),
            (
                "a + fill_left(5) fill_right(7) b",
                "a + fill_left (5) fill_right (7) b",
            ),
            (
                "a + ignoring() group_left b",
                "a + ignoring () group_left () b",
            ),
            ("rate(x[1m] anchored)", "rate(x[1m] anchored)"),
            ("x @ 100 smoothed", "x @ 100.000 smoothed"),
        ];
        for (input, want) in cases {
            assert_eq!(canon(input), want, "input {input}");
            assert_eq!(canon(want), want, "reprint of {want}");
        }
    }

    #[test]
    fn pretty_splits_long_lines_like_prometheus() {
        let short = "sum by (job) (rate(http_requests_total[5m]))";
        assert_eq!(pretty(&parse(short).unwrap()), short);

        let lhs = r#"sum by (job) (rate(http_requests_total{handler="/api/v1/query"}[5m]))"#;
        let rhs = "sum by (job) (rate(http_requests_total[5m]))";
        let long = format!("{lhs} / on (job) group_left () {rhs}");
        let want = format!("  {lhs}\n/ on (job) group_left ()\n  {rhs}");
        assert_eq!(pretty(&parse(&long).unwrap()), want);

        // Only the aggregation is too long; its operand fits on one line.
        let m = "a_metric_name_of_forty_five_characters_abcdef";
        assert_eq!(m.len(), 45);
        let agg = format!("topk(5, {m} + {m} + x)");
        assert_eq!(
            pretty(&parse(&agg).unwrap()),
            format!("topk(\n  5,\n  {m} + {m} + x\n)")
        );
        let grouped = format!("sum without (a) ({m} + {m} + x)");
        assert_eq!(
            pretty(&parse(&grouped).unwrap()),
            format!("sum without (a) (\n  {m} + {m} + x\n)")
        );
        let neg = format!("-({m} + {m} + xyz)");
        assert_eq!(
            pretty(&parse(&neg).unwrap()),
            format!("-(\n  {m} + {m} + xyz\n)")
        );
        for q in [long.as_str(), agg.as_str(), grouped.as_str(), neg.as_str()] {
            // Pretty output is still PromQL for the same tree.
            let again = parse(&pretty(&parse(q).unwrap())).unwrap();
            assert_eq!(again.to_string(), parse(q).unwrap().to_string());
        }
    }

    #[test]
    fn byte_strings_quote_like_go() {
        assert_eq!(go_quote_bytes(b"a\xc5z"), r#""a\xc5z""#);
        assert_eq!(go_quote_bytes("é\n\"".as_bytes()), r#""é\n\"""#);
    }

    #[test]
    fn stable_parse_prints_too() {
        assert_eq!(parse("up == 1").unwrap().to_string(), "up == 1");
    }
}
