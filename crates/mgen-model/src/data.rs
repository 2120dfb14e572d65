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
//!
//! Invariants: a file is read line by line and only as far as needed — at
//! most the requests its use asks for (the workload's `requests`,
//! [`CALIBRATE_FILE_REQUESTS`], [`TRAIN_FILE_REQUESTS`],
//! [`TEST_FILE_REQUESTS`]), at most
//! [`MAX_INPUT_BYTES`] bytes in all and [`MAX_LINE_BYTES`] a line — so the
//! file's size does not matter. A file with no requests, fewer than the
//! workload asks for, or labels that do not fit the budgets measured on it
//! is a located diagnostic ([`load_files`]). A task's held-out `test` set
//! is labelled throughout and shares no request (token ids) with the
//! task's training or calibration inputs ([`check_test`]).

use crate::diag::{Code, Diagnostic, Diags, FileId, Sources};
use crate::spec::{InputSource, Spec, WeightSource};
use crate::weights::rng::Rng;
use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// At most this many bytes of one inputs file are read (the file may be
/// larger: reading stops once the requests its use needs are read).
pub const MAX_INPUT_BYTES: u64 = 1 << 30;
/// A line (one request) longer than this is refused before it is parsed.
pub const MAX_LINE_BYTES: u64 = 1 << 20;
/// At most this many requests of a task's `calibrate` file are read: a file
/// is chosen for the purpose, and more requests make a budget less noisy
/// (at a proportional search cost).
pub const CALIBRATE_FILE_REQUESTS: usize = 512;
/// At most this many requests of a `train` file are read (for `head` and
/// `branch` regeneration and for `mgen finetune`).
pub const TRAIN_FILE_REQUESTS: usize = 2048;
/// At most this many requests of a `train` file are read for `regenerate =
/// joint`, the task's own fine-tuning data ...
pub const JOINT_TRAIN_FILE_REQUESTS: usize = 16384;
/// ... and at most as many as keep its embeddings activations (`requests ×
/// seq × hidden`, cached for the training) within this many f32 values
/// (1 GiB).
pub const JOINT_TRAIN_VALUES: u64 = 1 << 28;

/// The most requests of task `t`'s `train` file its regeneration reads.
pub fn train_file_requests(spec: &Spec, t: usize, seq: usize) -> usize {
    let task = &spec.tasks[t];
    match task.regenerate {
        crate::spec::Regenerate::Joint(_) => {
            let per = (seq as u64).max(1) * spec.models[task.base].hidden.max(1);
            JOINT_TRAIN_FILE_REQUESTS.min((JOINT_TRAIN_VALUES / per).max(1) as usize)
        }
        _ => TRAIN_FILE_REQUESTS,
    }
}
/// At most this many requests of a task's held-out `test` file are read
/// (each is simulated through the baseline's and mgen's programs).
pub const TEST_FILE_REQUESTS: usize = 512;
/// Synthetic training inputs of a task with `regenerate = head` and no
/// `train` file: this many requests from `synthetic(seed = S)` (S given, or
/// derived from the task's name).
pub const TRAIN_REQUESTS: usize = 64;
/// The same for `regenerate = branch`, which trains far more parameters
/// than a head (with 64 requests a branch overfits them: its training loss
/// falls 30-fold while its calibration agreement does not move).
pub const BRANCH_TRAIN_REQUESTS: usize = 512;
/// At most this many requests of the workload's inputs are the calibration
/// inputs the `share` pass measures budgets on (for tasks without a
/// `calibrate` file).
pub const SHARE_CALIBRATION_REQUESTS: usize = 32;
/// The workload's `requests × seq` may not exceed this many tokens (the
/// padded ids are allocated before anything else runs).
pub const MAX_BATCH_TOKENS: u64 = 1 << 28;
/// Regression labels must be smaller than this in magnitude (so sums of
/// squares over a calibration set stay finite).
pub const MAX_LABEL_MAGNITUDE: f64 = 1e100;

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

/// Labels diagnostics with this file id until the file is added to the
/// [`Sources`] (the text is known only once reading stops).
const PENDING: FileId = usize::MAX;

fn located(spec: &Spec, key: &str, d: Diagnostic, label: &str) -> Diagnostic {
    match spec.loc(key) {
        Some(l) => d.at(l.file, l.span.clone(), label),
        None => d,
    }
}

