//! PromQL lexer: query text → tokens with byte spans.
//!
//! Owns the lexical rules of Prometheus 3.x: identifiers (with `:` only outside
//! `[...]` and `{...}`), numbers (decimal, hex, exponent, `Inf`/`NaN` in any
//! case), durations (`1h30m`, `500ms`), the three string forms with Go escapes,
//! operators, and `#` comments. Keywords are *not* decided here: whether `sum`
//! is an aggregation or a metric name depends on what follows, so the parser
//! looks at identifier text itself (case-insensitively).
//!
//! Invariants: tokens are in source order, spans never overlap, the last token
//! is always `Eof` with an empty span at the end of the input.

use super::ast::PosRange;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokKind {
    Ident,
    Number,
    Duration,
    Str,
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    /// `=` (label matching only).
    Assign,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eql,
    Neq,
    Lss,
    Gtr,
    Lte,
    Gte,
    EqlRegex,
    NeqRegex,
    At,
    /// `</`
    TrimUpper,
    /// `>/`
    TrimLower,
    Eof,
}

/// A decoded string literal. `raw` is set only when the escapes produced bytes
/// that are not valid UTF-8; `value` then holds the lossy form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StrVal {
    pub(crate) value: String,
    pub(crate) raw: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) kind: TokKind,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Decoded value for `Str` tokens.
    pub(crate) sval: Option<Box<StrVal>>,
}

impl Token {
    pub(crate) fn pos(&self) -> PosRange {
        PosRange::new(self.start, self.end)
    }
}

/// A lexical error: message and the byte range it concerns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LexError {
    pub(crate) pos: PosRange,
    pub(crate) msg: String,
}

fn is_alpha(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphabetic()
}

fn is_alnum(c: u8) -> bool {
    is_alpha(c) || c.is_ascii_digit()
}

/// Splits `input` into tokens.
pub(crate) fn lex(input: &str) -> Result<Vec<Token>, LexError> {
    let mut lx = Lexer {
        src: input.as_bytes(),
        input,
        pos: 0,
        brackets: 0,
        parens: 0,
        braces: false,
        toks: Vec::new(),
    };
    lx.run()?;
    Ok(lx.toks)
}

