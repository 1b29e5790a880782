//! `cargo xtask bench [load|hook|journal|ansible|ssh|probes|scale]...`: every benchmark
//! of BENCHMARKS.md, reproducible with one command, with a summary table.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{cargo, root, run, uphost_bin, wasm_out};

fn bench_dir(name: &str) -> PathBuf {
    let d = root().join("target/bench").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("plugins")).expect("bench dir");
    d
}

/// Replace every occurrence of `old` by `new` (same length) in a component:
/// a copy of a real plugin under another service name.
fn renamed(bytes: &[u8], old: &str, new: &str) -> Vec<u8> {
    assert_eq!(old.len(), new.len());
    let mut out = bytes.to_vec();
    let (o, n) = (old.as_bytes(), new.as_bytes());
    let mut i = 0;
    while i + o.len() <= out.len() {
        if &out[i..i + o.len()] == o {
            out[i..i + o.len()].copy_from_slice(n);
            i += o.len();
        } else {
            i += 1;
        }
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_cmd(cmd: &mut Command) -> Result<Duration> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(d)
}

fn write_config(dir: &Path, inventory: &str, services: &str) -> Result<()> {
    std::fs::write(
        dir.join("uphost.yaml"),
        "plugins: plugins/\ninventory: inventory.yaml\nservices: services.yaml\nstate_dir: state/\nforks: 10\n",
    )?;
    std::fs::write(dir.join("inventory.yaml"), inventory)?;
    std::fs::write(dir.join("services.yaml"), services)?;
    Ok(())
}

fn approve(dir: &Path) -> Result<()> {
    run(Command::new(uphost_bin())
        .current_dir(dir)
        .args(["-q", "plugins", "approve", "--all", "--yes"])
        .stdout(Stdio::null()))
}

fn hosts(n: usize, connection: &str) -> String {
    let mut s = format!(
        "all:\n  vars:\n    ansible_connection: {connection}\n    ansible_python_interpreter: \"{{{{ ansible_playbook_python }}}}\"\n  children:\n    bench:\n      hosts:\n"
    );
    for i in 0..n {
        s.push_str(&format!("        h{i:06}:\n"));
    }
    s
}

/// A summary line.
pub struct Row(pub String, pub String, pub String);

fn load(rows: &mut Vec<Row>) -> Result<()> {
    let dir = bench_dir("load");
    let bases = ["galera", "rabbitmq", "haproxy", "ceph-mon"];
    for i in 0..50 {
        let base = bases[i % bases.len()];
        let bytes = std::fs::read(wasm_out(base))?;
        let new = format!("{}{:02}", &base[..base.len() - 2], i);
        let mut copy = renamed(&bytes, base, &new);
        if base == "galera" {
            // galera depends on haproxy: on the haproxy copy number 2.
            copy = renamed(&copy, "haproxy", "hapro02");
        }
        std::fs::write(dir.join("plugins").join(format!("{new}.wasm")), copy)?;
    }
    write_config(&dir, &hosts(1, "local"), "services: {}\n")?;
    let list = || {
        let mut c = Command::new(uphost_bin());
        c.current_dir(&dir).args(["plugins", "list"]);
        c
    };
    let out = list().output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let n = text.lines().count().saturating_sub(1);
    if n != 50 {
        bail!(
            "expected 50 plugins, got {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut cold = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(dir.join("state/cache"));
        cold.push(time_cmd(&mut list())?);
    }
    let mut warm = Vec::new();
    for _ in 0..10 {
        warm.push(time_cmd(&mut list())?);
    }
    let (c, w) = (median(cold), median(warm));
    println!("load 50 plugins + describe, fresh process: cold {c:.2?}, warm {w:.2?}");
    rows.push(Row(
        "load+describe 50 plugins, cold (compile)".into(),
        format!("{:.0} ms", c.as_secs_f64() * 1e3),
        "".into(),
    ));
    rows.push(Row(
        "load+describe 50 plugins, warm (cache)".into(),
        format!("{:.1} ms", w.as_secs_f64() * 1e3),
        "target ≤ 50 ms".into(),
    ));
    Ok(())
}

fn result_line(out: &str, key: &str) -> Option<String> {
    let key = format!("{key}=");
    out.lines()
        .filter(|l| l.starts_with("RESULT"))
        .find_map(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix(&key)))
        .map(String::from)
}

fn cargo_bench(name: &str) -> Result<String> {
    let out = cargo()
        .args(["bench", "-q", "-p", "uphost", "--bench", name])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("cargo bench {name} failed");
    }
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{s}");
    Ok(s)
}

