//! Template execution: values, variable scopes, functions.

use std::fmt::Write as _;

use pharos_storage::labels::Labels;
use regex::Regex;

use super::format::{
    go_e, go_f, go_float, go_g, humanize, humanize1024, humanize_duration, humanize_percentage,
    humanize_timestamp,
};
use super::parse::{Arg, BranchKind, Node, Pipe, Template};
use super::TemplateError;

/// One sample as the `query` function returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct QSample {
    pub labels: Labels,
    pub value: f64,
}

/// Runs the `query` template function (an instant query at the alert's
/// evaluation time).
pub trait TemplateQuery {
    fn query(&self, q: &str) -> Result<Vec<QSample>, String>;
}

/// The dot of an alert template.
#[derive(Debug, Clone, Copy)]
pub struct TemplateData<'a> {
    pub labels: &'a Labels,
    pub external_labels: &'a Labels,
    pub external_url: &'a str,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum V {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Map(Vec<(String, V)>),
    Sample(QSample),
    List(Vec<V>),
}

fn labels_map(l: &Labels) -> V {
    V::Map(
        l.iter()
            .map(|(k, v)| (k.to_string(), V::Str(v.to_string())))
            .collect(),
    )
}

impl V {
    fn truth(&self) -> bool {
        match self {
            V::Nil => false,
            V::Bool(b) => *b,
            V::Int(i) => *i != 0,
            V::Float(f) => *f != 0.0,
            V::Str(s) => !s.is_empty(),
            V::Map(m) => !m.is_empty(),
            V::List(l) => !l.is_empty(),
            V::Sample(_) => true,
        }
    }

    fn print(&self, out: &mut String) {
        match self {
            V::Nil => out.push_str("<no value>"),
            V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            V::Int(i) => {
                let _ = write!(out, "{i}");
            }
            V::Float(f) => out.push_str(&go_float(*f)),
            V::Str(s) => out.push_str(s),
            V::Map(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.print(out);
                }
                out.push(']');
            }
            V::Sample(s) => {
                let _ = write!(out, "{{{} {}}}", s.labels, go_float(s.value));
            }
            V::List(l) => {
                out.push('[');
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.print(out);
                }
                out.push(']');
            }
        }
    }

    fn to_text(&self) -> String {
        let mut s = String::new();
        self.print(&mut s);
        s
    }

    fn kind(&self) -> &'static str {
        match self {
            V::Nil => "nil",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::Float(_) => "float64",
            V::Str(_) => "string",
            V::Map(_) => "map",
            V::Sample(_) => "sample",
            V::List(_) => "slice",
        }
    }
}

const FUNCTIONS: &[&str] = &[
    "and",
    "or",
    "not",
    "len",
    "index",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "print",
    "printf",
    "println",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "query",
    "first",
    "value",
    "label",
    "strvalue",
    "sortByLabel",
    "toUpper",
    "toLower",
    "title",
    "match",
    "reReplaceAll",
    "args",
    "safeHtml",
    "stripPort",
    "stripDomain",
    "toTime",
    "parseDuration",
    "externalURL",
    "pathPrefix",
    "graphLink",
    "tableLink",
];

pub(crate) fn is_function(name: &str) -> bool {
    FUNCTIONS.contains(&name)
}

struct Exec<'a> {
    name: &'a str,
    data: &'a TemplateData<'a>,
    query: Option<&'a dyn TemplateQuery>,
    vars: Vec<(String, V)>,
    out: String,
    line: usize,
}

type R<T> = Result<T, TemplateError>;

impl Template {
    /// Executes the template with `data` as dot.
    pub fn execute(
        &self,
        data: &TemplateData<'_>,
        query: Option<&dyn TemplateQuery>,
    ) -> Result<String, TemplateError> {
        let mut ex = Exec {
            name: &self.name,
            data,
            query,
            vars: Vec::new(),
            out: String::new(),
            line: 1,
        };
        let dot = ex.root_dot();
        ex.vars.push((String::new(), dot.clone()));
        ex.walk(&self.root, &dot)?;
        Ok(ex.out)
    }
}

