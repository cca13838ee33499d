//! Relabeling: the `relabel_configs` / `metric_relabel_configs` rules, their
//! YAML form and their application to a label set, with Prometheus's
//! semantics — regexes fully anchored, default regex `(.*)`, separator `;`,
//! replacement `$1` (`$1`, `${1}`, `$name`, `${name}` expand capture
//! groups; `$$` is a literal `$`), `hashmod` on the low 8 bytes of the MD5
//! digest read big-endian.
//!
//! Must not: know about targets or scraping; it maps labels to labels.

use std::fmt;

use md5::{Digest, Md5};
use pharos_storage::labels::{is_valid_label_name, Labels, LabelsBuilder};
use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A relabel action; YAML names are matched case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        const ALL: [Action; 11] = [
            Action::Replace,
            Action::Keep,
            Action::Drop,
            Action::KeepEqual,
            Action::DropEqual,
            Action::HashMod,
            Action::LabelMap,
            Action::LabelDrop,
            Action::LabelKeep,
            Action::Lowercase,
            Action::Uppercase,
        ];
        ALL.into_iter().find(|a| a.as_str().eq_ignore_ascii_case(s))
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Action::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown relabel action {s:?}")))
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A regex as written in the config, compiled fully anchored.
#[derive(Clone)]
pub struct RelabelRegex {
    source: String,
    re: Regex,
}

impl RelabelRegex {
    pub fn new(source: &str) -> Result<RelabelRegex, regex::Error> {
        Ok(RelabelRegex {
            source: source.to_string(),
            re: Regex::new(&format!("^(?:{})$", ascii_perl_classes(source)))?,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }
}

impl Default for RelabelRegex {
    fn default() -> Self {
        RelabelRegex {
            source: "(.*)".into(),
            re: Regex::new("^(?:(.*))$").unwrap_or_else(|_| unreachable!("constant regex")),
        }
    }
}

impl PartialEq for RelabelRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for RelabelRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl<'de> Deserialize<'de> for RelabelRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelabelRegex::new(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid regex {s:?}: {e}")))
    }
}

impl Serialize for RelabelRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Go's RE2 (which Prometheus uses) gives `\d`, `\w`, `\s` and `\b` their
/// ASCII meaning; Rust's regex gives them Unicode meaning. Rewrites them
/// (and their negations) as ASCII classes; nested classes keep this valid
/// inside `[...]` too.
fn ascii_perl_classes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str("[0-9]"),
            Some('D') => out.push_str("[^0-9]"),
            Some('w') => out.push_str("[0-9A-Za-z_]"),
            Some('W') => out.push_str("[^0-9A-Za-z_]"),
            Some('s') => out.push_str("[\\t\\n\\x0C\\r ]"),
            Some('S') => out.push_str("[^\\t\\n\\x0C\\r ]"),
            Some('b') => out.push_str("(?-u:\\b)"),
            Some('B') => out.push_str("(?-u:\\B)"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn default_separator() -> String {
    ";".into()
}

fn default_replacement() -> String {
    "$1".into()
}

/// One relabeling rule as written in YAML.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawRelabelConfig {
    #[serde(default)]
    source_labels: Vec<String>,
    #[serde(default = "default_separator")]
    separator: String,
    #[serde(default)]
    target_label: String,
    #[serde(default)]
    regex: RelabelRegex,
    #[serde(default)]
    modulus: u64,
    #[serde(default = "default_replacement")]
    replacement: String,
    #[serde(default)]
    action: Action,
}

/// One validated relabeling rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRelabelConfig", into = "RawRelabelConfig")]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub separator: String,
    pub target_label: String,
    pub regex: RelabelRegex,
    pub modulus: u64,
    pub replacement: String,
    pub action: Action,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        RelabelConfig {
            source_labels: Vec::new(),
            separator: default_separator(),
            target_label: String::new(),
            regex: RelabelRegex::default(),
            modulus: 0,
            replacement: default_replacement(),
            action: Action::Replace,
        }
    }
}

