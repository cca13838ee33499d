//! PromQL parser: text → [`ast::Expr`] with byte positions on every node, and
//! back to canonical text.
//!
//! - [`parse`] (stable PromQL) and [`parse_with`] (experimental parts behind
//!   [`ParseOptions`]; `ParseOptions::all()` is what the conformance corpus
//!   needs). Type checks happen while parsing, with Prometheus's messages.
//! - [`ParseError`]: `Display` is Prometheus's `line:col: parse error: …`.
//! - [`parse_metric_selector`] / [`parse_duration`]: for the HTTP API's
//!   `match[]` and duration parameters.
//! - `Display for Expr` ([`printer`]): Prometheus's `String()` form;
//!   [`printer::pretty`]: its `Prettify` form (`/api/v1/format_query`).
//! - [`functions`]: the function table (signatures, experimental flags).
//!
//! Invariant: a parsed tree is no taller than `ParseOptions::max_depth`, so
//! recursive passes over it (evaluation, printing, drop) have bounded depth.

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