struct Lexer<'a> {
    src: &'a [u8],
    input: &'a str,
    pos: usize,
    /// Open `[` count: inside, `:` separates a subquery's range and step.
    brackets: u32,
    /// `(` minus `)` so far. Prometheus's lexer reports an unclosed
    /// parenthesis at the end of input before an unclosed bracket.
    parens: i64,
    /// Inside `{...}`: identifiers are label names, never keywords or numbers.
    braces: bool,
    toks: Vec<Token>,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn peek_at(&self, off: usize) -> Option<u8> {
        self.src.get(self.pos + off).copied()
    }

    fn push(&mut self, kind: TokKind, start: usize) {
        self.toks.push(Token {
            kind,
            start,
            end: self.pos,
            sval: None,
        });
    }

    fn err<T>(&self, start: usize, end: usize, msg: impl Into<String>) -> Result<T, LexError> {
        Err(LexError {
            pos: PosRange::new(start, end),
            msg: msg.into(),
        })
    }

    fn run(&mut self) -> Result<(), LexError> {
        while let Some(c) = self.peek() {
            let start = self.pos;
            match c {
                b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                b'#' => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                b',' => self.single(TokKind::Comma),
                b'(' => {
                    self.parens += 1;
                    self.single(TokKind::LParen)
                }
                b')' => {
                    self.parens -= 1;
                    self.single(TokKind::RParen)
                }
                b'{' => {
                    if self.braces {
                        return self.err(start, start + 1, "unexpected left brace '{'");
                    }
                    self.braces = true;
                    self.single(TokKind::LBrace)
                }
                b'}' => {
                    if !self.braces {
                        return self.err(start, start + 1, "unexpected right brace '}'");
                    }
                    self.braces = false;
                    self.single(TokKind::RBrace)
                }
                b'[' => {
                    if self.braces {
                        return self.err(
                            start,
                            start + 1,
                            "unexpected character inside braces: '['",
                        );
                    }
                    self.brackets += 1;
                    self.single(TokKind::LBracket)
                }
                b']' => {
                    if self.brackets == 0 {
                        return self.err(start, start + 1, "unexpected right bracket ']'");
                    }
                    self.brackets -= 1;
                    self.single(TokKind::RBracket)
                }
                b'+' => self.single(TokKind::Add),
                b'-' => self.single(TokKind::Sub),
                b'*' => self.single(TokKind::Mul),
                b'/' => self.single(TokKind::Div),
                b'%' => self.single(TokKind::Mod),
                b'^' => self.single(TokKind::Pow),
                b'@' => self.single(TokKind::At),
                b'=' => match self.peek_at(1) {
                    Some(b'=') => self.double(TokKind::Eql),
                    Some(b'~') => self.double(TokKind::EqlRegex),
                    _ => self.single(TokKind::Assign),
                },
                b'!' => match self.peek_at(1) {
                    Some(b'=') => self.double(TokKind::Neq),
                    Some(b'~') => self.double(TokKind::NeqRegex),
                    _ => {
                        return self.err(start, start + 1, "unexpected character after '!'");
                    }
                },
                b'<' => {
                    if self.peek_at(1) == Some(b'=') {
                        self.double(TokKind::Lte)
                    } else if self.peek_at(1) == Some(b'/') {
                        self.double(TokKind::TrimUpper)
                    } else {
                        self.single(TokKind::Lss)
                    }
                }
                b'>' => {
                    if self.peek_at(1) == Some(b'=') {
                        self.double(TokKind::Gte)
                    } else if self.peek_at(1) == Some(b'/') {
                        self.double(TokKind::TrimLower)
                    } else {
                        self.single(TokKind::Gtr)
                    }
                }
                b'"' | b'\'' | b'`' => self.string(c)?,
                b':' if self.brackets > 0 && !self.braces => self.single(TokKind::Colon),
                b'0'..=b'9' | b'.' => self.number_or_duration()?,
                c if is_alpha(c) || (c == b':' && !self.braces) => self.identifier(),
                _ => {
                    let ch = self.input[start..].chars().next().unwrap_or('\u{fffd}');
                    return self.err(
                        start,
                        start + ch.len_utf8(),
                        format!("unexpected character: {ch:?}"),
                    );
                }
            }
        }
        if self.braces {
            return self.err(self.pos, self.pos, "unexpected end of input inside braces");
        }
        if self.brackets > 0 {
            if self.parens > 0 {
                return self.err(self.pos, self.pos, "unclosed left parenthesis");
            }
            return self.err(self.pos, self.pos, "unclosed left bracket");
        }
        let end = self.pos;
        self.push(TokKind::Eof, end);
        Ok(())
    }

    fn single(&mut self, kind: TokKind) {
        let start = self.pos;
        self.pos += 1;
        self.push(kind, start);
    }

    fn double(&mut self, kind: TokKind) {
        let start = self.pos;
        self.pos += 2;
        self.push(kind, start);
    }

    fn identifier(&mut self) {
        let start = self.pos;
        // Colons belong to metric names (recording rules), but inside brackets a
        // colon separates a subquery's range from its step.
        let colon_ok = self.brackets == 0 && !self.braces;
        while let Some(c) = self.peek() {
            if is_alnum(c) || (c == b':' && colon_ok) {
                self.pos += 1;
            } else {
                break;
            }
        }
        let word = &self.input[start..self.pos];
        if !self.braces && (word.eq_ignore_ascii_case("inf") || word.eq_ignore_ascii_case("nan")) {
            self.push(TokKind::Number, start);
        } else {
            self.push(TokKind::Ident, start);
        }
    }

    fn digits(&mut self, hex: bool) -> usize {
        let s = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.pos - s
    }

    fn number_or_duration(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        if self.scan_number() {
            self.push(TokKind::Number, start);
            return Ok(());
        }
        // Not a plain number: a duration (`5m`, `1h30m`, `250ms`) or garbage.
        self.pos = start;
        if self.scan_duration() {
            self.push(TokKind::Duration, start);
            return Ok(());
        }
        // Report the whole alphanumeric run so the message shows what was written.
        while let Some(c) = self.peek() {
            if is_alnum(c) || c == b'.' {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.err(
            start,
            self.pos,
            format!(
                "bad number or duration syntax: {:?}",
                &self.input[start..self.pos]
            ),
        )
    }

    /// Scans a number; false (position unspecified) if what follows makes it
    /// something else, e.g. the unit of a duration.
    fn scan_number(&mut self) -> bool {
        if self.peek() == Some(b'0') && matches!(self.peek_at(1), Some(b'x' | b'X')) {
            self.pos += 2;
            if self.digits(true) == 0 {
                return false;
            }
        } else {
            let int = self.digits(false);
            let mut frac = 0;
            if self.peek() == Some(b'.') {
                self.pos += 1;
                frac = self.digits(false);
            }
            if int == 0 && frac == 0 {
                return false;
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                let save = self.pos;
                self.pos += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.pos += 1;
                }
                if self.digits(false) == 0 {
                    self.pos = save;
                }
            }
        }
        !self.peek().is_some_and(|c| is_alnum(c) || c == b'.')
    }

    /// Scans `(<digits><unit>)+` followed by a non-alphanumeric character;
    /// the unit order is checked when the value is computed.
    fn scan_duration(&mut self) -> bool {
        let mut any = false;
        loop {
            if self.digits(false) == 0 {
                break;
            }
            match self.peek() {
                Some(b'm') if self.peek_at(1) == Some(b's') => self.pos += 2,
                Some(b's' | b'm' | b'h' | b'd' | b'w' | b'y') => self.pos += 1,
                _ => return false,
            }
            any = true;
        }
        any && !self.peek().is_some_and(|c| is_alnum(c) || c == b'.')
    }

    fn string(&mut self, quote: u8) -> Result<(), LexError> {
        let start = self.pos;
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        if quote == b'`' {
            loop {
                match self.peek() {
                    None => return self.err(start, self.pos, "unterminated raw string"),
                    Some(b'`') => {
                        self.pos += 1;
                        break;
                    }
                    Some(c) => {
                        out.push(c);
                        self.pos += 1;
                    }
                }
            }
        } else {
            loop {
                match self.peek() {
                    None | Some(b'\n') => {
                        return self.err(start, self.pos, "unterminated quoted string")
                    }
                    Some(c) if c == quote => {
                        self.pos += 1;
                        break;
                    }
                    Some(b'\\') => self.escape(quote, &mut out)?,
                    Some(c) => {
                        out.push(c);
                        self.pos += 1;
                    }
                }
            }
        }
        let sval = match String::from_utf8(out) {
            Ok(value) => StrVal { value, raw: None },
            Err(e) => {
                let raw = e.into_bytes();
                StrVal {
                    value: String::from_utf8_lossy(&raw).into_owned(),
                    raw: Some(raw),
                }
            }
        };
        self.toks.push(Token {
            kind: TokKind::Str,
            start,
            end: self.pos,
            sval: Some(Box::new(sval)),
        });
        Ok(())
    }

    /// Decodes one Go escape sequence (the backslash is at `self.pos`).
    fn escape(&mut self, quote: u8, out: &mut Vec<u8>) -> Result<(), LexError> {
        let start = self.pos;
        self.pos += 1;
        let Some(c) = self.peek() else {
            return self.err(start, self.pos, "escape sequence not terminated");
        };
        self.pos += 1;
        let simple = match c {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' => Some(b'\\'),
            c if c == quote => Some(c),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(());
        }
        let (n, base, max): (usize, u32, u32) = match c {
            b'0'..=b'7' => {
                self.pos -= 1;
                (3, 8, 255)
            }
            b'x' => (2, 16, 255),
            b'u' => (4, 16, 0x10ffff),
            b'U' => (8, 16, 0x10ffff),
            _ => {
                let ch = self.input[start + 1..].chars().next().unwrap_or('\u{fffd}');
                return self.err(
                    start,
                    start + 1 + ch.len_utf8(),
                    format!("unknown escape sequence {ch:?}"),
                );
            }
        };
        let mut v: u32 = 0;
        for _ in 0..n {
            let d = self.peek().and_then(|d| (d as char).to_digit(base));
            let Some(d) = d else {
                return self.err(start, self.pos, "illegal character in escape sequence");
            };
            v = v * base + d;
            self.pos += 1;
        }
        if v > max {
            return self.err(
                start,
                self.pos,
                format!("escape sequence is an invalid Unicode code point or value: {v}"),
            );
        }
        if c == b'u' || c == b'U' {
            let Some(ch) = char::from_u32(v) else {
                return self.err(
                    start,
                    self.pos,
                    "escape sequence is an invalid Unicode code point",
                );
            };
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        } else {
            // `\x` and octal escapes denote single bytes, as in Go.
            out.push(v as u8);
        }
        Ok(())
    }
}

