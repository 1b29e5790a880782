//! `cargo xtask <command>`: build, demo, test, e2e, man.
//!
//! * `build`: the host (release), the demo simulators, every plugin for
//!   `wasm32-wasip2` (installing the target if missing); copies the plugins
//!   into `examples/demo/plugins/`, resets the demo's simulated nodes and
//!   records the fresh builds in the demo's `uphost.lock`.
//! * `demo`: build, then plan and upgrade the demo cluster (`run --yes`).
//! * `test`: install what the tests need from Debian (Chromium, sshd,
//!   MariaDB/Galera, HAProxy, RabbitMQ), build (plus the test fixtures and
//!   hostile plugins), the plugins' scenarios, then every test of the
//!   workspace.
//! * `e2e`: only the end-to-end tests (demo runs, SIGKILL/resume, ssh,
//!   Chromium, hostile plugins, and the real-services upgrade and rollback,
//!   which prints the table checksums before and after).
//! * `deps`: install what building needs from Debian (protoc).
//! * `man`: write the man page to `target/man/uphost.1`.
//! * `bench`: every benchmark of BENCHMARKS.md, with a summary table.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod bench;
#[path = "../../tests/common/packages.rs"]
mod packages;
mod polyglot;

/// The demo's nodes and roles (must match examples/demo/inventory.yaml).
pub(crate) const DEMO_NODES: &[&str] = &[
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

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {:?}", cmd);
    let st = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed with {st}");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (needed to install the wasm32-wasip2 target)")?;
    if !String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    }
    Ok(())
}

/// Crate names of the directories under `dir` holding a Cargo.toml.
fn crates_in(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    if !dir.exists() {
        return Ok(v);
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let toml = p.join("Cargo.toml");
        if toml.exists() {
            let text = std::fs::read_to_string(&toml)?;
            let name = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = "))
                .map(|n| n.trim_matches('"').to_string())
                .with_context(|| format!("no package name in {}", toml.display()))?;
            v.push(name);
        }
    }
    v.sort();
    Ok(v)
}

fn build_wasm(crates: &[String]) -> Result<()> {
    if crates.is_empty() {
        return Ok(());
    }
    let mut c = cargo();
    c.args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"]);
    for k in crates {
        c.args(["-p", k]);
    }
    run(&mut c)
}

pub(crate) fn wasm_out(name: &str) -> PathBuf {
    root()
        .join("target/wasm32-wasip2/plugin")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// What `build` compiles for the host. The SDK is in it so that the
/// proc-macros' dependencies resolve their features as in the workspace's
/// test build: the two then share one build of wasmtime (checked by
/// `features_agree`).
const HOST_BUILD: &[&str] = &[
    "--release",
    "-p",
    "uphost",
    "-p",
    "uphost-demo-sim",
    "-p",
    "uphost-sdk",
];

/// The features each dependency is built with, by package, for a
/// `cargo tree` selection.
fn features_of(args: &[&str]) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    let out = cargo()
        .args(["tree", "--prefix", "none", "--no-dedupe", "-f", "{p} {f}"])
        .args(args)
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut by: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut w = line.split(' ');
        let (Some(name), Some(version)) = (w.next(), w.next()) else {
            continue;
        };
        let v = by.entry(format!("{name} {version}")).or_default();
        if !v.iter().any(|l| l == line) {
            v.push(line.to_string());
            v.sort();
        }
    }
    Ok(by)
}

/// The host's build and the workspace's test build must turn on the same
/// features of every dependency they share, or `cargo test` compiles
/// wasmtime a second time (ten minutes of CI here). A dev-dependency that
/// turns on more is named with the fix.
fn features_agree() -> Result<()> {
    let mut host = vec!["-e", "normal,build"];
    host.extend(HOST_BUILD.iter().filter(|a| **a != "--release"));
    let host = features_of(&host)?;
    let all = features_of(&["--workspace", "-e", "normal,build,dev"])?;
    let differ: Vec<String> = host
        .iter()
        .filter_map(|(k, v)| match all.get(k) {
            Some(w) if w != v => Some(format!("  host build: {v:?}\n  tests:      {w:?}")),
            _ => None,
        })
        .collect();
    if !differ.is_empty() {
        bail!(
            "the workspace's tests build these dependencies with other features than the host's build, so wasmtime would be compiled twice:\n{}\nhint: ask for the same features in host/Cargo.toml (see the comment above `anyhow` there)",
            differ.join("\n")
        );
    }
    Ok(())
}

