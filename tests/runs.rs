//! Runs of the demo cluster through the real binary: a complete upgrade,
//! dry run, failure and rollback, resume, the run lock, rollouts, and
//! SIGKILL at many points followed by resume.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use uphost_tests::{Demo, SEED_PLUGINS, finished_ok, times_started, uphost_bin, wait_until};

/// nova-compute and everything it depends on.
const COMPUTE_CHAIN: &[&str] = &[
    "nova-compute",
    "nova",
    "keystone",
    "placement",
    "galera",
    "rabbitmq",
    "haproxy",
];

fn complete(d: &Demo) -> bool {
    d.status()["complete"].as_bool() == Some(true)
}

#[test]
fn the_demo_upgrade_completes_and_status_says_so() {
    let d = Demo::new(SEED_PLUGINS, true);
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("run complete"), "{}", r.stderr);
    assert!(complete(&d));
    let st = d.status();
    for s in st["services"].as_array().unwrap() {
        assert_eq!(s["status"], "done", "{s}");
    }
    // The simulated cluster really moved: packages, cells, ceph flags.
    let ctl1: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("nodes/ctl1/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(ctl1["packages"]["mariadb-server"], "10.2");
    assert_eq!(ctl1["packages"]["nova-api"], "ocata");
    assert!(
        ctl1["conf"].as_object().unwrap().is_empty(),
        "RPC still pinned: {}",
        ctl1["conf"]
    );
    let cluster: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("nodes/cluster.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cluster["cells"], serde_json::json!(["cell0", "cell1"]));
    assert!(
        cluster["ceph_flags"]
            .as_array()
            .unwrap()
            .contains(&"require_jewel_osds".into())
    );
    assert_eq!(
        cluster["policies"]["ha-all"],
        r#"{"ha-mode":"all","ha-sync-mode":"automatic"}"#
    );
    assert_eq!(cluster["discovered"].as_array().unwrap().len(), 4);
    // Resuming a complete run does nothing.
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0);
    assert!(r.stderr.contains("already complete"));
}

