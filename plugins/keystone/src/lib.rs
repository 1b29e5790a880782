//! Keystone: for a major upgrade stop it on every controller (schema
//! change), install the new version, `keystone-manage db_sync` once, start
//! everywhere, verify the identity endpoints. For a minor update: rolling
//! restart, no db_sync. Rollback reinstalls the previous version (the
//! database itself is restored by galera's rollback, which runs after).
//!
//! In a release train it upgrades along OpenStack's releases (SLURP jumps
//! allowed). A leapfrog's migrations-only hop (`migrate`) stops keystone
//! everywhere and runs that release's `db_sync` with that release's code,
//! installed on the first node only; the target is deployed by the last
//! hop. `verify` (the gate between hops): active everywhere, endpoints
//! listed.
//!
//! Parameters (and `deploy`, `engine`, `registry`, `config_dir` of
//! `uphost_sdk::deploy`: packages or kolla containers): `unit` (`keystone`), `package` (`keystone`).

use uphost_sdk::deploy::{self, Deploy, Unit};
use uphost_sdk::prelude::*;
use uphost_sdk::releases;

/// State key: the service is stopped for a leapfrog's migrations.
const STOPPED: &str = "stopped_for_migrations";

/// The plugin.
pub struct Keystone;

/// The identity endpoints, as requested in `describe` and run in checks.
const ENDPOINT_LIST: [&str; 8] = [
    "endpoint",
    "list",
    "--service",
    "identity",
    "-f",
    "value",
    "-c",
    "URL",
];

fn unit<'a>(cx: &'a Cx) -> &'a str {
    cx.param_or("unit", "keystone")
}

fn endpoints(cx: &Cx) -> Result<()> {
    let primary = cx.primary()?.name.clone();
    let out = cx.run(&primary, "openstack", &ENDPOINT_LIST)?;
    if out.stdout_text().trim().is_empty() {
        bail!(
            "keystone answers but lists no identity endpoints; re-run `keystone-manage bootstrap`"
        );
    }
    Ok(())
}

/// Keystone's unit (`unit`: keystone, or apache2/httpd under mod_wsgi),
/// package and kolla container.
fn ks<'a>(cx: &'a Cx) -> Unit<'a> {
    Unit {
        unit: unit(cx),
        package: "keystone",
        container: "keystone",
    }
}

fn install(cx: &Cx, node: &str, from: &str, version: &str) -> Result<()> {
    Deploy::of(cx)?.install(cx, node, ks(cx), from, version)
}

/// The schema migration: on the node, or in its container.
fn db_sync(cx: &Cx, node: &str) -> Result<()> {
    match Deploy::of(cx)? {
        Deploy::Packages => cx.run(node, "keystone-manage", &["db_sync"]),
        d @ Deploy::Containers { .. } => {
            // kolla's way: the new container runs the migration.
            d.start(cx, node, ks(cx))?;
            let Deploy::Containers { engine, .. } = &d else {
                unreachable!()
            };
            cx.run(
                node,
                engine,
                &["exec", "keystone", "keystone-manage", "db_sync"],
            )
        }
    }
    .map(drop)
}

