//! `promtool check rules`: validate files and print what promtool prints.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{load_file, RuleError};

/// The outcome for one file.
#[derive(Debug, Clone)]
pub struct FileCheck {
    pub path: PathBuf,
    /// Rules found (when the file is valid).
    pub rules: usize,
    pub errors: Vec<RuleError>,
    /// Rules defined more than once with the same name and labels (a lint
    /// finding, as in promtool: reported, but the check still succeeds).
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
            if !f.errors.is_empty() {
                writeln!(err, "  FAILED:")?;
                for e in &f.errors {
                    writeln!(err, "{e}")?;
                }
            } else if !f.duplicates.is_empty() {
                // A lint finding: promtool reports it as FAILED on stderr
                // but still exits 0.
                writeln!(err, "  FAILED:")?;
                writeln!(
                    err,
                    "lint error {} duplicate rule(s) found.",
                    f.duplicates.len()
                )?;
                for (name, labels) in &f.duplicates {
                    writeln!(err, "Metric: {name}\nLabel(s):")?;
                    for (k, v) in labels {
                        writeln!(err, "\t{k}: {v}")?;
                    }
                }
                writeln!(err, "Might cause inconsistency while recording expressions")?;
            } else {
                writeln!(out, "  SUCCESS: {} rules found", f.rules)?;
            }
            writeln!(out)?;
        }
        Ok(())
    }
}

fn check_one(path: &Path) -> FileCheck {
    match load_file(path) {
        Ok(groups) => {
            let rules = groups.iter().map(|g| g.rules.len()).sum();
            let duplicates = super::duplicate_rules(&groups)
                .into_iter()
                .map(|d| (d.name, d.labels))
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