/// The workload's `requests × seq`, checked against [`MAX_BATCH_TOKENS`].
fn check_batch_size(spec: &Spec) -> Result<(), Diags> {
    let tokens = spec.workload.requests.saturating_mul(spec.workload.seq);
    if tokens <= MAX_BATCH_TOKENS {
        return Ok(());
    }
    let d = Diagnostic::error(
        Code::E019,
        format!(
            "the workload holds {} requests x seq {} = {tokens} tokens; mgen allocates batches of at most {MAX_BATCH_TOKENS}",
            spec.workload.requests, spec.workload.seq
        ),
    );
    let key = format!("workload {}.requests", spec.workload.name);
    Err(located(spec, &key, d, "too many requests for this `seq`").into())
}

/// Loads the workload's inputs (a file is read up to `requests` requests).
pub fn load(spec: &Spec, sources: &mut Sources) -> Result<Batch, Diags> {
    check_batch_size(spec)?;
    let seq = spec.workload.seq as usize;
    let n = spec.workload.requests as usize;
    let requests = match &spec.workload.inputs {
        InputSource::Synthetic { seed } => synthetic(*seed, n, seq, vocab(spec)),
        InputSource::File { path } => {
            let full = Path::new(&spec.root).join(path);
            let reqs = load_jsonl(spec, &full, &workload_key(spec), seq, n, sources)?;
            check_count(spec, &full, &workload_key(spec), reqs.len(), n)?;
            reqs
        }
    };
    Ok(Batch { seq, requests })
}

fn workload_key(spec: &Spec) -> String {
    format!("workload {}.inputs", spec.workload.name)
}

/// A file's request count against what its use needs (`want`, or at
/// least one): E207 at the use's line (at `requests` when the workload asks
/// for more than the file has).
fn check_count(spec: &Spec, path: &Path, key: &str, got: usize, want: usize) -> Result<(), Diags> {
    let shown = path.display();
    if got == 0 {
        let d = Diagnostic::error(Code::E207, format!("`{shown}` holds no requests"))
            .help("an inputs file needs at least one request, one JSON object a line");
        return Err(located(spec, key, d, "these inputs").into());
    }
    if got < want {
        let d = Diagnostic::error(
            Code::E207,
            format!("`{shown}` holds {got} requests; the workload asks for {want}"),
        );
        let key = format!("workload {}.requests", spec.workload.name);
        return Err(located(spec, &key, d, "more requests than the file has").into());
    }
    Ok(())
}

/// Requests read from a file, with each one's line span in the file and
/// its line number (from 1).
struct Loaded {
    requests: Vec<Request>,
    spans: Vec<Range<usize>>,
    lines: Vec<usize>,
    file: FileId,
}

/// Reads a JSON Lines file of requests: at most `max` requests, stopping
/// there (see the module docs for the byte limits). Used for the
/// workload's inputs and for `calibrate` and `train` files.
pub fn load_jsonl(
    spec: &Spec,
    path: &Path,
    key: &str,
    seq: usize,
    max: usize,
    sources: &mut Sources,
) -> Result<Vec<Request>, Diags> {
    read_requests(spec, path, key, seq, max, sources).map(|l| l.requests)
}

/// What reading a file's lines gave.
#[derive(Default)]
struct Lines {
    body: String,
    requests: Vec<Request>,
    spans: Vec<Range<usize>>,
    lines: Vec<usize>,
    diags: Diags,
}

