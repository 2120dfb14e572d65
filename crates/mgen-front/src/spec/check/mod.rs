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

mod hardware;
mod model;
mod noise;
mod task;
mod values;
mod workload;

use workload::too_large;

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
