//! Runner for Prometheus's PromQL script tests (the `.test` corpus in
//! `shared/conformance/promql`; its README is the specification).
//!
//! Owns: the script parser ([`script`]), histogram literals ([`histogram`]),
//! loading script data into storage ([`load`]), result comparison
//! ([`compare`]), and running scripts against the engine ([`run`]). It is a
//! library module so the server's rule-test command and other tests can
//! reuse it: [`run_script`] takes a script's text and returns a
//! [`FileReport`] with one [`CaseResult`] per `eval`.

pub mod compare;
pub mod histogram;
pub mod load;
pub mod run;
pub mod script;

pub use histogram::{CounterResetHint, TestHistogram};
pub use load::{LoadError, TestStorage};
pub use run::{conformance_engine, run_script, CaseClass, CaseResult, FileReport};
pub use script::{
    parse_script, Command, EvalCommand, LoadCommand, Script, ScriptError, SeriesValue,
};