fn read_requests(
    spec: &Spec,
    path: &Path,
    key: &str,
    seq: usize,
    max: usize,
    sources: &mut Sources,
) -> Result<Loaded, Diags> {
    let shown = path.display().to_string();
    let cannot = |e: &dyn std::fmt::Display| {
        let d = Diagnostic::error(Code::E207, format!("cannot read `{shown}`: {e}"));
        Diags::from(located(spec, key, d, "these inputs"))
    };
    let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut parser = Parser {
        spec,
        seq,
        vocab: vocab(spec),
        tokenizer: None,
    };
    let mut lines = Lines::default();
    let mut read: u64 = 0;
    let mut line_no = 0usize;
    let mut buf = Vec::new();
    while lines.requests.len() < max && lines.diags.len() <= crate::diag::MAX_REPORTED {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| cannot(&e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        read = read.saturating_add(n as u64);
        let start = lines.body.len();
        if n as u64 > MAX_LINE_BYTES {
            let shown_part = String::from_utf8_lossy(&buf[..200.min(buf.len())]).into_owned();
            lines.body.push_str(&shown_part);
            lines.diags.push(
                Diagnostic::error(
                    Code::E207,
                    format!(
                        "a line longer than {MAX_LINE_BYTES} bytes; a request is one short line"
                    ),
                )
                .at(PENDING, start..start + shown_part.len(), "this line"),
            );
            break;
        }
        if read > MAX_INPUT_BYTES {
            let d = Diagnostic::error(
                Code::E207,
                format!(
                    "read {MAX_INPUT_BYTES} bytes of `{shown}` without finding the {max} requests needed"
                ),
            );
            lines.diags.push(located(spec, key, d, "these inputs"));
            break;
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.to_string(),
            Err(_) => {
                let t = String::from_utf8_lossy(&buf).into_owned();
                lines.body.push_str(&t);
                let span = start..start + t.trim_end().len();
                let msg = format!("`{shown}` is not UTF-8 text");
                lines
                    .diags
                    .push(Diagnostic::error(Code::E207, msg).at(PENDING, span, "this line"));
                continue;
            }
        };
        lines.body.push_str(&text);
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let span = start..start + line.len();
        match parser.parse(line, &span) {
            Ok(None) => {}
            Ok(Some(r)) => {
                lines.requests.push(r);
                lines.spans.push(span);
                lines.lines.push(line_no);
            }
            Err((d, fatal)) => {
                lines.diags.push(d);
                if fatal {
                    break;
                }
            }
        }
    }
    let file = sources.add(shown, std::mem::take(&mut lines.body));
    for d in lines.diags.0.iter_mut() {
        for l in d.labels.iter_mut().filter(|l| l.file == PENDING) {
            l.file = file;
        }
    }
    if !lines.diags.is_empty() {
        return Err(lines.diags);
    }
    Ok(Loaded {
        requests: lines.requests,
        spans: lines.spans,
        lines: lines.lines,
        file,
    })
}

/// Parses request lines (holding the tokenizer once one is needed).
struct Parser<'a> {
    spec: &'a Spec,
    seq: usize,
    vocab: u64,
    tokenizer: Option<tokenizers::Tokenizer>,
}

/// A line's diagnostic, and whether reading should stop.
type LineError = (Diagnostic, bool);

