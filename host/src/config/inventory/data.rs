//! The inventory as Ansible builds it (its `InventoryData`): groups with
//! their variables, children and hosts, hosts with their variables, the
//! implicit `all` and `ungrouped`, and the rules every source follows
//! (a group is never its own descendant; a host's port from `host:port` is
//! set when the host is first seen; groups without parents become
//! children of `all`; a host in no group is in `ungrouped`).

use indexmap::IndexMap;
use serde_json::Value;

/// Variables in the order they were set.
pub type Vars = IndexMap<String, Value>;

/// A group.
#[derive(Debug, Default, Clone)]
pub struct Group {
    /// Its own variables (inline in the inventory source).
    pub vars: Vars,
    /// The file that set each of its variables (an index of `Data::files`).
    pub origin: IndexMap<String, usize>,
    /// Child groups, in the order added.
    pub children: Vec<String>,
    /// Parent groups.
    pub parents: Vec<String>,
    /// Hosts directly in it, in the order added (a set: membership is
    /// checked on every add, and an inventory may have 100 000 hosts).
    pub hosts: indexmap::IndexSet<String>,
    /// `ansible_group_priority` (1 unless set).
    pub priority: i64,
}

/// A host.
#[derive(Debug, Default, Clone)]
pub struct Host {
    /// Its own variables (inline in the inventory source).
    pub vars: Vars,
    /// The file that set each of its variables (an index of `Data::files`).
    pub origin: IndexMap<String, usize>,
    /// The groups it is directly in, in the order added.
    pub groups: Vec<String>,
}

/// Every group and host of every source, merged by name.
#[derive(Debug, Clone)]
pub struct Data {
    /// Groups by name, in the order first seen (`all`, `ungrouped` first).
    pub groups: IndexMap<String, Group>,
    /// Hosts by name, in the order first seen.
    pub hosts: IndexMap<String, Host>,
    /// Every inventory file read, in order.
    pub files: Vec<std::path::PathBuf>,
}

/// A violation of the inventory's rules, in Ansible's words.
pub type Problem = String;

impl Default for Data {
    fn default() -> Self {
        let mut d = Data {
            groups: IndexMap::new(),
            hosts: IndexMap::new(),
            files: Vec::new(),
        };
        d.add_group("all");
        d.add_group("ungrouped");
        d.add_child("all", "ungrouped")
            .expect("ungrouped is a new child of all");
        d
    }
}

impl Data {
    /// Add a group if it is not there.
    pub fn add_group(&mut self, name: &str) {
        if !self.groups.contains_key(name) {
            self.groups.insert(
                name.to_string(),
                Group {
                    priority: 1,
                    ..Group::default()
                },
            );
        }
    }

    /// Add a host if it is not there (setting `ansible_port` when `port` is
    /// given and the host is new, as Ansible does), and put it in `group`.
    pub fn add_host(
        &mut self,
        name: &str,
        group: Option<&str>,
        port: Option<u16>,
        source: usize,
    ) -> Result<(), Problem> {
        if name.is_empty() {
            return Err("an empty host name".into());
        }
        if !self.hosts.contains_key(name) {
            let mut h = Host::default();
            if let Some(p) = port {
                h.vars.insert("ansible_port".into(), Value::from(p));
                h.origin.insert("ansible_port".into(), source);
            }
            self.hosts.insert(name.to_string(), h);
        }
        if let Some(g) = group {
            let grp = self
                .groups
                .get_mut(g)
                .ok_or_else(|| format!("could not find group {g} in inventory"))?;
            if grp.hosts.insert(name.to_string()) {
                self.hosts[name].groups.push(g.to_string());
            }
        }
        Ok(())
    }

