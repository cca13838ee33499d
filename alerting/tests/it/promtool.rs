//! The same rule files and rule unit-test files under `promtool` and our
//! runner: same verdicts, and for our own failing files the same messages.

use std::path::{Path, PathBuf};
use std::process::Command;

use pharos_alerting::rules::check_rule_files;
use pharos_alerting::unittest;

use crate::peers::{find, testdata};

fn test_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            (n.starts_with("pass_") || n.starts_with("fail_")) && n.ends_with(".yml")
        })
        .collect();
    v.sort();
    assert!(v.len() >= 6, "test corpus is missing: {v:?}");
    v
}

/// promtool's error messages for one file (its stderr, without the
/// `  FAILED:` header), and whether it passed.
fn promtool_test(promtool: &Path, file: &Path) -> (bool, Vec<String>) {
    let out = Command::new(promtool)
        .current_dir(testdata())
        .args(["test", "rules"])
        .arg(file.file_name().unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let msgs = err
        .split('\n')
        .collect::<Vec<_>>()
        .join("\n")
        .replace("  FAILED:\n", "");
    (out.status.success(), split_messages(&msgs))
}

/// Each message starts with four spaces and a key (`    name:`,
/// `    alertname:`, `    expr:`, `    rule:`) or with a file name.
fn split_messages(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let starts = line.starts_with("    name:")
            || (line.starts_with("    alertname:")
                && !out
                    .last()
                    .is_some_and(|l| l.ends_with(",") && l.contains("name:") && !l.contains('\n')))
            || line.starts_with("    expr:")
            || line.starts_with("    rule:")
            || !line.starts_with(' ');
        if line.is_empty() {
            continue;
        }
        if starts || out.is_empty() {
            out.push(line.to_string());
        } else if let Some(last) = out.last_mut() {
            last.push('\n');
            last.push_str(line);
        }
    }
    out
}

/// Our PromQL parser places some syntax errors at a different column than
/// Prometheus's (e.g. an unclosed parenthesis at the parenthesis rather than
/// at the end of input); the message itself must match.
fn norm(msgs: &[String]) -> Vec<String> {
    let re = regex::Regex::new(r"\d+:\d+: parse error").unwrap();
    msgs.iter()
        .map(|m| re.replace_all(m, "L:C: parse error").into_owned())
        .collect()
}

fn ours(file: &Path) -> (bool, Vec<String>) {
    let errs = unittest::run_file(file);
    let joined = errs.join("\n");
    (errs.is_empty(), split_messages(&joined))
}

#[test]
fn our_runner_gives_the_expected_verdicts() {
    for f in test_files() {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let (ok, msgs) = ours(&f);
        assert_eq!(ok, name.starts_with("pass_"), "{name}: {msgs:#?}");
        let mut out = Vec::new();
        assert_eq!(unittest::run(std::slice::from_ref(&f), &mut out), ok);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(&format!("Unit Testing:  {}\n", f.display())),
            "{text}"
        );
        assert!(
            text.contains(if ok { "  SUCCESS\n" } else { "  FAILED:\n" }),
            "{text}"
        );
    }
}

#[test]
fn promtool_and_our_runner_agree() {
    let Some(promtool) = find("promtool", &["/usr/bin/promtool"]) else {
        return;
    };
    for f in test_files() {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let (p_ok, p_msgs) = promtool_test(&promtool, &f);
        let (o_ok, o_msgs) = ours(&f);
        assert_eq!(
            p_ok,
            name.starts_with("pass_"),
            "promtool on {name}: {p_msgs:#?}"
        );
        assert_eq!(o_ok, p_ok, "{name}: promtool {p_msgs:#?}\nours {o_msgs:#?}");
        // Rule-file errors name paths and PromQL positions differently;
        // everything else must read the same.
        if name != "fail_bad_rule_file.yml" {
            assert_eq!(norm(&o_msgs), norm(&p_msgs), "{name}");
        } else {
            assert_eq!(
                o_msgs.len(),
                p_msgs.len(),
                "{name}: {o_msgs:#?} vs {p_msgs:#?}"
            );
        }
    }
}

#[test]
fn check_rules_agrees_with_promtool() {
    let files = [
        testdata().join("rules.yml"),
        testdata().join("bad_rules.yml"),
        testdata().join("dup_rules.yml"),
        testdata().join("template_rules.yml"),
    ];
    let report = check_rule_files(&files).unwrap();
    assert!(
        report.files[0].errors.is_empty(),
        "{:?}",
        report.files[0].errors
    );
    assert_eq!(report.files[0].rules, 5);
    assert_eq!(report.files[1].errors.len(), 2);
    let Some(promtool) = find("promtool", &["/usr/bin/promtool"]) else {
        return;
    };
    for f in &files {
        let out = Command::new(&promtool)
            .args(["check", "rules"])
            .arg(f)
            .output()
            .unwrap();
        let one = check_rule_files(std::slice::from_ref(f)).unwrap();
        assert_eq!(out.status.success(), one.success(), "{}", f.display());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (mut o, mut e) = (Vec::new(), Vec::new());
        one.write(&mut o, &mut e).unwrap();
        let o = String::from_utf8(o).unwrap();
        if one.success() {
            assert_eq!(o, stdout, "{}", f.display());
        }
        let perr = String::from_utf8_lossy(&out.stderr);
        let e = String::from_utf8(e).unwrap();
        if one.files[0].errors.is_empty() {
            assert_eq!(e, perr, "{}", f.display());
        }
        // Same problems on the same lines (PromQL columns may differ).
        assert_eq!(
            e.lines().count(),
            perr.lines().count(),
            "ours:\n{e}\npromtool:\n{perr}"
        );
        for (a, b) in e.lines().zip(perr.lines()) {
            let key = |s: &str| {
                s.split(": group")
                    .nth(1)
                    .map(|r| r.split(':').next().unwrap_or("").to_string())
            };
            assert_eq!(key(a), key(b), "ours {a:?} promtool {b:?}");
        }
    }
}