impl Parser<'_> {
    /// One line: `None` when blank.
    fn parse(&mut self, line: &str, span: &Range<usize>) -> Result<Option<Request>, LineError> {
        let err = |msg: &str| {
            let d = Diagnostic::error(Code::E207, msg.to_string());
            (d.at(PENDING, span.clone(), "this line"), false)
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let v: serde_json::Value =
            serde_json::from_str(trimmed).map_err(|e| err(&format!("not a JSON object: {e}")))?;
        let Some(obj) = v.as_object() else {
            return Err(err(
                "a request is a JSON object like {\"ids\": [101, 2023, 102]}",
            ));
        };
        let text = obj.get("text").and_then(|t| t.as_str()).map(str::to_string);
        let label = match obj.get("label") {
            None | Some(serde_json::Value::Null) => None,
            Some(l) if l.is_i64() => l.as_i64().map(Label::Class),
            Some(l) if l.is_number() => l.as_f64().map(Label::Value),
            Some(_) => return Err(err("`label` must be an integer class or a number")),
        };
        let ids = match obj.get("ids") {
            Some(ids) => self
                .ids(ids, span)
                .ok_or_else(|| err("`ids` must be a list of non-negative integers"))??,
            None => match &text {
                None => return Err(err("a request needs `ids` or `text`")),
                Some(t) => self.tokenize(t, span)?,
            },
        };
        let len = ids.len();
        let mut padded: Vec<u32> = ids;
        padded.resize(self.seq, 0);
        Ok(Some(Request {
            ids: padded,
            len,
            text,
            label,
        }))
    }

    /// `ids`: `None` when not a list of non-negative integers; an E208
    /// when it does not fit the workload.
    fn ids(
        &self,
        v: &serde_json::Value,
        span: &Range<usize>,
    ) -> Option<Result<Vec<u32>, LineError>> {
        let a = v.as_array()?;
        let ids: Vec<u64> = a.iter().map(|x| x.as_u64()).collect::<Option<_>>()?;
        Some(self.fit(ids, span))
    }

    /// Token ids against the workload's `seq` and the vocabulary.
    fn fit(&self, ids: Vec<u64>, span: &Range<usize>) -> Result<Vec<u32>, LineError> {
        let e208 = |msg: String, label: &str| {
            let d = Diagnostic::error(Code::E208, msg);
            (d.at(PENDING, span.clone(), label.to_string()), false)
        };
        if ids.is_empty() {
            return Err(e208("a request with no tokens".into(), "empty `ids`"));
        }
        if ids.len() > self.seq {
            let msg = format!(
                "a request of {} tokens; the workload's `seq` is {}",
                ids.len(),
                self.seq
            );
            let (d, f) = e208(msg, "too long");
            return Err((
                d.help("raise the workload's `seq` (up to the model's `max_seq`)"),
                f,
            ));
        }
        if let Some(bad) = ids.iter().find(|&&i| i >= self.vocab) {
            let msg = format!("token id {bad} is outside the vocabulary of {}", self.vocab);
            return Err(e208(msg, "this request"));
        }
        // Every id is below the vocabulary (at most 2^24): it fits a u32.
        Ok(ids.into_iter().map(|i| i as u32).collect())
    }

    /// Tokenises a text-only request (loading the tokenizer on first use).
    fn tokenize(&mut self, text: &str, span: &Range<usize>) -> Result<Vec<u32>, LineError> {
        let e209 = |msg: String, label: &str| {
            Diagnostic::error(Code::E209, msg).at(PENDING, span.clone(), label.to_string())
        };
        if self.tokenizer.is_none() {
            let Some(tp) = tokenizer_path(self.spec) else {
                let d = e209(
                    "this request has only `text`, and no model of the workload has a tokenizer"
                        .into(),
                    "no `ids`",
                );
                let d = d.help("give `ids`, or use a checkpoint with a `tokenizer.json` beside it");
                return Err((d, true));
            };
            match tokenizers::Tokenizer::from_file(&tp) {
                Ok(mut tk) => {
                    tk.with_padding(None);
                    let _ = tk.with_truncation(None);
                    self.tokenizer = Some(tk);
                }
                Err(e) => {
                    let msg = format!("cannot load tokenizer `{}`: {e}", tp.display());
                    return Err((e209(msg, "this request needs it"), true));
                }
            }
        }
        let Some(tk) = self.tokenizer.as_ref() else {
            return Err((e209("no tokenizer".into(), "this text"), true));
        };
        match tk.encode(text, true) {
            Ok(enc) => self.fit(enc.get_ids().iter().map(|&i| i as u64).collect(), span),
            Err(e) => Err((e209(format!("tokenizing failed: {e}"), "this text"), false)),
        }
    }
}

/// Every inputs file of a spec, loaded and checked ([`load_files`]).
pub struct Files {
    /// The workload's requests (synthetic or from its `inputs` file).
    pub workload: Batch,
    /// Per workload task: its `calibrate` file's requests, if it names one.
    pub calibrate: Vec<Option<Vec<Request>>>,
    /// Per workload task: its `train` file's requests, if it names one.
    pub train: Vec<Option<Vec<Request>>>,
    /// Per workload task: its held-out `test` file's requests (every one
    /// labelled), if it names one.
    pub test: Vec<Option<Vec<Request>>>,
}

/// One use of an inputs file.
struct Use {
    path: PathBuf,
    key: String,
    max: usize,
}