#[test]
fn dry_run_changes_nothing_and_shows_what_would_run() {
    let d = Demo::new(SEED_PLUGINS, true);
    let before = d.cluster_state();
    let r = d.uphost(&["run", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("would run"), "{}", r.stderr);
    assert!(r.stderr.contains("systemctl stop mariadb"), "{}", r.stderr);
    assert_eq!(before, d.cluster_state());
    for n in ["ctl1", "ctl2", "cmp1", "stor1"] {
        assert!(d.ops(n).is_empty(), "{n}: {:?}", d.ops(n));
    }
}

#[test]
fn a_run_without_a_terminal_needs_yes() {
    let d = Demo::new(&["haproxy", "galera"], true);
    let r = d.uphost(&["run"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert!(d.ops("ctl1").is_empty());
}

#[test]
fn failure_rolls_back_reversible_services_in_reverse_order() {
    let d = Demo::new(SEED_PLUGINS, true);
    let db_before = std::fs::read_to_string(d.path().join("nodes/cluster.json")).unwrap();
    let db_before: serde_json::Value = serde_json::from_str(&db_before).unwrap();
    d.fault(
        "ctl1",
        &["nova-manage", "db", "sync"],
        "ERROR nova: migration 346 failed: duplicate column",
    );
    let r = d.uphost(&["run", "--yes", "--rollback-on-failure"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("FAILED: nova post-upgrade"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("migration 346 failed"), "{}", r.stderr);
    assert!(
        r.stderr.contains("the run was rolled back: fix the cause of the failure, then start a new upgrade with `uphost run`"),
        "{}",
        r.stderr
    );
    let ev = d.journal();
    let rb = ev
        .iter()
        .find(|e| e["event"] == "rollback-started")
        .expect("rollback started");
    let order: Vec<&str> = rb["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // Reverse dependency order: nova before keystone before galera/haproxy.
    let pos = |n: &str| {
        order
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} not rolled back: {order:?}"))
    };
    assert!(pos("nova") < pos("keystone"));
    assert!(pos("keystone") < pos("galera") && pos("keystone") < pos("haproxy"));
    let irr: Vec<&str> = rb["irreversible"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for n in ["rabbitmq", "placement", "neutron"] {
        assert!(irr.contains(&n), "{n} not named irreversible: {irr:?}");
    }
    // Every row is back (the galera dump was restored).
    let after: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("nodes/cluster.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(db_before["db"], after["db"]);
    let ctl2: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("nodes/ctl2/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        ctl2["packages"]["keystone"], "newton",
        "keystone not reinstalled at the old version"
    );
    assert_eq!(d.status()["outcome"], "rolled-back");
}

/// A rollback that could not finish (here nova-compute's own rollback fails
/// on the same broken node) is what `resume` continues: only rollback
/// steps run, the finished rollbacks are not repeated, and the upgrade never
/// goes on. Meanwhile a new `run` is refused; once rolled back, `resume`
/// has nothing to do and a new `run` upgrades the cluster again.
#[test]
fn a_stopped_rollback_resumes_as_a_rollback_never_as_the_upgrade() {
    let d = Demo::new(SEED_PLUGINS, true);
    d.fault(
        "cmp3",
        &["systemctl", "start", "nova-compute"],
        "Job for nova-compute.service failed",
    );
    let r = d.uphost(&["run", "--yes", "--rollback-on-failure"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("the rollback of nova-compute, nova")
            && r.stderr
                .contains("`uphost resume` goes on with the rollback"),
        "{}",
        r.stderr
    );
    let st = d.status();
    assert_eq!(st["outcome"], "failed");
    assert_eq!(st["rollback"]["complete"], false, "{st}");
    let rb = |st: &serde_json::Value, svc: &str| {
        st["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == svc)
            .unwrap()["rollback"]
            .clone()
    };
    assert_eq!(rb(&st, "nova-compute"), "failed");
    assert_eq!(rb(&st, "galera"), "done");
    assert_eq!(rb(&st, "rabbitmq"), "irreversible");
    let text = d.uphost(&["status"]).stdout;
    assert!(
        text.contains("ROLLBACK NOT COMPLETE: `uphost resume` goes on rolling back nova-compute"),
        "{text}"
    );

    // A new run would lose the rollback (and galera's backup): refused.
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("stopped half-way (nova-compute")
            && r.stderr.contains("continues it with its rollback")
            && r.stderr.contains("--abandon-unfinished"),
        "{}",
        r.stderr
    );

    d.heal("cmp3");
    let before = d.journal().len();
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 1, "a rolled-back run exits non-zero: {}", r.all());
    assert!(r.stderr.contains("the run was rolled back"), "{}", r.stderr);
    let st = d.status();
    assert_eq!(st["outcome"], "rolled-back");
    assert_eq!(st["rollback"]["complete"], true, "{st}");
    assert_eq!(rb(&st, "nova-compute"), "done");
    let ev = d.journal();
    let started: Vec<&serde_json::Value> = ev[before..]
        .iter()
        .filter(|e| e["event"] == "step-started")
        .map(|e| &e["step"])
        .collect();
    assert!(!started.is_empty(), "resume ran nothing");
    for st in &started {
        assert_eq!(
            st["phase"], "rollback",
            "resume went on with the upgrade: {st}"
        );
    }
    // Rollbacks done before the resume were not repeated.
    assert_eq!(times_started(&ev, "nova", "rollback"), 1);
    assert_eq!(times_started(&ev, "galera", "rollback"), 1);
    assert_eq!(times_started(&ev, "nova-compute", "rollback"), 2);

    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("was rolled back"), "{}", r.stderr);
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(complete(&d));
}

/// Ctrl-C while rolling back: the rollback in flight finishes, the next one
/// does not start, and `resume` goes on with the rollback alone.
#[test]
fn ctrl_c_during_rollback_then_resume_finishes_the_rollback() {
    let d = Demo::new(&["galera", "haproxy", "rabbitmq", "keystone"], true);
    d.fault(
        "ctl1",
        &["keystone-manage", "db_sync"],
        "CRITICAL keystone [-] Unhandled error: migration 97 failed",
    );
    // galera's restore takes 3 s: the moment to press Ctrl-C.
    for n in ["ctl1", "ctl2", "ctl3"] {
        d.slow(n, &["mysql", "-e"], 3.0);
    }

    let err = ctrl_c_when(&d, &["run", "--yes", "--rollback-on-failure"], || {
        d.path().join("state/current").exists()
            && times_started(&d.journal(), "galera", "rollback") > 0
    });
    let ev = d.journal();
    assert!(
        finished_ok(&ev, "galera", "rollback"),
        "the rollback in flight did not finish: {err}"
    );
    assert_eq!(
        times_started(&ev, "haproxy", "rollback"),
        0,
        "a rollback started after Ctrl-C"
    );
    let st = d.status();
    assert_eq!(st["rollback"]["complete"], false, "{st}");

    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let st = d.status();
    assert_eq!(st["outcome"], "rolled-back", "{st}");
    let ev = d.journal();
    for svc in ["keystone", "galera", "haproxy"] {
        assert_eq!(times_started(&ev, svc, "rollback"), 1, "{svc}");
    }
}

/// `--abandon-unfinished` is the explicit way to start over.
#[test]
fn a_new_run_over_a_half_done_one_needs_abandon_unfinished() {
    let d = Demo::new(SEED_PLUGINS, true);
    d.fault("cmp1", &["apt-get"], "E: Unable to fetch some archives");
    assert_eq!(d.uphost(&["run", "--yes"]).code, 1);
    let first = d.status()["run_id"].clone();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("nova-compute upgrade on cmp1 failed"),
        "{}",
        r.stderr
    );
    assert_eq!(
        d.status()["run_id"],
        first,
        "the refused run replaced the current one"
    );
    // A dry run may look ahead meanwhile; it stays beside the unfinished
    // run, which `status` and `resume` still mean.
    let before = d.journal().len();
    let r = d.uphost(&["run", "--dry-run"]);
    assert!(
        r.stderr.contains(&format!(
            "was kept beside unfinished run {}, which stays current",
            first.as_str().unwrap()
        )),
        "{}",
        r.all()
    );
    assert_eq!(d.status()["run_id"], first, "the dry run became current");
    assert_eq!(
        d.journal().len(),
        before,
        "the dry run wrote to the real run's journal"
    );
    // `uphost runs` lists both, oldest first, the real run marked current.
    let runs = d.json(&["runs", "--format", "json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["run_id"], first);
    assert_eq!(runs[0]["current"], true);
    assert_eq!(runs[0]["outcome"], "failed");
    assert_eq!(runs[0]["dry_run"], false);
    assert_eq!(
        (runs[1]["current"].clone(), runs[1]["dry_run"].clone()),
        (false.into(), true.into())
    );
    let dry = runs[1]["run_id"].as_str().unwrap();
    let text = d.uphost(&["runs"]).stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("* {}", first.as_str().unwrap()))
                && l.contains("failed"))
            && text
                .lines()
                .any(|l| l.starts_with(&format!("  {dry}")) && l.contains("--dry-run")),
        "{text}"
    );
    let st = d.json(&["status", dry, "--format", "json"]);
    assert_eq!(st["dry_run"], true, "{st}");
    // Given up explicitly: a new run starts, and its pre-flight finds the
    // node the first run left stopped (which is why it needed asking).
    d.heal("cmp1");
    let r = d.uphost(&["run", "--yes", "--abandon-unfinished"]);
    assert_ne!(d.status()["run_id"], first, "{}", r.all());
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("FAILED: nova-compute check")
            && r.stderr
                .contains("`systemctl is-active nova-compute` on cmp1"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_failed_run_resumes_after_the_fix_without_repeating_steps() {
    let d = Demo::new(SEED_PLUGINS, true);
    d.fault(
        "cmp3",
        &["systemctl", "start", "nova-compute"],
        "Job for nova-compute.service failed",
    );
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("FAILED: nova-compute upgrade on cmp3"),
        "{}",
        r.stderr
    );
    // cmp1 and cmp2 were the first batch (serial: 2) and are done; cmp4 was
    // in cmp3's batch.
    let ops_cmp1 = d.ops("cmp1");
    d.heal("cmp3");
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(complete(&d));
    assert_eq!(d.ops("cmp1"), ops_cmp1, "a completed node ran again");
    let galera_stops = d
        .ops("ctl1")
        .iter()
        .filter(|l| *l == "systemctl stop mariadb")
        .count();
    assert_eq!(galera_stops, 1);
}

#[test]
fn a_second_run_is_refused_naming_the_holder() {
    let d = Demo::new(&["haproxy", "galera"], true);
    std::fs::create_dir_all(d.path().join("state")).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(d.path().join("state/run.lock"))
        .unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).unwrap();
    std::fs::write(
        d.path().join("state/run.lock"),
        r#"{"pid":4242,"host":"ops-laptop","since":"2026-11-22T02:00:00Z","command":"run"}"#,
    )
    .unwrap();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("pid 4242 on ops-laptop"), "{}", r.stderr);
    assert!(d.ops("ctl1").is_empty());
    drop(f);
    // Its holder went away without a clean release (its name is still in
    // the file): the next run takes the lock over and says so.
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr
            .contains("the previous uphost (pid 4242 on ops-laptop")
            && r.stderr.contains("stopped without releasing the run lock"),
        "{}",
        r.stderr
    );
    // A clean release leaves nothing to report.
    let r = d.uphost(&["run", "--yes", "--dry-run"]);
    assert!(!r.stderr.contains("without releasing"), "{}", r.stderr);
}

#[test]
fn max_fail_tolerates_within_the_threshold_and_stops_beyond() {
    let one_by_one = |d: &Demo| {
        d.edit(
            "services.yaml",
            "    rollout: {serial: 2}\n",
            "    rollout: {serial: 1}\n    max_fail: 1\n",
        )
    };
    let d = Demo::new(COMPUTE_CHAIN, true);
    one_by_one(&d);
    d.fault("cmp2", &["apt-get"], "E: broken packages");
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(
        r.code,
        1,
        "a failed node is still a failed run: {}",
        r.all()
    );
    // One failure is tolerated: the other computes were upgraded.
    for n in ["cmp1", "cmp3", "cmp4"] {
        assert!(
            d.ops(n).iter().any(|l| l.starts_with("apt-get install")),
            "{n} not upgraded"
        );
    }
    // Two failures are not: with max_fail 1, the batch after the second stops.
    let d = Demo::new(COMPUTE_CHAIN, true);
    one_by_one(&d);
    d.fault("cmp1", &["apt-get"], "E: broken packages");
    d.fault("cmp2", &["apt-get"], "E: broken packages");
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1);
    for n in ["cmp3", "cmp4"] {
        assert!(
            !d.ops(n).iter().any(|l| l.starts_with("apt-get install")),
            "{n} upgraded past max_fail"
        );
    }
}

#[test]
fn canary_pauses_after_the_first_batch() {
    let d = Demo::new(COMPUTE_CHAIN, true);
    d.edit(
        "services.yaml",
        "    rollout: {serial: 2}\n",
        "    rollout: {serial: 1}\n    canary: true\n",
    );
    assert_eq!(d.uphost(&["run", "--yes"]).code, 0);
    let ev = d.journal();
    let canary = ev
        .iter()
        .position(|e| {
            e["event"] == "confirmation"
                && e["prompt"]
                    .as_str()
                    .unwrap()
                    .starts_with("canary: nova-compute")
        })
        .expect("canary confirmation");
    let started = |node: &str| {
        ev.iter()
            .position(|e| {
                e["event"] == "step-started"
                    && e["step"]["service"] == "nova-compute"
                    && e["step"]["node"] == node
            })
            .unwrap()
    };
    assert!(started("cmp1") < canary && canary < started("cmp2"));
}

#[test]
fn staged_run_with_limit_then_the_rest() {
    let d = Demo::new(SEED_PLUGINS, true);
    // A misspelt limit runs nothing and says what it could have been.
    for (typo, hint) in [
        ("controlers", "did you mean `controller`?"),
        ("cmp9", "did you mean `cmp1`?"),
    ] {
        let r = d.uphost(&["run", "--yes", "--limit", typo]);
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.stderr
                .contains(&format!("--limit {typo}: neither a node nor a group"))
                && r.stderr.contains(hint)
                && r.stderr
                    .contains("its groups are: all, compute, controller, storage, ungrouped"),
            "{}",
            r.stderr
        );
    }
    assert!(
        !d.path().join("state/current").exists(),
        "a refused run started"
    );
    // The staged run's pre-flight alone: the services on those nodes.
    let r = d.uphost(&["check", "--limit", "compute"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout.trim(), "nova-compute   ok", "{}", r.all());
    let r = d.uphost(&["run", "--yes", "--limit", "controller", "storage"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        d.ops("cmp1").is_empty(),
        "computes touched in a control-plane run"
    );
    let r = d.uphost(&[
        "run",
        "--yes",
        "--limit",
        "compute",
        "--only",
        "nova-compute",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        d.ops("cmp1")
            .iter()
            .any(|l| l == "apt-get install -y nova-compute=ocata")
    );
}

/// Kill `uphost` with SIGKILL at many points; resume until done; the end
/// state equals an uninterrupted run's and every mutating command ran once.
#[test]
fn sigkill_anywhere_then_resume_equals_an_uninterrupted_run() {
    sigkill_and_resume(
        || Demo::new(SEED_PLUGINS, true),
        &[15, 40, 70, 25, 90, 55, 120, 35, 160, 10, 200, 60],
    );
}

/// The same across a release train (Liberty -> Ocata, three hops, gates
/// between): killed in any hop or gate, resumed until done, it ends as an
/// uninterrupted train, every mutating command run once.
#[test]
fn sigkill_anywhere_in_a_train_then_resume_equals_an_uninterrupted_train() {
    sigkill_and_resume(
        || Demo::of("train", "liberty", SEED_PLUGINS, true),
        &[
            25, 80, 140, 45, 230, 110, 330, 60, 420, 20, 520, 170, 610, 95,
        ],
    );
}

/// Kill runs of demos made by `mk` after each delay in turn (cycled),
/// resume until complete, and compare with an uninterrupted run.
fn sigkill_and_resume(mk: impl Fn() -> Demo, delays_ms: &[u64]) {
    let reference = mk();
    assert_eq!(reference.uphost(&["run", "--yes"]).code, 0);
    let d = mk();
    let mut kills = 0;
    let mut first = true;
    for delay in delays_ms.iter().cycle().take(60) {
        let args: &[&str] = if first {
            &["run", "--yes"]
        } else {
            &["resume", "--yes"]
        };
        let mut child = Command::new(uphost_bin())
            .current_dir(d.path())
            .args(args)
            .arg("-q")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        match child.try_wait().unwrap() {
            Some(st) => {
                assert!(st.success() || first, "run ended with {st}");
                if d.path().join("state/current").exists() && complete(&d) {
                    break;
                }
            }
            None => {
                rustix::process::kill_process(
                    rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
                    rustix::process::Signal::KILL,
                )
                .unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
        if d.path().join("state/current").exists() {
            first = false;
        }
    }
    if !complete(&d) {
        let r = d.uphost(&["resume", "--yes"]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    assert!(complete(&d));
    assert!(kills >= 3, "only {kills} kills landed mid-run");
    assert_eq!(
        reference.cluster_state(),
        d.cluster_state(),
        "end state differs from an uninterrupted run"
    );
    assert_same_ops(&reference, &d);
    eprintln!("{kills} SIGKILLs landed");
}

/// Every node of `d` received the same mutating commands, as many times,
/// as in `reference`'s: no step ran twice or not at all.
fn assert_same_ops(reference: &Demo, d: &Demo) {
    for n in ["ctl1", "ctl2", "ctl3", "cmp1", "cmp4", "stor1", "stor2"] {
        assert_eq!(
            reference.op_counts(n),
            d.op_counts(n),
            "{n}: mutating commands differ (a step ran twice or not at all)"
        );
    }
}

/// A tmpfs of the given size mounted on `dir` for the life of the value.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount(8)");
        assert!(
            st.success(),
            "mounting a tmpfs on {} needs root",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }

    fn available(&self) -> u64 {
        rustix::fs::statvfs(&self.0)
            .map(|s| s.f_bavail * s.f_frsize)
            .unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The state directory's disk fills up mid-run, at several points: the run
/// stops with the reason; the journal on disk is whole records only (a
/// failed write is cut back, nothing is written after it); a mutating
/// command whose result could not be recorded is not run at all; no
/// half-written report is left. Once space is freed `resume` finishes, and
/// the cluster and every node's commands are those of an uninterrupted run.
#[test]
fn a_full_disk_stops_the_run_cleanly_and_resume_finishes() {
    let reference = Demo::new(SEED_PLUGINS, true);
    assert_eq!(reference.uphost(&["run", "--yes"]).code, 0);
    let mut seen = BTreeMap::new();
    for leave_kib in [4u64, 8, 16, 32, 64] {
        let d = Demo::new(SEED_PLUGINS, true);
        let fs = Tmpfs::mount(&d.path().join("state"), "64m");
        assert_eq!(d.uphost(&["plan"]).code, 0, "fills the compile cache");
        let filler = d.path().join("state/filler");
        let st = Command::new("fallocate")
            .args(["-l", &(fs.available() - leave_kib * 1024).to_string()])
            .arg(&filler)
            .status()
            .unwrap();
        assert!(st.success());

        let r = d.uphost(&["run", "--yes"]);
        assert_eq!(r.code, 1, "{leave_kib} KiB free: {}", r.all());
        assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
        if r.stderr.contains("the run could not start") {
            // Not even its start fitted: nothing ran, no run is left.
            *seen.entry("start").or_insert(0) += 1;
            assert!(r.stderr.contains("nothing was run"), "{}", r.stderr);
            assert!(!d.path().join("state/current").exists());
            assert_eq!(
                std::fs::read_dir(d.path().join("state/runs"))
                    .unwrap()
                    .count(),
                0
            );
            assert!(d.ops("ctl1").is_empty());
            std::fs::remove_file(&filler).unwrap();
            assert_eq!(d.uphost(&["run", "--yes"]).code, 0);
            assert_eq!(reference.cluster_state(), d.cluster_state());
            continue;
        }
        assert!(r.stderr.contains("`uphost resume`"), "{}", r.stderr);
        for why in [
            "the journal could not be written",
            "the command was not run: no room to record its result",
        ] {
            if r.stderr.contains(why) {
                *seen.entry(why).or_insert(0) += 1;
            }
        }
        let id = d.status()["run_id"].as_str().unwrap().to_string();
        let run = d.path().join("state/runs").join(&id);
        let text = std::fs::read_to_string(run.join("journal.jsonl")).unwrap();
        assert!(text.ends_with('\n'), "the journal ends with a torn record");
        for (i, line) in text.lines().enumerate() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("journal line {}: {e}: {line}", i + 1));
        }
        assert!(!run.join(".report.html.tmp").exists());
        if let Ok(html) = std::fs::read_to_string(run.join("report.html")) {
            assert!(html.trim_end().ends_with("</html>"), "half a report");
        }

        std::fs::remove_file(&filler).unwrap();
        let r = d.uphost(&["resume", "--yes"]);
        assert_eq!(r.code, 0, "{leave_kib} KiB free, then resumed: {}", r.all());
        assert!(complete(&d));
        assert_eq!(reference.cluster_state(), d.cluster_state());
        assert_same_ops(&reference, &d);
        drop(fs);
    }
    assert_eq!(
        seen.len(),
        3,
        "every way a full disk shows was met: {seen:?}"
    );
}

/// Start `uphost ARGS` in `d`; once `ready` holds (within 30 s), press
/// Ctrl-C (SIGINT); expect the interrupted exit (130) and return stderr.
fn ctrl_c_when(d: &Demo, args: &[&str], ready: impl Fn() -> bool) -> String {
    signal_when(d, args, rustix::process::Signal::INT, ready)
}

/// Start `uphost ARGS` in `d`; once `ready` holds (within 30 s), send it
/// `sig`; expect the interrupted exit (130) and return stderr.
fn signal_when(
    d: &Demo,
    args: &[&str],
    sig: rustix::process::Signal,
    ready: impl Fn() -> bool,
) -> String {
    let child = Command::new(uphost_bin())
        .current_dir(d.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("moment to interrupt", Duration::from_secs(30), ready);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        sig,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{err}");
    err
}

/// First Ctrl-C: the step in flight finishes, no new step starts, the run
/// stops resumably (exit 130); resume completes it.
#[test]
fn ctrl_c_stops_cleanly_and_resume_finishes() {
    let d = Demo::new(&["galera", "haproxy", "rabbitmq"], true);
    d.edit(
        "services.yaml",
        "drain_wait_s: \"0\"",
        "drain_wait_s: \"2\"",
    );
    // Once galera's pre-upgrade (which waits 2 s for transactions to drain)
    // is in flight.
    let err = ctrl_c_when(&d, &["run", "--yes"], || {
        d.ops("ctl1")
            .iter()
            .any(|l| l.starts_with("touch /var/tmp/clustercheck.disabled"))
    });
    assert!(err.contains("in-flight steps finish"), "{err}");
    let ev = d.journal();
    assert!(
        finished_ok(&ev, "galera", "pre-upgrade"),
        "the in-flight step did not finish"
    );
    assert_eq!(
        times_started(&ev, "galera", "upgrade"),
        0,
        "a new step started after the interrupt"
    );
    assert_eq!(d.status()["outcome"], "interrupted");
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(complete(&d));
    assert_eq!(
        d.ops("ctl1")
            .iter()
            .filter(|l| l.starts_with("mysqldump"))
            .count(),
        1,
        "the backup ran twice"
    );
}

/// `resume` refuses when the plan or a plugin changed since the run began,
/// printing the difference, and runs nothing; once restored it resumes.
#[test]
fn resume_refuses_when_plugins_or_the_plan_changed_and_says_what() {
    let d = Demo::new(SEED_PLUGINS, true);
    d.fault("cmp1", &["apt-get"], "E: Unable to fetch some archives");
    assert_eq!(d.uphost(&["run", "--yes"]).code, 1);
    d.heal("cmp1");
    let before = d.journal().len();
    let ops_before = d.ops("cmp1");

    // A plugin was removed.
    let neutron = d.path().join("plugins/neutron.wasm");
    let kept = std::fs::read(&neutron).unwrap();
    std::fs::remove_file(&neutron).unwrap();
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("- plugin neutron was removed"),
        "{}",
        r.stderr
    );
    std::fs::write(&neutron, kept).unwrap();

    // The operator changed nova-compute's rollout in the services file.
    d.edit(
        "services.yaml",
        "rollout: {serial: 2}",
        "rollout: one-at-a-time",
    );
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("cannot be resumed: the plugins or the plan changed since it began")
            && r.stderr.contains("~ service nova-compute:")
            && r.stderr.contains("rollout serial: 2 -> nodes")
            && r.stderr.contains("rollout one-at-a-time"),
        "{}",
        r.stderr
    );
    d.edit(
        "services.yaml",
        "rollout: one-at-a-time",
        "rollout: {serial: 2}",
    );

    // A plugin file was replaced: a valid component with other bytes (an
    // extra custom section), approved again by the operator.
    let wasm = d.path().join("plugins/nova.wasm");
    let original = std::fs::read(&wasm).unwrap();
    let mut bytes = original.clone();
    bytes.extend_from_slice(&[0, 6, 4, b't', b'e', b's', b't', b'x']);
    std::fs::write(&wasm, bytes).unwrap();
    assert_eq!(d.uphost(&["plugins", "approve", "nova", "--yes"]).code, 0);
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("~ plugin nova changed: sha256 "),
        "{}",
        r.stderr
    );
    assert_eq!(
        d.journal().len(),
        before,
        "a refused resume wrote to the journal"
    );
    assert_eq!(d.ops("cmp1"), ops_before, "a refused resume ran commands");

    // Everything as it was: the run resumes and completes.
    std::fs::write(&wasm, original).unwrap();
    assert_eq!(d.uphost(&["plugins", "approve", "nova", "--yes"]).code, 0);
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(complete(&d));
}

/// While a run works, `status` says it is running and by which uphost;
/// once that uphost is killed, that the run was interrupted and `resume`
/// continues it; `runs` agrees.
#[test]
fn status_tells_a_running_run_from_an_interrupted_one() {
    let d = Demo::new(&["galera", "haproxy"], true);
    d.slow("ctl1", &["apt-get"], 4.0);
    let mut child = Command::new(uphost_bin())
        .current_dir(d.path())
        .args(["run", "--yes", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a running step", Duration::from_secs(30), || {
        d.path().join("state/current").exists()
            && times_started(&d.journal(), "haproxy", "upgrade") > 0
    });
    let st = d.status();
    assert_eq!(st["outcome"], "running", "{st}");
    let pid = child.id().to_string();
    assert!(
        st["running"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {pid} on ")),
        "{st}"
    );
    let text = d.uphost(&["status"]).stdout;
    assert!(
        text.contains(&format!(": running (pid {pid} on ")),
        "{text}"
    );
    let runs = d.uphost(&["runs"]).stdout;
    assert!(runs.contains(" running "), "{runs}");

    child.kill().unwrap();
    child.wait().unwrap();
    let st = d.status();
    assert_eq!(st["outcome"], "interrupted", "{st}");
    assert!(st.get("running").is_none(), "{st}");
    let text = d.uphost(&["status"]).stdout;
    assert!(
        text.contains(": interrupted (stopped before it finished; `uphost resume` continues it)"),
        "{text}"
    );
    let runs = d.uphost(&["runs"]).stdout;
    assert!(runs.contains(" interrupted "), "{runs}");
    d.heal("ctl1");
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(d.status()["outcome"], "complete");
}

/// Exec recorders (`uphost __exec-record`) running in `dir` (their working
/// directory: tests in parallel have their own).
fn recorders_in(dir: &std::path::Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let p = e.path();
            std::fs::read(p.join("cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"__exec-record"))
                && std::fs::read_link(p.join("cwd")).is_ok_and(|cwd| cwd == dir)
        })
        .count()
}

/// galera's pre-upgrade waits 2 s for transactions to drain: a moment when
/// a step is in flight.
fn draining(d: &Demo) -> bool {
    d.ops("ctl1")
        .iter()
        .any(|l| l.starts_with("touch /var/tmp/clustercheck.disabled"))
}

/// SIGTERM (systemd stopping a unit, `timeout`) and SIGQUIT stop a run as
/// the first Ctrl-C does: the step in flight finishes, the journal ends
/// `interrupted`, the lock is released, no command is left running; resume
/// completes it, running nothing twice.
#[test]
fn sigterm_and_sigquit_stop_cleanly_and_resume_finishes() {
    for sig in [rustix::process::Signal::TERM, rustix::process::Signal::QUIT] {
        let d = Demo::new(&["galera", "haproxy", "rabbitmq"], true);
        d.edit(
            "services.yaml",
            "drain_wait_s: \"0\"",
            "drain_wait_s: \"2\"",
        );
        let err = signal_when(&d, &["run", "--yes"], sig, || draining(&d));
        assert!(err.contains("in-flight steps finish"), "{sig:?}: {err}");
        let ev = d.journal();
        assert!(finished_ok(&ev, "galera", "pre-upgrade"), "{sig:?}");
        assert_eq!(times_started(&ev, "galera", "upgrade"), 0, "{sig:?}");
        assert!(
            matches!(ev.last(), Some(e) if e["event"] == "run-finished" && e["outcome"] == "interrupted"),
            "{sig:?}: the journal does not end interrupted: {:?}",
            ev.last()
        );
        let st = d.status();
        assert_eq!(st["outcome"], "interrupted", "{sig:?}");
        assert!(
            st.get("running").is_none(),
            "{sig:?}: the lock is still held: {st}"
        );
        assert_eq!(
            recorders_in(d.path()),
            0,
            "{sig:?}: a recorder is left running"
        );
        let r = d.uphost(&["resume", "--yes"]);
        assert_eq!(r.code, 0, "{sig:?}: {}", r.all());
        assert!(complete(&d));
        let dumps = d
            .ops("ctl1")
            .iter()
            .filter(|l| l.starts_with("mysqldump"))
            .count();
        assert_eq!(dumps, 1, "{sig:?}: the backup ran twice");
    }
}

/// SIGHUP (the terminal closed, the operator's ssh session dropped) does
/// not stop the run: it finishes on its own, its progress in run.log, and
/// `uphost watch` from another terminal follows it to the end.
#[test]
fn sighup_leaves_the_run_going_and_watch_follows_it() {
    let d = Demo::new(&["galera", "haproxy", "rabbitmq"], true);
    d.edit(
        "services.yaml",
        "drain_wait_s: \"0\"",
        "drain_wait_s: \"2\"",
    );
    let child = Command::new(uphost_bin())
        .current_dir(d.path())
        .args(["run", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("a step in flight", Duration::from_secs(30), || draining(&d));
    let watcher = Command::new(uphost_bin())
        .current_dir(d.path())
        .arg("watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("SIGHUP: the terminal went away; the run goes on"),
        "{err}"
    );
    assert!(complete(&d));
    let w = watcher.wait_with_output().unwrap();
    let werr = String::from_utf8_lossy(&w.stderr).into_owned();
    assert_eq!(w.status.code(), Some(0), "{werr}");
    assert!(werr.contains("galera upgrade on ctl1: ok"), "{werr}");
    assert!(werr.contains("run complete"), "{werr}");
    let run_dir = d
        .path()
        .join("state/runs")
        .join(d.status()["run_id"].as_str().unwrap());
    let log = std::fs::read_to_string(run_dir.join("run.log")).unwrap();
    assert!(
        log.contains("rabbitmq post-upgrade: ok") && log.contains("run complete"),
        "{log}"
    );
    // Watching a finished run replays it and says how it ended.
    let r = d.uphost(&["watch"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("run complete"), "{}", r.all());
}

/// Ctrl-C during the pre-flight checks: interrupted (exit 130), nothing
/// changed, and the run can be resumed or replaced.
#[test]
fn ctrl_c_during_the_pre_flight_is_an_interruption() {
    let d = Demo::new(&["galera", "haproxy", "rabbitmq"], true);
    // Every command on ctl1 takes a second: the checks are slow.
    d.slow("ctl1", &[], 1.0);
    let err = ctrl_c_when(&d, &["run", "--yes"], || {
        d.path().join("state/current").exists()
            && d.journal().iter().any(|e| e["event"] == "step-started")
    });
    assert!(!err.contains("run failed"), "{err}");
    let ev = d.journal();
    assert!(
        ev.iter()
            .all(|e| e["event"] != "step-started" || e["step"]["phase"] == "check"),
        "a step other than a check started"
    );
    assert_eq!(d.status()["outcome"], "interrupted");
    d.heal("ctl1");
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(
        r.code,
        0,
        "nothing changed, so a new run may start: {}",
        r.all()
    );
}

/// A journal that lost its start record: `run` and `resume` say the same
/// thing (it cannot be resumed; start over explicitly), and nothing runs.
#[test]
fn a_journal_without_its_start_is_refused_alike_by_run_and_resume() {
    let d = Demo::new(&["galera", "haproxy", "rabbitmq"], true);
    d.fault("ctl1", &["apt-get"], "E: Unable to fetch some archives");
    assert_eq!(d.uphost(&["run", "--yes"]).code, 1);
    d.heal("ctl1");
    let (path, text) = current_journal_text(&d);
    let (first, rest) = text.split_once('\n').unwrap();
    assert!(first.contains("run-started"));
    std::fs::write(&path, rest).unwrap();
    let ops = d.ops("ctl1");
    for (args, code) in [(&["run", "--yes"][..], 2), (&["resume", "--yes"][..], 1)] {
        let r = d.uphost(args);
        assert_eq!(r.code, code, "{args:?}: {}", r.all());
        assert!(
            r.stderr.contains("has no start record") && r.stderr.contains("--abandon-unfinished"),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert_eq!(d.ops("ctl1"), ops, "something ran");
    // The explicit way on: a new run starts (whatever it then finds of the
    // half-upgraded cluster).
    let r = d.uphost(&["run", "--yes", "--abandon-unfinished"]);
    assert!(!r.stderr.contains("has no start record"), "{}", r.all());
    assert!(
        r.stderr.contains("check"),
        "no new run started: {}",
        r.all()
    );
}

/// The journal of the current run, as text, and its path.
fn current_journal_text(d: &Demo) -> (std::path::PathBuf, String) {
    let path = uphost_tests::current_journal_path(d.path());
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

/// A journal damaged or edited the ways a tester damaged it is refused by
/// `resume`, `status` and `run` alike, naming the line, and nothing runs;
/// the intact journal then resumes to completion.
#[test]
fn a_damaged_or_edited_journal_is_refused_by_resume_status_and_run() {
    let d = Demo::new(SEED_PLUGINS, true);
    d.fault(
        "cmp3",
        &["systemctl", "start", "nova-compute"],
        "Job for nova-compute.service failed",
    );
    assert_eq!(d.uphost(&["run", "--yes"]).code, 1);
    d.heal("cmp3");
    let (path, good) = current_journal_text(&d);
    let lines: Vec<&str> = good.lines().collect();
    let find = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l)).unwrap();
    let cmp1_start =
        find(&|l| l.contains("\"event\":\"step-started\"") && l.contains("\"node\":\"cmp1\""));
    let stop = find(&|l| {
        l.contains("\"event\":\"command-finished\"")
            && l.contains("\"mutating\":true")
            && l.contains("\"phase\":\"upgrade\"")
            && l.contains("ceph-mon")
    });
    let cmp3_failed = find(&|l| {
        l.contains("\"event\":\"step-finished\"")
            && l.contains("\"node\":\"cmp3\"")
            && l.contains("\"failed\"")
    });
    let join = |v: Vec<String>| v.join("\n") + "\n";
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    // Without the chain (a journal written before it existed): order and
    // membership still refuse the edits.
    let unchained: Vec<String> = owned
        .iter()
        .map(|l| match l.rfind(",\"chain\":\"") {
            Some(i) => format!("{}}}", &l[..i]),
            None => l.clone(),
        })
        .collect();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a duplicated step-started of a completed step",
            {
                let mut v = owned.clone();
                v.push(owned[cmp1_start].clone());
                join(v)
            },
            "checksum",
        ),
        (
            "the same, in a journal without checksums",
            {
                let mut v = unchained.clone();
                v.push(unchained[cmp1_start].clone());
                join(v)
            },
            "starts again after it finished ok",
        ),
        (
            "a whole garbage last line",
            format!("{good}garbage\n"),
            "unreadable record",
        ),
        (
            "a mutating command's result cut from the middle",
            {
                let mut v = owned.clone();
                v.remove(stop);
                join(v)
            },
            "checksum",
        ),
        (
            "the same, without checksums",
            {
                let mut v = unchained.clone();
                v.remove(stop);
                join(v)
            },
            "has no result",
        ),
        (
            "a forged step-finished ok",
            {
                let mut v = owned.clone();
                v[cmp3_failed] = v[cmp3_failed].replace("\"failed\"", "\"ok\"");
                join(v)
            },
            "checksum",
        ),
        (
            "a record of a service the run did not plan",
            join({
                let mut v = unchained.clone();
                v.push(r#"{"event":"state","service":"bogus","key":"k","value":"v"}"#.into());
                v
            }),
            "service `bogus` is not one this run planned",
        ),
    ];
    let ops: Vec<Vec<String>> = ["ctl1", "cmp1", "cmp3"].iter().map(|n| d.ops(n)).collect();
    for (what, text, needle) in cases {
        std::fs::write(&path, &text).unwrap();
        for args in [
            &["resume", "--yes"][..],
            &["status"][..],
            &["run", "--yes"][..],
        ] {
            let r = d.uphost(args);
            assert_ne!(r.code, 0, "{what}: {args:?} accepted it: {}", r.all());
            assert!(
                r.stderr.contains(needle) && r.stderr.contains("journal.jsonl:"),
                "{what}: {args:?}: `{needle}` and the line not in {}",
                r.stderr
            );
            assert!(
                r.stderr.contains("--abandon-unfinished"),
                "{what}: {}",
                r.stderr
            );
        }
        let now: Vec<Vec<String>> = ["ctl1", "cmp1", "cmp3"].iter().map(|n| d.ops(n)).collect();
        assert_eq!(now, ops, "{what}: something ran");
    }
    // The intact journal resumes to the end, without repeating a step.
    std::fs::write(&path, &good).unwrap();
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(complete(&d));
    assert_eq!(d.ops("cmp1"), ops[1], "a completed node ran again");
}
