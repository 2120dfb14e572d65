//! Semantic checks: AST → [`Spec`].
//!
//! Every problem becomes a located diagnostic; checking goes on after an
//! error so that one run reports as many as it can. Sizes are checked here,
//! before any later stage allocates (see [`super::limits`]).

use super::*;
use crate::diag::{Code, Diagnostic, Diags, FileId};
use crate::hw::energy::{self, Kind};
use crate::hw::{Hardware, Signs};
use crate::syntax::ast::{self, Arg, CmpOp, Ident, ItemKind, Stmt, Value, ValueKind};

/// Checks a parsed file. With `mir`, the file must hold exactly one `graph`
/// item, which is returned (unchecked) for the textual-IR reader.
pub fn check<'a>(
    file: &'a ast::File,
    id: FileId,
    root: &str,
    mir: bool,
) -> Result<(Spec, Option<&'a ast::Item>), Diags> {
    let mut cx = Cx {
        file: id,
        diags: Diags::default(),
        locs: BTreeMap::new(),
    };
    // One namespace for every declaration.
    let mut seen: BTreeMap<&str, &ast::Item> = BTreeMap::new();
    for item in file.items.iter().filter(|i| i.kind != ItemKind::Graph) {
        if let Some(prev) = seen.get(item.name.name.as_str()) {
            cx.err(
                Diagnostic::error(
                    Code::E010,
                    format!("`{}` is declared twice", item.name.name),
                )
                .at(id, item.name.span.clone(), "declared again here")
                .also(id, prev.name.span.clone(), "first declared here"),
            );
        } else {
            seen.insert(&item.name.name, item);
        }
    }
    let of = |k: ItemKind| file.items.iter().filter(move |i| i.kind == k);

    let mut hardware = Hardware::default();
    let mut hw_items = of(ItemKind::Hardware);
    if let Some(h) = hw_items.next() {
        hardware = cx.hardware(h);
    }
    for extra in hw_items {
        cx.err(
            Diagnostic::error(Code::E020, "more than one hardware block")
                .at(id, extra.name.span.clone(), "a second hardware block")
                .help("a file describes one chip; put other chips in other files"),
        );
    }

    let mut models = Vec::new();
    let mut model_index = BTreeMap::new();
    for m in of(ItemKind::Model) {
        if let Some(model) = cx.model(m) {
            model_index.insert(m.name.name.clone(), models.len());
            models.push(model);
        }
    }

    let mut tasks = Vec::new();
    let mut task_index = BTreeMap::new();
    for t in of(ItemKind::Task) {
        if let Some(task) = cx.task(t, &model_index, &models, &seen) {
            task_index.insert(t.name.name.clone(), tasks.len());
            tasks.push(task);
        }
    }

    let workloads: Vec<_> = of(ItemKind::Workload).collect();
    let mut workload = None;
    match workloads.as_slice() {
        [] => {
            let end = file.items.last().map(|i| i.span.end).unwrap_or(0);
            cx.err(
                Diagnostic::error(Code::E020, "no workload is declared")
                    .at(id, end..end, "expected a `workload` block in this file")
                    .help("add e.g. `workload w { requests = 8; seq = 32; inputs = synthetic(seed = 1); tasks = [t]; }`"),
            );
        }
        [w, rest @ ..] => {
            for extra in rest {
                cx.err(
                    Diagnostic::error(Code::E020, "more than one workload")
                        .at(id, extra.name.span.clone(), "a second workload")
                        .also(id, w.name.span.clone(), "the first one"),
                );
            }
            workload = cx.workload(w, &task_index, &tasks, &models, &seen, hardware.weight_bits);
        }
    }

    let mut graph = None;
    for g in of(ItemKind::Graph) {
        if !mir {
            cx.err(
                Diagnostic::error(Code::E021, "`graph` blocks belong in textual-IR files")
                    .at(id, g.name.span.clone(), "not allowed in a .mgen file")
                    .help("write the graph to a `.mir` file, or let mgen lower the declarations"),
            );
        } else if graph.is_some() {
            cx.err(Diagnostic::error(Code::E020, "more than one graph").at(
                id,
                g.name.span.clone(),
                "a second graph",
            ));
        } else {
            graph = Some(g);
        }
    }
    if mir && graph.is_none() && cx.diags.is_empty() {
        cx.err(
            Diagnostic::error(Code::E020, "a .mir file needs a `graph` block").at(
                id,
                0..0,
                "no graph in this file",
            ),
        );
    }

    if !cx.diags.is_empty() {
        return Err(cx.diags);
    }
    let Some(workload) = workload else {
        return Err(cx.diags);
    };
    if let Some(d) = too_large(&hardware, &models, &tasks, &workload, &cx.locs) {
        cx.err(d);
        return Err(cx.diags);
    }
    Ok((
        Spec {
            hardware,
            models,
            tasks,
            workload,
            root: root.to_string(),
            locs: cx.locs,
        },
        graph,
    ))
}

struct Cx {
    file: FileId,
    diags: Diags,
    locs: BTreeMap<String, Loc>,
}

/// The statements of an item, sorted by form; duplicates and unknown keys
/// have been reported.
struct Body<'a> {
    attrs: BTreeMap<&'a str, &'a Value>,
    blocks: BTreeMap<&'a str, &'a [Stmt]>,
    keeps: Vec<(&'a Ident, CmpOp, &'a Value, Span)>,
    end: Span,
    owner: String,
}

type Span = std::ops::Range<usize>;

/// The closest candidate within edit distance 2 (case-insensitive first).
pub fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    if let Some(c) = candidates.iter().find(|c| c.eq_ignore_ascii_case(word)) {
        return Some(c);
    }
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

const ENERGY_UNITS: &[(&str, f64)] = &[
    ("fJ", 1e-3),
    ("pJ", 1.0),
    ("nJ", 1e3),
    ("uJ", 1e6),
    ("mJ", 1e9),
];
const TIME_UNITS: &[(&str, f64)] = &[
    ("ps", 1e-3),
    ("ns", 1.0),
    ("us", 1e3),
    ("ms", 1e6),
    ("s", 1e9),
];
const SIZE_UNITS: &[(&str, f64)] = &[
    ("B", 1.0),
    ("KB", 1e3),
    ("KiB", 1024.0),
    ("MB", 1e6),
    ("MiB", 1048576.0),
    ("GB", 1e9),
    ("GiB", 1073741824.0),
];

#[derive(Clone, Copy)]
enum UnitKind {
    Energy,
    Time,
    Size,
}

impl UnitKind {
    fn units(self) -> &'static [(&'static str, f64)] {
        match self {
            UnitKind::Energy => ENERGY_UNITS,
            UnitKind::Time => TIME_UNITS,
            UnitKind::Size => SIZE_UNITS,
        }
    }
    fn name(self) -> &'static str {
        match self {
            UnitKind::Energy => "an energy",
            UnitKind::Time => "a time",
            UnitKind::Size => "a size",
        }
    }
    /// The largest value accepted, in the base unit (pJ, ns, bytes): far
    /// beyond any device, small enough that totals over a run stay finite.
    fn max(self) -> (f64, &'static str) {
        match self {
            UnitKind::Energy => (energy::MAX_FIGURE, "1 mJ"),
            UnitKind::Time => (energy::MAX_FIGURE, "1 s"),
            UnitKind::Size => (f64::MAX, ""),
        }
    }
    fn example(self) -> &'static str {
        match self {
            UnitKind::Energy => "1.67 pJ",
            UnitKind::Time => "100 ns",
            UnitKind::Size => "64 KiB",
        }
    }
}

