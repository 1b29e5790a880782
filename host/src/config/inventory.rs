//! Ansible's YAML inventory format: groups are roles; `ansible_host`,
//! `ansible_port`, `ansible_user`, `ansible_connection` and
//! `ansible_ssh_private_key_file` are honoured, group `vars` are inherited by
//! hosts (host vars win), `children` nest groups.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

use super::yaml::{self, ConfigError};

/// How the host reaches a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connection {
    /// Run on this machine.
    Local,
    /// The system OpenSSH client.
    Ssh,
    /// Execute nothing (rehearsals, scale benchmarks).
    DryRun,
}

/// A node from the inventory.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeSpec {
    /// Inventory name.
    pub name: String,
    /// `ansible_host`, or the name.
    pub address: String,
    /// `ansible_port`.
    pub port: Option<u16>,
    /// `ansible_user`.
    pub user: Option<String>,
    /// `ansible_ssh_private_key_file`.
    pub key_file: Option<PathBuf>,
    /// `ansible_connection` (default ssh, as in Ansible).
    pub connection: Connection,
    /// Groups the node belongs to, directly or through `children`.
    pub roles: Vec<String>,
    /// `uphost_node_root`: a directory whose `bin/` is put first on PATH for
    /// local commands and exported as `UPHOST_NODE_ROOT` (simulated nodes).
    pub node_root: Option<PathBuf>,
}

/// A parsed inventory.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Nodes in the order they first appear, shared (every service's node
    /// set and target list points at these: nothing is copied per service).
    pub nodes: Vec<std::sync::Arc<NodeSpec>>,
    /// Every group name.
    pub groups: BTreeSet<String>,
}

impl Inventory {
    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name).map(|n| &**n)
    }
}

type Vars = IndexMap<String, serde_yaml_ng::Value>;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GroupDef {
    #[serde(default)]
    hosts: Option<IndexMap<String, Option<Vars>>>,
    #[serde(default)]
    vars: Option<Vars>,
    #[serde(default)]
    children: Option<IndexMap<String, Option<GroupDef>>>,
}

/// Every group of the document, merged by name.
#[derive(Default)]
struct Group {
    hosts: Vec<(String, Vars)>,
    vars: Vars,
    children: Vec<String>,
}

