//! What the operator sees: the JSON event stream of a real run validates
//! against docs/events.schema.json, the HTML report renders in real
//! headless Chromium without console errors, a terminal gets a live
//! progress bar, and the prompts are answered at a real pty.

use std::process::Command;

use uphost_tests::{Demo, SEED_PLUGINS, root};

#[test]
fn json_stream_of_a_demo_run_validates_against_the_schema() {
    let d = Demo::new(SEED_PLUGINS, true);
    d.fault("cmp2", &["apt-get"], "E: Unable to fetch some archives");
    let r = d.uphost(&["--output", "json", "run", "--yes", "--rollback-on-failure"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/events.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let mut kinds = std::collections::BTreeSet::new();
    let mut lines = 0;
    for (i, line) in r.stdout.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout line {} is not JSON ({e}): {line}", i + 1));
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "line {}: {line}\n{}",
            i + 1,
            errors.join("\n")
        );
        kinds.insert(v["event"].as_str().unwrap().to_string());
        lines += 1;
    }
    assert!(lines > 100, "only {lines} events");
    for k in [
        "run-started",
        "step-started",
        "step-finished",
        "command-started",
        "command-finished",
        "log",
        "state",
        "confirmation",
        "rollback-started",
        "run-finished",
    ] {
        assert!(kinds.contains(k), "no `{k}` event in the stream: {kinds:?}");
    }
    // A schema that cannot fail is no test: a broken record is rejected.
    let bad = serde_json::json!({"event": "step-finished", "step": {"service": "x", "phase": "upgrade"}, "at_ms": 1, "status": "maybe", "duration_ms": 1});
    assert!(!validator.is_valid(&bad));
}

fn chromium() -> String {
    for c in ["chromium", "/usr/bin/chromium", "chromium-browser"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!("Chromium is not installed: `cargo xtask test` installs Debian's chromium package");
}

#[test]
fn the_report_renders_in_headless_chromium() {
    let d = Demo::new(SEED_PLUGINS, true);
    d.fault(
        "ctl1",
        &["nova-manage", "db", "sync"],
        "ERROR: Could not access cell0",
    );
    let r = d.uphost(&["run", "--yes", "--rollback-on-failure"]);
    assert_eq!(r.code, 1);
    let report = r
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("no report path printed: {}", r.stderr))
        .to_string();
    let report = d.path().join(report);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        !html.contains("http://") || !html.contains("<script src"),
        "the report must not load anything"
    );
    assert!(html.contains("FAILED") && html.contains("nova post-upgrade"));
    assert!(
        html.contains("class=\"down\""),
        "no unavailability window drawn"
    );
    let profile = tempfile::tempdir().unwrap();
    let shot = d.path().join("report.png");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", report.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    assert!(
        log.contains("uphost report ready"),
        "the page's script did not run: {log}"
    );
    for bad in ["Uncaught", "ERROR:CONSOLE", "SyntaxError", "TypeError"] {
        assert!(!log.contains(bad), "console error `{bad}`: {log}");
    }
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG"),
        "screenshot of {} bytes",
        png.len()
    );
}

/// On a terminal (a pty made by `script`), a run draws a live progress bar:
/// steps done / total and the steps in flight.
#[test]
fn a_terminal_gets_a_live_progress_bar() {
    let d = Demo::new(SEED_PLUGINS, true);
    let out = Command::new("script")
        .current_dir(d.path())
        .args(["-qec"])
        .arg(format!(
            "{} run --yes",
            uphost_tests::uphost_bin().display()
        ))
        .arg("/dev/null")
        .output()
        .expect("`script` (util-linux) runs the command on a pty");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("/70 steps"), "no progress bar: {text}");
    // "N/70 steps  <service> <phase>": what is in flight, after the count.
    assert!(
        SEED_PLUGINS
            .iter()
            .any(|svc| text.contains(&format!(" steps  {svc} "))),
        "no step in flight shown: {text}"
    );
    assert!(text.contains("run complete"), "{text}");
}

/// `uphost run` on a terminal (a pty made by `script`), answering its
/// prompts with `answers` typed at the keyboard.
fn run_on_a_terminal(d: &Demo, answers: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = Command::new("script")
        .current_dir(d.path())
        .args(["-qec"])
        .arg(format!("{} run", uphost_tests::uphost_bin().display()))
        .arg("/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs the command on a pty");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn confirmations(d: &Demo) -> Vec<(bool, String)> {
    d.journal()
        .iter()
        .filter(|e| e["event"] == "confirmation")
        .map(|e| {
            (
                e["accepted"].as_bool().unwrap(),
                e["how"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Answering "n" at the first prompt changes nothing on any node.
#[test]
fn no_at_the_terminal_prompt_runs_nothing() {
    let d = Demo::new(SEED_PLUGINS, true);
    let (code, text) = run_on_a_terminal(&d, "n\n");
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("[y/N]"), "no prompt: {text}");
    assert_eq!(confirmations(&d), vec![(false, "terminal".to_string())]);
    for n in uphost_tests::DEMO_NODES {
        assert!(d.ops(n).is_empty(), "{n} changed: {:?}", d.ops(n));
    }
}

/// "y" to start, then "y" when the run fails and asks to roll back: the
/// reversible services are rolled back, and both answers are journaled as
/// given at the terminal.
#[test]
fn yes_at_the_rollback_prompt_rolls_back() {
    let d = Demo::new(SEED_PLUGINS, true);
    d.fault(
        "ctl1",
        &["nova-manage", "db", "sync"],
        "ERROR nova: migration 346 failed: duplicate column",
    );
    let (code, text) = run_on_a_terminal(&d, "y\ny\n");
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        confirmations(&d),
        vec![
            (true, "terminal".to_string()),
            (true, "terminal".to_string())
        ],
        "{text}"
    );
    assert!(text.contains("Roll back the reversible services"), "{text}");
    assert!(
        d.journal().iter().any(|e| e["event"] == "rollback-started"),
        "{text}"
    );
    assert!(
        d.ops("ctl1")
            .iter()
            .any(|l| l.starts_with("mysql -e source")),
        "galera's dump was not restored: {:?}",
        d.ops("ctl1")
    );
}

/// Start uphost in `d` with stdout and stderr pipes whose reading ends are
/// closed at once (`uphost … | head -0`), and return its exit code and
/// whether it died of a signal.
fn with_closed_pipes(d: &Demo, args: &[&str]) -> Option<i32> {
    let mut child = Command::new(uphost_tests::uphost_bin())
        .current_dir(d.path())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn uphost");
    drop(child.stdout.take());
    drop(child.stderr.take());
    child.wait().expect("wait").code()
}

#[test]
fn closed_output_pipes_neither_panic_nor_stop_a_run() {
    let d = Demo::new(SEED_PLUGINS, true);
    // Read-only views: `uphost plan | head -1` ends quietly.
    for args in [
        &["plan"][..],
        &["plan", "--format", "json"],
        &["plugins", "list"],
    ] {
        assert_eq!(with_closed_pipes(&d, args), Some(0), "uphost {args:?}");
    }
    // A real run whose terminal went away: it finishes, and the journal
    // says so (a panic would exit 101 and leave steps running).
    assert_eq!(
        with_closed_pipes(&d, &["--output", "json", "run", "--yes"]),
        Some(0)
    );
    let st = d.status();
    assert_eq!(st["outcome"], "complete", "{st}");
    assert!(
        !d.ops("cmp4").is_empty(),
        "the last service's node was never upgraded"
    );
}
