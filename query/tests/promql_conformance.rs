//! Runs Prometheus's PromQL script corpus (`shared/conformance/promql/*.test`)
//! through `pharos_query::promqltest`.
//!
//! Prints `PASS|FAIL name: passed/total` per file, then the native-histogram
//! line and the overall line. Fails if any float case fails (start-timestamp
//! cases included), or a file fails as a whole. Cases that need native
//! histograms are counted on their own line (and do not fail the run) until
//! storage keeps those.
//!
//! Environment: `PHAROS_PROMQL_CORPUS` (corpus directory; default
//! `../../shared/conformance/promql` from this crate), `PHAROS_PROMQL_FILE`
//! (run one file, with or without `.test`), `PHAROS_PROMQL_VERBOSE=1` (one
//! line per failing case), `PHAROS_REQUIRE_PEERS=1` (a missing corpus is an
//! error instead of a skip).

use std::path::PathBuf;

use pharos_query::promqltest::{conformance_engine, run_script, CaseClass, FileReport};

fn corpus_dir() -> PathBuf {
    match std::env::var_os("PHAROS_PROMQL_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/promql"),
    }
}

fn one_line(s: &str) -> String {
    const MAX: usize = 400;
    let s = s.replace('\n', " ");
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

#[test]
fn promql_conformance() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "test"))
            .collect(),
        Err(e) => {
            if std::env::var("PHAROS_REQUIRE_PEERS").as_deref() == Ok("1") {
                panic!("PromQL corpus not readable at {}: {e}", dir.display());
            }
            println!(
                "note: PromQL corpus not found at {} ({e}); skipping",
                dir.display()
            );
            return;
        }
    };
    files.sort();
    if let Ok(only) = std::env::var("PHAROS_PROMQL_FILE") {
        let only = only.trim_end_matches(".test").to_string();
        files.retain(|p| p.file_stem().is_some_and(|s| s.to_string_lossy() == only));
        assert!(
            !files.is_empty(),
            "PHAROS_PROMQL_FILE={only}: no such file in {}",
            dir.display()
        );
    }
    let verbose = std::env::var("PHAROS_PROMQL_VERBOSE").as_deref() == Ok("1");
    let engine = conformance_engine();

    // Engine panics are caught per case; keep their default report off the log.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // A deep expression must not overflow the test thread's small stack
    // (that would abort the whole run instead of failing one case).
    let runner = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            files
                .iter()
                .map(|path| {
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    match std::fs::read_to_string(path) {
                        Ok(text) => run_script(&name, &text, &engine),
                        Err(e) => FileReport {
                            name,
                            file_error: Some(format!("cannot read {}: {e}", path.display())),
                            ..FileReport::default()
                        },
                    }
                })
                .collect::<Vec<FileReport>>()
        })
        .expect("spawn runner thread");
    let reports = runner.join();
    std::panic::set_hook(hook);
    let reports = reports.expect("runner thread panicked outside a case");

    let (mut float_pass, mut float_fail, mut hist_pass, mut hist_fail) = (0, 0, 0, 0);
    let mut broken_files = Vec::new();
    for r in &reports {
        let ok = r.float_ok();
        println!(
            "{} {}: {}/{}",
            if ok { "PASS" } else { "FAIL" },
            r.name,
            r.passed(),
            r.cases.len()
        );
        if let Some(e) = &r.file_error {
            println!("  file error: {}", one_line(e));
            broken_files.push(r.name.clone());
        }
        if verbose {
            for c in &r.cases {
                if let Some(f) = &c.failure {
                    println!(
                        "  {}:{}{} {} :: {}",
                        r.name,
                        c.line,
                        match c.class() {
                            CaseClass::Float => "",
                            CaseClass::NativeHistogram => " [hist]",
                        },
                        c.expr,
                        one_line(f)
                    );
                }
            }
        }
        let (p, f) = r.counts(CaseClass::Float);
        float_pass += p;
        float_fail += f;
        let (p, f) = r.counts(CaseClass::NativeHistogram);
        hist_pass += p;
        hist_fail += f;
    }
    println!("native-histogram cases: {hist_pass} passed, {hist_fail} failed");
    println!(
        "promql conformance: {} passed, {} failed",
        float_pass + hist_pass,
        float_fail + hist_fail
    );
    assert!(
        float_fail == 0 && broken_files.is_empty(),
        "{float_fail} plain float cases failed; files failing as a whole: {broken_files:?} (set PHAROS_PROMQL_VERBOSE=1 for details)"
    );
}

