//! Real sshd test hosts owned by the test: each in its own network
//! namespace with a veth pair and its own address (`ip netns`, made and
//! removed here) when the test runs as root with iproute2, else on distinct
//! loopback ports. Generated host and client keys in a temporary directory,
//! nothing written to ~/.ssh.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One sshd test host.
pub struct Host {
    /// Where it listens.
    pub address: String,
    /// Its port.
    pub port: u16,
    /// Its sshd_config.
    pub config: PathBuf,
    /// Its network namespace (None: loopback mode).
    pub netns: Option<String>,
    /// The running daemon.
    pub child: Option<Child>,
}

/// A set of sshd hosts.
pub struct Sshds {
    /// Keys, configs, known_hosts.
    pub dir: tempfile::TempDir,
    /// Node name → host.
    pub hosts: BTreeMap<String, Host>,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Hosts made by this process so far (names and subnets stay distinct when
/// tests of one binary run in parallel).
static MADE: AtomicU32 = AtomicU32::new(0);

/// A network namespace `uphost-<pid>-<n>` joined to this one by a veth
/// pair, 10.<a>.<b>.1 here and 10.<a>.<b>.2 inside; its address, or None
/// when namespaces cannot be made here (not root, no iproute2).
fn make_netns() -> Option<(String, String)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let ns = format!("uphost-{pid}-{n}");
    let (host_if, ns_if) = (
        format!("uh{}h{n}", pid % 100_000),
        format!("uh{}n{n}", pid % 100_000),
    );
    let (a, b) = (200 + pid % 50, n % 250);
    let (here, there) = (format!("10.{a}.{b}.1/30"), format!("10.{a}.{b}.2/30"));
    let ok = ip(&["netns", "add", &ns])
        && ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])
        && ip(&["link", "set", &ns_if, "netns", &ns])
        && ip(&["addr", "add", &here, "dev", &host_if])
        && ip(&["link", "set", &host_if, "up"])
        && ip(&["-n", &ns, "addr", "add", &there, "dev", &ns_if])
        && ip(&["-n", &ns, "link", "set", &ns_if, "up"])
        && ip(&["-n", &ns, "link", "set", "lo", "up"]);
    if !ok {
        let _ = ip(&["link", "del", &host_if]);
        let _ = ip(&["netns", "del", &ns]);
        return None;
    }
    Some((ns, format!("10.{a}.{b}.2")))
}

