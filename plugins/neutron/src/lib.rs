//! Neutron: the server first, then the agents node by node so that one L3
//! agent is always up (the leapfrog keeps one agents container running to
//! limit data-plane downtime). Pre-upgrade: stop neutron-server on every
//! controller, install the new server, `neutron-db-manage upgrade heads`
//! once, start the servers. Upgrade (one node at a time): install the new
//! agents, restart them on that node only, verify they report alive.
//!
//! In a release train: OpenStack's releases (SLURP jumps allowed); a
//! leapfrog's migrations-only hop stops the server everywhere and runs that
//! release's `neutron-db-manage upgrade heads` with its server installed
//! on the first node. `verify`: the server active everywhere.

use uphost_sdk::prelude::*;
use uphost_sdk::releases;

/// State key: the server is stopped for a leapfrog's migrations.
const STOPPED: &str = "stopped_for_migrations";

/// The plugin.
pub struct Neutron;

/// The agents restarted on each node.
pub const AGENTS: [&str; 2] = ["neutron-l3-agent", "neutron-openvswitch-agent"];

/// Agents reported dead in `openstack network agent list -f value -c Host
/// -c Alive` output (`host binary alive` lines in the simulator).
pub fn dead_agents(out: &str, host: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.split_whitespace().next() == Some(host))
        .filter(|l| l.split_whitespace().last() != Some("True"))
        .map(|l| l.to_string())
        .collect()
}

impl Plugin for Neutron {
    fn describe() -> Info {
        Info::new(
            "neutron",
            "Neutron: server and db migration first, then agents one node at a time",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .depends_on(&["keystone", "rabbitmq", "galera"])
        .rollout(Rollout::OneAtATime)
        .reversible(false)
        .releases(releases::OPENSTACK)
        .jumps(releases::OPENSTACK_SLURP)
        .migrations_only(true)
        .capabilities([
            Capability::mutating("systemctl", &["start|stop", "neutron-server"])
                .reason("server restart"),
            Capability::mutating(
                "systemctl",
                &["restart", "neutron-l3-agent|neutron-openvswitch-agent"],
            )
            .reason("agents, one node at a time"),
            Capability::read_only("systemctl", &["is-active", "neutron-server"])
                .reason("pre-flight"),
            Capability::mutating("apt-get", &["install", "-y", "neutron-server=*"])
                .reason("install the server"),
            Capability::mutating(
                "apt-get",
                &[
                    "install",
                    "-y",
                    "neutron-l3-agent=*",
                    "neutron-openvswitch-agent=*",
                ],
            )
            .reason("install the agents"),
            Capability::mutating("neutron-db-manage", &["upgrade", "heads"])
                .reason("schema migration"),
            Capability::read_only(
                "openstack",
                &[
                    "network", "agent", "list", "-f", "value", "-c", "Host", "-c", "Alive",
                ],
            )
            .reason("agents alive after their restart"),
        ])
    }

    fn check(cx: &Cx) -> Result<()> {
        cx.require_every_node(
            "stops neutron-server on every node and migrates the database once before any agent is upgraded",
        )?;
        if cx.state_get(STOPPED).is_some() {
            return Ok(());
        }
        Self::verify(cx)
    }

    fn verify(cx: &Cx) -> Result<()> {
        for n in cx.nodes() {
            cx.run(&n.name, "systemctl", &["is-active", "neutron-server"])?;
        }
        Ok(())
    }

    fn migrate(cx: &Cx) -> Result<()> {
        if cx.state_get(STOPPED).is_none() {
            for n in cx.nodes() {
                cx.run(&n.name, "systemctl", &["stop", "neutron-server"])?;
            }
            cx.state_set(STOPPED, &cx.ctx.from_version);
            cx.progress("service-down");
        }
        let p = cx.primary()?.name.clone();
        cx.run(
            &p,
            "apt-get",
            &[
                "install",
                "-y",
                &format!("neutron-server={}", cx.ctx.to_version),
            ],
        )?;
        cx.run(&p, "neutron-db-manage", &["upgrade", "heads"])?;
        Ok(())
    }

    fn pre_upgrade(cx: &Cx) -> Result<()> {
        let v = cx.ctx.to_version.clone();
        for n in cx.nodes() {
            cx.run(&n.name, "systemctl", &["stop", "neutron-server"])?;
        }
        cx.progress("service-down");
        for n in cx.nodes() {
            cx.run(
                &n.name,
                "apt-get",
                &["install", "-y", &format!("neutron-server={v}")],
            )?;
        }
        cx.run(
            &cx.primary()?.name,
            "neutron-db-manage",
            &["upgrade", "heads"],
        )?;
        for n in cx.nodes() {
            cx.run(&n.name, "systemctl", &["start", "neutron-server"])?;
        }
        cx.state_delete(STOPPED);
        cx.progress("service-up");
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let v = cx.ctx.to_version.clone();
        cx.run(
            &node.name,
            "apt-get",
            &[
                "install",
                "-y",
                &format!("neutron-l3-agent={v}"),
                &format!("neutron-openvswitch-agent={v}"),
            ],
        )?;
        for a in AGENTS {
            cx.run(&node.name, "systemctl", &["restart", a])?;
        }
        let out = cx.run(
            &node.name,
            "openstack",
            &[
                "network", "agent", "list", "-f", "value", "-c", "Host", "-c", "Alive",
            ],
        )?;
        let dead = dead_agents(&out.stdout_text(), &node.name);
        if !dead.is_empty() {
            bail!(
                "agents on {} are not alive after the restart: {}",
                node.name,
                dead.join("; ")
            );
        }
        Ok(())
    }
}

export_plugin!(Neutron);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_agents_are_found_per_host() {
        let out = "ctl1 neutron-l3-agent True\nctl2 neutron-l3-agent False\n";
        assert!(dead_agents(out, "ctl1").is_empty());
        assert_eq!(dead_agents(out, "ctl2").len(), 1);
    }
}
