//! The ssh transport against real sshd test hosts, each in its own network
//! namespace (or on a loopback port where namespaces cannot be made): the
//! demo upgrade over ssh, an sshd killed mid-run then resume, the kinds of
//! connection failure, and argv round-trips of random bytes.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use uphost_tests::site::Site;
use uphost_tests::sshd::{Sshds, over_ssh, ssh_demo};
use uphost_tests::{Demo, uphost_bin};

#[test]
fn the_demo_upgrade_runs_over_ssh() {
    let began = std::time::SystemTime::now();
    let (d, sshds) = ssh_demo();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(d.status()["complete"], true);
    for n in ["ctl1", "ctl2", "ctl3"] {
        assert!(
            d.ops(n)
                .contains(&"apt-get install -y mariadb-server=10.2".to_string()),
            "{n}: {:?}",
            d.ops(n)
        );
    }
    // Nothing is left behind: no sshd, no namespace.
    let pids: Vec<u32> = sshds
        .hosts
        .values()
        .filter_map(|h| h.child.as_ref().map(|c| c.id()))
        .collect();
    let namespaces = sshds.namespaces();
    if rustix::process::geteuid().is_root() {
        // As root the hosts are real network neighbours, not loopback ports.
        assert_eq!(namespaces.len(), 3, "no network namespaces made");
        assert!(sshds.address("ctl1").starts_with("10."));
    }
    drop(sshds);
    for p in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists(),
            "sshd {p} survived"
        );
    }
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for ns in namespaces {
        assert!(!listed.contains(&ns), "namespace {ns} survived: {listed}");
    }
    // Nor the ssh control directory of an uphost that has exited (it exits
    // without running drops, so it closes its masters itself): of those
    // made since this test began (an uphost killed by an earlier, aborted
    // test run cannot have cleaned up).
    for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if e.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < began)
        {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("uphost-ssh-")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{} survived its uphost",
            e.path().display()
        );
    }
}

