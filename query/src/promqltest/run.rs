//! Running parsed scripts against storage and the engine (README §5).
//!
//! Per file: parse the script, parse every `eval` expression up front (one
//! unparseable expression rejects the file), then run the commands in order
//! over a fresh [`TestStorage`]. Instant cases run the original query, the
//! step-invariance variants (the AST rewritten with `@ T`), and the range-mode
//! check after each passing query; range cases run once.
//!
//! Every case is classified as involving native histograms when histogram
//! samples were loaded since the last `clear` or its expected output has a
//! `{{…}}`; the caller reports those separately because storage and engine
//! hold no histograms yet. A panic inside the parser or engine fails only
//! that case.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use regex::Regex;

use super::compare::{self, Actual, Grid, MatrixSeries};
use super::load::{loads_histograms, TestStorage};
use super::script::{parse_script, AnnotationExpect, Command, EvalCommand, QueryKind, SeriesValue};
use crate::engine::{AnnotationKind, Engine, EngineOptions, QueryError, QueryResult, Value};
use crate::parser::ast::{AtModifier, Expr};
use crate::parser::{parse_with, ParseOptions};

/// The engine configuration upstream runs the corpus with (README §3).
pub fn conformance_engine() -> Engine {
    Engine::new(EngineOptions {
        lookback_delta_ms: 5 * 60_000,
        default_subquery_step_ms: 60_000,
        max_samples: 10_000,
        timeout: std::time::Duration::from_secs(100),
        experimental_functions: true,
        delayed_name_removal: true,
    })
}

/// Outcome of one eval case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// 1-based line of the `eval` header.
    pub line: usize,
    pub expr: String,
    pub involves_histograms: bool,
    /// `None` if the case passed; otherwise the first difference.
    pub failure: Option<String>,
}

/// Outcome of one script file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileReport {
    pub name: String,
    pub cases: Vec<CaseResult>,
    /// The file as a whole failed: script syntax error, an unparseable eval
    /// expression, or a failed `load` (cases after it are counted failed).
    pub file_error: Option<String>,
}

impl FileReport {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.failure.is_none()).count()
    }

    /// Whether the file passes counting only float cases (no native
    /// histograms) and has no file-level error.
    pub fn float_ok(&self) -> bool {
        self.file_error.is_none()
            && self
                .cases
                .iter()
                .all(|c| c.failure.is_none() || c.class() != CaseClass::Float)
    }

    /// `(passed, failed)` over the cases of one class.
    pub fn counts(&self, class: CaseClass) -> (usize, usize) {
        let sel = self.cases.iter().filter(|c| c.class() == class);
        let (mut p, mut f) = (0, 0);
        for c in sel {
            if c.failure.is_none() {
                p += 1;
            } else {
                f += 1;
            }
        }
        (p, f)
    }
}

/// What storage a case needs. Float cases (start timestamps included: the
/// head stores them) gate the run; histogram cases are counted apart until
/// storage holds native histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseClass {
    Float,
    NativeHistogram,
}

impl CaseResult {
    pub fn class(&self) -> CaseClass {
        if self.involves_histograms {
            CaseClass::NativeHistogram
        } else {
            CaseClass::Float
        }
    }
}

/// Functions whose presence disables the step-invariance variants.
const NON_STEP_INVARIANT: [&str; 15] = [
    "time",
    "timestamp",
    "predict_linear",
    "start",
    "end",
    "range",
    "step",
    "minute",
    "hour",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "month",
    "year",
];

