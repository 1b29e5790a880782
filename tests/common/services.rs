//! Real services on loopback, owned by one test: a three-node MariaDB
//! Galera cluster, an HAProxy per node in front of it (httpchk against a
//! clustercheck served by socat, as xinetd serves it on a controller), and a
//! three-node RabbitMQ cluster. Each controller `ctlN` is one loopback
//! address `127.0.0.1N` with the standard ports (3306 haproxy, 3307 mariadbd,
//! 4567/4568/4444 galera, 9200 clustercheck, 5672 amqp) and a directory that
//! stands for its filesystem root; `tests/e2e/node-shim.sh` is its service
//! manager and client configuration (see that file for what is real).
//!
//! Everything it started is stopped when the value is dropped.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{Ran, root, wasm};

/// The controllers: name and loopback address.
pub const NODES: [(&str, &str); 3] = [
    ("ctl1", "127.0.0.11"),
    ("ctl2", "127.0.0.12"),
    ("ctl3", "127.0.0.13"),
];

/// The programs each node's `bin/` answers with the shim.
const SHIMMED: &[&str] = &[
    "systemctl",
    "mysql",
    "mysqldump",
    "galera_recovery",
    "rabbitmqctl",
    "touch",
    "rm",
    "sed",
    "haproxy",
    "apt-get",
    "openstack",
    "keystone-manage",
];

/// The password of the `uphost` database user the nodes' clients use.
const DB_PASSWORD: &str = "uphost-e2e";

