//! The block description (`mgen_ir::bert`) is the one BERT topology:
//! lowering emits it, the weight layout lists its tensors, and the
//! tensor-level forward and the branch trainer walk it. These tests check
//! that the three agree exactly on a small synthetic workload: node by node
//! and step by step (ops, tensors, f32 values bit for bit).

use mgen_front::spec::{Head, Spec};
use mgen_front::{spec, syntax};
use mgen_ir::bert::{self, Operand};
use mgen_ir::{Module, NodeId, TaskSet};
use mgen_model::data::{Request, synthetic};
use mgen_model::forward::{self, Req};
use mgen_model::reference::Plan;
use mgen_model::train::Branch;
use mgen_model::weights::{Store, layout};
use mgen_util::diag::Sources;
use ndarray::{ArrayD, Ix2};
use std::collections::HashMap;

/// Every kind of head: CLS and mean pooling, a pooler or none, a
/// classifier or none.
const SPEC: &str = "
hardware hw { crossbar = 64 x 64; chips = 1; tiles = 64; cores_per_tile = 4; crossbars_per_core = 8; }
model m { layers = 2; hidden = 32; heads = 4; ffn = 48; vocab = 60; max_seq = 16; weights = synthetic(seed = 3); }
task a { base = m; head = classify(3); weights = finetuned(seed = 4, drift = 0.2); }
task b { base = m; head = classify(2, pool = mean); weights = finetuned(seed = 5, drift = 0.2); }
task c { base = m; head = regress; weights = finetuned(seed = 6, drift = 0.1); }
task d { base = m; head = embed(cls); weights = finetuned(seed = 7, drift = 0.1); }
task e { base = m; head = embed(mean); weights = finetuned(seed = 8, drift = 0); }
workload w { requests = 4; seq = 10; inputs = synthetic(seed = 5); tasks = [a, b, c, d, e]; }
";

fn lowered() -> (Module, Store) {
    let mut sources = Sources::new();
    let (file, ast) = syntax::parse(&mut sources, "bert.mgen", SPEC.as_bytes(), false);
    let render = |d: mgen_util::diag::Diags, s: &Sources| d.render(s, false);
    let ast = ast.unwrap_or_else(|d| panic!("{}", render(d, &sources)));
    let (spec, _): (Spec, _) = spec::check::check(&ast, file, ".", false)
        .unwrap_or_else(|d| panic!("{}", render(d, &sources)));
    let store = Store::for_spec(&spec).unwrap_or_else(|d| panic!("{}", render(d, &sources)));
    let m = mgen_ir::lower::lower(spec, &sources, &store)
        .unwrap_or_else(|d| panic!("{}", render(d, &sources)));
    (m, store)
}

/// Synthetic requests, some of them padded (so the mask matters).
fn requests(m: &Module) -> Vec<Request> {
    let mut rs = synthetic(9, 3, m.spec.workload.seq as usize, 60);
    rs[1].len = 7;
    rs[2].len = 4;
    rs
}

/// Task `ti`'s nodes in the order lowering created them (node indices:
/// the graph is fresh from lowering, nothing was removed).
fn task_nodes(m: &Module, ti: usize) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = m
        .graph
        .node_indices()
        .map(NodeId)
        .filter(|&n| m.node(n).tasks == TaskSet::single(ti))
        .collect();
    v.sort();
    v
}

/// Lowering emits one node per step of the description, with the step's
/// op, and one param per tensor, with its name and shape; the weight
/// layout is the same tensor list.
#[test]
fn lowering_emits_the_description_and_the_layout_is_its_tensors() {
    let (m, _) = lowered();
    for ti in 0..m.spec.workload.tasks.len() {
        let task = &m.spec.tasks[m.spec.workload.tasks[ti]];
        let model = &m.spec.models[task.base];
        let stages = bert::model(model, &task.head);
        let steps: Vec<(&bert::Block, &bert::Step)> = stages
            .iter()
            .flat_map(|b| b.steps.iter().map(move |s| (b, s)))
            .collect();
        let nodes = task_nodes(&m, ti);
        assert_eq!(
            nodes.len(),
            steps.len() + 1,
            "task {}: steps + output",
            task.name
        );
        let mut params = Vec::new();
        for (&n, (b, s)) in nodes.iter().zip(&steps) {
            let node = m.node(n);
            assert_eq!(node.op, s.op, "{}: {:?} {}", task.name, b.stage, s.name);
            assert_eq!(node.layer, b.stage.layer(), "{}: {}", task.name, s.name);
            for p in &node.params {
                let p = &m.params[p];
                params.push((p.name.clone(), p.shape.clone()));
            }
        }
        let want: Vec<(String, Vec<u64>)> = layout(model, &task.head)
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        assert_eq!(params, want, "task {}", task.name);
        let described: Vec<(String, Vec<u64>)> = stages
            .iter()
            .flat_map(|b| b.tensors().map(|t| (t.name.clone(), t.shape.clone())))
            .collect();
        assert_eq!(described, want, "task {}", task.name);
    }
}

