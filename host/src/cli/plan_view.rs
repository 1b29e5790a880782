//! `uphost plan`: text, JSON, Graphviz and Mermaid views of the plan.

use serde::Serialize;

use crate::Error;
use crate::execution::session::Session;

use super::{PlanFormat, exit};

#[derive(Serialize)]
struct JsonService<'a> {
    name: &'a str,
    version: &'a str,
    depends_on: &'a [String],
    level: usize,
    nodes: Vec<&'a str>,
    rollout: String,
    reversible: bool,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    levels: usize,
    services: Vec<&'a JsonService<'a>>,
}

/// What the views show of one planned service.
fn view<'a>(session: &'a Session, s: &'a crate::planning::Planned) -> JsonService<'a> {
    let p = &session.plugins[&s.name];
    let rollout = session
        .cfg
        .service(&s.name)
        .rollout
        .unwrap_or(p.meta.rollout);
    JsonService {
        name: &s.name,
        version: &p.meta.version,
        depends_on: &s.depends_on,
        level: s.level,
        nodes: session
            .cfg
            .service_nodes(&s.name)
            .iter()
            .map(|n| n.name.as_str())
            .collect(),
        rollout: rollout.to_string(),
        reversible: p.meta.reversible,
    }
}

/// Print the plan.
pub fn show(session: &Session, format: PlanFormat) -> Result<i32, Error> {
    // The plan's levels, each service's view once.
    let by_level: Vec<Vec<JsonService>> = session
        .plan
        .levels()
        .into_iter()
        .map(|l| l.into_iter().map(|s| view(session, s)).collect())
        .collect();
    let levels = by_level.len();
    let services: Vec<&JsonService> = by_level.iter().flatten().collect();
    match format {
        PlanFormat::Json => {
            let plan = JsonPlan { levels, services };
            outln!(
                "{}",
                serde_json::to_string_pretty(&plan).expect("plan serializes")
            );
        }
        PlanFormat::Text => {
            outln!(
                "{} service(s) in {} level(s); services of one level run concurrently",
                services.len(),
                levels
            );
            for (l, level) in by_level.iter().enumerate() {
                outln!("level {l}:");
                for s in level {
                    outln!(
                        "  {:<14} {:<8} rollout {:<14} {} on {}{}",
                        s.name,
                        s.version,
                        s.rollout,
                        if s.reversible {
                            "reversible  "
                        } else {
                            "irreversible"
                        },
                        if s.nodes.is_empty() {
                            "(no nodes: map it in the services file)".to_string()
                        } else {
                            s.nodes.join(", ")
                        },
                        if s.depends_on.is_empty() {
                            String::new()
                        } else {
                            format!("  after {}", s.depends_on.join(", "))
                        }
                    );
                }
            }
        }
        PlanFormat::Dot => {
            outln!("digraph uphost_plan {{\n  rankdir=LR;\n  node [shape=box];");
            for (l, level) in by_level.iter().enumerate() {
                outln!("  subgraph cluster_level{l} {{\n    label=\"level {l}\";");
                for s in level {
                    outln!(
                        "    \"{}\" [label=\"{}\\n{} node(s), {}\"];",
                        s.name,
                        s.name,
                        s.nodes.len(),
                        s.rollout
                    );
                }
                outln!("  }}");
            }
            for s in &services {
                for d in s.depends_on {
                    outln!("  \"{d}\" -> \"{}\";", s.name);
                }
            }
            outln!("}}");
        }
        PlanFormat::Mermaid => {
            outln!("flowchart LR");
            let id = |n: &str| n.replace('-', "_");
            for (l, level) in by_level.iter().enumerate() {
                outln!("  subgraph level{l}[\"level {l}\"]");
                for s in level {
                    outln!(
                        "    {}[\"{}<br/>{} node(s), {}\"]",
                        id(s.name),
                        s.name,
                        s.nodes.len(),
                        s.rollout
                    );
                }
                outln!("  end");
            }
            for s in &services {
                for d in s.depends_on {
                    outln!("  {} --> {}", id(d), id(s.name));
                }
            }
        }
    }
    Ok(exit::OK)
}
