//! The `model` item and weight sources (`synthetic`, `finetuned`,
//! checkpoint paths).

use super::*;

impl Cx {
    pub(super) fn model(&mut self, item: &ast::Item) -> Option<Model> {
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

    pub(super) fn weights(&mut self, v: &Value, task: bool) -> Option<WeightSource> {
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
}
