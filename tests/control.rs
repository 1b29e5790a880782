//! Control of a live run through the real binary: `uphost pause` from
//! another process stops a run between steps and `resume` completes it;
//! a maintenance window that closes mid-run pauses it, and a run or a
//! resume outside the window is refused with nothing run.

use std::process::{Command, Stdio};
use std::time::Duration;

use uphost_tests::{Demo, SEED_PLUGINS, uphost_bin};

fn slow_demo() -> Demo {
    let d = Demo::new(SEED_PLUGINS, true);
    for n in ["ctl1", "ctl2", "ctl3"] {
        d.slow(n, &["apt-get"], 0.3);
    }
    d
}

fn paused_events(d: &Demo) -> Vec<String> {
    d.journal()
        .iter()
        .filter(|e| e["event"] == "paused")
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn uphost_pause_from_another_process_stops_between_steps_and_resume_completes() {
    let reference = Demo::new(SEED_PLUGINS, true);
    assert_eq!(reference.uphost(&["run", "--yes"]).code, 0);
    let d = slow_demo();
    let r = d.uphost(&["pause"]);
    assert_ne!(r.code, 0, "nothing to pause yet: {}", r.all());
    assert!(r.stderr.contains("no run found"), "{}", r.stderr);
    let child = Command::new(uphost_bin())
        .current_dir(d.path())
        .args(["run", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_for_op("ctl1", "apt-get install", Duration::from_secs(30));
    let r = d.uphost(&["pause"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("to pause"), "{}", r.stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("paused by `uphost pause`"), "{stderr}");
    assert!(stderr.contains("`uphost resume` continues it"), "{stderr}");
    let reasons = paused_events(&d);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    let st = d.status();
    assert_eq!(st["outcome"], "interrupted");
    assert!(
        st["paused"].as_str().unwrap().contains("uphost pause"),
        "{st}"
    );
    assert_eq!(st["complete"], false);
    let text = d.uphost(&["status"]);
    assert!(
        text.stdout.contains("paused by `uphost pause`"),
        "{}",
        text.stdout
    );
    // Not running any more: nothing to pause.
    let r = d.uphost(&["pause"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("is not running"), "{}", r.stderr);
    // The journal shows where it stopped; resume completes it, and the end
    // is that of an uninterrupted run.
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let st = d.status();
    assert_eq!(st["complete"], true);
    assert!(st.get("paused").is_none(), "{st}");
    assert_eq!(reference.cluster_state(), d.cluster_state());
    let report = d.report();
    assert!(
        report.contains("<ul id=\"pauses\">"),
        "the report shows the pause"
    );
}

/// `HH:MM:SS` in UTC, `secs` from now.
fn utc_in(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = (now + secs).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

#[test]
fn a_maintenance_window_that_closes_mid_run_pauses_it() {
    let d = slow_demo();
    let cfg = d.path().join("uphost.yaml");
    let base = std::fs::read_to_string(&cfg).unwrap();
    // Closed now: nothing starts.
    std::fs::write(
        &cfg,
        format!(
            "{base}window:\n  hours: \"{}-{}\"\n",
            utc_in(3600),
            utc_in(7200)
        ),
    )
    .unwrap();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("outside the maintenance window"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("it opens next at"), "{}", r.stderr);
    assert!(!d.path().join("state/current").exists());
    // A dry run changes nothing: it may look ahead outside the window.
    assert_eq!(d.uphost(&["run", "--dry-run", "--yes"]).code, 0);
    // Open now, closing in 3 s: the run pauses at the next step boundary.
    std::fs::write(
        &cfg,
        format!(
            "{base}window:\n  hours: \"{}-{}\"\n",
            utc_in(-3600),
            utc_in(3)
        ),
    )
    .unwrap();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 130, "{}", r.all());
    assert!(
        r.stderr.contains("paused: outside the maintenance window"),
        "{}",
        r.stderr
    );
    let reasons = paused_events(&d);
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("it opens next at"), "{reasons:?}");
    // Resuming outside it is refused and changes nothing.
    let before = d.journal().len();
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("outside the maintenance window"),
        "{}",
        r.stderr
    );
    assert_eq!(d.journal().len(), before);
    // Within it again, resume completes the run.
    std::fs::write(
        &cfg,
        format!("{base}window:\n  days: [mon, tue, wed, thu, fri, sat, sun]\n"),
    )
    .unwrap();
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(d.status()["complete"], true);
}

/// Resource survival: the operator's resource is created once before the
/// first change and checked at the end; a check that fails fails the run,
/// naming it, and `resume` after the fix checks again without creating it
/// twice.
#[test]
fn a_resource_that_does_not_survive_fails_the_run_and_resume_checks_again() {
    let d = Demo::new(SEED_PLUGINS, true);
    d.edit(
        "services.yaml",
        "  nova:\n    roles: [controller]\n",
        "  nova:\n    roles: [controller]\n    survival:\n      - name: vm\n        create: [sh, -c, 'echo alive >> survivor']\n        check: [sh, -c, 'grep -q alive survivor && test ! -e lost || { echo the vm is gone >&2; exit 4; }']\n",
    );
    std::fs::write(d.path().join("lost"), "").unwrap();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("FAILED: survival `vm` of nova: its check failed:")
            && r.stderr.contains("exited 4: the vm is gone"),
        "{}",
        r.stderr
    );
    std::fs::remove_file(d.path().join("lost")).unwrap();
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        std::fs::read_to_string(d.path().join("survivor")).unwrap(),
        "alive\n",
        "created once"
    );
    let survival: Vec<(String, bool)> = d
        .journal()
        .iter()
        .filter(|e| e["event"] == "survival")
        .map(|e| {
            (
                e["what"].as_str().unwrap().to_string(),
                e["passed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        survival,
        [
            ("create".into(), true),
            ("check".into(), false),
            ("check".into(), true)
        ]
    );
    assert!(d.report().contains("survival `vm` of nova: check passed"));
}
