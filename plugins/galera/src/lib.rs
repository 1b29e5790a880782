//! Galera (MariaDB) cluster upgrade, after the Liberty→Ocata journey's
//! procedure:
//!
//! * check: every node `Synced`, `wsrep_cluster_size` = number of nodes;
//! * pre-upgrade: `mysqldump` of all databases on the first node, its path
//!   and sha256 kept in plugin state; the backend taken out of haproxy on
//!   every node (`touch /var/tmp/clustercheck.disabled`), then a short wait
//!   for in-flight transactions;
//! * upgrade (one node at a time, in inventory order, so the last node is
//!   the last to stop): stop MariaDB, remove `grastate.dat` (a new cluster
//!   rather than a highest-seqno restart), install the new packages;
//! * post-upgrade: bootstrap the last-stopped node with `galera_new_cluster`,
//!   start the others, verify every node `Synced` with the full cluster
//!   size (else automated recovery: stop all, `galera_recovery` on each,
//!   force the node with the highest seqno as primary — `safe_to_bootstrap:
//!   1` in its `grastate.dat` — bootstrap it, start the rest), put the
//!   backend back in haproxy, health check through the VIP;
//! * rollback: verify the dump's checksum, recover the cluster as above if
//!   it is not healthy, restore the dump.
//!
//! Parameters: `unit` (default `mariadb`), `package` (`mariadb-server`),
//! `backup_dir` (`/var/backup/galera`), `drain_file`
//! (`/var/tmp/clustercheck.disabled`), `drain_wait_s` (`5`), `vip`
//! (`127.0.0.1`), `vip_wait_s` (`30`: how long the VIP may refuse
//! connections after the drain is lifted, until haproxy's next health check
//! puts the backends back).

use uphost_sdk::prelude::*;

/// The plugin.
pub struct Galera;

const WSREP: &str = "SHOW STATUS LIKE 'wsrep%'";

/// Mark a node's saved state safe to bootstrap from (recovery only).
const SAFE_TO_BOOTSTRAP: [&str; 3] = [
    "-i",
    "s/^safe_to_bootstrap: *0/safe_to_bootstrap: 1/",
    "/var/lib/mysql/grastate.dat",
];

/// `wsrep_local_state_comment` and `wsrep_cluster_size` from
/// `mysql -N -B -e "SHOW STATUS LIKE 'wsrep%'"` (tab separated).
pub fn parse_wsrep(out: &str) -> (Option<String>, Option<usize>) {
    let mut state = None;
    let mut size = None;
    for line in out.lines() {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("wsrep_local_state_comment"), Some(v)) => state = Some(v.to_string()),
            (Some("wsrep_cluster_size"), Some(v)) => size = v.parse().ok(),
            _ => {}
        }
    }
    (state, size)
}

/// The seqno from `galera_recovery` (`--wsrep_start_position=UUID:SEQNO`).
pub fn parse_seqno(out: &str) -> Option<i64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("--wsrep_start_position="))
        .and_then(|p| p.rsplit(':').next())
        .and_then(|s| s.trim().parse().ok())
}

fn unit(cx: &Cx) -> String {
    cx.param_or("unit", "mariadb").to_string()
}

/// The file whose presence makes clustercheck answer 503 (`drain_file`).
/// Its name is fixed by clustercheck; its directory differs between
/// deployments (and containers), which the grant allows.
fn drain_file(cx: &Cx) -> Result<String> {
    let f = cx.param_or("drain_file", "/var/tmp/clustercheck.disabled");
    if !f.starts_with('/') || !f.ends_with("/clustercheck.disabled") || f.contains("/../") {
        bail!(
            "parameter `drain_file` is `{f}`: clustercheck looks for a file named clustercheck.disabled; give its absolute path (default /var/tmp/clustercheck.disabled)"
        );
    }
    Ok(f.to_string())
}

/// Every node Synced with the full cluster size, or the first problem.
fn verify(cx: &Cx) -> Result<()> {
    let want = cx.nodes().len();
    for n in cx.nodes() {
        let out = cx.run(&n.name, "mysql", &["-N", "-B", "-e", WSREP])?;
        match parse_wsrep(&out.stdout_text()) {
            (Some(s), Some(size)) if s == "Synced" && size == want => {}
            (s, size) => bail!(
                "galera on {} is not healthy: wsrep_local_state_comment={}, wsrep_cluster_size={} (expected Synced and {want})",
                n.name,
                s.as_deref().unwrap_or("?"),
                size.map(|x| x.to_string()).unwrap_or_else(|| "?".into())
            ),
        }
    }
    Ok(())
}