pub(crate) fn build() -> Result<()> {
    ensure_wasm_target()?;
    // etcd-client's build compiles etcd's protobuf API with protoc.
    ensure_packages(|n| n.test == "build")?;
    run(cargo().arg("build").args(HOST_BUILD))?;
    let plugins = crates_in(&root().join("plugins"))?;
    build_wasm(&plugins)?;
    polyglot::build()?;
    for (example, _, only) in SIM_EXAMPLES {
        let dst = root().join("examples").join(example).join("plugins");
        std::fs::create_dir_all(&dst)?;
        for old in std::fs::read_dir(&dst)? {
            let p = old?.path();
            if p.extension().is_some_and(|x| x == "wasm") {
                std::fs::remove_file(p)?;
            }
        }
        for p in plugins.iter().filter(|p| {
            only.map_or(!NODE_STAGE.contains(&p.as_str()), |o| {
                o.contains(&p.as_str())
            })
        }) {
            std::fs::copy(wasm_out(p), dst.join(format!("{p}.wasm")))
                .with_context(|| format!("copying the {p} plugin"))?;
        }
        if example == "polyglot" {
            for (p, _) in polyglot::PLUGINS {
                std::fs::copy(polyglot::wasm_out(p), dst.join(format!("{p}.wasm")))
                    .with_context(|| format!("copying the {p} plugin"))?;
            }
        }
    }
    reset_demo()?;
    eprintln!(
        "approving the freshly built demo plugins in examples/{{demo,train,leapfrog,minor,polyglot}}/plugins/uphost.lock: the demo's operator trusts its own builds (nothing else is ever approved implicitly)"
    );
    for (example, _, _) in SIM_EXAMPLES {
        run(Command::new(uphost_bin())
            .current_dir(root().join("examples").join(example))
            .args(["-q", "plugins", "approve", "--all", "--yes"]))?;
    }
    eprintln!("built: {}", uphost_bin().display());
    Ok(())
}

pub(crate) fn uphost_bin() -> PathBuf {
    root().join("target/release/uphost")
}

/// The examples on the simulated demo cluster, each with the OpenStack
/// release its nodes start at and its plugins (`None`: the OpenStack
/// services'): the demo (one hop), a Liberty -> Ocata train, a Kilo ->
/// Newton leapfrog, a node-by-node minor update, and the Python and
/// JavaScript plugins (glance, horizon) with the Rust ones they depend on.
const SIM_EXAMPLES: [(&str, &str, Option<&[&str]>); 5] = [
    ("demo", "newton", None),
    ("train", "liberty", None),
    ("leapfrog", "kilo", None),
    (
        "minor",
        "newton",
        Some(&["pacemaker", "haproxy", "host-os"]),
    ),
    (
        "polyglot",
        "newton",
        Some(&["haproxy", "galera", "rabbitmq", "keystone"]),
    ),
];

/// The plugins of the node-by-node stage, not in the OpenStack examples
/// (edeploy is in none: its scenarios test it).
const NODE_STAGE: [&str; 3] = ["pacemaker", "host-os", "edeploy"];

fn reset_demo() -> Result<()> {
    for (example, release, _) in SIM_EXAMPLES {
        let dir = root().join("examples").join(example);
        let _ = std::fs::remove_dir_all(dir.join("state"));
        run(Command::new(root().join("target/release/uphost-demo-sim"))
            .arg("init")
            .arg(&dir)
            .args(["--release", release])
            .args(DEMO_NODES))?;
    }
    Ok(())
}