#[test]
fn a_killed_sshd_fails_the_step_as_unreachable_and_resume_finishes() {
    let (d, mut sshds) = ssh_demo();
    let child = std::process::Command::new(uphost_bin())
        .current_dir(d.path())
        .args(["run", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run is under way (galera's nodes are being upgraded).
    d.wait_for_op(
        "ctl1",
        "apt-get install -y mariadb-server",
        Duration::from_secs(30),
    );
    sshds.kill("ctl2");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // ctl2 was already done with everything; nothing to prove this time.
        panic!("the run finished before ctl2 was needed again: {err}");
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    // A command in flight when sshd died saw its connection drop; one
    // started after found nobody listening. Either names node and address.
    let ctl2 = format!("ctl2 ({}:{})", sshds.address("ctl2"), sshds.port("ctl2"));
    assert!(
        err.contains(&format!("{ctl2} is unreachable"))
            || err.contains(&format!("{ctl2} dropped the connection")),
        "{err}"
    );
    let kinds: Vec<String> = d
        .journal()
        .iter()
        .filter_map(|e| e["result"]["error_kind"].as_str().map(String::from))
        .collect();
    assert!(
        !kinds.is_empty()
            && kinds
                .iter()
                .all(|k| k == "unreachable" || k == "connection-dropped"),
        "{kinds:?}"
    );
    sshds.up("ctl2");
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(d.status()["complete"], true);
    // Every step completed exactly once.
    let mut done = std::collections::BTreeMap::new();
    for e in d.journal() {
        if e["event"] == "step-finished" && e["status"] == "ok" {
            *done.entry(e["step"].to_string()).or_insert(0) += 1;
        }
    }
    assert!(done.values().all(|n| *n == 1), "a step ran twice: {done:?}");
    assert_eq!(
        done.len(),
        7 * 7,
        "7 services x (check, pre, 3 nodes, post, finalize)"
    );
}

fn roundtrip_runtime() -> (
    tokio::runtime::Runtime,
    Sshds,
    uphost::transport::ssh::Ssh,
    uphost::config::NodeSpec,
) {
    let sshds = Sshds::start(&[("n1", None)]);
    let ssh = uphost::transport::ssh::Ssh::new(uphost::config::SshSettings {
        config: Some(sshds.ssh_config()),
        accept_new_host_keys: false,
        connect_timeout_s: Some(5),
    })
    .unwrap();
    let node = uphost::config::NodeSpec {
        name: "n1".into(),
        address: sshds.address("n1").into(),
        port: Some(sshds.port("n1")),
        user: Some("root".into()),
        key_file: None,
        connection: uphost::config::Connection::Ssh,
        become_user: None,
        roles: vec![],
        node_root: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (rt, sshds, ssh, node)
}

/// Unreachable, authentication failure, host key rejected and a connection
/// dropped mid-command are distinct errors, each naming node and address,
/// told apart on real sshd hosts.
#[test]
fn connection_failures_are_told_apart() {
    use uphost::transport::{CommandSpec, ConnectionFailure, Transport, TransportError};
    let (rt, mut sshds, ssh, node) = roundtrip_runtime();
    let cmd = |program: &str, args: &[&str]| CommandSpec {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        stdin: None,
        env: vec![],
        timeout: Duration::from_secs(30),
        output_cap: 1 << 16,
        record: None,
        node_record: None,
    };
    let kind_of = |r: Result<uphost::transport::CommandOutput, TransportError>| match r {
        Err(e @ TransportError::Unreachable { .. }) => {
            let text = e.to_string();
            let TransportError::Unreachable { kind, .. } = e else {
                unreachable!()
            };
            (kind, text)
        }
        other => panic!("expected a connection failure, got {other:?}"),
    };

    // Nothing listens on the port.
    let mut closed = node.clone();
    closed.name = "gone".into();
    closed.address = "127.0.0.1".into();
    closed.port = Some(
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    );
    let (kind, text) = kind_of(rt.block_on(ssh.exec(&closed, &cmd("true", &[]))));
    assert_eq!(kind, ConnectionFailure::Unreachable, "{text}");
    assert!(
        text.starts_with(&format!(
            "gone (127.0.0.1:{}) is unreachable",
            closed.port.unwrap()
        )),
        "{text}"
    );

    // An account the host does not let in.
    let mut stranger = node.clone();
    stranger.name = "n1-stranger".into();
    stranger.user = Some("no-such-user".into());
    let (kind, text) = kind_of(rt.block_on(ssh.exec(&stranger, &cmd("true", &[]))));
    assert_eq!(kind, ConnectionFailure::AuthenticationFailed, "{text}");
    assert!(text.contains("Permission denied"), "{text}");

    // A client whose known_hosts does not have the host's key.
    let strangers = sshds.dir.path().join("ssh_config_no_known_hosts");
    std::fs::write(sshds.dir.path().join("known_hosts_empty"), "").unwrap();
    std::fs::write(
        &strangers,
        std::fs::read_to_string(sshds.ssh_config())
            .unwrap()
            .replace("/known_hosts\n", "/known_hosts_empty\n"),
    )
    .unwrap();
    let wary = uphost::transport::ssh::Ssh::new(uphost::config::SshSettings {
        config: Some(strangers),
        accept_new_host_keys: false,
        connect_timeout_s: Some(5),
    })
    .unwrap();
    let (kind, text) = kind_of(rt.block_on(wary.exec(&node, &cmd("true", &[]))));
    assert_eq!(kind, ConnectionFailure::HostKeyRejected, "{text}");

    // The connection breaks while a command runs.
    let (kind, text) = rt.block_on(async {
        let sleep = cmd("sleep", &["25.5"]);
        let running = ssh.exec(&node, &sleep);
        let breaker = async {
            let t = Instant::now();
            while !sshds.runs("n1", "sleep 25.5") {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "the command never started"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sshds.drop_sessions("n1");
        };
        let (r, ()) = tokio::join!(running, breaker);
        kind_of(r)
    });
    assert_eq!(kind, ConnectionFailure::Dropped, "{text}");
    assert!(
        text.starts_with(&format!("n1 ({}:", sshds.address("n1"))),
        "{text}"
    );

    // A command whose own status is 255 is not a connection failure.
    let out = rt
        .block_on(ssh.exec(&node, &cmd("sh", &["-c", "exit 255"])))
        .expect("a status, not a transport error");
    assert_eq!(out.status, 255);

    // The host itself is fine: the next command reconnects.
    let out = rt
        .block_on(ssh.exec(&node, &cmd("echo", &["back"])))
        .expect("reconnects");
    assert_eq!(out.stdout, b"back\n");
}

/// Run `spec` over ssh; it must succeed, and print NUL-terminated words:
/// those words.
fn nul_words(
    rt: &tokio::runtime::Runtime,
    ssh: &uphost::transport::ssh::Ssh,
    node: &uphost::config::NodeSpec,
    spec: &uphost::transport::CommandSpec,
) -> Result<Vec<String>, TestCaseError> {
    use uphost::transport::Transport;
    let out = rt
        .block_on(ssh.exec(node, spec))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        out.status,
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut words: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    words.pop(); // after the last NUL
    Ok(words)
}

#[test]
fn random_argv_arrives_exactly_over_ssh() {
    use uphost::transport::CommandSpec;
    let (rt, _sshds, ssh, node) = roundtrip_runtime();
    let script = r#"for a; do printf '%s\0' "$a"; done"#;
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 64,
        ..Default::default()
    });
    let strategy = proptest::collection::vec("[ -~\t\n'\"$;`\\\\|&<>()*?~é€\u{1F600}]{0,16}", 0..6);
    let t = Instant::now();
    runner
        .run(&strategy, |args| {
            let mut argv = vec!["-c".to_string(), script.to_string(), "sh".to_string()];
            argv.extend(args.iter().cloned());
            let spec = CommandSpec {
                program: "sh".into(),
                args: argv,
                stdin: None,
                env: vec![],
                timeout: Duration::from_secs(20),
                output_cap: 1 << 20,
                record: None,
                node_record: None,
            };
            let got = nul_words(&rt, &ssh, &node, &spec)?;
            prop_assert_eq!(&got[..], &args[..]);
            Ok(())
        })
        .unwrap();
    eprintln!(
        "64 argv round-trips over one multiplexed connection in {:?}",
        t.elapsed()
    );
}

/// Program and environment names as the grant lets them through: every
/// random program name the host accepts (`check_program`) runs over ssh as
/// exactly that program, never as an assignment or shell syntax, and every
/// accepted environment name arrives with its value exactly; every name
/// the host refuses is refused before anything is sent.
#[test]
fn random_program_and_env_names_arrive_exactly_over_ssh() {
    use uphost::capabilities::{check_env_name, check_program};
    use uphost::transport::CommandSpec;
    let (rt, _sshds, ssh, node) = roundtrip_runtime();
    // A directory whose path is itself a clean one (tempdir's `.tmp…` is
    // not: a segment starting with `.` is refused).
    let dir = tempfile::Builder::new()
        .prefix("uphost-names-")
        .tempdir()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 128,
        ..Default::default()
    });
    // Half plain names, half anything (quotes, `=`, shell syntax).
    let name = prop_oneof!["[A-Za-z0-9._+-]{1,12}", "[A-Za-z0-9._+=$;|*?'\" -]{1,12}"];
    let env_name = prop_oneof!["[A-Za-z_][A-Za-z0-9_]{0,7}", "[A-Za-z0-9_=$ -]{1,8}"];
    let strategy = (
        name,
        proptest::collection::vec((env_name, "[ -~\n'\"$;`\\|&é]{0,12}"), 0..3),
        proptest::collection::vec("[ -~'\"$;`\\|&]{0,10}", 0..3),
    );
    let (accepted, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner
        .run(&strategy, |(prog, env, args)| {
            let program = format!("{}/{prog}", dir.path().display());
            let env_ok = env.iter().all(|(k, _)| check_env_name(k).is_ok());
            if check_program(&program).is_err() || !env_ok {
                // Refused by the host before any transport sees it.
                refused.set(refused.get() + 1);
                let grant = uphost::capabilities::Grant {
                    commands: vec![uphost::capabilities::CommandCap {
                        program: program.clone(),
                        args: vec!["...".into()],
                        access: uphost::capabilities::Access::ReadOnly,
                        env: env.iter().map(|(k, _)| k.clone()).collect(),
                        reason: String::new(),
                    }],
                };
                if !env_ok {
                    prop_assert!(grant.check(&program, &args, &env).is_err());
                }
                return Ok(());
            }
            accepted.set(accepted.get() + 1);
            // The program prints its name, arguments and each variable.
            let mut script = String::from("#!/bin/sh\nprintf '%s\\0' \"$0\" \"$@\"\n");
            for (k, _) in &env {
                script.push_str(&format!("printf '%s\\0' \"${{{k}}}\"\n"));
            }
            std::fs::write(&program, script).unwrap();
            std::fs::set_permissions(
                &program,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            let spec = CommandSpec {
                program: program.clone(),
                args: args.clone(),
                stdin: None,
                env: env.clone(),
                timeout: Duration::from_secs(20),
                output_cap: 1 << 20,
                record: None,
                node_record: None,
            };
            let got = nul_words(&rt, &ssh, &node, &spec);
            let _ = std::fs::remove_file(&program);
            let got = got?;
            let mut want = vec![program.clone()];
            want.extend(args.iter().cloned());
            // The last of several assignments to one name wins, as in env(1).
            for (k, _) in &env {
                let v = env
                    .iter()
                    .rev()
                    .find(|(k2, _)| k2 == k)
                    .map(|(_, v)| v.clone());
                want.push(v.unwrap_or_default());
            }
            prop_assert_eq!(&got[..], &want[..]);
            Ok(())
        })
        .unwrap();
    let (accepted, refused) = (accepted.get(), refused.get());
    eprintln!("{accepted} accepted names ran exactly; {refused} refused names never left the host");
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

/// Benchmark (run by `cargo xtask bench ssh`, ignored by `cargo test`):
/// per-command cost over the multiplexed connection, against a fresh ssh
/// connection per command and against `ansible -m command` over ssh to the
/// same test host. Prints numbers; asserts nothing about time.
#[test]
#[ignore = "benchmark: cargo xtask bench ssh"]
fn ssh_overhead_benchmark() {
    use uphost::transport::{CommandSpec, Transport};
    let (rt, sshds, ssh, node) = roundtrip_runtime();
    let spec = CommandSpec {
        program: "true".into(),
        args: vec![],
        stdin: None,
        env: vec![],
        timeout: Duration::from_secs(20),
        output_cap: 1 << 20,
        record: None,
        node_record: None,
    };
    rt.block_on(ssh.exec(&node, &spec)).unwrap(); // opens the master
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        let o = rt.block_on(ssh.exec(&node, &spec)).unwrap();
        assert_eq!(o.status, 0);
    }
    let mux_ms = t.elapsed().as_secs_f64() * 1e3 / n as f64;
    let port = sshds.port("n1").to_string();
    let cfg = sshds.ssh_config();
    // The floor: the same command through the same master with a bare
    // `ssh -S` (the master uphost opened), alternated with uphost's own in
    // rounds.
    let socket = ssh.control_path(&node);
    assert!(socket.exists(), "the master's socket {}", socket.display());
    let bare = || {
        let st = std::process::Command::new("ssh")
            .arg("-F")
            .arg(&cfg)
            .arg("-S")
            .arg(&socket)
            .args(["-o", "ControlMaster=no", "-o", "BatchMode=yes", "-p", &port])
            .arg(sshds.address("n1"))
            .arg("true")
            .status()
            .unwrap();
        assert!(st.success());
    };
    let (mut ours, mut floor) = (Duration::ZERO, Duration::ZERO);
    let rounds = 200;
    for _ in 0..rounds {
        let t = Instant::now();
        bare();
        floor += t.elapsed();
        let t = Instant::now();
        let o = rt.block_on(ssh.exec(&node, &spec)).unwrap();
        assert_eq!(o.status, 0);
        ours += t.elapsed();
    }
    let floor_ms = floor.as_secs_f64() * 1e3 / rounds as f64;
    let ours_ms = ours.as_secs_f64() * 1e3 / rounds as f64;
    let m = 20;
    let t = Instant::now();
    for _ in 0..m {
        let st = std::process::Command::new("ssh")
            .arg("-F")
            .arg(&cfg)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "ControlMaster=no",
                "-o",
                "ControlPath=none",
                "-p",
                &port,
                sshds.address("n1"),
                "true",
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let fresh_ms = t.elapsed().as_secs_f64() * 1e3 / m as f64;
    let ansible = uphost_tests::root().join("target/bench-venv/bin/ansible");
    let ansible_ms = if ansible.exists() {
        let inv = sshds.dir.path().join("ansible-inv.yaml");
        std::fs::write(
            &inv,
            format!(
                "all:\n  hosts:\n    n1:\n      ansible_host: {}\n      ansible_port: {port}\n      ansible_user: root\n      ansible_ssh_private_key_file: {}\n      ansible_ssh_common_args: \"-F {}\"\n      ansible_python_interpreter: /usr/bin/python3\n",
                sshds.address("n1"),
                sshds.dir.path().join("id").display(),
                cfg.display()
            ),
        )
        .unwrap();
        let k = 10;
        let t = Instant::now();
        for _ in 0..k {
            let o = std::process::Command::new(&ansible)
                .arg("all")
                .arg("-i")
                .arg(&inv)
                .args(["-m", "command", "-a", "true"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        }
        Some(t.elapsed().as_secs_f64() * 1e3 / k as f64)
    } else {
        None
    };
    println!(
        "ssh per-command: uphost multiplexed {mux_ms:.2} ms, plain ssh (new connection each) {fresh_ms:.2} ms, ansible -m command {}",
        ansible_ms
            .map(|a| format!("{a:.0} ms"))
            .unwrap_or_else(|| "n/a (run cargo xtask bench ansible first)".into())
    );
    println!(
        "ssh floor: bare `ssh -S` through the same master {floor_ms:.2} ms, uphost alternated with it {ours_ms:.2} ms: {:.2}x the floor",
        ours_ms / floor_ms
    );
    println!(
        "RESULT ssh_mux_ms={mux_ms:.2} ssh_fresh_ms={fresh_ms:.2} ssh_floor_ms={floor_ms:.2} ssh_alternated_ms={ours_ms:.2} ansible_command_ms={}",
        ansible_ms.map(|a| format!("{a:.0}")).unwrap_or_default()
    );
}

/// What one process of the control host holds, read from /proc.
#[derive(Default, Clone, Copy)]
struct Held {
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

fn held(pid: i32) -> Option<Held> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Some(Held {
        rss_kib: field("VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
        threads: field("Threads:"),
    })
}

/// The ssh processes of uphost `pid` (those naming its control
/// directory): (masters, clients), each with what it holds.
fn ssh_of(pid: u32) -> (Vec<Held>, Vec<Held>) {
    let mark = format!("uphost-ssh-{pid}-");
    let (mut masters, mut clients) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{p}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if !cmd.contains(&mark) {
            continue;
        }
        let Some(h) = held(p) else { continue };
        // A master renames itself `ssh: <socket> [mux]`.
        if cmd.starts_with("ssh: ") && cmd.contains("[mux]") {
            masters.push(h);
        } else {
            clients.push(h);
        }
    }
    (masters, clients)
}

/// 50 sshd hosts, each in its own network namespace, driven at forks 50:
/// the control host's cost per node (processes, file descriptors, memory
/// of the ssh masters and of uphost) and the run's time, sampled every
/// 20 ms. `cargo test --release -p uphost-tests --test ssh -- --ignored
/// fifty_hosts --nocapture` (after `cargo xtask build`).
#[test]
#[ignore = "a benchmark: BENCHMARKS.md, fifty hosts at forks 50"]
fn fifty_hosts_at_forks_50_benchmark() {
    let n = 50;
    let names: Vec<String> = (0..n).map(|i| format!("n{i:02}")).collect();
    let nodes: Vec<(&str, Option<&std::path::Path>)> =
        names.iter().map(|x| (x.as_str(), None)).collect();
    let sshds = Sshds::start(&nodes);
    assert!(
        sshds.namespaces().len() == n,
        "the hosts need network namespaces (root and iproute2)"
    );
    let site = Site::new();
    site.plugin(&uphost_tests::wasm("fixture-bench-true"), "bench-true");
    let d = site.path();
    let m = 5;
    let mut inv = String::from("all:\n  children:\n    bench:\n      hosts:\n");
    for x in &names {
        inv.push_str(&format!(
            "        {x}: {{ansible_host: {}, ansible_port: {}, ansible_user: root, ansible_connection: ssh}}\n",
            sshds.address(x),
            sshds.port(x)
        ));
    }
    site.write("inventory.yaml", &inv)
        .write(
            "services.yaml",
            &format!(
                "services:\n  bench-true:\n    roles: [bench]\n    params: {{steps: \"{m}\"}}\n"
            ),
        )
        .config(&format!(
            "forks: 50\ncache_dir: cache/\nssh:\n  config: {}\n",
            sshds.ssh_config().display()
        ))
        .approve();
    #[derive(Default)]
    struct Peak {
        wall: Duration,
        masters: usize,
        clients: usize,
        master_rss_kib: u64,
        master_fds: usize,
        uphost: Held,
    }
    let once = || -> Peak {
        let _ = std::fs::remove_dir_all(d.join("state/runs"));
        let t = Instant::now();
        let mut child = std::process::Command::new(uphost_bin())
            .current_dir(d)
            .args(["-q", "run", "--yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut peak = Peak::default();
        loop {
            if let Some(h) = held(pid as i32) {
                peak.uphost.rss_kib = peak.uphost.rss_kib.max(h.rss_kib);
                peak.uphost.fds = peak.uphost.fds.max(h.fds);
                peak.uphost.threads = peak.uphost.threads.max(h.threads);
            }
            let (masters, clients) = ssh_of(pid);
            if masters.len() >= peak.masters {
                peak.masters = masters.len();
                peak.master_rss_kib = masters.iter().map(|h| h.rss_kib).sum();
                peak.master_fds = masters.iter().map(|h| h.fds).sum();
            }
            peak.clients = peak.clients.max(clients.len());
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak.wall = t.elapsed();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        peak
    };
    once(); // compiles the plugin into its cache
    let runs: Vec<Peak> = (0..3).map(|_| once()).collect();
    let mut walls: Vec<Duration> = runs.iter().map(|p| p.wall).collect();
    walls.sort();
    let p = runs.iter().max_by_key(|p| p.masters).expect("three runs");
    assert_eq!(p.masters, n, "one master per host at the peak");
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let uphost_fds_per_node = p.uphost.fds as f64 / n as f64;
    println!(
        "{n} hosts (network namespaces) x {m} commands, forks 50: run {:.2?} (median of 3; {:.2?}..{:.2?})",
        walls[1], walls[0], walls[2]
    );
    println!(
        "  ssh masters at the peak: {} ({} KiB RSS in all, {:.0} KiB each; {} fds in all, {:.1} each); mux clients at once, at most: {}",
        p.masters,
        p.master_rss_kib,
        p.master_rss_kib as f64 / p.masters as f64,
        p.master_fds,
        p.master_fds as f64 / p.masters as f64,
        p.clients
    );
    println!(
        "  uphost itself at the peak: {} KiB RSS, {} fds ({uphost_fds_per_node:.1} per node), {} threads",
        p.uphost.rss_kib, p.uphost.fds, p.uphost.threads
    );
    println!(
        "  processes on the control host per node driven: 1 master + up to 1 client per command in flight; uphost's open-files limit here ({nofile}) allows ≈ {:.0} nodes at once at this fd cost",
        nofile as f64 / uphost_fds_per_node.max(0.01)
    );
    println!(
        "RESULT fifty_run_ms={:.0} masters={} master_rss_kib_each={:.0} master_fds_each={:.1} uphost_rss_kib={} uphost_fds={} clients_peak={}",
        walls[1].as_secs_f64() * 1e3,
        p.masters,
        p.master_rss_kib as f64 / p.masters as f64,
        p.master_fds as f64 / p.masters as f64,
        p.uphost.rss_kib,
        p.uphost.fds,
        p.clients
    );
}

/// Two inventory nodes on one sshd that differ only in their key get a
/// master connection each: the node whose key the host refuses is refused,
/// even after the other node's master is up (OpenSSH's `%C` would have
/// shared it, running one node's commands under the other's key).
#[test]
fn nodes_that_differ_only_in_key_get_a_master_each() {
    use uphost::transport::{ConnectionFailure, Transport, TransportError};
    let (rt, sshds, ssh, node) = roundtrip_runtime();
    let d = sshds.dir.path();
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("id2"))
        .status()
        .unwrap();
    assert!(st.success());
    // Only the second key is let in; the config's own key is not.
    std::fs::copy(d.join("id2.pub"), d.join("authorized_keys")).unwrap();
    let mut keyed = node.clone();
    keyed.name = "keyed".into();
    keyed.key_file = Some(d.join("id2"));
    let mut keyless = node.clone();
    keyless.name = "keyless".into();
    keyless.key_file = None;
    let spec = uphost::transport::CommandSpec {
        program: "echo".into(),
        args: vec!["in".into()],
        stdin: None,
        env: vec![],
        timeout: Duration::from_secs(20),
        output_cap: 1 << 16,
        record: None,
        node_record: None,
    };
    let out = rt
        .block_on(ssh.exec(&keyed, &spec))
        .expect("the keyed node is let in");
    assert_eq!(out.stdout, b"in\n");
    match rt.block_on(ssh.exec(&keyless, &spec)) {
        Err(TransportError::Unreachable { kind, .. }) => {
            assert_eq!(kind, ConnectionFailure::AuthenticationFailed)
        }
        other => panic!("the keyless node rode the keyed node's master: {other:?}"),
    }
    ssh.close();
}

/// A login user for the become test: unlocked (sshd refuses a locked
/// account without PAM), with a shell, and the given sudoers rule.
fn become_user(name: &str, sudoers: &str) {
    if !std::process::Command::new("id")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let st = std::process::Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", name])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
    }
    let st = std::process::Command::new("usermod")
        .args(["-p", "*", name])
        .status()
        .expect("usermod");
    assert!(st.success());
    std::fs::write(format!("/etc/sudoers.d/{name}"), format!("{sudoers}\n")).unwrap();
}

/// become through the real binary, over real sshd as a non-root user and
/// locally: `ansible_become` runs every command (read-only in check,
/// mutating in upgrade) through `sudo -n` as `ansible_become_user`; a
/// login whose sudo wants a password fails at once, saying what to do.
#[test]
fn become_runs_commands_as_the_inventory_says() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        uphost_tests::packages::present("sudo"),
        "sudo is not installed: `cargo xtask test` installs Debian's sudo"
    );
    become_user("uphost-nopw", "uphost-nopw ALL=(ALL) NOPASSWD: ALL");
    become_user("uphost-pw", "uphost-pw ALL=(ALL) ALL");
    let sshds = Sshds::start(&[("n1", None), ("n2", None)]);
    // The users read the shared authorized_keys.
    let sd = sshds.dir.path();
    std::fs::set_permissions(sd, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        sd.join("authorized_keys"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let site = Site::new();
    site.plugin(&uphost_tests::wasm("fixture-whoami"), "whoami")
        // An INI inventory, as Ansible's `hosts` file.
        .write(
            "uphost.yaml",
            &format!(
                "plugins: plugins/\ninventory: hosts\nservices: services.yaml\nstate_dir: state/\nssh:\n  config: {}\n  connect_timeout_s: 5\n",
                sshds.ssh_config().display()
            ),
        );
    let p = site.path();
    let inventory = |n1_user: &str| {
        format!(
            "[g]\nn1 ansible_host={} ansible_port={} ansible_user={n1_user} ansible_become=true\nn2 ansible_host={} ansible_port={} ansible_user=uphost-nopw\nloc ansible_connection=local ansible_become=yes ansible_become_user=nobody\n",
            sshds.address("n1"),
            sshds.port("n1"),
            sshds.address("n2"),
            sshds.port("n2"),
        )
    };
    site.write("hosts", &inventory("uphost-nopw"))
        .write(
            "services.yaml",
            "services:\n  whoami:\n    roles: [g]\n    params:\n      user_n1: root\n      user_n2: uphost-nopw\n      user_loc: nobody\n",
        )
        .approve();
    let r = uphost_tests::uphost_in(p, &["inventory"]);
    assert!(r.stdout.contains("become root (sudo -n)"), "{}", r.all());
    let r = uphost_tests::uphost_in(p, &["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let log = serde_json::Value::from(uphost_tests::current_journal(p)).to_string();
    for line in [
        "n1 runs commands as root",
        "n2 runs commands as uphost-nopw",
        "loc runs commands as nobody",
    ] {
        assert!(log.contains(line), "`{line}` not in the journal");
    }
    // A login whose sudo needs a password: refused at once, not a hang.
    std::fs::write(p.join("hosts"), inventory("uphost-pw")).unwrap();
    let t = Instant::now();
    let r = uphost_tests::uphost_in(p, &["run", "--yes"]);
    assert_ne!(r.code, 0, "{}", r.all());
    for n in [
        "become root was refused",
        "a password is required",
        "NOPASSWD",
        "n1",
    ] {
        assert!(r.all().contains(n), "`{n}` not in {}", r.all());
    }
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}

fn reboots_of(d: &Demo, node: &str) -> usize {
    std::fs::read_to_string(d.path().join(format!("nodes/{node}/reboots.log")))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Wait until `node` asked for its `n`th reboot (the simulator logs it).
fn wait_reboot(d: &Demo, node: &str, n: usize) {
    let t = Instant::now();
    while reboots_of(d, node) < n {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{node} was never rebooted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The host OS stage over real sshd: each compute's reboot takes its sshd
/// down (the test kills it, sessions and all, and starts it again 2 s
/// later); uphost waits, connects anew and goes on. A SIGKILL of uphost
/// while cmp1 is away: `resume` waits for cmp1 instead of rebooting it
/// again.
#[test]
fn a_reboot_over_real_sshd_is_waited_for_and_a_sigkill_during_it_resumes_without_a_second() {
    let d = Demo::of("minor", "newton", &["host-os"], false);
    let names = ["cmp1", "cmp2"];
    let mut sshds = Sshds::for_nodes(&d, &names);
    for n in names {
        // The simulator answers nothing (exit 255) while the node is away.
        std::fs::write(d.path().join(format!("nodes/{n}/reboot-ms")), "2500").unwrap();
    }
    over_ssh(
        &d,
        &sshds,
        "compute",
        "",
        "mode: minor-update\norder: node-major\nservices:\n  host-os:\n    roles: [compute]\n    from_version: \"7.2\"\n    to_version: \"7.4\"\n    params: {packages: kernel, stop_units: nova-compute}\n",
    );
    let mut child = std::process::Command::new(uphost_bin())
        .current_dir(d.path())
        .args(["run", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // cmp1 goes away; uphost is killed while it waits.
    wait_reboot(&d, "cmp1", 1);
    sshds.kill("cmp1");
    std::thread::sleep(Duration::from_millis(500));
    uphost_tests::sshd::kill_uphost(&mut child);
    std::thread::sleep(Duration::from_secs(2));
    sshds.up("cmp1");
    let resume = std::process::Command::new(uphost_bin())
        .current_dir(d.path())
        .args(["resume", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // cmp2 goes away under the resumed run, and comes back.
    wait_reboot(&d, "cmp2", 1);
    sshds.kill("cmp2");
    std::thread::sleep(Duration::from_secs(2));
    sshds.up("cmp2");
    let out = resume.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(reboots_of(&d, "cmp1"), 1, "cmp1 was rebooted twice");
    assert_eq!(reboots_of(&d, "cmp2"), 1);
    let back: Vec<String> = d
        .journal()
        .iter()
        .filter(|e| e["event"] == "command-finished" && e["argv"][0] == "uphost:reboot")
        .filter_map(|e| e["result"]["stdout"].as_str().map(String::from))
        .collect();
    assert_eq!(back.len(), 2, "{back:?}");
    assert!(back.iter().all(|s| s.contains("is back after")), "{back:?}");
    for n in names {
        assert!(
            d.ops(n).iter().any(|o| o == "systemctl start nova-compute"),
            "{n}: {:?}",
            d.ops(n)
        );
    }
    assert_eq!(d.status()["complete"], true);
}
