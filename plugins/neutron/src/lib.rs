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
//!
//! In containers (`deploy: containers`: kolla's `neutron_server`,
//! `neutron_l3_agent`, `neutron_openvswitch_agent`): each old container and
//! image removed and the new one created with its configuration; the
//! migration runs in a throw-away container of the new `neutron_server`
//! image with its volumes.
//!
//! Parameters: `deploy`, `engine`, `registry`, `config_dir` of
//! `uphost_sdk::deploy`.

use uphost_sdk::deploy::{self, Deploy, Unit};
use uphost_sdk::prelude::*;
use uphost_sdk::releases;

/// State key: the server is stopped for a leapfrog's migrations.
const STOPPED: &str = "stopped_for_migrations";

/// The plugin.
pub struct Neutron;

/// The server: unit, package, kolla container.
pub const SERVER: Unit<'static> = Unit {
    unit: "neutron-server",
    package: "neutron-server",
    container: "neutron_server",
};

/// The agents restarted on each node.
pub const AGENTS: [Unit<'static>; 2] = [
    Unit {
        unit: "neutron-l3-agent",
        package: "neutron-l3-agent",
        container: "neutron_l3_agent",
    },
    Unit {
        unit: "neutron-openvswitch-agent",
        package: "neutron-openvswitch-agent",
        container: "neutron_openvswitch_agent",
    },
];

/// `neutron-db-manage upgrade heads` with the code of release `v`.
fn migrate_db(cx: &Cx, node: &str, v: &str) -> Result<()> {
    Deploy::of(cx)?
        .run_once(
            cx,
            node,
            SERVER,
            v,
            "neutron-db-manage",
            &["upgrade", "heads"],
        )
        .map(drop)
}

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
        .capabilities(deploy::capabilities(
            "neutron-server|neutron-l3-agent|neutron-openvswitch-agent",
            "neutron-server",
            "neutron_server|neutron_l3_agent|neutron_openvswitch_agent",
        ))
        .capabilities([
            Capability::mutating(
                "apt-get",
                &[
                    "install",
                    "-y",
                    "neutron-l3-agent=*",
                    "neutron-openvswitch-agent=*",
                ],
            )
            .reason("install the agents (packages)"),
            Capability::read_only(
                "openstack",
                &[
                    "network", "agent", "list", "-f", "value", "-c", "Host", "-c", "Alive",
                ],
            )
            .reason("agents alive after their restart"),
        ])
        .capabilities(deploy::in_throwaway(
            "neutron_server",
            [
                Capability::mutating("neutron-db-manage", &["upgrade", "heads"])
                    .reason("schema migration"),
            ],
        ))
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
        let d = Deploy::of(cx)?;
        for n in cx.nodes() {
            d.is_active(cx, &n.name, SERVER)?;
        }
        Ok(())
    }

    fn migrate(cx: &Cx) -> Result<()> {
        let d = Deploy::of(cx)?;
        if cx.state_get(STOPPED).is_none() {
            for n in cx.nodes() {
                d.stop(cx, &n.name, SERVER)?;
            }
            cx.state_set(STOPPED, &cx.ctx.from_version);
            cx.progress("service-down");
        }
        let p = cx.primary()?.name.clone();
        let (from, to) = (&cx.ctx.from_version, &cx.ctx.to_version);
        d.install(cx, &p, SERVER, from, to)?;
        migrate_db(cx, &p, to)
    }

    fn pre_upgrade(cx: &Cx) -> Result<()> {
        let d = Deploy::of(cx)?;
        let (from, to) = (&cx.ctx.from_version, &cx.ctx.to_version);
        for n in cx.nodes() {
            d.stop(cx, &n.name, SERVER)?;
        }
        cx.progress("service-down");
        for n in cx.nodes() {
            d.install(cx, &n.name, SERVER, from, to)?;
        }
        migrate_db(cx, &cx.primary()?.name, to)?;
        for n in cx.nodes() {
            d.start(cx, &n.name, SERVER)?;
        }
        cx.state_delete(STOPPED);
        cx.progress("service-up");
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let d = Deploy::of(cx)?;
        d.install_all(
            cx,
            &node.name,
            &AGENTS,
            &cx.ctx.from_version,
            &cx.ctx.to_version,
        )?;
        for a in AGENTS {
            d.restart(cx, &node.name, a)?;
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
