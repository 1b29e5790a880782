//! Nova control plane (Newton→Ocata): RPC pin before anything moves
//! (`crudini --set /etc/nova/nova.conf upgrade_levels compute auto`), stop
//! the services everywhere, install, then once: `nova-manage api_db sync`,
//! cells v2 (`map_cell0`, `create_cell --name=cell1` if missing), `db sync`;
//! start everywhere. Finalize, once every service runs the new version:
//! `cell_v2 discover_hosts` for the upgraded computes and RPC unpin with a
//! restart. Rollback reinstalls the previous version and unpins (the
//! database is restored by galera's rollback).
//!
//! In a release train: OpenStack's releases (SLURP jumps allowed), cells v2
//! only from Ocata (where it became mandatory); a leapfrog's
//! migrations-only hop stops the services everywhere and runs that
//! release's `api_db sync` and `db sync` with its code on the first node.
//! `verify`: every unit active.
//!
//! Parameters: `rpc_pin` (`auto`).

use uphost_sdk::prelude::*;
use uphost_sdk::releases;

/// State key: the services are stopped for a leapfrog's migrations.
const STOPPED: &str = "stopped_for_migrations";

/// The plugin.
pub struct Nova;

/// The control-plane units.
pub const UNITS: [&str; 3] = ["nova-api", "nova-scheduler", "nova-conductor"];
const CONF: &str = "/etc/nova/nova.conf";

fn each_unit(cx: &Cx, node: &str, verb: &str) -> Result<()> {
    for u in UNITS {
        cx.run(node, "systemctl", &[verb, u])?;
    }
    Ok(())
}

fn install(cx: &Cx, node: &str, v: &str) -> Result<()> {
    cx.run(
        node,
        "apt-get",
        &[
            "install",
            "-y",
            &format!("nova-api={v}"),
            &format!("nova-conductor={v}"),
            &format!("nova-scheduler={v}"),
        ],
    )?;
    Ok(())
}

/// Cells v2 (cell0 mapped, cell1 created once): mandatory from Ocata, so
/// done on a hop to Ocata or later only.
fn cells_v2(cx: &Cx, p: &str) -> Result<()> {
    if !releases::at_least(releases::OPENSTACK, &cx.ctx.to_version, "ocata") {
        return Ok(());
    }
    cx.run(p, "nova-manage", &["cell_v2", "map_cell0"])?;
    let cells = cx.run(p, "nova-manage", &["cell_v2", "list_cells"])?;
    if !cells
        .stdout_text()
        .lines()
        .any(|l| l.trim() == "cell1" || l.contains("| cell1 "))
    {
        cx.run(
            p,
            "nova-manage",
            &["cell_v2", "create_cell", "--name=cell1"],
        )?;
    }
    Ok(())
}

