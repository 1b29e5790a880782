//! Node-by-node minor updates through the real binary, on the simulated
//! cluster of `examples/minor`: each controller's services run between its
//! Pacemaker guard's standby and unstandby, never two controllers out at
//! once; a failed cluster check stops the run at that node; the update
//! identifier refuses a second control host and a stale run; a compute's
//! reboot is waited for, and a SIGKILL during the wait resumes without a
//! second reboot.

use std::process::{Command, Stdio};
use std::time::Duration;

use uphost_tests::{Demo, uphost_bin, wait_until};

const PLUGINS: &[&str] = &["pacemaker", "haproxy", "host-os"];

fn minor() -> Demo {
    Demo::of("minor", "newton", PLUGINS, true)
}

fn pacemaker_log(d: &Demo) -> Vec<String> {
    std::fs::read_to_string(d.path().join("nodes/pacemaker.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn reboots(d: &Demo, node: &str) -> usize {
    std::fs::read_to_string(d.path().join(format!("nodes/{node}/reboots.log")))
        .unwrap_or_default()
        .lines()
        .count()
}

fn marker(d: &Demo, node: &str) -> String {
    std::fs::read_to_string(
        d.path()
            .join(format!("nodes/{node}/fs/var/lib/uphost/update-identifier")),
    )
    .unwrap_or_default()
}

#[test]
fn each_controller_is_updated_between_its_standby_and_unstandby_one_at_a_time() {
    let d = minor();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // One controller out at a time, in order, each back before the next.
    assert_eq!(
        pacemaker_log(&d),
        [
            "ctl1 standby out=1",
            "ctl1 online out=0",
            "ctl2 standby out=1",
            "ctl2 online out=0",
            "ctl3 standby out=1",
            "ctl3 online out=0",
        ]
    );
    for n in ["ctl1", "ctl2", "ctl3"] {
        let ops = d.ops(n);
        let pos = |p: &str| {
            ops.iter()
                .position(|o| o.starts_with(p))
                .unwrap_or_else(|| panic!("{n}: no `{p}` in {ops:?}"))
        };
        let (out, back) = (
            pos(&format!("pcs node standby {n}")),
            pos(&format!("pcs node unstandby {n}")),
        );
        for step in [
            "apt-get install -y haproxy=1.5.18",
            "systemctl restart haproxy",
            "apt-get install -y pacemaker=1.1.16",
        ] {
            let at = pos(step);
            assert!(
                out < at && at < back,
                "{n}: `{step}` outside standby..unstandby: {ops:?}"
            );
        }
        assert!(marker(&d, n).ends_with(" done\n"), "{n}: {}", marker(&d, n));
    }
    // The computes: the host OS stage, each rebooted once and waited for.
    for n in ["cmp1", "cmp2", "cmp3", "cmp4"] {
        assert_eq!(reboots(&d, n), 1, "{n}");
        let ops = d.ops(n);
        let start = ops
            .iter()
            .rposition(|o| o == "systemctl start nova-compute");
        assert!(start.is_some(), "{n}: {ops:?}");
    }
    let journal = d.journal();
    let back: Vec<&str> = journal
        .iter()
        .filter(|e| e["event"] == "command-finished" && e["argv"][0] == "uphost:reboot")
        .filter_map(|e| e["result"]["stdout"].as_str())
        .collect();
    assert_eq!(back.len(), 4, "{back:?}");
    assert!(back.iter().all(|s| s.contains("is back after")), "{back:?}");
    // The report's timeline has the nodes as its rows.
    let report = d.report();
    assert!(
        report.contains("node by node"),
        "the report does not say it"
    );
}

#[test]
fn a_failed_cluster_check_stops_the_run_at_that_node() {
    let d = minor();
    // ctl2 rejoins but Pacemaker lists no resources there.
    d.fault(
        "ctl2",
        &["pcs", "status", "resources"],
        "Error: cluster is not currently running on this node",
    );
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("the cluster check after ctl2 rejoined failed"),
        "{}",
        r.stderr
    );
    let log = pacemaker_log(&d);
    assert!(log.contains(&"ctl2 online out=0".to_string()), "{log:?}");
    assert!(
        !log.iter().any(|l| l.starts_with("ctl3")),
        "ctl3 left the cluster after ctl2's check failed: {log:?}"
    );
    assert!(d.ops("ctl3").iter().all(|o| !o.starts_with("apt-get")));
    assert_eq!(reboots(&d, "cmp1"), 0);
}

#[test]
fn a_second_control_host_and_a_stale_run_are_refused_naming_both_identifiers() {
    let d = minor();
    // Another control host is updating ctl2.
    let m = d.path().join("nodes/ctl2/fs/var/lib/uphost");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(
        m.join("update-identifier"),
        "20261130T000000Z-other running\n",
    )
    .unwrap();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let run_id = d.status()["run_id"].as_str().unwrap().to_string();
    assert!(
        r.stderr
            .contains("ctl2 is being updated by run 20261130T000000Z-other"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("not by this run {run_id}")),
        "{}",
        r.stderr
    );
    assert!(
        !d.ops("ctl2")
            .iter()
            .any(|o| o.starts_with("pcs node standby"))
    );
    // That run is finished: its marker says so; this run goes on.
    std::fs::write(m.join("update-identifier"), "20261130T000000Z-other done\n").unwrap();
    // A stale run: ctl3 fails half-way, then another run takes ctl3 over.
    d.fault(
        "ctl3",
        &["apt-get", "install", "-y", "haproxy=1.5.18"],
        "E: mirror unreachable",
    );
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(marker(&d, "ctl3").starts_with(&format!("{run_id} running")));
    std::fs::write(
        d.path()
            .join("nodes/ctl3/fs/var/lib/uphost/update-identifier"),
        "20261201T999999Z-newer running\n",
    )
    .unwrap();
    d.heal("ctl3");
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("ctl3 carries update identifier 20261201T999999Z-newer")
            && r.stderr.contains(&format!("not this run's {run_id}")),
        "{}",
        r.stderr
    );
    assert!(
        !d.ops("ctl3")
            .iter()
            .any(|o| o == "apt-get install -y haproxy=1.5.18")
    );
}