fn hook(rows: &mut Vec<Row>) -> Result<()> {
    let out = cargo_bench("hook_overhead")?;
    let m = result_line(&out, "hook_median_us").unwrap_or_default();
    let p = result_line(&out, "hook_p99_us").unwrap_or_default();
    // The parts are on a line of their own.
    let parts = out
        .lines()
        .filter(|l| l.starts_with("RESULT hook_state_us"))
        .map(|l| {
            l.trim_start_matches("RESULT ")
                .replace("hook_", "")
                .replace("_us=", " ")
        })
        .next()
        .unwrap_or_default();
    let u = result_line(&out, "hook_until_result_us").unwrap_or_default();
    let up = result_line(&out, "hook_until_result_p99_us").unwrap_or_default();
    rows.push(Row(
        "hook: store + WASI context + instantiate + no-op call, up to the result".into(),
        format!("median {u} µs, p99 {up} µs"),
        "target ≤ 10 µs median".into(),
    ));
    rows.push(Row(
        "hook, whole cycle: the above, then the store's drop (the slot reset)".into(),
        format!("median {m} µs, p99 {p} µs (parts, µs: {parts})"),
        "the drop is not in the target's parts".into(),
    ));
    Ok(())
}

fn journal(rows: &mut Vec<Row>) -> Result<()> {
    let out = cargo_bench("journal")?;
    let a = result_line(&out, "journal_step_us").unwrap_or_default();
    let b = result_line(&out, "journal_step_concurrent_us").unwrap_or_default();
    let c = result_line(&out, "journal_node_step_batched_us").unwrap_or_default();
    rows.push(Row(
        "journal: per step".into(),
        format!(
            "{a} µs fsync'd (1 writer), {b} µs (8 writers), {c} µs per node step with a barrier per batch of 10"
        ),
        "group commit, batch barrier".into(),
    ));
    Ok(())
}

fn venv_ansible() -> Result<PathBuf> {
    let venv = root().join("target/bench-venv");
    let bin = venv.join("bin/ansible-playbook");
    if !bin.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args(["install", "-q", "ansible-core"]))?;
    }
    Ok(bin)
}

