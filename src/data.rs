//! Request inputs: JSON Lines files and synthetic token streams.
//!
//! A line is `{"ids": [101, ..., 102]}` with optional `"text"` and
//! `"label"` (an integer class or a number). A line with only `"text"` is
//! tokenised with the `tokenizer.json` beside the workload's model
//! checkpoint (padding and truncation off). Requests shorter than the
//! workload's `seq` are padded with id 0 and masked; longer ones, ids
//! outside the vocabulary and malformed lines are located diagnostics.
//! Synthetic inputs are `[CLS] x … x [SEP]` of exactly `seq` tokens with
//! ids drawn from a keyed stream, so they are the same on every machine.

use crate::diag::{Code, Diagnostic, Diags, FileId, Sources};
use crate::spec::{InputSource, Spec, WeightSource};
use crate::weights::rng::Rng;
use std::path::{Path, PathBuf};

/// Inputs files larger than this are refused before they are read.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;

/// A label carried by a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Label {
    Class(i64),
    Value(f64),
}

/// One request: token ids padded to the batch's `seq`, and how many are real.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub ids: Vec<u32>,
    pub len: usize,
    pub text: Option<String>,
    pub label: Option<Label>,
}

impl Request {
    /// The attention mask: 1 for real tokens, 0 for padding.
    pub fn mask(&self) -> Vec<f32> {
        (0..self.ids.len())
            .map(|i| if i < self.len { 1.0 } else { 0.0 })
            .collect()
    }
}

/// The workload's requests.
#[derive(Debug, Clone)]
pub struct Batch {
    pub seq: usize,
    pub requests: Vec<Request>,
}

/// The smallest vocabulary among the workload's models: every id must fit all.
fn vocab(spec: &Spec) -> u64 {
    spec.workload
        .tasks
        .iter()
        .map(|&t| spec.base_of(t).vocab)
        .min()
        .unwrap_or(1)
}

/// Synthetic requests: `[CLS] … [SEP]`, `seq` tokens each.
pub fn synthetic(seed: u64, requests: usize, seq: usize, vocab: u64) -> Vec<Request> {
    let mut rng = Rng::keyed(seed, "inputs");
    let (cls, sep) = if vocab > 102 {
        (101, 102)
    } else {
        (0, vocab.saturating_sub(1) as u32)
    };
    let lo = if vocab > 2000 {
        999
    } else {
        1.min(vocab.saturating_sub(1))
    };
    (0..requests)
        .map(|_| {
            let mut ids: Vec<u32> = (0..seq)
                .map(|_| rng.below(lo, vocab.max(lo + 1)) as u32)
                .collect();
            ids[0] = cls;
            if seq > 1 {
                ids[seq - 1] = sep;
            }
            Request {
                ids,
                len: seq,
                text: None,
                label: None,
            }
        })
        .collect()
}

/// The `tokenizer.json` beside the first checkpoint of the workload's models.
pub fn tokenizer_path(spec: &Spec) -> Option<PathBuf> {
    spec.workload
        .tasks
        .iter()
        .find_map(|&t| match &spec.base_of(t).weights {
            WeightSource::File { path } => Some(
                Path::new(&spec.root)
                    .join(path)
                    .with_file_name("tokenizer.json"),
            ),
            _ => None,
        })
}

/// Loads the workload's inputs.
pub fn load(spec: &Spec, sources: &mut Sources) -> Result<Batch, Diags> {
    let seq = spec.workload.seq as usize;
    let n = spec.workload.requests as usize;
    let requests = match &spec.workload.inputs {
        InputSource::Synthetic { seed } => synthetic(*seed, n, seq, vocab(spec)),
        InputSource::File { path } => {
            let key = format!("workload {}.inputs", spec.workload.name);
            let full = Path::new(&spec.root).join(path);
            let reqs = load_jsonl(spec, &full, &key, seq, sources)?;
            if reqs.len() < n {
                let mut d = Diagnostic::error(
                    Code::E207,
                    format!(
                        "`{}` holds {} requests; the workload asks for {n}",
                        full.display(),
                        reqs.len()
                    ),
                );
                if let Some(l) = spec.loc(&format!("workload {}.requests", spec.workload.name)) {
                    d = d.at(l.file, l.span.clone(), "more requests than the file has");
                }
                return Err(d.into());
            }
            reqs.into_iter().take(n).collect()
        }
    };
    Ok(Batch { seq, requests })
}

fn located(spec: &Spec, key: &str, d: Diagnostic, label: &str) -> Diagnostic {
    match spec.loc(key) {
        Some(l) => d.at(l.file, l.span.clone(), label),
        None => d,
    }
}

