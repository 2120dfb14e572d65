//! The `workload` item: requests, sequence length, inputs and the tasks
//! it serves; and the size checks made before anything is allocated.

use super::*;

impl Cx {
    pub(super) fn workload(
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
            &[
                "requests",
                "seq",
                "inputs",
                "tasks",
                "area",
                "makespan_tolerance",
            ],
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
        self.joint_settings_agree(tasks, &list);
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
        let makespan_tolerance = match b.attrs.get("makespan_tolerance") {
            None => Some(DEFAULT_MAKESPAN_TOLERANCE_PCT),
            Some(v) => self.percentage(v, "makespan_tolerance"),
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
            makespan_tolerance_pct: makespan_tolerance?,
        })
    }

    /// A percentage from 0% to 100%, as the number before the `%`.
    fn percentage(&mut self, v: &ast::Value, what: &str) -> Option<f64> {
        match &v.kind {
            ValueKind::Percent { number, .. }
                if number.is_finite() && (0.0..=100.0).contains(number) =>
            {
                Some(*number)
            }
            ValueKind::Percent { text, .. } => {
                self.err(
                    Diagnostic::error(
                        Code::E017,
                        format!("`{what}` must be between 0% and 100%, not {text}%"),
                    )
                    .at(self.file, v.span.clone(), "out of range"),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be a percentage, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), "expected e.g. `5%`")
                    .help("the scheduler picks the shortest makespan among orders within this much of the least scheduling energy"),
                );
                None
            }
        }
    }
}

/// Sizes that would exhaust memory or cannot be placed, found before any
/// weight is made: the weights the workload holds at once (each base model
/// it uses plus every task's own copy) against
/// [`limits::MAX_TOTAL_PARAMS`](super::limits::MAX_TOTAL_PARAMS), and the
/// largest matrix of each model against the whole machine.
impl Cx {
    /// The workload's tasks of one base model that ask for `joint` train
    /// together, so they must use the same settings (E017, at the second
    /// task's entry in the list).
    fn joint_settings_agree(&mut self, tasks: &[Task], list: &[(usize, Span)]) {
        let mut first: BTreeMap<usize, (usize, &Span)> = BTreeMap::new();
        for (t, span) in list {
            let Some(o) = tasks[*t].regenerate.joint() else {
                continue;
            };
            match first.get(&tasks[*t].base) {
                None => {
                    first.insert(tasks[*t].base, (*t, span));
                }
                Some(&(f, fspan)) if tasks[f].regenerate.joint() != Some(o) => {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!(
                                "tasks `{}` and `{}` train their shared trunk together (`regenerate = joint`), but with different settings",
                                tasks[f].name, tasks[*t].name
                            ),
                        )
                        .at(self.file, span.clone(), "settings differ from the first's")
                        .also(self.file, fspan.clone(), "the first joint task of this base model")
                        .help(format!(
                            "give both the same `joint(...)`, e.g. `{}`",
                            tasks[f].regenerate.to_mgen()
                        )),
                    );
                }
                Some(_) => {}
            }
        }
    }
}

pub(super) fn too_large(
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
