//! Runs a set of DAG nodes concurrently, each once all of its parents in
//! the set have succeeded, at most `limit` at a time. A node whose parent
//! failed is skipped, with the failure that caused it; independent branches
//! go on. Dropping the returned future aborts every running node (Ctrl-C).
//!
//! Generic over what running a node means; knows nothing of DataFusion.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;

use super::Graph;
use super::graph::Id;

/// What happened to a node.
#[derive(Debug)]
pub enum Event<T, E, N = usize> {
    Started(N),
    Finished(N, Result<T, E>),
    /// Not run because `because` (an ancestor in the set) failed.
    Skipped {
        node: N,
        because: N,
    },
    /// Time passed while nodes run (every `tick`, when one is given).
    Tick,
}

/// Runs `nodes` (any order) over `graph`. `start` makes the future for one
/// node; `on_event` hears of every start, finish and skip, in order, and
/// of each `tick` that passes while nodes run.
pub async fn run<N, T, E, F, Fut>(
    graph: &Graph<N>,
    nodes: &[N],
    (limit, tick): (usize, Option<Duration>),
    mut start: F,
    mut on_event: impl FnMut(Event<T, E, N>),
) where
    N: Id,
    F: FnMut(N) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let in_set: HashMap<N, usize> = nodes.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut waiting: Vec<usize> =
        nodes.iter().map(|&i| graph.parents(i).iter().filter(|p| in_set.contains_key(p)).count()).collect();
    let mut ready: VecDeque<N> = nodes.iter().copied().filter(|i| waiting[in_set[i]] == 0).collect();
    let mut running: JoinSet<(N, Result<T, E>)> = JoinSet::new();
    let mut blocked_by: HashMap<N, N> = HashMap::new();
    let limit = limit.max(1);
    let mut ticks = tick.map(|every| {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    loop {
        while running.len() < limit {
            let Some(i) = ready.pop_front() else { break };
            on_event(Event::Started(i));
            let work = start(i);
            running.spawn(async move { (i, work.await) });
        }
        let joined = loop {
            let tick = async {
                match ticks.as_mut() {
                    Some(t) => t.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                joined = running.join_next() => break joined,
                _ = tick => on_event(Event::Tick),
            }
        };
        let Some(joined) = joined else { break };
        let (i, result) = match joined {
            Ok(done) => done,
            // A panicking node is a bug; re-raise it rather than guess.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => continue,
        };
        let ok = result.is_ok();
        on_event(Event::Finished(i, result));
        for &child in graph.children(i) {
            let Some(&k) = in_set.get(&child) else { continue };
            if !ok {
                let because = blocked_by.get(&i).copied().unwrap_or(i);
                blocked_by.entry(child).or_insert(because);
            }
            waiting[k] -= 1;
            if waiting[k] == 0 {
                match blocked_by.get(&child) {
                    None => ready.push_back(child),
                    Some(&because) => {
                        skip(graph, &in_set, &mut waiting, &mut blocked_by, child, because, &mut on_event)
                    }
                }
            }
        }
    }
}

/// Marks `node` skipped and releases its children the same way.
fn skip<N: Id, T, E>(
    graph: &Graph<N>,
    in_set: &HashMap<N, usize>,
    waiting: &mut [usize],
    blocked_by: &mut HashMap<N, N>,
    node: N,
    because: N,
    on_event: &mut impl FnMut(Event<T, E, N>),
) {
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        on_event(Event::Skipped { node: n, because });
        for &child in graph.children(n) {
            let Some(&k) = in_set.get(&child) else { continue };
            blocked_by.entry(child).or_insert(because);
            waiting[k] -= 1;
            if waiting[k] == 0 {
                stack.push(child);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// 0 -> 1 -> 3, 0 -> 2 -> 3, 4 alone.
    fn diamond() -> Graph {
        let mut g = Graph::new(5);
        g.add_edge(0, 1);
        g.add_edge(0, 2);
        g.add_edge(1, 3);
        g.add_edge(2, 3);
        g
    }

    async fn collect(graph: &Graph, nodes: &[usize], fail: &'static [usize], limit: usize) -> Vec<String> {
        let mut log = Vec::new();
        run(
            graph,
            nodes,
            (limit, None),
            |i| async move { if fail.contains(&i) { Err(()) } else { Ok(()) } },
            |e: Event<(), ()>| {
                log.push(match e {
                    Event::Started(i) => format!("start {i}"),
                    Event::Finished(i, r) => format!("{} {i}", if r.is_ok() { "ok" } else { "fail" }),
                    Event::Skipped { node, because } => format!("skip {node} ({because})"),
                    Event::Tick => "tick".to_owned(),
                })
            },
        )
        .await;
        log
    }

    #[tokio::test]
    async fn parents_finish_before_children_start() {
        let log = collect(&diamond(), &[0, 1, 2, 3, 4], &[], 1).await;
        let pos = |s: &str| log.iter().position(|l| l == s).unwrap();
        assert!(pos("ok 0") < pos("start 1") && pos("ok 0") < pos("start 2"));
        assert!(pos("ok 1") < pos("start 3") && pos("ok 2") < pos("start 3"));
        assert_eq!(log.iter().filter(|l| l.starts_with("ok")).count(), 5);
    }

    #[tokio::test]
    async fn a_failure_skips_descendants_and_independent_branches_finish() {
        let log = collect(&diamond(), &[0, 1, 2, 3, 4], &[1], 2).await;
        assert!(log.contains(&"fail 1".to_owned()));
        assert!(log.contains(&"ok 2".to_owned()), "{log:?}");
        assert!(log.contains(&"skip 3 (1)".to_owned()), "{log:?}");
        assert!(log.contains(&"ok 4".to_owned()));
        assert!(!log.contains(&"start 3".to_owned()));
    }

    #[tokio::test]
    async fn parents_outside_the_set_do_not_block() {
        let log = collect(&diamond(), &[3], &[], 2).await;
        assert_eq!(log, vec!["start 3", "ok 3"]);
    }

    #[tokio::test]
    async fn never_more_than_limit_at_once() {
        let g = Graph::new(6);
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        run(
            &g,
            &[0, 1, 2, 3, 4, 5],
            (2, None),
            |_| {
                let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
                async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok::<(), ()>(())
                }
            },
            |_| {},
        )
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn ticks_pass_while_a_node_runs_and_stop_with_it() {
        let g = Graph::new(1);
        let mut log = Vec::new();
        run(
            &g,
            &[0],
            (1, Some(Duration::from_millis(10))),
            |_| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<(), ()>(())
            },
            |e| {
                log.push(match e {
                    Event::Tick => "tick",
                    Event::Finished(..) => "ok",
                    _ => "other",
                })
            },
        )
        .await;
        assert_eq!(log.last(), Some(&"ok"), "{log:?}");
        assert!(log.iter().filter(|&&l| l == "tick").count() >= 2, "{log:?}");
    }
}