impl From<RelabelConfig> for RawRelabelConfig {
    fn from(c: RelabelConfig) -> Self {
        RawRelabelConfig {
            source_labels: c.source_labels,
            separator: c.separator,
            target_label: c.target_label,
            regex: c.regex,
            modulus: c.modulus,
            replacement: c.replacement,
            action: c.action,
        }
    }
}

/// Target labels of `replace` may use `$1`/`${name}` templates.
fn is_valid_target_template(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('$') {
            let end = if let Some(inner) = r.strip_prefix('{') {
                match inner.find('}') {
                    Some(i) if i > 0 => i + 2,
                    _ => return false,
                }
            } else {
                r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(r.len())
            };
            if end == 0 {
                return false;
            }
            rest = &r[end..];
        } else {
            let c = rest.as_bytes()[0];
            if !(c.is_ascii_alphanumeric() || c == b'_') {
                return false;
            }
            rest = &rest[1..];
        }
    }
    !s.as_bytes()[0].is_ascii_digit()
}

impl TryFrom<RawRelabelConfig> for RelabelConfig {
    type Error = String;

    fn try_from(r: RawRelabelConfig) -> Result<Self, String> {
        let c = RelabelConfig {
            source_labels: r.source_labels,
            separator: r.separator,
            target_label: r.target_label,
            regex: r.regex,
            modulus: r.modulus,
            replacement: r.replacement,
            action: r.action,
        };
        c.validate()?;
        Ok(c)
    }
}

