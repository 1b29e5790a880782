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
//! A minor update (`mode: minor-update`, one MariaDB release) is rolling
//! instead: no dump restore, no drain; each node in turn is stopped (once
//! `ok-to-stop` saw every other member Synced), updated, started, and
//! waited for until it is Synced again (it rejoins by IST, its
//! `grastate.dat` kept).
//!
//! In containers (`deploy: containers`, kolla's `mariadb` container and
//! its `mariadb` volume), as the journey ran it: the old container and
//! image are removed and the new one created with its configuration;
//! `mysql`, `mysqldump` and `sha256sum` run inside the container;
//! `grastate.dat` is in the volume on the host; the primary is bootstrapped
//! by a container created with `BOOTSTRAP_ARGS=--wsrep-new-cluster`, then,
//! once the others joined, re-created and restarted as a plain member
//! (kolla's recovery does the same); `galera_recovery` runs in a
//! throw-away container with the volume.
//!
//! Parameters (and `deploy`, `engine`, `registry`, `config_dir` of
//! `uphost_sdk::deploy`): `unit` (default `mariadb`), `package` (`mariadb-server`),
//! `backup_dir` (`/var/backup/galera`), `drain_file`
//! (`/var/tmp/clustercheck.disabled`), `drain_wait_s` (`5`), `vip`
//! (`127.0.0.1`), `vip_wait_s` (`30`: how long the VIP may refuse
//! connections after the drain is lifted, until haproxy's next health check
//! puts the backends back).

use uphost_sdk::deploy::{self, Deploy, Unit};
use uphost_sdk::prelude::*;

/// The plugin.
pub struct Galera;

const WSREP: &str = "SHOW STATUS LIKE 'wsrep%'";

/// Mark a node's saved state safe to bootstrap from (recovery only).
const SAFE_TO_BOOTSTRAP: &str = "s/^safe_to_bootstrap: *0/safe_to_bootstrap: 1/";
/// The same, as a capability pattern: its `*` is sed's, not a glob.
const SAFE_TO_BOOTSTRAP_PATTERN: &str = r"s/^safe_to_bootstrap: \*0/safe_to_bootstrap: 1/";

/// Where `grastate.dat` is, on the host: the datadir, or kolla's
/// `mariadb` volume.
const GRASTATE: &str = "/var/lib/mysql/grastate.dat|/var/lib/docker/volumes/mariadb/_data/grastate.dat|/var/lib/containers/storage/volumes/mariadb/_data/grastate.dat";

/// The option that makes kolla's MariaDB container bootstrap a new cluster.
const BOOTSTRAP_ARGS: [&str; 2] = ["-e", "BOOTSTRAP_ARGS=--wsrep-new-cluster"];

fn grastate(d: &Deploy) -> String {
    format!("{}/grastate.dat", d.volume("mariadb", "/var/lib/mysql"))
}

/// MariaDB's unit, package and kolla container.
fn db<'a>(cx: &'a Cx) -> Unit<'a> {
    Unit {
        unit: cx.param_or("unit", "mariadb"),
        package: cx.param_or("package", "mariadb-server"),
        container: "mariadb",
    }
}

/// `mysql ARGS` where MariaDB runs (in its container, or on the node).
fn mysql(cx: &Cx, node: &str, args: &[&str]) -> Result<ExecOutput> {
    Deploy::of(cx)?.exec(cx, node, db(cx), "mysql", args)
}

/// Bootstrap a new cluster on `primary`: `galera_new_cluster`, or kolla's
/// bootstrap container.
fn bootstrap(cx: &Cx, primary: &str) -> Result<()> {
    let d = Deploy::of(cx)?;
    match d {
        Deploy::Packages => cx.run(primary, "galera_new_cluster", &[]).map(drop),
        Deploy::Containers { .. } => {
            let v = &cx.ctx.to_version;
            d.replace(cx, primary, db(cx), v, v, &BOOTSTRAP_ARGS)?;
            d.start(cx, primary, db(cx))
        }
    }
}