impl Plugin for Nova {
    fn describe() -> Info {
        Info::new(
            "nova",
            "Nova control plane: RPC pin, stop, db sync, cells v2, start; unpin in finalize",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .depends_on(&["keystone", "placement", "rabbitmq", "galera"])
        .rollout(Rollout::Parallel)
        .reversible(true)
        .releases(releases::OPENSTACK)
        .jumps(releases::OPENSTACK_SLURP)
        .migrations_only(true)
        .capabilities([
            Capability::mutating(
                "crudini",
                &["--set", CONF, "upgrade_levels", "compute", "*"],
            )
            .reason("RPC pin while versions are mixed"),
            Capability::mutating("crudini", &["--del", CONF, "upgrade_levels", "compute"])
                .reason("RPC unpin once every service runs the new version"),
            Capability::mutating(
                "systemctl",
                &[
                    "start|stop|restart",
                    "nova-api|nova-scheduler|nova-conductor",
                ],
            )
            .reason("stop for the upgrade, start after, restart after unpin"),
            Capability::read_only(
                "systemctl",
                &["is-active", "nova-api|nova-scheduler|nova-conductor"],
            )
            .reason("pre-flight"),
            Capability::mutating(
                "apt-get",
                &[
                    "install",
                    "-y",
                    "nova-api=*",
                    "nova-conductor=*",
                    "nova-scheduler=*",
                ],
            )
            .reason("install"),
            Capability::mutating("nova-manage", &["api_db|db", "sync"]).reason("schema migrations"),
            Capability::mutating("nova-manage", &["cell_v2", "map_cell0|discover_hosts"])
                .reason("cells v2: cell0, and map the upgraded computes"),
            Capability::mutating("nova-manage", &["cell_v2", "create_cell", "--name=cell1"])
                .reason("cells v2: cell1"),
            Capability::read_only("nova-manage", &["cell_v2", "list_cells"])
                .reason("is cell1 there?"),
        ])
    }

    fn check(cx: &Cx) -> Result<()> {
        cx.require_every_node(
            "stops the nova control services on every controller and migrates the database once, with RPC pinned until finalize",
        )?;
        if cx.state_get(STOPPED).is_some() {
            return Ok(());
        }
        Self::verify(cx)
    }

    fn verify(cx: &Cx) -> Result<()> {
        for n in cx.nodes() {
            for u in UNITS {
                cx.run(&n.name, "systemctl", &["is-active", u])?;
            }
        }
        Ok(())
    }

    fn migrate(cx: &Cx) -> Result<()> {
        if cx.state_get(STOPPED).is_none() {
            for n in cx.nodes() {
                each_unit(cx, &n.name, "stop")?;
            }
            cx.state_set(STOPPED, &cx.ctx.from_version);
            cx.progress("service-down");
        }
        let p = cx.primary()?.name.clone();
        install(cx, &p, &cx.ctx.to_version)?;
        cx.run(&p, "nova-manage", &["api_db", "sync"])?;
        cells_v2(cx, &p)?;
        cx.run(&p, "nova-manage", &["db", "sync"])?;
        Ok(())
    }

    fn pre_upgrade(cx: &Cx) -> Result<()> {
        let pin = cx.param_or("rpc_pin", "auto");
        for n in cx.nodes() {
            cx.run(
                &n.name,
                "crudini",
                &["--set", CONF, "upgrade_levels", "compute", pin],
            )?;
        }
        cx.state_set("rpc_pinned", pin);
        for n in cx.nodes() {
            each_unit(cx, &n.name, "stop")?;
        }
        cx.progress("service-down");
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        install(cx, &node.name, &cx.ctx.to_version)
    }

    fn post_upgrade(cx: &Cx) -> Result<()> {
        let p = cx.primary()?.name.clone();
        cx.run(&p, "nova-manage", &["api_db", "sync"])?;
        cells_v2(cx, &p)?;
        cx.run(&p, "nova-manage", &["db", "sync"])?;
        for n in cx.nodes() {
            each_unit(cx, &n.name, "start")?;
        }
        cx.state_delete(STOPPED);
        cx.progress("service-up");
        Ok(())
    }

    fn finalize(cx: &Cx) -> Result<()> {
        let p = cx.primary()?.name.clone();
        if releases::at_least(releases::OPENSTACK, &cx.ctx.to_version, "ocata") {
            cx.run(&p, "nova-manage", &["cell_v2", "discover_hosts"])?;
        }
        for n in cx.nodes() {
            cx.run(
                &n.name,
                "crudini",
                &["--del", CONF, "upgrade_levels", "compute"],
            )?;
            each_unit(cx, &n.name, "restart")?;
        }
        cx.state_delete("rpc_pinned");
        Ok(())
    }

    fn rollback(cx: &Cx) -> Result<()> {
        for n in cx.nodes() {
            each_unit(cx, &n.name, "stop")?;
            install(cx, &n.name, &cx.ctx.from_version)?;
            cx.run(
                &n.name,
                "crudini",
                &["--del", CONF, "upgrade_levels", "compute"],
            )?;
            each_unit(cx, &n.name, "start")?;
        }
        Ok(())
    }
}

export_plugin!(Nova);

#[cfg(test)]
mod tests {
    use super::*;
    use uphost_sdk::script::Rule;
    use uphost_sdk::testing::{MockHost, context};

    #[test]
    fn pins_before_stopping_and_records_it() {
        let host = MockHost::for_plugin::<Nova>()
            .rule(Rule::new("crudini", &["..."]))
            .rule(Rule::new("systemctl", &["..."]));
        let cx = host.cx(context("nova", &["ctl1"]));
        Nova::pre_upgrade(&cx).unwrap();
        let cmds = host.commands();
        assert!(
            cmds[0].contains("crudini --set /etc/nova/nova.conf upgrade_levels compute auto"),
            "{cmds:?}"
        );
        assert_eq!(
            host.state().get("rpc_pinned").map(String::as_str),
            Some("auto")
        );
    }

    #[test]
    fn cell1_is_created_only_when_missing() {
        let host = MockHost::for_plugin::<Nova>()
            .rule(Rule::new("nova-manage", &["cell_v2", "list_cells"]).then(0, "cell0\ncell1\n"))
            .rule(Rule::new("nova-manage", &["..."]))
            .rule(Rule::new("systemctl", &["..."]));
        let cx = host.cx(context("nova", &["ctl1"]));
        Nova::post_upgrade(&cx).unwrap();
        assert_eq!(host.count("create_cell"), 0);
    }
}