impl RelabelConfig {
    /// Prometheus's checks on a rule, with its messages.
    pub fn validate(&self) -> Result<(), String> {
        let a = self.action;
        let name = a.as_str();
        for s in &self.source_labels {
            if !is_valid_label_name(s) {
                return Err(format!("{s:?} is not a valid source label name"));
            }
        }
        if a == Action::HashMod && self.modulus == 0 {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let needs_target = matches!(
            a,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && self.target_label.is_empty() {
            return Err(format!(
                "relabel configuration for {name} action requires 'target_label' value"
            ));
        }
        if a == Action::Replace && !is_valid_target_template(&self.target_label) {
            return Err(format!(
                "{:?} is invalid 'target_label' for {name} action",
                self.target_label
            ));
        }
        if matches!(
            a,
            Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        ) && !is_valid_label_name(&self.target_label)
        {
            return Err(format!(
                "{:?} is invalid 'target_label' for {name} action",
                self.target_label
            ));
        }
        let defaults = RelabelConfig::default();
        if matches!(
            a,
            Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual
        ) && self.replacement != defaults.replacement
        {
            return Err(format!("'replacement' can not be set for {name} action"));
        }
        if matches!(a, Action::KeepEqual | Action::DropEqual)
            && (self.regex != defaults.regex
                || self.modulus != 0
                || self.separator != defaults.separator)
        {
            return Err(format!(
                "{name} action requires only 'source_labels' and 'target_label', and no other fields"
            ));
        }
        if matches!(a, Action::LabelDrop | Action::LabelKeep)
            && (!self.source_labels.is_empty()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || self.separator != defaults.separator
                || self.replacement != defaults.replacement)
        {
            return Err(format!(
                "{name} action requires only 'regex', and no other fields"
            ));
        }
        if a == Action::LabelMap && !is_valid_target_template(&self.replacement) {
            return Err(format!(
                "{:?} is invalid 'replacement' for {name} action",
                self.replacement
            ));
        }
        Ok(())
    }
}

/// Prometheus's `hashmod`: the low 8 bytes of MD5, big-endian, mod `m`.
pub fn hashmod(value: &str, modulus: u64) -> u64 {
    let digest = Md5::digest(value.as_bytes());
    let mut low = [0u8; 8];
    low.copy_from_slice(&digest[8..16]);
    u64::from_be_bytes(low) % modulus.max(1)
}

/// Applies `rules` in order; `None` when a rule drops the set.
pub fn process(labels: &Labels, rules: &[RelabelConfig]) -> Option<Labels> {
    if rules.is_empty() {
        return Some(labels.clone());
    }
    let mut lb = labels.builder();
    for r in rules {
        if !apply(&mut lb, r) {
            return None;
        }
    }
    Some(lb.build())
}

/// Applies one rule to `lb`; false means drop.
pub fn apply(lb: &mut LabelsBuilder, r: &RelabelConfig) -> bool {
    let val = {
        let mut v = String::new();
        for (i, s) in r.source_labels.iter().enumerate() {
            if i > 0 {
                v.push_str(&r.separator);
            }
            v.push_str(lb.get(s).unwrap_or(""));
        }
        v
    };
    match r.action {
        Action::Drop => return !r.regex.is_match(&val),
        Action::Keep => return r.regex.is_match(&val),
        Action::DropEqual => return lb.get(&r.target_label).unwrap_or("") != val,
        Action::KeepEqual => return lb.get(&r.target_label).unwrap_or("") == val,
        Action::Replace => {
            let Some(caps) = r.regex.re.captures(&val) else {
                return true;
            };
            let mut target = String::new();
            caps.expand(&r.target_label, &mut target);
            if !is_valid_label_name(&target) {
                return true;
            }
            let mut res = String::new();
            caps.expand(&r.replacement, &mut res);
            if res.is_empty() {
                lb.del(&target);
            } else {
                lb.set(&target, &res);
            }
        }
        Action::Lowercase => {
            lb.set(&r.target_label, &val.to_lowercase());
        }
        Action::Uppercase => {
            lb.set(&r.target_label, &val.to_uppercase());
        }
        Action::HashMod => {
            lb.set(&r.target_label, &hashmod(&val, r.modulus).to_string());
        }
        Action::LabelMap => {
            let current = lb.build();
            for (name, value) in current.iter() {
                if r.regex.is_match(name) {
                    let new_name = r.regex.re.replace_all(name, r.replacement.as_str());
                    lb.set(&new_name, value);
                }
            }
        }
        Action::LabelDrop => {
            lb.retain(|n| !r.regex.is_match(n));
        }
        Action::LabelKeep => {
            lb.retain(|n| r.regex.is_match(n));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Vec<RelabelConfig> {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    /// Each case: rules, input, expected output (None = dropped). Built from
    /// Prometheus's documented relabeling behaviour.
    #[test]
    fn table() {
        let cases: Vec<(&str, Labels, Option<Labels>)> = vec![
            // Default action replace, default regex (.*), replacement $1.
            (
                "- source_labels: [a]\n  target_label: d",
                ls(&[("a", "foo")]),
                Some(ls(&[("a", "foo"), ("d", "foo")])),
            ),
            // Source labels joined with the default separator ';'.
            (
                "- source_labels: [a, b]\n  regex: 'f(.*);(.*)r'\n  target_label: a\n  replacement: 'ch${1}-ch${2}'",
                ls(&[("a", "foo"), ("b", "bar"), ("c", "baz")]),
                Some(ls(&[("a", "choo-chba"), ("b", "bar"), ("c", "baz")])),
            ),
            // Regexes are fully anchored: 'o' does not match "foo".
            (
                "- source_labels: [a]\n  regex: o\n  target_label: x\n  replacement: hit",
                ls(&[("a", "foo")]),
                Some(ls(&[("a", "foo")])),
            ),
            // A missing source label is the empty string.
            (
                "- source_labels: [missing]\n  regex: '(.*)'\n  target_label: x\n  replacement: 'v$1'",
                ls(&[("a", "foo")]),
                Some(ls(&[("a", "foo"), ("x", "v")])),
            ),
            // Empty replacement result deletes the target label.
            (
                "- source_labels: [missing]\n  target_label: a",
                ls(&[("a", "foo"), ("b", "x")]),
                Some(ls(&[("b", "x")])),
            ),
            // As in Prometheus 2.42 (checked against it): '.' does not
            // match a newline.
            (
                "- source_labels: [a]\n  regex: 'a.b'\n  target_label: m\n  replacement: y",
                ls(&[("a", "a\nb")]),
                Some(ls(&[("a", "a\nb")])),
            ),
            // Named groups and $$.
            (
                "- source_labels: [a]\n  regex: '(?P<first>\\w)(?P<rest>.*)'\n  target_label: b\n  replacement: '$${rest}=${rest}$first'",
                ls(&[("a", "foo")]),
                Some(ls(&[("a", "foo"), ("b", "${rest}=oof")])),
            ),
            // Templated target label; an invalid expanded name leaves the set alone.
            (
                "- source_labels: [a]\n  regex: '(.*)'\n  target_label: 'lbl_${1}'\n  replacement: x",
                ls(&[("a", "foo")]),
                Some(ls(&[("a", "foo"), ("lbl_foo", "x")])),
            ),
            (
                "- source_labels: [a]\n  regex: '(.*)'\n  target_label: '${1}'\n  replacement: x",
                ls(&[("a", "1bad")]),
                Some(ls(&[("a", "1bad")])),
            ),
            // $10 is group 10, not group 1 followed by 0 (missing → empty).
            (
                "- source_labels: [a]\n  regex: '(f)(o)o'\n  target_label: b\n  replacement: '$10-${1}0'",
                ls(&[("a", "foo")]),
                Some(ls(&[("a", "foo"), ("b", "-f0")])),
            ),
            // keep / drop.
            (
                "- source_labels: [a]\n  regex: 'f.*'\n  action: keep",
                ls(&[("a", "foo")]),
                Some(ls(&[("a", "foo")])),
            ),
            (
                "- source_labels: [a]\n  regex: 'f.*'\n  action: keep",
                ls(&[("a", "boo")]),
                None,
            ),
            (
                "- source_labels: [a]\n  regex: 'f.*'\n  action: drop",
                ls(&[("a", "foo")]),
                None,
            ),
            (
                "- source_labels: [a]\n  regex: 'f.*'\n  action: DROP",
                ls(&[("a", "boo")]),
                Some(ls(&[("a", "boo")])),
            ),
            // keep with a regex matching the empty string keeps sets without the label.
            (
                "- source_labels: [a]\n  regex: 'x|'\n  action: keep",
                ls(&[("b", "1")]),
                Some(ls(&[("b", "1")])),
            ),
            // keepequal / dropequal compare the joined sources to target_label.
            (
                "- source_labels: [a]\n  target_label: b\n  action: keepequal",
                ls(&[("a", "1"), ("b", "1")]),
                Some(ls(&[("a", "1"), ("b", "1")])),
            ),
            (
                "- source_labels: [a]\n  target_label: b\n  action: keepequal",
                ls(&[("a", "1"), ("b", "2")]),
                None,
            ),
            (
                "- source_labels: [a]\n  target_label: b\n  action: dropequal",
                ls(&[("a", "1"), ("b", "1")]),
                None,
            ),
            (
                "- source_labels: [a]\n  target_label: b\n  action: dropequal",
                ls(&[("a", "1")]),
                Some(ls(&[("a", "1")])),
            ),
            // hashmod.
            (
                "- source_labels: [c]\n  target_label: d\n  action: hashmod\n  modulus: 1000",
                ls(&[("a", "foo"), ("b", "bar"), ("c", "baz")]),
                Some(ls(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")])),
            ),
            // labelmap copies matching names, keeping the originals.
            (
                "- regex: '__meta_(.+)'\n  action: labelmap",
                ls(&[("__meta_my_bar", "aaa"), ("__meta_my_baz", "bbb"), ("a", "x")]),
                Some(ls(&[
                    ("__meta_my_bar", "aaa"),
                    ("__meta_my_baz", "bbb"),
                    ("a", "x"),
                    ("my_bar", "aaa"),
                    ("my_baz", "bbb"),
                ])),
            ),
            (
                "- regex: '__meta_(my.*)'\n  replacement: 'x_${1}_y'\n  action: labelmap",
                ls(&[("__meta_my_a", "1"), ("__meta_other", "2")]),
                Some(ls(&[("__meta_my_a", "1"), ("__meta_other", "2"), ("x_my_a_y", "1")])),
            ),
            // labeldrop / labelkeep match names, anchored.
            (
                "- regex: 'b.*'\n  action: labeldrop",
                ls(&[("a", "1"), ("b1", "2"), ("ab", "3")]),
                Some(ls(&[("a", "1"), ("ab", "3")])),
            ),
            (
                "- regex: 'b.*|__name__'\n  action: labelkeep",
                ls(&[("__name__", "m"), ("a", "1"), ("b1", "2")]),
                Some(ls(&[("__name__", "m"), ("b1", "2")])),
            ),
            // lowercase / uppercase of the joined sources.
            (
                "- source_labels: [a, b]\n  target_label: c\n  action: lowercase",
                ls(&[("a", "FoO"), ("b", "BaR")]),
                Some(ls(&[("a", "FoO"), ("b", "BaR"), ("c", "foo;bar")])),
            ),
            (
                "- source_labels: [a]\n  separator: ''\n  target_label: a\n  action: uppercase",
                ls(&[("a", "foo")]),
                Some(ls(&[("a", "FOO")])),
            ),
            // Rules apply in order; a later rule sees earlier changes.
            (
                "- source_labels: [a]\n  target_label: b\n- source_labels: [b]\n  regex: foo\n  action: drop",
                ls(&[("a", "foo")]),
                None,
            ),
        ];
        for (i, (yaml, input, want)) in cases.into_iter().enumerate() {
            let got = process(&input, &rules(yaml));
            assert_eq!(got, want, "case {i}: {yaml}");
        }
    }

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        let re = |p: &str| RelabelRegex::new(p).unwrap();
        assert!(re(r"\d+").is_match("123"));
        assert!(
            !re(r"\d+").is_match("\u{663}"),
            "Arabic-Indic digit is no \\d in Go"
        );
        assert!(re(r"\D").is_match("\u{663}"));
        assert!(!re(r"\w+").is_match("é"));
        assert!(re(r"[\w.-]+").is_match("a.b-c_1"));
        assert!(!re(r"[\w]+").is_match("é"));
        assert!(re(r"a\sb").is_match("a b"));
        assert!(!re(r"a\sb").is_match("a\u{a0}b"));
        assert!(
            re(r"\\d").is_match("\\d"),
            "an escaped backslash stays literal"
        );
        assert!(re(r".*\bx").is_match("é x"));
        assert_eq!(re(r"\d").as_str(), r"\d", "the source is kept for display");
    }

    #[test]
    fn hashmod_is_md5_low_bytes_big_endian() {
        // md5("foo") = acbd18db4cc2f85cedef654fccc4a4d8; low 8 bytes
        // edef654fccc4a4d8 = 17144838418413348056.
        assert_eq!(hashmod("foo", u64::MAX), 0xedef654fccc4a4d8);
        assert_eq!(hashmod("foo", 10), 17144838418413348056 % 10);
    }

    #[test]
    fn invalid_rules_are_rejected() {
        for yaml in [
            "- action: hashmod\n  target_label: a",
            "- action: hashmod\n  modulus: 3",
            "- action: replace",
            "- action: replace\n  target_label: '1a'",
            "- action: lowercase\n  target_label: a\n  replacement: x",
            "- action: labeldrop\n  regex: a\n  source_labels: [b]",
            "- action: labelkeep\n  target_label: b",
            "- action: keepequal\n  source_labels: [a]\n  target_label: b\n  regex: x",
            "- action: dropequal\n  source_labels: [a]",
            "- action: teleport",
            "- regex: '('\n  target_label: a",
            "- source_labels: ['a-b']\n  target_label: c",
            "- target_label: a\n  typo: 1",
        ] {
            let r: Result<Vec<RelabelConfig>, _> = serde_yaml::from_str(yaml);
            assert!(r.is_err(), "{yaml}");
        }
    }

    #[test]
    fn round_trips_through_yaml() {
        let r = rules("- source_labels: [a]\n  regex: 'x.*'\n  action: Keep");
        let text = serde_yaml::to_string(&r).unwrap();
        assert!(text.contains("action: keep"), "{text}");
        assert_eq!(rules(&text), r);
    }
}
