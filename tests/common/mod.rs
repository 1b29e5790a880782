//! Helpers for end-to-end tests: the built `uphost` binary, the built
//! plugins, and throwaway copies of the demo cluster.

pub mod packages;
pub mod services;
pub mod site;
pub mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

fn built(p: PathBuf) -> PathBuf {
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask test` (it builds the host and the plugins first)",
        p.display()
    );
    p
}

/// `target/release/uphost`.
pub fn uphost_bin() -> PathBuf {
    built(root().join("target/release/uphost"))
}

/// `target/release/uphost-demo-sim`.
pub fn sim_bin() -> PathBuf {
    built(root().join("target/release/uphost-demo-sim"))
}

/// A built plugin or fixture component by crate name (or, for the Python
/// and JavaScript plugins of `polyglot/`, by name).
pub fn wasm(crate_name: &str) -> PathBuf {
    let foreign = root()
        .join("target/polyglot")
        .join(format!("{crate_name}.wasm"));
    if foreign.exists() {
        return foreign;
    }
    built(
        root()
            .join("target/wasm32-wasip2/plugin")
            .join(format!("{}.wasm", crate_name.replace('-', "_"))),
    )
}

/// A test crate's component built with the release profile, which keeps
/// names and line tables (what an author builds while developing), for the
/// symbolized-backtrace test.
pub fn wasm_with_symbols(crate_name: &str) -> PathBuf {
    built(
        root()
            .join("target/wasm32-wasip2/release")
            .join(format!("{}.wasm", crate_name.replace('-', "_"))),
    )
}

/// The seed plugins.
pub const SEED_PLUGINS: &[&str] = &[
    "galera",
    "rabbitmq",
    "haproxy",
    "keystone",
    "placement",
    "nova",
    "nova-compute",
    "neutron",
    "ceph-mon",
    "ceph-osd",
];

/// The demo's nodes.
pub const DEMO_NODES: &[&str] = &[
    "ctl1:controller",
    "ctl2:controller",
    "ctl3:controller",
    "cmp1:compute",
    "cmp2:compute",
    "cmp3:compute",
    "cmp4:compute",
    "stor1:storage",
    "stor2:storage",
];

/// The output of a command, for assertions.
pub struct Ran {
    /// Exit code (-1 when killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ran {
    /// Both streams.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Ran {
    fn from(o: Output) -> Self {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A throwaway copy of the demo cluster.
pub struct Demo {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
}

impl Demo {
    /// Copy examples/demo's configuration, the given plugins, and create its
    /// simulated nodes. Approves the plugins when `approve`.
    pub fn new(plugins: &[&str], approve: bool) -> Demo {
        Demo::of("demo", "newton", plugins, approve)
    }

    /// Copy the configuration of `examples/<example>` (a release train's
    /// gate scripts with it), the given plugins, and create the simulated
    /// nodes at OpenStack `release`. Approves the plugins when `approve`.
    pub fn of(example: &str, release: &str, plugins: &[&str], approve: bool) -> Demo {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = root().join("examples").join(example);
        for f in ["uphost.yaml", "inventory.yaml", "services.yaml"] {
            std::fs::copy(src.join(f), dir.path().join(f)).expect("copy demo config");
        }
        if let Ok(gates) = std::fs::read_dir(src.join("gates")) {
            std::fs::create_dir_all(dir.path().join("gates")).expect("mkdir");
            for g in gates {
                let g = g.expect("gate script").path();
                std::fs::copy(&g, dir.path().join("gates").join(g.file_name().unwrap()))
                    .expect("copy gate script");
            }
        }
        std::fs::create_dir_all(dir.path().join("plugins")).expect("mkdir");
        for p in plugins {
            std::fs::copy(
                wasm(p),
                dir.path().join("plugins").join(format!("{p}.wasm")),
            )
            .expect("copy plugin");
        }
        let d = Demo { dir };
        let st = Command::new(sim_bin())
            .arg("init")
            .arg(d.path())
            .args(["--release", release])
            .args(DEMO_NODES)
            .output()
            .expect("sim init");
        assert!(st.status.success(), "sim init failed");
        if approve {
            let r = d.uphost(&["plugins", "approve", "--all", "--yes"]);
            assert_eq!(r.code, 0, "{}", r.all());
        }
        d
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run uphost in it.
    pub fn uphost(&self, args: &[&str]) -> Ran {
        uphost_in(self.path(), args)
    }

    /// Wait (up to `within`) until `node` has run a mutating command that
    /// starts with `prefix`: a run is under way at a known point.
    pub fn wait_for_op(&self, node: &str, prefix: &str, within: std::time::Duration) {
        wait_until(&format!("{node} running `{prefix}…`"), within, || {
            self.ops(node).iter().any(|l| l.starts_with(prefix))
        });
    }

    /// A node's mutating-command log.
    pub fn ops(&self, node: &str) -> Vec<String> {
        std::fs::read_to_string(self.path().join("nodes").join(node).join("ops.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// A node's mutating commands counted (their order varies with the
    /// services run side by side; a backup file name's run id left out):
    /// the same counts as an uninterrupted run's means every command ran
    /// exactly once.
    pub fn op_counts(&self, node: &str) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for o in self.ops(node) {
            let o = o
                .split("--result-file=")
                .next()
                .unwrap_or_default()
                .to_string();
            *m.entry(o).or_default() += 1;
        }
        m
    }

    /// Every node's state and the cluster state, for comparing two copies.
    pub fn cluster_state(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let nodes = self.path().join("nodes");
        let mut names: Vec<String> = std::fs::read_dir(&nodes)
            .expect("nodes dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for n in names {
            let p = nodes.join(&n);
            let state = if p.is_dir() {
                std::fs::read_to_string(p.join("state.json")).unwrap_or_default()
            } else {
                std::fs::read_to_string(&p).unwrap_or_default()
            };
            v.push((n, state));
        }
        v
    }

    /// Replace `from` by `to` in one of its configuration files (the text
    /// must be there).
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.path().join(file);
        let text = std::fs::read_to_string(&p).expect("config file");
        assert!(text.contains(from), "`{from}` is not in {file}");
        std::fs::write(&p, text.replace(from, to)).expect("write config file");
    }

    /// Inject a fault on a node: commands starting with `argv` fail.
    pub fn fault(&self, node: &str, argv: &[&str], stderr: &str) {
        let f = serde_json::json!([{"argv": argv, "status": 1, "stderr": stderr, "times": 0}]);
        std::fs::write(
            self.path().join("nodes").join(node).join("faults.json"),
            f.to_string(),
        )
        .expect("write faults");
    }

    /// Make commands starting with `argv` on `node` take `secs` longer (they
    /// still run and succeed), beside the node's other faults.
    pub fn slow(&self, node: &str, argv: &[&str], secs: f64) {
        let p = self.path().join("nodes").join(node).join("faults.json");
        let mut faults: Vec<serde_json::Value> = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        faults.push(serde_json::json!({"argv": argv, "status": 0, "delay_s": secs, "times": 0}));
        std::fs::write(&p, serde_json::Value::from(faults).to_string()).expect("write faults");
    }

    /// Remove a node's faults.
    pub fn heal(&self, node: &str) {
        let _ = std::fs::remove_file(self.path().join("nodes").join(node).join("faults.json"));
    }

    /// Parse `uphost status --format json`.
    pub fn status(&self) -> serde_json::Value {
        self.json(&["status", "--format", "json"])
    }

    /// The JSON a successful `uphost ARGS` prints.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let r = self.uphost(args);
        assert_eq!(r.code, 0, "{}", r.all());
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.all()))
    }

    /// The HTML report of the current run.
    pub fn report(&self) -> String {
        let st = self.status();
        std::fs::read_to_string(
            self.path()
                .join("state/runs")
                .join(st["run_id"].as_str().expect("a run"))
                .join("report.html"),
        )
        .expect("the run's report")
    }

    /// The latest run's journal events.
    pub fn journal(&self) -> Vec<serde_json::Value> {
        current_journal(self.path())
    }
}

/// A TCP port on 127.0.0.1 nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Run the built uphost in `dir` (its `uphost.yaml`), without RUST_LOG.
pub fn uphost_in(dir: &Path, args: &[&str]) -> Ran {
    Command::new(uphost_bin())
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run uphost")
        .into()
}

/// The path of the current run's journal under `dir/state`.
pub fn current_journal_path(dir: &Path) -> PathBuf {
    let cur = std::fs::read_to_string(dir.join("state/current")).expect("current run");
    dir.join("state/runs")
        .join(cur.trim())
        .join("journal.jsonl")
}

/// The records of the current run's journal under `dir/state`.
pub fn current_journal(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(current_journal_path(dir)).expect("journal");
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Poll `cond` every 5 ms until it holds; fail the test, naming `what`,
/// after `within`.
pub fn wait_until(what: &str, within: std::time::Duration, cond: impl Fn() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(t.elapsed() < within, "no {what} within {within:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// How many times the journal records `service`'s `phase` step as
/// started (on any node).
pub fn times_started(journal: &[serde_json::Value], service: &str, phase: &str) -> usize {
    journal
        .iter()
        .filter(|e| {
            e["event"] == "step-started"
                && e["step"]["service"] == service
                && e["step"]["phase"] == phase
        })
        .count()
}

/// Whether the journal records `service`'s `phase` step as finished ok
/// (on some node).
pub fn finished_ok(journal: &[serde_json::Value], service: &str, phase: &str) -> bool {
    journal.iter().any(|e| {
        e["event"] == "step-finished"
            && e["step"]["service"] == service
            && e["step"]["phase"] == phase
            && e["status"] == "ok"
    })
}

/// `node: argv...` of every command the journal records as finished.
pub fn commands_run(journal: &[serde_json::Value]) -> Vec<String> {
    journal
        .iter()
        .filter(|r| r["event"] == "command-finished")
        .map(|r| {
            let argv: Vec<&str> = r["argv"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            format!("{}: {}", r["node"].as_str().unwrap_or("?"), argv.join(" "))
        })
        .collect()
}

/// The sha256 of `bytes`, hex, as `sha256sum` prints it.
pub fn sha256(bytes: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