/// Parses a duration token (`1h30m`) into milliseconds, enforcing Prometheus's
/// unit order (y, w, d, h, m, s, ms, each at most once).
pub(crate) fn parse_duration_ms(s: &str) -> Result<i64, String> {
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let bad = || format!("not a valid duration string: {s:?}");
    let b = s.as_bytes();
    let mut i = 0;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    while i < b.len() {
        let ds = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if ds == i {
            return Err(bad());
        }
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[us..i];
        let Some(idx) = UNITS[next_unit..].iter().position(|(u, _)| *u == unit) else {
            return Err(bad());
        };
        let idx = next_unit + idx;
        next_unit = idx + 1;
        let n: i64 = s[ds..us].parse().map_err(|_| bad())?;
        total = n
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration out of range: {s:?}"))?;
    }
    if b.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Parses a number token as Go's `strconv.ParseInt(s, 0, 64)` then
/// `ParseFloat` would (so `0x1f` is 31 and `010` is 8, as in Prometheus).
pub(crate) fn parse_number(s: &str) -> Result<f64, String> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "inf" => return Ok(f64::INFINITY),
        "nan" => return Ok(f64::NAN),
        _ => {}
    }
    if let Some(hex) = lower.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16)
            .map(|v| v as f64)
            .or_else(|_| u128::from_str_radix(hex, 16).map(|v| v as f64))
            .map_err(|e| format!("error parsing number: {s:?}: {e}"));
    }
    if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|c| c.is_ascii_digit()) {
        if let Ok(v) = i64::from_str_radix(&lower[1..], 8) {
            return Ok(v as f64);
        }
    }
    lower
        .parse::<f64>()
        .map_err(|e| format!("error parsing number: {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<TokKind> {
        lex(s).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn numbers_durations_and_identifiers() {
        use TokKind::*;
        assert_eq!(
            kinds("a:b 1 0x1f 1e3 .5 5m 1h30m Inf nan"),
            vec![Ident, Number, Number, Number, Number, Duration, Duration, Number, Number, Eof]
        );
        assert_eq!(
            kinds("x[5m:1m]"),
            vec![Ident, LBracket, Duration, Colon, Duration, RBracket, Eof]
        );
        assert_eq!(
            kinds("{nan=\"x\"}"),
            vec![LBrace, Ident, Assign, Str, RBrace, Eof]
        );
        assert_eq!(kinds("a # comment\n+ b"), vec![Ident, Add, Ident, Eof]);
        assert!(lex("1.5m").is_err());
        assert!(lex("5mx").is_err());
        assert!(lex("a ! b").is_err());
    }

    #[test]
    fn strings_decode_go_escapes() {
        let s = |q: &str| lex(q).unwrap()[0].sval.clone().unwrap();
        assert_eq!(s(r#""a\n\"b\u00e9\x41\101""#).value, "a\n\"béAA");
        assert_eq!(s(r"'it\'s'").value, "it's");
        assert_eq!(s(r"`raw\n`").value, "raw\\n");
        let inv = s(r#""a\xc5z""#);
        assert_eq!(inv.raw.as_deref(), Some(&b"a\xc5z"[..]));
        assert!(lex(r#""\'""#).is_err());
        assert!(lex("\"abc").is_err());
        assert!(lex(r#""\q""#).is_err());
    }

    #[test]
    fn durations_and_numbers_have_prometheus_values() {
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(
            parse_duration_ms("1y2w3d4h5m6s7ms"),
            Ok(31_536_000_000 + 1_209_600_000 + 259_200_000 + 14_400_000 + 300_000 + 6_000 + 7)
        );
        assert!(parse_duration_ms("1m1h").is_err());
        assert!(parse_duration_ms("1m1m").is_err());
        assert_eq!(parse_number("0x1f"), Ok(31.0));
        assert_eq!(parse_number("010"), Ok(8.0));
        assert_eq!(parse_number("09"), Ok(9.0));
        assert_eq!(parse_number("1e3"), Ok(1000.0));
        assert!(parse_number("NaN").unwrap().is_nan());
        assert_eq!(parse_number("INF"), Ok(f64::INFINITY));
    }
}
