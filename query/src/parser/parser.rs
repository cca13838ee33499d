//! Recursive-descent PromQL parser with precedence climbing, producing
//! [`ast::Expr`] and applying Prometheus's type checks as each node is built.
//!
//! Grammar notes (Prometheus 3.x semantics, implemented from its
//! documentation and grammar):
//! - Binary precedence, lowest first: `or`; `and`/`unless`; comparisons;
//!   `+ -`; `* / % atan2`; `^` (right-associative). Unary `+`/`-` binds
//!   tighter than `*` but looser than `^` (`-2^2` is `-(2^2)`), and a sign in
//!   front of a number literal is folded into it.
//! - Postfix modifiers (`[range]`, `[range:step]`, `offset`, `@`, `anchored`,
//!   `smoothed`) bind tighter than any operator, in any order.
//! - After `offset`, only a (signed) literal, `step()`, `range()`,
//!   `min_of/max_of(..)` or a parenthesised duration expression is taken, so
//!   `x offset 1m + 1m` is `(x offset 1m) + 1m`; inside `[...]` the full
//!   duration arithmetic applies.
//! - Keywords are case-insensitive and, where Prometheus allows it, also valid
//!   metric names (`sum`, `offset`, `fill` alone are selectors).
//!
//! Duration expressions (ranges, steps, offsets) are parsed in
//! `durations.rs`, as more methods of the same [`Parser`].
//!
//! Invariants: every node's `pos` covers its source text (selectors and
//! subqueries are extended over their modifiers); the tree height never
//! exceeds `ParseOptions::max_depth`, and neither does the parser's own
//! recursion, so deep inputs fail with an error instead of a stack overflow
//! (here or in any later recursive pass over the tree).

use pharos_storage::labels::{MatchType, Matcher};

use super::ast::*;
use super::functions;
use super::lexer::{self, TokKind, Token};

/// Parser switches. `Default` is stable PromQL only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// Experimental functions (`info`, `mad_over_time`, …) and the
    /// `limitk`/`limit_ratio` aggregators.
    pub experimental_functions: bool,
    /// Arithmetic, `step()`, `range()`, `min_of`/`max_of` in ranges, offsets
    /// and subquery steps.
    pub duration_expressions: bool,
    /// `anchored` / `smoothed` selector modifiers.
    pub extended_range_selectors: bool,
    /// `fill(v)`, `fill_left(v)`, `fill_right(v)` on binary operators.
    pub binop_fill_modifiers: bool,
    /// Maximum height of the syntax tree (and of the parser's recursion).
    /// Prometheus has no limit; ours keeps every recursive pass over the tree
    /// within a 2 MiB thread stack.
    pub max_depth: usize,
    /// Maximum query length in bytes.
    pub max_len: usize,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            experimental_functions: false,
            duration_expressions: false,
            extended_range_selectors: false,
            binop_fill_modifiers: false,
            max_depth: 256,
            max_len: 1 << 20,
        }
    }
}

impl ParseOptions {
    /// Every experimental part enabled (what the conformance corpus needs).
    pub fn all() -> Self {
        ParseOptions {
            experimental_functions: true,
            duration_expressions: true,
            extended_range_selectors: true,
            binop_fill_modifiers: true,
            ..ParseOptions::default()
        }
    }
}

/// A parse error. `Display` is Prometheus's `line:col: parse error: msg`,
/// with a 1-based line and a 1-based column counted in bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: parse error: {msg}")]
pub struct ParseError {
    pub pos: PosRange,
    pub msg: String,
    pub line: u32,
    pub col: u32,
}

impl ParseError {
    fn new(input: &str, pos: PosRange, msg: String) -> ParseError {
        let start = (pos.start as usize).min(input.len());
        let before = &input.as_bytes()[..start];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let col = match before.iter().rposition(|&b| b == b'\n') {
            Some(nl) => start - nl,
            None => start + 1,
        };
        ParseError {
            pos,
            msg,
            line: line as u32,
            col: col as u32,
        }
    }
}

/// A one-line, Go-style message for a bad matcher regex:
/// ``error parsing regexp: missing closing ): `(` ``. The regex crate's own
/// text spans several lines and quotes the anchored wrapper it was given.
fn regex_error_message(pattern: &str, e: &regex::Error) -> String {
    // The matcher compiles the pattern wrapped in `^(?s:…)$`, where a
    // trailing backslash escapes the wrapper's `)` instead.
    let trailing = pattern.bytes().rev().take_while(|&b| b == b'\\').count();
    if trailing % 2 == 1 {
        return format!(
            "error parsing regexp: trailing backslash at end of expression: `{pattern}`"
        );
    }
    let text = e.to_string();
    let reason = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().next().unwrap_or("invalid regular expression"));
    // Go's wording for the common cases, so messages read as Prometheus's do.
    let reason = match reason {
        "unclosed group" => "missing closing )",
        "unopened group" => "unexpected )",
        "unclosed character class" => "missing closing ]",
        "repetition operator missing expression" => "missing argument to repetition operator",
        r => r,
    };
    format!("error parsing regexp: {reason}: `{pattern}`")
}

/// Parses stable PromQL (no experimental features).
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    parse_with(input, &ParseOptions::default())
}

/// Parses with the given options.
pub fn parse_with(input: &str, opts: &ParseOptions) -> Result<Expr, ParseError> {
    if input.len() > opts.max_len {
        return Err(ParseError::new(
            input,
            PosRange::new(0, 0),
            format!(
                "query is {} bytes long, the limit is {}",
                input.len(),
                opts.max_len
            ),
        ));
    }
    let toks = lexer::lex(input).map_err(|e| ParseError::new(input, e.pos, e.msg))?;
    let mut p = Parser {
        input,
        toks,
        i: 0,
        opts,
        depth: 0,
    };
    p.parse_top()
        .map_err(|e| p.unclosed_paren_at_eof().unwrap_or(e))
        .map_err(|e| ParseError::new(input, e.pos, e.msg))
}

