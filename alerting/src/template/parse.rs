//! Template text → tree. Lexing follows Go's `text/template/parse`: fields
//! chain onto the operand before them only when no space separates them.

use super::TemplateError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    /// `.Name`
    Field(String),
    /// A lone `.`
    Dot,
    /// `$name` (`$` alone is the root variable).
    Var(String),
    Str(String),
    Num(String),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    space_before: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// Dot followed by fields (empty: dot itself).
    Field(Vec<String>),
    Var(String, Vec<String>),
    Func(String),
    Str(String),
    Num(String),
    Bool(bool),
    Nil,
    Pipe(Box<Pipe>, Vec<String>),
}

#[derive(Debug, Clone)]
pub(crate) struct Pipe {
    pub(crate) decl: Vec<String>,
    pub(crate) cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(String),
    Action {
        line: usize,
        pipe: Pipe,
    },
    /// `if`, `range` or `with`.
    Branch {
        kind: BranchKind,
        line: usize,
        pipe: Pipe,
        then: Vec<Node>,
        els: Vec<Node>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BranchKind {
    If,
    Range,
    With,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    pub(crate) name: String,
    pub(crate) root: Vec<Node>,
}

enum Item {
    Text(String),
    Action { line: usize, toks: Vec<Token> },
}

struct Lexer<'a> {
    name: &'a str,
    src: &'a str,
}

impl Lexer<'_> {
    fn err(&self, line: usize, msg: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.name.to_string(),
            line,
            msg: msg.into(),
            exec: false,
        }
    }

    fn items(&self) -> Result<Vec<Item>, TemplateError> {
        let s = self.src;
        let mut out = Vec::new();
        let mut pos = 0;
        let mut trim_next = false;
        while pos < s.len() {
            let Some(open) = s[pos..].find("{{").map(|o| o + pos) else {
                let mut t = &s[pos..];
                if trim_next {
                    t = t.trim_start();
                }
                out.push(Item::Text(t.to_string()));
                break;
            };
            let mut text = &s[pos..open];
            if trim_next {
                text = text.trim_start();
            }
            let mut p = open + 2;
            let b = s.as_bytes();
            if b.get(p) == Some(&b'-') && b.get(p + 1).is_some_and(|c| c.is_ascii_whitespace()) {
                text = text.trim_end();
                p += 1;
            }
            out.push(Item::Text(text.to_string()));
            let line = 1 + s[..open].matches('\n').count();
            let (toks, end, trim) = self.lex_action(p, line)?;
            trim_next = trim;
            if let Some(toks) = toks {
                out.push(Item::Action { line, toks });
            }
            pos = end;
        }
        Ok(out)
    }

    /// Lexes from `p` (just inside `{{`) to the closing `}}`. Returns the
    /// tokens (`None` for a comment), the position after `}}`, and whether
    /// the closer was `-}}`.
    #[allow(clippy::type_complexity)]
    fn lex_action(
        &self,
        mut p: usize,
        line: usize,
    ) -> Result<(Option<Vec<Token>>, usize, bool), TemplateError> {
        let s = self.src;
        let b = s.as_bytes();
        let at_close = |p: usize| -> Option<(usize, bool)> {
            if s[p..].starts_with("}}") {
                return Some((p + 2, false));
            }
            if p > 0 && b[p - 1].is_ascii_whitespace() && s[p..].starts_with("-}}") {
                return Some((p + 3, true));
            }
            None
        };
        // Comments: {{/* ... */}}
        let q = p + s[p..].len() - s[p..].trim_start().len();
        if s[q..].starts_with("/*") {
            let Some(end) = s[q..].find("*/").map(|e| e + q + 2) else {
                return Err(self.err(line, "unclosed comment"));
            };
            let e2 = end + s[end..].len() - s[end..].trim_start().len();
            return match at_close(e2) {
                Some((after, trim)) => Ok((None, after, trim)),
                None => Err(self.err(line, "comment ends before closing delimiter")),
            };
        }
        let mut toks = Vec::new();
        let mut space = true;
        loop {
            if p >= s.len() {
                return Err(self.err(line, "unclosed action"));
            }
            if let Some((after, trim)) = at_close(p) {
                return Ok((Some(toks), after, trim));
            }
            let c = b[p];
            if c.is_ascii_whitespace() {
                if c == b'\n' {
                    return Err(self.err(line, "unclosed action"));
                }
                space = true;
                p += 1;
                continue;
            }
            let start = p;
            let tok = match c {
                b'(' => {
                    p += 1;
                    Tok::LParen
                }
                b')' => {
                    p += 1;
                    Tok::RParen
                }
                b'|' => {
                    p += 1;
                    Tok::Pipe
                }
                b',' => {
                    p += 1;
                    Tok::Comma
                }
                b'=' => {
                    p += 1;
                    Tok::Assign
                }
                b':' if b.get(p + 1) == Some(&b'=') => {
                    p += 2;
                    Tok::Declare
                }
                b'"' => {
                    let (v, n) = lex_quoted(&s[p..])
                        .ok_or_else(|| self.err(line, "unterminated quoted string"))?;
                    p += n;
                    Tok::Str(v)
                }
                b'`' => {
                    let Some(end) = s[p + 1..].find('`') else {
                        return Err(self.err(line, "unterminated raw quoted string"));
                    };
                    let v = s[p + 1..p + 1 + end].to_string();
                    p += end + 2;
                    Tok::Str(v)
                }
                b'.' if !b.get(p + 1).is_some_and(|c| c.is_ascii_digit()) => {
                    p += 1;
                    let n = ident_len(&s[p..]);
                    if n == 0 {
                        Tok::Dot
                    } else {
                        let name = s[p..p + n].to_string();
                        p += n;
                        Tok::Field(name)
                    }
                }
                b'$' => {
                    p += 1;
                    let n = ident_len(&s[p..]);
                    let name = s[p..p + n].to_string();
                    p += n;
                    Tok::Var(name)
                }
                b'0'..=b'9' | b'-' | b'+' | b'.' => {
                    let n = s[p..]
                        .bytes()
                        .enumerate()
                        .take_while(|(i, c)| {
                            c.is_ascii_alphanumeric()
                                || *c == b'.'
                                || *c == b'_'
                                || (*i == 0 && (*c == b'-' || *c == b'+'))
                                || ((*c == b'-' || *c == b'+')
                                    && matches!(b[p + i - 1], b'e' | b'E' | b'p' | b'P'))
                        })
                        .count();
                    let v = s[p..p + n].to_string();
                    p += n;
                    Tok::Num(v)
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let n = ident_len(&s[p..]);
                    let v = s[p..p + n].to_string();
                    p += n;
                    Tok::Ident(v)
                }
                _ => {
                    let ch = s[p..].chars().next().unwrap_or('?');
                    return Err(self.err(line, format!("unexpected {ch:?} in command")));
                }
            };
            debug_assert!(p > start);
            toks.push(Token {
                tok,
                space_before: space,
            });
            space = false;
        }
    }
}

