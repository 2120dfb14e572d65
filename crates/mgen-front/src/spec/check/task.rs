//! The `task` item: its base, head, weights, budgets (`keep`),
//! regeneration level and input files.

use super::*;

impl Cx {
    /// `synthetic(seed = S)` (weights, workload inputs, training inputs):
    /// the seed, or a diagnostic (E015 without a seed).
    pub(super) fn synthetic_seed(&mut self, v: &Value, func: &Ident, args: &[Arg]) -> Option<u64> {
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
    pub(super) fn branch_opts(
        &mut self,
        func: &Ident,
        args: &[Arg],
    ) -> Option<crate::spec::BranchOpts> {
        let a = self.args(func, args, &[TRAINING, &["trials"]].concat())?;
        let mut o = crate::spec::BranchOpts::default();
        let mut t = Training {
            epochs: o.epochs,
            lr: o.lr,
            batch: o.batch,
            labels: o.labels,
            temperature: o.temperature,
        };
        let mut ok = self.training(&a, &mut t);
        (o.epochs, o.lr, o.batch, o.labels, o.temperature) =
            (t.epochs, t.lr, t.batch, t.labels, t.temperature);
        if let Some(v) = a.get("trials") {
            ok &= self
                .int(v, "trials", 0, 64)
                .map(|x| o.trials = x as u32)
                .is_some();
        }
        ok.then_some(o)
    }

    /// `joint(epochs = E, lr = X, batch = B, labels = A, temperature = T,
    /// trials = N, max_minutes = M, layers = K)`: every argument optional,
    /// defaults from [`crate::spec::JointOpts::default`]; `layers` at most
    /// `max_layers`, the base model's.
    pub(super) fn joint_opts(
        &mut self,
        func: &Ident,
        args: &[Arg],
        max_layers: u64,
    ) -> Option<crate::spec::JointOpts> {
        let names = [TRAINING, &["trials", "max_minutes", "layers"]].concat();
        let a = self.args(func, args, &names)?;
        let mut o = crate::spec::JointOpts::default();
        let mut t = Training {
            epochs: o.epochs,
            lr: o.lr,
            batch: o.batch,
            labels: o.labels,
            temperature: o.temperature,
        };
        let mut ok = self.training(&a, &mut t);
        (o.epochs, o.lr, o.batch, o.labels, o.temperature) =
            (t.epochs, t.lr, t.batch, t.labels, t.temperature);
        if let Some(v) = a.get("trials") {
            ok &= self
                .int(v, "trials", 1, 64)
                .map(|x| o.trials = x as u32)
                .is_some();
        }
        if let Some(v) = a.get("max_minutes") {
            ok &= self
                .real(v, "max_minutes", 0.0, 10_000.0)
                .map(|x| o.max_minutes = x)
                .is_some();
        }
        if let Some(v) = a.get("layers") {
            ok &= self
                .int(v, "layers", 1, max_layers.max(1))
                .map(|x| o.layers = x as u32)
                .is_some();
        }
        ok.then_some(o)
    }

    /// The arguments `branch(...)` and `joint(...)` share, checked into
    /// `t` (which holds the defaults); false when one is out of range.
    fn training(&mut self, a: &BTreeMap<&'static str, &Value>, t: &mut Training) -> bool {
        let mut ok = true;
        if let Some(v) = a.get("epochs") {
            ok &= self
                .int(v, "epochs", 1, 1000)
                .map(|x| t.epochs = x as u32)
                .is_some();
        }
        if let Some(v) = a.get("lr") {
            ok &= self.real(v, "lr", 1e-9, 1.0).map(|x| t.lr = x).is_some();
        }
        if let Some(v) = a.get("batch") {
            ok &= self
                .int(v, "batch", 1, 4096)
                .map(|x| t.batch = x as u32)
                .is_some();
        }
        if let Some(v) = a.get("labels") {
            ok &= self
                .real(v, "labels", 0.0, 1.0)
                .map(|x| t.labels = x)
                .is_some();
        }
        if let Some(v) = a.get("temperature") {
            ok &= self
                .real(v, "temperature", 0.05, 100.0)
                .map(|x| t.temperature = x)
                .is_some();
        }
        ok
    }

    pub(super) fn head(&mut self, v: &Value) -> Option<Head> {
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

    pub(super) fn budget(
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

    pub(super) fn task(
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
                "test",
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
                ValueKind::Name { name } if name == "joint" => {
                    Regenerate::Joint(crate::spec::JointOpts::default())
                }
                ValueKind::Call { func, args } if func.name == "joint" => {
                    let layers = base
                        .and_then(|bi| model_list.get(bi))
                        .map_or(0, |m| m.layers);
                    Regenerate::Joint(self.joint_opts(func, args, layers)?)
                }
                _ => {
                    self.err(
                        Diagnostic::error(
                            Code::E016,
                            format!(
                                "`regenerate` must be `none`, `head`, `branch` or `joint`, found {}",
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
        let test = match b.attrs.get("test") {
            None => None,
            Some(v) => {
                let path = self.string(v, "test")?;
                let same = if calibrate.as_deref() == Some(path.as_str()) {
                    Some("calibrate")
                } else if matches!(&train, Some(InputSource::File { path: p }) if *p == path) {
                    Some("train")
                } else {
                    None
                };
                if let Some(other) = same {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!("`test` and `{other}` name the same file: the held-out set must be disjoint from the inputs the generator saw"),
                        )
                        .at(self.file, v.span.clone(), format!("the `{other}` set")),
                    );
                    return None;
                }
                if matches!(head, Head::Embed { .. }) {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            "`test` needs a labelled head: an `embed` task has no labels to score",
                        )
                        .at(self.file, v.span.clone(), "nothing to score")
                        .help("held-out figures are accuracy (`classify`) or Pearson (`regress`)"),
                    );
                    return None;
                }
                Some(path)
            }
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
            test,
        })
    }
}

/// The training arguments `branch(...)` and `joint(...)` share.
const TRAINING: &[&str] = &["epochs", "lr", "batch", "labels", "temperature"];

/// Their values.
struct Training {
    epochs: u32,
    lr: f64,
    batch: u32,
    labels: f64,
    temperature: f64,
}