/// The running cluster.
pub struct RealCluster {
    /// Node roots, configuration, plugins, state, backups.
    pub dir: tempfile::TempDir,
    clustercheck: Vec<Child>,
    epmd_was_running: bool,
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn sh(cmd: &mut Command) -> Ran {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
        .into()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn epmd_running() -> bool {
    std::net::TcpStream::connect_timeout(&"127.0.0.1:4369".parse().unwrap(), Duration::from_secs(1))
        .is_ok()
}

impl RealCluster {
    /// Check the packages, lay out the nodes, start Galera (bootstrap ctl1,
    /// join the others), the clustercheck responders, HAProxy and RabbitMQ,
    /// and write uphost.yaml, inventory.yaml, services.yaml and the plugins.
    pub fn start(plugins: &[&str]) -> RealCluster {
        let needs = crate::packages::needs().expect("tests/debian-packages.txt");
        for n in needs.iter().filter(|n| n.test == "services") {
            assert!(
                crate::packages::present(n.what),
                "{} is missing: `cargo xtask e2e` (or `cargo xtask test`) installs Debian's {}",
                n.what,
                n.package
            );
        }
        for (name, addr) in NODES {
            for port in [3306, 3307, 4444, 4567, 4568, 5672, 9200] {
                assert!(
                    std::net::TcpListener::bind((addr, port)).is_ok(),
                    "{addr}:{port} ({name}) is in use: a server left from an earlier run? (`ss -ltnp` shows it)"
                );
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("uphost-e2e-")
            .tempdir()
            .expect("tempdir");
        // mariadbd runs as `mysql`: it must reach its datadir.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let mut c = RealCluster {
            dir,
            clustercheck: Vec::new(),
            epmd_was_running: epmd_running(),
        };
        c.lay_out(plugins);
        c.start_galera();
        c.start_haproxy();
        c.start_rabbitmq();
        c
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A node's root.
    pub fn node_root(&self, node: &str) -> PathBuf {
        self.path().join("nodes").join(node)
    }

    fn lay_out(&self, plugins: &[&str]) {
        let e2e = self.path();
        let shim = root().join("tests/e2e/node-shim.sh");
        let cookie = e2e.join("rabbitmq-home/.erlang.cookie");
        write(&cookie, "UPHOSTE2ECOOKIE");
        std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400))
            .expect("chmod cookie");
        let gcomm: Vec<&str> = NODES.iter().map(|(_, a)| *a).collect();
        for (i, (name, addr)) in NODES.iter().enumerate() {
            let r = self.node_root(name);
            for d in [
                "bin",
                "run",
                "var/lib/mysql",
                "var/lib/rabbitmq",
                "var/log/rabbitmq",
                "var/tmp",
            ] {
                std::fs::create_dir_all(r.join(d)).expect("mkdir");
            }
            for p in SHIMMED {
                std::os::unix::fs::symlink(&shim, r.join("bin").join(p)).expect("symlink");
            }
            let rd = r.display();
            write(
                &r.join("node.env"),
                &format!(
                    "NODE_NAME={name}\nNODE_ADDR={addr}\nE2E_ROOT={}\nRABBIT_NODE=rabbit-{name}@localhost\nRABBIT_DIST_PORT={}\n",
                    e2e.display(),
                    25671 + i
                ),
            );
            let user = if is_root() { "user=mysql\n" } else { "" };
            write(
                &r.join("etc/mysql/my.cnf"),
                &format!(
                    "[client]\nuser=uphost\npassword={DB_PASSWORD}\nsocket={rd}/run/mysqld.sock\n\n\
                     [mysqld]\n{user}datadir={rd}/var/lib/mysql\nsocket={rd}/run/mysqld.sock\n\
                     pid-file={rd}/run/mysqld.pid\nbind-address={addr}\nport=3307\n\
                     log-error={rd}/var/log/mysql.err\ninnodb_buffer_pool_size=32M\n\
                     innodb_log_file_size=16M\nbinlog_format=ROW\ndefault_storage_engine=InnoDB\n\
                     innodb_autoinc_lock_mode=2\nwsrep_on=ON\n\
                     wsrep_provider=/usr/lib/galera/libgalera_smm.so\n\
                     wsrep_cluster_name=uphost-e2e\nwsrep_cluster_address=gcomm://{}\n\
                     wsrep_node_address={addr}\nwsrep_node_name={name}\nwsrep_sst_method=rsync\n\
                     wsrep_provider_options=\"gmcast.listen_addr=tcp://{addr}:4567;gcache.size=16M\"\n",
                    gcomm.join(",")
                ),
            );
            // TripleO's galera listener: stick on one backend, the others
            // backup; a backend is out when its clustercheck says 503.
            let servers: String = NODES
                .iter()
                .enumerate()
                .map(|(j, (n, a))| {
                    format!(
                        "  server {n} {a}:3307 check{}\n",
                        if j == 0 { "" } else { " backup" }
                    )
                })
                .collect();
            write(
                &r.join("etc/haproxy/haproxy.cfg"),
                &format!(
                    "global\n  maxconn 256\n  stats socket {rd}/run/haproxy.sock mode 600 level admin\n\
                     defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 90m\n  timeout server 90m\n\
                     listen mysql\n  bind {addr}:3306\n  option httpchk\n  stick-table type ip size 1000\n  stick on dst\n\
                     \x20 default-server inter 500ms rise 1 fall 1 on-marked-down shutdown-sessions port 9200\n{servers}"
                ),
            );
            let peers: String = NODES
                .iter()
                .enumerate()
                .map(|(j, (n, _))| {
                    format!(
                        "cluster_formation.classic_config.nodes.{} = rabbit-{n}@localhost\n",
                        j + 1
                    )
                })
                .collect();
            write(
                &r.join("etc/rabbitmq/rabbitmq.conf"),
                &format!(
                    "listeners.tcp.1 = {addr}:5672\ncluster_formation.peer_discovery_backend = classic_config\n{peers}"
                ),
            );
            write(&r.join("etc/rabbitmq/enabled_plugins"), "[].\n");
            write(&r.join("run/keystone.active"), "");
            let mut install = Command::new("mariadb-install-db");
            install
                .arg(format!("--defaults-file={rd}/etc/mysql/my.cnf"))
                .arg("--auth-root-authentication-method=normal");
            if is_root() {
                install.arg("--user=mysql");
            }
            let out = sh(&mut install);
            assert_eq!(out.code, 0, "mariadb-install-db on {name}: {}", out.all());
            if is_root() {
                let out = sh(Command::new("chown").args(["-R", "mysql:mysql"]).arg(&r));
                assert_eq!(out.code, 0, "chown: {}", out.all());
            }
        }
        std::fs::create_dir_all(e2e.join("backup")).expect("mkdir backup");
        std::fs::create_dir_all(e2e.join("plugins")).expect("mkdir plugins");
        for p in plugins {
            std::fs::copy(wasm(p), e2e.join("plugins").join(format!("{p}.wasm")))
                .expect("copy plugin");
        }
        write(
            &e2e.join("uphost.yaml"),
            "plugins: plugins/\ninventory: inventory.yaml\nservices: services.yaml\nstate_dir: state/\nforks: 4\n",
        );
        let hosts: String = NODES
            .iter()
            .map(|(n, a)| {
                format!("        {n}: {{ansible_host: {a}, uphost_node_root: nodes/{n}}}\n")
            })
            .collect();
        write(
            &e2e.join("inventory.yaml"),
            &format!(
                "all:\n  vars:\n    ansible_connection: local\n  children:\n    controller:\n      hosts:\n{hosts}"
            ),
        );
        write(
            &e2e.join("services.yaml"),
            &format!(
                "mode: major-upgrade\nfrom_version: newton\nto_version: ocata\nservices:\n\
                 \x20 galera:\n    roles: [controller]\n    from_version: \"10.1\"\n    to_version: \"10.2\"\n\
                 \x20   params:\n      backup_dir: {}/backup\n      drain_wait_s: \"3\"\n      vip: 127.0.0.11\n\
                 \x20 haproxy:\n    roles: [controller]\n    from_version: \"1.5\"\n    to_version: \"1.8\"\n\
                 \x20 rabbitmq:\n    roles: [controller]\n    from_version: \"3.6\"\n    to_version: \"3.7\"\n\
                 \x20   params:\n      node_name: \"rabbit-{{node}}@localhost\"\n\
                 \x20 keystone:\n    roles: [controller]\n\
                 probes:\n\
                 \x20 - name: vip-sql\n    service: galera\n    interval_ms: 200\n\
                 \x20   command: {{node: ctl1, argv: [mysql, -h, 127.0.0.11, -P, \"3306\", -N, -B, -e, SELECT 1], expect: \"1\"}}\n\
                 \x20 - name: amqp\n    service: rabbitmq\n    interval_ms: 200\n    tcp: \"127.0.0.11:5672\"\n",
                e2e.display()
            ),
        );
    }

    /// Run a command as on `node`: the PATH and environment uphost's local
    /// transport gives it.
    pub fn on(&self, node: &str, argv: &[&str]) -> Ran {
        let r = self.node_root(node);
        sh(Command::new(argv[0])
            .args(&argv[1..])
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    r.join("bin").display()
                ),
            )
            .env("LANG", "C")
            .env("UPHOST_NODE_ROOT", &r))
    }

