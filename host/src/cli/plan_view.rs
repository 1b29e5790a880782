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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hops: Vec<crate::events::Hop>,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    levels: usize,
    services: Vec<&'a JsonService<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    train: Option<crate::events::TrainRecord>,
}

/// What the views show of one planned service.
fn view<'a>(
    session: &'a Session,
    s: &'a crate::planning::Planned,
    hops: Vec<crate::events::Hop>,
) -> JsonService<'a> {
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
        hops,
    }
}

/// The release train's lines of the text view: each hop with what it
/// upgrades, the gates, and what a rollback can undo.
fn train_lines(services: &[&JsonService], train: &crate::events::TrainRecord) -> Vec<String> {
    use crate::events::HopKind;
    let mut out = vec![format!(
        "release train: {} hops ({}); every service's hop k ends before any hop k+1 starts",
        train.hops, train.style
    )];
    for stage in 0..train.hops {
        let parts: Vec<String> = services
            .iter()
            .filter_map(|s| {
                s.hops
                    .iter()
                    .find(|h| h.stage == stage)
                    .map(|h| h.label(s.name))
            })
            .collect();
        out.push(format!("  hop {}: {}", stage + 1, parts.join(", ")));
        if stage + 1 < train.hops {
            out.push(format!(
                "    gate: verify of every service deployed{}",
                if train.gates.is_empty() {
                    String::new()
                } else {
                    format!(", then {}", train.gates.join(", "))
                }
            ));
        }
    }
    let one_way: Vec<&str> = services
        .iter()
        .filter(|s| {
            !s.reversible && !s.hops.is_empty()
                || s.hops.iter().any(|h| h.kind == HopKind::MigrationsOnly)
        })
        .map(|s| s.name)
        .collect();
    out.push(format!(
        "rollback: a service's hop in progress is rolled back, and its completed hops too only when every one of them can be undone{}",
        if one_way.is_empty() {
            String::new()
        } else {
            format!(
                "; one way (irreversible plugin or migrations-only hops): {}",
                one_way.join(", ")
            )
        }
    ));
    out
}

/// Print the plan.
pub fn show(session: &Session, format: PlanFormat) -> Result<i32, Error> {
    // The release train (refused here when a path is impossible).
    let names: Vec<&str> = session
        .plan
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let mut hops: std::collections::BTreeMap<&str, Vec<crate::events::Hop>> =
        names.iter().copied().zip(session.train(&names)?).collect();
    let stages = hops
        .values()
        .flatten()
        .map(|h| h.stage + 1)
        .max()
        .unwrap_or(1);
    let train = (stages > 1).then(|| {
        let t = &session.cfg.services.train;
        crate::events::TrainRecord {
            hops: stages,
            style: t.style.as_str().to_string(),
            gates: t.gates.iter().map(|g| g.name.clone()).collect(),
        }
    });
    if train.is_none() {
        hops.clear();
    }
    // The plan's levels, each service's view once.
    let by_level: Vec<Vec<JsonService>> = session
        .plan
        .levels()
        .into_iter()
        .map(|l| {
            l.into_iter()
                .map(|s| view(session, s, hops.remove(s.name.as_str()).unwrap_or_default()))
                .collect()
        })
        .collect();
    let levels = by_level.len();
    let services: Vec<&JsonService> = by_level.iter().flatten().collect();
    match format {
        PlanFormat::Json => {
            let plan = JsonPlan {
                levels,
                services,
                train,
            };
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
            if let Some(t) = &train {
                for l in train_lines(&services, t) {
                    outln!("{l}");
                }
            }
            if session.cfg.services.order == crate::config::Order::NodeMajor {
                let nm = &session.cfg.services.node_major;
                let guards: Vec<&str> = session
                    .plugins
                    .values()
                    .filter(|p| p.meta.node_guard)
                    .map(|p| p.name.as_str())
                    .collect();
                outln!(
                    "node by node (order: node-major): nodes {}, each with every service it hosts (levels in order); node guards: {}",
                    nm.rollout
                        .map_or("one at a time".to_string(), |r| format!("in batches ({r})")),
                    if guards.is_empty() {
                        "none".to_string()
                    } else {
                        format!(
                            "{} (leave before a node's steps, rejoin and check after)",
                            guards.join(", ")
                        )
                    }
                );
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