/// The reference executor on the lowered IR and `forward` (which walks the
/// description) give the same f32 values, bit for bit, for every step of
/// every block and for every task's output.
#[test]
fn forward_equals_the_executor_on_the_lowered_ir_step_by_step() {
    let (m, store) = lowered();
    let plan = Plan::new(&m, &store).unwrap();
    for r in requests(&m) {
        let mask = r.mask();
        let mut seen: HashMap<NodeId, ArrayD<f32>> = HashMap::new();
        let outs = plan.run_observed(&r.ids, &mask, &mut |n, v| {
            seen.insert(n, v.clone());
        });
        let req = Req {
            ids: &r.ids,
            mask: &mask,
        };
        for (ti, out) in outs.iter().enumerate() {
            let st = m.spec.workload.tasks[ti];
            let task = &m.spec.tasks[st];
            let model = &m.spec.models[task.base];
            let get = |name: &str| store.task_tensor(st, name);
            let mut nodes = task_nodes(&m, ti).into_iter();
            let mut x: Option<ArrayD<f32>> = None;
            for b in bert::model(model, &task.head) {
                let held: Vec<Vec<_>> = b
                    .steps
                    .iter()
                    .map(|s| s.params.iter().map(|t| get(&t.name).unwrap()).collect())
                    .collect();
                let params: Vec<Vec<&ArrayD<f32>>> = held
                    .iter()
                    .map(|p| p.iter().map(|t| t.as_ref()).collect())
                    .collect();
                let tape = forward::steps(&b, &params, x.as_ref(), &req).unwrap();
                for (s, v) in b.steps.iter().zip(&tape) {
                    let n = nodes.next().unwrap();
                    assert_eq!(&seen[&n], v, "{}: {:?} {}", task.name, b.stage, s.name);
                }
                x = Some(match b.output() {
                    Operand::Step(i) => tape[i].clone(),
                    _ => x.unwrap(),
                });
            }
            let row: Vec<f32> = x.unwrap().iter().copied().collect();
            assert_eq!(&row, out, "{}", task.name);
            // The generator's entry points: block by block, then the head.
            let mut h = None;
            for blk in 0..forward::blocks(model) {
                h = Some(forward::block(model, blk, &get, h.as_ref(), &req).unwrap());
            }
            let head = forward::head(&task.head, &get, h.as_ref().unwrap(), &req).unwrap();
            assert_eq!(&head, out, "{}", task.name);
        }
    }
}

/// The trainer's forward (a branch cut at every depth) is the executor's
/// arithmetic too: its output equals `forward::rest` bit for bit.
#[test]
fn a_branch_forward_equals_forward_at_every_depth() {
    let (m, store) = lowered();
    let r = &requests(&m)[2];
    let mask = r.mask();
    let req = Req {
        ids: &r.ids,
        mask: &mask,
    };
    for ti in 0..m.spec.workload.tasks.len() {
        let st = m.spec.workload.tasks[ti];
        let task = &m.spec.tasks[st];
        let model = &m.spec.models[task.base];
        let get = |name: &str| store.task_tensor(st, name);
        let mut trunk = forward::block(model, 0, &get, None, &req).unwrap();
        for depth in 1..=forward::blocks(model) {
            let branch = Branch::new(model, &task.head, &get, depth).unwrap();
            let x = trunk.view().into_dimensionality::<Ix2>().unwrap();
            let got: Vec<f32> = branch.output(x, &mask).to_vec();
            let want = forward::rest(model, &task.head, &get, depth, Some(&trunk), &req).unwrap();
            assert_eq!(got, want, "{} at depth {depth}", task.name);
            if depth < forward::blocks(model) {
                trunk = forward::block(model, depth, &get, Some(&trunk), &req).unwrap();
            }
        }
        let names: Vec<String> = layout(model, &task.head)
            .into_iter()
            .map(|t| t.name)
            .filter(|n| !n.starts_with("embeddings."))
            .collect();
        let mut trained: Vec<String> = Branch::new(model, &task.head, &get, 1)
            .unwrap()
            .tensors()
            .into_keys()
            .collect();
        trained.sort();
        let mut names = names;
        names.sort();
        assert_eq!(
            trained, names,
            "{}: a branch at depth 1 trains all but the embeddings",
            task.name
        );
    }
    // The embeddings have no backward: a branch cannot start before them.
    let model = &m.spec.models[0];
    let get = |name: &str| store.task_tensor(0, name);
    let head = Head::Embed {
        pool: mgen_front::spec::Pool::Mean,
    };
    assert!(Branch::new(model, &head, &get, 0).is_err());
}
