//! PromQL parser: text → [`ast::Expr`] with byte positions on every node, and
//! back to canonical text ([`printer`], via `Display for Expr`).
//!
//! Entry points: [`parse`] (stable PromQL) and [`parse_with`] (experimental
//! parts behind [`ParseOptions`]). Errors are [`ParseError`]s whose `Display`
//! is Prometheus's `line:col: parse error: …`.

pub mod ast;
pub mod functions;
mod lexer;
#[allow(clippy::module_inception)]
mod parser;
pub mod printer;

pub use parser::{parse, parse_with, ParseError, ParseOptions};

#[cfg(test)]
mod tests;