fn unit_kind_of(unit: &str) -> Option<UnitKind> {
    [UnitKind::Energy, UnitKind::Time, UnitKind::Size]
        .into_iter()
        .find(|k| k.units().iter().any(|(u, _)| *u == unit))
}

impl Cx {
    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn body<'a>(
        &mut self,
        owner: String,
        stmts: &'a [Stmt],
        attrs: &[&str],
        blocks: &[&str],
        keeps: bool,
        end: Span,
    ) -> Body<'a> {
        let mut b = Body {
            attrs: BTreeMap::new(),
            blocks: BTreeMap::new(),
            keeps: Vec::new(),
            end,
            owner,
        };
        let mut spans: BTreeMap<&str, Span> = BTreeMap::new();
        let mut all: Vec<&str> = attrs.to_vec();
        all.extend_from_slice(blocks);
        for s in stmts {
            match s {
                Stmt::Attr { key, .. } | Stmt::Block { key, .. }
                    if !(if matches!(s, Stmt::Attr { .. }) {
                        attrs
                    } else {
                        blocks
                    })
                    .contains(&key.name.as_str()) =>
                {
                    let is_block = matches!(s, Stmt::Block { .. });
                    let mut d = Diagnostic::error(
                        Code::E014,
                        format!(
                            "unknown {} `{}` in {}",
                            if is_block { "block" } else { "attribute" },
                            key.name,
                            b.owner
                        ),
                    )
                    .at(self.file, key.span.clone(), "not known here");
                    if let Some(sug) = suggest(&key.name, &all) {
                        d = d.help(format!("did you mean `{sug}`?"));
                    } else if all.is_empty() {
                        d = d.note("nothing is known here");
                    } else {
                        d = d.note(format!("known here: {}", all.join(", ")));
                    }
                    self.err(d);
                }
                Stmt::Attr { key, value, .. } => {
                    if let Some(prev) = spans.get(key.name.as_str()) {
                        self.err(
                            Diagnostic::error(Code::E013, format!("`{}` is given twice", key.name))
                                .at(self.file, key.span.clone(), "given again here")
                                .also(self.file, prev.clone(), "first given here"),
                        );
                        continue;
                    }
                    spans.insert(&key.name, key.span.clone());
                    b.attrs.insert(&key.name, value);
                    self.locs.insert(
                        format!("{}.{}", b.owner, key.name),
                        Loc {
                            file: self.file,
                            span: value.span.clone(),
                        },
                    );
                }
                Stmt::Block { key, body, .. } => {
                    if let Some(prev) = spans.get(key.name.as_str()) {
                        self.err(
                            Diagnostic::error(
                                Code::E013,
                                format!("block `{}` is given twice", key.name),
                            )
                            .at(self.file, key.span.clone(), "given again here")
                            .also(
                                self.file,
                                prev.clone(),
                                "first given here",
                            ),
                        );
                        continue;
                    }
                    spans.insert(&key.name, key.span.clone());
                    b.blocks.insert(&key.name, body);
                }
                Stmt::Keep {
                    metric,
                    op,
                    bound,
                    span,
                } => {
                    if keeps {
                        b.keeps.push((metric, *op, bound, span.clone()));
                    } else {
                        self.err(
                            Diagnostic::error(
                                Code::E014,
                                format!("`keep` budgets belong in tasks, not in {}", b.owner),
                            )
                            .at(
                                self.file,
                                span.clone(),
                                "not allowed here",
                            ),
                        );
                    }
                }
                Stmt::Def { span, .. } => self.err(
                    Diagnostic::error(
                        Code::E021,
                        "node and parameter definitions belong in `graph` blocks",
                    )
                    .at(self.file, span.clone(), "not allowed here"),
                ),
                Stmt::Error { .. } => {}
            }
        }
        b
    }

    fn missing(&mut self, b: &Body, attr: &str, example: &str) {
        self.err(
            Diagnostic::error(Code::E015, format!("{} has no `{attr}`", b.owner))
                .at(self.file, b.end.clone(), format!("`{attr}` is required"))
                .help(format!("add `{attr} = {example};`")),
        );
    }

    /// `synthetic(seed = S)` (weights, workload inputs, training inputs):
    /// the seed, or a diagnostic (E015 without a seed).
    fn synthetic_seed(&mut self, v: &Value, func: &Ident, args: &[Arg]) -> Option<u64> {
        let a = self.args(func, args, &["seed"])?;
        match a.get("seed").copied() {
            Some(s) => self.int(s, "seed", 0, u64::MAX >> 11),
            None => {
                self.err(
                    Diagnostic::error(Code::E015, "`synthetic` needs a `seed`").at(
                        self.file,
                        v.span.clone(),
                        "add `seed = N`",
                    ),
                );
                None
            }
        }
    }

    /// `branch(epochs = E, lr = X, batch = B, labels = A, temperature = T,
    /// trials = N)`: every argument optional, defaults from
    /// [`crate::spec::BranchOpts::default`].
    fn branch_opts(&mut self, func: &Ident, args: &[Arg]) -> Option<crate::spec::BranchOpts> {
        let a = self.args(
            func,
            args,
            &["epochs", "lr", "batch", "labels", "temperature", "trials"],
        )?;
        let mut o = crate::spec::BranchOpts::default();
        let mut ok = true;
        if let Some(v) = a.get("epochs") {
            ok &= self
                .int(v, "epochs", 1, 1000)
                .map(|x| o.epochs = x as u32)
                .is_some();
        }
        if let Some(v) = a.get("lr") {
            ok &= self.real(v, "lr", 1e-9, 1.0).map(|x| o.lr = x).is_some();
        }
        if let Some(v) = a.get("batch") {
            ok &= self
                .int(v, "batch", 1, 4096)
                .map(|x| o.batch = x as u32)
                .is_some();
        }
        if let Some(v) = a.get("labels") {
            ok &= self
                .real(v, "labels", 0.0, 1.0)
                .map(|x| o.labels = x)
                .is_some();
        }
        if let Some(v) = a.get("temperature") {
            ok &= self
                .real(v, "temperature", 0.05, 100.0)
                .map(|x| o.temperature = x)
                .is_some();
        }
        if let Some(v) = a.get("trials") {
            ok &= self
                .int(v, "trials", 0, 64)
                .map(|x| o.trials = x as u32)
                .is_some();
        }
        ok.then_some(o)
    }

    fn int(&mut self, v: &Value, what: &str, min: u64, max: u64) -> Option<u64> {
        match &v.kind {
            ValueKind::Number { value, text } => {
                if !value.is_finite() || value.fract() != 0.0 {
                    let msg = if value.is_finite() {
                        format!("`{what}` must be a whole number, not `{text}`")
                    } else {
                        format!("`{what}` = `{text}` is too large")
                    };
                    let code = if value.is_finite() {
                        Code::E016
                    } else {
                        Code::E017
                    };
                    self.err(Diagnostic::error(code, msg).at(self.file, v.span.clone(), "here"));
                    return None;
                }
                if *value < min as f64 || *value > max as f64 {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!("`{what}` must be between {min} and {max}, not {text}"),
                        )
                        .at(self.file, v.span.clone(), "out of range"),
                    );
                    return None;
                }
                Some(*value as u64)
            }
            ValueKind::Quantity { unit, .. } => {
                self.err(
                    Diagnostic::error(
                        Code::E018,
                        format!("`{what}` is a plain count and takes no unit"),
                    )
                    .at(self.file, unit.span.clone(), "remove this unit"),
                );
                None
            }
            ValueKind::Percent { .. } => {
                self.err(
                    Diagnostic::error(
                        Code::E018,
                        format!("`{what}` is a plain count, not a percentage"),
                    )
                    .at(self.file, v.span.clone(), "remove the `%`"),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be a whole number, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), "expected a number"),
                );
                None
            }
        }
    }

    fn real(&mut self, v: &Value, what: &str, min: f64, max: f64) -> Option<f64> {
        match &v.kind {
            ValueKind::Number { value, text } => {
                if !value.is_finite() || *value < min || *value > max {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!("`{what}` must be between {min} and {max}, not {text}"),
                        )
                        .at(self.file, v.span.clone(), "out of range"),
                    );
                    return None;
                }
                Some(*value)
            }
            ValueKind::Quantity { unit, .. } | ValueKind::Dims { sep: unit, .. }
                if matches!(v.kind, ValueKind::Quantity { .. }) =>
            {
                self.err(
                    Diagnostic::error(
                        Code::E018,
                        format!("`{what}` is a plain number and takes no unit"),
                    )
                    .at(self.file, unit.span.clone(), "remove this unit"),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be a number, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), "expected a number"),
                );
                None
            }
        }
    }

    fn quantity(&mut self, v: &Value, what: &str, kind: UnitKind) -> Option<f64> {
        match &v.kind {
            ValueKind::Quantity { number, unit, text } => {
                if let Some((_, f)) = kind.units().iter().find(|(u, _)| *u == unit.name) {
                    let x = number * f;
                    let (max, max_text) = kind.max();
                    if !x.is_finite() || x < 0.0 || x > max {
                        let noun = kind.name().split_once(' ').map_or("", |(_, n)| n);
                        let limit = if max_text.is_empty() {
                            String::new()
                        } else {
                            format!(" of at most {max_text}")
                        };
                        self.err(
                            Diagnostic::error(
                                Code::E017,
                                format!("`{what}` must be a non-negative finite {noun}{limit}, not {text}"),
                            )
                            .at(
                                self.file,
                                v.span.clone(),
                                "out of range",
                            ),
                        );
                        return None;
                    }
                    return Some(x);
                }
                let units: Vec<&str> = kind.units().iter().map(|(u, _)| *u).collect();
                let mut d = if let Some(other) = unit_kind_of(&unit.name) {
                    Diagnostic::error(
                        Code::E018,
                        format!(
                            "`{what}` is {} but `{}` measures {}",
                            kind.name(),
                            unit.name,
                            other.name()
                        ),
                    )
                    .at(self.file, unit.span.clone(), "wrong kind of unit")
                } else {
                    Diagnostic::error(Code::E018, format!("unknown unit `{}`", unit.name)).at(
                        self.file,
                        unit.span.clone(),
                        "not a unit mgen knows",
                    )
                };
                match suggest(&unit.name, &units) {
                    Some(s) if unit_kind_of(&unit.name).is_none() => {
                        d = d.help(format!("did you mean `{s}`?"))
                    }
                    _ => d = d.help(format!("`{what}` takes one of: {}", units.join(", "))),
                }
                self.err(d);
                None
            }
            ValueKind::Number { text, .. } => {
                self.err(
                    Diagnostic::error(
                        Code::E018,
                        format!("`{what}` is {} and needs a unit", kind.name()),
                    )
                    .at(self.file, v.span.clone(), "no unit")
                    .help(format!(
                        "write e.g. `{what} = {text} {}`",
                        kind.example().split(' ').nth(1).unwrap_or("")
                    )),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be {}, found {}", kind.name(), v.describe()),
                    )
                    .at(
                        self.file,
                        v.span.clone(),
                        format!("expected e.g. `{}`", kind.example()),
                    ),
                );
                None
            }
        }
    }

    fn name<'v>(&mut self, v: &'v Value, what: &str, choices: &[&str]) -> Option<&'v str> {
        match &v.kind {
            ValueKind::Name { name } if choices.is_empty() || choices.contains(&name.as_str()) => {
                Some(name)
            }
            ValueKind::Name { name } => {
                let mut d =
                    Diagnostic::error(Code::E017, format!("`{name}` is not a valid `{what}`")).at(
                        self.file,
                        v.span.clone(),
                        format!("expected one of {}", choices.join(", ")),
                    );
                if let Some(s) = suggest(name, choices) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                self.err(d);
                None
            }
            _ => {
                let exp = if choices.is_empty() {
                    "a name".to_string()
                } else {
                    format!("one of {}", choices.join(", "))
                };
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be a name, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), format!("expected {exp}")),
                );
                None
            }
        }
    }

    fn string(&mut self, v: &Value, what: &str) -> Option<String> {
        match &v.kind {
            ValueKind::Str { text } if !text.is_empty() => Some(text.clone()),
            ValueKind::Str { .. } => {
                self.err(
                    Diagnostic::error(Code::E017, format!("`{what}` is an empty path")).at(
                        self.file,
                        v.span.clone(),
                        "empty",
                    ),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be a path in quotes, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), "expected a string"),
                );
                None
            }
        }
    }

    fn args<'v>(
        &mut self,
        func: &Ident,
        args: &'v [Arg],
        params: &[&'static str],
    ) -> Option<BTreeMap<&'static str, &'v Value>> {
        let mut out: BTreeMap<&'static str, &'v Value> = BTreeMap::new();
        let mut ok = true;
        let mut positional = 0;
        for a in args {
            let key = match &a.name {
                Some(n) => match params.iter().find(|p| **p == n.name) {
                    Some(p) => *p,
                    None => {
                        let mut d = Diagnostic::error(
                            Code::E014,
                            format!("`{}` has no argument `{}`", func.name, n.name),
                        )
                        .at(self.file, n.span.clone(), "unknown argument");
                        d = match suggest(&n.name, params) {
                            Some(s) => d.help(format!("did you mean `{s}`?")),
                            None => d.note(format!("`{}` takes: {}", func.name, params.join(", "))),
                        };
                        self.err(d);
                        ok = false;
                        continue;
                    }
                },
                None => match params.get(positional) {
                    Some(p) => {
                        positional += 1;
                        *p
                    }
                    None => {
                        self.err(
                            Diagnostic::error(
                                Code::E016,
                                format!("too many arguments to `{}`", func.name),
                            )
                            .at(self.file, a.span.clone(), "extra argument")
                            .note(format!(
                                "`{}` takes: {}",
                                func.name,
                                params.join(", ")
                            )),
                        );
                        ok = false;
                        continue;
                    }
                },
            };
            if out.insert(key, &a.value).is_some() {
                self.err(
                    Diagnostic::error(
                        Code::E013,
                        format!("argument `{key}` of `{}` is given twice", func.name),
                    )
                    .at(self.file, a.span.clone(), "given again"),
                );
                ok = false;
            }
        }
        ok.then_some(out)
    }

    fn hardware(&mut self, item: &ast::Item) -> Hardware {
        let owner = format!("hardware {}", item.name.name);
        self.locs.insert(
            owner.clone(),
            Loc {
                file: self.file,
                span: item.name.span.clone(),
            },
        );
        let b = self.body(
            owner,
            &item.body,
            &[
                "crossbar",
                "cell_bits",
                "weight_bits",
                "input_bits",
                "dac_bits",
                "adc_bits",
                "signs",
                "chips",
                "tiles",
                "cores_per_tile",
                "crossbars_per_core",
                "tile_buffer",
                "core_buffer",
                "endurance",
            ],
            &["energy", "timing"],
            false,
            item.span.end.saturating_sub(1)..item.span.end,
        );
        let mut h = Hardware {
            name: item.name.name.clone(),
            ..Hardware::default()
        };
        if let Some(v) = b.attrs.get("crossbar") {
            match &v.kind {
                ValueKind::Dims { rows, sep, cols } => {
                    if sep.name != "x" {
                        self.err(
                            Diagnostic::error(
                                Code::E016,
                                format!(
                                    "dimensions are written `ROWS x COLS`, not with `{}`",
                                    sep.name
                                ),
                            )
                            .at(
                                self.file,
                                sep.span.clone(),
                                "expected `x`",
                            ),
                        );
                    } else {
                        let mut dim = |x: f64, what: &str| -> Option<u64> {
                            let ok = x.fract() == 0.0
                                && (2.0..=4096.0).contains(&x)
                                && (x as u64).is_power_of_two();
                            if ok {
                                Some(x as u64)
                            } else {
                                self.err(
                                    Diagnostic::error(Code::E017, format!("crossbar {what} must be a power of two from 2 to 4096, not {x}"))
                                        .at(self.file, v.span.clone(), "here")
                                        .help("e.g. `crossbar = 128 x 128;`"),
                                );
                                None
                            }
                        };
                        if let Some(r) = dim(*rows, "rows") {
                            h.rows = r;
                        }
                        if let Some(c) = dim(*cols, "columns") {
                            h.cols = c;
                        }
                    }
                }
                _ => self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`crossbar` must be dimensions, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), "expected e.g. `128 x 128`"),
                ),
            }
        }
        let bits = |cx: &mut Cx, k: &str, dst: &mut u32| {
            if let Some(v) = b.attrs.get(k)
                && let Some(x) = cx.int(v, k, 1, 16)
            {
                *dst = x as u32;
            }
        };
        bits(self, "cell_bits", &mut h.cell_bits);
        bits(self, "weight_bits", &mut h.weight_bits);
        bits(self, "input_bits", &mut h.input_bits);
        bits(self, "dac_bits", &mut h.dac_bits);
        bits(self, "adc_bits", &mut h.adc_bits);
        if h.cell_bits > h.weight_bits {
            let span = b
                .attrs
                .get("cell_bits")
                .map(|v| v.span.clone())
                .unwrap_or(b.end.clone());
            self.err(
                Diagnostic::error(
                    Code::E017,
                    format!(
                        "`cell_bits` ({}) exceeds `weight_bits` ({})",
                        h.cell_bits, h.weight_bits
                    ),
                )
                .at(
                    self.file,
                    span,
                    "a cell cannot hold more bits than a weight has",
                ),
            );
        }
        if h.dac_bits > h.input_bits {
            let span = b
                .attrs
                .get("dac_bits")
                .map(|v| v.span.clone())
                .unwrap_or(b.end.clone());
            self.err(
                Diagnostic::error(
                    Code::E017,
                    format!(
                        "`dac_bits` ({}) exceeds `input_bits` ({})",
                        h.dac_bits, h.input_bits
                    ),
                )
                .at(
                    self.file,
                    span,
                    "a DAC cannot drive more bits than an input has",
                ),
            );
        }
        if let Some(v) = b.attrs.get("signs") {
            match self.name(v, "signs", &["offset", "differential"]) {
                Some("differential") => h.signs = Signs::Differential,
                Some(_) => h.signs = Signs::Offset,
                None => {}
            }
        }
        let count = |cx: &mut Cx, k: &str, max: u64, dst: &mut u64| {
            if let Some(v) = b.attrs.get(k)
                && let Some(x) = cx.int(v, k, 1, max)
            {
                *dst = x;
            }
        };
        count(self, "chips", 4096, &mut h.chips);
        count(self, "tiles", 1_000_000, &mut h.tiles);
        count(self, "cores_per_tile", 1024, &mut h.cores_per_tile);
        count(self, "crossbars_per_core", 1024, &mut h.crossbars_per_core);
        for (k, dst) in [
            ("tile_buffer", &mut h.tile_buffer),
            ("core_buffer", &mut h.core_buffer),
        ] {
            if let Some(v) = b.attrs.get(k)
                && let Some(x) = self.quantity(v, k, UnitKind::Size)
            {
                if x < 1.0 || x > (1u64 << 40) as f64 || x.fract() != 0.0 {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!("`{k}` must be a whole number of bytes from 1 B to 1 TiB"),
                        )
                        .at(self.file, v.span.clone(), "out of range"),
                    );
                } else {
                    *dst = x as u64;
                }
            }
        }
        if let Some(v) = b.attrs.get("endurance")
            && let Some(x) = self.real(v, "endurance", 1.0, 1e18)
        {
            h.endurance = x;
        }
        for (block, kind, unit) in [
            ("energy", Kind::Energy, UnitKind::Energy),
            ("timing", Kind::Time, UnitKind::Time),
        ] {
            let Some(stmts) = b.blocks.get(block) else {
                continue;
            };
            let names = energy::names(kind);
            let inner = self.body(
                format!("{block} block"),
                stmts,
                &names,
                &[],
                false,
                b.end.clone(),
            );
            for (k, v) in &inner.attrs {
                if let Some(x) = self.quantity(v, k, unit) {
                    h.overrides.insert(k.to_string(), x);
                }
            }
        }
        h
    }

    fn model(&mut self, item: &ast::Item) -> Option<Model> {
        let owner = format!("model {}", item.name.name);
        self.locs.insert(
            owner.clone(),
            Loc {
                file: self.file,
                span: item.name.span.clone(),
            },
        );
        let b = self.body(
            owner,
            &item.body,
            &[
                "layers",
                "hidden",
                "heads",
                "ffn",
                "vocab",
                "max_seq",
                "type_vocab",
                "layer_norm_eps",
                "weights",
            ],
            &[],
            false,
            item.span.end.saturating_sub(1)..item.span.end,
        );
        let before = self.diags.len();
        let req = |cx: &mut Cx, k: &str, ex: &str, max: u64| -> Option<u64> {
            match b.attrs.get(k) {
                Some(v) => cx.int(v, k, 1, max),
                None => {
                    cx.missing(&b, k, ex);
                    None
                }
            }
        };
        use super::limits::*;
        let layers = req(self, "layers", "12", MAX_LAYERS);
        let hidden = req(self, "hidden", "768", MAX_HIDDEN);
        let heads = req(self, "heads", "12", MAX_HIDDEN);
        let ffn = req(self, "ffn", "3072", MAX_FFN);
        let vocab = req(self, "vocab", "30522", MAX_VOCAB);
        let max_seq = req(self, "max_seq", "512", MAX_SEQ);
        let type_vocab = match b.attrs.get("type_vocab") {
            Some(v) => self.int(v, "type_vocab", 1, 1024),
            None => Some(2),
        };
        let layer_norm_eps = match b.attrs.get("layer_norm_eps") {
            Some(v) => self.real(v, "layer_norm_eps", 0.0, 1.0),
            None => Some(1e-12),
        };
        let weights = match b.attrs.get("weights") {
            None => {
                self.missing(&b, "weights", "synthetic(seed = 7)");
                None
            }
            Some(v) => self.weights(v, false),
        };
        if let (Some(h), Some(a)) = (hidden, heads)
            && h % a != 0
        {
            self.err(
                Diagnostic::error(
                    Code::E017,
                    format!("`heads` ({a}) must divide `hidden` ({h})"),
                )
                .at(
                    self.file,
                    b.attrs["heads"].span.clone(),
                    "does not divide hidden",
                )
                .also(self.file, b.attrs["hidden"].span.clone(), "hidden size"),
            );
        }
        if self.diags.len() > before {
            return None;
        }
        let m = Model {
            name: item.name.name.clone(),
            layers: layers?,
            hidden: hidden?,
            heads: heads?,
            ffn: ffn?,
            vocab: vocab?,
            max_seq: max_seq?,
            type_vocab: type_vocab?,
            layer_norm_eps: layer_norm_eps?,
            weights: weights?,
        };
        if m.params() > MAX_PARAMS {
            self.err(
                Diagnostic::error(Code::E019, format!("model `{}` has {} parameters; mgen's limit is {MAX_PARAMS}", m.name, m.params()))
                    .at(self.file, item.name.span.clone(), "too large to hold")
                    .note("the limit keeps f32 weights within 16 GiB; sizes are checked before anything is allocated"),
            );
            return None;
        }
        Some(m)
    }

    fn weights(&mut self, v: &Value, task: bool) -> Option<WeightSource> {
        match &v.kind {
            ValueKind::Str { .. } => Some(WeightSource::File {
                path: self.string(v, "weights")?,
            }),
            ValueKind::Call { func, args } if func.name == "synthetic" && !task => {
                let seed = self.synthetic_seed(v, func, args)?;
                Some(WeightSource::Synthetic { seed })
            }
            ValueKind::Call { func, args } if func.name == "finetuned" && task => {
                let a = self.args(func, args, &["seed", "drift"])?;
                let (Some(s), Some(d)) = (a.get("seed"), a.get("drift")) else {
                    self.err(
                        Diagnostic::error(Code::E015, "`finetuned` needs `seed` and `drift`").at(
                            self.file,
                            v.span.clone(),
                            "e.g. `finetuned(seed = 101, drift = 0.02)`",
                        ),
                    );
                    return None;
                };
                let seed = self.int(s, "seed", 0, u64::MAX >> 11);
                let drift = self.real(d, "drift", 0.0, 10.0);
                Some(WeightSource::Finetuned {
                    seed: seed?,
                    drift: drift?,
                })
            }
            ValueKind::Call { func, .. }
                if func.name == "synthetic" || func.name == "finetuned" =>
            {
                let (msg, help) = if task {
                    (
                        "a task's weights are fine-tuned from its base",
                        "write `weights = finetuned(seed = S, drift = D);` or a path",
                    )
                } else {
                    (
                        "a model's weights are pre-trained, not fine-tuned",
                        "write `weights = synthetic(seed = S);` or a path",
                    )
                };
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{}` is not allowed here: {msg}", func.name),
                    )
                    .at(self.file, func.span.clone(), "not allowed here")
                    .help(help),
                );
                None
            }
            _ => {
                let ex = if task {
                    "finetuned(seed = S, drift = D)"
                } else {
                    "synthetic(seed = S)"
                };
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`weights` must be `{ex}` or a path, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), "unexpected value"),
                );
                None
            }
        }
    }

    fn head(&mut self, v: &Value) -> Option<Head> {
        let pool_of = |cx: &mut Cx, p: Option<&&Value>, default: Pool| -> Option<Pool> {
            match p {
                None => Some(default),
                Some(p) => match cx.name(p, "pool", &["cls", "mean"])? {
                    "mean" => Some(Pool::Mean),
                    _ => Some(Pool::Cls),
                },
            }
        };
        let kinds = ["classify", "regress", "embed"];
        match &v.kind {
            ValueKind::Name { name } if name == "regress" => {
                Some(Head::Regress { pool: Pool::Cls })
            }
            ValueKind::Name { name } if name == "classify" || name == "embed" => {
                self.err(
                    Diagnostic::error(Code::E016, format!("`{name}` needs arguments"))
                        .at(self.file, v.span.clone(), "here")
                        .help(if name == "classify" {
                            "e.g. `classify(2)`"
                        } else {
                            "e.g. `embed(mean)`"
                        }),
                );
                None
            }
            ValueKind::Call { func, args } if func.name == "classify" => {
                let a = self.args(func, args, &["classes", "pool"])?;
                let Some(n) = a.get("classes") else {
                    self.err(
                        Diagnostic::error(Code::E015, "`classify` needs the number of classes").at(
                            self.file,
                            v.span.clone(),
                            "e.g. `classify(2)`",
                        ),
                    );
                    return None;
                };
                let classes = self.int(n, "classes", 2, super::limits::MAX_CLASSES);
                let pool = pool_of(self, a.get("pool"), Pool::Cls);
                Some(Head::Classify {
                    classes: classes?,
                    pool: pool?,
                })
            }
            ValueKind::Call { func, args } if func.name == "regress" => {
                let a = self.args(func, args, &["pool"])?;
                Some(Head::Regress {
                    pool: pool_of(self, a.get("pool"), Pool::Cls)?,
                })
            }
            ValueKind::Call { func, args } if func.name == "embed" => {
                let a = self.args(func, args, &["pool"])?;
                let Some(p) = a.get("pool") else {
                    self.err(Diagnostic::error(Code::E015, "`embed` needs a pooling").at(
                        self.file,
                        v.span.clone(),
                        "e.g. `embed(mean)` or `embed(cls)`",
                    ));
                    return None;
                };
                Some(Head::Embed {
                    pool: pool_of(self, Some(p), Pool::Mean)?,
                })
            }
            ValueKind::Call { .. } | ValueKind::Name { .. } => {
                let (name, span) = match &v.kind {
                    ValueKind::Call { func, .. } => (func.name.clone(), func.span.clone()),
                    ValueKind::Name { name } => (name.clone(), v.span.clone()),
                    _ => return None,
                };
                let mut d = Diagnostic::error(Code::E017, format!("unknown head `{name}`")).at(
                    self.file,
                    span,
                    "expected classify(N), regress or embed(POOL)",
                );
                if let Some(s) = suggest(&name, &kinds) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                self.err(d);
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!(
                            "`head` must be classify(N), regress or embed(POOL), found {}",
                            v.describe()
                        ),
                    )
                    .at(self.file, v.span.clone(), "unexpected value"),
                );
                None
            }
        }
    }

    fn budget(
        &mut self,
        metric: &Ident,
        op: CmpOp,
        bound: &Value,
        span: &Span,
        head: Option<Head>,
    ) -> Option<Budget> {
        let m =
            match metric.name.as_str() {
                "agreement" => Metric::Agreement,
                "cosine" => Metric::Cosine,
                "accuracy" => Metric::Accuracy,
                "pearson" => Metric::Pearson,
                other => {
                    let names = ["agreement", "cosine", "accuracy", "pearson"];
                    let mut d =
                        Diagnostic::error(Code::E014, format!("unknown budget metric `{other}`"))
                            .at(self.file, metric.span.clone(), "not a metric");
                    d = match suggest(other, &names) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d.note("metrics: agreement, cosine, accuracy, pearson"),
                    };
                    self.err(d);
                    return None;
                }
            };
        if op != CmpOp::Ge {
            self.err(
                Diagnostic::error(Code::E017, "budgets are lower bounds and use `>=`").at(
                    self.file,
                    span.clone(),
                    "write `keep METRIC >= BOUND;`",
                ),
            );
            return None;
        }
        if let Some(h) = head {
            let fits = match m {
                Metric::Agreement | Metric::Accuracy => matches!(h, Head::Classify { .. }),
                Metric::Pearson => matches!(h, Head::Regress { .. }),
                Metric::Cosine => !matches!(h, Head::Classify { .. }),
            };
            if !fits {
                let which = match m {
                    Metric::Agreement | Metric::Accuracy => "classify heads",
                    Metric::Pearson => "regress heads",
                    Metric::Cosine => "embed and regress heads",
                };
                self.err(
                    Diagnostic::error(
                        Code::E017,
                        format!("`{}` applies to {which} only", m.name()),
                    )
                    .at(
                        self.file,
                        metric.span.clone(),
                        "does not fit this task's head",
                    ),
                );
                return None;
            }
        }
        let percent = |cx: &mut Cx, v: &Value, min: f64| -> Option<f64> {
            match &v.kind {
                ValueKind::Percent { number, text } => {
                    if !(min..=100.0).contains(number) || (min > 0.0 && *number <= 0.0) {
                        cx.err(
                            Diagnostic::error(
                                Code::E017,
                                format!("`{}` bound {text}% is out of range", m.name()),
                            )
                            .at(
                                cx.file,
                                v.span.clone(),
                                if min > 0.0 {
                                    "must be above 0% and at most 100%"
                                } else {
                                    "must be from 0% to 100%"
                                },
                            ),
                        );
                        return None;
                    }
                    Some(*number)
                }
                _ => {
                    cx.err(
                        Diagnostic::error(
                            Code::E016,
                            format!("`{}` is a percentage, found {}", m.name(), v.describe()),
                        )
                        .at(cx.file, v.span.clone(), "expected e.g. `99%`"),
                    );
                    None
                }
            }
        };
        let relative = |cx: &mut Cx| -> Option<&Value> {
            match &bound.kind {
                ValueKind::Relative { base, delta } if base.name == "reference" => Some(delta),
                ValueKind::Relative { base, .. } => {
                    cx.err(
                        Diagnostic::error(
                            Code::E011,
                            format!("unknown bound base `{}`", base.name),
                        )
                        .at(
                            cx.file,
                            base.span.clone(),
                            "expected `reference`",
                        ),
                    );
                    None
                }
                _ => {
                    cx.err(
                        Diagnostic::error(
                            Code::E016,
                            format!("`{}` is bounded relative to the task's own model", m.name()),
                        )
                        .at(cx.file, bound.span.clone(), "expected `reference - D`")
                        .help(match m {
                            Metric::Accuracy => "write e.g. `keep accuracy >= reference - 1%;`",
                            _ => "write e.g. `keep pearson >= reference - 0.01;`",
                        }),
                    );
                    None
                }
            }
        };
        let (value, rel) = match m {
            Metric::Agreement => (percent(self, bound, 1e-300)?, false),
            Metric::Accuracy => {
                let d = relative(self)?;
                (percent(self, d, 0.0)?, true)
            }
            Metric::Cosine => {
                if let ValueKind::Percent { .. } = bound.kind {
                    self.err(
                        Diagnostic::error(
                            Code::E018,
                            "`cosine` is a plain number, not a percentage",
                        )
                        .at(self.file, bound.span.clone(), "e.g. `0.99`"),
                    );
                    return None;
                }
                let c = self.real(bound, "cosine", -1.0, 1.0)?;
                if c <= 0.0 {
                    self.err(
                        Diagnostic::error(Code::E017, "a `cosine` budget must be above 0").at(
                            self.file,
                            bound.span.clone(),
                            "out of range",
                        ),
                    );
                    return None;
                }
                (c, false)
            }
            Metric::Pearson => {
                let d = relative(self)?;
                (self.real(d, "pearson", 0.0, 2.0)?, true)
            }
        };
        Some(Budget {
            metric: m,
            value,
            relative: rel,
            default: false,
        })
    }

    fn task(
        &mut self,
        item: &ast::Item,
        models: &BTreeMap<String, usize>,
        model_list: &[Model],
        seen: &BTreeMap<&str, &ast::Item>,
    ) -> Option<Task> {
        let owner = format!("task {}", item.name.name);
        self.locs.insert(
            owner.clone(),
            Loc {
                file: self.file,
                span: item.name.span.clone(),
            },
        );
        let b = self.body(
            owner.clone(),
            &item.body,
            &[
                "base",
                "head",
                "weights",
                "calibrate",
                "regenerate",
                "train",
            ],
            &[],
            true,
            item.span.end.saturating_sub(1)..item.span.end,
        );
        let before = self.diags.len();
        let base = match b.attrs.get("base") {
            None => {
                self.missing(&b, "base", "bert_base");
                None
            }
            Some(v) => match self.name(v, "base", &[]) {
                None => None,
                Some(n) => match models.get(n) {
                    Some(&i) => Some(i),
                    None => {
                        match seen.get(n) {
                            Some(other) if other.kind != ItemKind::Model => self.err(
                                Diagnostic::error(
                                    Code::E012,
                                    format!("`{n}` is a {}, not a model", other.kind.keyword()),
                                )
                                .at(self.file, v.span.clone(), "a task's base must be a model")
                                .also(
                                    self.file,
                                    other.name.span.clone(),
                                    format!("`{n}` is declared here"),
                                ),
                            ),
                            Some(_) => {} // a model with errors of its own
                            None => {
                                let names: Vec<&str> = models.keys().map(|s| s.as_str()).collect();
                                let mut d =
                                    Diagnostic::error(Code::E011, format!("unknown model `{n}`"))
                                        .at(self.file, v.span.clone(), "no model of this name");
                                if let Some(s) = suggest(n, &names) {
                                    d = d.help(format!("did you mean `{s}`?"));
                                }
                                self.err(d);
                            }
                        }
                        None
                    }
                },
            },
        };
        let head = match b.attrs.get("head") {
            None => {
                self.missing(&b, "head", "classify(2)");
                None
            }
            Some(v) => self.head(v),
        };
        let weights = match b.attrs.get("weights") {
            None => {
                self.missing(&b, "weights", "finetuned(seed = 101, drift = 0.02)");
                None
            }
            Some(v) => self.weights(v, true),
        };
        let calibrate = b
            .attrs
            .get("calibrate")
            .and_then(|v| self.string(v, "calibrate"));
        let mut budgets: Vec<Budget> = Vec::new();
        let mut metric_spans: BTreeMap<Metric, Span> = BTreeMap::new();
        for (metric, op, bound, span) in &b.keeps {
            if let Some(bu) = self.budget(metric, *op, bound, span, head) {
                if let Some(prev) = metric_spans.get(&bu.metric) {
                    self.err(
                        Diagnostic::error(
                            Code::E013,
                            format!("two `{}` budgets", bu.metric.name()),
                        )
                        .at(self.file, span.clone(), "given again here")
                        .also(self.file, prev.clone(), "first given here"),
                    );
                    continue;
                }
                metric_spans.insert(bu.metric, span.clone());
                self.locs.insert(
                    format!("{owner}.keep {}", bu.metric.name()),
                    Loc {
                        file: self.file,
                        span: span.clone(),
                    },
                );
                budgets.push(bu);
            }
        }
        if self.diags.len() > before {
            return None;
        }
        let head = head?;
        if budgets.is_empty() {
            budgets.push(match head {
                Head::Classify { .. } => Budget {
                    metric: Metric::Agreement,
                    value: 99.0,
                    relative: false,
                    default: true,
                },
                _ => Budget {
                    metric: Metric::Cosine,
                    value: 0.99,
                    relative: false,
                    default: true,
                },
            });
        }
        budgets.sort_by_key(|b| b.metric);
        if let (Some(bi), Head::Classify { classes, .. }) = (base, head) {
            let h = model_list.get(bi).map(|m| m.hidden).unwrap_or(0);
            if classes as u128 * h as u128 > super::limits::MAX_PARAMS {
                self.err(
                    Diagnostic::error(
                        Code::E019,
                        format!(
                            "the head of task `{}` has {classes} x {h} weights; the limit is {}",
                            item.name.name,
                            super::limits::MAX_PARAMS
                        ),
                    )
                    .at(
                        self.file,
                        b.attrs["head"].span.clone(),
                        "too large to hold",
                    ),
                );
                return None;
            }
        }
        let regenerate = match b.attrs.get("regenerate") {
            None => Regenerate::None,
            Some(v) => match &v.kind {
                ValueKind::Name { name } if name == "none" => Regenerate::None,
                ValueKind::Name { name } if name == "head" => {
                    if matches!(head, Head::Embed { .. }) {
                        self.err(
                            Diagnostic::error(
                                Code::E017,
                                "`regenerate = head` needs a classifier: an `embed` head has none",
                            )
                            .at(
                                self.file,
                                v.span.clone(),
                                "nothing to refit",
                            ),
                        );
                        return None;
                    }
                    Regenerate::Head
                }
                ValueKind::Name { name } if name == "branch" => {
                    Regenerate::Branch(crate::spec::BranchOpts::default())
                }
                ValueKind::Call { func, args } if func.name == "branch" => {
                    Regenerate::Branch(self.branch_opts(func, args)?)
                }
                _ => {
                    self.err(
                        Diagnostic::error(
                            Code::E016,
                            format!(
                                "`regenerate` must be `none`, `head` or `branch`, found {}",
                                v.describe()
                            ),
                        )
                        .at(self.file, v.span.clone(), "unexpected value")
                        .help("e.g. `regenerate = branch(epochs = 4, lr = 1e-4);`"),
                    );
                    return None;
                }
            },
        };
        let train = match b.attrs.get("train") {
            None => None,
            Some(v) => match &v.kind {
                ValueKind::Str { .. } => {
                    let path = self.string(v, "train")?;
                    if calibrate.as_deref() == Some(path.as_str()) {
                        self.err(
                            Diagnostic::error(
                                Code::E017,
                                "`train` and `calibrate` name the same file: budgets are checked on held-out inputs",
                            )
                            .at(self.file, v.span.clone(), "the calibration set"),
                        );
                        return None;
                    }
                    Some(InputSource::File { path })
                }
                ValueKind::Call { func, args } if func.name == "synthetic" => {
                    let seed = self.synthetic_seed(v, func, args)?;
                    Some(InputSource::Synthetic { seed })
                }
                _ => {
                    self.err(
                        Diagnostic::error(
                            Code::E016,
                            format!(
                                "`train` must be `synthetic(seed = S)` or a path, found {}",
                                v.describe()
                            ),
                        )
                        .at(self.file, v.span.clone(), "unexpected value"),
                    );
                    return None;
                }
            },
        };
        if let Some(o) = regenerate.branch()
            && o.labels > 0.0
            && !matches!(train, Some(InputSource::File { .. }))
        {
            self.err(
                Diagnostic::error(
                    Code::E017,
                    "a label loss (`labels > 0`) needs labelled training inputs",
                )
                .at(
                    self.file,
                    b.attrs["regenerate"].span.clone(),
                    "synthetic training inputs carry no labels",
                )
                .help("add `train = \"FILE.jsonl\";` with labels, or drop `labels`"),
            );
            return None;
        }
        Some(Task {
            name: item.name.name.clone(),
            base: base?,
            head,
            weights: weights?,
            budgets,
            calibrate,
            regenerate,
            train,
        })
    }

    fn workload(
        &mut self,
        item: &ast::Item,
        task_index: &BTreeMap<String, usize>,
        tasks: &[Task],
        models: &[Model],
        seen: &BTreeMap<&str, &ast::Item>,
        weight_bits: u32,
    ) -> Option<Workload> {
        let owner = format!("workload {}", item.name.name);
        self.locs.insert(
            owner.clone(),
            Loc {
                file: self.file,
                span: item.name.span.clone(),
            },
        );
        let b = self.body(
            owner,
            &item.body,
            &["requests", "seq", "inputs", "tasks", "area"],
            &[],
            false,
            item.span.end.saturating_sub(1)..item.span.end,
        );
        let before = self.diags.len();
        let requests = match b.attrs.get("requests") {
            Some(v) => self.int(v, "requests", 1, super::limits::MAX_REQUESTS),
            None => {
                self.missing(&b, "requests", "64");
                None
            }
        };
        let seq = match b.attrs.get("seq") {
            Some(v) => self.int(v, "seq", 1, super::limits::MAX_SEQ),
            None => {
                self.missing(&b, "seq", "128");
                None
            }
        };
        let inputs = match b.attrs.get("inputs") {
            None => {
                self.missing(&b, "inputs", "synthetic(seed = 3)");
                None
            }
            Some(v) => match &v.kind {
                ValueKind::Str { .. } => self
                    .string(v, "inputs")
                    .map(|path| InputSource::File { path }),
                ValueKind::Call { func, args } if func.name == "synthetic" => self
                    .synthetic_seed(v, func, args)
                    .map(|seed| InputSource::Synthetic { seed }),
                _ => {
                    self.err(
                        Diagnostic::error(
                            Code::E016,
                            format!(
                                "`inputs` must be `synthetic(seed = S)` or a path, found {}",
                                v.describe()
                            ),
                        )
                        .at(self.file, v.span.clone(), "unexpected value"),
                    );
                    None
                }
            },
        };
        let mut list = Vec::new();
        let mut list_span = b.end.clone();
        match b.attrs.get("tasks") {
            None => self.missing(&b, "tasks", "[sst2, mnli]"),
            Some(v) => {
                list_span = v.span.clone();
                match &v.kind {
                    ValueKind::List { items } if items.is_empty() => self.err(
                        Diagnostic::error(Code::E017, "a workload needs at least one task").at(
                            self.file,
                            v.span.clone(),
                            "empty list",
                        ),
                    ),
                    ValueKind::List { items } => {
                        let mut firsts: BTreeMap<&str, Span> = BTreeMap::new();
                        for it in items {
                            let Some(n) = self.name(it, "tasks", &[]) else {
                                continue;
                            };
                            if let Some(prev) = firsts.get(n) {
                                self.err(
                                    Diagnostic::error(
                                        Code::E017,
                                        format!("task `{n}` is listed twice"),
                                    )
                                    .at(self.file, it.span.clone(), "listed again")
                                    .also(
                                        self.file,
                                        prev.clone(),
                                        "first listed here",
                                    ),
                                );
                                continue;
                            }
                            firsts.insert(n, it.span.clone());
                            match task_index.get(n) {
                                Some(&t) => list.push((t, it.span.clone())),
                                None => match seen.get(n) {
                                    Some(other) if other.kind != ItemKind::Task => self.err(
                                        Diagnostic::error(
                                            Code::E012,
                                            format!(
                                                "`{n}` is a {}, not a task",
                                                other.kind.keyword()
                                            ),
                                        )
                                        .at(self.file, it.span.clone(), "a workload lists tasks")
                                        .also(
                                            self.file,
                                            other.name.span.clone(),
                                            format!("`{n}` is declared here"),
                                        ),
                                    ),
                                    Some(_) => {} // a task with errors of its own
                                    None => {
                                        let names: Vec<&str> =
                                            task_index.keys().map(|s| s.as_str()).collect();
                                        let mut d = Diagnostic::error(
                                            Code::E011,
                                            format!("unknown task `{n}`"),
                                        )
                                        .at(
                                            self.file,
                                            it.span.clone(),
                                            "no task of this name",
                                        );
                                        if let Some(s) = suggest(n, &names) {
                                            d = d.help(format!("did you mean `{s}`?"));
                                        }
                                        self.err(d);
                                    }
                                },
                            }
                        }
                    }
                    _ => self.err(
                        Diagnostic::error(
                            Code::E016,
                            format!(
                                "`tasks` must be a list of task names, found {}",
                                v.describe()
                            ),
                        )
                        .at(
                            self.file,
                            v.span.clone(),
                            "expected e.g. `[sst2, mnli]`",
                        ),
                    ),
                }
            }
        }
        if let Some(s) = seq {
            for (t, span) in &list {
                let m = &models[tasks[*t].base];
                if s > m.max_seq {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!(
                                "`seq` = {s} exceeds `max_seq` = {} of model `{}` (task `{}`)",
                                m.max_seq, m.name, tasks[*t].name
                            ),
                        )
                        .at(self.file, b.attrs["seq"].span.clone(), "too long")
                        .also(self.file, span.clone(), "this task's model"),
                    );
                    break;
                }
                let act =
                    s as u128 * (m.ffn.max(3 * m.hidden) as u128).max(m.heads as u128 * s as u128);
                if act > super::limits::MAX_ACTIVATION {
                    self.err(
                        Diagnostic::error(Code::E019, format!("one request of task `{}` needs an activation of {act} elements; the limit is {}", tasks[*t].name, super::limits::MAX_ACTIVATION))
                            .at(self.file, b.attrs["seq"].span.clone(), "too long for this model"),
                    );
                    break;
                }
            }
        }
        let _ = list_span;
        if let Some(InputSource::Synthetic { .. }) = &inputs {
            for (t, span) in &list {
                let task = &tasks[*t];
                if task.calibrate.is_none()
                    && let Some(bu) = task.budgets.iter().find(|b| b.relative)
                {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!("task `{}` keeps `{}` against labels, but has no labelled inputs", task.name, bu.metric.name()),
                        )
                        .at(self.file, span.clone(), "synthetic inputs carry no labels")
                        .help(format!("give task `{}` a `calibrate = \"FILE.jsonl\";` with labels, or use `keep agreement` / `keep cosine`", task.name)),
                    );
                }
            }
        }
        let area = match b.attrs.get("area") {
            None => None,
            Some(v) => match &v.kind {
                ValueKind::Name { name } if name == "none" => None,
                ValueKind::Call { func, args } if func.name == "delta" => {
                    let a = self.args(func, args, &["bits"]);
                    match a.as_ref().and_then(|a| a.get("bits").copied()) {
                        Some(bv) => {
                            self.int(bv, "bits", 2, weight_bits.max(2) as u64)
                                .map(|bits| AreaMode {
                                    delta_bits: bits as u32,
                                })
                        }
                        None => {
                            if a.is_some() {
                                self.err(Diagnostic::error(Code::E015, "`delta` needs `bits`").at(
                                    self.file,
                                    v.span.clone(),
                                    "add `bits = N`",
                                ));
                            }
                            None
                        }
                    }
                }
                _ => {
                    self.err(
                        Diagnostic::error(
                            Code::E016,
                            format!(
                                "`area` must be `delta(bits = N)` or `none`, found {}",
                                v.describe()
                            ),
                        )
                        .at(self.file, v.span.clone(), "unexpected value")
                        .help("e.g. `area = delta(bits = 2);` stores each task's own matrices as the base's plus 2-bit deltas"),
                    );
                    None
                }
            },
        };
        if self.diags.len() > before {
            return None;
        }
        Some(Workload {
            name: item.name.name.clone(),
            requests: requests?,
            seq: seq?,
            inputs: inputs?,
            tasks: list.into_iter().map(|(t, _)| t).collect(),
            area,
        })
    }
}

