//! Plugin authoring: `uphost new plugin` gives a crate whose native tests,
//! wasm build and scenario pass out of the box; a wrong expectation fails
//! with a diff that points at it.

use std::process::Command;

use uphost_tests::{root, uphost_bin};

fn cargo(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(dir)
        .args(args)
        // Share compiled dependencies between runs of this test.
        .env("CARGO_TARGET_DIR", root().join("target/authoring"))
        .output()
        .expect("cargo")
}

#[test]
fn new_plugin_builds_tests_and_passes_its_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Command::new(uphost_bin())
        .args(["new", "plugin", "demo-svc", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let dir = tmp.path().join("demo-svc");
    let t = cargo(&dir, &["test", "--quiet"]);
    assert!(
        t.status.success(),
        "cargo test failed:\n{}",
        String::from_utf8_lossy(&t.stderr)
    );
    let b = cargo(
        &dir,
        &["build", "--quiet", "--release", "--target", "wasm32-wasip2"],
    );
    assert!(
        b.status.success(),
        "wasm build failed:\n{}",
        String::from_utf8_lossy(&b.stderr)
    );
    let wasm_dir = root().join("target/authoring/wasm32-wasip2/release");
    let run = |dir: &std::path::Path| -> (i32, String) {
        let o = Command::new(uphost_bin())
            .arg("test")
            .arg(dir)
            .arg("--wasm-dir")
            .arg(&wasm_dir)
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = run(&dir);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("PASS demo-svc") && out.contains("1 scenario(s) passed, 0 failed"),
        "{out}"
    );
    // A wrong expectation: fails, with a diff naming the expectation.
    let sc = dir.join("scenarios/happy.yaml");
    let text = std::fs::read_to_string(&sc).unwrap();
    std::fs::write(
        &sc,
        text.replace(
            "n1: systemctl stop demo-svc",
            "n1: systemctl restart demo-svc",
        ),
    )
    .unwrap();
    let (code, out) = run(&dir);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL demo-svc"), "{out}");
    assert!(
        out.contains("✗ expect.commands_in_order[0]: no command matching `n1: systemctl restart demo-svc` ran at all"),
        "{out}"
    );
    assert!(
        out.contains("[upgrade n1] n1: systemctl stop demo-svc -> exit 0"),
        "trace missing: {out}"
    );
}

#[test]
fn every_seed_plugin_scenario_passes() {
    let o = Command::new(uphost_bin())
        .args(["-q", "test"])
        .arg(root().join("plugins"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    let per_plugin = std::fs::read_dir(root().join("plugins"))
        .unwrap()
        .flatten()
        .map(|e| {
            std::fs::read_dir(e.path().join("scenarios"))
                .map(|r| r.count())
                .unwrap_or(0)
        })
        .collect::<Vec<_>>();
    assert!(
        per_plugin.iter().all(|n| *n >= 3),
        "each plugin needs a happy path and two failure paths: {per_plugin:?}"
    );
}
