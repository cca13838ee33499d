//! Duration expressions: ranges, subquery steps and offsets, from plain
//! literals (`5m`, `100`, `-1h`) to the experimental arithmetic
//! (`[5m+1m]`, `offset -step()*2`, `[min_of(step()+1,1h)]`).
//!
//! Invariants: anything beyond a (signed, possibly parenthesised) literal is
//! rejected unless `ParseOptions::duration_expressions`; a literal always
//! comes out as `Duration::Literal` in milliseconds; ranges and steps are
//! positive; the expression tree's height is bounded like the main tree's.

use super::ast::*;
use super::lexer::{self, TokKind};
use super::parser::{err, Err0, Parser, PREC_ADD, PREC_MUL, PREC_POW, R};

/// Scalar bounds of a duration in seconds (what fits in Go's time.Duration).
const MAX_DURATION_SECS: f64 = 9_223_372_036.854_775;

/// A duration expression while it is parsed: the tree, its source range and
/// its height.
pub(super) struct DurP {
    pub(super) e: DurationExpr,
    pub(super) pos: PosRange,
    pub(super) height: usize,
}

impl Parser<'_> {
    /// Whether the current token can begin a range or subquery step.
    pub(super) fn starts_duration(&self) -> bool {
        match self.kind() {
            TokKind::Number | TokKind::Duration | TokKind::Add | TokKind::Sub | TokKind::LParen => {
                true
            }
            TokKind::Ident => ["step", "range", "min_of", "max_of"]
                .iter()
                .any(|w| self.is_word(w)),
            _ => false,
        }
    }

    /// A range or subquery step: full duration arithmetic, must be positive.
    pub(super) fn duration_in_brackets(&mut self) -> R<Duration> {
        let d = self.dur_expr(0)?;
        let pos = d.pos;
        let out = self.finish_duration(d)?;
        if let Duration::Literal(ms) = out {
            if ms <= 0 {
                return err(pos, "duration must be greater than 0");
            }
        }
        Ok(out)
    }

    /// The value after `offset` (Prometheus's `offset_duration_expr`): a
    /// signed literal, `step()`, `range()`, `min_of/max_of(..)` or a
    /// parenthesised expression — never a bare binary expression.
    pub(super) fn offset_duration(&mut self) -> R<Duration> {
        let start = self.tok().start;
        let neg = match self.kind() {
            TokKind::Sub => {
                self.advance();
                Some(true)
            }
            TokKind::Add => {
                self.advance();
                Some(false)
            }
            _ => None,
        };
        let ok = match self.kind() {
            TokKind::Number | TokKind::Duration | TokKind::LParen => true,
            TokKind::Ident => ["step", "range", "min_of", "max_of"]
                .iter()
                .any(|w| self.is_word(w)),
            _ => false,
        };
        if !ok {
            return self.unexpected("offset", "number, duration, step(), or range()");
        }
        self.enter()?;
        let atom = self.dur_atom();
        self.leave();
        let mut d = atom?;
        if let Some(neg) = neg {
            d.pos.start = start as u32;
            if neg {
                d.e = negate(d.e);
            }
        }
        self.finish_duration(d)
    }

    fn finish_duration(&self, d: DurP) -> R<Duration> {
        fn literal(e: &DurationExpr) -> Option<Result<i64, ()>> {
            match e {
                DurationExpr::Number(s) => Some(if s.abs() > MAX_DURATION_SECS || s.is_nan() {
                    Err(())
                } else {
                    Ok((s * 1000.0).round() as i64)
                }),
                DurationExpr::Duration(ms) => Some(Ok(*ms)),
                DurationExpr::Paren(inner) => literal(inner),
                DurationExpr::Neg(inner) => literal(inner).map(|r| r.map(|v| -v)),
                _ => None,
            }
        }
        match literal(&d.e) {
            Some(Ok(ms)) => Ok(Duration::Literal(ms)),
            Some(Err(())) => err(d.pos, "duration out of range"),
            None => Ok(Duration::Expr(Box::new(d.e))),
        }
    }

    fn gate_duration(&self, pos: PosRange) -> R<()> {
        if !self.opts.duration_expressions {
            return err(pos, "experimental duration expression is not enabled");
        }
        Ok(())
    }

    fn peek_dur_op(&self) -> Option<DurationOp> {
        Some(match self.kind() {
            TokKind::Add => DurationOp::Add,
            TokKind::Sub => DurationOp::Sub,
            TokKind::Mul => DurationOp::Mul,
            TokKind::Div => DurationOp::Div,
            TokKind::Mod => DurationOp::Mod,
            TokKind::Pow => DurationOp::Pow,
            _ => return None,
        })
    }

    fn dur_expr(&mut self, min: u8) -> R<DurP> {
        self.enter()?;
        let r = self.dur_expr_inner(min);
        self.leave();
        r
    }

    fn dur_expr_inner(&mut self, min: u8) -> R<DurP> {
        let first = self.dur_unary_inner()?;
        if self.peek_dur_op().is_some() {
            self.dur_binary_loop(first, min)
        } else {
            Ok(first)
        }
    }

    #[inline(never)]
    fn dur_binary_loop(&mut self, first: DurP, min: u8) -> R<DurP> {
        let mut lhs = first;
        while let Some(op) = self.peek_dur_op() {
            let p = match op {
                DurationOp::Add | DurationOp::Sub => PREC_ADD,
                DurationOp::Mul | DurationOp::Div | DurationOp::Mod => PREC_MUL,
                DurationOp::Pow => PREC_POW,
            };
            if p < min {
                break;
            }
            let op_tok = self.advance();
            let next_min = if op == DurationOp::Pow { p } else { p + 1 };
            let rhs = self.dur_expr(next_min)?;
            let pos = PosRange {
                start: lhs.pos.start,
                end: rhs.pos.end,
            };
            self.gate_duration(pos)?;
            if matches!(op, DurationOp::Div | DurationOp::Mod)
                && matches!(rhs.e, DurationExpr::Number(v) if v == 0.0)
            {
                let what = if op == DurationOp::Div {
                    "division by zero"
                } else {
                    "modulo by zero"
                };
                return err(op_tok.pos(), what);
            }
            let height = self.check_height(lhs.height.max(rhs.height) + 1, pos)?;
            lhs = DurP {
                e: DurationExpr::Binary {
                    op,
                    lhs: Box::new(lhs.e),
                    rhs: Box::new(rhs.e),
                },
                pos,
                height,
            };
        }
        Ok(lhs)
    }

    fn dur_unary_inner(&mut self) -> R<DurP> {
        match self.kind() {
            TokKind::Sub => self.dur_unary_op(true),
            TokKind::Add => self.dur_unary_op(false),
            TokKind::LParen => self.dur_paren(),
            _ => self.dur_atom(),
        }
    }

    #[inline(never)]
    fn dur_paren(&mut self) -> R<DurP> {
        let open = self.advance().pos();
        let inner = self.dur_expr(0)?;
        self.finish_dur_paren(open, inner)
    }

    #[inline(never)]
    fn finish_dur_paren(&mut self, open: PosRange, inner: DurP) -> R<DurP> {
        let close = self.expect(TokKind::RParen, "duration expression", "\")\"")?;
        let pos = PosRange {
            start: open.start,
            end: close.end as u32,
        };
        self.gate_duration(pos)?;
        let height = self.check_height(inner.height + 1, pos)?;
        Ok(DurP {
            e: DurationExpr::Paren(Box::new(inner.e)),
            pos,
            height,
        })
    }

    #[inline(never)]
    fn dur_unary_op(&mut self, neg: bool) -> R<DurP> {
        let op = self.advance();
        let mut d = self.dur_expr(PREC_POW)?;
        d.pos.start = op.start as u32;
        if neg {
            d.e = negate(d.e);
        }
        Ok(d)
    }

    fn dur_atom(&mut self) -> R<DurP> {
        let t = self.tok().clone();
        match t.kind {
            TokKind::Number => {
                self.advance();
                let v = self.number_value(&t)?;
                Ok(DurP {
                    e: DurationExpr::Number(v),
                    pos: t.pos(),
                    height: 1,
                })
            }
            TokKind::Duration => {
                self.advance();
                let text = self.text(&t);
                let ms =
                    lexer::parse_duration_ms(text).map_err(|msg| Err0 { pos: t.pos(), msg })?;
                Ok(DurP {
                    e: DurationExpr::Duration(ms),
                    pos: t.pos(),
                    height: 1,
                })
            }
            TokKind::LParen => self.dur_paren(),
            TokKind::Ident if self.is_word("step") || self.is_word("range") => {
                let is_step = self.is_word("step");
                self.advance();
                self.expect(TokKind::LParen, "duration expression", "\"(\"")?;
                let close = self.expect(TokKind::RParen, "duration expression", "\")\"")?;
                let pos = PosRange::new(t.start, close.end);
                self.gate_duration(pos)?;
                Ok(DurP {
                    e: if is_step {
                        DurationExpr::Step
                    } else {
                        DurationExpr::Range
                    },
                    pos,
                    height: 1,
                })
            }
            TokKind::Ident if self.is_word("min_of") || self.is_word("max_of") => {
                let is_min = self.is_word("min_of");
                self.advance();
                self.expect(TokKind::LParen, "duration expression", "\"(\"")?;
                let a = self.dur_expr(0)?;
                self.expect(TokKind::Comma, "duration expression", "\",\"")?;
                let b = self.dur_expr(0)?;
                let close = self.expect(TokKind::RParen, "duration expression", "\")\"")?;
                let pos = PosRange::new(t.start, close.end);
                self.gate_duration(pos)?;
                let height = self.check_height(a.height.max(b.height) + 1, pos)?;
                let (a, b) = (Box::new(a.e), Box::new(b.e));
                Ok(DurP {
                    e: if is_min {
                        DurationExpr::MinOf(a, b)
                    } else {
                        DurationExpr::MaxOf(a, b)
                    },
                    pos,
                    height,
                })
            }
            _ => self.unexpected(
                "duration expression",
                "number, duration, step(), or range()",
            ),
        }
    }
}

fn negate(e: DurationExpr) -> DurationExpr {
    match e {
        DurationExpr::Number(v) => DurationExpr::Number(-v),
        DurationExpr::Duration(ms) => DurationExpr::Duration(-ms),
        e => DurationExpr::Neg(Box::new(e)),
    }
}