    /// Set a group's variable (`ansible_group_priority` sets its priority).
    pub fn set_group_var(
        &mut self,
        group: &str,
        key: &str,
        value: Value,
        file: usize,
    ) -> Result<(), Problem> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| format!("could not identify group named {group}"))?;
        if key == "ansible_group_priority" {
            g.priority = as_int(&value).ok_or_else(|| {
                format!("ansible_group_priority of group {group} is not an integer: {value}")
            })?;
        } else {
            g.vars.insert(key.to_string(), value);
            g.origin.insert(key.to_string(), file);
        }
        Ok(())
    }

    /// Set a host's variable.
    pub fn set_host_var(
        &mut self,
        host: &str,
        key: &str,
        value: Value,
        file: usize,
    ) -> Result<(), Problem> {
        let h = self
            .hosts
            .get_mut(host)
            .ok_or_else(|| format!("could not identify host named {host}"))?;
        h.vars.insert(key.to_string(), value);
        h.origin.insert(key.to_string(), file);
        Ok(())
    }

    /// Make `child` (a group, or else a host) a member of `parent`.
    pub fn add_child(&mut self, parent: &str, child: &str) -> Result<(), Problem> {
        if !self.groups.contains_key(parent) {
            return Err(format!("{parent} is not a known group"));
        }
        if self.groups.contains_key(child) {
            if parent == child {
                return Err(format!(
                    "the groups form a cycle: {child} -> {child}; group {child} cannot be a child of itself (Ansible refuses it too): remove this children entry"
                ));
            }
            if self.groups[parent].children.iter().any(|c| c == child) {
                return Ok(());
            }
            if self.ancestors(parent).iter().any(|a| a == child) {
                let mut cycle = self.path_down(child, parent);
                cycle.push(child.to_string());
                return Err(format!(
                    "the groups form a cycle: {}; adding group '{child}' as child to '{parent}' creates a recursive dependency loop (Ansible refuses it too): remove one of these children entries",
                    cycle.join(" -> ")
                ));
            }
            self.groups[parent].children.push(child.to_string());
            self.groups[child].parents.push(parent.to_string());
            Ok(())
        } else if self.hosts.contains_key(child) {
            self.add_host(child, Some(parent), None, 0)
        } else {
            Err(format!("{child} is not a known host nor group"))
        }
    }

    /// The groups from `from` down to `to` through `children`, both
    /// included (breadth first: the shortest way).
    fn path_down(&self, from: &str, to: &str) -> Vec<String> {
        let mut came: IndexMap<&str, &str> = IndexMap::new();
        let mut queue = std::collections::VecDeque::from([from]);
        while let Some(g) = queue.pop_front() {
            if g == to {
                break;
            }
            for c in &self.groups[g].children {
                if c != from && !came.contains_key(c.as_str()) {
                    came.insert(c, g);
                    queue.push_back(c);
                }
            }
        }
        let mut path = vec![to.to_string()];
        let mut at = to;
        while let Some(&p) = came.get(at) {
            path.push(p.to_string());
            at = p;
        }
        path.reverse();
        path
    }

    /// Every group containing `group`, transitively.
    pub fn ancestors(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut todo: Vec<&str> = vec![group];
        while let Some(g) = todo.pop() {
            for p in &self.groups[g].parents {
                if !out.contains(p) {
                    out.push(p.clone());
                    todo.push(p);
                }
            }
        }
        out
    }

    /// Ansible's `reconcile_inventory`: groups without a parent become
    /// children of `all`; a host in no group but `all` is in `ungrouped`,
    /// and one in another group is not.
    pub fn reconcile(&mut self) {
        let orphans: Vec<String> = self
            .groups
            .iter()
            .filter(|(n, g)| *n != "all" && g.parents.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        for g in orphans {
            let _ = self.add_child("all", &g);
        }
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        let ancestors = self.all_ancestors();
        for h in names {
            let groups = self.host_groups(&h, &ancestors);
            let in_ungrouped = groups.iter().any(|g| g == "ungrouped");
            let others = groups.iter().any(|g| g != "all" && g != "ungrouped");
            if in_ungrouped && others {
                self.groups["ungrouped"].hosts.shift_remove(&h);
                self.hosts[&h].groups.retain(|g| g != "ungrouped");
            } else if !in_ungrouped && !others {
                let _ = self.add_host(&h, Some("ungrouped"), None, 0);
            }
        }
    }

    /// Every group's ancestors, computed once for all hosts.
    pub fn all_ancestors(&self) -> IndexMap<String, Vec<String>> {
        self.groups
            .keys()
            .map(|g| (g.clone(), self.ancestors(g)))
            .collect()
    }

    /// The groups a host is in, directly or through children (with their
    /// ancestors, `all` included once reconciled), from its own list of
    /// groups: never a scan of every group's hosts.
    pub fn host_groups(
        &self,
        host: &str,
        ancestors: &IndexMap<String, Vec<String>>,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in &self.hosts[host].groups {
            for name in std::iter::once(g).chain(&ancestors[g.as_str()]) {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
        }
        out
    }

    /// Each group's depth: the longest path to it from `all` (0).
    pub fn depths(&self) -> IndexMap<String, usize> {
        fn depth(d: &Data, g: &str, memo: &mut IndexMap<String, usize>) -> usize {
            if let Some(&v) = memo.get(g) {
                return v;
            }
            let v = d.groups[g]
                .parents
                .iter()
                .map(|p| depth(d, p, memo) + 1)
                .max()
                .unwrap_or(0);
            memo.insert(g.to_string(), v);
            v
        }
        let mut memo = IndexMap::new();
        for g in self.groups.keys() {
            depth(self, g, &mut memo);
        }
        memo
    }

    /// Groups in the order Ansible applies their variables: by depth, then
    /// priority, then name.
    pub fn sorted(&self, groups: &[String], depths: &IndexMap<String, usize>) -> Vec<String> {
        let mut v: Vec<String> = groups.to_vec();
        v.sort_by(|a, b| {
            (
                depths[a.as_str()],
                self.groups[a.as_str()].priority,
                a.as_str(),
            )
                .cmp(&(
                    depths[b.as_str()],
                    self.groups[b.as_str()].priority,
                    b.as_str(),
                ))
        });
        v
    }
}

/// An integer, as Python's `int()` reads a number or a numeric string.
pub fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(*b as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_refused_and_depth_is_the_longest_path() {
        let mut d = Data::default();
        for g in ["a", "b", "c"] {
            d.add_group(g);
        }
        d.add_child("a", "b").unwrap();
        d.add_child("b", "c").unwrap();
        let e = d.add_child("c", "a").unwrap_err();
        assert!(
            e.contains("the groups form a cycle: a -> b -> c -> a"),
            "{e}"
        );
        assert!(d.add_child("a", "a").unwrap_err().contains("a -> a"));
        d.add_child("a", "c").unwrap();
        d.reconcile();
        let depth = d.depths();
        assert_eq!((depth["a"], depth["b"], depth["c"]), (1, 2, 3));
    }

    #[test]
    fn a_host_only_in_all_is_ungrouped_and_leaves_ungrouped_when_grouped() {
        let mut d = Data::default();
        d.add_host("h1", Some("all"), None, 0).unwrap();
        d.add_host("h2", Some("ungrouped"), None, 0).unwrap();
        d.add_group("g");
        d.add_host("h2", Some("g"), Some(2222), 0).unwrap();
        d.reconcile();
        assert!(d.groups["ungrouped"].hosts.iter().eq(["h1"]));
        assert_eq!(d.hosts["h2"].groups, ["g"]);
        // The port is set only when the host is first seen.
        assert!(!d.hosts["h2"].vars.contains_key("ansible_port"));
    }
}