fn demo() -> Result<()> {
    build()?;
    let demo = root().join("examples/demo");
    run(Command::new(uphost_bin()).current_dir(&demo).arg("plan"))?;
    run(Command::new(uphost_bin())
        .current_dir(&demo)
        .args(["run", "--yes"]))?;
    run(Command::new(uphost_bin()).current_dir(&demo).arg("status"))?;
    // A release train (Liberty -> Ocata, a gate between hops) and a
    // leapfrog (Kilo -> Newton: migrations of Liberty and Mitaka, one
    // deploy), on the same simulated cluster.
    // A node-by-node minor update: each controller out of the Pacemaker
    // cluster and back, each compute rebooted (kexec) and waited for.
    // Glance in Python and Horizon in JavaScript beside the Rust plugins.
    for example in ["train", "leapfrog", "minor", "polyglot"] {
        let dir = root().join("examples").join(example);
        run(Command::new(uphost_bin()).current_dir(&dir).arg("plan"))?;
        run(Command::new(uphost_bin())
            .current_dir(&dir)
            .args(["run", "--yes"]))?;
    }
    Ok(())
}

pub(crate) fn build_fixtures() -> Result<()> {
    let mut crates = crates_in(&root().join("tests/fixtures"))?;
    crates.extend(crates_in(&root().join("tests/hostile"))?);
    build_wasm(&crates)?;
    // One plugin also in the release profile, which keeps names and line
    // tables: the symbolized-backtrace test (tests/hostile.rs) needs it.
    run(cargo().args([
        "build",
        "--target",
        "wasm32-wasip2",
        "--release",
        "-p",
        "hostile-panic",
    ]))
}

/// Install the Debian packages of whatever is missing. Services the
/// packages would start (MariaDB, RabbitMQ, HAProxy) are not started: a
/// `policy-rc.d` that denies it is in place during the install, as in any
/// container build, and removed after (if it was not there before).
fn ensure_test_packages() -> Result<()> {
    ensure_packages(|_| true)
}