#[test]
fn a_sigkill_while_a_node_reboots_resumes_by_waiting_not_by_rebooting_again() {
    let d = minor();
    std::fs::write(d.path().join("nodes/cmp1/reboot-ms"), "4000").unwrap();
    let mut child = Command::new(uphost_bin())
        .current_dir(d.path())
        .args(["run", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("cmp1 reboots", Duration::from_secs(60), || {
        reboots(&d, "cmp1") == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(reboots(&d, "cmp1"), 1, "cmp1 was rebooted twice");
    for n in ["cmp2", "cmp3", "cmp4"] {
        assert_eq!(reboots(&d, n), 1, "{n}");
    }
    assert_eq!(d.status()["complete"], true);
}

#[test]
fn delayed_reboots_happen_once_at_the_end_of_the_run() {
    let d = minor();
    d.edit(
        "services.yaml",
        "    params:\n      packages: kernel\n",
        "    reboot: delayed\n    params:\n      packages: kernel\n",
    );
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let journal = d.journal();
    let last_upgrade = journal
        .iter()
        .rposition(|e| e["event"] == "step-finished" && e["step"]["phase"] == "upgrade")
        .unwrap();
    let first_reboot = journal
        .iter()
        .position(|e| e["event"] == "step-started" && e["step"]["phase"] == "reboot")
        .unwrap();
    assert!(
        last_upgrade < first_reboot,
        "a delayed reboot ran before the last node's update"
    );
    for n in ["cmp1", "cmp2", "cmp3", "cmp4"] {
        assert_eq!(reboots(&d, n), 1, "{n}");
    }
}

/// Galera, RabbitMQ, Keystone, Nova, Neutron and nova-compute in kolla
/// containers under Podman (the simulator's: no container runtime runs on
/// this machine): each is stopped, removed with its old image, the new
/// image pulled, the container created with its configuration and started
/// — as the Liberty→Ocata journey does — the in-service commands run in
/// the containers, and the run completes.
#[test]
fn containerized_services_are_replaced_container_by_container() {
    let d = Demo::new(uphost_tests::SEED_PLUGINS, true);
    let st = Command::new(uphost_tests::sim_bin())
        .arg("init")
        .arg(d.path())
        .args(["--release", "newton", "--containers"])
        .args(uphost_tests::DEMO_NODES)
        .output()
        .unwrap();
    assert!(st.status.success());
    d.edit(
        "services.yaml",
        "      drain_wait_s: \"0\"\n",
        "      drain_wait_s: \"0\"\n      deploy: containers\n      engine: podman\n",
    );
    for svc in [
        "rabbitmq:\n    roles: [controller]\n",
        "keystone:\n    roles: [controller]\n",
        "nova:\n    roles: [controller]\n",
        "neutron:\n    roles: [controller]\n",
        "nova-compute:\n    roles: [compute]\n",
    ] {
        d.edit(
            "services.yaml",
            svc,
            &format!("{svc}    params: {{deploy: containers, engine: podman}}\n"),
        );
    }
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let in_order = |node: &str, want: &[&str]| {
        let ops = d.ops(node);
        let mut at = 0;
        for w in want {
            at += ops[at..]
                .iter()
                .position(|o| o == w)
                .unwrap_or_else(|| panic!("{node}: `{w}` not in order in {ops:#?}"));
        }
        // The containerized services install no package (haproxy,
        // placement and ceph are not containerized here).
        for pkg in ["mariadb", "rabbitmq", "keystone", "nova", "neutron"] {
            assert!(
                !ops.iter()
                    .any(|o| o.starts_with(&format!("apt-get install -y {pkg}"))),
                "{node}: {ops:?}"
            );
        }
    };
    in_order(
        "cmp1",
        &[
            "podman stop nova_compute",
            "podman rm nova_compute",
            "podman rmi kolla/nova_compute:newton",
            "podman pull kolla/nova_compute:ocata",
            "podman create --name nova_compute --net=host --restart=unless-stopped -v /etc/kolla/nova_compute:/var/lib/kolla/config_files:ro kolla/nova_compute:ocata",
            "podman start nova_compute",
        ],
    );
    // Galera: the journey's new cluster, in containers; RabbitMQ's mnesia
    // removed from its volume; the migrations in the new containers.
    in_order(
        "ctl3",
        &[
            "rm -f /var/lib/containers/storage/volumes/mariadb/_data/grastate.dat",
            "podman rmi kolla/mariadb:10.1",
            "podman create --name mariadb --net=host --restart=unless-stopped -v /etc/kolla/mariadb:/var/lib/kolla/config_files:ro -e BOOTSTRAP_ARGS=--wsrep-new-cluster kolla/mariadb:10.2",
            "podman start mariadb",
            "podman stop mariadb",
            "podman create --name mariadb --net=host --restart=unless-stopped -v /etc/kolla/mariadb:/var/lib/kolla/config_files:ro kolla/mariadb:10.2",
            "podman start mariadb",
        ],
    );
    // Nova and Neutron run side by side: each in order on its own.
    for sequence in [
        &[
            "rm -rf /var/lib/containers/storage/volumes/rabbitmq/_data/mnesia",
            "podman create --name rabbitmq --net=host --restart=unless-stopped -v /etc/kolla/rabbitmq:/var/lib/kolla/config_files:ro kolla/rabbitmq:3.7",
            "podman exec rabbitmq rabbitmqctl set_policy ha-all  {\"ha-mode\":\"all\",\"ha-sync-mode\":\"automatic\"}",
            "podman exec keystone keystone-manage db_sync",
            "podman run --rm --volumes-from nova_api kolla/nova_api:ocata nova-manage api_db sync",
            "podman run --rm --volumes-from nova_api kolla/nova_api:ocata nova-manage db sync",
        ][..],
        &[
            "podman exec keystone keystone-manage db_sync",
            "podman run --rm --volumes-from neutron_server kolla/neutron_server:ocata neutron-db-manage upgrade heads",
        ][..],
    ] {
        in_order("ctl1", sequence);
    }
    for n in ["ctl1", "ctl2", "ctl3"] {
        let st: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.path().join(format!("nodes/{n}/state.json"))).unwrap(),
        )
        .unwrap();
        for (c, image) in [
            ("mariadb", "kolla/mariadb:10.2"),
            ("rabbitmq", "kolla/rabbitmq:3.7"),
            ("keystone", "kolla/keystone:ocata"),
            ("nova_api", "kolla/nova_api:ocata"),
            ("nova_conductor", "kolla/nova_conductor:ocata"),
            ("neutron_server", "kolla/neutron_server:ocata"),
            ("neutron_l3_agent", "kolla/neutron_l3_agent:ocata"),
        ] {
            assert_eq!(
                st["containers"][c],
                serde_json::json!([image, true]),
                "{n}: {c}"
            );
        }
        // No container is left to bootstrap a second cluster at its next
        // start.
        assert_eq!(st["bootstrap"], serde_json::json!([]), "{n}");
    }
}

/// The JSON stream of a node-major run (guards, the update identifier, the
/// host's reboots) validates against docs/events.schema.json.
#[test]
fn a_node_major_runs_json_stream_validates_against_the_schema() {
    let d = minor();
    let r = d.uphost(&["--output", "json", "run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(uphost_tests::root().join("docs/events.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let mut seen = std::collections::BTreeSet::new();
    for line in r.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line}\n{}", errors.join("\n"));
        seen.insert(v["event"].as_str().unwrap().to_string());
        if let Some(p) = v["step"]["phase"].as_str() {
            seen.insert(format!("phase {p}"));
        }
    }
    for k in ["node-stamped", "phase leave", "phase rejoin"] {
        assert!(seen.contains(k), "no {k}: {seen:?}");
    }
}

/// A plugin's ok-to-stop gate (ceph-osd: `ceph osd ok-to-stop`), retried
/// by the host before each node: Ceph says no twice, then yes, and the run
/// goes on; a gate that never passes stops the run by its deadline naming
/// the node and Ceph's answer, or pauses it (`on_timeout: pause`), and
/// resume goes on once Ceph agrees.
#[test]
fn a_plugins_ok_to_stop_gate_is_retried_and_stops_or_pauses_at_its_deadline() {
    let busy =
        "Error EBUSY: unsafe to stop osd(s) at this time (3 PGs are or would become offline)";
    let d = Demo::new(&["ceph-mon", "ceph-osd"], true);
    let f = serde_json::json!([{"argv": ["ceph", "osd", "ok-to-stop"], "status": 16, "stderr": busy, "times": 2}]);
    std::fs::write(d.path().join("nodes/stor2/faults.json"), f.to_string()).unwrap();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let gates: Vec<serde_json::Value> = d
        .journal()
        .into_iter()
        .filter(|e| e["event"] == "gate-checked" && e["service"] == "ceph-osd")
        .collect();
    assert_eq!(gates.len(), 2, "{gates:?}");
    assert_eq!(gates[1]["node"], "stor2");
    assert_eq!(gates[1]["passed"], true);
    assert!(
        gates[1]["detail"].as_str().unwrap().contains("3 check(s)"),
        "{gates:?}"
    );

    // Never ok: the run stops at the deadline, stor2 untouched.
    let d = Demo::new(&["ceph-mon", "ceph-osd"], true);
    d.edit(
        "services.yaml",
        "  ceph-osd:\n    roles: [storage]\n",
        "  ceph-osd:\n    roles: [storage]\n    gate: {deadline_s: 3}\n",
    );
    d.fault("stor2", &["ceph", "osd", "ok-to-stop"], busy);
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains(
            "ceph-osd's ok-to-stop gate before stor2: stor2 was not ok to stop within 3 s"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("3 PGs are or would become offline"),
        "{}",
        r.stderr
    );
    assert!(
        !d.ops("stor2")
            .iter()
            .any(|o| o.starts_with("systemctl stop"))
    );

    // Or it pauses, and resume goes on once Ceph agrees.
    let d = Demo::new(&["ceph-mon", "ceph-osd"], true);
    d.edit(
        "services.yaml",
        "  ceph-osd:\n    roles: [storage]\n",
        "  ceph-osd:\n    roles: [storage]\n    gate: {deadline_s: 3, on_timeout: pause}\n",
    );
    d.fault("stor2", &["ceph", "osd", "ok-to-stop"], busy);
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 130, "{}", r.all());
    assert!(
        r.stderr
            .contains("paused: ceph-osd's ok-to-stop gate before stor2"),
        "{}",
        r.stderr
    );
    d.heal("stor2");
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        d.ops("stor2")
            .iter()
            .any(|o| o.starts_with("apt-get install -y ceph-osd"))
    );
}