    fn must(&self, node: &str, argv: &[&str]) -> String {
        let out = self.on(node, argv);
        assert_eq!(out.code, 0, "{node}: {argv:?} failed:\n{}", out.all());
        out.stdout
    }

    /// SQL on a node as the `uphost` user; stdout.
    pub fn sql(&self, node: &str, sql: &str) -> String {
        self.must(node, &["mysql", "-N", "-B", "-e", sql])
    }

    fn start_galera(&self) {
        let (first, _) = NODES[0];
        self.must(first, &["galera_new_cluster"]);
        let r = self.node_root(first);
        let root_sql = format!(
            "CREATE USER uphost@localhost IDENTIFIED BY '{DB_PASSWORD}'; GRANT ALL ON *.* TO uphost@localhost WITH GRANT OPTION; \
             CREATE USER uphost@'127.0.0.%' IDENTIFIED BY '{DB_PASSWORD}'; GRANT ALL ON *.* TO uphost@'127.0.0.%' WITH GRANT OPTION;"
        );
        let out = sh(Command::new("mysql")
            .arg("--no-defaults")
            .arg(format!("--socket={}/run/mysqld.sock", r.display()))
            .args(["--user=root", "-e", &root_sql]));
        assert_eq!(out.code, 0, "creating the uphost user: {}", out.all());
        for (n, _) in &NODES[1..] {
            self.must(n, &["systemctl", "start", "mariadb"]);
        }
        let size = self.status_var(first, "wsrep_cluster_size");
        assert_eq!(size, "3", "galera did not form a three-node cluster");
    }

