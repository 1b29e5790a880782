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
//! In containers (`deploy: containers`: kolla's `nova_api`,
//! `nova_scheduler`, `nova_conductor`), as the journey ran it: each old
//! container and image removed, the new one created with its
//! configuration; the migrations ("bootstrap service (db sync)") run in a
//! throw-away container of the new `nova_api` image with its volumes; the
//! RPC pin is set in each container's `nova.conf` under `config_dir`.
//!
//! Parameters (and `deploy`, `engine`, `registry`, `config_dir` of
//! `uphost_sdk::deploy`): `rpc_pin` (`auto`).

use uphost_sdk::deploy::{self, Deploy, Unit};
use uphost_sdk::prelude::*;
use uphost_sdk::releases;

/// State key: the services are stopped for a leapfrog's migrations.
const STOPPED: &str = "stopped_for_migrations";

/// The plugin.
pub struct Nova;

/// The control-plane processes: units, packages, kolla containers.
pub const UNITS: [Unit<'static>; 3] = [
    Unit {
        unit: "nova-api",
        package: "nova-api",
        container: "nova_api",
    },
    Unit {
        unit: "nova-conductor",
        package: "nova-conductor",
        container: "nova_conductor",
    },
    Unit {
        unit: "nova-scheduler",
        package: "nova-scheduler",
        container: "nova_scheduler",
    },
];
const CONF: &str = "/etc/nova/nova.conf";
/// Every `nova.conf` the pin is set in: the node's, or each container's.
const NOVA_CONFS: &str = "/etc/nova/nova.conf|/*/nova_api/nova.conf|/*/nova_conductor/nova.conf|/*/nova_scheduler/nova.conf";

fn each_unit(cx: &Cx, node: &str, verb: &str) -> Result<()> {
    let d = Deploy::of(cx)?;
    for u in UNITS {
        match verb {
            "stop" => d.stop(cx, node, u)?,
            "start" => d.start(cx, node, u)?,
            "restart" => d.restart(cx, node, u)?,
            _ => d.is_active(cx, node, u)?,
        }
    }
    Ok(())
}

fn install(cx: &Cx, node: &str, from: &str, v: &str) -> Result<()> {
    Deploy::of(cx)?.install_all(cx, node, &UNITS, from, v)
}

/// `nova-manage ARGS` with the code of release `v`: on the node, or in a
/// throw-away container of the `nova_api` image tagged `v`.
fn manage(cx: &Cx, node: &str, v: &str, args: &[&str]) -> Result<ExecOutput> {
    Deploy::of(cx)?.run_once(cx, node, UNITS[0], v, "nova-manage", args)
}

/// Set (`Some(level)`) or remove the RPC pin in every `nova.conf` of the
/// node (one per container in containers).
fn pin(cx: &Cx, node: &str, level: Option<&str>) -> Result<()> {
    let d = Deploy::of(cx)?;
    let mut files: Vec<String> = UNITS.iter().map(|u| d.config_file(*u, CONF)).collect();
    files.dedup();
    for f in &files {
        match level {
            Some(l) => cx.run(
                node,
                "crudini",
                &["--set", f, "upgrade_levels", "compute", l],
            )?,
            None => cx.run(node, "crudini", &["--del", f, "upgrade_levels", "compute"])?,
        };
    }
    Ok(())
}

/// Cells v2 (cell0 mapped, cell1 created once): mandatory from Ocata, so
/// done on a hop to Ocata or later only.
fn cells_v2(cx: &Cx, p: &str) -> Result<()> {
    let v = &cx.ctx.to_version;
    if !releases::at_least(releases::OPENSTACK, v, "ocata") {
        return Ok(());
    }
    manage(cx, p, v, &["cell_v2", "map_cell0"])?;
    let cells = manage(cx, p, v, &["cell_v2", "list_cells"])?;
    if !cells
        .stdout_text()
        .lines()
        .any(|l| l.trim() == "cell1" || l.contains("| cell1 "))
    {
        manage(cx, p, v, &["cell_v2", "create_cell", "--name=cell1"])?;
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
                &["--set", NOVA_CONFS, "upgrade_levels", "compute", "*"],
            )
            .reason("RPC pin while versions are mixed"),
            Capability::mutating(
                "crudini",
                &["--del", NOVA_CONFS, "upgrade_levels", "compute"],
            )
            .reason("RPC unpin once every service runs the new version"),
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
            .reason("install (packages)"),
        ])
        .capabilities(deploy::capabilities(
            "nova-api|nova-scheduler|nova-conductor",
            "nova-api|nova-conductor|nova-scheduler",
            "nova_api|nova_scheduler|nova_conductor",
        ))
        .capabilities(deploy::in_throwaway(
            "nova_api",
            [
                Capability::mutating("nova-manage", &["api_db|db", "sync"])
                    .reason("schema migrations"),
                Capability::mutating("nova-manage", &["cell_v2", "map_cell0|discover_hosts"])
                    .reason("cells v2: cell0, and map the upgraded computes"),
                Capability::mutating("nova-manage", &["cell_v2", "create_cell", "--name=cell1"])
                    .reason("cells v2: cell1"),
                Capability::read_only("nova-manage", &["cell_v2", "list_cells"])
                    .reason("is cell1 there?"),
            ],
        ))
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
            each_unit(cx, &n.name, "is-active")?;
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
        let (from, to) = (&cx.ctx.from_version, &cx.ctx.to_version);
        install(cx, &p, from, to)?;
        manage(cx, &p, to, &["api_db", "sync"])?;
        cells_v2(cx, &p)?;
        manage(cx, &p, to, &["db", "sync"])?;
        Ok(())
    }

    fn pre_upgrade(cx: &Cx) -> Result<()> {
        let level = cx.param_or("rpc_pin", "auto");
        for n in cx.nodes() {
            pin(cx, &n.name, Some(level))?;
        }
        cx.state_set("rpc_pinned", level);
        for n in cx.nodes() {
            each_unit(cx, &n.name, "stop")?;
        }
        cx.progress("service-down");
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        install(cx, &node.name, &cx.ctx.from_version, &cx.ctx.to_version)
    }

    fn post_upgrade(cx: &Cx) -> Result<()> {
        let p = cx.primary()?.name.clone();
        let to = &cx.ctx.to_version;
        manage(cx, &p, to, &["api_db", "sync"])?;
        cells_v2(cx, &p)?;
        manage(cx, &p, to, &["db", "sync"])?;
        for n in cx.nodes() {
            each_unit(cx, &n.name, "start")?;
        }
        cx.state_delete(STOPPED);
        cx.progress("service-up");
        Ok(())
    }

    fn finalize(cx: &Cx) -> Result<()> {
        let p = cx.primary()?.name.clone();
        let to = &cx.ctx.to_version;
        if releases::at_least(releases::OPENSTACK, to, "ocata") {
            manage(cx, &p, to, &["cell_v2", "discover_hosts"])?;
        }
        for n in cx.nodes() {
            pin(cx, &n.name, None)?;
            each_unit(cx, &n.name, "restart")?;
        }
        cx.state_delete("rpc_pinned");
        Ok(())
    }

    fn rollback(cx: &Cx) -> Result<()> {
        for n in cx.nodes() {
            each_unit(cx, &n.name, "stop")?;
            install(cx, &n.name, &cx.ctx.to_version, &cx.ctx.from_version)?;
            pin(cx, &n.name, None)?;
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
