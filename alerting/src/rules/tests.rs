use std::path::Path;

use super::*;

fn errs(text: &str) -> Vec<String> {
    match parse_file(Path::new("r.yml"), text) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn valid_file_parses() {
    let text = "groups:\n  - name: g1\n    interval: 10s\n    labels:\n      team: a\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n      - alert: Down\n        expr: up == 0\n        for: 1m\n        keep_firing_for: 30s\n        labels:\n          severity: page\n        annotations:\n          summary: \"{{ $labels.instance }} down\"\n";
    let g = parse_file(Path::new("r.yml"), text).unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].interval_ms, Some(10_000));
    assert_eq!(g[0].rules.len(), 2);
    let a = &g[0].rules[1];
    assert_eq!(a.kind, RuleKind::Alerting);
    assert_eq!(a.for_ms, 60_000);
    assert_eq!(a.keep_firing_for_ms, 30_000);
    assert_eq!(a.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(a.line, Some(9));
}

#[test]
fn reports_file_line_and_problem() {
    let e = errs("groups:\n  - name: g1\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(
            "r.yml: 5:15: group \"g1\", rule 1, \"job:up:sum\": could not parse expression: 1:"
        ),
        "{}",
        e[0]
    );
    let e = errs("groups:\n  - name: g1\n    rules:\n      - alert: A\n        expr: up\n        annotations:\n          s: \"{{ $labels.x \"\n");
    assert!(
        e[0].contains(
            "r.yml: 4:16: group \"g1\", rule 1, \"A\": annotation \"s\": template: __alert_A:1:"
        ),
        "{e:?}"
    );
    let e = errs("groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n");
    assert_eq!(
        e,
        vec!["r.yml: 4:5: groupname: \"g\" is repeated in the same file"]
    );
    let e = errs("groups:\n  - name: g\n    rules:\n      - record: x\n        alert: y\n        expr: up\n      - record: \"bad name\"\n        expr: up\n        for: 1m\n");
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[1].contains("invalid field 'for' in recording rule"));
    assert!(e[2].contains("invalid recording rule name: bad name"));
    let e = errs(
        "groups:\n  - name: g\n    rules:\n      - record: x\n        expr: up\n        bogus: 1\n",
    );
    assert!(e[0].starts_with("r.yml: 6:9: yaml: "), "{e:?}");
    assert!(e[0].contains("bogus"), "{e:?}");
    let e = errs("groups:\n  - name: g\n    rules:\n      - alert: x\n        expr: up\n        labels:\n          bad-label: x\n");
    assert!(e[0].contains("invalid label name: bad-label"), "{e:?}");
}

#[test]
fn check_report_prints_like_promtool() {
    let d = tempfile::tempdir().unwrap();
    let good = d.path().join("good.yml");
    std::fs::write(&good, "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: up\n      - record: a\n        expr: up\n").unwrap();
    let bad = d.path().join("bad.yml");
    std::fs::write(
        &bad,
        "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: up(\n",
    )
    .unwrap();
    let r = check_rule_files(&[good.clone(), bad.clone()]).unwrap();
    assert!(!r.success());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    r.write(&mut out, &mut err).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out,
        format!(
            "Checking {}\n\nChecking {}\n\n",
            good.display(),
            bad.display()
        )
    );
    let err = String::from_utf8(err).unwrap();
    assert!(
        err.starts_with(
            "  FAILED:\nlint error 1 duplicate rule(s) found.\nMetric: a\nLabel(s):\nMight cause"
        ),
        "{err}"
    );
    assert!(
        check_rule_files(std::slice::from_ref(&good))
            .unwrap()
            .success(),
        "lint findings do not fail"
    );
    assert!(err.contains("could not parse expression"), "{err}");
    assert!(check_rule_files(&[d.path().join("missing.yml")]).is_err());
}
