//! The host OS stage, after the Liberty→Ocata journey (RHEL 7.2→7.4 host
//! packages and kernel, the Docker upgrade, a kexec reboot that skips the
//! hardware's POST, optional delayed reboots of the computes) and TripleO's
//! composable upgrades (a new kernel needs a reboot once the services are
//! upgraded). Node by node:
//!
//! 1. stop the units that must stop cleanly before the node goes down
//!    (`stop_units`, e.g. `mariadb`: a clean Galera shutdown leaves a
//!    `grastate.dat` it can rejoin from — the hand-off to the galera
//!    plugin's recovery should it not);
//! 2. update the host packages (`packages`) to the target OS release;
//! 3. the container runtime (`runtime`: `docker` or `podman`) to
//!    `runtime_version`: stop, install, start;
//! 4. reboot through the host (`reboot`: `kexec`, `normal` or `none`); the
//!    host waits until the node is back with a new boot, and a resumed run
//!    never reboots it twice; with the operator's `reboot: delayed` the
//!    node reboots at the end of the run instead;
//! 5. start `stop_units` again (in reverse order) and verify them and
//!    `verify_units` active. A unit that does not come back is an error
//!    naming it (for Galera: run the galera plugin's recovery).
//!
//! Parameters: `packages` (comma-separated; `kernel`), `runtime` (`none`),
//! `runtime_version`, `reboot` (`kexec`), `stop_units`, `verify_units`
//! (comma-separated; none).

use uphost_sdk::prelude::*;

/// The plugin.
pub struct HostOs;

fn list<'a>(cx: &'a Cx, key: &str) -> Vec<&'a str> {
    cx.param_or(key, "")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn runtime<'a>(cx: &'a Cx) -> Result<Option<&'a str>> {
    match cx.param_or("runtime", "none") {
        "none" => Ok(None),
        r @ ("docker" | "podman") => Ok(Some(r)),
        other => bail!("parameter runtime: `{other}` is not `docker`, `podman` or `none`"),
    }
}

fn reboot_kind(cx: &Cx) -> Result<Option<bool>> {
    match cx.param_or("reboot", "kexec") {
        "none" => Ok(None),
        "kexec" => Ok(Some(true)),
        "normal" => Ok(Some(false)),
        other => bail!("parameter reboot: `{other}` is not `kexec`, `normal` or `none`"),
    }
}

fn active(cx: &Cx, node: &str, unit: &str) -> Result<()> {
    cx.run(node, "systemctl", &["is-active", unit])
        .map_err(|e| e.context(format!("{unit} is not active on {node}")))?;
    Ok(())
}

impl Plugin for HostOs {
    fn describe() -> Info {
        Info::new(
            "host-os",
            "Host OS stage: host packages and kernel, container runtime, kexec or normal reboot, services back",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .rollout(Rollout::OneAtATime)
        .reboots(true)
        .capabilities([
            Capability::mutating("apt-get", &["install", "-y", "*=*"])
                .reason("update a host package (the packages parameter) or the container runtime"),
            Capability::mutating("systemctl", &["stop|start", "*"])
                .reason("stop units cleanly before the reboot (stop_units) and start them after; restart the container runtime"),
            Capability::read_only("systemctl", &["is-active", "*"])
                .reason("verify the units are back"),
        ])
    }

    fn check(cx: &Cx) -> Result<()> {
        runtime(cx)?;
        reboot_kind(cx)?;
        if runtime(cx)?.is_some() && cx.param("runtime_version").is_none() {
            bail!("parameter runtime_version: the container runtime's target version is not set");
        }
        for n in cx.targets() {
            for u in list(cx, "stop_units")
                .iter()
                .chain(&list(cx, "verify_units"))
            {
                active(cx, &n.name, u)?;
            }
        }
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let n = node.name.as_str();
        let stop = list(cx, "stop_units");
        for u in &stop {
            cx.run(n, "systemctl", &["stop", u])?;
        }
        for p in list(cx, "packages") {
            cx.run(
                n,
                "apt-get",
                &["install", "-y", &format!("{p}={}", cx.ctx.to_version)],
            )?;
        }
        if let Some(rt) = runtime(cx)? {
            let v = cx
                .param("runtime_version")
                .ok_or_else(|| Error::msg("parameter runtime_version is not set"))?;
            cx.run(n, "systemctl", &["stop", rt])?;
            cx.run(n, "apt-get", &["install", "-y", &format!("{rt}={v}")])?;
            cx.run(n, "systemctl", &["start", rt])?;
        }
        match reboot_kind(cx)? {
            Some(true) => cx.reboot_kexec(n)?,
            Some(false) => cx.reboot(n)?,
            None => {}
        }
        for u in stop.iter().rev() {
            cx.run(n, "systemctl", &["start", u]).map_err(|e| {
                e.context(format!(
                    "{u} did not start again on {n} after the host stage (for mariadb: run the galera plugin's recovery, `uphost run --only galera`)"
                ))
            })?;
        }
        for u in stop.iter().chain(&list(cx, "verify_units")) {
            active(cx, n, u)?;
        }
        Ok(())
    }
}

export_plugin!(HostOs);

#[cfg(test)]
mod tests {
    use super::*;
    use uphost_sdk::script::Rule;
    use uphost_sdk::testing::{MockHost, context};

    #[test]
    fn reboots_by_kexec_between_the_packages_and_the_units() {
        let host = MockHost::for_plugin::<HostOs>()
            .rule(Rule::new("systemctl", &["..."]))
            .rule(Rule::new("apt-get", &["..."]));
        let mut ctx = context("host-os", &["cmp1"]);
        ctx.params = vec![
            ("packages".into(), "kernel".into()),
            ("stop_units".into(), "nova-compute".into()),
        ];
        let cx = host.cx(ctx);
        HostOs::upgrade(&cx, &cx.nodes()[0].clone()).unwrap();
        let calls: Vec<String> = host.calls().iter().map(|c| c.argv.join(" ")).collect();
        let pos = |s: &str| calls.iter().position(|c| c == s).unwrap();
        assert!(pos("systemctl stop nova-compute") < pos("uphost:reboot kexec"));
        assert!(pos("uphost:reboot kexec") < pos("systemctl start nova-compute"));
    }
}
