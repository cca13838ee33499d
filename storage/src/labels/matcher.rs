//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus's regex semantics:
//! RE2 syntax, fully anchored, `.` matching newlines (Prometheus 3.x).

use std::fmt;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchType {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchType::Equal => "=",
            MatchType::NotEqual => "!=",
            MatchType::Regex => "=~",
            MatchType::NotRegex => "!~",
        }
    }
}

/// One label matcher. A missing label matches as the empty string, so
/// `{a=""}` selects series without `a`, as in Prometheus.
#[derive(Clone)]
pub struct Matcher {
    pub kind: MatchType,
    pub name: String,
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    /// Builds a matcher; regex kinds compile `^(?s:value)$`.
    pub fn new(kind: MatchType, name: &str, value: &str) -> Result<Matcher, regex::Error> {
        let re = match kind {
            MatchType::Regex | MatchType::NotRegex => Some(
                regex::RegexBuilder::new(&format!("^(?s:{value})$"))
                    .size_limit(64 << 20)
                    .build()?,
            ),
            _ => None,
        };
        Ok(Matcher {
            kind,
            name: name.to_string(),
            value: value.to_string(),
            re,
        })
    }

    /// Shorthand for an equality matcher (never fails).
    pub fn equal(name: &str, value: &str) -> Matcher {
        Matcher {
            kind: MatchType::Equal,
            name: name.to_string(),
            value: value.to_string(),
            re: None,
        }
    }

    /// Whether a label value (`""` for absent) satisfies this matcher.
    #[inline]
    pub fn matches(&self, v: &str) -> bool {
        match self.kind {
            MatchType::Equal => v == self.value,
            MatchType::NotEqual => v != self.value,
            MatchType::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchType::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// Whether this matcher matches the empty string (i.e. series lacking the
    /// label). Index lookups treat such matchers as "absent or matching".
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// For `=~` matchers that are a plain alternation of literals
    /// (`a|b|c`), the literals; lets the index look values up directly.
    pub fn set_matches(&self) -> Option<Vec<String>> {
        if self.kind != MatchType::Regex {
            return None;
        }
        // A plain alternation of literals, where a backslash before a
        // punctuation character makes it literal (`a\.b:9100|c\.d:9100`, as
        // Grafana escapes variable values); anything else is a real regex.
        let special = |c: char| "\\.+*?()[]{}^$|".contains(c);
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut chars = self.value.chars();
        while let Some(c) = chars.next() {
            match c {
                '|' => out.push(std::mem::take(&mut cur)),
                '\\' => match chars.next() {
                    Some(e) if e.is_ascii_punctuation() => cur.push(e),
                    _ => return None,
                },
                c if special(c) => return None,
                c => cur.push(c),
            }
        }
        out.push(cur);
        Some(out)
    }
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind && self.name == o.name && self.value == o.value
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name, self.kind.as_str())?;
        super::write_go_quoted(f, &self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_fully_anchored_and_dot_matches_newline() {
        let m = Matcher::new(MatchType::Regex, "a", "fo.").unwrap();
        assert!(m.matches("foo"));
        assert!(!m.matches("xfoo"));
        assert!(!m.matches("fooo"));
        assert!(m.matches("fo\n"));
        let m = Matcher::new(MatchType::Regex, "a", "a|b").unwrap();
        assert!(m.matches("a") && m.matches("b") && !m.matches("ab"));
        assert_eq!(m.set_matches(), Some(vec!["a".into(), "b".into()]));
        let m = Matcher::new(MatchType::Regex, "i", r"a\.b:9100|c\.d:9100").unwrap();
        assert_eq!(
            m.set_matches(),
            Some(vec!["a.b:9100".into(), "c.d:9100".into()])
        );
        for v in ["a.b:9100", "c.d:9100"] {
            assert!(m.matches(v));
        }
        assert!(!m.matches("axb:9100"));
        for not_a_set in [r"a\d", "a.b", "a|b*", "(a|b)"] {
            let m = Matcher::new(MatchType::Regex, "i", not_a_set)
                .unwrap_or_else(|e| panic!("{not_a_set}: {e}"));
            assert_eq!(m.set_matches(), None, "{not_a_set}");
        }
        let nm = Matcher::new(MatchType::NotRegex, "a", ".+").unwrap();
        assert!(nm.matches_empty());
        assert!(Matcher::new(MatchType::Regex, "a", "(").is_err());
        assert_eq!(Matcher::equal("job", "x\"y").to_string(), r#"job="x\"y""#);
    }
}
