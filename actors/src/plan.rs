//! A pipeline's stage graph: which stages an attempt runs and how records flow between them.
//!
//! Consecutive stateless transformations are fused into one stage (one loop per record, no
//! channel between steps). With `parallelism` N > 1 and a transformation list that can be
//! split by key ([`dagg_transforms::partition::split`]), the steps before the stateful step
//! stay in the reading stage, which hash-partitions their output over N keyed instances of
//! the rest; a merge stage aligns the instances' checkpoint barriers and feeds the sinks.
//!
//! ```text
//! source+transformations[..k] ──► keyed #0 (transformations[k..]) ──┐
//!                             ├──► keyed #1 ─────────────────────────┼──► merge ──► destination(s), dead letter
//!                             └──► keyed #N-1 ───────────────────────┘
//! ```
//!
//! The graph is a petgraph DAG; [`Plan::describe`] gives it as JSON for `dagg validate` and
//! the API.

use dagg_model::spec::pipeline::PipelineSpec;
use dagg_transforms::partition::{Split, split};
use petgraph::Direction;
use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Value as Json, json};

/// What a stage does.
#[derive(Clone, Debug, PartialEq)]
pub enum StageKind {
    /// Reads the source and runs `transformations[..steps]` (the fused stateless prefix, or
    /// the whole list when there are no keyed instances).
    Read { steps: usize },
    /// One keyed instance of `transformations[from..]`.
    Keyed { from: usize, instance: usize },
    /// Aligns the keyed instances' barriers into one stream.
    Merge,
    /// Writes every record to its destinations and failures to the dead letter, completes
    /// checkpoints.
    Write { destinations: usize, dead_letter: bool },
}

/// A stage of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct StageNode {
    pub name: String,
    pub kind: StageKind,
}

/// The stages of a pipeline and the channels between them.
#[derive(Debug)]
pub struct Plan {
    pub graph: DiGraph<StageNode, ()>,
    /// The number of keyed instances (1: no keyed stage).
    pub instances: usize,
    /// Where the transformation list splits, when there are keyed instances.
    pub split: Option<Split>,
    /// Why `parallelism` above 1 was not used, when it was asked for and not used.
    pub note: Option<String>,
}

impl Plan {
    /// The plan of a pipeline.
    pub fn of(spec: &PipelineSpec) -> Plan {
        let asked = spec.parallelism.max(1) as usize;
        let mut graph = DiGraph::new();
        let n_steps = spec.transformations.len();
        let write = StageNode {
            name: "write".into(),
            kind: StageKind::Write { destinations: spec.destinations.len(), dead_letter: spec.error_handling.dead_letter.is_some() },
        };
        let (split, note) = match (asked, split(&spec.transformations)) {
            (1, _) => (None, None),
            (_, Ok(s)) => (Some(s), None),
            (n, Err(why)) => (None, Some(format!("parallelism {n} is not used: {why}"))),
        };
        let Some(s) = &split else {
            let read = graph.add_node(StageNode { name: read_name(n_steps), kind: StageKind::Read { steps: n_steps } });
            let w = graph.add_node(write);
            graph.add_edge(read, w, ());
            return Plan { graph, instances: 1, split: None, note };
        };
        let read = graph.add_node(StageNode { name: read_name(s.at), kind: StageKind::Read { steps: s.at } });
        let merge = graph.add_node(StageNode { name: "merge".into(), kind: StageKind::Merge });
        for i in 0..asked {
            let k = graph.add_node(StageNode {
                name: format!("transformations[{}..{n_steps}]#{i}", s.at),
                kind: StageKind::Keyed { from: s.at, instance: i },
            });
            graph.add_edge(read, k, ());
            graph.add_edge(k, merge, ());
        }
        let w = graph.add_node(write);
        graph.add_edge(merge, w, ());
        Plan { graph, instances: asked, split, note }
    }

    /// The stages in an order where every stage comes after the stages that feed it.
    pub fn stages(&self) -> Vec<NodeIndex> {
        toposort(&self.graph, None).expect("a plan is built acyclic")
    }

    /// The plan as JSON: the stages in flow order, each with the stages it feeds.
    pub fn describe(&self) -> Json {
        let stages: Vec<Json> = self
            .stages()
            .into_iter()
            .map(|ix| {
                let node = &self.graph[ix];
                let feeds: Vec<&str> = self.graph.neighbors_directed(ix, Direction::Outgoing).map(|n| self.graph[n].name.as_str()).collect();
                let mut v = json!({"name": node.name, "feeds": feeds});
                match &node.kind {
                    StageKind::Read { steps } => {
                        v["kind"] = json!("read");
                        v["transformations"] = json!(*steps);
                    }
                    StageKind::Keyed { from, instance } => {
                        v["kind"] = json!("keyed");
                        v["from_transformation"] = json!(*from);
                        v["instance"] = json!(*instance);
                    }
                    StageKind::Merge => v["kind"] = json!("merge"),
                    StageKind::Write { destinations, dead_letter } => {
                        v["kind"] = json!("write");
                        v["destinations"] = json!(*destinations);
                        v["dead_letter"] = json!(*dead_letter);
                    }
                }
                v
            })
            .collect();
        let mut out = json!({"instances": self.instances, "stages": stages});
        if let Some(s) = &self.split {
            out["partition_key"] = json!(s.key.iter().map(|k| k.to_string()).collect::<Vec<_>>());
        }
        if let Some(n) = &self.note {
            out["note"] = json!(n);
        }
        out
    }
}

fn read_name(steps: usize) -> String {
    match steps {
        0 => "source".into(),
        1 => "source+transformations[0]".into(),
        n => format!("source+transformations[0..{n}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagg_model::spec::pipeline::parse_pipeline;

    fn spec(parallelism: u32, transformations: Json) -> PipelineSpec {
        let doc = json!({
            "name": "p",
            "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
            "transformations": transformations,
            "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}},
            "parallelism": parallelism
        });
        parse_pipeline(&doc).expect("valid pipeline")
    }

    #[test]
    fn keyed_instances_between_the_read_and_the_merge() {
        let p = Plan::of(&spec(
            3,
            json!([
                {"type": "record_filter", "condition": {"field": "x", "operator": "greater_than", "value": 1}},
                {"type": "aggregation", "group_by_fields": ["c"], "aggregated_fields": [{"input_field": "x", "output_field": "s", "operation": "sum"}]}
            ]),
        ));
        assert_eq!(p.instances, 3);
        let d = p.describe();
        let names: Vec<&str> = d["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names[0], "source+transformations[0]");
        assert_eq!(names.last(), Some(&"write"));
        assert_eq!(names.iter().filter(|n| n.contains('#')).count(), 3);
        assert_eq!(d["stages"][0]["feeds"].as_array().unwrap().len(), 3);
        assert_eq!(d["partition_key"], json!(["c"]));
    }

    #[test]
    fn one_stage_when_parallelism_cannot_be_used() {
        let p = Plan::of(&spec(4, json!([{"type": "field_mapping", "field_name": "a", "operation": "rename", "parameters": {"to": "b"}}])));
        assert_eq!(p.instances, 1);
        assert!(p.note.as_deref().unwrap().contains("keep no state"), "{:?}", p.note);
        assert_eq!(p.graph.node_count(), 2);
        let p = Plan::of(&spec(1, json!([])));
        assert!(p.note.is_none());
        assert_eq!(p.describe()["stages"][0]["name"], json!("source"));
    }
}