/// Reads a JSON Lines file of requests (also used for `calibrate` files).
pub fn load_jsonl(
    spec: &Spec,
    path: &Path,
    key: &str,
    seq: usize,
    sources: &mut Sources,
) -> Result<Vec<Request>, Diags> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| {
        Diags::from(located(
            spec,
            key,
            Diagnostic::error(Code::E207, format!("cannot read `{shown}`: {e}")),
            "these inputs",
        ))
    })?;
    if meta.len() > MAX_INPUT_BYTES {
        return Err(located(
            spec,
            key,
            Diagnostic::error(
                Code::E207,
                format!(
                    "`{shown}` is {} bytes; the limit is {MAX_INPUT_BYTES}",
                    meta.len()
                ),
            ),
            "these inputs",
        )
        .into());
    }
    let bytes = std::fs::read(path).map_err(|e| {
        Diags::from(Diagnostic::error(
            Code::E207,
            format!("cannot read `{shown}`: {e}"),
        ))
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => {
            return Err(located(
                spec,
                key,
                Diagnostic::error(Code::E207, format!("`{shown}` is not UTF-8 text")),
                "these inputs",
            )
            .into());
        }
    };
    let file: FileId = sources.add(shown.clone(), text);
    let vocab = vocab(spec);
    let mut tokenizer: Option<tokenizers::Tokenizer> = None;
    let mut out = Vec::new();
    let mut diags = Diags::default();
    let body = sources.text(file).to_string();
    let mut offset = 0;
    for line in body.split('\n') {
        let start = offset;
        offset += line.len() + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let span = start..start + line.len();
        let err = |msg: String, label: &str| {
            Diagnostic::error(Code::E207, msg).at(file, span.clone(), label.to_string())
        };
        let v: serde_json::Value = match serde_json::from_str(trimmed) {
            Ok(v) => v,
            Err(e) => {
                diags.push(err(format!("not a JSON object: {e}"), "this line"));
                continue;
            }
        };
        let Some(obj) = v.as_object() else {
            diags.push(err(
                "a request is a JSON object like {\"ids\": [101, 2023, 102]}".into(),
                "this line",
            ));
            continue;
        };
        let text_field = obj.get("text").and_then(|t| t.as_str()).map(str::to_string);
        let label = match obj.get("label") {
            None | Some(serde_json::Value::Null) => None,
            Some(l) if l.is_i64() => l.as_i64().map(Label::Class),
            Some(l) if l.is_number() => l.as_f64().map(Label::Value),
            Some(_) => {
                diags.push(err(
                    "`label` must be an integer class or a number".into(),
                    "this line",
                ));
                continue;
            }
        };
        let ids: Vec<u64> = match obj.get("ids") {
            Some(serde_json::Value::Array(a)) => {
                let ids: Option<Vec<u64>> = a.iter().map(|x| x.as_u64()).collect();
                match ids {
                    Some(ids) => ids,
                    None => {
                        diags.push(err(
                            "`ids` must be a list of non-negative integers".into(),
                            "this line",
                        ));
                        continue;
                    }
                }
            }
            Some(_) => {
                diags.push(err(
                    "`ids` must be a list of non-negative integers".into(),
                    "this line",
                ));
                continue;
            }
            None => match &text_field {
                None => {
                    diags.push(err("a request needs `ids` or `text`".into(), "this line"));
                    continue;
                }
                Some(t) => {
                    if tokenizer.is_none() {
                        let Some(tp) = tokenizer_path(spec) else {
                            diags.push(
                                Diagnostic::error(Code::E209, "this request has only `text`, and no model of the workload has a tokenizer")
                                    .at(file, span.clone(), "no `ids`")
                                    .help("give `ids`, or use a checkpoint with a `tokenizer.json` beside it"),
                            );
                            return Err(diags);
                        };
                        match tokenizers::Tokenizer::from_file(&tp) {
                            Ok(mut tk) => {
                                tk.with_padding(None);
                                let _ = tk.with_truncation(None);
                                tokenizer = Some(tk);
                            }
                            Err(e) => {
                                diags.push(
                                    Diagnostic::error(
                                        Code::E209,
                                        format!("cannot load tokenizer `{}`: {e}", tp.display()),
                                    )
                                    .at(
                                        file,
                                        span.clone(),
                                        "this request needs it",
                                    ),
                                );
                                return Err(diags);
                            }
                        }
                    }
                    let Some(tk) = tokenizer.as_ref() else {
                        return Err(diags);
                    };
                    match tk.encode(t.as_str(), true) {
                        Ok(enc) => enc.get_ids().iter().map(|&i| i as u64).collect(),
                        Err(e) => {
                            diags.push(
                                Diagnostic::error(Code::E209, format!("tokenizing failed: {e}"))
                                    .at(file, span.clone(), "this text"),
                            );
                            continue;
                        }
                    }
                }
            },
        };
        if ids.is_empty() {
            diags.push(
                Diagnostic::error(Code::E208, "a request with no tokens").at(
                    file,
                    span.clone(),
                    "empty `ids`",
                ),
            );
            continue;
        }
        if ids.len() > seq {
            diags.push(
                Diagnostic::error(
                    Code::E208,
                    format!(
                        "a request of {} tokens; the workload's `seq` is {seq}",
                        ids.len()
                    ),
                )
                .at(file, span.clone(), "too long")
                .help("raise the workload's `seq` (up to the model's `max_seq`)"),
            );
            continue;
        }
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            diags.push(
                Diagnostic::error(
                    Code::E208,
                    format!("token id {bad} is outside the vocabulary of {vocab}"),
                )
                .at(file, span.clone(), "this request"),
            );
            continue;
        }
        let len = ids.len();
        let mut padded: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        padded.resize(seq, 0);
        out.push(Request {
            ids: padded,
            len,
            text: text_field,
            label,
        });
        if diags.len() > crate::diag::MAX_REPORTED {
            break;
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_requests_are_framed_and_reproducible() {
        let a = synthetic(3, 4, 16, 30522);
        assert_eq!(a, synthetic(3, 4, 16, 30522));
        assert_ne!(a, synthetic(4, 4, 16, 30522));
        for r in &a {
            assert_eq!(r.ids.len(), 16);
            assert_eq!((r.ids[0], r.ids[15]), (101, 102));
            assert!(r.ids.iter().all(|&i| i < 30522));
            assert_eq!(r.mask(), vec![1.0; 16]);
        }
        // Tiny vocabularies stay in range.
        assert!(
            synthetic(1, 2, 8, 5)
                .iter()
                .all(|r| r.ids.iter().all(|&i| i < 5))
        );
    }
}