/// Parses a bare series selector (`up{job="x"}`, `{__name__=~"a.*"}`) into
/// its matchers, as the HTTP API's `match[]` parameters need (Prometheus's
/// `ParseMetricSelector`). Offsets, ranges and operators are errors.
pub fn parse_metric_selector(input: &str) -> Result<Vec<Matcher>, ParseError> {
    let opts = ParseOptions::default();
    if input.len() > opts.max_len {
        return Err(ParseError::new(
            input,
            PosRange::new(0, 0),
            format!(
                "selector is {} bytes long, the limit is {}",
                input.len(),
                opts.max_len
            ),
        ));
    }
    let toks = lexer::lex(input).map_err(|e| ParseError::new(input, e.pos, e.msg))?;
    let mut p = Parser {
        input,
        toks,
        i: 0,
        opts: &opts,
        depth: 0,
    };
    let r = match p.kind() {
        TokKind::Ident => p.named_selector(),
        TokKind::LBrace => p.bare_selector(),
        TokKind::Eof => err(PosRange::new(0, 0), "no expression found in input"),
        _ => p.unexpected("", "metric name or \"{\""),
    }
    .and_then(|(e, _)| {
        if p.kind() != TokKind::Eof {
            return p.unexpected("", "");
        }
        match e {
            Expr::VectorSelector(vs) => Ok(vs.matchers),
            other => err(other.pos(), "expected a series selector"),
        }
    });
    r.map_err(|e| ParseError::new(input, e.pos, e.msg))
}

/// An error before it is given its line and column.
pub(super) struct Err0 {
    pub(super) pos: PosRange,
    pub(super) msg: String,
}

pub(super) type R<T> = Result<T, Err0>;

pub(super) fn err<T>(pos: PosRange, msg: impl Into<String>) -> R<T> {
    Err(Err0 {
        pos,
        msg: msg.into(),
    })
}

/// An expression and the height of its tree.
type P = (Expr, usize);

/// Go's `%q` for a Rust string.
fn q(s: &str) -> String {
    pharos_storage::labels::go_quote(s)
}

const PREC_OR: u8 = 1;
const PREC_AND: u8 = 2;
const PREC_CMP: u8 = 3;
pub(super) const PREC_ADD: u8 = 4;
pub(super) const PREC_MUL: u8 = 5;
pub(super) const PREC_POW: u8 = 6;

fn prec(op: BinaryOp) -> u8 {
    use BinaryOp::*;
    match op {
        Or => PREC_OR,
        And | Unless => PREC_AND,
        Eql | Neq | Gtr | Lss | Gte | Lte => PREC_CMP,
        Add | Sub => PREC_ADD,
        // Prometheus's docs give no precedence for the trim operators; they
        // take a threshold like `/` takes a divisor, so they bind like it.
        Mul | Div | Mod | Atan2 | TrimUpper | TrimLower => PREC_MUL,
        Pow => PREC_POW,
    }
}

fn aggregate_op(word: &str) -> Option<AggregateOp> {
    use AggregateOp::*;
    let w = word.to_ascii_lowercase();
    Some(match w.as_str() {
        "sum" => Sum,
        "min" => Min,
        "max" => Max,
        "avg" => Avg,
        "group" => Group,
        "stddev" => Stddev,
        "stdvar" => Stdvar,
        "count" => Count,
        "count_values" => CountValues,
        "bottomk" => Bottomk,
        "topk" => Topk,
        "quantile" => Quantile,
        "limitk" => Limitk,
        "limit_ratio" => LimitRatio,
        _ => return None,
    })
}

/// Keywords that are not metric names (Prometheus's grammar does not list
/// them in `metric_identifier`).
const NON_METRIC_KEYWORDS: [&str; 5] = ["bool", "on", "ignoring", "group_left", "group_right"];

const KEYWORDS: [&str; 14] = [
    "bool",
    "by",
    "group_left",
    "group_right",
    "ignoring",
    "offset",
    "on",
    "without",
    "anchored",
    "smoothed",
    "start",
    "end",
    "step",
    "range",
];

pub(super) struct Parser<'a> {
    input: &'a str,
    toks: Vec<Token>,
    i: usize,
    pub(super) opts: &'a ParseOptions,
    depth: usize,
}

/// Modifiers written between a binary operator and its right operand.
#[derive(Default)]
struct BinMods {
    return_bool: bool,
    /// `Some(true)` for `on`, `Some(false)` for `ignoring`.
    on: Option<bool>,
    labels: Vec<String>,
    card: Option<Cardinality>,
    include: Vec<String>,
    fill_left: Option<f64>,
    fill_right: Option<f64>,
    fill_pos: Option<PosRange>,
}

/// The role of an identifier in operand position.
enum IdentUse {
    Aggregate(AggregateOp),
    Call,
    Selector,
    Invalid,
}

impl<'a> Parser<'a> {
    // ---- token helpers ----

    pub(super) fn tok(&self) -> &Token {
        // The token list always ends with Eof and `i` never passes it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    pub(super) fn kind(&self) -> TokKind {
        self.tok().kind
    }

    fn peek_kind(&self, n: usize) -> TokKind {
        self.toks.get(self.i + n).map_or(TokKind::Eof, |t| t.kind)
    }