/// Loads every inputs file the spec names — the workload's `inputs`, each
/// workload task's `calibrate`, `train` and `test` — each file once (up
/// to the most requests any of its uses needs), and checks each use: the
/// workload's request count, at least one request in every file, the
/// labels of the requests each task's budgets and training use
/// ([`check_labels`]), and each held-out set ([`check_test`]). Every
/// problem is reported, each once.
pub fn load_files(spec: &Spec, sources: &mut Sources) -> Result<Files, Diags> {
    check_batch_size(spec)?;
    let seq = spec.workload.seq as usize;
    let n = spec.workload.requests as usize;
    let root = Path::new(&spec.root);
    let workload_use = match &spec.workload.inputs {
        InputSource::File { path } => Some(Use {
            path: root.join(path),
            key: workload_key(spec),
            max: n,
        }),
        InputSource::Synthetic { .. } => None,
    };
    let mut calibrate_uses = Vec::new();
    let mut train_uses = Vec::new();
    let mut test_uses = Vec::new();
    for &t in &spec.workload.tasks {
        let task = &spec.tasks[t];
        calibrate_uses.push(task.calibrate.as_ref().map(|p| Use {
            path: root.join(p),
            key: format!("task {}.calibrate", task.name),
            max: CALIBRATE_FILE_REQUESTS,
        }));
        train_uses.push(match &task.train {
            Some(InputSource::File { path }) => Some(Use {
                path: root.join(path),
                key: format!("task {}.train", task.name),
                max: train_file_requests(spec, t, seq),
            }),
            _ => None,
        });
        test_uses.push(task.test.as_ref().map(|p| Use {
            path: root.join(p),
            key: format!("task {}.test", task.name),
            max: TEST_FILE_REQUESTS,
        }));
    }
    let all = workload_use.iter().chain(calibrate_uses.iter().flatten());
    let all = all.chain(train_uses.iter().flatten());
    let all: Vec<&Use> = all.chain(test_uses.iter().flatten()).collect();
    let mut diags = Diags::default();
    let loaded = read_each_once(spec, &all, seq, sources, &mut diags);
    let workload = match (&spec.workload.inputs, &workload_use) {
        (InputSource::File { .. }, Some(u)) => take(spec, &loaded, u, n, &mut diags),
        (InputSource::Synthetic { seed }, _) => Some((synthetic(*seed, n, seq, vocab(spec)), None)),
        _ => None,
    };
    let mut calibrate = Vec::new();
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (i, &t) in spec.workload.tasks.iter().enumerate() {
        let c = calibrate_uses[i].as_ref();
        calibrate.push(c.and_then(|u| {
            checked(spec, &loaded, u, &mut diags, |r, at| {
                check_labels(spec, t, r, at)
            })
        }));
        let tr = train_uses[i].as_ref();
        train.push(tr.and_then(|u| {
            checked(spec, &loaded, u, &mut diags, |r, at| {
                check_train_labels(spec, t, r, at)
            })
        }));
        if let (None, Some((w, Some(l)))) = (c, &workload) {
            let used = w.len().min(SHARE_CALIBRATION_REQUESTS);
            let key = workload_key(spec);
            let at = Located {
                key: &key,
                file: l.file,
                spans: &l.spans[..used],
                lines: &l.lines[..used],
            };
            keep(check_labels(spec, t, &w[..used], &at), &mut diags);
        }
        let held = test_uses[i].as_ref().and_then(|u| {
            // What the generator saw of this task: its calibration inputs
            // (its file, else the workload's first requests) and its
            // training inputs (its file, else the synthetic ones it
            // regenerates on); `None` when a file failed to load (that is
            // reported already).
            let calibration = match c {
                Some(_) => calibrate[i].as_deref(),
                None => workload
                    .as_ref()
                    .map(|(w, _)| &w[..w.len().min(SHARE_CALIBRATION_REQUESTS)]),
            };
            let synthetic = synthetic_training(spec, t);
            let training = match tr {
                Some(_) => train[i].as_deref(),
                None => Some(synthetic.as_deref().unwrap_or(&[])),
            };
            let seen = Seen {
                calibration,
                calibrate_file: c.is_some(),
                training,
                train_file: tr.is_some(),
            };
            checked(spec, &loaded, u, &mut diags, |r, at| {
                check_test(spec, t, r, at, &seen)
            })
        });
        test.push(held);
    }
    diags.dedup();
    match workload {
        Some((requests, _)) if diags.is_empty() => Ok(Files {
            workload: Batch { seq, requests },
            calibrate,
            train,
            test,
        }),
        _ => Err(diags),
    }
}

/// The synthetic training inputs of workload-listed task `t`: with
/// `regenerate = head` or `branch` and no `train` file, [`TRAIN_REQUESTS`]
/// or [`BRANCH_TRAIN_REQUESTS`] requests from `synthetic(seed = S)` (S the
/// `train` seed, or derived from the task's name); `None` otherwise.
pub fn synthetic_training(spec: &Spec, t: usize) -> Option<Vec<Request>> {
    use crate::spec::Regenerate;
    let task = &spec.tasks[t];
    let seed = match (&task.regenerate, &task.train) {
        (Regenerate::None, _) | (_, Some(InputSource::File { .. })) => return None,
        (_, Some(InputSource::Synthetic { seed })) => *seed,
        (_, None) => crate::weights::seed_of_name(&format!("train:{}", task.name)),
    };
    let count = match task.regenerate {
        Regenerate::Branch(_) | Regenerate::Joint(_) => BRANCH_TRAIN_REQUESTS,
        _ => TRAIN_REQUESTS,
    };
    let seq = spec.workload.seq as usize;
    Some(synthetic(seed, count, seq, spec.models[task.base].vocab))
}

