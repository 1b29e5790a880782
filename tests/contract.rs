//! The contract's minors and the run's boundary, through the real binary:
//! a plugin built from the 0.1 WIT loads and runs unchanged beside 0.2
//! plugins; `--limit` is a boundary no plugin crosses (a mutating command
//! outside it is refused), plugins whose procedure is cluster-wide refuse
//! a partial run in `check`, and a 0.1 plugin, which cannot see a limit,
//! is refused on one.

use uphost_tests::{Demo, commands_run, finished_ok};

/// The demo with the 0.1 fixture (service `legacy`, on the controllers).
fn with_legacy(more: &[&str]) -> Demo {
    let mut plugins = vec!["fixture-contract-v0_1"];
    plugins.extend_from_slice(more);
    let d = Demo::new(&plugins, true);
    let services = d.path().join("services.yaml");
    let mut text = std::fs::read_to_string(&services).unwrap();
    text.push_str("  legacy:\n    roles: [controller]\n");
    std::fs::write(&services, text).unwrap();
    d
}

#[test]
fn a_plugin_built_against_0_1_loads_and_runs_unchanged_beside_0_2_ones() {
    let d = with_legacy(&["haproxy"]);
    let r = d.uphost(&["plugins", "list"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let line = |name: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {}", r.stdout))
            .to_string()
    };
    assert!(line("legacy").contains(" 0.1 "), "{}", r.stdout);
    assert!(line("haproxy").contains(" 0.2 "), "{}", r.stdout);
    let r = d.uphost(&["plugins", "inspect", "legacy"]);
    assert!(
        r.stdout.contains("uphost:plugin@0.1 (cannot see a --limit"),
        "{}",
        r.all()
    );

    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = d.journal();
    for phase in ["check", "pre-upgrade", "post-upgrade"] {
        assert!(finished_ok(&j, "legacy", phase), "legacy {phase}");
    }
    let ran = commands_run(&j);
    for n in ["ctl1", "ctl2", "ctl3"] {
        assert!(
            ran.iter().any(|c| c.contains(&format!("true upgrade {n}"))),
            "{ran:?}"
        );
    }
    // Its log line and milestone, from the 0.1 imports.
    let text = serde_json::Value::from(j).to_string();
    assert!(text.contains("3 nodes look fine"), "{text}");
    assert!(finished_ok(&d.journal(), "haproxy", "post-upgrade"));
}

#[test]
fn a_0_1_plugin_is_refused_on_a_limited_run_and_runs_when_the_limit_covers_it() {
    let d = with_legacy(&[]);
    let r = d.uphost(&["run", "--yes", "--limit", "ctl1"]);
    assert_eq!(r.code, 2, "{}", r.all());
    for needle in [
        "`legacy` (1 of its 3 nodes: ctl1)",
        "uphost:plugin@0.1",
        "cannot see a limit",
        "Nothing was executed",
    ] {
        assert!(r.stderr.contains(needle), "`{needle}` not in {}", r.stderr);
    }
    assert!(!d.path().join("state/runs").exists(), "a run was started");
    // A limit that covers every node of the service is no limit for it.
    let r = d.uphost(&["run", "--yes", "--limit", "controller"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(finished_ok(&d.journal(), "legacy", "post-upgrade"));
}

#[test]
fn a_limited_run_changes_nothing_outside_its_nodes() {
    let d = Demo::new(&["haproxy"], true);
    let r = d.uphost(&["run", "--yes", "--only", "haproxy", "--limit", "ctl1"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        d.ops("ctl1").iter().any(|o| o.contains("haproxy")),
        "{:?}",
        d.ops("ctl1")
    );
    for other in ["ctl2", "ctl3"] {
        assert!(d.ops(other).is_empty(), "{other}: {:?}", d.ops(other));
    }
}

#[test]
fn cluster_wide_plugins_refuse_a_limited_run_in_check() {
    let d = Demo::new(&["haproxy", "galera", "rabbitmq"], true);
    for service in ["galera", "rabbitmq"] {
        let r = d.uphost(&["run", "--yes", "--only", service, "--limit", "ctl1"]);
        assert_ne!(r.code, 0, "{}", r.all());
        for needle in [
            "cannot be upgraded on part of its nodes",
            "limited to ctl1",
            "leaves out ctl2, ctl3",
            "--limit ctl1,ctl2,ctl3",
        ] {
            assert!(r.all().contains(needle), "`{needle}` not in {}", r.all());
        }
        for n in ["ctl1", "ctl2", "ctl3"] {
            assert!(d.ops(n).is_empty(), "{n}: {:?}", d.ops(n));
        }
    }
}

#[test]
fn a_plugin_that_ignores_the_limit_is_refused_outside_it() {
    let d = Demo::new(&["hostile-limit-escape"], true);
    let services = d.path().join("services.yaml");
    let mut text = std::fs::read_to_string(&services).unwrap();
    text.push_str("  hostile-limit-escape:\n    roles: [controller]\n");
    std::fs::write(&services, text).unwrap();
    let r = d.uphost(&["run", "--yes", "--limit", "ctl1"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.all()
            .contains("node `ctl2` is outside this run's targets (--limit)"),
        "{}",
        r.all()
    );
    let ran = commands_run(&d.journal());
    // It looked at every node (read-only is allowed on all of them) and
    // changed ctl1 only.
    for n in ["ctl1", "ctl2", "ctl3"] {
        assert!(
            ran.iter().any(|c| c.contains(&format!("true look {n}"))),
            "{ran:?}"
        );
    }
    assert!(
        ran.iter().any(|c| c.contains("true change ctl1")),
        "{ran:?}"
    );
    assert!(
        !ran.iter().any(|c| c.contains("true change ctl2")),
        "{ran:?}"
    );
    assert!(
        !ran.iter().any(|c| c.contains("true change ctl3")),
        "{ran:?}"
    );
}

/// In a release train a 0.1 plugin, which knows no releases, is one hop
/// from its versions to the target: here the hop that lands on the train's
/// target. It runs there, unchanged, and the train completes.
#[test]
fn a_plugin_built_against_0_1_is_one_hop_of_a_train() {
    let mut plugins = vec!["fixture-contract-v0_1"];
    plugins.extend_from_slice(uphost_tests::SEED_PLUGINS);
    let d = Demo::of("train", "liberty", &plugins, true);
    let services = d.path().join("services.yaml");
    let mut text = std::fs::read_to_string(&services).unwrap();
    text.push_str("  legacy:\n    roles: [controller]\n");
    std::fs::write(&services, text).unwrap();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = d.journal();
    let legacy: Vec<&serde_json::Value> = j
        .iter()
        .filter(|e| e["event"] == "step-finished" && e["step"]["service"] == "legacy")
        .collect();
    assert!(!legacy.is_empty());
    assert!(
        legacy
            .iter()
            .all(|e| e["step"]["hop"] == 2 && e["status"] == "ok"),
        "{legacy:?}"
    );
    assert!(finished_ok(&j, "legacy", "finalize"));
    // It has no `verify` of its own and is not asked for one.
    assert!(!legacy.iter().any(|e| e["step"]["phase"] == "verify"));
}

/// A 0.1 plugin in a node-major run (contract 0.2's node guards and
/// reboots are new): it guards nothing, and its `upgrade` runs on each
/// node in turn beside the 0.2 plugins', unchanged.
#[test]
fn a_0_1_plugin_runs_unchanged_in_a_node_major_run() {
    let d = with_legacy(&["haproxy"]);
    let r = d.uphost(&["run", "--yes", "--order", "node-major"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = d.journal();
    assert_eq!(j[0]["options"]["node_major"], true, "{}", j[0]);
    let upgrades: Vec<(String, String)> = j
        .iter()
        .filter(|e| e["event"] == "step-finished" && e["step"]["phase"] == "upgrade")
        .map(|e| {
            (
                e["step"]["node"].as_str().unwrap().to_string(),
                e["step"]["service"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Node by node: both services on ctl1, then on ctl2, then on ctl3.
    let nodes: Vec<&str> = upgrades.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        nodes,
        ["ctl1", "ctl1", "ctl2", "ctl2", "ctl3", "ctl3"],
        "{upgrades:?}"
    );
    let ran = commands_run(&j);
    for n in ["ctl1", "ctl2", "ctl3"] {
        assert!(
            ran.iter().any(|c| c.contains(&format!("true upgrade {n}"))),
            "{ran:?}"
        );
    }
}
