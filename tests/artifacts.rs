//! The pass manager's artifact store: pass results beside the IR, checked
//! after every pass, and a pass context without what a pass needs.

use mgen::diag::{Code, Sources};
use mgen::passes::{self, Artifacts, Context};
use std::path::Path;

fn small() -> (mgen::ir::Module, mgen::weights::Store) {
    let mut sources = Sources::new();
    let f = mgen::driver::front(&mut sources, Path::new("tests/golden/cases/ok-small.mgen"))
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    mgen::driver::module_and_store(f, &sources).unwrap()
}

/// A placement that names a node the module no longer has is caught (E103),
/// not handed to codegen.
#[test]
fn a_placement_of_a_removed_node_is_refused() {
    let (mut m, _) = small();
    let arts = Artifacts {
        placement: Some(mgen::backend::place::place(&m).unwrap()),
        ..Default::default()
    };
    passes::verify_artifacts(&m, &arts, "test").unwrap();
    let placed = arts.placement.as_ref().unwrap().matrices[0].node;
    m.graph.remove_node(placed.0);
    let d = passes::verify_artifacts(&m, &arts, "test").unwrap_err();
    assert_eq!(d.0[0].code, Code::E103);
    assert!(
        d.0[0].message.contains("placement names a removed node"),
        "{:?}",
        d.0[0]
    );
}

/// A pass that invalidates the placement clears it, so the verifier after
/// it never sees a stale one.
#[test]
fn merge_clears_the_placement_it_invalidates() {
    let (mut m, store) = small();
    let mut arts = Artifacts::default();
    let cx = Context {
        store: Some(&store),
        ..Default::default()
    };
    let pl = passes::resolve("place,merge").unwrap();
    passes::run_pipeline(&mut m, &mut arts, &pl, &cx, |_, _| {}).unwrap();
    assert!(arts.placement.is_none());
    let pl = passes::resolve("place").unwrap();
    passes::run_pipeline(&mut m, &mut arts, &pl, &cx, |_, _| {}).unwrap();
    assert!(arts.placement.is_some());
}

/// `share` in a context without an energy oracle is an internal error with
/// its own code, not a panic.
#[test]
fn share_without_an_energy_oracle_is_an_internal_error() {
    let (mut m, store) = small();
    let cx = Context {
        store: Some(&store),
        ..Default::default()
    };
    let pl = passes::resolve("share").unwrap();
    let d =
        passes::run_pipeline(&mut m, &mut Artifacts::default(), &pl, &cx, |_, _| {}).unwrap_err();
    assert_eq!(d.0[0].code, Code::E900);
    assert!(d.0[0].message.contains("energy oracle"), "{:?}", d.0[0]);
}