/// Runs one script given as text. `name` labels the report.
pub fn run_script(name: &str, text: &str, engine: &Engine) -> FileReport {
    let mut report = FileReport {
        name: name.to_string(),
        ..FileReport::default()
    };
    let script = match parse_script(text) {
        Ok(s) => s,
        Err(e) => {
            report.file_error = Some(format!(
                "script parse error at {name}:{}: {}",
                e.line, e.kind
            ));
            return report;
        }
    };
    // Classify cases and parse every expression before running anything.
    let opts = ParseOptions::all();
    let mut parsed: Vec<Option<Expr>> = Vec::new();
    let mut hist_loaded = false;
    let mut involves: Vec<bool> = Vec::new();
    let mut parse_errors: Vec<String> = Vec::new();
    for cmd in &script.commands {
        match cmd {
            Command::Clear { .. } => {
                hist_loaded = false;
            }
            Command::Load(l) => {
                hist_loaded |= loads_histograms(l);
            }
            Command::Eval(ev) => {
                involves.push(hist_loaded || ev.expects_histograms());
                match guarded(|| parse_with(&ev.expr, &opts)) {
                    Ok(Ok(e)) => parsed.push(Some(e)),
                    Ok(Err(e)) => {
                        parse_errors.push(format!("line {}: {}: {e}", ev.line, ev.expr));
                        parsed.push(None);
                    }
                    Err(panic) => {
                        parse_errors.push(format!(
                            "line {}: {}: parser panicked: {panic}",
                            ev.line, ev.expr
                        ));
                        parsed.push(None);
                    }
                }
            }
        }
    }
    let evals = script.commands.iter().filter_map(|c| match c {
        Command::Eval(ev) => Some(ev.as_ref()),
        _ => None,
    });
    if !parse_errors.is_empty() {
        report.file_error = Some(format!(
            "{} eval expression(s) do not parse, so the whole file fails; first: {}",
            parse_errors.len(),
            parse_errors[0]
        ));
        for ((ev, inv), p) in evals.zip(&involves).zip(&parsed) {
            report.cases.push(CaseResult {
                line: ev.line,
                expr: ev.expr.clone(),
                involves_histograms: *inv,
                failure: Some(match p {
                    Some(_) => "not run: another expression of the file does not parse".into(),
                    None => "expression does not parse".into(),
                }),
            });
        }
        return report;
    }

    let mut storage = TestStorage::new();
    let mut k = 0;
    let mut aborted: Option<String> = None;
    for cmd in &script.commands {
        match cmd {
            Command::Clear { .. } => storage.clear(),
            Command::Load(l) => {
                if aborted.is_some() {
                    continue;
                }
                match storage.load(l) {
                    Ok(_) => {}
                    Err(e) => {
                        let msg = format!("load failed, file aborted: {e}");
                        report.file_error = Some(msg.clone());
                        aborted = Some(msg);
                    }
                }
            }
            Command::Eval(ev) => {
                let failure = match (&aborted, &parsed[k]) {
                    (Some(msg), _) => Some(format!("not run: {msg}")),
                    (None, Some(expr)) => run_eval(engine, &storage, ev, expr).err(),
                    (None, None) => Some("expression does not parse".into()),
                };
                report.cases.push(CaseResult {
                    line: ev.line,
                    expr: ev.expr.clone(),
                    involves_histograms: involves[k],
                    failure,
                });
                k += 1;
            }
        }
    }
    report
}

/// Runs `f`, turning a panic into its message.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into())
    })
}

fn range_fn_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    #[allow(clippy::unwrap_used)]
    R.get_or_init(|| Regex::new(r"(start|end|range|step)\(\)").unwrap())
}

enum Query {
    Instant(i64),
    Range(i64, i64, i64),
}

fn exec(
    engine: &Engine,
    storage: &TestStorage,
    expr: &Expr,
    q: &Query,
) -> Result<QueryResult, QueryError> {
    let head = storage.head();
    let r = guarded(|| match *q {
        Query::Instant(t) => engine.instant_query(head, expr, t),
        Query::Range(s, e, step) => engine.range_query(head, expr, s, e, step),
    });
    match r {
        Ok(r) => r,
        Err(panic) => Err(QueryError::Internal(format!("engine panicked: {panic}"))),
    }
}

