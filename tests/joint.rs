//! Joint regeneration (`regenerate = joint`): the generator trains one
//! shared trunk and every task's branch together for a group of tasks
//! (mgen-train, candle), which lets the group share deeper than frozen
//! trunks with retrained branches can; budgets are re-measured by the
//! reference executor, the training is memoised on disk, and the result is
//! deterministic.

mod common;

use common::{agreeing, json_of, mgen};
use mgen::diag::Sources;
use mgen::reference::Plan;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const HW: &str = "hardware hw { crossbar = 64 x 64; chips = 1; tiles = 64; cores_per_tile = 4; crossbars_per_core = 8; }\n";
const MODEL: &str = "layers = 6; hidden = 64; heads = 4; ffn = 128; vocab = 200; max_seq = 16;";

/// Reads a safetensors file's f32 tensors.
fn read(p: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, (v.shape().to_vec(), vals))
        })
        .collect()
}

fn save(p: &Path, t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .iter()
        .map(|(n, (s, v))| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (n.clone(), v.unwrap())
        })
        .collect();
    std::fs::write(p, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

fn compile_weights(dir: &Path, name: &str, spec: &str, passes: &str) -> PathBuf {
    let f = dir.join(format!("{name}.mgen"));
    std::fs::write(&f, spec).unwrap();
    let out = dir.join(name);
    let (code, _, err) = mgen(&[
        "compile",
        f.to_str().unwrap(),
        "--passes",
        passes,
        "--emit",
        "weights",
        "-o",
        out.to_str().unwrap(),
        "--cache",
        "none",
    ]);
    assert_eq!(code, 0, "{err}");
    out
}

/// Two task checkpoints of a six-layer base `m` that drifted apart
/// symmetrically from a common fine-tune `mid` (itself far from `m`):
/// `A = mid + δ`, `B = mid − δ` in every encoder tensor, the base's
/// embeddings in both. Neither `m` nor either task is a good trunk for
/// the other, their mean is: the case joint training is for (real
/// fine-tunes of one checkpoint also share a common shift).
fn symmetric_tasks(dir: &Path) {
    let w1 = compile_weights(
        dir,
        "w1",
        &format!(
            "{HW}model m {{ {MODEL} weights = synthetic(seed = 5); }}\n\
             task mid {{ base = m; head = classify(3); weights = finetuned(seed = 9, drift = 0.5); }}\n\
             workload w {{ requests = 2; seq = 12; inputs = synthetic(seed = 5); tasks = [mid]; }}\n"
        ),
        "default",
    );
    let w2 = compile_weights(
        dir,
        "w2",
        &format!(
            "{HW}model mm {{ {MODEL} weights = \"w1/mid.safetensors\"; }}\n\
             task a {{ base = mm; head = classify(4, pool = mean); weights = finetuned(seed = 6, drift = 0.3); }}\n\
             workload w {{ requests = 2; seq = 12; inputs = synthetic(seed = 5); tasks = [a]; }}\n"
        ),
        "baseline",
    );
    let (m, mid, a) = (
        read(&w1.join("m.safetensors")),
        read(&w1.join("mid.safetensors")),
        read(&w2.join("a.safetensors")),
    );
    let (mut ta, mut tb) = (BTreeMap::new(), BTreeMap::new());
    for (name, (shape, v)) in &a {
        let (x, y) = if name.starts_with("embeddings.") {
            (m[name].1.clone(), m[name].1.clone())
        } else if name.starts_with("encoder.") {
            let c = &mid[name].1;
            (
                v.clone(),
                c.iter().zip(v).map(|(c, v)| 2.0 * c - v).collect(),
            )
        } else {
            (v.clone(), v.clone())
        };
        ta.insert(name.clone(), (shape.clone(), x));
        tb.insert(name.clone(), (shape.clone(), y));
    }
    save(&dir.join("A.safetensors"), &ta);
    save(&dir.join("B.safetensors"), &tb);
}

/// The two symmetric tasks under 90% agreement budgets, with `regen`.
fn write(dir: &Path, name: &str, regen: &str) -> PathBuf {
    let p = dir.join(name);
    let task = |t: &str, f: &str| {
        format!(
            "task {t} {{ base = m; head = classify(4, pool = mean); weights = \"{f}\"; keep agreement >= 90%; regenerate = {regen}; }}\n"
        )
    };
    let spec = format!(
        "{HW}model m {{ {MODEL} weights = synthetic(seed = 5); }}\n{}{}\
         workload w {{ requests = 96; seq = 12; inputs = synthetic(seed = 5); tasks = [a, b]; }}\n",
        task("a", "A.safetensors"),
        task("b", "B.safetensors")
    );
    std::fs::write(&p, spec).unwrap();
    p
}

const BRANCH: &str = "branch(epochs = 6, lr = 1e-3)";
const JOINT: &str = "joint(epochs = 4)";

/// The deepest sharing of any task (blocks computed with others).
fn deepest(s: &mgen::passes::share::Sharing) -> usize {
    s.tasks.iter().map(|t| t.shared_blocks).max().unwrap_or(0)
}

/// Where `branch` shares `k` blocks, `joint` shares more (4 against 3 at
/// the time of writing; both sit near the 90% edge on 32 requests),
/// every budget holds when the reference executor re-measures the
/// generated model (at the pass's own figures) and on 64 requests neither
/// saw, and the tree saves more energy.
#[test]
fn a_jointly_trained_trunk_is_shared_deeper_than_retrained_branches() {
    let dir = tempfile::tempdir().unwrap();
    symmetric_tasks(dir.path());
    let branch = write(dir.path(), "branch.mgen", BRANCH);
    let joint = write(dir.path(), "joint.mgen", JOINT);
    let (mb, b_arts, store_b, _) = common::compiled(&branch, "default");
    let k = deepest(b_arts.sharing.as_ref().unwrap());
    let (m, arts, store, cx) = common::compiled(&joint, "default");
    let s = arts.sharing.as_ref().unwrap();
    let j = &s.joint[0];
    eprintln!(
        "branch shares {k} blocks; joint: {}",
        mgen::passes::share::text(s)
    );
    assert!(j.adopted, "{j:?}");
    assert!(deepest(s) > k, "joint {} vs branch {k}", deepest(s));
    let c = j.chosen.as_ref().unwrap();
    assert!(c.steps > 0 && c.loss_after < c.loss_before, "{j:?}");
    for t in &s.tasks {
        assert_eq!(
            (t.regenerate, t.source.as_str()),
            ("joint", "joint"),
            "{t:?}"
        );
    }
    // Every budget holds on the executor, at the figure the pass reported.
    let (exact, _, store_x, _) = common::compiled(&joint, "exact");
    let got = common::outputs(&m, store, &cx);
    let own = common::outputs(&exact, store_x, &cx);
    for (t, ts) in s.tasks.iter().enumerate() {
        let task = &m.spec.tasks[m.spec.workload.tasks[t]];
        for (b, reported) in task.budgets.iter().zip(&ts.measured) {
            let x = mgen::passes::share::measure(b, &task.head, &got[t], &own[t], &[]);
            assert!(x.holds, "{}: {x:?}", ts.name);
            assert_eq!(x.value, reported.value, "{}", ts.name);
        }
    }
    // Held out: the workload's requests after the 32 calibration ones.
    let mut sources = Sources::new();
    let mut batch = mgen::data::load(&m.spec, &mut sources).unwrap();
    batch
        .requests
        .drain(..mgen::passes::SHARE_CALIBRATION_REQUESTS);
    let jo = Plan::new(&m, store).unwrap().run(&batch);
    let bo = Plan::new(&mb, store_b).unwrap().run(&batch);
    let ow = Plan::new(&exact, store_x).unwrap().run(&batch);
    // Each task stays near its 90% budget on them too: within the
    // sampling error of the 32 calibration requests the budget was checked
    // on (±5 points; measured 57/64 and 64/64, where the branch-retrained
    // tree, sharing two blocks fewer, agrees on 62 and 64).
    for t in 0..2 {
        let (j, b) = (
            agreeing(&jo[t].values, &ow[t].values),
            agreeing(&bo[t].values, &ow[t].values),
        );
        eprintln!("task {t}: held-out agreement joint {j}/64, branch {b}/64");
        assert!(j as f64 >= 0.85 * 64.0, "task {t}: {j} of 64");
    }
    let ratio = |a: &mgen::passes::Artifacts| {
        let s = a.sharing.as_ref().unwrap();
        s.unshared_pj / s.shared_pj
    };
    assert!(
        ratio(&arts) > ratio(&b_arts),
        "{} vs {}",
        ratio(&arts),
        ratio(&b_arts)
    );
}

/// The training is kept on disk under `--cache`: the second run trains
/// nothing (the report says `disk`) and writes the same weights; with
/// `--cache none` nothing is written. Weights are bit-identical across
/// thread counts.
#[test]
fn joint_trainings_are_memoised_on_disk_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    symmetric_tasks(dir.path());
    let p = write(dir.path(), "joint.mgen", JOINT);
    let r = p.to_str().unwrap();
    let cache = dir.path().join("cache");
    let c = cache.to_str().unwrap();
    let first = json_of(&["compile", r, "--emit", "sharing", "--json", "--cache", c]);
    assert_eq!(
        first["joint"][0]["chosen"]["cache"], "trained",
        "{}",
        first["joint"]
    );
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert!(!files.is_empty());
    let second = json_of(&["compile", r, "--emit", "sharing", "--json", "--cache", c]);
    assert_eq!(
        second["joint"][0]["chosen"]["cache"], "disk",
        "{}",
        second["joint"]
    );
    assert_eq!(first["tree"], second["tree"]);
    assert_eq!(first["shared_pj"], second["shared_pj"]);
    // Fresh trainings (no cache) with one and two threads: the same bytes.
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let w = dir.path().join(format!("w{threads}"));
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_mgen"))
            .args(["compile", r, "--emit", "weights", "-o", w.to_str().unwrap()])
            .args(["--cache", "none"])
            .env("RAYON_NUM_THREADS", threads)
            .status()
            .unwrap();
        assert!(st.success());
        outs.push(w);
    }
    for f in ["a.safetensors", "b.safetensors"] {
        let x = std::fs::read(outs[0].join(f)).unwrap();
        assert!(x == std::fs::read(outs[1].join(f)).unwrap(), "{f} differs");
    }
}

