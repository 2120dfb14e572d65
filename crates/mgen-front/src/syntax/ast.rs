//! The abstract syntax tree of `.mgen` (and of the declarations and graph of
//! a `.mir`).
//!
//! The grammar is deliberately generic — items hold statements, statements
//! are `key = value;`, `key { ... }`, `keep metric OP bound;` or (in `.mir`
//! graphs) `%N = ...;` definitions — and the checker in [`crate::spec`] gives
//! them meaning. Invariant: every node carries the byte range it was parsed
//! from, in the file it came from.

use serde::Serialize;

/// A byte range in one source file.
pub type Span = std::ops::Range<usize>;

/// A whole file.
#[derive(Debug, Clone, Serialize)]
pub struct File {
    pub items: Vec<Item>,
}

/// Top-level declaration kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    Hardware,
    Model,
    Task,
    Workload,
    Graph,
}

impl ItemKind {
    pub fn keyword(self) -> &'static str {
        match self {
            ItemKind::Hardware => "hardware",
            ItemKind::Model => "model",
            ItemKind::Task => "task",
            ItemKind::Workload => "workload",
            ItemKind::Graph => "graph",
        }
    }
}

/// `hardware isaac { ... }` and its kin.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub kind: ItemKind,
    pub name: Ident,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// A name with its span.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A comparison in a `keep` budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CmpOp {
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<=")]
    Le,
}

/// A statement inside an item or a nested block.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "stmt", rename_all = "lowercase")]
pub enum Stmt {
    /// `key = value;`
    Attr {
        key: Ident,
        value: Value,
        span: Span,
    },
    /// `key { ... }`
    Block {
        key: Ident,
        body: Vec<Stmt>,
        span: Span,
    },
    /// `keep metric >= bound;`
    Keep {
        metric: Ident,
        op: CmpOp,
        bound: Value,
        span: Span,
    },
    /// `.mir` only: `%N = op(...) : [shape] { meta };` or `$N = param(...);`
    Def {
        target: Value,
        value: Value,
        ty: Option<Value>,
        meta: Vec<Arg>,
        span: Span,
    },
    /// A statement the parser skipped after a syntax error.
    Error { span: Span },
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Attr { span, .. }
            | Stmt::Block { span, .. }
            | Stmt::Keep { span, .. }
            | Stmt::Def { span, .. }
            | Stmt::Error { span } => span.clone(),
        }
    }
}

/// A value with its span.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Value {
    #[serde(flatten)]
    pub kind: ValueKind,
    pub span: Span,
}

/// Every form a value takes.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "form", rename_all = "lowercase")]
pub enum ValueKind {
    /// `12`, `0.02`, `-3`, `1e-12`
    Number { text: String, value: f64 },
    /// `1.67 pJ`, `64 KiB`
    Quantity {
        number: f64,
        text: String,
        unit: Ident,
    },
    /// `99%`
    Percent { number: f64, text: String },
    /// `128 x 128` (the separator is kept so the checker can insist on `x`)
    Dims { rows: f64, sep: Ident, cols: f64 },
    /// `"path"` (unescaped)
    Str { text: String },
    /// `bert_base`, `true`, `cls`
    Name { name: String },
    /// `[a, b, c]`
    List { items: Vec<Value> },
    /// `synthetic(seed = 7)`, `classify(2, pool = mean)`
    Call { func: Ident, args: Vec<Arg> },
    /// `reference - 1%`
    Relative { base: Ident, delta: Box<Value> },
    /// `%12`
    NodeRef { index: u64 },
    /// `$3`
    ParamRef { index: u64 },
}

/// A call argument, positional or named.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Value,
    pub span: Span,
}