/// Install the Debian packages of the lines `which` selects whose WHAT is
/// missing.
fn ensure_packages(which: impl Fn(&packages::Need) -> bool) -> Result<()> {
    let needs = packages::needs().map_err(anyhow::Error::msg)?;
    let absent: Vec<&packages::Need> = needs
        .iter()
        .filter(|n| which(n) && !packages::present(n.what))
        .collect();
    if absent.is_empty() {
        return Ok(());
    }
    let mut missing: Vec<&str> = absent.iter().map(|n| n.package).collect();
    missing.sort_unstable();
    missing.dedup();
    let mut tests: Vec<&str> = absent.iter().map(|n| n.test).collect();
    tests.sort_unstable();
    tests.dedup();
    eprintln!(
        "installing Debian's {} (for the {} tests)",
        missing.join(", "),
        tests.join(", ")
    );
    let sudo = if rustix::process::geteuid().is_root() {
        vec![]
    } else {
        vec!["sudo"]
    };
    let as_root = |program: &str, args: &[&str]| {
        let mut c = Command::new(sudo.first().copied().unwrap_or(program));
        if !sudo.is_empty() {
            c.arg(program);
        }
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    let policy = "/usr/sbin/policy-rc.d";
    let own_policy = !Path::new(policy).exists();
    if own_policy {
        run(&mut as_root(
            "sh",
            &[
                "-c",
                &format!("printf '#!/bin/sh\\nexit 101\\n' > {policy} && chmod 755 {policy}"),
            ],
        ))?;
    }
    let installed = run(&mut as_root("apt-get", &["update", "-qq"])).and_then(|()| {
        let mut c = as_root(
            "apt-get",
            &["install", "-y", "-qq", "--no-install-recommends"],
        );
        c.args(&missing);
        run(&mut c)
    });
    if own_policy {
        run(&mut as_root("rm", &["-f", policy]))?;
    }
    installed
}

/// The ansible-core the inventory differential test compares with, in a
/// venv under target/ (pinned: its reading of inventories is the
/// reference). Debian's python3-venv is installed when venv is missing.
const ANSIBLE_CORE: &str = "ansible-core==2.17.14";

fn ensure_ansible() -> Result<()> {
    let venv = root().join("target/ansible");
    let tool = venv.join("bin/ansible-inventory");
    if tool.exists() {
        return Ok(());
    }
    eprintln!(
        "installing {ANSIBLE_CORE} in {} (the inventory tests' reference)",
        venv.display()
    );
    let make = || {
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !make() {
        let _ = std::fs::remove_dir_all(&venv);
        let mut c = Command::new("apt-get");
        c.args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "python3-venv",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut c)?;
        if !make() {
            bail!(
                "python3 -m venv {} failed: install python3 and its venv module",
                venv.display()
            );
        }
    }
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", ANSIBLE_CORE]))?;
    if !tool.exists() {
        bail!(
            "{} is missing after installing {ANSIBLE_CORE}",
            tool.display()
        );
    }
    Ok(())
}

fn test() -> Result<()> {
    features_agree()?;
    ensure_test_packages()?;
    ensure_ansible()?;
    build()?;
    build_fixtures()?;
    run(Command::new(uphost_bin())
        .args(["-q", "test"])
        .arg(root().join("plugins")))?;
    run(Command::new(uphost_bin())
        .args(["-q", "test"])
        .arg(root().join("polyglot"))
        .arg("--wasm-dir")
        .arg(root().join("target/polyglot")))?;
    cargo_test(&["--workspace", "--all-targets", "--no-fail-fast"])?;
    Ok(())
}

/// The end-to-end tests alone: real runs of the binary (demo cluster,
/// SIGKILL and resume, rollback), real sshd hosts, headless Chromium, the
/// hostile plugins, real Galera/HAProxy/RabbitMQ clusters.
fn e2e() -> Result<()> {
    ensure_test_packages()?;
    build()?;
    build_fixtures()?;
    let e2e_tests = ["runs", "ssh", "operator", "hostile", "standby"];
    let mut args = vec!["-p", "uphost-tests", "--no-fail-fast"];
    for t in e2e_tests {
        args.extend(["--test", t]);
    }
    cargo_test(&args)?;
    // Real MariaDB/Galera, HAProxy, RabbitMQ; prints the checksums.
    cargo_test(&[
        "-p",
        "uphost-tests",
        "--test",
        "services",
        "--",
        "--nocapture",
    ])
}

/// `cargo test --release ARGS…`.
fn cargo_test(args: &[&str]) -> Result<()> {
    run(cargo().args(["test", "--release"]).args(args))
}

fn man() -> Result<()> {
    run(cargo().arg("build").args(HOST_BUILD))?;
    let dir = root().join("target/man");
    std::fs::create_dir_all(&dir)?;
    let out = Command::new(uphost_bin()).arg("man").output()?;
    if !out.status.success() {
        bail!("uphost man failed");
    }
    std::fs::write(dir.join("uphost.1"), out.stdout)?;
    eprintln!("wrote {}", dir.join("uphost.1").display());
    Ok(())
}

fn main() {
    if let Err(e) = dispatch() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch() -> Result<()> {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    match cmd.as_str() {
        "build" => build(),
        "demo" => demo(),
        "test" => test(),
        "man" => man(),
        "e2e" => e2e(),
        "fixtures" => build_fixtures(),
        "deps" => ensure_packages(|n| n.test == "build"),
        "bench" => bench::bench(&std::env::args().skip(2).collect::<Vec<_>>()),
        "spawn-floor" => bench::spawn_floor(&std::env::args().skip(2).collect::<Vec<_>>()),
        _ => {
            eprintln!(
                "usage: cargo xtask build|demo|test|e2e|fixtures|deps|man|bench [load|hook|journal|ansible|ssh|probes|scale|etcd]|spawn-floor TOTAL PARALLEL CMD…"
            );
            std::process::exit(2);
        }
    }
}