/// Whether `r` is Ok; its diagnostics go to `diags`.
fn keep(r: Result<(), Diags>, diags: &mut Diags) -> bool {
    match r {
        Ok(()) => true,
        Err(d) => {
            diags.extend(d);
            false
        }
    }
}

/// A use's requests (at most its `max`), if its file was read and holds
/// at least `want` (the workload) or one request.
fn take<'l>(
    spec: &Spec,
    loaded: &'l BTreeMap<PathBuf, Option<Loaded>>,
    u: &Use,
    want: usize,
    diags: &mut Diags,
) -> Option<(Vec<Request>, Option<&'l Loaded>)> {
    let l = loaded.get(&u.path)?.as_ref()?;
    let ok = keep(
        check_count(spec, &u.path, &u.key, l.requests.len(), want),
        diags,
    );
    ok.then(|| (l.requests.iter().take(u.max).cloned().collect(), Some(l)))
}

/// A `calibrate` or `train` use's requests, if they pass `check`.
fn checked(
    spec: &Spec,
    loaded: &BTreeMap<PathBuf, Option<Loaded>>,
    u: &Use,
    diags: &mut Diags,
    check: impl Fn(&[Request], &Located) -> Result<(), Diags>,
) -> Option<Vec<Request>> {
    let (reqs, l) = take(spec, loaded, u, 1, diags)?;
    let l = l?;
    let at = Located {
        key: &u.key,
        file: l.file,
        spans: &l.spans[..reqs.len()],
        lines: &l.lines[..reqs.len()],
    };
    keep(check(&reqs, &at), diags).then_some(reqs)
}

/// Reads each distinct file of `uses` once, up to the most requests any
/// of its uses needs; a failure's diagnostics go to `diags` (located at
/// the file's first use).
fn read_each_once(
    spec: &Spec,
    uses: &[&Use],
    seq: usize,
    sources: &mut Sources,
    diags: &mut Diags,
) -> BTreeMap<PathBuf, Option<Loaded>> {
    let mut plan: BTreeMap<&PathBuf, (usize, &str)> = BTreeMap::new();
    let mut order = Vec::new();
    for u in uses {
        let e = plan.entry(&u.path).or_insert_with(|| {
            order.push(&u.path);
            (0, u.key.as_str())
        });
        e.0 = e.0.max(u.max);
    }
    let mut loaded = BTreeMap::new();
    for path in order {
        let (max, key) = plan[path];
        let l = match read_requests(spec, path, key, seq, max, sources) {
            Ok(l) => Some(l),
            Err(d) => {
                diags.extend(d);
                None
            }
        };
        loaded.insert(path.clone(), l);
    }
    loaded
}

/// Where a use's requests come from: the `.mgen` attribute and the lines.
pub struct Located<'a> {
    pub key: &'a str,
    pub file: FileId,
    pub spans: &'a [Range<usize>],
    /// Each request's line number in its file (from 1).
    pub lines: &'a [usize],
}

/// Whether a label is of the kind `head` reads: a class index in range for
/// `classify(N)`, a number (of magnitude below [`MAX_LABEL_MAGNITUDE`]) for
/// `regress`. `None` when it fits, else what it should be.
fn label_misfit(head: &crate::spec::Head, l: Label) -> Option<String> {
    use crate::spec::Head;
    match (head, l) {
        (Head::Classify { classes, .. }, Label::Class(c)) if c >= 0 && (c as u64) < *classes => {
            None
        }
        (Head::Classify { classes, .. }, _) => Some(format!(
            "a class index from 0 to {} (the head is classify({classes}))",
            classes.saturating_sub(1)
        )),
        (Head::Regress { .. }, Label::Class(c)) if (c as f64).abs() < MAX_LABEL_MAGNITUDE => None,
        (Head::Regress { .. }, Label::Value(v))
            if v.is_finite() && v.abs() < MAX_LABEL_MAGNITUDE =>
        {
            None
        }
        (Head::Regress { .. }, _) => Some(format!(
            "a number of magnitude below {MAX_LABEL_MAGNITUDE:e} (the head is regress)"
        )),
        (Head::Embed { .. }, _) => None,
    }
}