/// Automated recovery (the seed's "complete failure recovery"): stop all,
/// find the node with the highest seqno, bootstrap it, start the others.
fn recover(cx: &Cx) -> Result<()> {
    let unit = unit(cx);
    cx.warn("cluster not healthy after bootstrap: running automated galera recovery");
    for n in cx.nodes() {
        cx.run(&n.name, "systemctl", &["stop", &unit])?;
    }
    let mut best: Option<(i64, String)> = None;
    for n in cx.nodes() {
        let out = cx.run(&n.name, "galera_recovery", &[])?;
        let seq = parse_seqno(&out.stdout_text()).ok_or_else(|| {
            Error::msg(format!(
                "galera_recovery on {} printed no --wsrep_start_position: {}",
                n.name,
                out.stdout_text().trim()
            ))
        })?;
        cx.info(format!("{} recovered seqno {seq}", n.name));
        if best.as_ref().is_none_or(|(b, _)| seq > *b) {
            best = Some((seq, n.name.clone()));
        }
    }
    let (seq, primary) = best.ok_or_else(|| Error::msg("no nodes to recover"))?;
    cx.info(format!(
        "bootstrapping from {primary} (highest seqno {seq})"
    ));
    // "Force this node as primary": after a crash no node's grastate.dat
    // says it is safe to bootstrap, and galera_new_cluster refuses.
    cx.run(&primary, "sed", &SAFE_TO_BOOTSTRAP)?;
    cx.run(&primary, "galera_new_cluster", &[])?;
    cx.run(&primary, "mysql", &["-N", "-B", "-e", "SELECT 1"])?;
    for n in cx.nodes().iter().filter(|n| n.name != primary) {
        cx.run(&n.name, "systemctl", &["start", &unit])?;
    }
    verify(cx)
}

/// Put every node's backend back in haproxy (remove the drain file).
fn undrain(cx: &Cx) -> Result<()> {
    let drain = drain_file(cx)?;
    for n in cx.nodes() {
        cx.run(&n.name, "rm", &["-f", &drain])?;
    }
    Ok(())
}