fn orchestration(rows: &mut Vec<Row>) -> Result<()> {
    let ansible = venv_ansible()?;
    for n in [10usize, 100] {
        let m = 5;
        let dir = bench_dir(&format!("orch-{n}"));
        std::fs::copy(
            wasm_out("fixture-bench-true"),
            dir.join("plugins/bench-true.wasm"),
        )?;
        write_config(
            &dir,
            &hosts(n, "local"),
            &format!(
                "services:\n  bench-true:\n    roles: [bench]\n    params: {{steps: \"{m}\"}}\n"
            ),
        )?;
        approve(&dir)?;
        let mut play = String::from("- hosts: bench\n  gather_facts: false\n  tasks:\n");
        for i in 0..m {
            play.push_str(&format!("    - name: step {i}\n      command: \"true\"\n"));
        }
        std::fs::write(dir.join("play.yml"), play)?;
        let up = || {
            let _ = std::fs::remove_dir_all(dir.join("state/runs"));
            let mut c = Command::new(uphost_bin());
            c.current_dir(&dir)
                .args(["-q", "run", "--yes", "--forks", "10"]);
            c
        };
        time_cmd(&mut up())?; // warm the compile cache
        let mut ups = Vec::new();
        for _ in 0..5 {
            ups.push(time_cmd(&mut up())?);
        }
        let mut floors = Vec::new();
        for _ in 0..5 {
            floors.push(time_cmd(
                Command::new(std::env::current_exe()?)
                    .current_dir(&dir)
                    .args(["spawn-floor", &(n * m).to_string(), "10", "true"]),
            )?);
        }
        let mut ans = Vec::new();
        for _ in 0..(if n <= 10 { 3 } else { 1 }) {
            ans.push(time_cmd(
                Command::new(&ansible)
                    .current_dir(&dir)
                    .args(["-i", "inventory.yaml", "-f", "10", "play.yml"])
                    .env("ANSIBLE_HOST_KEY_CHECKING", "False")
                    .env("ANSIBLE_LOCALHOST_WARNING", "False"),
            )?);
        }
        let (u, f, a) = (median(ups), median(floors), median(ans));
        println!(
            "N={n} M={m} forks=10: uphost {u:.3?}, ansible-playbook {a:.3?}, floor (posix_spawn, 10 at once) {f:.3?}: {:.0}x faster than Ansible, {:.2}x the floor",
            a.as_secs_f64() / u.as_secs_f64(),
            u.as_secs_f64() / f.as_secs_f64()
        );
        rows.push(Row(
            format!("orchestration N={n} M={m} forks=10"),
            format!(
                "uphost {:.0} ms, ansible {:.0} ms, floor {:.0} ms",
                u.as_secs_f64() * 1e3,
                a.as_secs_f64() * 1e3,
                f.as_secs_f64() * 1e3
            ),
            format!(
                "{:.0}x vs Ansible, {:.2}x floor",
                a.as_secs_f64() / u.as_secs_f64(),
                u.as_secs_f64() / f.as_secs_f64()
            ),
        ));
    }
    Ok(())
}

fn scale(rows: &mut Vec<Row>, sizes: &[usize]) -> Result<()> {
    let services = 20;
    for &n in sizes {
        let dir = bench_dir(&format!("scale-{n}"));
        let bytes = std::fs::read(wasm_out("fixture-bench-true"))?;
        let mut sf = String::from("services:\n");
        for s in 0..services {
            let name = format!("bench-s{s:03}");
            std::fs::write(
                dir.join("plugins").join(format!("{name}.wasm")),
                renamed(&bytes, "bench-true", &name),
            )?;
            sf.push_str(&format!(
                "  {name}:\n    roles: [bench]\n    params: {{steps: \"1\"}}\n"
            ));
        }
        write_config(&dir, &hosts(n, "dry-run"), &sf)?;
        approve(&dir)?;
        // `run --dry-run` (what the operator types to look ahead: its
        // journal needs no durability), then the real run through the
        // dry-run transport (durable journal, one barrier per batch).
        for (what, extra) in [("run --dry-run", &["--dry-run"][..]), ("run", &[][..])] {
            let _ = std::fs::remove_dir_all(dir.join("state/runs"));
            let _ = std::fs::remove_file(dir.join("state/current"));
            let out = Command::new("/usr/bin/time")
                .current_dir(&dir)
                .args(["-f", "TIME %e %M"])
                .arg(uphost_bin())
                .args(["-q", "run", "--yes", "--forks", "10"])
                .args(extra)
                .stdout(Stdio::null())
                .output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                bail!("scale `{what}` N={n} failed: {err}");
            }
            let line = err
                .lines()
                .find(|l| l.starts_with("TIME "))
                .unwrap_or("TIME 0 0");
            let mut it = line.split_whitespace().skip(1);
            let secs: f64 = it.next().unwrap_or("0").parse().unwrap_or(0.0);
            let rss_kb: f64 = it.next().unwrap_or("0").parse().unwrap_or(0.0);
            let steps = n * services;
            let journal_bytes: u64 = std::fs::read_dir(dir.join("state/runs"))?
                .flatten()
                .map(|e| {
                    e.path()
                        .join("journal.jsonl")
                        .metadata()
                        .map(|m| m.len())
                        .unwrap_or(0)
                })
                .sum();
            println!(
                "scale N={n} x {services} services, `{what}` (dry-run transport): {secs:.2} s, peak RSS {:.0} MiB, {:.1} µs per (service, node) step, journal {:.0} MiB",
                rss_kb / 1024.0,
                secs * 1e6 / steps as f64,
                journal_bytes as f64 / (1 << 20) as f64
            );
            rows.push(Row(
                format!("scale: {n} nodes x {services} services, `{what}`"),
                format!("{secs:.2} s, {:.0} MiB RSS", rss_kb / 1024.0),
                format!("{:.1} µs/step", secs * 1e6 / steps as f64),
            ));
        }
        let _ = std::fs::remove_dir_all(dir.join("state/runs"));
    }
    Ok(())
}

