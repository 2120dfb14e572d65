//! The `merge` pass on hand-written multi-task files.

use mgen::diag::Sources;
use mgen::driver;
use mgen::ir::{Module, Op};

const MODEL: &str = "model m { layers = 3; hidden = 32; heads = 2; ffn = 64; vocab = 50; max_seq = 8; weights = synthetic(seed = 1); }\n";

fn module(tasks: &[(&str, &str, &str)]) -> Module {
    let mut src = MODEL.to_string();
    for (name, head, weights) in tasks {
        src.push_str(&format!(
            "task {name} {{ base = m; head = {head}; weights = {weights}; }}\n"
        ));
    }
    let names: Vec<&str> = tasks.iter().map(|t| t.0).collect();
    src.push_str(&format!(
        "workload w {{ requests = 1; seq = 8; inputs = synthetic(seed = 1); tasks = [{}]; }}\n",
        names.join(", ")
    ));
    let mut sources = Sources::new();
    let f = driver::front_bytes(&mut sources, "t.mgen", src.as_bytes(), ".", false)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    driver::module(f, &sources).unwrap()
}

fn merged(mut m: Module) -> Module {
    mgen::passes::merge::merge(&mut m);
    mgen::ir::verify::verify(&m, "test").unwrap();
    m
}

fn non_output_nodes(m: &Module) -> usize {
    m.graph
        .node_weights()
        .filter(|n| !matches!(n.op, Op::Output { .. }))
        .count()
}

#[test]
fn identical_tasks_share_everything_but_outputs() {
    let one = module(&[("a", "classify(2)", "finetuned(seed = 5, drift = 0.1)")]);
    let four = merged(module(&[
        ("a", "classify(2)", "finetuned(seed = 5, drift = 0.1)"),
        ("b", "classify(2)", "finetuned(seed = 5, drift = 0.1)"),
        ("c", "classify(2)", "finetuned(seed = 5, drift = 0.1)"),
        ("d", "classify(2)", "finetuned(seed = 5, drift = 0.1)"),
    ]));
    assert_eq!(non_output_nodes(&four), non_output_nodes(&one));
    assert_eq!(four.count_ops()["output"], 4);
    // Every shared node serves all four tasks.
    assert!(
        four.graph
            .node_weights()
            .filter(|n| !matches!(n.op, Op::Output { .. }))
            .all(|n| n.tasks.len() == 4)
    );
}

#[test]
fn different_fine_tunes_share_only_the_inputs() {
    let m = merged(module(&[
        ("a", "classify(2)", "finetuned(seed = 5, drift = 0.1)"),
        ("b", "classify(2)", "finetuned(seed = 6, drift = 0.1)"),
    ]));
    let shared = m
        .graph
        .node_weights()
        .filter(|n| n.tasks.len() == 2)
        .count();
    assert_eq!(shared, 2, "only the ids and mask inputs are common");
}

#[test]
fn zero_drift_tasks_share_the_encoder_and_keep_their_heads() {
    let m = merged(module(&[
        ("a", "classify(2)", "finetuned(seed = 5, drift = 0)"),
        ("b", "classify(3)", "finetuned(seed = 6, drift = 0)"),
        ("c", "embed(mean)", "finetuned(seed = 7, drift = 0)"),
    ]));
    let linears_all = m
        .graph
        .node_weights()
        .filter(|n| matches!(n.op, Op::Linear) && n.tasks.len() == 3)
        .count();
    assert_eq!(
        linears_all,
        3 * 6,
        "all encoder MVMs are shared by the three tasks"
    );
    // a and b share the pooler (the base's) but not their classifiers.
    let heads: Vec<_> = m
        .graph
        .node_weights()
        .filter(|n| matches!(n.op, Op::Linear) && matches!(n.layer, mgen::ir::Layer::Head))
        .map(|n| (n.tasks.len(), n.shape.clone()))
        .collect();
    assert!(heads.contains(&(2, vec![32])), "shared pooler: {heads:?}");
    assert!(
        heads.contains(&(1, vec![2])) && heads.contains(&(1, vec![3])),
        "{heads:?}"
    );
}

#[test]
fn merge_is_idempotent() {
    let mut m = module(&[
        ("a", "classify(2)", "finetuned(seed = 5, drift = 0)"),
        ("b", "classify(2)", "finetuned(seed = 5, drift = 0)"),
    ]);
    assert!(mgen::passes::merge::merge(&mut m) > 0);
    assert_eq!(mgen::passes::merge::merge(&mut m), 0);
}