/// Per-file figures of README §6, recomputed from our parse of the scripts.
#[derive(Debug, Default, PartialEq)]
struct Inventory {
    evals: usize,
    instant: usize,
    range: usize,
    has_histogram_literals: bool,
    nhcb_blocks: usize,
    fail: usize,
    warn: usize,
    info: usize,
    ordered: usize,
    scalar: usize,
    string: usize,
    range_vector: usize,
    empty: usize,
    hist_data_evals: usize,
    hist_expected: usize,
}

fn inventory(text: &str) -> Inventory {
    use pharos_query::promqltest::load::loads_histograms;
    use pharos_query::promqltest::script::QueryKind;
    use pharos_query::promqltest::{parse_script, Command};

    let script = parse_script(text).expect("corpus script parses");
    let mut inv = Inventory::default();
    let mut hist_loaded = false;
    for cmd in &script.commands {
        match cmd {
            Command::Clear { .. } => hist_loaded = false,
            Command::Load(l) => {
                hist_loaded |= loads_histograms(l);
                inv.has_histogram_literals |= l.series.iter().any(|s| s.has_histograms());
                inv.nhcb_blocks += usize::from(l.with_nhcb);
            }
            Command::Eval(ev) => {
                inv.evals += 1;
                match ev.kind {
                    QueryKind::Instant { .. } => inv.instant += 1,
                    QueryKind::Range { .. } => inv.range += 1,
                }
                inv.has_histogram_literals |= ev.expects_histograms();
                inv.fail += usize::from(ev.expect_fail);
                inv.warn += usize::from(ev.warn.header_requires || !ev.warn.lines.is_empty());
                inv.info += usize::from(ev.info.header_requires || !ev.info.lines.is_empty());
                inv.ordered += usize::from(ev.ordered);
                inv.scalar += usize::from(ev.scalar.is_some());
                inv.string += usize::from(ev.string.is_some());
                inv.range_vector += usize::from(ev.range_vector.is_some());
                inv.empty += usize::from(
                    !ev.expect_fail
                        && ev.series.is_empty()
                        && ev.scalar.is_none()
                        && ev.string.is_none(),
                );
                inv.hist_data_evals += usize::from(hist_loaded);
                inv.hist_expected += usize::from(ev.expects_histograms());
            }
        }
    }
    inv
}

/// The README's inventory tables (§6) are an independent count of every
/// script's cases and expectation kinds; our script parser must agree with
/// them file by file.
#[test]
fn script_parser_agrees_with_readme_inventory() {
    let dir = corpus_dir();
    let Ok(readme) = std::fs::read_to_string(dir.join("README.md")) else {
        if std::env::var("PHAROS_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("PromQL corpus README not readable in {}", dir.display());
        }
        println!(
            "note: PromQL corpus not found at {}; skipping",
            dir.display()
        );
        return;
    };
    let mut expected: std::collections::BTreeMap<String, Inventory> = Default::default();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| name | … |` splits into an empty first and last cell.
        if cells.len() < 4 || !cells[1].starts_with('`') || !cells[1].ends_with(".test`") {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        let row = &cells[2..cells.len() - 1];
        let num = |s: &str| -> usize {
            match s {
                "—" => 0,
                s => s
                    .parse()
                    .unwrap_or_else(|_| panic!("bad README cell {s:?} in {line}")),
            }
        };
        let inv = expected.entry(name).or_default();
        if row.len() == 7 && matches!(row[3], "yes" | "no") {
            inv.evals = num(row[0]);
            inv.instant = num(row[1]);
            inv.range = num(row[2]);
            inv.has_histogram_literals = row[3] == "yes";
            inv.nhcb_blocks = num(row[4]);
        } else if row.len() == 10 {
            inv.fail = num(row[0]);
            inv.warn = num(row[1]);
            inv.info = num(row[2]);
            inv.ordered = num(row[3]);
            inv.scalar = num(row[4]);
            inv.string = num(row[5]);
            inv.range_vector = num(row[6]);
            inv.empty = num(row[7]);
            inv.hist_data_evals = num(row[8]);
            inv.hist_expected = num(row[9]);
        }
    }
    assert_eq!(expected.len(), 21, "README §6 should list 21 files");
    for (name, want) in &expected {
        let text = std::fs::read_to_string(dir.join(name)).expect("corpus file readable");
        assert_eq!(&inventory(&text), want, "{name}");
    }
}
