//! A dependency graph over node ids (dense indices: a project's
//! [`NodeId`]s, or plain `usize`): topological order, cycles named in
//! order, and bounded ancestor/descendant walks. Pure; no project types.

use std::collections::VecDeque;
use std::fmt;
use std::hash::Hash;

/// What a graph's nodes are named by: a dense index, `0..len`.
pub trait Id: Copy + Eq + Ord + Hash + fmt::Debug + Send + Sync + 'static {
    fn index(self) -> usize;
    fn from_index(index: usize) -> Self;
}

impl Id for usize {
    fn index(self) -> usize {
        self
    }
    fn from_index(index: usize) -> Self {
        index
    }
}

/// A node of a project's DAG: its position in the manifest's node list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u32);

impl Id for NodeId {
    fn index(self) -> usize {
        self.0 as usize
    }
    fn from_index(index: usize) -> Self {
        NodeId(u32::try_from(index).expect("fewer than 2^32 nodes"))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Edges run from a parent (a dependency) to its children.
#[derive(Debug, Clone)]
pub struct Graph<N: Id = usize> {
    parents: Vec<Vec<N>>,
    children: Vec<Vec<N>>,
}

impl<N: Id> Default for Graph<N> {
    fn default() -> Self {
        Graph { parents: Vec::new(), children: Vec::new() }
    }
}

impl<N: Id> Graph<N> {
    /// A graph of `n` nodes and no edges.
    pub fn new(n: usize) -> Self {
        Graph { parents: vec![Vec::new(); n], children: vec![Vec::new(); n] }
    }

    pub fn len(&self) -> usize {
        self.parents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parents.is_empty()
    }

    /// Every node, in index order.
    pub fn ids(&self) -> impl Iterator<Item = N> + use<N> {
        (0..self.len()).map(N::from_index)
    }

    /// `child` depends on `parent`. Repeated edges are kept once.
    pub fn add_edge(&mut self, parent: N, child: N) {
        if !self.parents[child.index()].contains(&parent) {
            self.parents[child.index()].push(parent);
            self.children[parent.index()].push(child);
        }
    }

    pub fn parents(&self, node: N) -> &[N] {
        &self.parents[node.index()]
    }

    pub fn children(&self, node: N) -> &[N] {
        &self.children[node.index()]
    }

    /// Nodes with every parent before its children (Kahn's algorithm, ties in
    /// index order), or the members of one cycle in dependency order.
    pub fn toposort(&self) -> Result<Vec<N>, Vec<N>> {
        let mut indegree: Vec<usize> = self.parents.iter().map(Vec::len).collect();
        let mut ready: VecDeque<N> = self.ids().filter(|n| indegree[n.index()] == 0).collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(n) = ready.pop_front() {
            order.push(n);
            for &c in &self.children[n.index()] {
                indegree[c.index()] -= 1;
                if indegree[c.index()] == 0 {
                    ready.push_back(c);
                }
            }
        }
        if order.len() == self.len() {
            return Ok(order);
        }
        Err(self.find_cycle(&indegree))
    }

    /// Walks parent edges among nodes left with unmet dependencies until a
    /// node repeats; returns that loop as `[a, b, c]` where `a` depends on
    /// `b`, `b` on `c`, and `c` on `a`.
    fn find_cycle(&self, indegree: &[usize]) -> Vec<N> {
        let start = (0..self.len()).find(|&n| indegree[n] > 0).unwrap_or(0);
        let mut seen_at = vec![usize::MAX; self.len()];
        let mut path = Vec::new();
        let mut cur = start;
        while seen_at[cur] == usize::MAX {
            seen_at[cur] = path.len();
            path.push(N::from_index(cur));
            cur = self.parents[cur].iter().map(|p| p.index()).find(|&p| indegree[p] > 0).unwrap_or(cur);
        }
        path.split_off(seen_at[cur])
    }

    /// Nodes reachable through parent edges, up to `depth` steps (all if `None`).
    pub fn ancestors(&self, start: N, depth: Option<usize>) -> Vec<N> {
        walk(start, depth, |n| &self.parents[n.index()])
    }

    /// `starts` and every ancestor of any of them, in one walk.
    pub fn with_ancestors(&self, starts: impl IntoIterator<Item = N>) -> std::collections::BTreeSet<N> {
        let mut seen = vec![false; self.len()];
        let mut stack: Vec<N> = starts.into_iter().collect();
        for s in &stack {
            seen[s.index()] = true;
        }
        while let Some(n) = stack.pop() {
            for &p in &self.parents[n.index()] {
                if !seen[p.index()] {
                    seen[p.index()] = true;
                    stack.push(p);
                }
            }
        }
        self.ids().filter(|n| seen[n.index()]).collect()
    }

    /// `dbt build`'s ordering: a copy of the graph in which every gate
    /// among `nodes` (a test) also runs before each node of `nodes` that
    /// descends from all of the gate's parents, so a failing gate can stop
    /// them. Only the first such node on each path gets an edge; the rest
    /// follow it. Gates must have no children of their own.
    pub fn with_gates(&self, nodes: &[N], is_gate: impl Fn(N) -> bool) -> Graph<N> {
        let mut out = self.clone();
        let in_set: std::collections::HashSet<N> = nodes.iter().copied().collect();
        for &gate in nodes.iter().filter(|&&n| is_gate(n)) {
            let deps = &self.parents[gate.index()];
            if deps.is_empty() {
                continue;
            }
            // How many of the gate's parents each node strictly descends from.
            let mut reached: std::collections::HashMap<N, usize> = std::collections::HashMap::new();
            for &d in deps {
                for n in self.descendants(d, None) {
                    *reached.entry(n).or_default() += 1;
                }
            }
            let covered = |n: N| in_set.contains(&n) && !is_gate(n) && reached.get(&n) == Some(&deps.len());
            let mut targets: Vec<N> = reached.keys().copied().filter(|&n| covered(n)).collect();
            targets.sort_unstable();
            for n in targets {
                if !self.parents[n.index()].iter().any(|&q| covered(q)) {
                    out.add_edge(gate, n);
                }
            }
        }
        out
    }

    /// Nodes reachable through child edges, up to `depth` steps (all if `None`).
    pub fn descendants(&self, start: N, depth: Option<usize>) -> Vec<N> {
        walk(start, depth, |n| &self.children[n.index()])
    }
}

fn walk<'a, N: Id>(start: N, depth: Option<usize>, next: impl Fn(N) -> &'a [N]) -> Vec<N> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut queue = VecDeque::from([(start, 0usize)]);
    seen.insert(start);
    while let Some((n, d)) = queue.pop_front() {
        if depth.is_some_and(|max| d >= max) {
            continue;
        }
        for &m in next(n) {
            if seen.insert(m) {
                out.push(m);
                queue.push_back((m, d + 1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_run_before_what_descends_from_all_their_parents() {
        // a(0) -> b(1) -> c(2); d(3) -> c; test t(4) on a; test r(5) on b and d.
        let mut g = Graph::new(6);
        for (p, c) in [(0, 1), (1, 2), (3, 2), (0, 4), (1, 5), (3, 5)] {
            g.add_edge(p, c);
        }
        let all: Vec<usize> = (0..6).collect();
        let gated = g.with_gates(&all, |n| n >= 4);
        // t gates b only; c follows b.
        assert_eq!(gated.children(4), &[1]);
        // r needs b and d: c is the first node below both.
        assert_eq!(gated.children(5), &[2]);
        assert!(gated.toposort().is_ok());
        // A node outside the run is never gated; its in-run child is.
        let gated = g.with_gates(&[0, 2, 3, 4, 5], |n| n >= 4);
        assert_eq!(gated.children(4), &[2]);
    }

    fn graph(n: usize, edges: &[(usize, usize)]) -> Graph {
        let mut g = Graph::new(n);
        for &(p, c) in edges {
            g.add_edge(p, c);
        }
        g
    }

    #[test]
    fn toposort_puts_parents_first() {
        let g = graph(4, &[(2, 0), (3, 2), (1, 0)]);
        let order = g.toposort().unwrap();
        let pos = |n| order.iter().position(|&x| x == n).unwrap();
        assert!(pos(2) < pos(0) && pos(3) < pos(2) && pos(1) < pos(0));
    }

    #[test]
    fn cycle_lists_every_member_in_dependency_order() {
        // 0 depends on 1, 1 on 2, 2 on 0; 3 hangs off the cycle.
        let g = graph(4, &[(1, 0), (2, 1), (0, 2), (0, 3)]);
        let mut cycle = g.toposort().unwrap_err();
        assert_eq!(cycle.len(), 3);
        let min = cycle.iter().position(|&x| x == 0).unwrap();
        cycle.rotate_left(min);
        assert_eq!(cycle, vec![0, 1, 2]);
    }

    #[test]
    fn bounded_walks() {
        let g = graph(4, &[(0, 1), (1, 2), (2, 3)]);
        assert_eq!(g.ancestors(3, Some(2)), vec![2, 1]);
        assert_eq!(g.descendants(0, None), vec![1, 2, 3]);
    }

    #[test]
    fn with_ancestors_walks_from_every_start_once() {
        let g = graph(5, &[(0, 1), (1, 2), (3, 4)]);
        assert_eq!(g.with_ancestors([2, 4]).into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert_eq!(g.with_ancestors([1]).into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn ten_thousand_node_chain_sorts() {
        let n = 10_000;
        let mut g = Graph::new(n);
        for i in 1..n {
            g.add_edge(i - 1, i);
        }
        assert_eq!(g.toposort().unwrap().len(), n);
    }
}
