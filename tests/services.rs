//! Real services end to end (`cargo xtask e2e`): a three-node MariaDB
//! Galera cluster behind HAProxy, and a three-node RabbitMQ cluster, on
//! loopback (see common/services.rs). The galera, haproxy and rabbitmq
//! plugins upgrade them through the local transport; then a second run
//! whose keystone schema migration changes rows and fails is rolled back,
//! and table checksums on every node prove each row is back.

use uphost_tests::commands_run;
use uphost_tests::current_journal;
use uphost_tests::services::{NODES, RealCluster};

const PLUGINS: &[&str] = &["galera", "haproxy", "rabbitmq", "keystone"];

/// Known rows: 500 customers, 5000 orders, 100 audit records.
const ROWS: &str = "CREATE DATABASE shop; USE shop; \
    CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(64), balance DECIMAL(10,2)); \
    CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT, amount DECIMAL(10,2), note VARCHAR(100)); \
    CREATE TABLE audit (id INT PRIMARY KEY, what TEXT); \
    INSERT INTO customers SELECT seq, CONCAT('customer-', seq), seq * 1.25 FROM seq_1_to_500; \
    INSERT INTO orders (customer_id, amount, note) SELECT seq % 500 + 1, seq * 0.5, REPEAT('x', seq % 50) FROM seq_1_to_5000; \
    INSERT INTO audit SELECT seq, CONCAT('event ', seq) FROM seq_1_to_100;";