fn label_diag(spec: &Spec, at: &Located, msg: String, line: Option<(usize, &str)>) -> Diagnostic {
    let d = located(
        spec,
        at.key,
        Diagnostic::error(Code::E207, msg),
        "these inputs",
    );
    match line.and_then(|(i, what)| at.spans.get(i).map(|s| (s.clone(), what))) {
        Some((span, what)) => d.also(at.file, span, what.to_string()),
        None => d,
    }
}

/// The labels of the requests a task's `accuracy` / `pearson` budgets are
/// measured on: every request must carry one of the kind its head reads,
/// and Pearson needs at least two different labels.
pub fn check_labels(spec: &Spec, t: usize, reqs: &[Request], at: &Located) -> Result<(), Diags> {
    use crate::spec::Metric;
    let task = &spec.tasks[t];
    let Some(b) = task
        .budgets
        .iter()
        .find(|b| matches!(b.metric, Metric::Accuracy | Metric::Pearson))
    else {
        return Ok(());
    };
    let metric = b.metric.name();
    let name = &task.name;
    if let Some(i) = reqs.iter().position(|r| r.label.is_none()) {
        let missing = reqs.iter().filter(|r| r.label.is_none()).count();
        let msg = format!(
            "task `{name}` keeps `{metric}` against labels, but {missing} of the {} requests it is measured on carry no label",
            reqs.len()
        );
        let d = label_diag(spec, at, msg, Some((i, "no \"label\"")));
        return Err(d.help("give every line a \"label\"").into());
    }
    if let Some((i, want)) = first_misfit(&task.head, reqs) {
        let msg = format!(
            "task `{name}` keeps `{metric}`, but request {} of its labelled inputs has a label that is not {want}",
            i + 1
        );
        return Err(label_diag(spec, at, msg, Some((i, "this label"))).into());
    }
    let value = |r: &Request| match r.label {
        Some(Label::Class(c)) => c as f64,
        Some(Label::Value(v)) => v,
        None => 0.0,
    };
    if b.metric == Metric::Pearson
        && let Some(first) = reqs.first().map(value)
        && reqs.iter().all(|r| value(r) == first)
    {
        let msg = format!(
            "task `{name}` keeps `pearson`, but every one of the {} requests it is measured on has the label {first}: a correlation with constant labels is undefined",
            reqs.len()
        );
        return Err(label_diag(spec, at, msg, None)
            .help("measure on inputs whose labels vary (at least two different values)")
            .into());
    }
    Ok(())
}

/// The first request whose label does not fit `head`, with what it should be.
fn first_misfit(head: &crate::spec::Head, reqs: &[Request]) -> Option<(usize, String)> {
    reqs.iter()
        .enumerate()
        .find_map(|(i, r)| r.label.and_then(|l| label_misfit(head, l)).map(|w| (i, w)))
}

/// A `train` file's labels: a branch regenerated with a label loss
/// (`labels > 0`) needs labelled requests, and every label given must be
/// of the kind the task's head reads (a label that does not fit would be
/// silently ignored by training).
fn check_train_labels(spec: &Spec, t: usize, reqs: &[Request], at: &Located) -> Result<(), Diags> {
    let task = &spec.tasks[t];
    let Some(o) = task.regenerate.branch().filter(|o| o.labels > 0.0) else {
        return Ok(());
    };
    if reqs.iter().all(|r| r.label.is_none()) {
        let msg = format!(
            "task `{}` mixes in a label loss (`labels = {}`), but its training inputs carry no labels",
            task.name, o.labels
        );
        return Err(label_diag(spec, at, msg, None)
            .note("give the lines a \"label\", or drop `labels` (distillation needs none)")
            .into());
    }
    if let Some((i, want)) = first_misfit(&task.head, reqs) {
        let msg = format!(
            "task `{}` trains on labels, but request {} of its training inputs has a label that is not {want}",
            task.name,
            i + 1
        );
        return Err(label_diag(spec, at, msg, Some((i, "this label"))).into());
    }
    Ok(())
}

/// What the model generator saw of a task, which its held-out set must
/// not contain ([`check_test`]); a set is `None` when it failed to load.
pub struct Seen<'a> {
    pub calibration: Option<&'a [Request]>,
    /// Whether the calibration inputs are the task's `calibrate` file (else
    /// the workload's first requests).
    pub calibrate_file: bool,
    pub training: Option<&'a [Request]>,
    /// Whether the training inputs are the task's `train` file (else
    /// synthetic, or none).
    pub train_file: bool,
}

