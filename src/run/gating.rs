//! `dbt build`'s gating: a model's tests run right after it, and a test
//! that fails at error severity holds back what depends on its model (and,
//! from the target, the model itself). A test that could not even compile
//! holds back what it would have gated.

use std::collections::{BTreeMap, BTreeSet};

use super::Which;
use super::report::NodeReport;
use crate::dag::Graph;
use crate::manifest::{Manifest, NodeId, Resource};

/// The graph a run schedules over, the nodes it runs, and the nodes held
/// back before it starts with the test that holds each.
pub struct Gated {
    pub graph: Graph<NodeId>,
    pub runnable: Vec<NodeId>,
    pub held: BTreeMap<NodeId, NodeId>,
}

/// Gates `runnable` for `which`: in `build`, every test runs before what
/// descends from all of its parents (see [`Graph::with_gates`]), and the
/// tests among `order` that `failed` to compile hold back their descendants.
pub fn gate(
    manifest: &Manifest,
    which: Which,
    order: &[NodeId],
    runnable: Vec<NodeId>,
    failed: &BTreeSet<NodeId>,
) -> Gated {
    if which != Which::Build {
        return Gated { graph: manifest.graph.clone(), runnable, held: BTreeMap::new() };
    }
    let is_test = |i: NodeId| matches!(manifest[i].resource, Resource::Test(_));
    let broken: Vec<NodeId> = order.iter().copied().filter(|&i| is_test(i) && failed.contains(&i)).collect();
    let graph = manifest.graph.with_gates(&[runnable.as_slice(), &broken].concat(), is_test);
    let mut held = BTreeMap::new();
    for &b in &broken {
        for d in graph.descendants(b, None).into_iter().filter(|d| runnable.contains(d)) {
            held.entry(d).or_insert(b);
        }
    }
    let runnable = runnable.into_iter().filter(|i| !held.contains_key(i)).collect();
    Gated { graph, runnable, held }
}

/// Staged models and seeds that an error-severity test failed on (or that
/// a test which could not compile or run was meant to check), with the
/// test: a generic test holds back the node it is attached to, a singular
/// test every node it reads. They stay staged but are not loaded.
pub fn held_back_by_tests(manifest: &Manifest, results: &BTreeMap<NodeId, NodeReport>) -> BTreeMap<NodeId, NodeId> {
    let mut held = BTreeMap::new();
    let failed_tests =
        results.iter().filter(|&(&i, r)| matches!(manifest[i].resource, Resource::Test(_)) && r.status.is_failure());
    for (&t, _) in failed_tests {
        let targets: Vec<NodeId> = match manifest.attached_to(t) {
            Some(a) => vec![a],
            None => manifest.graph.parents(t).to_vec(),
        };
        for a in targets {
            held.entry(a).or_insert(t);
        }
    }
    held
}
