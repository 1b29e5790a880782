//! Release trains through the real binary, on the simulated demo cluster:
//! Liberty -> Ocata in sequence with a gate between hops (examples/train),
//! Kilo -> Newton as a leapfrog (examples/leapfrog), a gate that fails in
//! hop 2 and the resume after the fix, and the paths `plan` refuses.

use serde_json::Value;
use uphost_tests::{Demo, SEED_PLUGINS};

fn train() -> Demo {
    Demo::of("train", "liberty", SEED_PLUGINS, true)
}

/// The `step-started` records of a journal, as (hop, service, phase, node).
fn started(j: &[Value]) -> Vec<(i64, String, String, String)> {
    j.iter()
        .filter(|e| e["event"] == "step-started")
        .map(|e| {
            let s = &e["step"];
            (
                s["hop"]
                    .as_i64()
                    .expect("every step of a train has its hop"),
                s["service"].as_str().unwrap().to_string(),
                s["phase"].as_str().unwrap().to_string(),
                s["node"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn count(ops: &[String], line: &str) -> usize {
    ops.iter().filter(|o| *o == line).count()
}

fn cluster(d: &Demo) -> Value {
    serde_json::from_str(&std::fs::read_to_string(d.path().join("nodes/cluster.json")).unwrap())
        .unwrap()
}

fn packages(d: &Demo, node: &str) -> Value {
    let st: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join(format!("nodes/{node}/state.json"))).unwrap(),
    )
    .unwrap();
    st["packages"].clone()
}

#[test]
fn an_in_sequence_train_runs_hop_by_hop_through_its_gates() {
    let d = train();
    let plan = d.uphost(&["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    for line in [
        "release train: 3 hops (in-sequence)",
        "hop 1: ",
        "keystone liberty -> mitaka",
        "galera 10.0 -> 10.1",
        "hop 3: keystone newton -> ocata",
        "placement newton -> ocata",
        "gate: verify of every service deployed, then instances-alive",
    ] {
        assert!(plan.stdout.contains(line), "{line}\n{}", plan.stdout);
    }
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = d.journal();
    let steps = started(&j);
    // Hop k of every service ends before hop k+1 of any: the hops of the
    // started steps never go back.
    let hops: Vec<i64> = steps.iter().map(|s| s.0).collect();
    assert!(hops.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    assert_eq!(hops.last(), Some(&2));
    // Each gate after all of its hop's steps: verify of each deployed
    // service, then the operator's command, and nothing of the next hop
    // before it.
    for hop in 0..2 {
        let of_hop: Vec<&(i64, String, String, String)> =
            steps.iter().filter(|s| s.0 == hop).collect();
        let gate_at = of_hop
            .iter()
            .position(|s| s.1 == "(gate)" && s.3 == "instances-alive")
            .unwrap_or_else(|| panic!("no gate after hop {}: {of_hop:?}", hop + 1));
        assert_eq!(gate_at, of_hop.len() - 1, "the gate ends hop {}", hop + 1);
        let first_verify = of_hop.iter().position(|s| s.2 == "verify").unwrap();
        assert!(
            of_hop[first_verify..].iter().all(|s| s.2 == "verify"),
            "hop {}: a step after the gate began: {of_hop:?}",
            hop + 1
        );
        for svc in ["galera", "keystone", "nova"] {
            assert!(
                of_hop.iter().any(|s| s.1 == svc && s.2 == "verify"),
                "{svc} verify"
            );
        }
        let gate_ok = j.iter().any(|e| {
            e["event"] == "step-finished"
                && e["step"]["service"] == "(gate)"
                && e["step"]["hop"] == hop
                && e["status"] == "ok"
        });
        assert!(gate_ok, "gate of hop {} passed", hop + 1);
    }
    // Services with chains of their own hop in the first hops; placement,
    // new in Ocata, only in the last.
    assert!(
        steps
            .iter()
            .filter(|s| s.1 == "placement")
            .all(|s| s.0 == 2)
    );
    assert!(steps.iter().filter(|s| s.1 == "ceph-mon").all(|s| s.0 == 0));
    assert!(steps.iter().filter(|s| s.1 == "rabbitmq").all(|s| s.0 < 2));
    // Each release installed once per node, in order; the end state.
    let ops = d.ops("ctl2");
    for (i, v) in ["mitaka", "newton", "ocata"].iter().enumerate() {
        assert_eq!(
            count(&ops, &format!("apt-get install -y keystone={v}")),
            1,
            "{ops:?}"
        );
        let at = ops
            .iter()
            .position(|o| *o == format!("apt-get install -y keystone={v}"))
            .unwrap();
        if i > 0 {
            let before = ops
                .iter()
                .position(|o| {
                    *o == format!(
                        "apt-get install -y keystone={}",
                        ["mitaka", "newton", "ocata"][i - 1]
                    )
                })
                .unwrap();
            assert!(before < at);
        }
    }
    let c = cluster(&d);
    assert_eq!(c["schema"]["nova"], "ocata");
    assert_eq!(c["schema"]["keystone"], "ocata");
    // Cells v2 only on the hop to Ocata.
    assert_eq!(c["cells"], serde_json::json!(["cell0", "cell1"]));
    let ctl1 = d.ops("ctl1");
    assert_eq!(count(&ctl1, "nova-manage cell_v2 map_cell0"), 1, "{ctl1:?}");
    let p = packages(&d, "ctl1");
    assert_eq!(p["mariadb-server"], "10.2");
    assert_eq!(p["rabbitmq-server"], "3.7");
    assert_eq!(p["nova-api"], "ocata");
    assert_eq!(packages(&d, "cmp3")["nova-compute"], "ocata");
    // status and the report show the hops as stages of one timeline.
    let st = d.status();
    let hops = st["hops"].as_array().expect("hops in status");
    assert_eq!(hops.len(), 3);
    assert!(hops.iter().all(|h| h["status"] == "done"), "{st}");
    assert_eq!(hops[0]["gate"], "passed");
    assert_eq!(hops[1]["gate"], "passed");
    let report = d.report();
    assert!(report.contains("<h2>Release train</h2>"), "report");
    assert_eq!(report.matches("class=\"hop\"").count(), 3, "a line per hop");
}

#[test]
fn a_leapfrog_runs_each_migration_once_and_deploys_once() {
    let d = Demo::of("leapfrog", "kilo", SEED_PLUGINS, true);
    let r = d.uphost(&["run", "--yes", "--pause-between-hops"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = d.journal();
    let steps = started(&j);
    for svc in ["keystone", "nova", "neutron"] {
        let migrations: Vec<i64> = steps
            .iter()
            .filter(|s| s.1 == svc && s.2 == "migrate")
            .map(|s| s.0)
            .collect();
        assert_eq!(migrations, [0, 1], "{svc}: one marker per migration");
        let deploys: Vec<&(i64, String, String, String)> = steps
            .iter()
            .filter(|s| s.1 == svc && s.2 == "upgrade")
            .collect();
        assert_eq!(deploys.len(), 3, "{svc}: the target deployed once per node");
        assert!(deploys.iter().all(|s| s.0 == 2));
    }
    // Liberty's and Mitaka's migrations with their own code on the first
    // node only; Newton deployed on every node once.
    let ctl1 = d.ops("ctl1");
    assert_eq!(count(&ctl1, "keystone-manage db_sync"), 3, "{ctl1:?}");
    assert_eq!(count(&ctl1, "apt-get install -y keystone=liberty"), 1);
    assert_eq!(count(&ctl1, "apt-get install -y keystone=mitaka"), 1);
    assert_eq!(count(&ctl1, "neutron-db-manage upgrade heads"), 3);
    for n in ["ctl1", "ctl2", "ctl3"] {
        assert_eq!(
            count(&d.ops(n), "apt-get install -y keystone=newton"),
            1,
            "{n}"
        );
    }
    let ctl2 = d.ops("ctl2");
    assert!(
        !ctl2
            .iter()
            .any(|o| o.contains("=liberty") || o.contains("=mitaka")),
        "{ctl2:?}"
    );
    // Computes have no database: deployed once, at the end.
    let cmp1 = d.ops("cmp1");
    assert_eq!(
        cmp1,
        [
            "systemctl stop nova-compute",
            "apt-get install -y nova-compute=newton",
            "systemctl start nova-compute"
        ]
    );
    assert_eq!(cluster(&d)["schema"]["nova"], "newton");
    // The operator was asked before each hop after the first: the second
    // one is the deploy.
    let asked: Vec<&str> = j
        .iter()
        .filter(|e| e["event"] == "confirmation")
        .filter_map(|e| e["prompt"].as_str())
        .filter(|p| p.contains("its gate passed. Start hop"))
        .collect();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked[1].contains("keystone mitaka -> newton"),
        "{}",
        asked[1]
    );
    assert!(
        asked[0].contains("keystone liberty -> mitaka (migrations only)"),
        "{}",
        asked[0]
    );
    // The plan says it is one way.
    let plan = d.uphost(&["plan"]);
    assert!(plan.stdout.contains("(migrations only)"), "{}", plan.stdout);
    assert!(plan.stdout.contains("one way"), "{}", plan.stdout);
}

#[test]
fn a_failed_gate_in_hop_2_stops_the_run_and_resume_goes_on_from_there() {
    let d = train();
    // The operator's gate fails after hop 2 until the cause is fixed.
    d.edit(
        "services.yaml",
        "command: [sh, gates/instances-alive.sh]",
        "command: [sh, -c, 'test \"$UPHOST_HOP\" != 2 || test -e fixed || { echo resources lost >&2; exit 3; }']",
    );
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("gate command `instances-alive` (hop 2)"),
        "{}",
        r.all()
    );
    assert!(r.all().contains("exited 3: resources lost"), "{}", r.all());
    let steps = started(&d.journal());
    assert!(!steps.iter().any(|s| s.0 == 2), "hop 3 began: {steps:?}");
    let st = d.status();
    let hops = st["hops"].as_array().unwrap();
    assert_eq!(
        (hops[0]["status"].as_str(), hops[0]["gate"].as_str()),
        (Some("done"), Some("passed"))
    );
    assert_eq!(
        (hops[1]["status"].as_str(), hops[1]["gate"].as_str()),
        (Some("failed"), Some("failed"))
    );
    assert_eq!(hops[2]["status"], "remaining");
    let text = d.uphost(&["status"]);
    assert!(
        text.stdout.contains("hop 1 of 3: done, gate passed"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("hop 2 of 3: failed, GATE FAILED: gate command `instances-alive` (hop 2)"),
        "{}",
        text.stdout
    );
    let report = d.report();
    assert!(
        report.contains("<td>2</td>") && report.contains("<td>FAILED</td>"),
        "report"
    );
    // The failure lists what is left of every remaining hop.
    for line in [
        "every one of every remaining hop:",
        "  hop 2:\n    gate commands: `instances-alive` (failed)\n  hop 3:",
        "    keystone: check, pre-upgrade, upgrade on ctl1, ctl2, ctl3, post-upgrade, finalize",
        "    placement: check, pre-upgrade",
    ] {
        assert!(r.stderr.contains(line), "{line}\n{}", r.stderr);
    }

    std::fs::write(d.path().join("fixed"), "").unwrap();
    let before = d.ops("ctl1").len();
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = d.journal();
    let resumed_at = j.iter().position(|e| e["event"] == "run-resumed").unwrap();
    let after = started(&j[resumed_at..]);
    assert_eq!(
        after[0],
        (
            1,
            "(gate)".into(),
            "verify".into(),
            "instances-alive".into()
        )
    );
    assert!(after[1..].iter().all(|s| s.0 == 2), "{after:?}");
    // Hops 1 and 2 were not repeated: each release installed once.
    let ops = d.ops("ctl1");
    for v in ["mitaka", "newton", "ocata"] {
        assert_eq!(
            count(&ops, &format!("apt-get install -y keystone={v}")),
            1,
            "{ops:?}"
        );
    }
    assert!(ops.len() > before);
    assert!(
        d.status()["hops"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["status"] == "done")
    );
}

#[test]
fn plan_refuses_an_impossible_path_with_the_plugins_own() {
    let d = train();
    d.edit(
        "services.yaml",
        "    from_version: \"3.5\"\n    to_version: \"3.7\"",
        "    from_version: \"3.5\"\n    to_version: \"5.0\"",
    );
    let r = d.uphost(&["plan"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("service `rabbitmq`: its plugin does not know release `5.0` (in to_version)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("3.5 -> 3.6 -> 3.7 -> 3.8"),
        "{}",
        r.stderr
    );
    d.edit(
        "services.yaml",
        "    from_version: \"3.5\"\n    to_version: \"5.0\"",
        "    from_version: \"3.5\"\n    to_version: \"3.7\"",
    );
    // A jump the plugin does not allow, asked for with `via`.
    d.edit(
        "services.yaml",
        "  keystone:\n    roles: [controller]",
        "  keystone:\n    roles: [controller]\n    via: [newton]",
    );
    for cmd in [&["plan"][..], &["run", "--yes"]] {
        let r = d.uphost(cmd);
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.stderr.contains(
                "service `keystone`: its plugin cannot upgrade liberty -> newton in one hop"
            ),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("liberty -> mitaka -> newton -> ocata"),
            "{}",
            r.stderr
        );
    }
    assert!(
        !d.path().join("state/current").exists(),
        "a refused run started"
    );
    assert!(d.ops("ctl1").is_empty(), "something ran");
    // A downgrade is not a train.
    d.edit(
        "services.yaml",
        "    via: [newton]",
        "    from_version: ocata\n    to_version: liberty",
    );
    let r = d.uphost(&["plan"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("ocata -> liberty does not go forward"),
        "{}",
        r.stderr
    );
}

/// A train's JSON stream, with a gate failing in hop 2 and the rollback
/// that follows, validates against docs/events.schema.json; the rollback
/// undoes the hop in progress of every touched service, and the earlier
/// hops of those whose every hop can be undone, newest first.
#[test]
fn a_trains_events_validate_and_its_rollback_goes_back_hop_by_hop() {
    let d = train();
    d.edit(
        "services.yaml",
        "command: [sh, gates/instances-alive.sh]",
        "command: [sh, -c, 'test \"$UPHOST_HOP\" != 2']",
    );
    let r = d.uphost(&["--output", "json", "run", "--yes", "--rollback-on-failure"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(uphost_tests::root().join("docs/events.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let events: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for (i, v) in events.iter().enumerate() {
        let errors: Vec<String> = validator.iter_errors(v).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "event {}: {v}\n{}",
            i + 1,
            errors.join("\n")
        );
    }
    let start = &events[0];
    assert_eq!(start["train"]["hops"], 3);
    assert_eq!(
        start["train"]["gates"],
        serde_json::json!(["instances-alive"])
    );
    let rb = events
        .iter()
        .find(|e| e["event"] == "rollback-started")
        .expect("a rollback");
    let steps: Vec<(String, i64)> = rb["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap().to_string(),
                s["hop"].as_i64().unwrap(),
            )
        })
        .collect();
    // Reversible services touched in both hops: hop 2, then hop 1.
    for svc in ["keystone", "galera", "nova"] {
        let mine: Vec<i64> = steps
            .iter()
            .filter(|(s, _)| s == svc)
            .map(|(_, h)| *h)
            .collect();
        assert_eq!(mine, [1, 0], "{svc}: {steps:?}");
    }
    // haproxy had one hop (hop 1); irreversible ones are named as such.
    assert!(steps.contains(&("haproxy".to_string(), 0)), "{steps:?}");
    let irreversible = rb["irreversible"].as_array().unwrap();
    assert!(irreversible.iter().any(|s| s == "rabbitmq"), "{rb}");
    assert!(
        events.last().unwrap()["outcome"] == "rolled-back",
        "{:?}",
        events.last()
    );
    // Keystone went back to Liberty, through Newton's and Mitaka's
    // rollbacks, on every node.
    assert_eq!(packages(&d, "ctl3")["keystone"], "liberty");
}

/// Probes named by `train.probes` must be healthy between hops: a probe
/// that never is stops the train after hop 1, naming it and what it saw;
/// resume waits again and goes on once it is.
#[test]
fn probes_gate_the_next_hop() {
    let d = train();
    let port = uphost_tests::free_port();
    d.edit(
        "services.yaml",
        "train:\n  style: in-sequence\n",
        "train:\n  style: in-sequence\n  probes: {probes: [api], samples: 2, deadline_s: 1}\n",
    );
    let services = d.path().join("services.yaml");
    let text = std::fs::read_to_string(&services).unwrap();
    std::fs::write(
        &services,
        format!("{text}probes:\n  - {{name: api, tcp: \"127.0.0.1:{port}\", interval_ms: 20}}\n"),
    )
    .unwrap();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains(
            "gate after hop 1: probe `api` was not healthy for 2 consecutive samples within 1 s"
        ),
        "{}",
        r.stderr
    );
    assert!(
        !started(&d.journal()).iter().any(|s| s.0 > 0),
        "hop 2 began"
    );
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || for _ in l.incoming() {});
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let passed: Vec<u64> = d
        .journal()
        .iter()
        .filter(|e| e["event"] == "gate-checked" && e["service"] == "(gate)" && e["passed"] == true)
        .map(|e| e["batch"].as_u64().unwrap())
        .collect();
    assert_eq!(passed, [0, 1], "the gates after hops 1 and 2 passed");
}