impl Value {
    /// A short description of the value's form, for "expected ... found ..."
    /// messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            ValueKind::Number { .. } => "a number",
            ValueKind::Quantity { .. } => "a quantity with a unit",
            ValueKind::Percent { .. } => "a percentage",
            ValueKind::Dims { .. } => "dimensions",
            ValueKind::Str { .. } => "a string",
            ValueKind::Name { .. } => "a name",
            ValueKind::List { .. } => "a list",
            ValueKind::Call { .. } => "a call",
            ValueKind::Relative { .. } => "a relative bound",
            ValueKind::NodeRef { .. } => "a node reference",
            ValueKind::ParamRef { .. } => "a parameter reference",
        }
    }
}

/// Unescapes the body of a string literal (`\"`, `\\`, `\n`, `\t`); other
/// escapes keep the escaped character.
pub fn unescape(quoted: &str) -> String {
    let body = &quoted[1..quoted.len() - 1];
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Quotes a string so that [`unescape`] gives it back.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Value {
    /// The value written back as source text.
    pub fn to_source(&self) -> String {
        match &self.kind {
            ValueKind::Number { text, .. } => text.clone(),
            ValueKind::Quantity { text, unit, .. } => format!("{text} {}", unit.name),
            ValueKind::Percent { text, .. } => format!("{text}%"),
            ValueKind::Dims { rows, sep, cols } => format!("{rows} {} {cols}", sep.name),
            ValueKind::Str { text } => quote(text),
            ValueKind::Name { name } => name.clone(),
            ValueKind::List { items } => {
                let v: Vec<String> = items.iter().map(Value::to_source).collect();
                format!("[{}]", v.join(", "))
            }
            ValueKind::Call { func, args } => {
                let v: Vec<String> = args
                    .iter()
                    .map(|a| match &a.name {
                        Some(n) => format!("{} = {}", n.name, a.value.to_source()),
                        None => a.value.to_source(),
                    })
                    .collect();
                format!("{}({})", func.name, v.join(", "))
            }
            ValueKind::Relative { base, delta } => format!("{} - {}", base.name, delta.to_source()),
            ValueKind::NodeRef { index } => format!("%{index}"),
            ValueKind::ParamRef { index } => format!("${index}"),
        }
    }
}

/// The AST as an indented outline with `line:col` of every item and
/// statement (`mgen compile --emit ast`). `line_col` maps a byte offset.
pub fn outline(file: &File, line_col: &dyn Fn(usize) -> (usize, usize)) -> String {
    fn stmts(out: &mut String, body: &[Stmt], depth: usize, lc: &dyn Fn(usize) -> (usize, usize)) {
        let pad = "  ".repeat(depth);
        for s in body {
            let (l, c) = lc(s.span().start);
            match s {
                Stmt::Attr { key, value, .. } => out.push_str(&format!(
                    "{pad}attr {} = {}  @{l}:{c}\n",
                    key.name,
                    value.to_source()
                )),
                Stmt::Block { key, body, .. } => {
                    out.push_str(&format!("{pad}block {}  @{l}:{c}\n", key.name));
                    stmts(out, body, depth + 1, lc);
                }
                Stmt::Keep {
                    metric, op, bound, ..
                } => {
                    let op = match op {
                        CmpOp::Ge => ">=",
                        CmpOp::Le => "<=",
                    };
                    out.push_str(&format!(
                        "{pad}keep {} {op} {}  @{l}:{c}\n",
                        metric.name,
                        bound.to_source()
                    ))
                }
                Stmt::Def {
                    target, value, ty, ..
                } => {
                    let ty = ty
                        .as_ref()
                        .map(|t| format!(" : {}", t.to_source()))
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "{pad}def {} = {}{ty}  @{l}:{c}\n",
                        target.to_source(),
                        value.to_source()
                    ))
                }
                Stmt::Error { .. } => out.push_str(&format!("{pad}<error>  @{l}:{c}\n")),
            }
        }
    }
    let mut out = String::new();
    for item in &file.items {
        let (l, c) = line_col(item.span.start);
        out.push_str(&format!(
            "{} {}  @{l}:{c}\n",
            item.kind.keyword(),
            item.name.name
        ));
        stmts(&mut out, &item.body, 1, line_col);
    }
    out
}