/// After a container bootstrap, once the others joined: the primary
/// re-created and restarted as a plain member (it would bootstrap a second
/// cluster at its next restart otherwise).
fn unbootstrap(cx: &Cx, primary: &str) -> Result<()> {
    let d = Deploy::of(cx)?;
    if d == Deploy::Packages {
        return Ok(());
    }
    let v = &cx.ctx.to_version;
    d.stop(cx, primary, db(cx))?;
    d.install(cx, primary, db(cx), v, v)?;
    d.start(cx, primary, db(cx))?;
    verify(cx)
}

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
        let out = mysql(cx, &n.name, &["-N", "-B", "-e", WSREP])?;
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
    let d = Deploy::of(cx)?;
    cx.warn("cluster not healthy after bootstrap: running automated galera recovery");
    for n in cx.nodes() {
        d.stop(cx, &n.name, db(cx))?;
    }
    let mut best: Option<(i64, String)> = None;
    for n in cx.nodes() {
        let out = d.run_once(
            cx,
            &n.name,
            db(cx),
            &cx.ctx.to_version,
            "galera_recovery",
            &[],
        )?;
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
    cx.run(&primary, "sed", &["-i", SAFE_TO_BOOTSTRAP, &grastate(&d)])?;
    bootstrap(cx, &primary)?;
    mysql(cx, &primary, &["-N", "-B", "-e", "SELECT 1"])?;
    for n in cx.nodes().iter().filter(|n| n.name != primary) {
        d.start(cx, &n.name, db(cx))?;
    }
    verify(cx)?;
    unbootstrap(cx, &primary)
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
        let last = match mysql(cx, from, &argv) {
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
    let sum = Deploy::of(cx)?.exec(cx, primary, db(cx), "sha256sum", &[path])?;
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

/// Is this a rolling minor update (one MariaDB release)?
fn rolling(cx: &Cx) -> bool {
    cx.ctx.mode == Mode::MinorUpdate
}

/// Wait until `node` is Synced in the full cluster again (it rejoins by
/// IST after a minor update), once a second for up to `sync_wait_s`.
fn wait_synced(cx: &Cx, node: &str) -> Result<()> {
    let wait: u32 = cx.param_parse("sync_wait_s", 120)?;
    let want = cx.nodes().len();
    let mut waited = 0;
    loop {
        let out = mysql(cx, node, &["-N", "-B", "-e", WSREP])?;
        let (s, size) = parse_wsrep(&out.stdout_text());
        if out.skipped || (s.as_deref() == Some("Synced") && size == Some(want)) {
            return Ok(());
        }
        if waited >= wait || cx.ctx.dry_run {
            bail!(
                "{node} did not rejoin within {wait} s (sync_wait_s): wsrep_local_state_comment={}, wsrep_cluster_size={} (expected Synced and {want})",
                s.as_deref().unwrap_or("?"),
                size.map(|x| x.to_string()).unwrap_or_else(|| "?".into())
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        waited += 1;
    }
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
        .capabilities(deploy::in_container(
            "mariadb",
            [
                Capability::read_only(
                    "mysql",
                    &["-N", "-B", "-e", "SHOW STATUS LIKE 'wsrep%'|SELECT 1"],
                )
                .reason("cluster state (Synced, size) and a query once bootstrapped"),
                Capability::read_only(
                    "mysql",
                    &["-h", "*", "-P", "3306", "-N", "-B", "-e", "SELECT 1"],
                )
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
            ],
        ))
        .capabilities(deploy::capabilities(
            "mariadb|mysql",
            "mariadb-server|galera-4",
            "mariadb",
        ))
        .capabilities(caps_files())
    }

    fn verify(cx: &Cx) -> Result<()> {
        verify(cx)
    }

    /// Before a node of a rolling (minor) update stops: every other member
    /// `Synced`, with the full cluster size. A major upgrade stops every
    /// node by design: nothing to wait for.
    fn ok_to_stop(cx: &Cx, node: &Node) -> Result<()> {
        if !rolling(cx) {
            return Ok(());
        }
        let want = cx.nodes().len();
        for n in cx.nodes().iter().filter(|n| n.name != node.name) {
            let out = mysql(cx, &n.name, &["-N", "-B", "-e", WSREP])?;
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
        Deploy::of(cx)?;
        if !rolling(cx) {
            cx.require_every_node(
                "stops every node and bootstraps a new cluster from one of them (MariaDB nodes of two versions must not form one cluster)",
            )?;
        }
        // A typo in a numeric parameter fails the pre-flight, not the
        // middle of the upgrade.
        cx.param_parse("drain_wait_s", 5u32)?;
        cx.param_parse("vip_wait_s", 30u32)?;
        cx.param_parse("sync_wait_s", 120u32)?;
        drain_file(cx)?;
        verify(cx)
    }

    fn pre_upgrade(cx: &Cx) -> Result<()> {
        let primary = cx.primary()?.name.clone();
        let dir = cx.param_or("backup_dir", "/var/backup/galera");
        let path = format!("{dir}/galera-{}.sql", cx.ctx.run_id);
        let dump = Deploy::of(cx)?.exec(
            cx,
            &primary,
            db(cx),
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
        if rolling(cx) {
            // Node by node: each stopped node fails clustercheck by itself,
            // the others keep serving.
            return Ok(());
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
        let d = Deploy::of(cx)?;
        d.stop(cx, &node.name, db(cx))?;
        if rolling(cx) {
            d.install(
                cx,
                &node.name,
                db(cx),
                &cx.ctx.from_version,
                &cx.ctx.to_version,
            )?;
            d.start(cx, &node.name, db(cx))?;
            return wait_synced(cx, &node.name);
        }
        cx.run(&node.name, "rm", &["-f", &grastate(&d)])?;
        d.install(
            cx,
            &node.name,
            db(cx),
            &cx.ctx.from_version,
            &cx.ctx.to_version,
        )
    }

    fn post_upgrade(cx: &Cx) -> Result<()> {
        if rolling(cx) {
            return verify(cx);
        }
        let d = Deploy::of(cx)?;
        // The node stopped last holds the latest commits: bootstrap it.
        let primary = cx
            .nodes()
            .last()
            .ok_or_else(|| Error::msg("galera has no nodes"))?
            .name
            .clone();
        let boot = bootstrap(cx, &primary)
            .and_then(|_| mysql(cx, &primary, &["-N", "-B", "-e", "SELECT 1"]));
        let joined = boot.and_then(|_| {
            for n in cx.nodes().iter().filter(|n| n.name != primary) {
                d.start(cx, &n.name, db(cx))?;
            }
            verify(cx)?;
            unbootstrap(cx, &primary)
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
        let d = Deploy::of(cx)?;
        let sum = d.exec(cx, &node, db(cx), "sha256sum", &[&path])?;
        let now = sum.stdout_text();
        if now.split_whitespace().next() != Some(sha.as_str()) {
            bail!(
                "backup {path} on {node} changed since it was taken (sha256 was {sha}); refusing to restore it"
            );
        }
        if verify(cx).is_err() {
            recover(cx)?;
        }
        mysql(cx, &node, &["-e", &format!("source {path}")])?;
        undrain(cx)?;
        vip_health_check(cx, &node)?;
        cx.info(format!("restored {path} (sha256 {sha}) on {node}"));
        cx.progress("service-up");
        Ok(())
    }
}

fn caps_files() -> Vec<Capability> {
    let mut caps = vec![
        Capability::mutating("touch", &["/*/clustercheck.disabled"])
            .reason("take the backend out of haproxy (clustercheck)"),
        Capability::mutating("rm", &["-f", "/*/clustercheck.disabled"])
            .reason("put the backend back in haproxy"),
        Capability::mutating("rm", &["-f", GRASTATE])
            .reason("start a new cluster instead of a seqno restart"),
        Capability::mutating("galera_new_cluster", &[]).reason("bootstrap the primary"),
        Capability::mutating("sed", &["-i", SAFE_TO_BOOTSTRAP_PATTERN, GRASTATE])
            .reason("recovery: force the node with the highest seqno as primary"),
        Capability::read_only("galera_recovery", &[]).reason("recovery: find the highest seqno"),
    ];
    for engine in ["docker", "podman"] {
        caps.push(
            Capability::mutating(
                engine,
                &[
                    "create",
                    "--name",
                    "mariadb",
                    "--net=host",
                    "--restart=unless-stopped",
                    "-v",
                    "/*:/var/lib/kolla/config_files:ro",
                    BOOTSTRAP_ARGS[0],
                    BOOTSTRAP_ARGS[1],
                    "*/mariadb:*",
                ],
            )
            .reason("bootstrap the primary: kolla's container with --wsrep-new-cluster"),
        );
        caps.push(
            Capability::read_only(
                engine,
                &[
                    "run",
                    "--rm",
                    "--volumes-from",
                    "mariadb",
                    "*/mariadb:*",
                    "galera_recovery",
                ],
            )
            .reason("recovery: find the highest seqno, with the container's volume"),
        );
    }
    caps
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
            .rule(Rule::new("sed", &["..."]).on("ctl2"))
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