fn collect(name: &str, def: &GroupDef, groups: &mut IndexMap<String, Group>) {
    let g = groups.entry(name.to_string()).or_default();
    for (host, hvars) in def.hosts.iter().flatten() {
        g.hosts
            .push((host.clone(), hvars.clone().unwrap_or_default()));
    }
    if let Some(v) = &def.vars {
        g.vars.extend(v.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let children: Vec<String> = def
        .children
        .iter()
        .flatten()
        .map(|(c, _)| c.clone())
        .collect();
    for c in &children {
        if !g.children.contains(c) {
            g.children.push(c.clone());
        }
    }
    for (child, cdef) in def.children.iter().flatten() {
        let empty = GroupDef::default();
        collect(child, cdef.as_ref().unwrap_or(&empty), groups);
    }
}

/// A cycle of `children` (`a` child of `b` child of `a`, or a group its
/// own child), every member in order and the first again at the end.
fn group_cycle(groups: &IndexMap<String, Group>) -> Option<Vec<String>> {
    // Iterative depth-first search (an inventory can be deep): 0 unseen,
    // 1 on the current path, 2 done.
    let mut mark: IndexMap<&str, u8> = groups.keys().map(|k| (k.as_str(), 0)).collect();
    for start in groups.keys() {
        if mark[start.as_str()] != 0 {
            continue;
        }
        let mut path: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        mark[start.as_str()] = 1;
        while let Some((node, next)) = path.last_mut() {
            let children = groups
                .get(*node)
                .map(|g| g.children.as_slice())
                .unwrap_or(&[]);
            if let Some(child) = children.get(*next) {
                *next += 1;
                match mark.get(child.as_str()).copied().unwrap_or(2) {
                    0 => {
                        mark[child.as_str()] = 1;
                        path.push((child.as_str(), 0));
                    }
                    1 => {
                        let from = path.iter().position(|(n, _)| *n == child).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            path[from..].iter().map(|(n, _)| n.to_string()).collect();
                        cycle.push(child.clone());
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                mark[*node] = 2;
                path.pop();
            }
        }
    }
    None
}

/// Groups containing `group`, transitively (its ancestors), nearest last.
fn ancestors(group: &str, groups: &IndexMap<String, Group>, out: &mut Vec<String>) {
    for (name, g) in groups {
        if g.children.iter().any(|c| c == group) && !out.contains(name) {
            ancestors(name, groups, out);
            out.push(name.clone());
        }
    }
}

fn scalar(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parse an inventory file.
pub fn load(path: &Path) -> Result<Inventory, ConfigError> {
    let doc: IndexMap<String, Option<GroupDef>> = yaml::read(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut groups: IndexMap<String, Group> = IndexMap::new();
    for (name, def) in &doc {
        let empty = GroupDef::default();
        collect(name, def.as_ref().unwrap_or(&empty), &mut groups);
    }
    if let Some(cycle) = group_cycle(&groups) {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            at: format!("children of `{}`", cycle[cycle.len() - 2]),
            message: format!(
                "the groups form a cycle: {}; a group cannot be its own descendant (Ansible refuses it too): remove one of these `children` entries",
                cycle.join(" -> ")
            ),
        });
    }
    // Host -> its groups (direct, then ancestors) and merged vars: `all`,
    // then ancestor groups, then the direct group, then the host's own.
    // Hosts in the order they first appear (IndexMap keeps it).
    let mut host_vars: IndexMap<String, Vars> = IndexMap::new();
    let mut host_roles: IndexMap<String, Vec<String>> = IndexMap::new();
    let all_vars = groups
        .get("all")
        .map(|g| g.vars.clone())
        .unwrap_or_default();
    for (gname, g) in &groups {
        let mut chain = Vec::new();
        ancestors(gname, &groups, &mut chain);
        chain.push(gname.clone());
        for (host, hv) in &g.hosts {
            let vars = host_vars
                .entry(host.clone())
                .or_insert_with(|| all_vars.clone());
            for gn in &chain {
                if let Some(gg) = groups.get(gn) {
                    vars.extend(gg.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            vars.extend(hv.iter().map(|(k, v)| (k.clone(), v.clone())));
            let roles = host_roles.entry(host.clone()).or_default();
            for gn in &chain {
                if gn != "all" && gn != "ungrouped" && !roles.contains(gn) {
                    roles.push(gn.clone());
                }
            }
        }
    }
    let c_groups: BTreeSet<String> = groups
        .keys()
        .filter(|g| *g != "all" && *g != "ungrouped")
        .cloned()
        .collect();
    let invalid = |host: &str, key: &str, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        at: format!("host {host}, {key}"),
        message,
    };
    let mut nodes = Vec::new();
    for (host, vars) in &host_vars {
        let get = |k: &str| -> Result<Option<String>, ConfigError> {
            match vars.get(k) {
                None | Some(serde_yaml_ng::Value::Null) => Ok(None),
                Some(v) => scalar(v)
                    .map(Some)
                    .ok_or_else(|| invalid(host, k, "expected a string or a number".into())),
            }
        };
        let port = match get("ansible_port")? {
            None => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| {
                invalid(
                    host,
                    "ansible_port",
                    format!("`{p}` is not a TCP port (1-65535)"),
                )
            })?),
        };
        let connection = match get("ansible_connection")?.as_deref() {
            None | Some("ssh") | Some("smart") | Some("paramiko") => Connection::Ssh,
            Some("local") => Connection::Local,
            Some("dry-run") => Connection::DryRun,
            Some(other) => {
                return Err(invalid(
                    host,
                    "ansible_connection",
                    format!("`{other}` is not supported; use `local`, `ssh` or `dry-run`"),
                ));
            }
        };
        nodes.push(std::sync::Arc::new(NodeSpec {
            name: host.clone(),
            address: get("ansible_host")?.unwrap_or_else(|| host.clone()),
            port,
            user: get("ansible_user")?,
            key_file: get("ansible_ssh_private_key_file")?.map(|p| base.join(p)),
            connection,
            roles: host_roles.get(host).cloned().unwrap_or_default(),
            node_root: get("uphost_node_root")?.map(|p| base.join(p)),
        }));
    }
    Ok(Inventory {
        nodes,
        groups: c_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inventory.yaml");
        std::fs::write(&p, text).unwrap();
        load(&p)
    }

    #[test]
    fn groups_children_and_vars() {
        let inv = parse(
            r#"
all:
  vars:
    ansible_user: ops
  children:
    controller:
      vars:
        ansible_connection: local
      hosts:
        ctl1: {ansible_host: 10.0.0.1}
        ctl2:
    compute:
      hosts:
        cmp1: {ansible_port: 2222, ansible_user: root}
    openstack:
      children:
        controller:
        compute:
"#,
        )
        .unwrap();
        assert_eq!(inv.nodes.len(), 3);
        let ctl1 = inv.node("ctl1").unwrap();
        assert_eq!(ctl1.address, "10.0.0.1");
        assert_eq!(ctl1.connection, Connection::Local);
        assert_eq!(ctl1.user.as_deref(), Some("ops"));
        assert!(ctl1.roles.contains(&"controller".to_string()));
        assert!(ctl1.roles.contains(&"openstack".to_string()));
        let cmp1 = inv.node("cmp1").unwrap();
        assert_eq!(cmp1.port, Some(2222));
        assert_eq!(cmp1.user.as_deref(), Some("root"));
        assert_eq!(cmp1.connection, Connection::Ssh);
        assert_eq!(cmp1.address, "cmp1");
    }

    #[test]
    fn bad_port_names_host_and_key() {
        let e = parse("all:\n  hosts:\n    h1: {ansible_port: 99999}\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("host h1, ansible_port"), "{s}");
        assert!(s.contains("99999"), "{s}");
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let e = parse("all:\n  hosts:\n    h1: {ansible_port: 1\n").unwrap_err();
        match e {
            ConfigError::Syntax { line, .. } => assert!(line >= 3, "{line}"),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn group_cycles_are_named_in_order() {
        let e = parse("all:\n  children:\n    a:\n      children:\n        b:\n    b:\n      children:\n        a:\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("the groups form a cycle: a -> b -> a"), "{e}");
        let e = parse("all:\n  children:\n    a:\n      children:\n        a:\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cycle: a -> a"), "{e}");
    }

    #[test]
    fn unknown_group_key_is_rejected() {
        let e = parse("all:\n  hostz:\n    h1:\n").unwrap_err();
        assert!(e.to_string().contains("hostz"), "{e}");
    }
}
