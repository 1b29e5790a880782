//! The hostile-plugin suite: each hostile plugin (built from tests/hostile/)
//! runs through the real binary after a well-behaved one. The host must
//! survive, name the plugin and the violation, leave the good plugin's
//! result intact, and no forbidden command may create the canary file.

use std::path::{Path, PathBuf};

use uphost_tests::{Ran, uphost_bin, wasm, wasm_with_symbols};

struct Arena {
    dir: tempfile::TempDir,
    name: String,
}

impl Arena {
    fn new(hostile: &str, extra_params: &[(&str, &str)]) -> Arena {
        Arena::with_component(hostile, &wasm(&format!("hostile-{hostile}")), extra_params)
    }

    fn with_component(hostile: &str, component: &Path, extra_params: &[(&str, &str)]) -> Arena {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("plugins")).unwrap();
        let name = format!("hostile-{hostile}");
        std::fs::copy(component, p.join("plugins").join(format!("{name}.wasm"))).unwrap();
        std::fs::copy(wasm("fixture-good"), p.join("plugins/good.wasm")).unwrap();
        std::fs::write(
            p.join("uphost.yaml"),
            "plugins: plugins/\ninventory: inventory.yaml\nservices: services.yaml\nstate_dir: state/\n",
        )
        .unwrap();
        std::fs::write(
            p.join("inventory.yaml"),
            "all:\n  vars:\n    ansible_connection: local\n  children:\n    arena:\n      hosts:\n        n1:\n    other:\n      hosts:\n        n2:\n",
        )
        .unwrap();
        let canary = p.join("canary");
        let mut params = format!("      canary: {}\n", canary.display());
        for (k, v) in extra_params {
            params.push_str(&format!("      {k}: \"{v}\"\n"));
        }
        std::fs::write(
            p.join("services.yaml"),
            format!(
                "services:\n  good:\n    roles: [arena]\n  {name}:\n    roles: [arena]\n    params:\n{params}    limits:\n      memory_mb: 32\n      hook_timeout_s: 3\n      exec_timeout_s: 2\n      output_cap_kb: 64\n      max_log_lines: 1000\n"
            ),
        )
        .unwrap();
        let a = Arena { dir, name };
        let r = a.uphost(&["plugins", "approve", "--all", "--yes"]);
        assert_eq!(r.code, 0, "{}", r.all());
        a
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn canary(&self) -> PathBuf {
        self.path().join("canary")
    }

    fn uphost(&self, args: &[&str]) -> Ran {
        std::process::Command::new(uphost_bin())
            .current_dir(self.path())
            .args(args)
            .output()
            .unwrap()
            .into()
    }

    fn run(&self) -> Ran {
        self.uphost(&["run", "--yes"])
    }

    fn journal(&self) -> String {
        let cur = std::fs::read_to_string(self.path().join("state/current")).unwrap();
        std::fs::read_to_string(
            self.path()
                .join("state/runs")
                .join(cur.trim())
                .join("journal.jsonl"),
        )
        .unwrap()
    }

