//! PromQL parser: text → [`ast::Expr`] with byte positions on every node, and
//! back to canonical text ([`printer`], via `Display for Expr`).
//!
//! Entry points: [`parse`] (stable PromQL) and [`parse_with`] (experimental
//! parts behind [`ParseOptions`]). Errors are [`ParseError`]s whose `Display`
//! is Prometheus's `line:col: parse error: …`.

pub mod ast;
mod durations;
pub mod functions;
mod lexer;
#[allow(clippy::module_inception)]
mod parser;
pub mod printer;

pub use parser::{parse, parse_metric_selector, parse_with, ParseError, ParseOptions};

/// Parses a Prometheus duration (`1h30m`, `500ms`, `2w`; units in order
/// y w d h m s ms, each at most once) into milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    lexer::parse_duration_ms(s)
}

#[cfg(test)]
mod tests;
