//! The run on etcd: three real etcd members (Debian's etcd-server) on
//! loopback ports, started and stopped here; the demo's controllers behind
//! real sshd test hosts. A primary uphost SIGKILLed at random points is
//! taken over by a standby that finishes the run, every mutating command
//! run exactly once; a primary frozen past its lease is fenced; a member
//! killed mid-run changes nothing; an unreachable etcd is a clear error;
//! a run moves between the local directory and etcd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uphost_tests::sshd::{Sshds, kill_uphost, ssh_demo};

use uphost_tests::{Demo, free_port, uphost_bin, uphost_in, wait_until};

/// A three-member etcd cluster on loopback.
struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

impl Etcd {
    fn start() -> Etcd {
        assert!(
            uphost_tests::packages::present("/usr/bin/etcd"),
            "Debian's etcd-server is not installed: `cargo xtask test` installs it (tests/debian-packages.txt)"
        );
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut e = Etcd { dir, members };
        for i in 0..3 {
            e.up(i);
        }
        e.wait_healthy();
        e
    }

    fn cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn up(&mut self, i: usize) {
        let cluster = self.cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let m = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-token", "uphost-test"])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        m.child = Some(child);
    }

    fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints().join(",")))
            .args(args)
            .output()
            .expect("etcdctl")
    }

    /// The member that leads now (from `etcdctl endpoint status`).
    fn leader(&self) -> usize {
        let o = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("endpoint status");
        let lead = v[0]["Status"]["leader"].as_u64().expect("a leader");
        let eps = self.endpoints();
        v.as_array()
            .unwrap()
            .iter()
            .find(|m| m["Status"]["header"]["member_id"].as_u64() == Some(lead))
            .and_then(|m| {
                eps.iter()
                    .position(|e| Some(e.as_str()) == m["Endpoint"].as_str())
            })
            .expect("the leader is one of the members")
    }

    fn wait_healthy(&self) {
        let t = Instant::now();
        loop {
            let o = self.etcdctl(&["endpoint", "health"]);
            if o.status.success() {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "etcd did not come up: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Keys under `prefix`.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let o = self.etcdctl(&["get", "--prefix", "--keys-only", prefix]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// Add `etcd:` to the uphost.yaml in `dir`.
fn use_etcd(dir: &Path, etcd: &Etcd, prefix: &str) {
    let p = dir.join("uphost.yaml");
    let cfg = std::fs::read_to_string(&p).unwrap();
    let eps: Vec<String> = etcd.endpoints();
    std::fs::write(
        &p,
        format!(
            "{cfg}etcd:\n  endpoints: [{}]\n  prefix: {prefix}\n  lease_s: 2\n",
            eps.join(", ")
        ),
    )
    .unwrap();
}

/// A second control machine for the same deployment: its own directory
/// with the same configuration and plugins (their lock with them), and its
/// own state.
fn other_machine(d: &Demo) -> tempfile::TempDir {
    let m = tempfile::tempdir().unwrap();
    for f in ["uphost.yaml", "inventory.yaml", "services.yaml"] {
        std::fs::copy(d.path().join(f), m.path().join(f)).unwrap();
    }
    std::fs::create_dir_all(m.path().join("plugins")).unwrap();
    for e in std::fs::read_dir(d.path().join("plugins"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), m.path().join("plugins").join(e.file_name())).unwrap();
    }
    m
}

fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(uphost_bin())
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start uphost")
}

fn finish(child: Child, within: Duration) -> (i32, String) {
    let t = Instant::now();
    let mut child = child;
    loop {
        if let Some(_st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.code().unwrap_or(-1),
                format!(
                    "{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
        if t.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "uphost did not finish within {within:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const NODES: [&str; 3] = ["ctl1", "ctl2", "ctl3"];

/// Every controller's mutating commands (counted) and state.
type Outcome = Vec<(String, std::collections::BTreeMap<String, usize>, String)>;

fn outcome(d: &Demo) -> Outcome {
    NODES
        .iter()
        .map(|n| {
            (
                n.to_string(),
                d.op_counts(n),
                std::fs::read_to_string(d.path().join("nodes").join(n).join("state.json"))
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// The demo's controllers over ssh, their run journaled on `etcd`.
fn demo_on(etcd: &Etcd, prefix: &str) -> (Demo, Sshds) {
    let (d, sshds) = ssh_demo();
    use_etcd(d.path(), etcd, prefix);
    (d, sshds)
}

/// The run's journal as etcd holds it, brought into `machine` by `uphost
/// state export` (which checks its checksum chain).
fn exported(machine: &Path) -> PathBuf {
    let r = uphost_in(machine, &["state", "export"]);
    assert_eq!(r.code, 0, "{}", r.all());
    uphost_tests::current_journal_path(machine)
}

#[test]
fn a_killed_primary_is_taken_over_by_the_standby_and_every_command_runs_once() {
    let etcd = Etcd::start();
    // The uninterrupted run, for reference.
    let (reference, _s) = demo_on(&etcd, "/uphost/reference");
    let r = reference.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let want = outcome(&reference);
    assert!(
        want.iter().all(|(_, ops, _)| !ops.is_empty()),
        "the reference run changed nothing: {want:?}"
    );
    let total: usize = want
        .iter()
        .map(|(_, ops, _)| ops.values().sum::<usize>())
        .sum();
    // Kill points spread over the run: after the k-th mutating command.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    let points = [
        1 + seed % (total / 3).max(1),
        total / 3 + seed % (total / 3).max(1),
        (2 * total / 3 + seed % (total / 3).max(1)).min(total - 1),
    ];
    for (i, after) in points.into_iter().enumerate() {
        let prefix = format!("/uphost/kill{i}");
        let (d, _sshds) = demo_on(&etcd, &prefix);
        let standby_machine = other_machine(&d);
        let standby = spawn(standby_machine.path(), &["standby", "--yes"]);
        let mut primary = spawn(d.path(), &["run", "--yes"]);
        let done = |d: &Demo| NODES.iter().map(|n| d.ops(n).len()).sum::<usize>();
        let t = Instant::now();
        while done(&d) < after && primary.try_wait().unwrap().is_none() {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "no {after} mutating commands within 120 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        kill_uphost(&mut primary);
        let (code, out) = finish(standby, Duration::from_secs(180));
        assert_eq!(code, 0, "kill after {after} commands: standby:\n{out}");
        assert!(
            out.contains("taking the run over"),
            "kill after {after}: {out}"
        );
        assert_eq!(
            outcome(&d),
            want,
            "kill after {after} of {total} commands: the nodes differ from an uninterrupted run's"
        );
        let status = uphost_in(standby_machine.path(), &["status", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        assert_eq!(v["complete"], true, "{}", status.all());
        // The journal on etcd is whole and checks out.
        let third = other_machine(&d);
        let j = exported(third.path());
        let theirs = std::fs::read(&j).unwrap();
        let standby_copy =
            std::fs::read(uphost_tests::current_journal_path(standby_machine.path())).unwrap();
        assert_eq!(
            theirs, standby_copy,
            "etcd's journal differs from the standby's"
        );
    }
}

#[test]
fn a_frozen_primary_is_fenced_and_writes_and_runs_nothing_after_its_lease() {
    let etcd = Etcd::start();
    let (reference, _s) = demo_on(&etcd, "/uphost/unfrozen");
    let r = reference.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let want = outcome(&reference);
    let (d, sshds) = demo_on(&etcd, "/uphost/frozen");
    // Slow enough that the primary is frozen in the middle of a command,
    // which the standby then finds running on the node and waits for.
    d.slow("ctl2", &["apt-get", "install"], 4.0);
    let standby_machine = other_machine(&d);
    let standby = spawn(standby_machine.path(), &["standby", "--yes"]);
    let primary = spawn(d.path(), &["run", "--yes"]);
    wait_until(
        "a slow command running on ctl2",
        Duration::from_secs(120),
        || sshds.runs("ctl2", "apt-get install"),
    );
    let pid = rustix::process::Pid::from_raw(primary.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let (code, out) = finish(standby, Duration::from_secs(240));
    assert_eq!(code, 0, "standby:\n{out}");
    assert!(out.contains("taking the run over"), "{out}");
    let keys_after = etcd.keys("/uphost/frozen/");
    let ops_after = outcome(&d);
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let (pcode, pout) = finish(primary, Duration::from_secs(60));
    assert_ne!(pcode, 0, "the fenced primary reported success:\n{pout}");
    assert!(
        pout.contains("fenced") || pout.contains("lease"),
        "the primary does not say it lost the lock:\n{pout}"
    );
    // After it woke: not one record more on etcd, not one command more.
    assert_eq!(etcd.keys("/uphost/frozen/"), keys_after);
    assert_eq!(outcome(&d), ops_after);
    // And the nodes are as an uninterrupted run leaves them.
    assert_eq!(ops_after, want);
}

#[test]
fn a_command_whose_outcome_cannot_be_known_stops_the_takeover_with_what_to_do() {
    let etcd = Etcd::start();
    let (reference, _r) = demo_on(&etcd, "/uphost/known");
    assert_eq!(reference.uphost(&["run", "--yes"]).code, 0);
    let (d, sshds) = demo_on(&etcd, "/uphost/lost");
    d.slow("ctl2", &["apt-get", "install"], 60.0);
    let mut primary = spawn(d.path(), &["run", "--yes"]);
    wait_until(
        "a slow command running on ctl2",
        Duration::from_secs(120),
        || sshds.runs("ctl2", "apt-get install"),
    );
    kill_uphost(&mut primary);
    // The node loses the command with no status, as a reboot would: its
    // detached process group is killed.
    let run = std::fs::read_to_string(d.path().join("state/current")).unwrap();
    let records = PathBuf::from("/var/tmp/uphost/uphost_lost").join(run.trim());
    let unfinished = || -> Vec<PathBuf> {
        std::fs::read_dir(&records)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.join("rc").exists())
            .collect()
    };
    // Other commands were in flight when the primary died; detached on
    // their nodes, they finish (and write their status) a moment later.
    // Only the 60 s install stays without one.
    wait_until(
        "one command left without a status",
        Duration::from_secs(30),
        || unfinished().len() == 1,
    );
    let lost = unfinished();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].display().to_string().contains(".ctl2."), "{lost:?}");
    let pid: i32 = std::fs::read_to_string(lost[0].join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    d.heal("ctl2");
    let m = other_machine(&d);
    let (code, out) = finish(
        spawn(m.path(), &["standby", "--yes"]),
        Duration::from_secs(120),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("its outcome cannot be known"), "{out}");
    assert!(out.contains("Nothing was run"), "{out}");
    let dir = lost[0].display().to_string();
    assert!(out.contains(&format!("remove {dir}")), "{out}");
    // Nothing ran meanwhile: the nodes are as the primary left them.
    let before = outcome(&d);
    // The operator checks the node: the install did not happen, so the
    // record goes, and the run goes on from this machine.
    std::fs::remove_dir_all(&lost[0]).unwrap();
    let r = uphost_in(m.path(), &["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_ne!(outcome(&d), before);
    assert_eq!(outcome(&d), outcome(&reference));
}

#[test]
fn a_member_killed_mid_run_changes_nothing() {
    let mut etcd = Etcd::start();
    let (d, _sshds) = demo_on(&etcd, "/uphost/member");
    // The default lease, longer than the members' election: losing the
    // leader costs an election, which the lock outlives.
    d.edit("uphost.yaml", "lease_s: 2", "lease_s: 5");
    let primary = spawn(d.path(), &["run", "--yes"]);
    d.wait_for_op("ctl1", "systemctl stop", Duration::from_secs(60));
    etcd.kill(etcd.leader());
    let (code, out) = finish(primary, Duration::from_secs(180));
    assert_eq!(code, 0, "{out}");
    assert_eq!(d.status()["complete"], true);
    let third = other_machine(&d);
    let j = exported(third.path());
    assert_eq!(
        std::fs::read(&j).unwrap(),
        std::fs::read(uphost_tests::current_journal_path(d.path())).unwrap()
    );
}

#[test]
fn an_unreachable_etcd_is_a_clear_error_and_nothing_runs() {
    let d = Demo::new(&["haproxy"], true);
    let port = free_port();
    let cfg = std::fs::read_to_string(d.path().join("uphost.yaml")).unwrap();
    std::fs::write(
        d.path().join("uphost.yaml"),
        format!(
            "{cfg}etcd:\n  endpoints: [http://127.0.0.1:{port}]\n  prefix: /uphost/none\n  connect_timeout_s: 1\n"
        ),
    )
    .unwrap();
    let before = d.cluster_state();
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains(&format!("etcd is unreachable at http://127.0.0.1:{port}")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was run"), "{}", r.stderr);
    assert_eq!(d.cluster_state(), before);
    assert!(!d.path().join("state/current").exists());
    // And a standby says the same.
    let r = d.uphost(&["standby", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("etcd is unreachable"), "{}", r.stderr);
    // A bad `etcd:` is refused where it is written.
    d.edit("uphost.yaml", "prefix: /uphost/none", "prefix: uphost");
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("etcd.prefix"), "{}", r.stderr);
}

#[test]
fn a_run_moves_from_the_local_directory_to_etcd_and_back() {
    let etcd = Etcd::start();
    let d = Demo::new(&["haproxy", "galera"], true);
    d.fault("ctl2", &["apt-get"], "boom");
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    d.heal("ctl2");
    let local = std::fs::read(uphost_tests::current_journal_path(d.path())).unwrap();
    use_etcd(d.path(), &etcd, "/uphost/moved");
    // Not there yet: resume says how to bring it.
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("uphost state import"), "{}", r.stderr);
    let r = d.uphost(&["state", "import"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // Twice is refused.
    let r = d.uphost(&["state", "import"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("already on etcd"), "{}", r.stderr);
    // Another machine sees it, byte for byte.
    let m = other_machine(&d);
    let j = exported(m.path());
    assert_eq!(std::fs::read(&j).unwrap(), local);
    // And it goes on on etcd.
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(d.status()["complete"], true);
    let j = exported(m.path());
    assert_eq!(
        std::fs::read(&j).unwrap(),
        std::fs::read(uphost_tests::current_journal_path(d.path())).unwrap()
    );
}

/// `cargo xtask bench etcd`: what the journal on etcd costs per record
/// (the demo run, local nodes, with and without `etcd:`, alternated, the
/// difference over the records journaled), and how long a standby takes
/// to take over after its primary is SIGKILLed (lease 2 s; the demo's
/// controllers over ssh).
#[test]
#[ignore = "a benchmark: cargo xtask bench etcd"]
fn etcd_benchmark() {
    let etcd = Etcd::start();
    let mut times = [Vec::new(), Vec::new()];
    let mut records = 0usize;
    for i in 0..10 {
        let with = i % 2;
        let d = Demo::new(
            &[
                "galera",
                "rabbitmq",
                "haproxy",
                "keystone",
                "placement",
                "nova",
                "neutron",
            ],
            true,
        );
        if with == 1 {
            use_etcd(d.path(), &etcd, &format!("/uphost/bench{i}"));
        }
        let t = Instant::now();
        let r = d.uphost(&["-q", "run", "--yes"]);
        times[with].push(t.elapsed());
        assert_eq!(r.code, 0, "{}", r.all());
        records = d.journal().len();
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (local, on_etcd) = (median(&mut times[0]), median(&mut times[1]));
    let per_record_us = (on_etcd.as_secs_f64() - local.as_secs_f64()) * 1e6 / records as f64;
    // Takeover: from the SIGKILL to the standby's first record on etcd.
    let mut takeovers = Vec::new();
    for i in 0..3 {
        let prefix = format!("/uphost/takeover{i}");
        let (d, _sshds) = demo_on(&etcd, &prefix);
        let m = other_machine(&d);
        let standby = spawn(m.path(), &["standby", "--yes"]);
        let mut primary = spawn(d.path(), &["run", "--yes"]);
        d.wait_for_op("ctl1", "apt-get", Duration::from_secs(60));
        let t = Instant::now();
        kill_uphost(&mut primary);
        // Dead now: whatever is on etcd is the primary's.
        let before = etcd.keys(&format!("{prefix}/runs/")).len();
        wait_until(
            "the standby's first record",
            Duration::from_secs(30),
            || etcd.keys(&format!("{prefix}/runs/")).len() > before,
        );
        takeovers.push(t.elapsed());
        let (code, out) = finish(standby, Duration::from_secs(120));
        assert_eq!(code, 0, "{out}");
    }
    let takeover = median(&mut takeovers);
    println!(
        "RESULT etcd_records={records} etcd_run_local_ms={} etcd_run_etcd_ms={} etcd_record_us={per_record_us:.0} etcd_takeover_ms={} etcd_lease_s=2",
        local.as_millis(),
        on_etcd.as_millis(),
        takeover.as_millis()
    );
}
