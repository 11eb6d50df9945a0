//! Dependencies between a team's tasks form a directed graph (task → the
//! tasks it is blocked by); it must stay acyclic, or some task could never
//! start.

use std::collections::{BTreeMap, BTreeSet};

/// The cycle that adding `new` edges to `edges` would close, as the path of
/// task ids from a task back to itself; None if the graph stays acyclic.
pub fn cycle(edges: &BTreeSet<(i64, i64)>, new: &[(i64, i64)]) -> Option<Vec<i64>> {
    // Most updates add no edge: do not walk the team's graph for them.
    if new.is_empty() {
        return None;
    }
    let mut next: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (task, blocker) in edges.iter().chain(new) {
        next.entry(*task).or_default().push(*blocker);
    }
    // Only a new edge can close a cycle: look for a path from its blocker
    // back to its task.
    for &(task, blocker) in new {
        if let Some(mut path) = path(&next, blocker, task) {
            path.insert(0, task);
            return Some(path);
        }
    }
    None
}

/// A path `from` → ... → `to` along the edges, depth first.
fn path(next: &BTreeMap<i64, Vec<i64>>, from: i64, to: i64) -> Option<Vec<i64>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![(from, vec![from])];
    while let Some((at, route)) = stack.pop() {
        if at == to {
            return Some(route);
        }
        if !seen.insert(at) {
            continue;
        }
        for &n in next.get(&at).into_iter().flatten() {
            let mut r = route.clone();
            r.push(n);
            stack.push((n, r));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cycle_a_new_edge_closes() {
        let edges: BTreeSet<_> = [(2, 1), (3, 2)].into();
        assert_eq!(cycle(&edges, &[(1, 3)]), Some(vec![1, 3, 2, 1]));
        assert_eq!(cycle(&edges, &[(4, 3)]), None);
        assert_eq!(cycle(&edges, &[(5, 5)]), Some(vec![5, 5]));
    }

    #[test]
    fn cycles_among_new_edges_count_too() {
        assert_eq!(cycle(&BTreeSet::new(), &[(1, 2), (2, 1)]), Some(vec![1, 2, 1]));
        assert_eq!(cycle(&BTreeSet::new(), &[(1, 2), (2, 3)]), None);
    }
}