/// The probes' figures of a run, checked against its journal: each probe
/// went down at least once, after the first step that changes anything
/// began, and was back before the run's end; its figures add up.
fn measured_downtime(j: &[serde_json::Value]) -> Vec<String> {
    let first_change = j
        .iter()
        .find(|e| e["event"] == "step-started" && e["step"]["phase"] != "check")
        .and_then(|e| e["at_ms"].as_u64())
        .expect("a step that changes something");
    let end = j.last().and_then(|e| e["at_ms"].as_u64()).unwrap();
    let mut lines = Vec::new();
    for (name, service) in [("vip-sql", "galera"), ("amqp", "rabbitmq")] {
        let s = j
            .iter()
            .find(|e| e["event"] == "probe-summary" && e["name"] == name)
            .unwrap_or_else(|| panic!("no figures for {name}"));
        let changes: Vec<(bool, u64)> = j
            .iter()
            .filter(|e| e["event"] == "probe" && e["name"] == name)
            .map(|e| (e["up"].as_bool().unwrap(), e["at_ms"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            changes.first().map(|c| c.0),
            Some(true),
            "{name} up at the start: {changes:?}"
        );
        assert_eq!(
            changes.last().map(|c| c.0),
            Some(true),
            "{name} up at the end: {changes:?}"
        );
        let downs: Vec<u64> = changes.iter().filter(|c| !c.0).map(|c| c.1).collect();
        assert!(!downs.is_empty(), "{name} never went down: {changes:?}");
        assert!(
            downs[0] >= first_change,
            "{name} down at {} ms, before anything changed ({first_change} ms)",
            downs[0]
        );
        assert!(changes.last().unwrap().1 <= end);
        let total: u64 = changes
            .windows(2)
            .filter(|w| !w[0].0 && w[1].0)
            .map(|w| w[1].1 - w[0].1)
            .sum();
        assert_eq!(s["down_ms"].as_u64(), Some(total), "{name}: {s}");
        assert_eq!(s["outages"].as_u64(), Some(downs.len() as u64));
        assert_eq!(s["service"], service);
        lines.push(format!(
            "{name} ({service}): down {:.1} s in {} outage(s), longest {:.1} s, {} samples",
            total as f64 / 1000.0,
            downs.len(),
            s["longest_ms"].as_u64().unwrap() as f64 / 1000.0,
            s["samples"]
        ));
    }
    lines
}

fn show(title: &str, lines: &[String]) {
    println!("{title}:");
    for l in lines {
        println!("  {l}");
    }
}

#[test]
fn galera_haproxy_rabbitmq_upgrade_then_a_failed_run_rolls_every_row_back() {
    let c = RealCluster::start(PLUGINS);
    c.sql("ctl1", ROWS);
    let before = c.checksums();
    show("checksums before", &before);
    let uuid_before = c.status_var("ctl1", "wsrep_cluster_state_uuid");

    let r = c.uphost(&["plugins", "approve", "--all", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());

    // Run 1: galera, haproxy and rabbitmq upgraded for real.
    let watch = c.watch_haproxy("ctl1");
    let r = c.uphost(&["run", "--yes", "--only", "galera", "haproxy", "rabbitmq"]);
    let most_down = watch.finish();
    assert_eq!(r.code, 0, "the upgrade failed:\n{}", r.all());
    let journal = current_journal(c.path());
    let ran = commands_run(&journal);
    let measured = measured_downtime(&journal);
    show("measured downtime (probes every 200 ms)", &measured);
    for (n, _) in NODES {
        for want in [
            format!("{n}: touch /var/tmp/clustercheck.disabled"),
            format!("{n}: systemctl stop mariadb"),
            format!("{n}: rm -f /var/lib/mysql/grastate.dat"),
            format!("{n}: systemctl restart haproxy"),
            format!("{n}: rm -rf /var/lib/rabbitmq/mnesia"),
            format!("{n}: systemctl start rabbitmq-server"),
        ] {
            assert!(ran.contains(&want), "`{want}` did not run: {ran:#?}");
        }
    }
    // The last node stopped is the one bootstrapped; the others joined it.
    let boot = ran
        .iter()
        .filter(|c| c.ends_with("galera_new_cluster"))
        .collect::<Vec<_>>();
    assert_eq!(boot, vec!["ctl3: galera_new_cluster"], "{ran:#?}");
    assert!(
        ran.iter()
            .any(|c| c.starts_with("ctl1: mysqldump --all-databases")),
        "no backup: {ran:#?}"
    );
    assert_eq!(
        most_down,
        NODES.len(),
        "haproxy never took every galera backend out while they were drained"
    );
    assert_eq!(
        c.haproxy_down("ctl1"),
        Some(0),
        "backends not back in haproxy"
    );
    // A new cluster, of three Synced nodes, with the new packages.
    assert_ne!(
        c.status_var("ctl1", "wsrep_cluster_state_uuid"),
        uuid_before
    );
    for (n, _) in NODES {
        assert_eq!(c.status_var(n, "wsrep_cluster_size"), "3");
        assert_eq!(c.status_var(n, "wsrep_local_state_comment"), "Synced");
        for (pkg, v) in [
            ("mariadb-server", "10.2"),
            ("haproxy", "1.8"),
            ("rabbitmq-server", "3.7"),
        ] {
            let got = std::fs::read_to_string(c.node_root(n).join("var/lib/packages").join(pkg))
                .unwrap_or_default();
            assert_eq!(got.trim(), v, "{pkg} on {n}");
        }
    }
    let status = c.on("ctl2", &["rabbitmqctl", "cluster_status"]);
    for (n, _) in NODES {
        assert!(
            status.stdout.contains(&format!("rabbit-{n}@localhost")),
            "{}",
            status.all()
        );
    }
    let policies = c.on("ctl3", &["rabbitmqctl", "list_policies"]);
    assert!(
        policies.stdout.contains("ha-all") && policies.stdout.contains("\"ha-mode\":\"all\""),
        "{}",
        policies.all()
    );
    let after_upgrade = c.checksums();
    show("checksums after the upgrade", &after_upgrade);
    assert_eq!(after_upgrade, before, "the upgrade changed rows");

    // Run 2: keystone's db_sync changes rows, then fails, and takes every
    // galera node down with it (SIGKILL); roll back: galera's rollback
    // must recover the cluster (highest seqno) before it restores the dump.
    std::fs::write(c.path().join("inject-db-sync-failure"), "crash-galera").unwrap();
    let r = c.uphost(&["run", "--yes", "--rollback-on-failure"]);
    assert_ne!(r.code, 0, "the injected failure did not fail the run");
    let out = r.all();
    assert!(out.contains("keystone-manage db_sync"), "{out}");
    assert!(
        out.contains("ROLLBACK of keystone, galera, haproxy")
            && out.contains("cannot roll back: rabbitmq"),
        "{out}"
    );
    assert!(out.contains("galera rollback: ok"), "{out}");
    let damaged = std::fs::read_to_string(c.path().join("after-bad-migration.txt"))
        .expect("the failing migration ran");
    show(
        "checksums after the failed migration",
        &damaged.lines().map(String::from).collect::<Vec<_>>(),
    );
    for t in ["customers", "orders"] {
        let was = before
            .iter()
            .find(|l| l.contains(&format!("shop.{t} ")))
            .unwrap();
        let sum = was.split_whitespace().nth(2).unwrap();
        assert!(
            damaged.contains(&format!("shop.{t}")) && !damaged.contains(sum),
            "the migration did not change shop.{t}: {damaged}"
        );
    }
    let journal = current_journal(c.path());
    let ran = commands_run(&journal);
    for (n, _) in NODES {
        assert!(
            ran.contains(&format!("{n}: galera_recovery")),
            "no recovery on {n}: {ran:#?}"
        );
    }
    let forced: Vec<&String> = ran
        .iter()
        .filter(|c| c.contains("sed -i s/^safe_to_bootstrap"))
        .collect();
    assert_eq!(forced.len(), 1, "one node forced as primary: {ran:#?}");
    let primary = forced[0].split(':').next().unwrap();
    assert!(
        ran.contains(&format!("{primary}: galera_new_cluster")),
        "{primary} not bootstrapped: {ran:#?}"
    );
    let seqnos: Vec<&str> = journal
        .iter()
        .filter(|e| e["event"] == "log")
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.contains("recovered seqno"))
        .collect();
    assert_eq!(seqnos.len(), NODES.len(), "{seqnos:?}");
    for line in seqnos {
        println!("recovery: {line}");
    }
    println!("recovery: bootstrapped from {primary} (highest seqno)");
    let restored = ran
        .iter()
        .find(|c| c.contains("mysql -e source"))
        .expect("galera's rollback restored the dump");
    println!("rollback: {restored}");
    let after_rollback = c.checksums();
    show("checksums after the rollback", &after_rollback);
    assert_eq!(
        after_rollback, before,
        "rows are not back after the rollback"
    );
    for (n, _) in NODES {
        assert_eq!(c.status_var(n, "wsrep_local_state_comment"), "Synced");
        let got = std::fs::read_to_string(c.node_root(n).join("var/lib/packages/haproxy"))
            .unwrap_or_default();
        assert_eq!(got.trim(), "1.5", "haproxy's rollback on {n}");
    }
    assert_eq!(
        c.haproxy_down("ctl1"),
        Some(0),
        "backends not back after the rollback"
    );
}
