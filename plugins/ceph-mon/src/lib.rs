//! Ceph monitors first (Hammer→Jewel): one monitor at a time, so quorum
//! holds: stop it, hand `/var/lib/ceph`, `/var/log/ceph`, `/etc/ceph` to
//! `ceph:ceph` (Jewel runs as ceph, not root), install, start, and wait for
//! the cluster to answer before the next monitor.

use uphost_sdk::prelude::*;

use uphost_sdk::releases::{CEPH as CEPH_RELEASES, CEPH_JUMPS};

/// The plugin.
pub struct CephMon;

/// `HEALTH_OK`, or `HEALTH_WARN` caused only by `allowed` reasons.
pub fn healthy(out: &str, allowed: &[&str]) -> bool {
    let line = out.lines().next().unwrap_or("").trim();
    if line == "HEALTH_OK" {
        return true;
    }
    match line.strip_prefix("HEALTH_WARN ") {
        Some(rest) => rest
            .split(';')
            .all(|w| allowed.iter().any(|a| w.contains(a))),
        None => false,
    }
}

impl Plugin for CephMon {
    fn describe() -> Info {
        Info::new(
            "ceph-mon",
            "Ceph monitors: one at a time, ceph:ceph ownership, quorum kept",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .rollout(Rollout::OneAtATime)
        .reversible(false)
        // Ceph upgrades at most two major releases at a time.
        .releases(CEPH_RELEASES)
        .jumps(CEPH_JUMPS)
        .capabilities([
            Capability::read_only("ceph", &["health"]).reason("cluster health"),
            Capability::mutating("systemctl", &["start|stop", "ceph-mon@*"])
                .reason("restart one monitor"),
            Capability::mutating(
                "chown",
                &[
                    "-R",
                    "ceph:ceph",
                    "/var/lib/ceph",
                    "/var/log/ceph",
                    "/etc/ceph",
                ],
            )
            .reason("Jewel daemons run as the ceph user"),
            Capability::mutating("apt-get", &["install", "-y", "ceph-mon=*"]).reason("install"),
        ])
    }

    fn verify(cx: &Cx) -> Result<()> {
        Self::check(cx)
    }

    fn check(cx: &Cx) -> Result<()> {
        let out = cx.run(&cx.primary()?.name, "ceph", &["health"])?;
        if !healthy(&out.stdout_text(), &[]) {
            bail!(
                "ceph is not healthy before the upgrade: {}",
                out.stdout_text().trim()
            );
        }
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let unit = format!("ceph-mon@{}", node.name);
        cx.run(&node.name, "systemctl", &["stop", &unit])?;
        cx.run(
            &node.name,
            "chown",
            &[
                "-R",
                "ceph:ceph",
                "/var/lib/ceph",
                "/var/log/ceph",
                "/etc/ceph",
            ],
        )?;
        cx.run(
            &node.name,
            "apt-get",
            &["install", "-y", &format!("ceph-mon={}", cx.ctx.to_version)],
        )?;
        cx.run(&node.name, "systemctl", &["start", &unit])?;
        let out = cx.run(&node.name, "ceph", &["health"])?;
        if !healthy(&out.stdout_text(), &["mons down"]) && !healthy(&out.stdout_text(), &[]) {
            bail!("ceph after restarting {unit}: {}", out.stdout_text().trim());
        }
        Ok(())
    }
}

export_plugin!(CephMon);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_lines() {
        assert!(healthy("HEALTH_OK\n", &[]));
        assert!(!healthy("HEALTH_WARN noout flag(s) set\n", &[]));
        assert!(healthy("HEALTH_WARN noout flag(s) set\n", &["noout"]));
        assert!(!healthy("HEALTH_ERR 1 pgs inconsistent\n", &["noout"]));
    }
}