impl Exec<'_> {
    fn err(&self, msg: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.name.to_string(),
            line: self.line,
            msg: format!("executing {:?}: {}", self.name, msg.into()),
            exec: true,
        }
    }

    fn root_dot(&self) -> V {
        V::Map(vec![
            (
                "ExternalLabels".into(),
                labels_map(self.data.external_labels),
            ),
            ("ExternalURL".into(), V::Str(self.data.external_url.into())),
            ("Labels".into(), labels_map(self.data.labels)),
            ("Value".into(), V::Float(self.data.value)),
        ])
    }

    fn walk(&mut self, nodes: &[Node], dot: &V) -> R<()> {
        for n in nodes {
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Action { line, pipe } => {
                    self.line = *line;
                    let v = self.pipe(pipe, dot)?;
                    if pipe.decl.is_empty() {
                        v.print(&mut self.out);
                    }
                }
                Node::Branch {
                    kind,
                    line,
                    pipe,
                    then,
                    els,
                } => {
                    self.line = *line;
                    let mark = self.vars.len();
                    let v = self.pipe_value(pipe, dot)?;
                    match kind {
                        BranchKind::If => {
                            if v.truth() {
                                self.walk(then, dot)?
                            } else {
                                self.walk(els, dot)?
                            }
                        }
                        BranchKind::With => {
                            if v.truth() {
                                self.walk(then, &v)?
                            } else {
                                self.walk(els, dot)?
                            }
                        }
                        BranchKind::Range => {
                            let items: Vec<(V, V)> = match &v {
                                V::List(l) => l
                                    .iter()
                                    .enumerate()
                                    .map(|(i, x)| (V::Int(i as i64), x.clone()))
                                    .collect(),
                                V::Map(m) => m
                                    .iter()
                                    .map(|(k, x)| (V::Str(k.clone()), x.clone()))
                                    .collect(),
                                V::Nil => Vec::new(),
                                V::Int(n) => (0..*n).map(|i| (V::Int(i), V::Int(i))).collect(),
                                other => {
                                    return Err(self.err(format!(
                                        "range can't iterate over {}",
                                        other.to_text()
                                    )))
                                }
                            };
                            if items.is_empty() {
                                self.walk(els, dot)?;
                            }
                            for (k, x) in items {
                                let inner = self.vars.len();
                                match pipe.decl.as_slice() {
                                    [a] => self.vars.push((a.clone(), x.clone())),
                                    [a, b] => {
                                        self.vars.push((a.clone(), k));
                                        self.vars.push((b.clone(), x.clone()));
                                    }
                                    _ => {}
                                }
                                self.walk(then, &x)?;
                                self.vars.truncate(inner);
                            }
                        }
                    }
                    self.vars.truncate(mark);
                }
            }
        }
        Ok(())
    }

    /// A pipeline whose declared variables stay in scope (actions).
    fn pipe(&mut self, pipe: &Pipe, dot: &V) -> R<V> {
        let v = self.eval_cmds(&pipe.cmds, dot)?;
        if let Some(name) = pipe.decl.first() {
            self.vars.push((name.clone(), v.clone()));
        }
        Ok(v)
    }

    /// The value a branch tests; `range` declares its variables per item.
    fn pipe_value(&mut self, pipe: &Pipe, dot: &V) -> R<V> {
        let v = self.eval_cmds(&pipe.cmds, dot)?;
        Ok(v)
    }

    fn eval_cmds(&mut self, cmds: &[Vec<Arg>], dot: &V) -> R<V> {
        let mut prev: Option<V> = None;
        for cmd in cmds {
            prev = Some(self.eval_cmd(cmd, dot, prev)?);
        }
        Ok(prev.unwrap_or(V::Nil))
    }

    fn eval_cmd(&mut self, cmd: &[Arg], dot: &V, piped: Option<V>) -> R<V> {
        let Some(first) = cmd.first() else {
            return Err(self.err("empty command"));
        };
        if let Arg::Func(name) = first {
            let mut args = Vec::with_capacity(cmd.len());
            for a in &cmd[1..] {
                args.push(self.eval_arg(a, dot)?);
            }
            if let Some(p) = piped {
                args.push(p);
            }
            return self.call(name, args);
        }
        if cmd.len() > 1 || piped.is_some() {
            return Err(self.err(format!("can't give argument to non-function {first:?}")));
        }
        self.eval_arg(first, dot)
    }

    fn eval_arg(&mut self, a: &Arg, dot: &V) -> R<V> {
        match a {
            Arg::Field(fields) => self.fields(dot.clone(), fields),
            Arg::Var(name, fields) => {
                let v = match self.vars.iter().rev().find(|(n, _)| n == name) {
                    Some((_, v)) => v.clone(),
                    None => return Err(self.err(format!("undefined variable: ${name}"))),
                };
                self.fields(v, fields)
            }
            Arg::Func(name) => self.call(name, Vec::new()),
            Arg::Str(s) => Ok(V::Str(s.clone())),
            Arg::Num(n) => {
                parse_number(n).ok_or_else(|| self.err(format!("bad number syntax: {n:?}")))
            }
            Arg::Bool(b) => Ok(V::Bool(*b)),
            Arg::Nil => Ok(V::Nil),
            Arg::Pipe(p, fields) => {
                let v = self.eval_cmds(&p.cmds, dot)?;
                self.fields(v, fields)
            }
        }
    }

    fn fields(&self, mut v: V, fields: &[String]) -> R<V> {
        for f in fields {
            v = match v {
                V::Map(m) => m
                    .into_iter()
                    .find(|(k, _)| k == f)
                    .map(|(_, x)| x)
                    // A missing map key is the element's zero value.
                    .unwrap_or(V::Str(String::new())),
                V::Sample(s) => match f.as_str() {
                    "Labels" => labels_map(&s.labels),
                    "Value" => V::Float(s.value),
                    _ => {
                        return Err(
                            self.err(format!("can't evaluate field {f} in type *template.sample"))
                        )
                    }
                },
                V::Nil => return Err(self.err(format!("nil pointer evaluating .{f}"))),
                other => {
                    return Err(
                        self.err(format!("can't evaluate field {f} in type {}", other.kind()))
                    )
                }
            };
        }
        Ok(v)
    }

    fn call(&mut self, name: &str, args: Vec<V>) -> R<V> {
        let n = args.len();
        let want = |k: usize| -> R<()> {
            if n != k {
                Err(self.err(format!(
                    "error calling {name}: wrong number of args for {name}: want {k} got {n}"
                )))
            } else {
                Ok(())
            }
        };
        let num = |v: &V| -> R<f64> {
            to_float(v).ok_or_else(|| {
                self.err(format!(
                    "error calling {name}: can't convert {} to float",
                    v.to_text()
                ))
            })
        };
        let s = |v: &V| -> R<String> {
            match v {
                V::Str(s) => Ok(s.clone()),
                other => Err(self.err(format!(
                    "wrong type for value; expected string; got {}",
                    other.kind()
                ))),
            }
        };
        Ok(match name {
            "and" | "or" => {
                if n == 0 {
                    return Err(self.err(format!(
                        "wrong number of args for {name}: want at least 1 got 0"
                    )));
                }
                let want_truth = name == "or";
                let mut last = V::Nil;
                for a in args {
                    if a.truth() == want_truth {
                        return Ok(a);
                    }
                    last = a;
                }
                last
            }
            "not" => {
                want(1)?;
                V::Bool(!args[0].truth())
            }
            "len" => {
                want(1)?;
                V::Int(match &args[0] {
                    V::Str(s) => s.len(),
                    V::List(l) => l.len(),
                    V::Map(m) => m.len(),
                    other => {
                        return Err(
                            self.err(format!("error calling len: len of type {}", other.kind()))
                        )
                    }
                } as i64)
            }
            "index" => {
                if n < 1 {
                    return Err(self.err("wrong number of args for index"));
                }
                let mut v = args[0].clone();
                for k in &args[1..] {
                    v = match (&v, k) {
                        (V::Map(m), V::Str(key)) => m
                            .iter()
                            .find(|(kk, _)| kk == key)
                            .map(|(_, x)| x.clone())
                            .unwrap_or(V::Str(String::new())),
                        (V::List(l), idx) => {
                            let i = to_float(idx).unwrap_or(-1.0);
                            if i < 0.0 || i as usize >= l.len() {
                                return Err(self.err(format!(
                                    "error calling index: index out of range: {}",
                                    idx.to_text()
                                )));
                            }
                            l[i as usize].clone()
                        }
                        _ => {
                            return Err(self.err(format!(
                                "error calling index: can't index item of type {}",
                                v.kind()
                            )))
                        }
                    };
                }
                v
            }
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                if n < 2 {
                    return Err(self.err("missing argument for comparison"));
                }
                let ord = |a: &V, b: &V| -> R<std::cmp::Ordering> {
                    match (a, b) {
                        (V::Str(x), V::Str(y)) => Ok(x.cmp(y)),
                        (V::Bool(x), V::Bool(y)) if matches!(name, "eq" | "ne") => Ok(x.cmp(y)),
                        _ => match (to_float(a), to_float(b)) {
                            (Some(x), Some(y)) => x
                                .partial_cmp(&y)
                                .ok_or_else(|| self.err("incomparable NaN")),
                            _ => Err(self.err(format!(
                                "error calling {name}: incompatible types for comparison"
                            ))),
                        },
                    }
                };
                if name == "eq" {
                    // eq a b c… is true if a equals any of the others.
                    let mut any = false;
                    for b in &args[1..] {
                        if ord(&args[0], b).map(|o| o.is_eq()).unwrap_or(false) {
                            any = true;
                        }
                    }
                    V::Bool(any)
                } else {
                    want(2)?;
                    let o = ord(&args[0], &args[1]);
                    let o = match (name, o) {
                        ("ne", Err(_)) => return Ok(V::Bool(true)),
                        (_, o) => o?,
                    };
                    V::Bool(match name {
                        "ne" => !o.is_eq(),
                        "lt" => o.is_lt(),
                        "le" => o.is_le(),
                        "gt" => o.is_gt(),
                        _ => o.is_ge(),
                    })
                }
            }
            "print" | "println" => {
                let mut out = String::new();
                for (i, a) in args.iter().enumerate() {
                    // Go's Sprint adds spaces between operands when neither
                    // is a string; Sprintln always does.
                    if i > 0
                        && (name == "println"
                            || (!matches!(a, V::Str(_)) && !matches!(args[i - 1], V::Str(_))))
                    {
                        out.push(' ');
                    }
                    a.print(&mut out);
                }
                if name == "println" {
                    out.push('\n');
                }
                V::Str(out)
            }
            "printf" => {
                if n == 0 {
                    return Err(self.err("wrong number of args for printf: want at least 1 got 0"));
                }
                let f = s(&args[0])?;
                V::Str(sprintf(&f, &args[1..]))
            }
            "humanize" | "humanize1024" | "humanizeDuration" | "humanizePercentage"
            | "humanizeTimestamp" => {
                want(1)?;
                let v = match &args[0] {
                    V::Str(t) => t.trim().parse::<f64>().map_err(|e| {
                        self.err(format!(
                            "error calling {name}: strconv.ParseFloat: parsing {t:?}: {e}"
                        ))
                    })?,
                    other => num(other)?,
                };
                V::Str(match name {
                    "humanize" => humanize(v),
                    "humanize1024" => humanize1024(v),
                    "humanizeDuration" => humanize_duration(v),
                    "humanizePercentage" => humanize_percentage(v),
                    _ => humanize_timestamp(v),
                })
            }
            "query" => {
                want(1)?;
                let q = s(&args[0])?;
                let Some(engine) = self.query else {
                    return Err(self.err("error calling query: no query engine available"));
                };
                let samples = engine
                    .query(&q)
                    .map_err(|e| self.err(format!("error calling query: {e}")))?;
                V::List(samples.into_iter().map(V::Sample).collect())
            }
            "first" => {
                want(1)?;
                match &args[0] {
                    V::List(l) => {
                        match l.first() {
                            Some(v) => v.clone(),
                            None => return Err(self.err(
                                "error calling first: first() called on vector with no elements",
                            )),
                        }
                    }
                    other => {
                        return Err(
                            self.err(format!("error calling first: wrong type {}", other.kind()))
                        )
                    }
                }
            }
            "value" => {
                want(1)?;
                match &args[0] {
                    V::Sample(s) => V::Float(s.value),
                    other => {
                        return Err(
                            self.err(format!("error calling value: wrong type {}", other.kind()))
                        )
                    }
                }
            }
            "label" => {
                want(2)?;
                let l = s(&args[0])?;
                match &args[1] {
                    V::Sample(smp) => V::Str(smp.labels.get_or_empty(&l).to_string()),
                    other => {
                        return Err(
                            self.err(format!("error calling label: wrong type {}", other.kind()))
                        )
                    }
                }
            }
            "strvalue" => {
                want(1)?;
                match &args[0] {
                    V::Sample(smp) => V::Str(smp.labels.get_or_empty("__value__").to_string()),
                    other => {
                        return Err(self.err(format!(
                            "error calling strvalue: wrong type {}",
                            other.kind()
                        )))
                    }
                }
            }
            "sortByLabel" => {
                want(2)?;
                let l = s(&args[0])?;
                match &args[1] {
                    V::List(items) => {
                        let mut items = items.clone();
                        items.sort_by(|a, b| {
                            let ka = match a {
                                V::Sample(s) => s.labels.get_or_empty(&l).to_string(),
                                _ => String::new(),
                            };
                            let kb = match b {
                                V::Sample(s) => s.labels.get_or_empty(&l).to_string(),
                                _ => String::new(),
                            };
                            ka.cmp(&kb)
                        });
                        V::List(items)
                    }
                    other => {
                        return Err(self.err(format!(
                            "error calling sortByLabel: wrong type {}",
                            other.kind()
                        )))
                    }
                }
            }
            "toUpper" | "toLower" | "title" | "safeHtml" | "stripPort" | "stripDomain" => {
                want(1)?;
                let t = s(&args[0])?;
                V::Str(match name {
                    "toUpper" => t.to_uppercase(),
                    "toLower" => t.to_lowercase(),
                    "title" => title(&t),
                    "stripPort" => strip_port(&t),
                    "stripDomain" => strip_domain(&t),
                    _ => t,
                })
            }
            "match" => {
                want(2)?;
                let re = Regex::new(&s(&args[0])?)
                    .map_err(|e| self.err(format!("error calling match: {e}")))?;
                V::Bool(re.is_match(&s(&args[1])?))
            }
            "reReplaceAll" => {
                want(3)?;
                let re = Regex::new(&s(&args[0])?)
                    .map_err(|e| self.err(format!("error calling reReplaceAll: {e}")))?;
                let repl = go_to_rust_replacement(&s(&args[1])?);
                V::Str(re.replace_all(&s(&args[2])?, repl.as_str()).into_owned())
            }
            "args" => V::Map(
                args.into_iter()
                    .enumerate()
                    .map(|(i, v)| (format!("arg{i}"), v))
                    .collect(),
            ),
            "toTime" => {
                want(1)?;
                V::Str(humanize_timestamp(num(&args[0])?))
            }
            "parseDuration" => {
                want(1)?;
                let t = s(&args[0])?;
                let ms = pharos_query::parser::parse_duration(&t)
                    .map_err(|e| self.err(format!("error calling parseDuration: {e}")))?;
                V::Float(ms as f64 / 1000.0)
            }
            "externalURL" => V::Str(self.data.external_url.to_string()),
            "pathPrefix" => {
                // The path part of the external URL.
                let u = self.data.external_url;
                let after_scheme = u.split_once("://").map(|(_, r)| r).unwrap_or(u);
                V::Str(
                    after_scheme
                        .find('/')
                        .map(|i| after_scheme[i..].to_string())
                        .unwrap_or_default(),
                )
            }
            "graphLink" | "tableLink" => {
                want(1)?;
                let e = s(&args[0])?;
                let tab = if name == "tableLink" { 1 } else { 0 };
                V::Str(format!(
                    "/graph?g0.expr={}&g0.tab={tab}",
                    crate::notifier::query_escape(&e)
                ))
            }
            _ => return Err(self.err(format!("function {name:?} not defined"))),
        })
    }
}