fn ident_len(s: &str) -> usize {
    s.char_indices()
        .take_while(|(_, c)| c.is_alphanumeric() || *c == '_')
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0)
}

/// Lexes a Go double-quoted string at the start of `s`; returns the value
/// and bytes consumed.
fn lex_quoted(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut it = s.char_indices().skip(1);
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\n' => return None,
            '\\' => {
                let (_, e) = it.next()?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'v' => out.push('\u{b}'),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let mut hex = String::new();
                        for _ in 0..n {
                            hex.push(it.next()?.1);
                        }
                        let v = u32::from_str_radix(&hex, 16).ok()?;
                        out.push(char::from_u32(v)?);
                    }
                    _ => return None,
                }
            }
            c => out.push(c),
        }
    }
    None
}

struct Parser<'a> {
    name: &'a str,
    items: Vec<Item>,
    pos: usize,
    /// Current nesting of blocks and parentheses.
    depth: std::cell::Cell<usize>,
}

/// Deeper nesting is refused rather than risking the stack.
const MAX_DEPTH: usize = 100;

/// What ended a list.
enum Stop {
    Eof,
    End,
    Else { line: usize, toks: Vec<Token> },
}

impl Parser<'_> {
    fn err(&self, line: usize, msg: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.name.to_string(),
            line,
            msg: msg.into(),
            exec: false,
        }
    }

    fn list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        while self.pos < self.items.len() {
            let item = std::mem::replace(&mut self.items[self.pos], Item::Text(String::new()));
            self.pos += 1;
            match item {
                Item::Text(t) => {
                    if !t.is_empty() {
                        nodes.push(Node::Text(t));
                    }
                }
                Item::Action { line, toks } => {
                    let kw = match toks.first().map(|t| &t.tok) {
                        Some(Tok::Ident(k)) => k.as_str(),
                        None => return Err(self.err(line, "missing value for command")),
                        _ => "",
                    };
                    match kw {
                        "end" => {
                            if toks.len() > 1 {
                                return Err(self.err(line, "unexpected token in end"));
                            }
                            return Ok((nodes, Stop::End));
                        }
                        "else" => {
                            return Ok((
                                nodes,
                                Stop::Else {
                                    line,
                                    toks: toks[1..].to_vec(),
                                },
                            ))
                        }
                        "if" | "range" | "with" => {
                            let kind = match kw {
                                "if" => BranchKind::If,
                                "range" => BranchKind::Range,
                                _ => BranchKind::With,
                            };
                            nodes.push(self.branch(kind, line, &toks[1..])?);
                        }
                        "define" | "template" | "block" | "break" | "continue" => {
                            return Err(self.err(line, format!("{kw:?} is not supported")));
                        }
                        _ => {
                            let pipe = self.pipeline(line, &toks)?;
                            nodes.push(Node::Action { line, pipe });
                        }
                    }
                }
            }
        }
        Ok((nodes, Stop::Eof))
    }

    fn branch(
        &mut self,
        kind: BranchKind,
        line: usize,
        toks: &[Token],
    ) -> Result<Node, TemplateError> {
        if self.depth.get() >= MAX_DEPTH {
            return Err(self.err(line, "template nested too deeply"));
        }
        self.depth.set(self.depth.get() + 1);
        let r = self.branch_inner(kind, line, toks);
        self.depth.set(self.depth.get() - 1);
        r
    }

    fn branch_inner(
        &mut self,
        kind: BranchKind,
        line: usize,
        toks: &[Token],
    ) -> Result<Node, TemplateError> {
        if toks.is_empty() {
            return Err(self.err(line, "missing value for command"));
        }
        let pipe = self.pipeline(line, toks)?;
        let (then, end) = self.list()?;
        let els = match end {
            Stop::Eof => return Err(self.err(line, "unexpected EOF")),
            Stop::End => Vec::new(),
            Stop::Else { line: el, toks } => {
                // `else if …` / `else with …` chain into a nested branch
                // that shares this one's `end`.
                match toks.first().map(|t| &t.tok) {
                    None => {
                        let (els, end) = self.list()?;
                        if !matches!(end, Stop::End) {
                            return Err(self.err(el, "expected end; found else or EOF"));
                        }
                        els
                    }
                    Some(Tok::Ident(k)) if k == "if" || k == "with" => {
                        let k2 = if k == "if" {
                            BranchKind::If
                        } else {
                            BranchKind::With
                        };
                        vec![self.branch(k2, el, &toks[1..])?]
                    }
                    _ => return Err(self.err(el, "unexpected token in else")),
                }
            }
        };
        Ok(Node::Branch {
            kind,
            line,
            pipe,
            then,
            els,
        })
    }

    fn pipeline(&self, line: usize, toks: &[Token]) -> Result<Pipe, TemplateError> {
        let mut i = 0;
        let mut decl = Vec::new();
        // Declarations: `$x :=` or `$i, $v :=`.
        let mut j = 0;
        let mut vars = Vec::new();
        while let Some(Token {
            tok: Tok::Var(v), ..
        }) = toks.get(j)
        {
            vars.push(v.clone());
            match toks.get(j + 1).map(|t| &t.tok) {
                Some(Tok::Comma) => j += 2,
                Some(Tok::Declare) | Some(Tok::Assign) => {
                    decl = vars.clone();
                    i = j + 2;
                    break;
                }
                _ => break,
            }
        }
        let (cmds, used) = self.commands(line, &toks[i..], false)?;
        if i + used != toks.len() {
            return Err(self.err(line, "unexpected \")\" in operand"));
        }
        if cmds.is_empty() {
            return Err(self.err(line, "missing value for command"));
        }
        Ok(Pipe { decl, cmds })
    }

    /// Parses commands separated by `|` until the end or (inside parens) a
    /// `)`. Returns the commands and tokens consumed.
    fn commands(
        &self,
        line: usize,
        toks: &[Token],
        in_paren: bool,
    ) -> Result<(Vec<Vec<Arg>>, usize), TemplateError> {
        let mut cmds = Vec::new();
        let mut cur: Vec<Arg> = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            match &toks[i].tok {
                Tok::RParen if in_paren => break,
                Tok::RParen => return Err(self.err(line, "unexpected right paren")),
                Tok::Pipe => {
                    if cur.is_empty() {
                        return Err(self.err(line, "missing command"));
                    }
                    cmds.push(std::mem::take(&mut cur));
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let (arg, used) = self.operand(line, &toks[i..])?;
            cur.push(arg);
            i += used;
        }
        if !cur.is_empty() {
            cmds.push(cur);
        } else if !cmds.is_empty() {
            return Err(self.err(line, "missing command"));
        }
        Ok((cmds, i))
    }

    fn operand(&self, line: usize, toks: &[Token]) -> Result<(Arg, usize), TemplateError> {
        let mut i = 1;
        let chain = |i: &mut usize| {
            let mut fields = Vec::new();
            while let Some(Token {
                tok: Tok::Field(f),
                space_before: false,
            }) = toks.get(*i)
            {
                fields.push(f.clone());
                *i += 1;
            }
            fields
        };
        let arg = match &toks[0].tok {
            Tok::Dot => Arg::Field(Vec::new()),
            Tok::Field(f) => {
                let mut fields = vec![f.clone()];
                fields.extend(chain(&mut i));
                Arg::Field(fields)
            }
            Tok::Var(v) => Arg::Var(v.clone(), chain(&mut i)),
            Tok::Str(s) => Arg::Str(s.clone()),
            Tok::Num(n) => Arg::Num(n.clone()),
            Tok::Ident(id) => match id.as_str() {
                "true" => Arg::Bool(true),
                "false" => Arg::Bool(false),
                "nil" => Arg::Nil,
                "if" | "else" | "end" | "range" | "with" => {
                    return Err(self.err(line, format!("unexpected <{id}> in command")))
                }
                _ => {
                    if !super::exec::is_function(id) {
                        return Err(self.err(line, format!("function {id:?} not defined")));
                    }
                    Arg::Func(id.clone())
                }
            },
            Tok::LParen => {
                if self.depth.get() >= MAX_DEPTH {
                    return Err(self.err(line, "template nested too deeply"));
                }
                self.depth.set(self.depth.get() + 1);
                let r = self.commands(line, &toks[1..], true);
                self.depth.set(self.depth.get() - 1);
                let (cmds, used) = r?;
                if !matches!(toks.get(1 + used).map(|t| &t.tok), Some(Tok::RParen)) {
                    return Err(self.err(line, "unclosed left paren"));
                }
                if cmds.is_empty() {
                    return Err(self.err(line, "missing value for parenthesized pipeline"));
                }
                i = used + 2;
                let fields = chain(&mut i);
                Arg::Pipe(
                    Box::new(Pipe {
                        decl: Vec::new(),
                        cmds,
                    }),
                    fields,
                )
            }
            t => return Err(self.err(line, format!("unexpected {t:?} in operand"))),
        };
        Ok((arg, i))
    }
}

impl Template {
    /// Parses a template.
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        let lexer = Lexer { name, src: text };
        let items = lexer.items()?;
        let mut p = Parser {
            name,
            items,
            pos: 0,
            depth: std::cell::Cell::new(0),
        };
        let (root, end) = p.list()?;
        match end {
            Stop::Eof => Ok(Template {
                name: name.to_string(),
                root,
            }),
            Stop::End => Err(p.err(1, "unexpected {{end}}")),
            Stop::Else { line, .. } => Err(p.err(line, "unexpected {{else}}")),
        }
    }
}