/// Sizes that would exhaust memory or cannot be placed, found before any
/// weight is made: the weights the workload holds at once (each base model
/// it uses plus every task's own copy) against
/// [`limits::MAX_TOTAL_PARAMS`](super::limits::MAX_TOTAL_PARAMS), and the
/// largest matrix of each model against the whole machine.
fn too_large(
    hw: &Hardware,
    models: &[Model],
    tasks: &[Task],
    w: &Workload,
    locs: &BTreeMap<String, Loc>,
) -> Option<Diagnostic> {
    let at = |d: Diagnostic, key: String, label: &str| match locs.get(&key) {
        Some(l) => d.at(l.file, l.span.clone(), label),
        None => d,
    };
    let mut used: Vec<usize> = w.tasks.iter().map(|&t| tasks[t].base).collect();
    used.sort_unstable();
    used.dedup();
    let total: u128 = used.iter().map(|&m| models[m].params()).sum::<u128>()
        + w.tasks
            .iter()
            .map(|&t| models[tasks[t].base].params())
            .sum::<u128>();
    if total > super::limits::MAX_TOTAL_PARAMS {
        let d = Diagnostic::error(
            Code::E019,
            format!(
                "workload `{}` holds {total} weights at once (its base models and each task's own copy); mgen's limit is {}",
                w.name,
                super::limits::MAX_TOTAL_PARAMS
            ),
        )
        .note("the limit keeps the weights within 12 GiB of f32; sizes are checked before anything is allocated");
        return Some(at(d, format!("workload {}", w.name), "too many weights"));
    }
    for &m in &used {
        let md = &models[m];
        let widest = md.ffn.max(md.hidden);
        let need = hw
            .crossbars_for(widest, md.hidden, hw.weight_bits)
            .max(hw.crossbars_for(md.hidden, widest, hw.weight_bits));
        if need > hw.crossbars() {
            let d = Diagnostic::error(
                Code::E301,
                format!(
                    "model `{}` has a {widest} x {} matrix that needs {need} crossbars; the whole machine has {}",
                    md.name,
                    md.hidden,
                    hw.crossbars()
                ),
            )
            .help("add chips or tiles to the hardware block, or use larger crossbars");
            let mut d = at(d, format!("model {}", md.name), "this model");
            if let Some(l) = locs.get(&format!("hardware {}", hw.name)) {
                d = d.also(l.file, l.span.clone(), "this hardware");
            }
            return Some(d);
        }
    }
    None
}