/// The spawn floor: run `argv` `total` times, `parallel` at once, each
/// started with `posix_spawn` (what `std::process::Command` uses when it
/// can) and reaped as soon as any one ends (`waitpid(-1)`), so a slot is
/// refilled at once, unlike `xargs -P`, which waits for one child at a time.
pub fn spawn_floor(args: &[String]) -> Result<()> {
    let (Some(total), Some(parallel), Some(program)) = (args.first(), args.get(1), args.get(2))
    else {
        bail!("usage: cargo xtask spawn-floor TOTAL PARALLEL PROGRAM [ARGS...]");
    };
    let (total, parallel): (usize, usize) = (total.parse()?, parallel.parse()?);
    let (mut started, mut running) = (0usize, 0usize);
    let mut failed = 0usize;
    while started < total || running > 0 {
        while started < total && running < parallel.max(1) {
            // Not waited through `Child`: reaped below by any pid.
            drop(Command::new(program).args(&args[3..]).spawn()?);
            started += 1;
            running += 1;
        }
        match rustix::process::wait(rustix::process::WaitOptions::empty())? {
            Some((_, status)) => {
                running -= 1;
                if !status.exited() || status.exit_status() != Some(0) {
                    failed += 1;
                }
            }
            None => bail!("no child left while {running} were counted"),
        }
    }
    if failed > 0 {
        bail!("{failed} of {total} spawns failed");
    }
    Ok(())
}

/// Run the ignored test `name` of `tests/<test>.rs` (a benchmark that
/// needs the end-to-end set-up); its output.
fn ignored_test(test: &str, name: &str) -> Result<String> {
    let out = cargo()
        .args([
            "test",
            "-q",
            "--release",
            "-p",
            "uphost-tests",
            "--test",
            test,
            "--",
            "--ignored",
            "--nocapture",
            name,
        ])
        .stderr(Stdio::inherit())
        .output()?;
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{s}");
    if !out.status.success() {
        bail!("the benchmark {name} failed");
    }
    Ok(s)
}