/// A request's real token ids (its padding left off).
fn real_ids(r: &Request) -> &[u32] {
    &r.ids[..r.len.min(r.ids.len())]
}

/// A task's held-out `test` requests: every one carries a label of the
/// kind its head reads (E207, as a budget measured against labels needs),
/// a regressor's labels vary (E207), and none has the token ids of a
/// request the generator saw — its calibration or training inputs in
/// `seen` — (E017 at the `test` attribute, saying how many overlap and on
/// which line the first one is).
pub fn check_test(
    spec: &Spec,
    t: usize,
    reqs: &[Request],
    at: &Located,
    seen: &Seen,
) -> Result<(), Diags> {
    use crate::spec::Head;
    let task = &spec.tasks[t];
    let name = &task.name;
    if let Some(i) = reqs.iter().position(|r| r.label.is_none()) {
        let missing = reqs.iter().filter(|r| r.label.is_none()).count();
        let msg = format!(
            "task `{name}`'s held-out `test` inputs are scored against labels, but {missing} of the {} requests carry no label",
            reqs.len()
        );
        let d = label_diag(spec, at, msg, Some((i, "no \"label\"")));
        return Err(d
            .help("give every line of a `test` file a \"label\"")
            .into());
    }
    if let Some((i, want)) = first_misfit(&task.head, reqs) {
        let msg = format!(
            "request {} of task `{name}`'s held-out `test` inputs has a label that is not {want}",
            i + 1
        );
        return Err(label_diag(spec, at, msg, Some((i, "this label"))).into());
    }
    if let Head::Regress { .. } = task.head {
        let value = |r: &Request| match r.label {
            Some(Label::Class(c)) => c as f64,
            Some(Label::Value(v)) => v,
            None => 0.0,
        };
        if let Some(first) = reqs.first().map(value)
            && reqs.iter().all(|r| value(r) == first)
        {
            let msg = format!(
                "task `{name}` is scored by Pearson on its held-out `test` inputs, but every one of the {} requests has the label {first}: a correlation with constant labels is undefined",
                reqs.len()
            );
            return Err(label_diag(spec, at, msg, None)
                .help("hold out inputs whose labels vary (at least two different values)")
                .into());
        }
    }
    let mut diags = Diags::default();
    let sets = [
        (
            seen.calibration,
            if seen.calibrate_file {
                "its `calibrate` inputs".to_string()
            } else {
                format!(
                    "its calibration inputs (the workload's first {SHARE_CALIBRATION_REQUESTS} requests)"
                )
            },
        ),
        (
            seen.training,
            if seen.train_file {
                "its `train` inputs".to_string()
            } else {
                "its synthetic training inputs".to_string()
            },
        ),
    ];
    for (set, what) in sets {
        let Some(set) = set.filter(|s| !s.is_empty()) else {
            continue;
        };
        let known: std::collections::HashSet<&[u32]> = set.iter().map(real_ids).collect();
        let overlap: Vec<usize> = (0..reqs.len())
            .filter(|&i| known.contains(real_ids(&reqs[i])))
            .collect();
        let Some(&first) = overlap.first() else {
            continue;
        };
        let line = at.lines.get(first).copied().unwrap_or(first + 1);
        let msg = format!(
            "{} of the {} held-out `test` requests of task `{name}` {} the token ids of a request of {what} (the first on line {line}): the held-out set must be disjoint from the inputs the generator saw",
            overlap.len(),
            reqs.len(),
            if overlap.len() == 1 { "has" } else { "have" }
        );
        let d = located(
            spec,
            at.key,
            Diagnostic::error(Code::E017, msg),
            "these held-out inputs",
        );
        let d = match at.spans.get(first) {
            Some(span) => d.also(at.file, span.clone(), "the first overlapping request"),
            None => d,
        };
        diags.push(d.help("drop those requests from the `test` file"));
    }
    if diags.is_empty() { Ok(()) } else { Err(diags) }
}

/// Opens and checks every inputs file the spec names, as the passes do
/// ([`load_files`]), reporting every problem found.
pub fn check_files(spec: &Spec, sources: &mut Sources) -> Result<(), Diags> {
    load_files(spec, sources).map(|_| ())
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