    /// The good plugin's upgrade steps all completed.
    fn good_unaffected(&self) {
        let r = self.uphost(&["status", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let good = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "good")
            .unwrap();
        for st in good["steps"].as_array().unwrap() {
            if st["phase"] != "finalize" {
                assert_eq!(st["status"], "done", "good plugin step affected: {st}");
            }
        }
        assert!(
            !self.canary().exists(),
            "the canary exists: a forbidden action ran"
        );
    }

    fn fails_with(&self, needles: &[&str]) -> Ran {
        let r = self.run();
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(
            r.stderr.contains(&self.name),
            "plugin not named: {}",
            r.stderr
        );
        for n in needles {
            assert!(r.stderr.contains(n), "expected `{n}` in:\n{}", r.stderr);
        }
        assert!(
            !r.stderr.contains("thread 'main' panicked") && !r.stderr.contains("thread 'tokio"),
            "the host panicked: {}",
            r.stderr
        );
        self.good_unaffected();
        r
    }
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let a = Arena::new("loop", &[]);
    a.fails_with(&["exceeded its 3s deadline in upgrade"]);
}

#[test]
fn memory_bomb_traps_at_the_cap() {
    let a = Arena::new("membomb", &[]);
    a.fails_with(&["trapped in upgrade", "memory"]);
}

#[test]
fn unbounded_recursion_traps() {
    let a = Arena::new("recursion", &[]);
    a.fails_with(&["trapped in upgrade", "stack"]);
}

#[test]
fn panic_names_plugin_hook_and_message() {
    let a = Arena::new("panic", &[]);
    let r = a.fails_with(&["trapped in upgrade", "hostile plugin panicked on purpose"]);
    // The shipped build is stripped: no backtrace, and no noise either.
    assert!(!r.stderr.contains("backtrace"), "{}", r.stderr);
    assert!(!r.stderr.contains("RUST_BACKTRACE"), "{}", r.stderr);
}

#[test]
fn panic_in_a_build_with_symbols_shows_the_plugins_own_frame_first() {
    let a = Arena::with_component("panic", &wasm_with_symbols("hostile-panic"), &[]);
    let r = a.fails_with(&["trapped in upgrade", "hostile plugin panicked on purpose"]);
    let bt = r
        .stderr
        .split("backtrace (innermost first):\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no backtrace in:\n{}", r.stderr));
    let first = bt.lines().next().unwrap().trim();
    assert!(
        first.starts_with("<hostile_panic::H as uphost_sdk::Plugin>::upgrade (")
            && first.ends_with("tests/hostile/panic/src/lib.rs:22)"),
        "the first frame shown is not the plugin's panicking line: {first}\n{}",
        r.stderr
    );
    assert!(
        !bt.contains("std::panicking") && !bt.contains("_RNv"),
        "runtime frames or mangled names shown:\n{bt}"
    );
}

#[test]
fn ungranted_program_is_denied_and_journaled() {
    let a = Arena::new("ungranted", &[]);
    a.fails_with(&["denied: program `sh` is not granted"]);
    let j = a.journal();
    assert!(
        j.contains(r#""event":"denied""#) && j.contains(r#""plugin":"hostile-ungranted""#),
        "{j}"
    );
}

#[test]
fn forbidden_argument_is_denied() {
    let a = Arena::new("forbidden-arg", &[]);
    a.fails_with(&["does not match the granted pattern `/nonexistent/allowed-only`"]);
}

#[test]
fn a_path_glob_cannot_be_climbed_out_of_with_dot_dot() {
    let a = Arena::new("path-climb", &[]);
    a.fails_with(&["climbs out of the granted path pattern `/var/tmp/*` with `..`"]);
}

#[test]
fn shell_syntax_reaches_the_program_as_one_literal_argument() {
    let a = Arena::new("shell-syntax", &[]);
    let r = a.run();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        a.journal()
            .contains("every argument arrived as one literal argv element")
    );
    a.good_unaffected();
}

#[test]
fn exec_on_a_node_outside_the_service_is_denied() {
    let a = Arena::new("wrong-node", &[("other_node", "n2")]);
    a.fails_with(&["node `n2` does not host service `hostile-wrong-node`"]);
}

#[test]
fn wasi_has_no_files() {
    let a = Arena::new("wasi-file", &[]);
    let r = a.run();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = a.journal();
    assert!(j.contains("blocked: /etc/passwd"), "{j}");
    a.good_unaffected();
}

#[test]
fn wasi_has_no_sockets() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let a = Arena::new("socket", &[("addr", &addr)]);
    let r = a.run();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(a.journal().contains(&format!("blocked: connect {addr}")));
    assert!(
        listener.accept().is_err(),
        "the plugin connected to the host"
    );
    a.good_unaffected();
}

#[test]
fn flooding_output_and_log_is_capped() {
    let a = Arena::new("flood", &[]);
    let r = a.run();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = a.journal();
    assert!(j.contains("log capped at 1000 lines"), "no log cap marker");
    assert!(
        j.contains("[guest output truncated at the cap]"),
        "no output cap marker"
    );
    assert!(j.len() < 8 << 20, "journal grew to {} bytes", j.len());
    a.good_unaffected();
}

#[test]
fn a_command_that_never_exits_is_killed_with_its_group() {
    let a = Arena::new("never-exits", &[]);
    a.fails_with(&["timed out after 2000 ms"]);
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 1000.5"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "sleep survived: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
fn environment_injection_is_denied() {
    let a = Arena::new("env-inject", &[]);
    a.fails_with(&["environment variable `LD_PRELOAD` is not granted"]);
}

#[test]
fn oversized_state_traps() {
    let a = Arena::new("state-bomb", &[]);
    a.fails_with(&["exceeds the 65536 byte limit"]);
}