/// A damaged cache file is a miss: the run trains again and succeeds.
#[test]
fn a_damaged_cache_file_is_trained_again() {
    let dir = tempfile::tempdir().unwrap();
    symmetric_tasks(dir.path());
    let p = write(dir.path(), "joint.mgen", JOINT);
    let r = p.to_str().unwrap();
    let cache = dir.path().join("cache");
    let c = cache.to_str().unwrap();
    let first = json_of(&["compile", r, "--emit", "sharing", "--json", "--cache", c]);
    for f in std::fs::read_dir(&cache).unwrap() {
        let f = f.unwrap().path();
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    }
    let again = json_of(&["compile", r, "--emit", "sharing", "--json", "--cache", c]);
    assert_eq!(again["joint"][0]["chosen"]["cache"], "trained");
    assert_eq!(first["tree"], again["tree"]);
}

/// A cache folder that cannot be created is E105, exit status 1.
#[test]
fn an_unwritable_cache_folder_is_a_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    symmetric_tasks(dir.path());
    let p = write(dir.path(), "joint.mgen", JOINT);
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let c = blocker.join("cache");
    let (code, _, err) = mgen(&[
        "compile",
        p.to_str().unwrap(),
        "--emit",
        "sharing",
        "--cache",
        c.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("E105"), "{err}");
}