    /// One `SHOW STATUS` value on a node.
    pub fn status_var(&self, node: &str, var: &str) -> String {
        let out = self.sql(node, &format!("SHOW STATUS LIKE '{var}'"));
        out.split('\t')
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn start_haproxy(&mut self) {
        for (n, addr) in NODES {
            let r = self.node_root(n);
            let child = Command::new("socat")
                .arg(format!("TCP-LISTEN:9200,bind={addr},reuseaddr,fork"))
                .arg(format!(
                    "EXEC:{} {}",
                    root().join("tests/e2e/clustercheck.sh").display(),
                    r.display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("socat");
            self.clustercheck.push(child);
        }
        for (n, _) in NODES {
            self.must(n, &["systemctl", "start", "haproxy"]);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.haproxy_down(NODES[0].0) != Some(0) {
            assert!(
                Instant::now() < deadline,
                "haproxy on ctl1 does not see the three galera backends up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_rabbitmq(&self) {
        for (n, _) in NODES {
            self.must(n, &["systemctl", "start", "rabbitmq-server"]);
        }
    }

    /// How many galera backends haproxy on `node` reports DOWN (None when
    /// its admin socket does not answer, e.g. during a restart).
    pub fn haproxy_down(&self, node: &str) -> Option<usize> {
        haproxy_down(&self.node_root(node).join("run/haproxy.sock"))
    }

    /// Watch haproxy on `node` until the returned guard is dropped; the
    /// guard tells the most backends it ever saw DOWN at once.
    pub fn watch_haproxy(&self, node: &str) -> HaproxyWatch {
        let sock = self.node_root(node).join("run/haproxy.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicUsize::new(0));
        let (s, m) = (stop.clone(), most.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(down) = haproxy_down(&sock) {
                    m.fetch_max(down, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        HaproxyWatch {
            stop,
            most,
            thread: Some(thread),
        }
    }

    /// `CHECKSUM TABLE ... EXTENDED` and row counts of the test tables on
    /// every node; asserts the nodes agree, returns one node's lines.
    pub fn checksums(&self) -> Vec<String> {
        let mut seen: Vec<(String, Vec<String>)> = Vec::new();
        for (n, _) in NODES {
            let mut lines = Vec::new();
            for t in ["customers", "orders", "audit"] {
                let sum = self.sql(n, &format!("CHECKSUM TABLE shop.{t} EXTENDED"));
                let sum = sum.split('\t').nth(1).unwrap_or("?").trim().to_string();
                let count = self.sql(n, &format!("SELECT COUNT(*) FROM shop.{t}"));
                lines.push(format!(
                    "shop.{t:<10} checksum {sum:>10}  rows {}",
                    count.trim()
                ));
            }
            seen.push((n.to_string(), lines));
        }
        for (n, lines) in &seen[1..] {
            assert_eq!(
                lines, &seen[0].1,
                "{n} and {} disagree: galera did not replicate",
                seen[0].0
            );
        }
        seen.remove(0).1
    }

    /// uphost in the cluster's directory.
    pub fn uphost(&self, args: &[&str]) -> Ran {
        crate::uphost_in(self.path(), args)
    }
}

/// See [`RealCluster::watch_haproxy`].
pub struct HaproxyWatch {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HaproxyWatch {
    /// Stop watching; the most backends seen DOWN at once.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.most.load(Ordering::Relaxed)
    }
}

impl Drop for HaproxyWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn haproxy_down(sock: &Path) -> Option<usize> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"show stat\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let servers: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("mysql,ctl"))
        .filter_map(|l| l.split(',').nth(17))
        .collect();
    (servers.len() == NODES.len()).then(|| servers.iter().filter(|s| s.starts_with("DOWN")).count())
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        for (n, _) in NODES {
            for unit in ["rabbitmq-server", "haproxy", "mariadb"] {
                let _ = self.on(n, &["systemctl", "stop", unit]);
            }
        }
        for c in &mut self.clustercheck {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.epmd_was_running {
            let _ = Command::new("epmd")
                .arg("-kill")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Whatever a failed stop left behind, by its pid file.
        for (n, _) in NODES {
            for pid in ["mysqld.pid", "haproxy.pid", "rabbitmq.pid"] {
                if let Ok(p) = std::fs::read_to_string(self.node_root(n).join("run").join(pid))
                    && let Ok(p) = p.trim().parse::<i32>()
                    && let Some(p) = rustix::process::Pid::from_raw(p)
                {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
        }
    }
}
