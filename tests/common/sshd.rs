//! Real sshd test hosts on loopback ports, owned by the test: generated host
//! and client keys in a temporary directory, nothing written to ~/.ssh.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A set of sshd hosts.
pub struct Sshds {
    /// Keys, configs, known_hosts.
    pub dir: tempfile::TempDir,
    /// Node name → (port, config file, running daemon).
    pub hosts: BTreeMap<String, (u16, PathBuf, Option<Child>)>,
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
            let port = free_port();
            known.push_str(&format!("[127.0.0.1]:{port} {host_pub}"));
            let mut cfg = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/{name}.pid\nAuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin yes\nMaxSessions 64\nMaxStartups 64\n",
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
            let cfg_path = d.join(format!("sshd_{name}.conf"));
            std::fs::write(&cfg_path, cfg).unwrap();
            hosts.insert(name.to_string(), (port, cfg_path, None));
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

    /// The client config (`ssh -F`).
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// The port of a node.
    pub fn port(&self, name: &str) -> u16 {
        self.hosts[name].0
    }

    /// Start (or restart) a node's sshd and wait until it accepts.
    pub fn up(&mut self, name: &str) {
        let (port, cfg, child) = self.hosts.get_mut(name).unwrap();
        let c = Command::new(sshd_bin())
            .args(["-D", "-e", "-f"])
            .arg(&*cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        *child = Some(c);
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "sshd for {name} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill a node's sshd and every session it serves.
    /// Kill a node's sessions (the per-connection sshd processes and what
    /// they run) but not its listener: connections drop, new ones work.
    pub fn drop_sessions(&mut self, name: &str) {
        if let Some(c) = &self.hosts[name].2 {
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
        self.hosts[name].2.as_ref().is_some_and(|c| {
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

    pub fn kill(&mut self, name: &str) {
        if let Some(mut c) = self.hosts.get_mut(name).unwrap().2.take() {
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
    }
}
