//! Planning: the dependency graph from each plugin's `depends-on`, checked
//! for cycles and missing services, and an execution order in levels (the
//! services of one level depend only on earlier levels, so they may run
//! concurrently).

use std::collections::{BTreeMap, BTreeSet};

pub mod train;

use crate::config::yaml::did_you_mean;

/// A planning problem.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// A dependency cycle; every service on it is named, in order.
    #[error(
        "dependency cycle: {} -> {}; remove one of these depends-on entries",
        .0.join(" -> "),
        .0[0]
    )]
    Cycle(Vec<String>),
    /// A plugin depends on a service no plugin provides.
    #[error(
        "plugin `{plugin}` depends on `{missing}`, which no plugin provides{hint}; add its plugin to the plugin directory or fix the name"
    )]
    Missing {
        /// The dependent plugin.
        plugin: String,
        /// The missing service.
        missing: String,
        /// " (did you mean `x`?)" or empty.
        hint: String,
    },
}

/// A service's place in the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Service name.
    pub name: String,
    /// Its direct dependencies.
    pub depends_on: Vec<String>,
    /// Its level (0: no dependencies).
    pub level: usize,
}

/// The execution order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Services in execution order (by level, then name).
    pub services: Vec<Planned>,
}

impl Plan {
    /// Services grouped by level.
    pub fn levels(&self) -> Vec<Vec<&Planned>> {
        let mut out: Vec<Vec<&Planned>> = Vec::new();
        for s in &self.services {
            if out.len() <= s.level {
                out.resize_with(s.level + 1, Vec::new);
            }
            out[s.level].push(s);
        }
        out
    }

    /// A service by name.
    pub fn get(&self, name: &str) -> Option<&Planned> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Keep `keep` and nothing else; dependencies outside the selection are
    /// treated as already done (a staged run).
    pub fn restrict(&self, keep: &BTreeSet<String>) -> Plan {
        Plan {
            services: self
                .services
                .iter()
                .filter(|s| keep.contains(&s.name))
                .cloned()
                .collect(),
        }
    }
}

/// Build the plan from `service -> depends-on`.
pub fn plan(deps: &BTreeMap<String, Vec<String>>) -> Result<Plan, PlanError> {
    for (name, ds) in deps {
        for d in ds {
            if !deps.contains_key(d) {
                return Err(PlanError::Missing {
                    plugin: name.clone(),
                    missing: d.clone(),
                    hint: did_you_mean(d, deps.keys().map(String::as_str)),
                });
            }
        }
    }
    if let Some(cycle) = find_cycle(deps) {
        return Err(PlanError::Cycle(cycle));
    }
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    fn depth<'a>(
        n: &'a str,
        deps: &'a BTreeMap<String, Vec<String>>,
        memo: &mut BTreeMap<&'a str, usize>,
    ) -> usize {
        if let Some(l) = memo.get(n) {
            return *l;
        }
        let l = deps[n]
            .iter()
            .map(|d| depth(d, deps, memo) + 1)
            .max()
            .unwrap_or(0);
        memo.insert(n, l);
        l
    }
    for n in deps.keys() {
        depth(n, deps, &mut level);
    }
    let mut services: Vec<Planned> = deps
        .iter()
        .map(|(n, ds)| Planned {
            name: n.clone(),
            depends_on: ds.clone(),
            level: level[n.as_str()],
        })
        .collect();
    services.sort_by(|a, b| a.level.cmp(&b.level).then(a.name.cmp(&b.name)));
    Ok(Plan { services })
}

fn find_cycle(deps: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark: BTreeMap<&str, Mark> = deps.keys().map(|k| (k.as_str(), Mark::New)).collect();
    fn visit<'a>(
        n: &'a str,
        deps: &'a BTreeMap<String, Vec<String>>,
        mark: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        mark.insert(n, Mark::Active);
        stack.push(n);
        for d in &deps[n] {
            match mark[d.as_str()] {
                Mark::Active => {
                    let start = stack.iter().position(|s| *s == d).unwrap_or(0);
                    return Some(stack[start..].iter().map(|s| s.to_string()).collect());
                }
                Mark::New => {
                    if let Some(c) = visit(d, deps, mark, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        mark.insert(n, Mark::Done);
        None
    }
    let keys: Vec<&str> = deps.keys().map(String::as_str).collect();
    for k in keys {
        if mark[k] == Mark::New {
            let mut stack = Vec::new();
            if let Some(c) = visit(k, deps, &mut mark, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(n, ds)| (n.to_string(), ds.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    #[test]
    fn levels_of_a_diamond() {
        let p = plan(&g(&[
            ("galera", &[]),
            ("rabbitmq", &[]),
            ("keystone", &["galera", "rabbitmq"]),
            ("nova", &["keystone"]),
            ("placement", &["keystone"]),
            ("nova-compute", &["nova", "placement"]),
        ]))
        .unwrap();
        let names: Vec<Vec<&str>> = p
            .levels()
            .iter()
            .map(|l| l.iter().map(|s| s.name.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            vec![
                vec!["galera", "rabbitmq"],
                vec!["keystone"],
                vec!["nova", "placement"],
                vec!["nova-compute"]
            ]
        );
        // every dependency before its dependent
        for (i, s) in p.services.iter().enumerate() {
            for d in &s.depends_on {
                assert!(p.services[..i].iter().any(|x| &x.name == d));
            }
        }
    }

    #[test]
    fn cycle_names_every_member() {
        let e = plan(&g(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a"]),
            ("d", &[]),
        ]))
        .unwrap_err();
        match &e {
            PlanError::Cycle(c) => {
                let set: BTreeSet<&str> = c.iter().map(String::as_str).collect();
                assert_eq!(set, BTreeSet::from(["a", "b", "c"]));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("a -> b -> c -> a"), "{e}");
    }

    #[test]
    fn self_cycle() {
        let e = plan(&g(&[("a", &["a"])])).unwrap_err();
        assert_eq!(e, PlanError::Cycle(vec!["a".into()]));
    }

    #[test]
    fn missing_names_plugin_and_closest() {
        let e = plan(&g(&[("keystone", &["galara"]), ("galera", &[])])).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("`keystone` depends on `galara`"), "{s}");
        assert!(s.contains("did you mean `galera`"), "{s}");
    }

    #[test]
    fn empty_plan() {
        assert!(plan(&BTreeMap::new()).unwrap().services.is_empty());
    }
}
