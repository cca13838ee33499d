//! PromQL parser: text → [`ast::Expr`] with byte positions on every node.

pub mod ast;