    pub(super) fn text(&self, t: &Token) -> &'a str {
        &self.input[t.start..t.end]
    }

    fn cur_text(&self) -> &'a str {
        self.text(self.tok())
    }

    pub(super) fn advance(&mut self) -> Token {
        let t = self.tok().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    /// Whether the current token is the identifier `word` (any case).
    pub(super) fn is_word(&self, word: &str) -> bool {
        self.kind() == TokKind::Ident && self.cur_text().eq_ignore_ascii_case(word)
    }

    pub(super) fn expect(&mut self, kind: TokKind, ctx: &str, expected: &str) -> R<Token> {
        if self.kind() == kind {
            Ok(self.advance())
        } else {
            self.unexpected(ctx, expected)
        }
    }

    /// Prometheus's description of a token in "unexpected …" messages.
    fn desc(&self, t: &Token) -> String {
        let text = self.text(t);
        match t.kind {
            TokKind::Eof => "end of input".to_string(),
            TokKind::Ident => {
                let lower = text.to_ascii_lowercase();
                if aggregate_op(&lower).is_some() {
                    format!("<aggr:{text}>")
                } else if matches!(lower.as_str(), "and" | "or" | "unless" | "atan2") {
                    format!("<op:{text}>")
                } else if KEYWORDS.contains(&lower.as_str()) {
                    format!("<{text}>")
                } else if text.contains(':') {
                    format!("metric identifier {}", q(text))
                } else {
                    format!("identifier {}", q(text))
                }
            }
            TokKind::Number => format!("number {}", q(text)),
            TokKind::Duration => format!("duration {}", q(text)),
            TokKind::Str => {
                if text.len() > 10 {
                    let cut = (0..=10)
                        .rev()
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap_or(0);
                    format!("string {}...", q(&text[..cut]))
                } else {
                    format!("string {}", q(text))
                }
            }
            TokKind::Add
            | TokKind::Sub
            | TokKind::Mul
            | TokKind::Div
            | TokKind::Mod
            | TokKind::Pow
            | TokKind::Eql
            | TokKind::Neq
            | TokKind::Lss
            | TokKind::Gtr
            | TokKind::Lte
            | TokKind::Gte
            | TokKind::EqlRegex
            | TokKind::NeqRegex
            | TokKind::TrimUpper
            | TokKind::TrimLower
            | TokKind::At => format!("<op:{text}>"),
            _ => q(text),
        }
    }

    pub(super) fn unexpected<T>(&self, ctx: &str, expected: &str) -> R<T> {
        let t = self.tok();
        let mut msg = format!("unexpected {}", self.desc(t));
        if !ctx.is_empty() {
            msg.push_str(" in ");
            msg.push_str(ctx);
        }
        if !expected.is_empty() {
            msg.push_str(", expected ");
            msg.push_str(expected);
        }
        err(t.pos(), msg)
    }

    pub(super) fn check_height(&self, h: usize, pos: PosRange) -> R<usize> {
        if h > self.opts.max_depth {
            return err(
                pos,
                format!(
                    "expression is nested too deeply (limit {})",
                    self.opts.max_depth
                ),
            );
        }
        Ok(h)
    }

    pub(super) fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > self.opts.max_depth {
            return err(
                self.tok().pos(),
                format!(
                    "expression is nested too deeply (limit {})",
                    self.opts.max_depth
                ),
            );
        }
        Ok(())
    }

    pub(super) fn leave(&mut self) {
        self.depth -= 1;
    }

    // ---- expressions ----

    /// Prometheus's lexer answers the end of input with an error instead of
    /// EOF while a `(` is open, and its parser reports only that error
    /// (at the end of input). So any error met at the end of input while a
    /// parenthesis is open (`sum(x`, `sum(`, `(rate(x)`) becomes
    /// "unclosed left parenthesis" there. Errors before the end win, as an
    /// unmatched `)` always fails where it stands.
    fn unclosed_paren_at_eof(&self) -> Option<Err0> {
        if self.kind() != TokKind::Eof {
            return None;
        }
        let opens = self
            .toks
            .iter()
            .filter(|t| t.kind == TokKind::LParen)
            .count();
        let closes = self
            .toks
            .iter()
            .filter(|t| t.kind == TokKind::RParen)
            .count();
        (opens > closes).then(|| Err0 {
            pos: PosRange::new(self.input.len(), self.input.len()),
            msg: "unclosed left parenthesis".to_string(),
        })
    }

    fn parse_top(&mut self) -> R<Expr> {
        if self.kind() == TokKind::Eof {
            return err(PosRange::new(0, 0), "no expression found in input");
        }
        let (e, _) = self.expr(0)?;
        if self.kind() != TokKind::Eof {
            if self.kind() == TokKind::RParen {
                return err(
                    self.tok().pos(),
                    format!("unexpected right parenthesis {}", q(")")),
                );
            }
            return self.unexpected("", "");
        }
        Ok(e)
    }

    fn peek_binop(&self) -> Option<BinaryOp> {
        use BinaryOp::*;
        Some(match self.kind() {
            TokKind::Add => Add,
            TokKind::Sub => Sub,
            TokKind::Mul => Mul,
            TokKind::Div => Div,
            TokKind::Mod => Mod,
            TokKind::Pow => Pow,
            TokKind::Eql => Eql,
            TokKind::Neq => Neq,
            TokKind::Lss => Lss,
            TokKind::Gtr => Gtr,
            TokKind::Lte => Lte,
            TokKind::Gte => Gte,
            TokKind::TrimUpper => TrimUpper,
            TokKind::TrimLower => TrimLower,
            TokKind::Ident => {
                let t = self.cur_text();
                if t.eq_ignore_ascii_case("and") {
                    And
                } else if t.eq_ignore_ascii_case("or") {
                    Or
                } else if t.eq_ignore_ascii_case("unless") {
                    Unless
                } else if t.eq_ignore_ascii_case("atan2") {
                    Atan2
                } else {
                    return None;
                }
            }
            _ => return None,
        })
    }

    /// Precedence climbing over binary operators of precedence >= `min`.
    fn expr(&mut self, min: u8) -> R<P> {
        // Every recursion of the parser passes through here (operands,
        // parentheses, arguments), so this bounds the stack.
        self.enter()?;
        let r = self.expr_inner(min);
        self.leave();
        r
    }

    fn expr_inner(&mut self, min: u8) -> R<P> {
        let first = self.unary_inner()?;
        match self.peek_binop() {
            Some(op) if prec(op) >= min => self.binary_loop(first, min),
            _ => Ok(first),
        }
    }

    #[inline(never)]
    fn binary_loop(&mut self, first: P, min: u8) -> R<P> {
        let (mut lhs, mut h) = first;
        while let Some(op) = self.peek_binop() {
            let p = prec(op);
            if p < min {
                break;
            }
            let op_tok = self.advance();
            let mods = self.bin_modifiers()?;
            let next_min = if op == BinaryOp::Pow { p } else { p + 1 };
            let (rhs, rh) = self.expr(next_min)?;
            let pos = PosRange {
                start: lhs.pos().start,
                end: rhs.pos().end,
            };
            h = self.check_height(h.max(rh) + 1, pos)?;
            lhs = self.binary(op, op_tok.pos(), lhs, rhs, mods)?;
        }
        Ok((lhs, h))
    }

    fn unary_inner(&mut self) -> R<P> {
        match self.kind() {
            TokKind::Add => self.unary_op(UnaryOp::Pos),
            TokKind::Sub => self.unary_op(UnaryOp::Neg),
            _ => self.postfix(),
        }
    }

    #[inline(never)]
    fn unary_op(&mut self, op: UnaryOp) -> R<P> {
        let start = self.advance().start as u32;
        // `unary_op expr %prec MUL`: the operand extends over `^` only.
        let operand = self.expr(PREC_POW)?;
        self.finish_unary(op, start, operand)
    }

    #[inline(never)]
    fn finish_unary(&self, op: UnaryOp, start: u32, (e, h): P) -> R<P> {
        let pos = PosRange {
            start,
            end: e.pos().end,
        };
        match e {
            Expr::Number(mut n) => {
                if op == UnaryOp::Neg {
                    n.value = -n.value;
                }
                n.pos.start = start;
                Ok((Expr::Number(n), h))
            }
            e => {
                let t = e.value_type();
                if t != ValueType::Scalar && t != ValueType::Vector {
                    return err(
                        pos,
                        format!(
                            "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                            q(t.as_str())
                        ),
                    );
                }
                let h = self.check_height(h + 1, pos)?;
                Ok((
                    Expr::Unary(UnaryExpr {
                        op,
                        expr: Box::new(e),
                        pos,
                    }),
                    h,
                ))
            }
        }
    }

    /// A primary expression followed by any postfix modifiers.
    fn postfix(&mut self) -> R<P> {
        let p = self.primary()?;
        let modifier_follows = match self.kind() {
            TokKind::LBracket | TokKind::At => true,
            TokKind::Ident => {
                self.is_word("offset") || self.is_word("anchored") || self.is_word("smoothed")
            }
            _ => false,
        };
        if modifier_follows {
            self.postfix_modifiers(p)
        } else {
            Ok(p)
        }
    }

    #[inline(never)]
    fn postfix_modifiers(&mut self, (mut e, mut h): P) -> R<P> {
        loop {
            match self.kind() {
                TokKind::LBracket => {
                    let r = self.range_or_subquery(e, h)?;
                    e = r.0;
                    h = r.1;
                }
                TokKind::At => self.at_modifier(&mut e)?,
                TokKind::Ident if self.is_word("offset") => self.offset_modifier(&mut e)?,
                TokKind::Ident if self.is_word("anchored") || self.is_word("smoothed") => {
                    self.extended_modifier(&mut e)?
                }
                _ => break,
            }
        }
        Ok((e, h))
    }

    // The functions on the recursion path (expr → unary → postfix → primary
    // → paren/call/aggregate → expr) keep small frames: big or rarely used
    // work lives in separate non-inlined functions, because a debug build
    // otherwise spends kilobytes of stack per nesting level.

    fn primary(&mut self) -> R<P> {
        match self.kind() {
            TokKind::Number | TokKind::Duration | TokKind::Str => self.literal(),
            TokKind::LParen => self.paren(),
            TokKind::LBrace => self.bare_selector(),
            TokKind::Ident => self.ident_primary(),
            TokKind::RParen => self.unexpected_rparen(),
            _ => self.unexpected("", ""),
        }
    }

    #[inline(never)]
    fn bare_selector(&mut self) -> R<P> {
        Ok((self.vector_selector(None, false)?, 1))
    }

    #[inline(never)]
    fn unexpected_rparen<T>(&self) -> R<T> {
        err(
            self.tok().pos(),
            format!("unexpected right parenthesis {}", q(")")),
        )
    }

    #[inline(never)]
    fn literal(&mut self) -> R<P> {
        let t = self.advance();
        if t.kind == TokKind::Str {
            let pos = t.pos();
            let (value, raw) = t.sval.map(|s| (s.value, s.raw)).unwrap_or_default();
            return Ok((Expr::String(StringLiteral { value, pos, raw }), 1));
        }
        let value = self.number_value(&t)?;
        Ok((
            Expr::Number(NumberLiteral {
                value,
                pos: t.pos(),
            }),
            1,
        ))
    }

    #[inline(never)]
    fn paren(&mut self) -> R<P> {
        let open = self.advance().pos();
        let (inner, h) = self.expr(0)?;
        self.finish_paren(open, inner, h)
    }

    #[inline(never)]
    fn finish_paren(&mut self, open: PosRange, inner: Expr, h: usize) -> R<P> {
        if self.kind() != TokKind::RParen {
            if self.kind() == TokKind::Eof {
                // At the end of input, as Prometheus's lexer reports it.
                return err(self.tok().pos(), "unclosed left parenthesis");
            }
            return self.unexpected("paren expression", "\")\"");
        }
        let close = self.advance();
        let pos = PosRange {
            start: open.start,
            end: close.pos().end,
        };
        let h = self.check_height(h + 1, pos)?;
        Ok((
            Expr::Paren(ParenExpr {
                expr: Box::new(inner),
                pos,
            }),
            h,
        ))
    }

    fn ident_primary(&mut self) -> R<P> {
        match self.classify_ident() {
            IdentUse::Aggregate(op) => self.aggregate(op),
            IdentUse::Call => self.call(),
            IdentUse::Selector => self.named_selector(),
            IdentUse::Invalid => self.unexpected("", ""),
        }
    }

    /// What an identifier in operand position is, from what follows it.
    #[inline(never)]
    fn classify_ident(&self) -> IdentUse {
        let word = self.cur_text();
        let next = self.peek_kind(1);
        if let Some(op) = aggregate_op(word) {
            let modifier_follows = self.toks.get(self.i + 1).is_some_and(|n| {
                n.kind == TokKind::Ident && {
                    let w = self.text(n);
                    w.eq_ignore_ascii_case("by") || w.eq_ignore_ascii_case("without")
                }
            });
            if next == TokKind::LParen || modifier_follows {
                return IdentUse::Aggregate(op);
            }
        }
        if next == TokKind::LParen {
            return IdentUse::Call;
        }
        let lower = word.to_ascii_lowercase();
        if NON_METRIC_KEYWORDS.contains(&lower.as_str())
            || matches!(lower.as_str(), "and" | "or" | "unless" | "atan2")
        {
            return IdentUse::Invalid;
        }
        IdentUse::Selector
    }

    #[inline(never)]
    fn named_selector(&mut self) -> R<P> {
        let t = self.advance();
        Ok((self.vector_selector(Some(&t), false)?, 1))
    }

    /// An optionally signed number or duration literal, as `@` timestamps
    /// and fill values take (`@ -10`, `fill(+1)`); `ctx`/`what` word the
    /// error when something else follows.
    fn signed_number(&mut self, ctx: &str, what: &str) -> R<f64> {
        let neg = match self.kind() {
            TokKind::Sub => {
                self.advance();
                true
            }
            TokKind::Add => {
                self.advance();
                false
            }
            _ => false,
        };
        if !matches!(self.kind(), TokKind::Number | TokKind::Duration) {
            return self.unexpected(ctx, what);
        }
        let t = self.advance();
        let v = self.number_value(&t)?;
        Ok(if neg { -v } else { v })
    }

    pub(super) fn number_value(&self, t: &Token) -> R<f64> {
        let text = self.text(t);
        if t.kind == TokKind::Duration {
            let ms = lexer::parse_duration_ms(text).map_err(|msg| Err0 { pos: t.pos(), msg })?;
            Ok(ms as f64 / 1000.0)
        } else {
            lexer::parse_number(text).map_err(|msg| Err0 { pos: t.pos(), msg })
        }
    }

    // ---- selectors ----

    /// A vector selector; `name` is the already consumed metric name token.
    /// `allow_empty`: the selector may match everything (the label-selector
    /// argument of `info`).
    fn vector_selector(&mut self, name: Option<&Token>, allow_empty: bool) -> R<Expr> {
        let start = name.map_or(self.tok().start, |t| t.start);
        let mut end = name.map_or(self.tok().end, |t| t.end);
        let mut matchers = Vec::new();
        if self.kind() == TokKind::LBrace {
            self.advance();
            loop {
                match self.kind() {
                    TokKind::RBrace => break,
                    TokKind::Ident | TokKind::Str => matchers.push(self.label_matcher()?),
                    _ => {
                        return self.unexpected("label matching", "identifier or \"}\"");
                    }
                }
                match self.kind() {
                    TokKind::Comma => {
                        self.advance();
                    }
                    TokKind::RBrace => break,
                    _ => return self.unexpected("label matching", "\",\" or \"}\""),
                }
            }
            end = self.advance().end;
        }
        let pos = PosRange::new(start, end);
        let name = name.map(|t| self.text(t).to_string());
        if let Some(n) = &name {
            if let Some(m) = matchers.iter().find(|m| m.name == "__name__") {
                return err(
                    pos,
                    format!(
                        "metric name must not be set twice: {} or {}",
                        q(n),
                        q(&m.value)
                    ),
                );
            }
            matchers.push(Matcher::equal("__name__", n));
        } else if !allow_empty && matchers.iter().all(|m| m.matches_empty()) {
            return err(
                pos,
                "vector selector must contain at least one non-empty matcher",
            );
        }
        Ok(Expr::VectorSelector(VectorSelector {
            name,
            matchers,
            offset: None,
            at: None,
            anchored: false,
            smoothed: false,
            pos,
        }))
    }

    fn label_matcher(&mut self) -> R<Matcher> {
        let nt = self.advance();
        let name = match nt.kind {
            TokKind::Str => nt
                .sval
                .as_ref()
                .map(|s| s.value.clone())
                .unwrap_or_default(),
            _ => self.text(&nt).to_string(),
        };
        let kind = match self.kind() {
            TokKind::Assign => MatchType::Equal,
            TokKind::Neq => MatchType::NotEqual,
            TokKind::EqlRegex => MatchType::Regex,
            TokKind::NeqRegex => MatchType::NotRegex,
            // A quoted name alone is the metric name: `{"my.metric"}`.
            TokKind::Comma | TokKind::RBrace if nt.kind == TokKind::Str => {
                return Ok(Matcher::equal("__name__", &name));
            }
            _ => {
                return self.unexpected("label matching", "label matching operator");
            }
        };
        self.advance();
        let vt = self.expect(TokKind::Str, "label matching", "string")?;
        let value = vt.sval.as_ref().map(|s| s.value.as_str()).unwrap_or("");
        Matcher::new(kind, &name, value).map_err(|e| Err0 {
            pos: PosRange::new(nt.start, vt.end),
            msg: regex_error_message(value, &e),
        })
    }

    fn range_or_subquery(&mut self, e: Expr, h: usize) -> R<P> {
        let open = self.advance();
        if !self.starts_duration() {
            return self.unexpected(
                "subquery or range selector",
                "number, duration, step(), or range()",
            );
        }
        let range = self.duration_in_brackets()?;
        match self.kind() {
            TokKind::RBracket => {
                let close = self.advance();
                let range_pos = PosRange::new(open.start, close.end);
                let vs = match e {
                    Expr::VectorSelector(vs) => vs,
                    _ => return err(range_pos, "ranges only allowed for vector selectors"),
                };
                if vs
                    .offset
                    .as_ref()
                    .is_some_and(|o| o != &Duration::Literal(0))
                {
                    return err(range_pos, "no offset modifiers allowed before range");
                }
                if vs.at.is_some() {
                    return err(range_pos, "no @ modifiers allowed before range");
                }
                let pos = PosRange {
                    start: vs.pos.start,
                    end: close.pos().end,
                };
                Ok((Expr::MatrixSelector(MatrixSelector { vs, range, pos }), 2))
            }
            TokKind::Colon => {
                self.advance();
                let step = if self.kind() == TokKind::RBracket {
                    None
                } else if self.starts_duration() {
                    Some(self.duration_in_brackets()?)
                } else {
                    return self.unexpected(
                        "subquery selector",
                        "number, duration, step(), range(), or \"]\"",
                    );
                };
                if self.kind() != TokKind::RBracket {
                    return self.unexpected("subquery selector", "\"]\"");
                }
                let close = self.advance();
                let pos = PosRange {
                    start: e.pos().start,
                    end: close.pos().end,
                };
                let t = e.value_type();
                if t != ValueType::Vector {
                    return err(
                        pos,
                        format!(
                            "subquery is only allowed on instant vector, got {} instead",
                            t.go_name()
                        ),
                    );
                }
                let h = self.check_height(h + 1, pos)?;
                Ok((
                    Expr::Subquery(SubqueryExpr {
                        expr: Box::new(e),
                        range,
                        step,
                        offset: None,
                        at: None,
                        pos,
                    }),
                    h,
                ))
            }
            _ => self.unexpected("subquery or range", "\":\" or \"]\""),
        }
    }

    fn offset_modifier(&mut self, e: &mut Expr) -> R<()> {
        let kw = self.advance();
        let d = self.offset_duration()?;
        let end = self.toks[self.i.saturating_sub(1)].end as u32;
        let target_pos = e.pos();
        let (slot, pos): (&mut Option<Duration>, &mut PosRange) = match e {
            Expr::VectorSelector(vs) => (&mut vs.offset, &mut vs.pos),
            Expr::MatrixSelector(ms) => (&mut ms.vs.offset, &mut ms.pos),
            Expr::Subquery(sq) => (&mut sq.offset, &mut sq.pos),
            _ => {
                return err(
                    PosRange {
                        start: target_pos.start,
                        end: kw.pos().end,
                    },
                    "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery",
                )
            }
        };
        // As in Prometheus, a zero offset counts as no offset.
        if slot.as_ref().is_some_and(|o| o != &Duration::Literal(0)) {
            return err(target_pos, "offset may not be set multiple times");
        }
        *slot = Some(d);
        pos.end = end;
        Ok(())
    }

    fn at_modifier(&mut self, e: &mut Expr) -> R<()> {
        let at_tok = self.advance();
        let at = if self.is_word("start") || self.is_word("end") {
            let is_start = self.is_word("start");
            self.advance();
            self.expect(TokKind::LParen, "@", "\"(\"")?;
            self.expect(TokKind::RParen, "@", "\")\"")?;
            if is_start {
                AtModifier::Start
            } else {
                AtModifier::End
            }
        } else {
            let ts = self.signed_number("@", "timestamp")?;
            if !ts.is_finite() || ts >= i64::MAX as f64 || ts <= i64::MIN as f64 {
                return err(
                    e.pos(),
                    format!(
                        "timestamp out of bounds for @ modifier: {}",
                        // Go's `%f`: special values keep their names.
                        if ts.is_finite() {
                            format!("{ts:.6}")
                        } else {
                            super::printer::format_number(ts)
                        }
                    ),
                );
            }
            AtModifier::Timestamp((ts * 1000.0).round() as i64)
        };
        let end = self.toks[self.i.saturating_sub(1)].end as u32;
        let target_pos = e.pos();
        let (slot, pos) = match e {
            Expr::VectorSelector(vs) => (&mut vs.at, &mut vs.pos),
            Expr::MatrixSelector(ms) => (&mut ms.vs.at, &mut ms.pos),
            Expr::Subquery(sq) => (&mut sq.at, &mut sq.pos),
            _ => {
                return err(
                    PosRange {
                        start: target_pos.start,
                        end: at_tok.pos().end,
                    },
                    "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery",
                )
            }
        };
        if slot.is_some() {
            return err(target_pos, "@ <timestamp> may not be set multiple times");
        }
        *slot = Some(at);
        pos.end = end;
        Ok(())
    }

    fn extended_modifier(&mut self, e: &mut Expr) -> R<()> {
        let kw = self.advance();
        let name = self.text(&kw).to_ascii_lowercase();
        let anchored = name == "anchored";
        let target_pos = e.pos();
        if !self.opts.extended_range_selectors {
            return err(
                target_pos,
                format!("{name} modifier is experimental and not enabled"),
            );
        }
        let (vs, pos): (&mut VectorSelector, Option<&mut PosRange>) = match e {
            Expr::VectorSelector(vs) => (vs, None),
            Expr::MatrixSelector(MatrixSelector { vs, pos, .. }) => (vs, Some(pos)),
            Expr::Subquery(_) => {
                return err(
                    target_pos,
                    format!("{name} modifier is not supported for subqueries"),
                )
            }
            _ => {
                return err(
                    target_pos,
                    format!(
                        "{name} modifier must be preceded by an instant vector selector or range vector selector"
                    ),
                )
            }
        };
        if (anchored && vs.smoothed) || (!anchored && vs.anchored) {
            return err(
                target_pos,
                "anchored and smoothed modifiers cannot be used together",
            );
        }
        if anchored {
            vs.anchored = true;
        } else {
            vs.smoothed = true;
        }
        match pos {
            Some(p) => p.end = kw.end as u32,
            None => vs.pos.end = kw.end as u32,
        }
        Ok(())
    }

    // ---- binary expressions ----

    fn grouping_labels(&mut self, ctx: &str) -> R<(Vec<String>, u32)> {
        self.expect(TokKind::LParen, ctx, "\"(\"")?;
        let mut out = Vec::new();
        loop {
            let t = self.tok().clone();
            match t.kind {
                TokKind::RParen => break,
                TokKind::Ident => {
                    self.advance();
                    out.push(self.text(&t).to_string());
                }
                // `inf`/`nan` lex as numbers but are fine label names.
                TokKind::Number if self.text(&t).bytes().all(|b| b.is_ascii_alphabetic()) => {
                    self.advance();
                    out.push(self.text(&t).to_string());
                }
                TokKind::Str => {
                    self.advance();
                    let v = t.sval.as_ref().map(|s| s.value.clone()).unwrap_or_default();
                    if v.is_empty() || t.sval.as_ref().is_some_and(|s| s.raw.is_some()) {
                        return err(
                            t.pos(),
                            format!("invalid label name for grouping: {}", q(&v)),
                        );
                    }
                    out.push(v);
                }
                _ => return self.unexpected(ctx, "label"),
            }
            match self.kind() {
                TokKind::Comma => {
                    self.advance();
                }
                TokKind::RParen => break,
                _ => return self.unexpected(ctx, "\",\" or \")\""),
            }
        }
        let close = self.advance();
        Ok((out, close.end as u32))
    }

    fn bin_modifiers(&mut self) -> R<BinMods> {
        let mut m = BinMods::default();
        if self.is_word("bool") {
            self.advance();
            m.return_bool = true;
        }
        if (self.is_word("on") || self.is_word("ignoring")) && self.peek_kind(1) == TokKind::LParen
        {
            m.on = Some(self.is_word("on"));
            self.advance();
            m.labels = self.grouping_labels("grouping opts")?.0;
            if self.is_word("group_left") || self.is_word("group_right") {
                m.card = Some(if self.is_word("group_left") {
                    Cardinality::ManyToOne
                } else {
                    Cardinality::OneToMany
                });
                self.advance();
                if self.kind() == TokKind::LParen {
                    m.include = self.grouping_labels("grouping opts")?.0;
                }
            }
        }
        loop {
            let side = if self.is_word("fill") {
                (true, true)
            } else if self.is_word("fill_left") {
                (true, false)
            } else if self.is_word("fill_right") {
                (false, true)
            } else {
                break;
            };
            if self.peek_kind(1) != TokKind::LParen {
                // `a + fill`: a metric named `fill`.
                break;
            }
            let kw = self.advance();
            self.advance();
            let v = self.signed_number("fill modifier", "number")?;
            let close = self.expect(TokKind::RParen, "fill modifier", "\")\"")?;
            let pos = PosRange::new(kw.start, close.end);
            if (side.0 && m.fill_left.is_some()) || (side.1 && m.fill_right.is_some()) {
                return err(pos, "fill value may not be set multiple times");
            }
            if side.0 {
                m.fill_left = Some(v);
            }
            if side.1 {
                m.fill_right = Some(v);
            }
            m.fill_pos = Some(m.fill_pos.map_or(pos, |p| PosRange {
                start: p.start,
                end: pos.end,
            }));
        }
        Ok(m)
    }

    fn binary(&self, op: BinaryOp, op_pos: PosRange, lhs: Expr, rhs: Expr, m: BinMods) -> R<Expr> {
        let pos = PosRange {
            start: lhs.pos().start,
            end: rhs.pos().end,
        };
        let has_fill = m.fill_left.is_some() || m.fill_right.is_some();
        if has_fill && !self.opts.binop_fill_modifiers {
            return err(pos, "binop fill modifiers are experimental and not enabled");
        }
        if m.on == Some(true) {
            if let Some(l) = m.labels.iter().find(|l| m.include.contains(l)) {
                return err(
                    pos,
                    format!(
                        "label {} must not occur in ON and GROUP clause at once",
                        q(l)
                    ),
                );
            }
        }
        if m.return_bool && !op.is_comparison() {
            return err(
                op_pos,
                "bool modifier can only be used on comparison operators",
            );
        }
        let (lt, rt) = (lhs.value_type(), rhs.value_type());
        if op.is_comparison()
            && !m.return_bool
            && lt == ValueType::Scalar
            && rt == ValueType::Scalar
        {
            return err(op_pos, "comparisons between scalars must use BOOL modifier");
        }
        for (t, e) in [(lt, &lhs), (rt, &rhs)] {
            if t != ValueType::Scalar && t != ValueType::Vector {
                return err(
                    e.pos(),
                    "binary expression must contain only scalar and instant vector types",
                );
            }
        }
        let both_vectors = lt == ValueType::Vector && rt == ValueType::Vector;
        let matching = if !both_vectors {
            if !m.labels.is_empty() || m.card.is_some() {
                return err(pos, "vector matching only allowed between instant vectors");
            }
            if has_fill {
                return err(
                    pos,
                    "filling in missing series only allowed between instant vectors",
                );
            }
            if op.is_set() {
                return err(
                    pos,
                    format!(
                        "set operator {} not allowed in binary scalar expression",
                        q(op.as_str())
                    ),
                );
            }
            None
        } else {
            let mut card = m.card.unwrap_or(Cardinality::OneToOne);
            if op.is_set() {
                if card != Cardinality::OneToOne {
                    return err(
                        pos,
                        format!("no grouping allowed for {} operation", q(op.as_str())),
                    );
                }
                if has_fill {
                    return err(
                        pos,
                        "filling in missing series not allowed for set operators",
                    );
                }
                card = Cardinality::ManyToMany;
            }
            Some(VectorMatching {
                card,
                on: m.on == Some(true),
                labels: m.labels,
                include: m.include,
                fill_left: m.fill_left,
                fill_right: m.fill_right,
            })
        };
        Ok(Expr::Binary(BinaryExpr {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            return_bool: m.return_bool,
            matching,
            pos,
        }))
    }

    // ---- calls and aggregations ----

    /// `( expr, expr, ... )`; returns the arguments, their max height and the
    /// position of the closing parenthesis.
    /// `selector_arg`: the index of an argument that is a label selector
    /// which may match every series (`info`'s second argument).
    fn call_args(
        &mut self,
        ctx: &str,
        selector_arg: Option<usize>,
    ) -> R<(Vec<Expr>, usize, PosRange)> {
        self.expect(TokKind::LParen, ctx, "\"(\"")?;
        let mut args = Vec::new();
        let mut h = 0;
        if self.kind() != TokKind::RParen {
            loop {
                let arg = if selector_arg == Some(args.len()) && self.is_bare_selector() {
                    self.bare_label_selector()?
                } else {
                    self.expr(0)?
                };
                h = h.max(arg.1);
                args.push(arg.0);
                if !self.after_arg(ctx)? {
                    break;
                }
            }
        }
        let close = self.advance().pos();
        Ok((args, h, close))
    }

    /// Whether a bare `{...}` argument follows (not `{...} + x`).
    #[inline(never)]
    fn is_bare_selector(&self) -> bool {
        if self.kind() != TokKind::LBrace {
            return false;
        }
        let mut j = self.i;
        while j < self.toks.len() && self.toks[j].kind != TokKind::RBrace {
            j += 1;
        }
        matches!(
            self.toks.get(j + 1).map(|t| t.kind),
            Some(TokKind::Comma | TokKind::RParen)
        )
    }

    /// `info`'s label selector argument, which may match every series.
    #[inline(never)]
    fn bare_label_selector(&mut self) -> R<P> {
        Ok((self.vector_selector(None, true)?, 1))
    }

    /// After an argument: true if another follows (a comma was consumed),
    /// false at the closing parenthesis (not consumed).
    #[inline(never)]
    fn after_arg(&mut self, ctx: &str) -> R<bool> {
        match self.kind() {
            TokKind::Comma => {
                let comma = self.advance();
                if self.kind() == TokKind::RParen {
                    return err(
                        comma.pos(),
                        "trailing commas not allowed in function call args",
                    );
                }
                Ok(true)
            }
            TokKind::RParen => Ok(false),
            TokKind::Eof => err(self.tok().pos(), "unclosed left parenthesis"),
            _ => self.unexpected(ctx, "\",\" or \")\""),
        }
    }

    fn call(&mut self) -> R<P> {
        let name_tok = self.advance();
        let sig = self.lookup_function(&name_tok)?;
        let (args, h, close) =
            self.call_args("function call", (sig.name == "info").then_some(1))?;
        self.finish_call(sig, name_tok.pos(), args, h, close)
    }

    #[inline(never)]
    fn lookup_function(&self, name_tok: &Token) -> R<&'static functions::FunctionSig> {
        let written = self.text(name_tok);
        // `start`, `end`, `step` and `range` are keywords, hence any case.
        let lower = written.to_ascii_lowercase();
        let name = if matches!(lower.as_str(), "start" | "end" | "step" | "range") {
            lower
        } else {
            written.to_string()
        };
        let Some(sig) = functions::lookup(&name) else {
            return err(
                name_tok.pos(),
                format!("unknown function with name {}", q(written)),
            );
        };
        if sig.experimental && !self.opts.experimental_functions {
            return err(
                name_tok.pos(),
                format!("function {} is not enabled", q(written)),
            );
        }
        Ok(sig)
    }

    /// Argument count and type checks (Prometheus's `checkAST` for calls).
    #[inline(never)]
    fn finish_call(
        &self,
        sig: &'static functions::FunctionSig,
        name_pos: PosRange,
        args: Vec<Expr>,
        h: usize,
        close: PosRange,
    ) -> R<P> {
        let pos = PosRange {
            start: name_pos.start,
            end: close.end,
        };
        let h = self.check_height(h + 1, pos)?;
        let nargs = sig.arg_types.len();
        let got = args.len();
        if sig.variadic == 0 {
            if nargs != got {
                return err(
                    pos,
                    format!(
                        "expected {nargs} argument(s) in call to {}, got {got}",
                        q(sig.name)
                    ),
                );
            }
        } else {
            let min = nargs - 1;
            if got < min {
                return err(
                    pos,
                    format!(
                        "expected at least {min} argument(s) in call to {}, got {got}",
                        q(sig.name)
                    ),
                );
            }
            if sig.variadic > 0 && got > min + sig.variadic as usize {
                return err(
                    pos,
                    format!(
                        "expected at most {} argument(s) in call to {}, got {got}",
                        min + sig.variadic as usize,
                        q(sig.name)
                    ),
                );
            }
        }
        for (i, a) in args.iter().enumerate() {
            let Some(want) = sig.arg_type(i) else { break };
            let t = a.value_type();
            if t != want {
                return err(
                    a.pos(),
                    format!(
                        "expected type {} in call to function {}, got {}",
                        want.as_str(),
                        q(sig.name),
                        t.as_str()
                    ),
                );
            }
        }
        if sig.name == "info" {
            if let Some(Expr::VectorSelector(vs)) = args.get(1).map(Expr::unwrap_parens) {
                if vs.name.is_some() {
                    return err(
                        args[1].pos(),
                        "expected label selectors only, got vector selector instead",
                    );
                }
            } else if let Some(a) = args.get(1) {
                return err(a.pos(), "expected label selectors only");
            }
        }
        Ok((
            Expr::Call(Call {
                func: sig.name.to_string(),
                args,
                pos,
            }),
            h,
        ))
    }

    fn aggregate(&mut self, op: AggregateOp) -> R<P> {
        let op_tok = self.advance();
        let before = self.aggregate_head(op, &op_tok)?;
        let (args, h, close) = self.call_args("aggregation", None)?;
        self.finish_aggregate(op, op_tok.pos(), before, args, h, close)
    }

    /// Checks that the aggregator is enabled and parses a leading `by`/`without`.
    #[inline(never)]
    fn aggregate_head(
        &mut self,
        op: AggregateOp,
        op_tok: &Token,
    ) -> R<Option<(Vec<String>, bool)>> {
        if matches!(op, AggregateOp::Limitk | AggregateOp::LimitRatio)
            && !self.opts.experimental_functions
        {
            return err(
                op_tok.pos(),
                format!(
                    "{}() is experimental and must be enabled with --enable-feature=promql-experimental-functions",
                    op.as_str()
                ),
            );
        }
        if self.is_word("by") || self.is_word("without") {
            let without = self.is_word("without");
            self.advance();
            let (g, _) = self.grouping_labels("grouping opts")?;
            return Ok(Some((g, without)));
        }
        Ok(None)
    }

    /// A trailing `by`/`without`, then Prometheus's aggregation checks.
    #[inline(never)]
    fn finish_aggregate(
        &mut self,
        op: AggregateOp,
        op_pos: PosRange,
        mut grouping: Option<(Vec<String>, bool)>,
        mut args: Vec<Expr>,
        h: usize,
        close: PosRange,
    ) -> R<P> {
        let mut end = close.end as usize;
        if grouping.is_none() && (self.is_word("by") || self.is_word("without")) {
            let without = self.is_word("without");
            self.advance();
            let (g, e) = self.grouping_labels("grouping opts")?;
            grouping = Some((g, without));
            end = e as usize;
        }
        let pos = PosRange {
            start: op_pos.start,
            end: end as u32,
        };
        let h = self.check_height(h + 1, pos)?;
        if args.is_empty() {
            return err(pos, "no arguments for aggregate expression provided");
        }
        let want = if op.takes_param() { 2 } else { 1 };
        if args.len() != want {
            return err(
                pos,
                format!(
                    "wrong number of arguments for aggregate expression provided, expected {want}, got {}",
                    args.len()
                ),
            );
        }
        let expr = args.pop().ok_or_else(|| Err0 {
            pos,
            msg: "no arguments for aggregate expression provided".into(),
        })?;
        let param = args.pop();
        let et = expr.value_type();
        if et != ValueType::Vector {
            return err(
                expr.pos(),
                format!(
                    "expected type instant vector in aggregation expression, got {}",
                    et.as_str()
                ),
            );
        }
        if let Some(p) = &param {
            let want = if op == AggregateOp::CountValues {
                ValueType::String
            } else {
                ValueType::Scalar
            };
            let pt = p.value_type();
            if pt != want {
                return err(
                    p.pos(),
                    format!(
                        "expected type {} in aggregation parameter, got {}",
                        want.as_str(),
                        pt.as_str()
                    ),
                );
            }
        }
        let (grouping, without) = grouping.unwrap_or_default();
        Ok((
            Expr::Aggregate(AggregateExpr {
                op,
                expr: Box::new(expr),
                param: param.map(Box::new),
                grouping,
                without,
                pos,
            }),
            h,
        ))
    }
}
