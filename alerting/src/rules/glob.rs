//! Expands the `rule_files` globs of the config (`*`, `?` and `[…]` within a
//! path component, as Go's `filepath.Glob`).

use std::path::{Path, PathBuf};

use super::RuleError;

/// Files matching any of `globs`, sorted, each once. A glob without
/// wildcards names a file that must exist only if it has none; Prometheus
/// silently ignores patterns that match nothing.
pub fn expand_globs(globs: &[String]) -> Result<Vec<PathBuf>, RuleError> {
    let mut out = Vec::new();
    for g in globs {
        let p = Path::new(g);
        let mut bases = vec![PathBuf::new()];
        for comp in p.components() {
            let c = comp.as_os_str().to_string_lossy().to_string();
            let mut next = Vec::new();
            for b in &bases {
                if !has_meta(&c) {
                    next.push(b.join(comp.as_os_str()));
                    continue;
                }
                let dir = if b.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    b.as_path()
                };
                let rd = match std::fs::read_dir(dir) {
                    Ok(rd) => rd,
                    Err(_) => continue,
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect();
                names.sort();
                for n in names {
                    if matches(c.as_bytes(), n.as_bytes()) {
                        next.push(b.join(&n));
                    }
                }
            }
            bases = next;
        }
        for b in bases {
            if b.is_file() {
                out.push(b);
            } else if !has_meta(g) {
                return Err(RuleError {
                    path: b,
                    pos: None,
                    context: None,
                    msg: "no such rule file".into(),
                });
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Shell-style match of one component.
fn matches(pat: &[u8], name: &[u8]) -> bool {
    match pat.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|k| matches(&pat[1..], &name[k..])),
        Some(b'?') => !name.is_empty() && matches(&pat[1..], &name[1..]),
        Some(b'[') => {
            let Some(end) = pat.iter().position(|&c| c == b']') else {
                return false;
            };
            let Some((&c, rest)) = name.split_first() else {
                return false;
            };
            let mut set = &pat[1..end];
            let negate = set.first() == Some(&b'^');
            if negate {
                set = &set[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && matches(&pat[end + 1..], rest)
        }
        Some(&p) => name.first() == Some(&p) && matches(&pat[1..], &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        assert!(matches(b"*.yml", b"a.yml"));
        assert!(!matches(b"*.yml", b"a.yaml"));
        assert!(matches(b"r?les-[0-9].y*", b"rules-1.yaml"));
        assert!(!matches(b"[^a]x", b"ax"));
    }

    #[test]
    fn expands_directory_globs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b.yml"), "").unwrap();
        std::fs::write(d.path().join("a.yml"), "").unwrap();
        std::fs::write(d.path().join("c.txt"), "").unwrap();
        let g = format!("{}/*.yml", d.path().display());
        let files = expand_globs(&[g.clone(), g]).unwrap();
        assert_eq!(files, vec![d.path().join("a.yml"), d.path().join("b.yml")]);
        assert!(expand_globs(&[format!("{}/none.yml", d.path().display())]).is_err());
    }
}
