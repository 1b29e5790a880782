//! Ceph OSDs after the monitors: `ceph osd set noout`, then one node at a
//! time: the node's OSDs must be ok-to-stop, stop `ceph-osd.target`, hand
//! `/var/lib/ceph/osd` and `/var/log/ceph` to `ceph:ceph`, install, enable
//! and start the target, wait for the OSDs to come back; after the last node
//! `ceph osd unset noout`, `ceph osd set require_<release>_osds`,
//! `ceph osd crush tunables <profile>` and a final health check. The `ceph`
//! CLI runs on the storage nodes with the admin keyring (the seed runs the
//! last steps "on a mon node").
//!
//! Parameters: `release` (default: the target version, e.g. `jewel`),
//! `tunables` (`firefly`), `health_retries` (`30`).

use uphost_sdk::prelude::*;

use uphost_sdk::releases::{CEPH as CEPH_RELEASES, CEPH_JUMPS};

/// The plugin.
pub struct CephOsd;

fn healthy(out: &str, allow_noout: bool) -> bool {
    let l = out.lines().next().unwrap_or("").trim();
    l == "HEALTH_OK" || (allow_noout && l == "HEALTH_WARN noout flag(s) set")
}

/// `ceph osd ok-to-stop` of the node's OSDs (`ceph osd ls-tree NODE`).
fn osds_ok_to_stop(cx: &Cx, n: &str) -> Result<()> {
    let ids = cx.run(n, "ceph", &["osd", "ls-tree", n])?.stdout_text();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    let mut args = vec!["osd", "ok-to-stop"];
    args.extend(ids.iter().copied());
    cx.run(n, "ceph", &args).map_err(|e| {
        e.context(format!(
            "OSDs {} on {n} are not safe to stop",
            ids.join(",")
        ))
    })?;
    Ok(())
}