/// `SELECT 1` through haproxy's VIP, retried once a second for up to
/// `vip_wait_s` (default 30): haproxy puts the backends back only after its
/// next successful clustercheck, so the first attempts may be refused.
fn vip_health_check(cx: &Cx, from: &str) -> Result<()> {
    let vip = cx.param_or("vip", "127.0.0.1");
    let wait: u32 = cx.param_parse("vip_wait_s", 30)?;
    let argv = ["-h", vip, "-P", "3306", "-N", "-B", "-e", "SELECT 1"];
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = match cx.run(from, "mysql", &argv) {
            Ok(out) if out.skipped || out.stdout_text().trim() == "1" => return Ok(()),
            Ok(out) => format!("returned `{}`", out.stdout_text().trim()),
            Err(e) => e.to_string(),
        };
        if attempt > wait || cx.ctx.dry_run {
            bail!(
                "health check through the VIP {vip}:3306 failed {attempt} time(s) over {wait} s; last: {last}"
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Checksum the dump and keep its node, path and sha256 in plugin state.
fn record_backup(cx: &Cx, primary: &str, path: &str) -> Result<()> {
    let sum = cx.run(primary, "sha256sum", &[path])?;
    let sha = sum
        .stdout_text()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if sha.len() != 64 {
        bail!("sha256sum of {path} on {primary} printed no checksum");
    }
    cx.state_set("backup_node", primary);
    cx.state_set("backup_path", path);
    cx.state_set("backup_sha256", &sha);
    cx.info(format!("backup {path} on {primary}, sha256 {sha}"));
    Ok(())
}

impl Plugin for Galera {
    fn describe() -> Info {
        Info::new(
            "galera",
            "MariaDB Galera cluster: backup, drain from haproxy, new-cluster upgrade, bootstrap, verify",
        )
        .version(env!("CARGO_PKG_VERSION"))
        // The post-upgrade health check goes through haproxy's VIP: haproxy
        // is upgraded (restarted) before, never at the same time.
        .depends_on(&["haproxy"])
        .rollout(Rollout::OneAtATime)
        .reversible(true)
        .ok_to_stop(true)
        // MariaDB upgrades one major release at a time.
        .releases(&[
            "5.5", "10.0", "10.1", "10.2", "10.3", "10.4", "10.5", "10.6", "10.11", "11.4",
        ])
        .capabilities([
            Capability::read_only("mysql", &["-N", "-B", "-e", "SHOW STATUS LIKE 'wsrep%'|SELECT 1"])
                .reason("cluster state (Synced, size) and a query once bootstrapped"),
            Capability::read_only("mysql", &["-h", "*", "-P", "3306", "-N", "-B", "-e", "SELECT 1"])
                .reason("health check through the VIP"),
            Capability::mutating(
                "mysqldump",
                &[
                    "--all-databases",
                    "--single-transaction",
                    "--routines",
                    "--events",
                    "--result-file=/*/galera-*.sql",
                ],
            )
            .reason("backup before the upgrade"),
            Capability::read_only("sha256sum", &["/*/galera-*.sql"])
                .reason("checksum of the backup"),
            Capability::mutating("mysql", &["-e", "source /*/galera-*.sql"])
                .reason("rollback: restore the backup"),
        ])
        .capabilities(caps_files())
    }

    fn verify(cx: &Cx) -> Result<()> {
        verify(cx)
    }

    /// Before a node of a rolling (minor) update stops: every other member
    /// `Synced`, with the full cluster size. A major upgrade stops every
    /// node by design: nothing to wait for.
    fn ok_to_stop(cx: &Cx, node: &Node) -> Result<()> {
        if cx.ctx.mode == Mode::MajorUpgrade {
            return Ok(());
        }
        let want = cx.nodes().len();
        for n in cx.nodes().iter().filter(|n| n.name != node.name) {
            let out = cx.run(&n.name, "mysql", &["-N", "-B", "-e", WSREP])?;
            match parse_wsrep(&out.stdout_text()) {
                (Some(s), Some(size)) if s == "Synced" && size == want => {}
                (s, size) => bail!(
                    "{} is {} in a cluster of {} (of {want}): stopping {} now would leave too few members",
                    n.name,
                    s.as_deref().unwrap_or("?"),
                    size.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                    node.name
                ),
            }
        }
        Ok(())
    }

    fn check(cx: &Cx) -> Result<()> {
        cx.require_every_node(
            "stops every node and bootstraps a new cluster from one of them (MariaDB nodes of two versions must not form one cluster)",
        )?;
        // A typo in a numeric parameter fails the pre-flight, not the
        // middle of the upgrade.
        cx.param_parse("drain_wait_s", 5u32)?;
        cx.param_parse("vip_wait_s", 30u32)?;
        drain_file(cx)?;
        verify(cx)
    }

    fn pre_upgrade(cx: &Cx) -> Result<()> {
        let primary = cx.primary()?.name.clone();
        let dir = cx.param_or("backup_dir", "/var/backup/galera");
        let path = format!("{dir}/galera-{}.sql", cx.ctx.run_id);
        let dump = cx.run(
            &primary,
            "mysqldump",
            &[
                "--all-databases",
                "--single-transaction",
                "--routines",
                "--events",
                &format!("--result-file={path}"),
            ],
        )?;
        if dump.skipped {
            cx.info(format!(
                "dry run: would back up all databases to {path} on {primary}"
            ));
        } else {
            record_backup(cx, &primary, &path)?;
        }
        let drain = drain_file(cx)?;
        for n in cx.nodes() {
            cx.run(&n.name, "touch", &[&drain])?;
        }
        let wait: u32 = cx.param_parse("drain_wait_s", 5)?;
        if wait > 0 && !cx.ctx.dry_run {
            std::thread::sleep(std::time::Duration::from_secs(wait as u64));
        }
        cx.progress("service-down");
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let unit = unit(cx);
        let pkg = cx.param_or("package", "mariadb-server");
        cx.run(&node.name, "systemctl", &["stop", &unit])?;
        cx.run(&node.name, "rm", &["-f", "/var/lib/mysql/grastate.dat"])?;
        cx.run(
            &node.name,
            "apt-get",
            &["install", "-y", &format!("{pkg}={}", cx.ctx.to_version)],
        )?;
        Ok(())
    }

    fn post_upgrade(cx: &Cx) -> Result<()> {
        let unit = unit(cx);
        // The node stopped last holds the latest commits: bootstrap it.
        let primary = cx
            .nodes()
            .last()
            .ok_or_else(|| Error::msg("galera has no nodes"))?
            .name
            .clone();
        let boot = cx
            .run(&primary, "galera_new_cluster", &[])
            .and_then(|_| cx.run(&primary, "mysql", &["-N", "-B", "-e", "SELECT 1"]));
        let joined = boot.and_then(|_| {
            for n in cx.nodes().iter().filter(|n| n.name != primary) {
                cx.run(&n.name, "systemctl", &["start", &unit])?;
            }
            verify(cx)
        });
        if let Err(e) = joined {
            cx.warn(format!("bootstrap did not give a healthy cluster: {e}"));
            recover(cx)?;
        }
        undrain(cx)?;
        vip_health_check(cx, &primary)?;
        cx.progress("service-up");
        Ok(())
    }

    fn rollback(cx: &Cx) -> Result<()> {
        let (Some(node), Some(path), Some(sha)) = (
            cx.state_get("backup_node"),
            cx.state_get("backup_path"),
            cx.state_get("backup_sha256"),
        ) else {
            bail!(
                "no backup recorded in plugin state: pre-upgrade never completed, nothing to restore"
            );
        };
        let sum = cx.run(&node, "sha256sum", &[&path])?;
        let now = sum.stdout_text();
        if now.split_whitespace().next() != Some(sha.as_str()) {
            bail!(
                "backup {path} on {node} changed since it was taken (sha256 was {sha}); refusing to restore it"
            );
        }
        if verify(cx).is_err() {
            recover(cx)?;
        }
        cx.run(&node, "mysql", &["-e", &format!("source {path}")])?;
        undrain(cx)?;
        vip_health_check(cx, &node)?;
        cx.info(format!("restored {path} (sha256 {sha}) on {node}"));
        cx.progress("service-up");
        Ok(())
    }
}

fn caps_files() -> Vec<Capability> {
    vec![
        Capability::mutating("touch", &["/*/clustercheck.disabled"])
            .reason("take the backend out of haproxy (clustercheck)"),
        Capability::mutating(
            "rm",
            &["-f", "/*/clustercheck.disabled|/var/lib/mysql/grastate.dat"],
        )
        .reason("put the backend back; start a new cluster instead of a seqno restart"),
        Capability::mutating("systemctl", &["start|stop", "mariadb|mysql"])
            .reason("stop for the upgrade, start to join the cluster"),
        Capability::mutating("galera_new_cluster", &[]).reason("bootstrap the primary"),
        Capability::mutating("sed", &SAFE_TO_BOOTSTRAP)
            .reason("recovery: force the node with the highest seqno as primary"),
        Capability::read_only("galera_recovery", &[]).reason("recovery: find the highest seqno"),
        Capability::mutating("apt-get", &["install", "-y", "mariadb-server=*|galera-4=*"])
            .reason("install the new version"),
    ]
}

export_plugin!(Galera);

#[cfg(test)]
mod tests {
    use super::*;
    use uphost_sdk::script::Rule;
    use uphost_sdk::testing::{MockHost, context};

    const SYNCED3: &str = "wsrep_cluster_size\t3\nwsrep_cluster_status\tPrimary\nwsrep_local_state_comment\tSynced\nwsrep_ready\tON\n";

    #[test]
    fn parses_real_outputs() {
        assert_eq!(parse_wsrep(SYNCED3), (Some("Synced".into()), Some(3)));
        assert_eq!(
            parse_seqno("--wsrep_start_position=6c3f5b8e-9c1a-11ee-8c90-0242ac120002:1234\n"),
            Some(1234)
        );
    }

    #[test]
    fn check_refuses_a_degraded_cluster() {
        let host = MockHost::for_plugin::<Galera>()
            .rule(Rule::new("mysql", &["..."]).on("ctl3").then(
                0,
                "wsrep_cluster_size\t2\nwsrep_local_state_comment\tDonor/Desynced\n",
            ))
            .rule(Rule::new("mysql", &["..."]).then(0, SYNCED3));
        let cx = host.cx(context("galera", &["ctl1", "ctl2", "ctl3"]));
        let e = Galera::check(&cx).unwrap_err().to_string();
        assert!(e.contains("ctl3") && e.contains("Donor/Desynced"), "{e}");
    }

    #[test]
    fn check_refuses_a_limited_run_naming_what_to_limit() {
        let host = MockHost::for_plugin::<Galera>()
            .limit(&["ctl1"])
            .rule(Rule::new("mysql", &["..."]).then(0, SYNCED3));
        let cx = host.cx(context("galera", &["ctl1", "ctl2", "ctl3"]));
        let e = Galera::check(&cx).unwrap_err().to_string();
        assert!(
            e.contains("limited to ctl1")
                && e.contains("leaves out ctl2, ctl3")
                && e.contains("--limit ctl1,ctl2,ctl3"),
            "{e}"
        );
        assert!(host.commands().is_empty(), "{:?}", host.commands());
    }

    fn healthy_bootstrap() -> MockHost {
        MockHost::for_plugin::<Galera>()
            .rule(Rule::new("galera_new_cluster", &[]))
            .rule(Rule::new("mysql", &["-N", "-B", "-e", WSREP]).then(0, SYNCED3))
            .rule(Rule::new("mysql", &["-N", "-B", "-e", "SELECT 1"]).then(0, "1\n"))
            .rule(Rule::new("systemctl", &["..."]))
            .rule(Rule::new("rm", &["..."]))
    }

    #[test]
    fn vip_check_waits_for_haproxy_to_put_the_backends_back() {
        let host = healthy_bootstrap().rule(
            Rule::new("mysql", &["-h", "..."])
                .then_err(1, "ERROR 2013 (HY000): Lost connection to server at 'handshake: reading initial communication packet'")
                .then_err(1, "ERROR 2013 (HY000): Lost connection to server at 'handshake: reading initial communication packet'")
                .then(0, "1\n"),
        );
        let mut ctx = context("galera", &["ctl1", "ctl2", "ctl3"]);
        ctx.params.push(("vip".into(), "10.0.0.10".into()));
        let cx = host.cx(ctx);
        Galera::post_upgrade(&cx).unwrap();
        let vip_checks = host.count("-h 10.0.0.10");
        assert_eq!(vip_checks, 3);
    }

    #[test]
    fn vip_check_gives_up_after_vip_wait_s_and_a_bad_value_is_named() {
        let host = healthy_bootstrap().rule(
            Rule::new("mysql", &["-h", "..."]).then_err(1, "ERROR 2003 (HY000): Can't connect"),
        );
        let mut ctx = context("galera", &["ctl1", "ctl2", "ctl3"]);
        ctx.params.push(("vip_wait_s".into(), "1".into()));
        let e = Galera::post_upgrade(&host.cx(ctx)).unwrap_err().to_string();
        assert!(
            e.contains("failed 2 time(s) over 1 s") && e.contains("Can't connect"),
            "{e}"
        );

        let mut ctx = context("galera", &["ctl1", "ctl2", "ctl3"]);
        ctx.params.push(("vip_wait_s".into(), "30s".into()));
        let e = Galera::post_upgrade(&healthy_bootstrap().cx(ctx))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("parameter `vip_wait_s`") && e.contains("`30s`"),
            "{e}"
        );
    }

    #[test]
    fn post_upgrade_recovers_from_the_highest_seqno() {
        let host = MockHost::for_plugin::<Galera>()
            .rule(
                Rule::new("galera_new_cluster", &[])
                    .on("ctl3")
                    .then(0, "")
                    .then(0, ""),
            )
            .rule(Rule::new("galera_new_cluster", &[]).then(0, ""))
            .rule(
                Rule::new("mysql", &["-N", "-B", "-e", WSREP])
                    .on("ctl1")
                    .then(
                        0,
                        "wsrep_cluster_size\t1\nwsrep_local_state_comment\tInitialized\n",
                    )
                    .then(0, SYNCED3),
            )
            .rule(Rule::new("mysql", &["-N", "-B", "-e", WSREP]).then(0, SYNCED3))
            .rule(Rule::new("mysql", &["..."]).then(0, "1\n"))
            .rule(
                Rule::new("galera_recovery", &[])
                    .on("ctl2")
                    .then(0, "--wsrep_start_position=u:900\n"),
            )
            .rule(Rule::new("galera_recovery", &[]).then(0, "--wsrep_start_position=u:100\n"))
            .rule(Rule::new("systemctl", &["..."]).then(0, ""))
            .rule(Rule::new("sed", &SAFE_TO_BOOTSTRAP).on("ctl2"))
            .rule(Rule::new("rm", &["..."]).then(0, ""));
        let cx = host.cx(context("galera", &["ctl1", "ctl2", "ctl3"]));
        Galera::post_upgrade(&cx).unwrap();
        let cmds = host.commands();
        let forced = cmds
            .iter()
            .position(|c| c.starts_with("ctl2: sed -i s/^safe_to_bootstrap"));
        let boot = cmds.iter().position(|c| c == "ctl2: galera_new_cluster");
        assert!(
            forced.is_some() && boot.is_some() && forced < boot,
            "not forced as primary before the bootstrap: {cmds:#?}"
        );
        assert_eq!(host.milestones(), vec!["service-up"]);
    }
}