fn to_float(v: &V) -> Option<f64> {
    match v {
        V::Int(i) => Some(*i as f64),
        V::Float(f) => Some(*f),
        _ => None,
    }
}

fn parse_number(n: &str) -> Option<V> {
    let clean = n.replace('_', "");
    if let Ok(i) = clean.parse::<i64>() {
        return Some(V::Int(i));
    }
    if let Some(h) = clean.strip_prefix("0x") {
        return i64::from_str_radix(h, 16).ok().map(V::Int);
    }
    clean.parse::<f64>().ok().map(V::Float)
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

fn strip_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return rest[..end].to_string();
        }
    }
    match s.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h.to_string(),
        _ => s.to_string(),
    }
}

fn strip_domain(s: &str) -> String {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return s.to_string();
    }
    let short = host.split('.').next().unwrap_or(host);
    match port {
        Some(p) => format!("{short}:{p}"),
        None => short.to_string(),
    }
}

/// Go's `$1`/`${name}` replacement syntax is Rust's too, except that Go
/// treats `$1x` as the group named `1x`; the common forms are the same.
fn go_to_rust_replacement(s: &str) -> String {
    s.to_string()
}

/// Go's `Sprintf` for the verbs templates use: `%s %v %d %f %e %g %q %x %t
/// %%`, with width, `-` and `.prec`.
fn sprintf(f: &str, args: &[V]) -> String {
    let mut out = String::new();
    let mut it = f.chars().peekable();
    let mut ai = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut left = false;
        let mut zero = false;
        let mut plus = false;
        while let Some(&fl) = it.peek() {
            match fl {
                '-' => left = true,
                '0' => zero = true,
                '+' => plus = true,
                ' ' | '#' => {}
                _ => break,
            }
            it.next();
        }
        let mut width = String::new();
        while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            it.next();
        }
        let mut prec: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = String::new();
            while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                it.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(ai) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        ai += 1;
        let mut s = match (verb, arg) {
            ('d', V::Int(i)) => format!("{i}"),
            ('d', V::Float(x)) => format!("%!d(float64={})", go_float(*x)),
            ('f' | 'F', a) => match to_float(a) {
                Some(x) => go_f(x, prec.unwrap_or(6)),
                None => format!("%!f({}={})", a.kind(), a.to_text()),
            },
            ('e', a) => match to_float(a) {
                Some(x) => go_e(x, prec.unwrap_or(6)),
                None => format!("%!e({}={})", a.kind(), a.to_text()),
            },
            ('g', a) => match to_float(a) {
                Some(x) => go_g(x, prec),
                None => format!("%!g({}={})", a.kind(), a.to_text()),
            },
            ('q', a) => format!("{:?}", a.to_text()),
            ('x', V::Int(i)) => format!("{i:x}"),
            ('x', V::Str(t)) => t.bytes().map(|b| format!("{b:02x}")).collect(),
            ('t', V::Bool(b)) => b.to_string(),
            ('s' | 'v', a) => {
                let mut t = a.to_text();
                if let (Some(p), 's') = (prec, verb) {
                    t = t.chars().take(p).collect();
                }
                t
            }
            (v, a) => format!("%!{v}({}={})", a.kind(), a.to_text()),
        };
        if plus && matches!(arg, V::Int(_) | V::Float(_)) && !s.starts_with('-') {
            s.insert(0, '+');
        }
        let w: usize = width.parse().unwrap_or(0);
        let len = s.chars().count();
        if len < w {
            let pad = w - len;
            if left {
                s.push_str(&" ".repeat(pad));
            } else if zero && matches!(arg, V::Int(_) | V::Float(_)) {
                let (sign, digits) = if s.starts_with(['-', '+']) {
                    s.split_at(1)
                } else {
                    ("", s.as_str())
                };
                s = format!("{sign}{}{digits}", "0".repeat(pad));
            } else {
                s.insert_str(0, &" ".repeat(pad));
            }
        }
        out.push_str(&s);
    }
    if ai < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[ai..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}={}", a.kind(), a.to_text());
        }
        out.push(')');
    }
    out
}