impl Plugin for CephOsd {
    fn describe() -> Info {
        Info::new(
            "ceph-osd",
            "Ceph OSDs: noout, one node at a time with ok-to-stop, require_osds, tunables",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .depends_on(&["ceph-mon"])
        .rollout(Rollout::OneAtATime)
        .reversible(false)
        .ok_to_stop(true)
        // Ceph upgrades at most two major releases at a time.
        .releases(CEPH_RELEASES)
        .jumps(CEPH_JUMPS)
        .capabilities([
            Capability::read_only("ceph", &["health"]).reason("cluster health"),
            Capability::mutating("ceph", &["osd", "set|unset", "noout"])
                .reason("no rebalancing while OSDs restart"),
            Capability::read_only("ceph", &["osd", "ls-tree", "*"]).reason("the node's OSD ids"),
            Capability::read_only("ceph", &["osd", "ok-to-stop", "..."])
                .reason("safe to stop this node's OSDs?"),
            Capability::mutating("ceph", &["osd", "set", "require_*_osds"])
                .reason("after the last OSD"),
            Capability::mutating("ceph", &["osd", "crush", "tunables", "*"])
                .reason("after the last OSD"),
            Capability::mutating("systemctl", &["start|stop|enable", "ceph-osd.target"])
                .reason("restart the node's OSDs"),
            Capability::mutating(
                "chown",
                &["-R", "ceph:ceph", "/var/lib/ceph/osd", "/var/log/ceph"],
            )
            .reason("Jewel daemons run as the ceph user"),
            Capability::mutating("apt-get", &["install", "-y", "ceph-osd=*"]).reason("install"),
        ])
    }

    fn verify(cx: &Cx) -> Result<()> {
        Self::check(cx)
    }

    fn check(cx: &Cx) -> Result<()> {
        cx.param_parse("health_retries", 30u32)?;
        let out = cx.run(&cx.primary()?.name, "ceph", &["health"])?;
        if !healthy(&out.stdout_text(), false) {
            bail!(
                "ceph is not healthy before the OSD upgrade: {}",
                out.stdout_text().trim()
            );
        }
        Ok(())
    }

    fn pre_upgrade(cx: &Cx) -> Result<()> {
        // A cluster flag, set from a node this run may change.
        cx.run(&cx.first_target()?.name, "ceph", &["osd", "set", "noout"])?;
        cx.state_set("noout", "set");
        Ok(())
    }

    /// The host retries this before each node (cephadm's ok-to-stop gate).
    fn ok_to_stop(cx: &Cx, node: &Node) -> Result<()> {
        osds_ok_to_stop(cx, &node.name)
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let n = node.name.as_str();
        // The gate passed just before; Ceph may have changed its mind.
        osds_ok_to_stop(cx, n)?;
        cx.run(n, "systemctl", &["stop", "ceph-osd.target"])?;
        cx.run(
            n,
            "chown",
            &["-R", "ceph:ceph", "/var/lib/ceph/osd", "/var/log/ceph"],
        )?;
        cx.run(
            n,
            "apt-get",
            &["install", "-y", &format!("ceph-osd={}", cx.ctx.to_version)],
        )?;
        cx.run(n, "systemctl", &["enable", "ceph-osd.target"])?;
        cx.run(n, "systemctl", &["start", "ceph-osd.target"])?;
        let retries: u32 = cx.param_parse("health_retries", 30)?;
        for i in 0..=retries {
            let out = cx.run(n, "ceph", &["health"])?;
            if healthy(&out.stdout_text(), true) {
                return Ok(());
            }
            if i == retries {
                bail!(
                    "OSDs on {n} did not come back: {}",
                    out.stdout_text().trim()
                );
            }
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        Ok(())
    }

    fn post_upgrade(cx: &Cx) -> Result<()> {
        let p = cx.first_target()?.name.clone();
        let release = cx.param_or("release", &cx.ctx.to_version).to_string();
        let tunables = cx.param_or("tunables", "firefly").to_string();
        cx.run(&p, "ceph", &["osd", "unset", "noout"])?;
        cx.state_delete("noout");
        if cx.is_limited() {
            // Old OSDs would be refused by the cluster: these wait for a
            // run over every OSD node.
            cx.warn(format!(
                "this run is limited: require_{release}_osds and crush tunables {tunables} are left for a run over every OSD node"
            ));
        } else {
            cx.run(
                &p,
                "ceph",
                &["osd", "set", &format!("require_{release}_osds")],
            )?;
            cx.run(&p, "ceph", &["osd", "crush", "tunables", &tunables])?;
        }
        let out = cx.run(&p, "ceph", &["health"])?;
        if !healthy(&out.stdout_text(), false) {
            bail!(
                "ceph not healthy after the upgrade: {}",
                out.stdout_text().trim()
            );
        }
        Ok(())
    }
}

export_plugin!(CephOsd);

#[cfg(test)]
mod tests {
    use super::*;
    use uphost_sdk::script::Rule;
    use uphost_sdk::testing::{MockHost, context};

    #[test]
    fn a_limited_run_sets_flags_on_a_target_and_leaves_require_osds() {
        let host = MockHost::for_plugin::<CephOsd>()
            .limit(&["stor2"])
            .rule(Rule::new("ceph", &["health"]).then(0, "HEALTH_OK\n"))
            .rule(Rule::new("ceph", &["osd", "..."]));
        let cx = host.cx(context("ceph-osd", &["stor1", "stor2"]));
        CephOsd::pre_upgrade(&cx).unwrap();
        CephOsd::post_upgrade(&cx).unwrap();
        assert_eq!(
            host.commands(),
            [
                "stor2: ceph osd set noout",
                "stor2: ceph osd unset noout",
                "stor2: ceph health"
            ]
        );
        // Unlimited: the flag and the tunables once every OSD is done.
        let host = MockHost::for_plugin::<CephOsd>()
            .rule(Rule::new("ceph", &["health"]).then(0, "HEALTH_OK\n"))
            .rule(Rule::new("ceph", &["osd", "..."]));
        let cx = host.cx(context("ceph-osd", &["stor1", "stor2"]));
        CephOsd::post_upgrade(&cx).unwrap();
        assert_eq!(host.count("require_"), 1);
        assert_eq!(host.count("tunables"), 1);
    }

    #[test]
    fn not_ok_to_stop_stops_before_touching_the_node() {
        let host = MockHost::for_plugin::<CephOsd>()
            .rule(Rule::new("ceph", &["osd", "ls-tree", "*"]).then(0, "0\n1\n"))
            .rule(
                Rule::new("ceph", &["osd", "ok-to-stop", "..."])
                    .then_err(16, "Error EBUSY: unsafe to stop osd(s) at this time"),
            )
            .rule(Rule::new("systemctl", &["..."]));
        let cx = host.cx(context("ceph-osd", &["stor1"]));
        let n = cx.nodes()[0].clone();
        let e = CephOsd::upgrade(&cx, &n).unwrap_err().to_string();
        assert!(e.contains("not safe to stop") && e.contains("EBUSY"), "{e}");
        assert_eq!(host.count("systemctl"), 0);
    }
}
