//! The lineage drawn: sources and seeds on the left, models in the
//! columns of their depth, the target tables the run loaded on the right,
//! each node coloured by how it ended. The layout is computed here (a
//! layered drawing: a node's column is one past its deepest parent's, and
//! each column is ordered by the mean position of its parents, which keeps
//! edges from crossing in the usual shapes) and the page draws it as SVG.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::state::run_record::LineageNode;

const COLUMN: f64 = 230.0;
const ROW: f64 = 52.0;
const WIDTH: f64 = 190.0;
const HEIGHT: f64 = 34.0;
const MARGIN: f64 = 12.0;
/// Characters of a name that fit in a box.
const LABEL: usize = 24;

/// A node's box.
#[derive(Debug, Clone, Serialize)]
pub struct Box {
    pub id: String,
    pub label: String,
    /// The full name and what it is, for the tooltip.
    pub title: String,
    /// `source`, `seed`, `model`, `snapshot` or `table` (a target table).
    pub kind: String,
    /// How the node ended in this run (`success`, `error`, `skipped`,
    /// `warn`...), `upstream` for one the run only read, `loaded` for a
    /// target table.
    pub status: String,
    pub x: f64,
    pub y: f64,
}

/// The drawing: its size, boxes and edges (SVG path data).
#[derive(Debug, Clone, Serialize)]
pub struct Drawing {
    pub width: f64,
    pub height: f64,
    pub box_width: f64,
    pub box_height: f64,
    pub boxes: Vec<Box>,
    pub edges: Vec<String>,
}

/// One node to draw: the lineage node, its status and the target table it
/// was loaded into, if any.
pub struct Drawn<'a> {
    pub node: &'a LineageNode,
    pub status: String,
    pub table: Option<String>,
}

/// Lays out `nodes` (in any order; parents outside it are ignored).
pub fn draw(nodes: &[Drawn<'_>]) -> Drawing {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, d)| (d.node.unique_id.as_str(), i)).collect();
    let parents: Vec<Vec<usize>> = nodes
        .iter()
        .map(|d| d.node.depends_on.iter().filter_map(|p| index.get(p.as_str()).copied()).collect())
        .collect();
    // Columns: a node is one past its deepest parent (the record is a DAG;
    // the pass count bounds a cycle, which cannot occur, all the same).
    let mut column = vec![0usize; nodes.len()];
    for _ in 0..nodes.len() {
        let mut changed = false;
        for (i, ps) in parents.iter().enumerate() {
            let c = ps.iter().map(|&p| column[p] + 1).max().unwrap_or(0);
            if c != column[i] {
                column[i] = c;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let tables_column = column.iter().max().map_or(0, |c| c + 1);
    // Every box: the nodes, then one per loaded target table.
    struct Item {
        column: usize,
        parents: Vec<usize>,
        b: Box,
    }
    let mut items: Vec<Item> = nodes
        .iter()
        .enumerate()
        .map(|(i, d)| Item {
            column: column[i],
            parents: parents[i].clone(),
            b: Box {
                id: d.node.unique_id.clone(),
                label: shorten(&d.node.name),
                title: format!(
                    "{} ({}{})",
                    d.node.unique_id,
                    d.node.resource_type,
                    d.node.materialized.as_ref().map(|m| format!(", {m}")).unwrap_or_default()
                ),
                kind: d.node.resource_type.clone(),
                status: d.status.clone(),
                x: 0.0,
                y: 0.0,
            },
        })
        .collect();
    for (i, d) in nodes.iter().enumerate() {
        if let Some(table) = &d.table {
            items.push(Item {
                column: tables_column,
                parents: vec![i],
                b: Box {
                    id: format!("table:{table}"),
                    label: shorten(table),
                    title: format!("target table {table}, loaded from {}", d.node.name),
                    kind: "table".to_owned(),
                    status: "loaded".to_owned(),
                    x: 0.0,
                    y: 0.0,
                },
            });
        }
    }
    // Order each column by its parents' mean row, column by column.
    let mut by_column: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        by_column.entry(item.column).or_default().push(i);
    }
    let mut row = vec![0.0f64; items.len()];
    for members in by_column.values_mut() {
        let mean = |i: usize| -> f64 {
            let ps = &items[i].parents;
            if ps.is_empty() { f64::MAX } else { ps.iter().map(|&p| row[p]).sum::<f64>() / ps.len() as f64 }
        };
        members.sort_by(|&a, &b| {
            mean(a).total_cmp(&mean(b)).then_with(|| items[a].b.kind.cmp(&items[b].b.kind)).then(a.cmp(&b))
        });
        for (r, &i) in members.iter().enumerate() {
            row[i] = r as f64;
        }
    }
    let rows = by_column.values().map(Vec::len).max().unwrap_or(0);
    for (i, item) in items.iter_mut().enumerate() {
        item.b.x = MARGIN + item.column as f64 * COLUMN;
        item.b.y = MARGIN + row[i] * ROW;
    }
    let mut edges = Vec::new();
    for item in &items {
        for &p in &item.parents {
            let (from, to) = (&items[p].b, &item.b);
            let (x1, y1) = (from.x + WIDTH, from.y + HEIGHT / 2.0);
            let (x2, y2) = (to.x, to.y + HEIGHT / 2.0);
            let bend = (x2 - x1) / 2.0;
            edges.push(format!("M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}", x1 + bend, x2 - bend));
        }
    }
    let columns = items.iter().map(|i| i.column + 1).max().unwrap_or(0);
    Drawing {
        width: 2.0 * MARGIN + columns.saturating_sub(1) as f64 * COLUMN + WIDTH,
        height: 2.0 * MARGIN + rows.saturating_sub(1) as f64 * ROW + HEIGHT,
        box_width: WIDTH,
        box_height: HEIGHT,
        boxes: items.into_iter().map(|i| i.b).collect(),
        edges,
    }
}

/// A name cut to fit its box, with an ellipsis.
fn shorten(name: &str) -> String {
    if name.chars().count() <= LABEL {
        return name.to_owned();
    }
    let mut s: String = name.chars().take(LABEL - 1).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, kind: &str, parents: &[&str]) -> LineageNode {
        LineageNode {
            unique_id: id.to_owned(),
            name: id.rsplit('.').next().unwrap().to_owned(),
            resource_type: kind.to_owned(),
            materialized: None,
            depends_on: parents.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn columns_follow_depth_and_tables_come_last() {
        let nodes = [
            node("model.p.orders", "model", &["model.p.stg", "seed.p.types"]),
            node("source.p.raw.t", "source", &[]),
            node("model.p.stg", "model", &["source.p.raw.t"]),
            node("seed.p.types", "seed", &[]),
        ];
        let drawn: Vec<Drawn<'_>> = nodes
            .iter()
            .map(|n| Drawn {
                node: n,
                status: "success".into(),
                table: (n.name == "orders").then(|| "orders".to_owned()),
            })
            .collect();
        let d = draw(&drawn);
        let x = |id: &str| d.boxes.iter().find(|b| b.id == id).unwrap().x;
        assert_eq!(x("source.p.raw.t"), x("seed.p.types"));
        assert!(x("source.p.raw.t") < x("model.p.stg"));
        assert!(x("model.p.stg") < x("model.p.orders"));
        assert!(x("model.p.orders") < x("table:orders"));
        // Three edges into models, one to the table.
        assert_eq!(d.edges.len(), 4);
        assert!(d.width >= x("table:orders") + WIDTH);
        assert_eq!(shorten("a_very_long_model_name_that_goes_on"), "a_very_long_model_name_…");
    }
}
