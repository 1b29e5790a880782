//! HAProxy: node by node (the VIP moves to a standby while one node
//! restarts): install, validate the configuration with `haproxy -c`,
//! restart, verify the unit is active. Rollback reinstalls the previous
//! version the same way.
//!
//! Parameters: `config` (`/etc/haproxy/haproxy.cfg`), `unit` (`haproxy`).

use uphost_sdk::Probe;
use uphost_sdk::prelude::*;

/// The plugin.
pub struct Haproxy;

fn install_restart(cx: &Cx, node: &str, version: &str) -> Result<()> {
    let cfg = cx.param_or("config", "/etc/haproxy/haproxy.cfg");
    let unit = cx.param_or("unit", "haproxy");
    cx.run(
        node,
        "apt-get",
        &["install", "-y", &format!("haproxy={version}")],
    )?;
    cx.run(node, "haproxy", &["-c", "-f", cfg]).map_err(|e| {
        e.context(format!(
            "the configuration does not validate with haproxy {version}"
        ))
    })?;
    cx.run(node, "systemctl", &["restart", unit])?;
    cx.run(node, "systemctl", &["is-active", unit])?;
    Ok(())
}

impl Plugin for Haproxy {
    fn describe() -> Info {
        Info::new(
            "haproxy",
            "HAProxy load balancer: rolling install, config check, restart",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .rollout(Rollout::OneAtATime)
        .reversible(true)
        // Measured beside every run: is each node's haproxy running?
        .probe(Probe::command(
            "active",
            &["systemctl", "is-active", "haproxy"],
            Some("active"),
            1000,
        ))
        .capabilities([
            Capability::read_only("haproxy", &["-c", "-f", "/etc/haproxy/*.cfg"])
                .reason("validate the configuration"),
            Capability::read_only("systemctl", &["is-active", "haproxy"]).reason("verify"),
            Capability::mutating("systemctl", &["restart", "haproxy"])
                .reason("pick up the new binary"),
            Capability::mutating("apt-get", &["install", "-y", "haproxy=*"]).reason("install"),
        ])
    }

    fn verify(cx: &Cx) -> Result<()> {
        Self::check(cx)
    }

    fn check(cx: &Cx) -> Result<()> {
        let cfg = cx.param_or("config", "/etc/haproxy/haproxy.cfg");
        for n in cx.nodes() {
            cx.run(&n.name, "haproxy", &["-c", "-f", cfg])?;
            cx.run(&n.name, "systemctl", &["is-active", "haproxy"])?;
        }
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        install_restart(cx, &node.name, &cx.ctx.to_version)
    }

    fn rollback(cx: &Cx) -> Result<()> {
        for n in cx.targets() {
            install_restart(cx, &n.name, &cx.ctx.from_version)?;
        }
        Ok(())
    }
}

export_plugin!(Haproxy);

#[cfg(test)]
mod tests {
    use super::*;
    use uphost_sdk::script::Rule;
    use uphost_sdk::testing::{MockHost, context};

    #[test]
    fn a_bad_config_stops_before_the_restart() {
        let host = MockHost::for_plugin::<Haproxy>()
            .rule(Rule::new("apt-get", &["..."]))
            .rule(Rule::new("haproxy", &["..."]).then_err(
                1,
                "[ALERT] parsing [/etc/haproxy/haproxy.cfg:12] : unknown keyword 'reqadd'",
            ))
            .rule(Rule::new("systemctl", &["..."]));
        let cx = host.cx(context("haproxy", &["ctl1"]));
        let node = cx.nodes()[0].clone();
        let e = Haproxy::upgrade(&cx, &node).unwrap_err().to_string();
        assert!(
            e.contains("reqadd") && e.contains("does not validate"),
            "{e}"
        );
        assert_eq!(host.count("restart"), 0);
    }
}
