//! Pacemaker: the node guard of a rolling minor update of the controllers,
//! after TripleO's minor update (one controller at a time: the node leaves
//! the cluster, its packages are updated, it rejoins and the cluster is
//! verified before the next node).
//!
//! * check / verify: every controller `Online` in `pcs status nodes`, the
//!   resources listed (`pcs status resources`);
//! * leave(node): refuse while another controller is already out of the
//!   cluster (never two out at once), then take the node out —
//!   `pcs node standby NODE` (its resources move away, the node stays a
//!   member) or, with `leave: cluster-stop`, `pcs cluster stop NODE` as
//!   TripleO's update script does — and wait for the cluster to settle
//!   (`crm_resource --wait`) on a node still in it;
//! * upgrade(node): the cluster stack's own package, while the node is out;
//! * rejoin(node): `pcs node unstandby NODE` (or `pcs cluster start NODE`),
//!   wait for the cluster to settle, then verify: the node `Online` again,
//!   every other controller `Online`, the resources listed. A failure stops
//!   the run before the next node, the node left as it is.
//!
//! Parameters: `leave` (`standby` or `cluster-stop`), `settle_timeout_s`
//! (`300`), `package` (`pacemaker`).

use uphost_sdk::prelude::*;

/// The plugin.
pub struct Pacemaker;

/// The nodes listed as Online, and the others with their state (Standby,
/// Maintenance, Offline).
type Membership = (Vec<String>, Vec<(String, String)>);

/// `pcs status nodes`, read.
fn parse_nodes(text: &str) -> Membership {
    let mut online = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((state, names)) = line.trim().split_once(':') else {
            continue;
        };
        let names = names.split_whitespace().map(str::to_string);
        match state.trim() {
            "Online" => online.extend(names),
            s @ ("Standby" | "Standby with resource(s) running" | "Maintenance" | "Offline") => {
                out.extend(names.map(|n| (n, s.to_string())))
            }
            _ => {}
        }
    }
    (online, out)
}

fn nodes_state(cx: &Cx, on: &str) -> Result<Membership> {
    let out = cx.run(on, "pcs", &["status", "nodes"])?;
    Ok(parse_nodes(&out.stdout_text()))
}

/// Every controller of the service online, as seen from `on`; `except`
/// may be out (the node being updated).
fn all_online(cx: &Cx, on: &str, except: Option<&str>) -> Result<()> {
    let (online, out) = nodes_state(cx, on)?;
    for n in cx.nodes() {
        if Some(n.name.as_str()) == except || online.contains(&n.name) {
            continue;
        }
        let state = out
            .iter()
            .find(|(m, _)| m == &n.name)
            .map_or("not listed", |(_, s)| s.as_str());
        bail!(
            "pacemaker: {} is {state} (pcs status nodes on {on}); bring it back into the cluster (`pcs node unstandby {}` or `pcs cluster start {}`) before updating another controller",
            n.name,
            n.name,
            n.name
        );
    }
    cx.run(on, "pcs", &["status", "resources"])
        .map_err(|e| e.context("pacemaker does not list its resources"))?;
    Ok(())
}

fn mode<'a>(cx: &'a Cx) -> Result<&'a str> {
    match cx.param_or("leave", "standby") {
        m @ ("standby" | "cluster-stop") => Ok(m),
        other => bail!("parameter leave: `{other}` is neither `standby` nor `cluster-stop`"),
    }
}

/// A controller other than `node`, still in the cluster, to ask: the last
/// one (in a rolling update, the one that has been in the cluster longest).
fn peer<'a>(cx: &'a Cx, node: &str) -> Result<&'a Node> {
    cx.nodes()
        .iter()
        .rev()
        .find(|n| n.name != node)
        .ok_or_else(|| {
            Error::msg("pacemaker: a cluster of one node cannot be updated node by node")
        })
}

fn settle(cx: &Cx, on: &str) -> Result<()> {
    let t: u32 = cx.param_parse("settle_timeout_s", 300)?;
    cx.run(on, "crm_resource", &["--wait", &format!("--timeout={t}s")])
        .map_err(|e| e.context(format!("the cluster did not settle within {t} s")))?;
    Ok(())
}

impl Plugin for Pacemaker {
    fn describe() -> Info {
        Info::new(
            "pacemaker",
            "Pacemaker node guard: standby (or cluster stop) before a controller's update, rejoin and verify after",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .rollout(Rollout::OneAtATime)
        .node_guard(true)
        .capabilities([
            Capability::read_only("pcs", &["status", "nodes|resources"])
                .reason("which controllers are in the cluster, and its resources"),
            Capability::mutating("pcs", &["node", "standby|unstandby", "*"])
                .reason("take a controller out of the cluster for its update, and back"),
            Capability::mutating("pcs", &["cluster", "stop|start", "*"])
                .reason("stop the cluster on a controller for its update (leave: cluster-stop), and start it"),
            Capability::read_only("crm_resource", &["--wait", "--timeout=*s"])
                .reason("wait until the cluster has settled"),
            Capability::mutating("apt-get", &["install", "-y", "pacemaker=*"])
                .reason("update the cluster stack while the node is out"),
        ])
    }

    fn check(cx: &Cx) -> Result<()> {
        mode(cx)?;
        cx.param_parse("settle_timeout_s", 300u32)?;
        let first = cx.primary()?.name.clone();
        all_online(cx, &first, None)
    }

    fn verify(cx: &Cx) -> Result<()> {
        let first = cx.primary()?.name.clone();
        all_online(cx, &first, None)
    }

    fn leave(cx: &Cx, node: &Node) -> Result<()> {
        let peer = peer(cx, &node.name)?.name.clone();
        let (online, _) = nodes_state(cx, &peer)?;
        if online.contains(&node.name) {
            // Never two out at once: every other controller must be in.
            all_online(cx, &peer, Some(&node.name))?;
            match mode(cx)? {
                "standby" => cx.run(&node.name, "pcs", &["node", "standby", &node.name])?,
                _ => cx.run(&node.name, "pcs", &["cluster", "stop", &node.name])?,
            };
        }
        settle(cx, &peer)
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let pkg = cx.param_or("package", "pacemaker");
        if pkg != "pacemaker" {
            bail!("parameter package: only `pacemaker` is granted");
        }
        cx.run(
            &node.name,
            "apt-get",
            &["install", "-y", &format!("pacemaker={}", cx.ctx.to_version)],
        )?;
        Ok(())
    }

    fn rejoin(cx: &Cx, node: &Node) -> Result<()> {
        match mode(cx)? {
            "standby" => cx.run(&node.name, "pcs", &["node", "unstandby", &node.name])?,
            _ => cx.run(&node.name, "pcs", &["cluster", "start", &node.name])?,
        };
        settle(cx, &node.name)?;
        all_online(cx, &node.name, None).map_err(|e| {
            e.context(format!(
                "the cluster check after {} rejoined failed",
                node.name
            ))
        })
    }
}

export_plugin!(Pacemaker);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pcs_status_nodes() {
        let (online, out) = parse_nodes(
            "Pacemaker Nodes:\n Online: ctl1 ctl3\n Standby: ctl2\n Maintenance:\n Offline:\n",
        );
        assert_eq!(online, ["ctl1", "ctl3"]);
        assert_eq!(out, [("ctl2".to_string(), "Standby".to_string())]);
    }
}