fn ssh_overhead(rows: &mut Vec<Row>) -> Result<()> {
    venv_ansible()?;
    let s = ignored_test("ssh", "ssh_overhead_benchmark")?;
    let g = |k: &str| result_line(&s, k).unwrap_or_default();
    rows.push(Row(
        "ssh: per command (1 host)".into(),
        format!(
            "uphost multiplexed {} ms, new connection {} ms, ansible -m command {} ms",
            g("ssh_mux_ms"),
            g("ssh_fresh_ms"),
            g("ansible_command_ms")
        ),
        "real sshd on loopback".into(),
    ));
    let ratio = |a: &str, b: &str| -> String {
        match (g(a).parse::<f64>(), g(b).parse::<f64>()) {
            (Ok(a), Ok(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "n/a".into(),
        }
    };
    rows.push(Row(
        "ssh: uphost vs bare `ssh -S` on the same master (alternated)".into(),
        format!(
            "uphost {} ms, floor {} ms",
            g("ssh_alternated_ms"),
            g("ssh_floor_ms")
        ),
        format!(
            "{} the floor (target 1.2x); Ansible {} uphost",
            ratio("ssh_alternated_ms", "ssh_floor_ms"),
            ratio("ansible_command_ms", "ssh_mux_ms")
        ),
    ));
    Ok(())
}

/// The journal on etcd: cost per record, takeover time (tests/standby.rs).
fn etcd(rows: &mut Vec<Row>) -> Result<()> {
    let s = ignored_test("standby", "etcd_benchmark")?;
    let g = |k: &str| result_line(&s, k).unwrap_or_default();
    rows.push(Row(
        "journal on etcd (3 members, loopback)".into(),
        format!(
            "{} µs per record ({} records: demo run {} ms local, {} ms on etcd); takeover {} ms after a SIGKILL",
            g("etcd_record_us"),
            g("etcd_records"),
            g("etcd_run_local_ms"),
            g("etcd_run_etcd_ms"),
            g("etcd_takeover_ms")
        ),
        "lease 2 s; median of 5 runs each, 3 takeovers".into(),
    ));
    Ok(())
}

/// Run the benchmarks named in `which` (all when empty).
/// The demo run's wall time without probes and with three probes sampling
/// every 20 ms (two TCP probes on ports nobody listens on, one command
/// probe through the local transport), median of 9 runs each, alternated.
fn probes(rows: &mut Vec<Row>) -> Result<()> {
    let demo = root().join("examples/demo");
    let dir = bench_dir("probes");
    for f in ["uphost.yaml", "inventory.yaml"] {
        std::fs::copy(demo.join(f), dir.join(f))?;
    }
    for p in std::fs::read_dir(demo.join("plugins"))? {
        let p = p?.path();
        std::fs::copy(&p, dir.join("plugins").join(p.file_name().unwrap()))?;
    }
    let plain = std::fs::read_to_string(demo.join("services.yaml"))?;
    let probed = format!(
        "{plain}probes:\n  - {{name: a, tcp: \"127.0.0.1:9\", interval_ms: 20, timeout_ms: 100}}\n  - {{name: b, tcp: \"127.0.0.1:7\", interval_ms: 20, timeout_ms: 100}}\n  - {{name: c, command: {{node: ctl1, argv: [systemctl, is-active, keystone]}}, interval_ms: 20}}\n"
    );
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..18 {
        let with = i % 2;
        std::fs::write(
            dir.join("services.yaml"),
            if with == 1 { &probed } else { &plain },
        )?;
        let _ = std::fs::remove_dir_all(dir.join("state"));
        run(Command::new(root().join("target/release/uphost-demo-sim"))
            .arg("init")
            .arg(&dir)
            .args(super::DEMO_NODES)
            .stdout(Stdio::null()))?;
        times[with].push(time_cmd(
            Command::new(uphost_bin())
                .current_dir(&dir)
                .args(["-q", "run", "--yes"]),
        )?);
    }
    let (a, b) = (median(times[0].clone()), median(times[1].clone()));
    rows.push(Row(
        "demo run, no probes / 3 probes every 20 ms".into(),
        format!("{a:.2?} / {b:.2?}"),
        format!(
            "{:+.1} % with probes (median of 9 runs each, alternated)",
            (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0
        ),
    ));
    Ok(())
}

pub fn bench(which: &[String]) -> Result<()> {
    super::build()?;
    super::build_fixtures()?;
    let all = which.is_empty();
    let want = |k: &str| all || which.iter().any(|w| w == k);
    let mut rows = Vec::new();
    let t = Instant::now();
    if want("load") {
        load(&mut rows)?;
    }
    if want("hook") {
        hook(&mut rows)?;
    }
    if want("journal") {
        journal(&mut rows)?;
    }
    if want("ansible") {
        orchestration(&mut rows)?;
    }
    if want("ssh") {
        ssh_overhead(&mut rows)?;
    }
    if want("probes") {
        probes(&mut rows)?;
    }
    if want("etcd") {
        etcd(&mut rows)?;
    }
    if want("scale") {
        let sizes: Vec<usize> = std::env::var("UPHOST_SCALE_SIZES")
            .ok()
            .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
        scale(&mut rows, &sizes)?;
    }
    println!("\n| benchmark | result | note |\n| --- | --- | --- |");
    for Row(a, b, c) in &rows {
        println!("| {a} | {b} | {c} |");
    }
    println!("\n(all benchmarks: {:.0?})", t.elapsed());
    Ok(())
}
