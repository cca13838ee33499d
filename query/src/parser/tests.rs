//! Parser tests: grammar, type checks, error texts and positions, limits, and
//! the conformance corpus (every `eval` expression must parse, and must
//! survive print → parse unchanged).

use super::ast::*;
use super::{parse, parse_with, ParseOptions};
use pharos_storage::labels::MatchType;

fn all(s: &str) -> Expr {
    parse_with(s, &ParseOptions::all()).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err_all(s: &str) -> String {
    match parse_with(s, &ParseOptions::all()) {
        Ok(e) => panic!("{s}: expected an error, got {e:?}"),
        Err(e) => e.to_string(),
    }
}

fn err_stable(s: &str) -> String {
    match parse(s) {
        Ok(e) => panic!("{s}: expected an error, got {e:?}"),
        Err(e) => e.to_string(),
    }
}

/// Zeroes every position so trees parsed from different texts compare.
pub(super) fn strip(e: &mut Expr) {
    fn vs(v: &mut VectorSelector) {
        v.pos = PosRange::default();
        // The printer sorts matchers, as Prometheus does.
        v.matchers.sort_by(|a, b| {
            (&a.name, a.kind.as_str(), &a.value).cmp(&(&b.name, b.kind.as_str(), &b.value))
        });
    }
    match e {
        Expr::Number(n) => n.pos = PosRange::default(),
        Expr::String(s) => s.pos = PosRange::default(),
        Expr::VectorSelector(v) => vs(v),
        Expr::MatrixSelector(m) => {
            m.pos = PosRange::default();
            vs(&mut m.vs);
        }
        Expr::Subquery(s) => {
            s.pos = PosRange::default();
            strip(&mut s.expr);
        }
        Expr::Paren(p) => {
            p.pos = PosRange::default();
            strip(&mut p.expr);
        }
        Expr::Unary(u) => {
            u.pos = PosRange::default();
            strip(&mut u.expr);
        }
        Expr::Binary(b) => {
            b.pos = PosRange::default();
            strip(&mut b.lhs);
            strip(&mut b.rhs);
        }
        Expr::Aggregate(a) => {
            a.pos = PosRange::default();
            strip(&mut a.expr);
            if let Some(p) = &mut a.param {
                strip(p);
            }
        }
        Expr::Call(c) => {
            c.pos = PosRange::default();
            c.args.iter_mut().for_each(strip);
        }
    }
}

/// Structural form without positions; Debug so that NaN equals NaN.
fn shape(s: &str) -> String {
    let mut e = all(s);
    strip(&mut e);
    format!("{e:?}")
}

#[test]
fn precedence_and_associativity() {
    assert_eq!(all("1 + 2 * 3").to_string(), "1 + 2 * 3");
    match all("1 + 2 * 3") {
        Expr::Binary(b) => {
            assert_eq!(b.op, BinaryOp::Add);
            assert!(matches!(*b.rhs, Expr::Binary(ref m) if m.op == BinaryOp::Mul));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        shape("(1)"),
        shape("((1))")
            .replacen("Paren(ParenExpr { expr: ", "", 1)
            .replacen(", pos: PosRange { start: 0, end: 0 } })", "", 1)
    );
    // `^` is right-associative, the others left.
    match all("2 ^ 3 ^ 2") {
        Expr::Binary(b) => assert!(matches!(*b.rhs, Expr::Binary(_)), "{b:?}"),
        e => panic!("{e:?}"),
    }
    match all("8 - 3 - 2") {
        Expr::Binary(b) => assert!(matches!(*b.lhs, Expr::Binary(_)), "{b:?}"),
        e => panic!("{e:?}"),
    }
    // `or` < `and`/`unless` < comparisons < `+` < `*`.
    match all("a or b and c unless d == e + f * g") {
        Expr::Binary(b) => {
            assert_eq!(b.op, BinaryOp::Or);
            let Expr::Binary(r) = *b.rhs else { panic!() };
            assert_eq!(r.op, BinaryOp::Unless);
            let Expr::Binary(cmp) = *r.rhs else { panic!() };
            assert_eq!(cmp.op, BinaryOp::Eql);
            let Expr::Binary(add) = *cmp.rhs else {
                panic!()
            };
            assert_eq!(add.op, BinaryOp::Add);
        }
        e => panic!("{e:?}"),
    }
    // Unary minus: tighter than `*`, looser than `^`; folded into numbers.
    match all("-2 ^ 2") {
        Expr::Unary(u) => assert!(matches!(*u.expr, Expr::Binary(_))),
        e => panic!("{e:?}"),
    }
    match all("-2 * 3") {
        Expr::Binary(b) => {
            assert!(matches!(*b.lhs, Expr::Number(ref n) if n.value == -2.0 && n.pos.start == 0))
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(all("--1"), Expr::Number(n) if n.value == 1.0));
    match all("-foo offset 5m") {
        Expr::Unary(u) => assert!(
            matches!(*u.expr, Expr::VectorSelector(ref v) if v.offset == Some(Duration::Literal(300_000)))
        ),
        e => panic!("{e:?}"),
    }
    match all("a atan2 b * c") {
        Expr::Binary(b) => assert_eq!(b.op, BinaryOp::Mul),
        e => panic!("{e:?}"),
    }
}

#[test]
fn numbers_strings_and_durations_as_numbers() {
    let num = |s: &str| match all(s) {
        Expr::Number(n) => n.value,
        e => panic!("{s}: {e:?}"),
    };
    assert_eq!(num("0x1f"), 31.0);
    assert_eq!(num("1e3"), 1000.0);
    assert_eq!(num("1h"), 3600.0);
    assert_eq!(num("-1m30s"), -90.0);
    assert_eq!(num("+Inf"), f64::INFINITY);
    assert_eq!(num("-inf"), f64::NEG_INFINITY);
    assert!(num("NaN").is_nan());
    match all(r#"'a\'b'"#) {
        Expr::String(s) => assert_eq!(s.value, "a'b"),
        e => panic!("{e:?}"),
    }
    match all(r#""a\xc5z""#) {
        Expr::String(s) => assert_eq!(s.bytes(), b"a\xc5z"),
        e => panic!("{e:?}"),
    }
    match all("`a\\b`") {
        Expr::String(s) => assert_eq!(s.value, "a\\b"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn selectors_and_matchers() {
    let Expr::VectorSelector(v) = all(r#"foo{a="1", b!="2", c=~"x|y", d!~"z",}"#) else {
        panic!()
    };
    assert_eq!(v.name.as_deref(), Some("foo"));
    let kinds: Vec<_> = v
        .matchers
        .iter()
        .map(|m| (m.name.as_str(), m.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("a", MatchType::Equal),
            ("b", MatchType::NotEqual),
            ("c", MatchType::Regex),
            ("d", MatchType::NotRegex),
            ("__name__", MatchType::Equal),
        ]
    );
    assert_eq!(v.pos, PosRange::new(0, 37));
    let Expr::VectorSelector(v) = all(r#"{"my.metric", "a.b"="x"}"#) else {
        panic!()
    };
    assert_eq!(v.name, None);
    assert_eq!(v.matchers[0].name, "__name__");
    assert_eq!(v.matchers[0].value, "my.metric");
    assert_eq!(v.matchers[1].name, "a.b");
    // Keywords are metric names where nothing else fits.
    for kw in ["sum", "offset", "by", "fill", "step", "anchored", "SUM"] {
        assert!(
            matches!(all(kw), Expr::VectorSelector(ref v) if v.name.as_deref() == Some(kw)),
            "{kw}"
        );
    }
    assert!(matches!(all("a:b:c"), Expr::VectorSelector(_)));
    assert_eq!(
        err_all(r#"{a=~"("}"#),
        "1:2: parse error: error parsing regexp: missing closing ): `(`"
    );
    assert_eq!(
        err_all(r#"{a!~"*x"}"#),
        "1:2: parse error: error parsing regexp: missing argument to repetition operator: `*x`"
    );
    assert_eq!(
        err_all(r#"{a=~"x\\"}"#),
        "1:2: parse error: error parsing regexp: trailing backslash at end of expression: `x\\`"
    );
    assert_eq!(
        err_all(r#"{a=""}"#),
        "1:1: parse error: vector selector must contain at least one non-empty matcher"
    );
    assert_eq!(
        err_all(r#"foo{__name__="bar"}"#),
        r#"1:1: parse error: metric name must not be set twice: "foo" or "bar""#
    );
}

#[test]
fn ranges_offsets_at_and_subqueries() {
    let Expr::MatrixSelector(m) = all("foo[5m] offset -1m @ 100") else {
        panic!()
    };
    assert_eq!(m.range, Duration::Literal(300_000));
    assert_eq!(m.vs.offset, Some(Duration::Literal(-60_000)));
    assert_eq!(m.vs.at, Some(AtModifier::Timestamp(100_000)));
    assert_eq!(m.pos, PosRange::new(0, 24));
    let Expr::MatrixSelector(m) = all("foo[100]") else {
        panic!()
    };
    assert_eq!(m.range, Duration::Literal(100_000));
    let Expr::VectorSelector(v) = all("foo @ start() offset 5m") else {
        panic!()
    };
    assert_eq!(v.at, Some(AtModifier::Start));
    let Expr::VectorSelector(v) = all("foo OFFSET 5m @ END()") else {
        panic!()
    };
    assert_eq!(v.at, Some(AtModifier::End));
    let Expr::Subquery(s) = all("rate(foo[1m])[5m:] offset 1m") else {
        panic!()
    };
    assert_eq!(s.step, None);
    assert_eq!(s.offset, Some(Duration::Literal(60_000)));
    let Expr::Subquery(s) = all("foo[5m:30s]") else {
        panic!()
    };
    assert_eq!(s.step, Some(Duration::Literal(30_000)));
    // An `@` before the brackets makes it a subquery, not a range.
    assert!(matches!(all("foo @ start()[1h:1m]"), Expr::Subquery(_)));
    assert_eq!(
        err_all("foo offset 1m [5m]"),
        "1:15: parse error: no offset modifiers allowed before range"
    );
    assert_eq!(
        err_all("(foo)[5m]"),
        "1:6: parse error: ranges only allowed for vector selectors"
    );
    assert_eq!(
        err_all("foo offset 1m offset 2m"),
        "1:1: parse error: offset may not be set multiple times"
    );
    assert_eq!(
        err_all("foo @ 1 @ 2"),
        "1:1: parse error: @ <timestamp> may not be set multiple times"
    );
    assert_eq!(
        err_all("1 offset 1m"),
        "1:1: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery"
    );
    assert_eq!(
        err_all("foo[0s]"),
        "1:5: parse error: duration must be greater than 0"
    );
    assert_eq!(
        err_all("foo @ Inf"),
        "1:1: parse error: timestamp out of bounds for @ modifier: +Inf"
    );
    assert_eq!(
        err_all("foo @ 1e20"),
        "1:1: parse error: timestamp out of bounds for @ modifier: 100000000000000000000.000000"
    );
    assert_eq!(
        err_all("1[5m:]"),
        "1:1: parse error: subquery is only allowed on instant vector, got scalar instead"
    );
}

#[test]
fn binary_modifiers() {
    let Expr::Binary(b) = all("a / ON(x, y) Group_Left(z) b") else {
        panic!()
    };
    let m = b.matching.unwrap();
    assert!(m.on);
    assert_eq!(m.labels, vec!["x", "y"]);
    assert_eq!(m.include, vec!["z"]);
    assert_eq!(m.card, Cardinality::ManyToOne);
    let Expr::Binary(b) = all("a and ignoring(x) b") else {
        panic!()
    };
    assert_eq!(b.matching.unwrap().card, Cardinality::ManyToMany);
    let Expr::Binary(b) = all("a == bool 1") else {
        panic!()
    };
    assert!(b.return_bool && b.matching.is_none());
    let Expr::Binary(b) = all("a + fill_left(5) fill_right(-Inf) b") else {
        panic!()
    };
    let m = b.matching.unwrap();
    assert_eq!(
        (m.fill_left, m.fill_right),
        (Some(5.0), Some(f64::NEG_INFINITY))
    );
    let Expr::Binary(b) = all("fill + fill(0) fill") else {
        panic!()
    };
    assert!(matches!(*b.rhs, Expr::VectorSelector(ref v) if v.name.as_deref() == Some("fill")));
    assert_eq!(
        err_all("a + bool b"),
        "1:3: parse error: bool modifier can only be used on comparison operators"
    );
    assert_eq!(
        err_all("1 == 1"),
        "1:3: parse error: comparisons between scalars must use BOOL modifier"
    );
    assert_eq!(
        err_all("a and 1"),
        "1:1: parse error: set operator \"and\" not allowed in binary scalar expression"
    );
    assert_eq!(
        err_all("a and on(x) group_left b"),
        "1:1: parse error: no grouping allowed for \"and\" operation"
    );
    assert_eq!(
        err_all("1 + on(x) a"),
        "1:1: parse error: vector matching only allowed between instant vectors"
    );
    assert_eq!(
        err_all("a + on(x) group_left(x) b"),
        "1:1: parse error: label \"x\" must not occur in ON and GROUP clause at once"
    );
    assert_eq!(
        err_all("a[5m] + 1"),
        "1:1: parse error: binary expression must contain only scalar and instant vector types"
    );
    assert_eq!(
        err_stable("a + fill(0) b"),
        "1:1: parse error: binop fill modifiers are experimental and not enabled"
    );
    assert_eq!(
        err_all("a or fill(0) b"),
        "1:1: parse error: filling in missing series not allowed for set operators"
    );
}

#[test]
fn aggregations_and_calls() {
    for s in [
        "sum by (a) (x)",
        "sum(x) by (a)",
        "SUM(x) BY (a,)",
        "sum by (\"a\") (x)",
    ] {
        let Expr::Aggregate(a) = all(s) else {
            panic!("{s}")
        };
        assert_eq!(a.grouping, vec!["a"], "{s}");
        assert!(!a.without);
    }
    let Expr::Aggregate(a) = all("topk without (b) (3, x)") else {
        panic!()
    };
    assert!(a.without);
    assert!(matches!(a.param.as_deref(), Some(Expr::Number(_))));
    let Expr::Aggregate(a) = all(r#"count_values("l", x)"#) else {
        panic!()
    };
    assert_eq!(a.op, AggregateOp::CountValues);
    assert!(matches!(all("quantile(0.9, x)"), Expr::Aggregate(_)));
    assert!(matches!(all("time()"), Expr::Call(ref c) if c.func == "time"));
    assert!(matches!(all("STep()"), Expr::Call(ref c) if c.func == "step"));
    assert_eq!(
        all("label_join(x, \"a\", \",\", \"b\", \"c\")").value_type(),
        ValueType::Vector
    );
    assert_eq!(all("scalar(x)").value_type(), ValueType::Scalar);
    assert_eq!(all("day_of_month()").value_type(), ValueType::Vector);
    assert_eq!(
        err_all("rate(x)"),
        "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector"
    );
    assert_eq!(
        err_all("abs(x[5m])"),
        "1:5: parse error: expected type instant vector in call to function \"abs\", got range vector"
    );
    assert_eq!(
        err_all("rate(x[5m], 1)"),
        "1:1: parse error: expected 1 argument(s) in call to \"rate\", got 2"
    );
    assert_eq!(
        err_all("round(x, 1, 2)"),
        "1:1: parse error: expected at most 2 argument(s) in call to \"round\", got 3"
    );
    assert_eq!(
        err_all("label_join(x)"),
        "1:1: parse error: expected at least 3 argument(s) in call to \"label_join\", got 1"
    );
    assert_eq!(
        err_all("foo_bar(x)"),
        "1:1: parse error: unknown function with name \"foo_bar\""
    );
    assert_eq!(
        err_all("rate(x[5m],)"),
        "1:11: parse error: trailing commas not allowed in function call args"
    );
    assert_eq!(
        err_stable("mad_over_time(x[5m])"),
        "1:1: parse error: function \"mad_over_time\" is not enabled"
    );
    assert_eq!(
        err_stable("limitk(1, x)"),
        "1:1: parse error: limitk() is experimental and must be enabled with --enable-feature=promql-experimental-functions"
    );
    assert_eq!(
        err_all("sum(1)"),
        "1:5: parse error: expected type instant vector in aggregation expression, got scalar"
    );
    assert_eq!(
        err_all("topk(x, x)"),
        "1:6: parse error: expected type scalar in aggregation parameter, got instant vector"
    );
    assert_eq!(
        err_all("sum(a, b)"),
        "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 1, got 2"
    );
    assert_eq!(
        err_all("sum()"),
        "1:1: parse error: no arguments for aggregate expression provided"
    );
    assert_eq!(
        err_all("info(x, y)"),
        "1:9: parse error: expected label selectors only, got vector selector instead"
    );
    assert_eq!(
        err_all("-x[5m]"),
        "1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got \"range vector\""
    );
}

#[test]
fn duration_expressions() {
    let range = |s: &str| match all(s) {
        Expr::MatrixSelector(m) => m.range,
        Expr::Call(c) => match &c.args[0] {
            Expr::MatrixSelector(m) => m.range.clone(),
            e => panic!("{e:?}"),
        },
        e => panic!("{e:?}"),
    };
    assert_eq!(range("x[(5m)]"), Duration::Literal(300_000));
    assert!(matches!(range("x[5m+1m]"), Duration::Expr(_)));
    assert!(matches!(range("x[step()]"), Duration::Expr(ref e) if **e == DurationExpr::Step));
    assert!(
        matches!(range("x[-5m+35m]"), Duration::Expr(ref e) if matches!(**e, DurationExpr::Binary { ref lhs, .. } if **lhs == DurationExpr::Duration(-300_000)))
    );
    // After `offset`, a bare literal ends the duration: the rest is ordinary
    // arithmetic on the selector.
    match all("x offset 100 + 2") {
        Expr::Binary(b) => assert!(
            matches!(*b.lhs, Expr::VectorSelector(ref v) if v.offset == Some(Duration::Literal(100_000)))
        ),
        e => panic!("{e:?}"),
    }
    match all("x offset -2 ^ 2") {
        Expr::Binary(b) => {
            assert_eq!(b.op, BinaryOp::Pow);
            assert!(
                matches!(*b.lhs, Expr::VectorSelector(ref v) if v.offset == Some(Duration::Literal(-2_000)))
            );
        }
        e => panic!("{e:?}"),
    }
    match all("x offset (-2 ^ 2)") {
        Expr::VectorSelector(v) => assert!(matches!(v.offset, Some(Duration::Expr(_)))),
        e => panic!("{e:?}"),
    }
    match all("x offset -step()*2") {
        Expr::Binary(b) => assert!(matches!(*b.lhs, Expr::VectorSelector(ref v)
            if v.offset == Some(Duration::Expr(Box::new(DurationExpr::Neg(Box::new(DurationExpr::Step))))))),
        e => panic!("{e:?}"),
    }
    let Expr::Subquery(s) = all("x[29s+1s:5s+5s]") else {
        panic!()
    };
    assert!(matches!(s.step, Some(Duration::Expr(_))));
    assert_eq!(
        err_stable("x[5m+1m]"),
        "1:3: parse error: experimental duration expression is not enabled"
    );
    assert_eq!(err_all("x[1m/0]"), "1:5: parse error: division by zero");
    // Plain and signed literals are stable syntax.
    assert!(parse("x offset -5m").is_ok());
    assert!(parse("x[100]").is_ok());
}

#[test]
fn extended_range_selectors() {
    let Expr::Call(c) = all("rate(x[1m] anchored)") else {
        panic!()
    };
    assert!(
        matches!(&c.args[0], Expr::MatrixSelector(m) if m.vs.anchored && m.pos == PosRange::new(5, 19))
    );
    let Expr::VectorSelector(v) = all("x offset -100 smoothed") else {
        panic!()
    };
    assert!(v.smoothed);
    assert_eq!(
        err_stable("x smoothed"),
        "1:1: parse error: smoothed modifier is experimental and not enabled"
    );
    assert_eq!(
        err_all("x anchored smoothed"),
        "1:1: parse error: anchored and smoothed modifiers cannot be used together"
    );
    assert_eq!(
        err_all("x[5m:] anchored"),
        "1:1: parse error: anchored modifier is not supported for subqueries"
    );
}

#[test]
fn metric_selectors_for_the_api() {
    use super::parse_metric_selector;
    let m = parse_metric_selector(r#"up{job="a", x=~"b.*"}"#).unwrap();
    assert_eq!(m.len(), 3);
    assert!(m.iter().any(|m| m.name == "__name__" && m.value == "up"));
    assert_eq!(parse_metric_selector(r#"{"a.b"}"#).unwrap()[0].value, "a.b");
    assert!(parse_metric_selector("up offset 5m").is_err());
    assert!(parse_metric_selector("up[5m]").is_err());
    assert!(parse_metric_selector("sum(up)").is_err());
    assert!(parse_metric_selector("1").is_err());
    assert!(parse_metric_selector("{}").is_err());
    assert!(parse_metric_selector("").is_err());
    assert_eq!(super::parse_duration("1h30m"), Ok(5_400_000));
    assert!(super::parse_duration("1.5h").is_err());
}

#[test]
fn syntax_errors_have_positions() {
    assert_eq!(
        err_all(""),
        "1:1: parse error: no expression found in input"
    );
    assert_eq!(
        err_all("# just a comment"),
        "1:1: parse error: no expression found in input"
    );
    assert_eq!(
        err_all("foo bar"),
        "1:5: parse error: unexpected identifier \"bar\""
    );
    // Prometheus reports an open parenthesis where the input ends, whatever
    // the parser expected there, and before an open bracket.
    for (q, want) in [
        ("sum(x", "1:6"),
        ("sum(rate(requests_total[2m])", "1:29"),
        ("sum(", "1:5"),
        ("sum(x) by (", "1:12"),
        ("(1 +", "1:5"),
        ("rate(x[5m]", "1:11"),
        ("(rate(x)", "1:9"),
        ("sum(x[5m", "1:9"),
        ("sum(\n  x  ", "2:6"),
        ("sum(x # comment", "1:16"),
    ] {
        assert_eq!(
            err_all(q),
            format!("{want}: parse error: unclosed left parenthesis"),
            "{q:?}"
        );
    }
    // An error before the end of input still wins.
    assert_eq!(err_all("sum(x y"), err_all("sum(x y)"),);
    assert_eq!(
        err_all("x)"),
        "1:2: parse error: unexpected right parenthesis \")\""
    );
    assert_eq!(err_all("1 +\n  * 2"), "2:3: parse error: unexpected <op:*>");
    assert_eq!(
        err_all("x offset"),
        "1:9: parse error: unexpected end of input in offset, expected number, duration, step(), or range()"
    );
    assert_eq!(
        err_all("\"abc"),
        "1:1: parse error: unterminated quoted string"
    );
    assert_eq!(err_all("x[5m"), "1:5: parse error: unclosed left bracket");
    assert_eq!(
        err_all("x{a=\"b\""),
        "1:8: parse error: unexpected end of input inside braces"
    );
    let e = parse_with("sum(x) by", &ParseOptions::all()).unwrap_err();
    assert_eq!(e.pos.start, 9);
    // Comments run to the end of the line.
    assert!(matches!(all("a # c\n + b"), Expr::Binary(_)));
}

#[test]
fn limits_fail_cleanly_instead_of_overflowing() {
    // Without the limit, 100,000 levels would need hundreds of megabytes of
    // stack; with it, parsing stops early. A small depth keeps this within a
    // 1 MiB stack even in a debug build (whose frames are several KiB per
    // nesting level).
    let h = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let n = 100_000;
            let opts = ParseOptions {
                max_len: 1 << 24,
                max_depth: 48,
                ..ParseOptions::all()
            };
            let deep = [
                format!("{}1{}", "(".repeat(n), ")".repeat(n)),
                format!("{}1", "-".repeat(n)),
                format!("1{}", "+1".repeat(n)),
                format!("1{}", "^1".repeat(n)),
                format!("{}x{}", "abs(".repeat(n), ")".repeat(n)),
                format!("{}x{}", "sum(".repeat(n), ")".repeat(n)),
                format!("x[{}1{}]", "(".repeat(n), ")".repeat(n)),
                format!("x[1{}]", "+1".repeat(n)),
                format!("x[1{}]", "^1".repeat(n)),
                format!("{}x{}", "last_over_time(".repeat(n), "[1m:])".repeat(n)),
            ];
            for q in &deep {
                let e = parse_with(q, &opts).unwrap_err();
                assert!(e.msg.contains("nested too deeply"), "{}: {e}", &q[..20]);
            }
        })
        .unwrap();
    h.join().unwrap();
    // At the default limit everything works within the 2 MiB stack that
    // spawned threads and tokio workers get, even in a debug build; printing
    // and dropping included.
    let h = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let opts = ParseOptions::all();
            let d = opts.max_depth - 1;
            let ok = format!("{}x{}", "(".repeat(d), ")".repeat(d));
            assert_eq!(parse_with(&ok, &opts).unwrap().to_string(), ok);
            let calls = format!("{}x{}", "abs(".repeat(d - 1), ")".repeat(d - 1));
            assert_eq!(parse_with(&calls, &opts).unwrap().to_string(), calls);
            let aggs = format!("{}x{}", "sum(".repeat(d - 1), ")".repeat(d - 1));
            assert_eq!(parse_with(&aggs, &opts).unwrap().to_string(), aggs);
            let minus = format!("{}x", "-".repeat(d - 1));
            assert!(parse_with(&minus, &opts).is_ok());
            let dur = format!("x[{}1m{}]", "(".repeat(d - 1), ")".repeat(d - 1));
            assert!(parse_with(&dur, &opts).is_ok());
            let long = format!("x{}", " + x".repeat(opts.max_depth - 1));
            assert_eq!(parse_with(&long, &opts).unwrap().to_string(), long);
            let too_long = format!("x{}", " + x".repeat(opts.max_depth));
            assert!(parse_with(&too_long, &opts).is_err());
        })
        .unwrap();
    h.join().unwrap();
    let opts = ParseOptions {
        max_len: 10,
        ..ParseOptions::default()
    };
    assert!(parse_with("aaaaaaaaaaaaa", &opts)
        .unwrap_err()
        .msg
        .contains("limit"));
}

/// One `eval` expression of the conformance corpus.
pub(crate) struct CorpusExpr {
    pub(crate) file: String,
    pub(crate) line: usize,
    pub(crate) expr: String,
}

/// The `eval` expressions of `/work/shared/conformance/promql/*.test`, split
/// with the header regexes of its README §4.10; `None` if the corpus is absent.
pub(crate) fn corpus() -> Option<Vec<CorpusExpr>> {
    let dir = std::path::Path::new("/work/shared/conformance/promql");
    let rd = std::fs::read_dir(dir).ok()?;
    let instant = regex::Regex::new(
        r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$",
    )
    .ok()?;
    let range = regex::Regex::new(
        r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$",
    )
    .ok()?;
    let mut files: Vec<_> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).ok()?;
        let name = f.file_name()?.to_string_lossy().into_owned();
        for (i, line) in text.lines().enumerate() {
            let line_t = line.trim();
            let expr = if let Some(c) = instant.captures(line_t) {
                c.get(3)
            } else if let Some(c) = range.captures(line_t) {
                c.get(5)
            } else {
                None
            };
            if let Some(e) = expr {
                out.push(CorpusExpr {
                    file: name.clone(),
                    line: i + 1,
                    expr: e.as_str().to_string(),
                });
            }
        }
    }
    Some(out)
}

#[test]
fn every_corpus_expression_parses_and_round_trips() {
    let Some(exprs) = corpus() else {
        eprintln!("NOTE: /work/shared/conformance/promql is absent; corpus test skipped");
        return;
    };
    assert!(exprs.len() > 2000, "only {} expressions found", exprs.len());
    let mut failures = Vec::new();
    for c in &exprs {
        let parsed = match parse_with(&c.expr, &ParseOptions::all()) {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("{}:{}: {}\n    {e}", c.file, c.line, c.expr));
                continue;
            }
        };
        let pretty = super::printer::pretty(&parsed);
        match parse_with(&pretty, &ParseOptions::all()) {
            Ok(mut again) => {
                let mut orig = parsed.clone();
                strip(&mut orig);
                strip(&mut again);
                if format!("{orig:?}") != format!("{again:?}") {
                    failures.push(format!(
                        "{}:{}: {}\n    prettified as {pretty} parses differently",
                        c.file, c.line, c.expr
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "{}:{}: {}\n    prettified as {pretty}: {e}",
                c.file, c.line, c.expr
            )),
        }
        let printed = parsed.to_string();
        match parse_with(&printed, &ParseOptions::all()) {
            Ok(mut again) => {
                let mut orig = parsed.clone();
                strip(&mut orig);
                strip(&mut again);
                if format!("{orig:?}") != format!("{again:?}") {
                    failures.push(format!(
                        "{}:{}: {}\n    reprinted as {printed} parses differently",
                        c.file, c.line, c.expr
                    ));
                } else if again.to_string() != printed {
                    failures.push(format!(
                        "{}:{}: {}\n    printing is not idempotent: {printed}",
                        c.file, c.line, c.expr
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "{}:{}: {}\n    reprinted as {printed}: {e}",
                c.file, c.line, c.expr
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus expressions failed:\n{}",
        failures.len(),
        exprs.len(),
        failures.join("\n")
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const TOKENS: &[&str] = &[
        "(",
        ")",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "+",
        "-",
        "*",
        "/",
        "^",
        "%",
        "==",
        "!=",
        ">",
        "<",
        ">=",
        "<=",
        "=~",
        "!~",
        "=",
        "@",
        "and",
        "or",
        "unless",
        "atan2",
        "bool",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "by",
        "without",
        "offset",
        "sum",
        "topk",
        "count_values",
        "rate",
        "abs",
        "time",
        "info",
        "step",
        "start",
        "end",
        "range",
        "min_of",
        "anchored",
        "smoothed",
        "fill",
        "fill_left",
        "fill_right",
        "foo",
        "bar",
        "a",
        "\"x\"",
        "'y'",
        "`z`",
        "1",
        "0x1f",
        "1.5",
        "-2",
        "5m",
        "1h30m",
        "Inf",
        "NaN",
        "[5m]",
        "[5m:1m]",
        "[1m:]",
        "{a=\"b\"}",
        "</",
        ">/",
        "# c\n",
        "\"\\xff\"",
        "(1)",
        "foo[1m]",
        "x offset 1m",
    ];

    fn soup() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(proptest::sample::select(TOKENS), 0..24),
            any::<bool>(),
        )
            .prop_map(|(toks, spaced)| toks.join(if spaced { " " } else { "" }))
    }

    fn check(input: &str) -> Result<(), TestCaseError> {
        // Must never panic; a success must print to text that parses back to
        // the same tree.
        let Ok(e) = parse_with(input, &ParseOptions::all()) else {
            return Ok(());
        };
        let printed = e.to_string();
        let again = parse_with(&printed, &ParseOptions::all());
        prop_assert!(again.is_ok(), "{input:?} printed as {printed:?}: {again:?}");
        let (mut a, mut b) = (e, again.unwrap_or_else(|_| unreachable!()));
        strip(&mut a);
        strip(&mut b);
        prop_assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "{:?} printed as {:?}",
            input,
            printed
        );
        Ok(())
    }

    /// The operator as written between two scalars (comparisons need `bool`,
    /// trimming needs a histogram).
    fn scalar_op(op: &str) -> String {
        let bare = op.trim_end_matches(" bool");
        match bare {
            "==" | "!=" | ">" | "<" | ">=" | "<=" => format!("{bare} bool"),
            "</" | ">/" => "+".to_string(),
            _ => bare.to_string(),
        }
    }

    /// Well-typed random expressions: (instant-vector text, scalar text).
    fn typed() -> impl Strategy<Value = (String, String)> {
        let sel = proptest::sample::select(vec![
            "foo",
            "foo{a=\"b\"}",
            "{__name__=~\"x.*\",b!=\"\"}",
            "bar offset -5m",
            "foo @ 100 offset 1h",
            "{\"my.metric\"}",
            "rate(foo[5m])",
            "rate(foo[1m] anchored)",
            "count_over_time(x[step() + 1m])",
        ])
        .prop_map(str::to_string);
        let num =
            proptest::sample::select(vec!["1", "-2.5", "0x10", "Inf", "NaN", "1e3", "time()"])
                .prop_map(str::to_string);
        (sel, num).prop_recursive(5, 48, 3, |inner| {
            let ops = proptest::sample::select(vec![
                "+", "-", "*", "/", "%", "^", "atan2", "==", "!=", "> bool", "<=", "</",
            ]);
            let vmods = proptest::sample::select(vec![
                "",
                " on (a)",
                " ignoring (b, c)",
                " on () group_left (x)",
                " ignoring (a) group_right ()",
                " fill(0)",
                " fill_left(1) fill_right(-Inf)",
            ]);
            let set = proptest::sample::select(vec!["and", "or", "unless"]);
            let aggs = proptest::sample::select(vec![
                "sum",
                "avg by (a)",
                "max without (b)",
                "count by (\"a.b\")",
            ]);
            (inner.clone(), inner, ops, vmods, set, aggs, 0..12u8).prop_map(
                |((v1, s1), (v2, s2), op, vm, set, agg, pick)| match pick {
                    // Operands are parenthesised: the text must keep the
                    // structure the generator means.
                    0 => (
                        format!("({v1}) {op}{vm} ({v2})"),
                        format!("({s1}) {} ({s2})", scalar_op(op)),
                    ),
                    1 => (format!("({v1}) {op} ({s2})"), format!("({s1})")),
                    2 => (format!("({s1}) {op} ({v2})"), format!("-({s2})")),
                    3 => (
                        format!("({v1}) {set} on (a) ({v2})"),
                        format!("scalar({v2})"),
                    ),
                    4 => (format!("{agg}({v1})"), format!("({s1}) ^ -({s2})")),
                    5 => (format!("topk({s1}, {v2})"), format!("min_of({s1}, {s2})")),
                    6 => (format!("sum({v1}) by (x)"), s2),
                    7 => (format!("-({v2})"), s1),
                    8 => (format!("last_over_time(({v1})[5m:1m] offset 1m)"), s2),
                    9 => (format!("abs({v1})"), s1),
                    10 => (
                        format!("label_replace({v1}, \"a\", \"$1\", \"b\", \"(.*)\")"),
                        s2,
                    ),
                    _ => (format!("({v1})"), s1),
                },
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn typed_expressions_parse_and_round_trip((v, s) in typed()) {
            for q in [&v, &s] {
                let parsed = parse_with(q, &ParseOptions::all());
                prop_assert!(parsed.is_ok(), "{q}: {parsed:?}");
                check(q)?;
            }
        }

        #[test]
        fn token_soup_never_panics_and_round_trips(s in soup()) {
            check(&s)?;
        }

        #[test]
        fn arbitrary_text_never_panics(s in any::<String>()) {
            check(&s)?;
        }
    }
}