/// Runs one case; `Err` is the first failure, naming the query that failed.
fn run_eval(
    engine: &Engine,
    storage: &TestStorage,
    ev: &EvalCommand,
    expr: &Expr,
) -> Result<(), String> {
    match ev.kind {
        QueryKind::Range {
            start_ms,
            end_ms,
            step_ms,
        } => {
            let grid = Grid {
                start_ms,
                end_ms,
                step_ms,
            };
            let res = exec(
                engine,
                storage,
                expr,
                &Query::Range(start_ms, end_ms, step_ms),
            );
            check(ev, res, Some(grid)).map(|_| ())
        }
        QueryKind::Instant { .. } => {
            let t = ev.instant_time().unwrap_or(0);
            let grid = ev.range_vector.map(|g| Grid {
                start_ms: g.start_ms,
                end_ms: g.end_ms,
                step_ms: g.step_ms,
            });
            let range_mode = ev.range_vector.is_none()
                && ev.string.is_none()
                && !range_fn_re().is_match(&ev.expr);
            let res = exec(engine, storage, expr, &Query::Instant(t));
            if check(ev, res, grid)? == Outcome::Succeeded && range_mode {
                range_mode_check(engine, storage, ev, expr, t)
                    .map_err(|e| format!("[range mode at {t}] {e}"))?;
            }
            if has_non_step_invariant_call(expr) {
                return Ok(());
            }
            let mut pinned = expr.clone();
            pin_at(&mut pinned, t);
            let times: Vec<i64> = if t == 0 {
                vec![-1000, 0, 1000]
            } else {
                vec![-10 * t, 0, t / 5, t, 10 * t]
            };
            for vt in times {
                let res = exec(engine, storage, &pinned, &Query::Instant(vt));
                let what = format!("[@{t} variant evaluated at {vt}]");
                if check(ev, res, grid).map_err(|e| format!("{what} {e}"))? == Outcome::Succeeded
                    && range_mode
                {
                    range_mode_check(engine, storage, ev, &pinned, vt)
                        .map_err(|e| format!("{what} [range mode] {e}"))?;
                }
            }
            Ok(())
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    FailedAsExpected,
}

/// Checks a query's error, annotations and result (README §5.5–§5.7).
fn check(
    ev: &EvalCommand,
    res: Result<QueryResult, QueryError>,
    grid: Option<Grid>,
) -> Result<Outcome, String> {
    let res = match res {
        Err(e) => {
            let msg = e.to_string();
            if !ev.expect_fail {
                return Err(format!("unexpected error: {msg}"));
            }
            if let Some(m) = ev.fail_matchers.iter().find(|m| !m.matches(&msg)) {
                return Err(format!("error {msg:?} does not match expected {m}"));
            }
            return Ok(Outcome::FailedAsExpected);
        }
        Ok(r) => r,
    };
    if ev.expect_fail {
        return Err(format!(
            "expected an error, got a {} result",
            res.value.type_name()
        ));
    }
    let rendered = |kind: AnnotationKind| -> Vec<String> {
        res.annotations
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| a.render(&ev.expr))
            .collect()
    };
    check_annotations("warning", &ev.warn, &rendered(AnnotationKind::Warning))?;
    check_annotations("info", &ev.info, &rendered(AnnotationKind::Info))?;
    let actual = to_actual(res.value);
    compare::compare(ev, &actual, grid)?;
    Ok(Outcome::Succeeded)
}

/// The two-way annotation rule of README §5.6.
fn check_annotations(kind: &str, exp: &AnnotationExpect, got: &[String]) -> Result<(), String> {
    if exp.header_requires && got.is_empty() {
        return Err(format!("expected at least one {kind}, got none"));
    }
    if !exp.lines.is_empty() {
        if got.is_empty() {
            return Err(format!("expected a {kind}, got none"));
        }
        for m in exp.lines.iter().flatten() {
            if !got.iter().any(|g| m.matches(g)) {
                return Err(format!("expected {kind} {m} not found; got {got:?}"));
            }
        }
        let any_bare = exp.lines.iter().any(Option::is_none);
        if !any_bare {
            if let Some(g) = got
                .iter()
                .find(|g| !exp.lines.iter().flatten().any(|m| m.matches(g)))
            {
                return Err(format!("unexpected {kind} {g:?}"));
            }
        }
    }
    if exp.forbid && !got.is_empty() {
        return Err(format!("expected no {kind}, got {got:?}"));
    }
    Ok(())
}

fn range_mode_check(
    engine: &Engine,
    storage: &TestStorage,
    ev: &EvalCommand,
    expr: &Expr,
    t: i64,
) -> Result<(), String> {
    let res = exec(
        engine,
        storage,
        expr,
        &Query::Range(t - 60_000, t + 60_000, 60_000),
    )
    .map_err(|e| format!("range query failed: {e}"))?;
    if ev.ordered {
        return Ok(());
    }
    let Actual::Matrix(series) = to_actual(res.value) else {
        return Err("range query did not return a matrix".into());
    };
    compare::check_sorted(&series)?;
    compare::compare(ev, &compare::points_at(ev, &series, t), None)
}

fn to_actual(v: Value) -> Actual {
    match v {
        Value::Scalar { v, .. } => Actual::Scalar(v),
        Value::String { v, .. } => Actual::String(v),
        Value::Vector(samples) => Actual::Vector(
            samples
                .into_iter()
                .map(|s| (s.labels, SeriesValue::Float(s.v)))
                .collect(),
        ),
        Value::Matrix(series) => Actual::Matrix(
            series
                .into_iter()
                .map(|s| MatrixSeries {
                    labels: s.labels,
                    floats: s.points,
                    histograms: Vec::new(),
                })
                .collect(),
        ),
    }
}

/// Whether the expression calls a function that makes `@`-pinned variants
/// meaningless; calls inside subqueries are not looked at (README §5.3).
pub fn has_non_step_invariant_call(e: &Expr) -> bool {
    match e {
        Expr::Call(c) => {
            NON_STEP_INVARIANT.contains(&c.func.as_str())
                || c.args.iter().any(has_non_step_invariant_call)
        }
        Expr::Subquery(_)
        | Expr::Number(_)
        | Expr::String(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_) => false,
        Expr::Paren(p) => has_non_step_invariant_call(&p.expr),
        Expr::Unary(u) => has_non_step_invariant_call(&u.expr),
        Expr::Binary(b) => {
            has_non_step_invariant_call(&b.lhs) || has_non_step_invariant_call(&b.rhs)
        }
        Expr::Aggregate(a) => {
            has_non_step_invariant_call(&a.expr)
                || a.param.as_deref().is_some_and(has_non_step_invariant_call)
        }
    }
}

fn needs_pin(at: &Option<AtModifier>) -> bool {
    !matches!(at, Some(AtModifier::Timestamp(_)))
}

/// The step-invariance rewrite: `@ t` on every selector and subquery without
/// a numeric `@` (`@ start()`/`@ end()` count as none), without descending
/// into subqueries.
pub fn pin_at(e: &mut Expr, t: i64) {
    match e {
        Expr::VectorSelector(vs) => {
            if needs_pin(&vs.at) {
                vs.at = Some(AtModifier::Timestamp(t));
            }
        }
        Expr::MatrixSelector(ms) => {
            if needs_pin(&ms.vs.at) {
                ms.vs.at = Some(AtModifier::Timestamp(t));
            }
        }
        Expr::Subquery(sq) => {
            if needs_pin(&sq.at) {
                sq.at = Some(AtModifier::Timestamp(t));
            }
        }
        Expr::Paren(p) => pin_at(&mut p.expr, t),
        Expr::Unary(u) => pin_at(&mut u.expr, t),
        Expr::Binary(b) => {
            pin_at(&mut b.lhs, t);
            pin_at(&mut b.rhs, t);
        }
        Expr::Aggregate(a) => {
            pin_at(&mut a.expr, t);
            if let Some(p) = a.param.as_deref_mut() {
                pin_at(p, t);
            }
        }
        Expr::Call(c) => c.args.iter_mut().for_each(|a| pin_at(a, t)),
        Expr::Number(_) | Expr::String(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Expr {
        parse_with(s, &ParseOptions::all()).unwrap()
    }

    #[test]
    fn pin_rewrites_selectors_but_not_inside_subqueries() {
        let mut e = parse("sum(rate(a[5m] @ start())) + b @ 100 + max_over_time(c[5m:1m])");
        pin_at(&mut e, 7_000);
        let printed = e.to_string();
        assert!(printed.contains("a[5m] @ 7.000"), "{printed}");
        assert!(printed.contains("b @ 100.000"), "{printed}");
        assert!(printed.contains("c[5m:1m] @ 7.000"), "{printed}");
        assert!(!printed.contains("c @"), "{printed}");
    }

    #[test]
    fn non_step_invariant_calls() {
        assert!(has_non_step_invariant_call(&parse("time() + x")));
        assert!(has_non_step_invariant_call(&parse("sum(hour(x))")));
        assert!(!has_non_step_invariant_call(&parse(
            "max_over_time((time() + x)[5m:])"
        )));
        assert!(!has_non_step_invariant_call(&parse("x @ start()")));
        assert!(!has_non_step_invariant_call(&parse("rate(x[5m])")));
    }

    #[test]
    fn annotation_rules_are_two_way() {
        use super::super::script::MessageMatch;
        let exp = AnnotationExpect {
            header_requires: false,
            lines: vec![Some(MessageMatch::Exact("PromQL warning: a (1:1)".into()))],
            forbid: false,
        };
        assert!(check_annotations("warning", &exp, &["PromQL warning: a (1:1)".into()]).is_ok());
        assert!(check_annotations("warning", &exp, &[]).is_err());
        assert!(check_annotations(
            "warning",
            &exp,
            &[
                "PromQL warning: a (1:1)".into(),
                "PromQL warning: b (1:1)".into()
            ]
        )
        .is_err());
        let bare = AnnotationExpect {
            lines: vec![None],
            ..AnnotationExpect::default()
        };
        assert!(check_annotations("warning", &bare, &["x".into(), "y".into()]).is_ok());
        let none = AnnotationExpect::default();
        assert!(check_annotations("warning", &none, &["x".into()]).is_ok());
        let forbid = AnnotationExpect {
            forbid: true,
            ..AnnotationExpect::default()
        };
        assert!(check_annotations("warning", &forbid, &["x".into()]).is_err());
    }

    #[test]
    fn runs_a_small_script() {
        let engine = conformance_engine();
        let r = run_script(
            "t",
            concat!(
                "load 5m\n",
                "  m{a=\"1\"} 0+10x10\n",
                "\n",
                "eval instant at 50m m\n",
                "  m{a=\"1\"} 100\n",
                "\n",
                "eval instant at 55m m\n",
                "\n",
                "eval instant at 50m m\n",
                "  m{a=\"1\"} 101\n",
                "\n",
                "eval range from 0 to 10m step 5m m\n",
                "  m{a=\"1\"} 0 10 20\n",
            ),
            &engine,
        );
        assert_eq!(r.file_error, None);
        let fails: Vec<_> = r.cases.iter().map(|c| c.failure.is_some()).collect();
        assert_eq!(fails, vec![false, false, true, false], "{:?}", r.cases);
    }

    #[test]
    fn panics_become_case_failures() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = guarded(|| -> i32 { panic!("boom {}", 1) });
        std::panic::set_hook(prev);
        assert_eq!(r, Err("boom 1".to_string()));
        assert_eq!(guarded(|| 7), Ok(7));
    }

    #[test]
    fn failures_range_vectors_and_strings() {
        let r = run_script(
            "t",
            concat!(
                "load 10s\n",
                "  m 1+1x10\n",
                "\n",
                "eval instant at 1m m[1m]\n",
                "  expect range vector from 10s to 1m step 10s\n",
                "  m 2 3 4 5 6 7\n",
                "\n",
                "eval instant at 1m m[1m]\n",
                "  expect range vector from 10s to 1m step 10s\n",
                "  m 2 3 4 5 6 8\n",
                "\n",
                "eval instant at 0 label_replace(m, \"a-b\", \"x\", \"\", \"\")\n",
                "  expect fail regex: invalid (label|destination)\n",
                "\n",
                "eval instant at 0 m\n",
                "  expect fail\n",
                "\n",
                "eval instant at 0 \"s\"\n",
                "  expect string \"s\"\n",
                "\n",
                "eval instant at 0 \"s\"\n",
            ),
            &conformance_engine(),
        );
        assert_eq!(r.file_error, None);
        let fails: Vec<_> = r.cases.iter().map(|c| c.failure.is_some()).collect();
        assert_eq!(
            fails,
            vec![false, true, false, true, false, true],
            "{:?}",
            r.cases
        );
    }

    #[test]
    fn unparseable_expression_fails_the_file() {
        let r = run_script(
            "t",
            "eval instant at 0 1\n  1\n\neval instant at 0 sum(\n",
            &conformance_engine(),
        );
        assert!(r.file_error.is_some());
        assert_eq!(r.cases.len(), 2);
        assert!(!r.float_ok());
    }
}