/// `--emit weights` writes a jointly trained trunk once, in a file both
/// task files link, and the models read back from the written files
/// compute the generated models' float outputs bit for bit.
#[test]
fn a_joint_trunk_is_written_once_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    symmetric_tasks(dir.path());
    let p = write(dir.path(), "joint.mgen", JOINT);
    let (r, c) = (p.to_str().unwrap(), dir.path().join("cache"));
    let w = dir.path().join("w");
    let (code, _, err) = mgen(&[
        "compile",
        r,
        "--emit",
        "weights",
        "-o",
        w.to_str().unwrap(),
        "--cache",
        c.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let summary = json_of(&[
        "compile",
        r,
        "--emit",
        "sharing",
        "--json",
        "--cache",
        c.to_str().unwrap(),
    ]);
    assert!(
        summary["joint"][0]["adopted"].as_bool().unwrap(),
        "{}",
        summary["joint"]
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.join("weights.json")).unwrap()).unwrap();
    let shared = written["shared"].as_object().unwrap();
    assert_eq!(shared.len(), 1, "{shared:?}");
    let (file, entry) = shared.iter().next().unwrap();
    assert_eq!(entry["tasks"], serde_json::json!(["a", "b"]));
    let trunk = "encoder.layer.0.attention.self.query.weight";
    assert!(read(&w.join(file)).contains_key(trunk));
    for t in ["a", "b"] {
        assert_eq!(written["tasks"][t]["links"], serde_json::json!([file]));
        let own = read(&w.join(format!("{t}.safetensors")));
        assert!(!own.contains_key(trunk), "{t} holds the trunk again");
        assert!(
            own.contains_key("encoder.layer.5.output.dense.weight"),
            "{t}: its branch"
        );
    }
    let task = |t: &str| {
        format!(
            "task {t} {{ base = m; head = classify(4, pool = mean); weights = \"w/{t}.safetensors\"; }}\n"
        )
    };
    let back = dir.path().join("back.mgen");
    let spec = format!(
        "{HW}model m {{ {MODEL} weights = \"w/m.safetensors\"; }}\n{}{}\
         workload w {{ requests = 96; seq = 12; inputs = synthetic(seed = 5); tasks = [a, b]; }}\n",
        task("a"),
        task("b")
    );
    std::fs::write(&back, spec).unwrap();
    let outputs = |args: &[&str], out: &Path| {
        let mut all = vec![
            "run",
            "--reference",
            "--dump-outputs",
            out.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let (code, _, err) = mgen(&all);
        assert_eq!(code, 0, "{err}");
        ["a", "b"].map(|t| std::fs::read(out.join(format!("{t}.npy"))).unwrap())
    };
    let generated = outputs(&[r, "--cache", c.to_str().unwrap()], &dir.path().join("o1"));
    let read_back = outputs(
        &[back.to_str().unwrap(), "--baseline"],
        &dir.path().join("o2"),
    );
    assert!(generated == read_back, "the read-back models differ");
}

/// `joint(layers = K)` trains once, at depth K + 1 (the embeddings and K
/// encoder layers), instead of searching: the report lists that one trial.
#[test]
fn a_fixed_trunk_depth_trains_once_at_that_depth() {
    let dir = tempfile::tempdir().unwrap();
    symmetric_tasks(dir.path());
    let p = write(dir.path(), "fixed.mgen", "joint(epochs = 1, layers = 2)");
    let r = p.to_str().unwrap();
    let s = json_of(&[
        "compile", r, "--emit", "sharing", "--json", "--cache", "none",
    ]);
    let trials = s["joint"][0]["trials"].as_array().unwrap();
    let depths: Vec<u64> = trials
        .iter()
        .map(|t| t["depth"].as_u64().unwrap())
        .collect();
    assert!(
        !depths.is_empty() && depths.iter().all(|&d| d == 3),
        "{}",
        s["joint"]
    );
}