fn sshd_bin() -> PathBuf {
    for p in ["/usr/sbin/sshd", "/usr/bin/sshd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("sshd is not installed: `cargo xtask test` installs Debian's openssh-server");
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every descendant of `pid` (via /proc).
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent: Vec<(i32, i32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let ppid: i32 = after
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        parent.push((p, ppid));
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(x) = frontier.pop() {
        for (c, pp) in &parent {
            if *pp == x {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

impl Sshds {
    /// Start one sshd per `(name, node_root)`; `node_root` (if any) is put
    /// first on the sessions' PATH and exported as UPHOST_NODE_ROOT.
    pub fn start(nodes: &[(&str, Option<&Path>)]) -> Sshds {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all("/run/sshd").ok();
        keygen(&d.join("host_key"));
        keygen(&d.join("id"));
        std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut known = String::new();
        let mut hosts = BTreeMap::new();
        for (name, root) in nodes {
            let (netns, address, port) = match make_netns() {
                Some((ns, addr)) => (Some(ns), addr, 22),
                None => (None, "127.0.0.1".to_string(), free_port()),
            };
            if port == 22 {
                known.push_str(&format!("{address} {host_pub}"));
            } else {
                known.push_str(&format!("[{address}]:{port} {host_pub}"));
            }
            let mut cfg = format!(
                "Port {port}\nListenAddress {address}\nHostKey {d}/host_key\nPidFile {d}/{name}.pid\nAuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin yes\nMaxSessions 64\nMaxStartups 64\n",
                d = d.display()
            );
            // SHLVL=1 keeps bash from sourcing the account's ~/.bashrc for
            // ssh commands (a test host must not depend on it).
            match root {
                Some(r) => cfg.push_str(&format!(
                    "SetEnv SHLVL=1 PATH={r}/bin:/usr/local/bin:/usr/bin:/bin UPHOST_NODE_ROOT={r} UPHOST_NODE={name}\n",
                    r = r.display()
                )),
                None => cfg.push_str("SetEnv SHLVL=1 PATH=/usr/local/bin:/usr/bin:/bin\n"),
            }
            let config = d.join(format!("sshd_{name}.conf"));
            std::fs::write(&config, cfg).unwrap();
            hosts.insert(
                name.to_string(),
                Host {
                    address,
                    port,
                    config,
                    netns,
                    child: None,
                },
            );
        }
        std::fs::write(d.join("known_hosts"), known).unwrap();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host *\n  UserKnownHostsFile {d}/known_hosts\n  IdentityFile {d}/id\n  IdentitiesOnly yes\n  User root\n",
                d = d.display()
            ),
        )
        .unwrap();
        let mut s = Sshds { dir, hosts };
        let names: Vec<String> = s.hosts.keys().cloned().collect();
        for n in names {
            s.up(&n);
        }
        s
    }

    /// One sshd per node `names` of the demo copy `d`, serving its
    /// simulated node.
    pub fn for_nodes(d: &crate::Demo, names: &[&str]) -> Sshds {
        let roots: Vec<(String, PathBuf)> = names
            .iter()
            .map(|n| (n.to_string(), d.path().join("nodes").join(n)))
            .collect();
        let spec: Vec<(&str, Option<&Path>)> = roots
            .iter()
            .map(|(n, r)| (n.as_str(), Some(r.as_path())))
            .collect();
        Sshds::start(&spec)
    }

    /// The client config (`ssh -F`).
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// The port of a node.
    pub fn port(&self, name: &str) -> u16 {
        self.hosts[name].port
    }

    /// The address of a node.
    pub fn address(&self, name: &str) -> &str {
        &self.hosts[name].address
    }

    /// The network namespaces of these hosts (empty in loopback mode).
    pub fn namespaces(&self) -> Vec<String> {
        self.hosts
            .values()
            .filter_map(|h| h.netns.clone())
            .collect()
    }

    /// Start (or restart) a node's sshd and wait until it accepts.
    pub fn up(&mut self, name: &str) {
        let h = self.hosts.get_mut(name).unwrap();
        let mut c = match &h.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(sshd_bin());
                c
            }
            None => Command::new(sshd_bin()),
        };
        let c = c
            .args(["-D", "-e", "-f"])
            .arg(&h.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        h.child = Some(c);
        let t = Instant::now();
        while TcpStream::connect((h.address.as_str(), h.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "sshd for {name} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill a node's sessions (the per-connection sshd processes and what
    /// they run) but not its listener: connections drop, new ones work.
    pub fn drop_sessions(&mut self, name: &str) {
        if let Some(c) = &self.hosts[name].child {
            for p in descendants(c.id() as i32) {
                if let Some(p) = rustix::process::Pid::from_raw(p) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
        }
    }

    /// Does a node's sshd run a process whose command line contains
    /// `needle` (a command started over ssh)?
    pub fn runs(&self, name: &str, needle: &str) -> bool {
        self.hosts[name].child.as_ref().is_some_and(|c| {
            descendants(c.id() as i32).into_iter().any(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .replace('\0', " ")
                            .contains(needle)
                    })
                    .unwrap_or(false)
            })
        })
    }

    /// Kill a node's sshd and every session it serves.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut c) = self.hosts.get_mut(name).unwrap().child.take() {
            let pid = c.id() as i32;
            for p in descendants(pid).into_iter().chain([pid]) {
                if let Some(p) = rustix::process::Pid::from_raw(p) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Sshds {
    fn drop(&mut self) {
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        for n in names {
            self.kill(&n);
        }
        // Deleting a namespace deletes its end of the veth pair, and with
        // it the pair.
        for ns in self.namespaces() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// The demo's controller plugins.
pub const CONTROLLER_PLUGINS: &[&str] = &[
    "galera",
    "rabbitmq",
    "haproxy",
    "keystone",
    "placement",
    "neutron",
    "ceph-mon",
];

/// Point the demo copy `d` at `sshds`: its inventory has them in group
/// `group` (and `rest`, more groups), uphost.yaml their client config,
/// `services` as its services file; the plugins approved.
pub fn over_ssh(d: &crate::Demo, sshds: &Sshds, group: &str, rest: &str, services: &str) {
    let mut inv = format!("all:\n  children:\n    {group}:\n      hosts:\n");
    for n in sshds.hosts.keys() {
        inv.push_str(&format!(
            "        {n}: {{ansible_host: {}, ansible_port: {}, ansible_user: root, ansible_connection: ssh}}\n",
            sshds.address(n),
            sshds.port(n)
        ));
    }
    inv.push_str(rest);
    std::fs::write(d.path().join("inventory.yaml"), inv).unwrap();
    let cfg = std::fs::read_to_string(d.path().join("uphost.yaml")).unwrap();
    std::fs::write(
        d.path().join("uphost.yaml"),
        format!("{cfg}ssh:\n  config: {}\n", sshds.ssh_config().display()),
    )
    .unwrap();
    std::fs::write(d.path().join("services.yaml"), services).unwrap();
    let r = d.uphost(&["plugins", "approve", "--all", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
}

/// A demo copy whose three controllers are reached over ssh.
pub fn ssh_demo() -> (crate::Demo, Sshds) {
    let d = crate::Demo::new(CONTROLLER_PLUGINS, false);
    let sshds = Sshds::for_nodes(&d, &["ctl1", "ctl2", "ctl3"]);
    // Only the controller services; computes and storage are not in this cluster.
    over_ssh(
        &d,
        &sshds,
        "controller",
        "    compute:\n      hosts: {}\n    storage:\n      hosts: {}\n",
        "mode: major-upgrade\nfrom_version: newton\nto_version: ocata\nservices:\n  galera:\n    roles: [controller]\n    from_version: \"10.1\"\n    to_version: \"10.2\"\n    params: {drain_wait_s: \"0\"}\n  rabbitmq:\n    roles: [controller]\n    from_version: \"3.6\"\n    to_version: \"3.7\"\n  haproxy:\n    roles: [controller]\n  keystone:\n    roles: [controller]\n  placement:\n    roles: [controller]\n  neutron:\n    roles: [controller]\n  ceph-mon:\n    roles: [controller]\n    from_version: hammer\n    to_version: jewel\n",
    );
    (d, sshds)
}

/// SIGKILL an uphost (`child`) that drives ssh nodes, and close the ssh
/// masters it cannot close itself (the other tests check that no uphost
/// leaves its control directory): its directory is moved aside first, so
/// that they never see it orphaned.
pub fn kill_uphost(child: &mut Child) {
    let pid = child.id();
    let mut aside = Vec::new();
    for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("uphost-ssh-{pid}-")) {
            let to = std::env::temp_dir().join(format!("killed-{name}"));
            std::fs::rename(e.path(), &to).unwrap();
            aside.push(to);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    for dir in aside {
        for s in std::fs::read_dir(&dir).unwrap().flatten() {
            let _ = Command::new("ssh")
                .args(["-o", &format!("ControlPath={}", s.path().display())])
                .args(["-O", "exit", "x"])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