impl Plugin for Keystone {
    fn describe() -> Info {
        Info::new(
            "keystone",
            "Keystone identity: stop, upgrade, db_sync, start, verify endpoints",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .depends_on(&["galera", "rabbitmq", "haproxy"])
        .rollout(Rollout::Parallel)
        .reversible(true)
        .releases(releases::OPENSTACK)
        .jumps(releases::OPENSTACK_SLURP)
        .migrations_only(true)
        .capabilities(deploy::capabilities(
            "keystone|apache2|httpd",
            "keystone",
            "keystone",
        ))
        .capabilities([
            Capability::mutating("keystone-manage", &["db_sync"]).reason("schema migration"),
            Capability::mutating(
                "docker",
                &["exec", "keystone", "keystone-manage", "db_sync"],
            )
            .reason("schema migration in the container"),
            Capability::mutating(
                "podman",
                &["exec", "keystone", "keystone-manage", "db_sync"],
            )
            .reason("schema migration in the container"),
            Capability::read_only("openstack", &ENDPOINT_LIST)
                .reason("verify the identity endpoints"),
        ])
    }

    fn check(cx: &Cx) -> Result<()> {
        if cx.ctx.mode == Mode::MajorUpgrade {
            cx.require_every_node(
                "stops keystone on every node for the database migration (a minor update is node by node and may be limited)",
            )?;
        }
        if cx.state_get(STOPPED).is_some() {
            // Stopped by the leapfrog's migrations until the target deploy.
            return Ok(());
        }
        Self::verify(cx)
    }

    fn verify(cx: &Cx) -> Result<()> {
        for n in cx.nodes() {
            Deploy::of(cx)?.is_active(cx, &n.name, ks(cx))?;
        }
        endpoints(cx)
    }

    fn migrate(cx: &Cx) -> Result<()> {
        if cx.state_get(STOPPED).is_none() {
            for n in cx.nodes() {
                Deploy::of(cx)?.stop(cx, &n.name, ks(cx))?;
            }
            cx.state_set(STOPPED, &cx.ctx.from_version);
            cx.progress("service-down");
        }
        let primary = cx.primary()?.name.clone();
        install(cx, &primary, &cx.ctx.from_version, &cx.ctx.to_version)?;
        db_sync(cx, &primary)?;
        Ok(())
    }

    fn pre_upgrade(cx: &Cx) -> Result<()> {
        if cx.ctx.mode == Mode::MajorUpgrade {
            for n in cx.nodes() {
                Deploy::of(cx)?.stop(cx, &n.name, ks(cx))?;
            }
            cx.progress("service-down");
        }
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        install(cx, &node.name, &cx.ctx.from_version, &cx.ctx.to_version)?;
        if cx.ctx.mode == Mode::MinorUpdate {
            Deploy::of(cx)?.restart(cx, &node.name, ks(cx))?;
        }
        Ok(())
    }

    fn post_upgrade(cx: &Cx) -> Result<()> {
        if cx.ctx.mode == Mode::MajorUpgrade {
            let primary = cx.primary()?.name.clone();
            db_sync(cx, &primary)?;
            for n in cx.nodes() {
                Deploy::of(cx)?.start(cx, &n.name, ks(cx))?;
            }
            cx.state_delete(STOPPED);
        }
        endpoints(cx)?;
        cx.progress("service-up");
        Ok(())
    }

    fn rollback(cx: &Cx) -> Result<()> {
        for n in cx.targets() {
            Deploy::of(cx)?.stop(cx, &n.name, ks(cx))?;
            install(cx, &n.name, &cx.ctx.to_version, &cx.ctx.from_version)?;
        }
        for n in cx.targets() {
            Deploy::of(cx)?.start(cx, &n.name, ks(cx))?;
        }
        Ok(())
    }
}

export_plugin!(Keystone);

#[cfg(test)]
mod tests {
    use super::*;
    use uphost_sdk::script::Rule;
    use uphost_sdk::testing::{MockHost, context};

    #[test]
    fn major_upgrade_syncs_once_and_checks_endpoints() {
        let host = MockHost::for_plugin::<Keystone>()
            .rule(Rule::new("systemctl", &["..."]))
            .rule(Rule::new("keystone-manage", &["db_sync"]))
            .rule(Rule::new("openstack", &["..."]).then(0, "http://vip:5000/v3\n"));
        let cx = host.cx(context("keystone", &["ctl1", "ctl2"]));
        Keystone::post_upgrade(&cx).unwrap();
        let syncs = host.count("db_sync");
        assert_eq!(syncs, 1);
    }

    #[test]
    fn no_endpoints_is_an_actionable_error() {
        let host = MockHost::for_plugin::<Keystone>()
            .rule(Rule::new("systemctl", &["..."]))
            .rule(Rule::new("openstack", &["..."]).then(0, ""));
        let cx = host.cx(context("keystone", &["ctl1"]));
        let e = Keystone::check(&cx).unwrap_err().to_string();
        assert!(e.contains("keystone-manage bootstrap"), "{e}");
    }
}
