//! `promtool check rules`: validate files and print what promtool prints.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{load_file, RuleError, RuleKind};

/// The outcome for one file.
#[derive(Debug, Clone)]
pub struct FileCheck {
    pub path: PathBuf,
    /// Rules found (when the file is valid).
    pub rules: usize,
    pub errors: Vec<RuleError>,
    /// Recording rules defined more than once with the same labels (a lint
    /// warning, as in promtool: it does not fail the check).
    pub duplicates: Vec<(String, BTreeMap<String, String>)>,
}

/// The outcome of checking several files.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub files: Vec<FileCheck>,
}

impl CheckReport {
    /// Whether every file is valid (promtool's exit code 0).
    pub fn success(&self) -> bool {
        self.files.iter().all(|f| f.errors.is_empty())
    }

    /// Prints as `promtool check rules` does: progress and successes on
    /// `out`, failures on `err`.
    pub fn write(&self, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<()> {
        for f in &self.files {
            writeln!(out, "Checking {}", f.path.display())?;
            if f.errors.is_empty() {
                if !f.duplicates.is_empty() {
                    writeln!(out, "  WARNING:")?;
                    writeln!(
                        out,
                        "lint error {} duplicate rule(s) found.",
                        f.duplicates.len()
                    )?;
                    for (name, labels) in &f.duplicates {
                        writeln!(out, "Metric: {name}\nLabel(s):")?;
                        for (k, v) in labels {
                            writeln!(out, "\t{k}: {v}")?;
                        }
                    }
                    writeln!(out, "Might cause inconsistency while recording expressions")?;
                }
                writeln!(out, "  SUCCESS: {} rules found", f.rules)?;
            } else {
                writeln!(err, "  FAILED:")?;
                for e in &f.errors {
                    writeln!(err, "{e}")?;
                }
            }
            writeln!(out)?;
        }
        Ok(())
    }
}

fn check_one(path: &Path) -> FileCheck {
    match load_file(path) {
        Ok(groups) => {
            let mut seen: BTreeMap<(String, Vec<(String, String)>), usize> = BTreeMap::new();
            let mut rules = 0;
            for g in &groups {
                for r in &g.rules {
                    rules += 1;
                    if r.kind == RuleKind::Recording {
                        let key = (
                            r.name.clone(),
                            r.labels
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        );
                        *seen.entry(key).or_default() += 1;
                    }
                }
            }
            let duplicates = seen
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|((name, labels), _)| (name, labels.into_iter().collect()))
                .collect();
            FileCheck {
                path: path.to_path_buf(),
                rules,
                errors: Vec::new(),
                duplicates,
            }
        }
        Err(errors) => FileCheck {
            path: path.to_path_buf(),
            rules: 0,
            errors,
            duplicates: Vec::new(),
        },
    }
}

/// Validates rule files as `promtool check rules FILE...` does. The error
/// case is for a missing file (promtool refuses to start); everything wrong
/// inside a file is in the report.
pub fn check_rule_files(paths: &[PathBuf]) -> Result<CheckReport, RuleError> {
    for p in paths {
        if !p.exists() {
            return Err(RuleError {
                path: p.clone(),
                pos: None,
                context: None,
                msg: "path does not exist".into(),
            });
        }
    }
    Ok(CheckReport {
        files: paths.iter().map(|p| check_one(p)).collect(),
    })
}
