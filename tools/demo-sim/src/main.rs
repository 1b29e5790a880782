//! Node-local simulators for the uphost demo cluster.
//!
//! One binary, linked as `<node>/bin/systemctl`, `mysql`, `rabbitmqctl`,
//! `nova-manage`, `ceph`, ...; it dispatches on the name it was called by.
//! The local transport puts `<node>/bin` first on PATH and exports
//! `UPHOST_NODE_ROOT=<node>` and `UPHOST_NODE=<name>`. State:
//! - `<node>/state.json`: installed packages, units, config keys;
//! - `<node>/fs/...`: the node's files (`touch`, `rm`, dumps);
//! - `<nodes>/cluster.json`: what is shared (database, keystone catalog,
//!   rabbitmq policies, ceph flags, nova cells);
//! - `<node>/ops.log`: one line per mutating command applied;
//! - `<node>/faults.json`: injected failures, `[{"argv": [...prefix], "status": 1,
//!   "stderr": "...", "times": 1, "delay_s": 0}]` (times 0 = forever; a
//!   `delay_s` sleeps first; `status` 0 then runs the command as usual: a
//!   slow command rather than a failing one).
//! - `<node>/reboots.log`: one line per `systemctl reboot|kexec` (the node
//!   answers nothing but exit 255 for `<node>/reboot-ms` ms, 1500 by
//!   default, then has a new boot identity); `<nodes>/pacemaker.log`: each
//!   Pacemaker node state change with how many nodes are out.
//!
//! `uphost-demo-sim init DIR [--release R] [--containers] NODE...` creates
//! the nodes of a demo cluster, its OpenStack packages and schemas at
//! release R (Newton by default); with `--containers`, MariaDB, RabbitMQ
//! and the OpenStack services run in kolla containers (`docker`/`podman` answer for
//! them: stop, rm, rmi, pull, create, start, inspect, exec).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default, Clone)]
struct NodeState {
    packages: BTreeMap<String, String>,
    units: BTreeMap<String, String>,
    conf: BTreeMap<String, String>,
    #[serde(default)]
    seqno: u64,
    #[serde(default)]
    enabled: BTreeSet<String>,
    /// How many times the node booted (its boot identity).
    #[serde(default)]
    boot: u64,
    /// Until when (ms since the epoch) the node is down, rebooting.
    #[serde(default)]
    down_until_ms: u64,
    /// Containers by name: (image, running).
    #[serde(default)]
    containers: BTreeMap<String, (String, bool)>,
    /// Images pulled.
    #[serde(default)]
    images: BTreeSet<String>,
    /// Containers created with kolla's `BOOTSTRAP_ARGS=--wsrep-new-cluster`:
    /// starting one bootstraps a new Galera cluster.
    #[serde(default)]
    bootstrap: BTreeSet<String>,
}

/// The systemd unit a kolla container stands for.
fn unit_of(container: &str) -> String {
    match container {
        "rabbitmq" => "rabbitmq-server".into(),
        c => c.replace('_', "-"),
    }
}

#[derive(Serialize, Deserialize, Default)]
struct Cluster {
    /// table name -> rows
    db: BTreeMap<String, Vec<String>>,
    schema: BTreeMap<String, String>,
    users: BTreeSet<String>,
    services: BTreeSet<String>,
    endpoints: Vec<String>,
    policies: BTreeMap<String, String>,
    cells: Vec<String>,
    discovered: BTreeSet<String>,
    ceph_flags: BTreeSet<String>,
    ceph_tunables: String,
    /// node that bootstrapped galera
    bootstrap: Option<String>,
    /// Pacemaker: each cluster node's state (`online`, `standby`,
    /// `offline`).
    #[serde(default)]
    pacemaker: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Fault {
    argv: Vec<String>,
    #[serde(default = "one")]
    status: i32,
    #[serde(default)]
    stderr: String,
    #[serde(default)]
    times: u32,
    #[serde(default)]
    delay_s: f64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn one() -> i32 {
    1
}

struct Sim {
    root: PathBuf,
    name: String,
    node: NodeState,
    cluster: Cluster,
    mutated: bool,
    out: String,
    err: String,
}

type R = Result<(), (i32, String)>;

fn fail<T>(status: i32, msg: impl Into<String>) -> Result<T, (i32, String)> {
    Err((status, msg.into()))
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(p: &Path) -> T {
    fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_json<T: Serialize>(p: &Path, v: &T) {
    let tmp = p.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(v).expect("serializes")).expect("write state");
    fs::rename(&tmp, p).expect("rename state");
}

impl Sim {
    fn nodes_dir(&self) -> PathBuf {
        self.root
            .parent()
            .expect("node root has a parent")
            .to_path_buf()
    }

    /// A node's file. kolla's named volumes are the services' own
    /// directories (`mariadb`'s volume is the datadir, `rabbitmq`'s holds
    /// `mnesia`), whichever engine's path names them.
    fn fs_path(&self, p: &str) -> PathBuf {
        let mut p = p.to_string();
        for engine in [
            "/var/lib/docker/volumes",
            "/var/lib/containers/storage/volumes",
        ] {
            for (volume, dir) in [
                ("mariadb", "/var/lib/mysql"),
                ("rabbitmq", "/var/lib/rabbitmq"),
            ] {
                if let Some(rest) = p.strip_prefix(&format!("{engine}/{volume}/_data")) {
                    p = format!("{dir}{rest}");
                }
            }
        }
        self.root.join("fs").join(p.trim_start_matches('/'))
    }

    /// Every node of the cluster (name, state), this one included as current.
    fn peers(&self) -> Vec<(String, NodeState)> {
        let mut v = Vec::new();
        if let Ok(rd) = fs::read_dir(self.nodes_dir()) {
            for e in rd.flatten() {
                let p = e.path();
                if !p.join("state.json").exists() {
                    continue;
                }
                let n = e.file_name().to_string_lossy().into_owned();
                if n == self.name {
                    v.push((n, self.node.clone()));
                } else {
                    v.push((n, read_json(&p.join("state.json"))));
                }
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn unit(&self, u: &str) -> &str {
        self.node
            .units
            .get(u)
            .map(String::as_str)
            .unwrap_or("inactive")
    }

    fn galera_members(&self) -> Vec<String> {
        self.peers()
            .into_iter()
            .filter(|(_, s)| s.units.get("mariadb").map(String::as_str) == Some("active"))
            .map(|(n, _)| n)
            .collect()
    }

    fn db_up(&self) -> bool {
        !self.galera_members().is_empty() && self.cluster.bootstrap.is_some()
    }

    fn systemctl(&mut self, a: &[String]) -> R {
        let (verb, units) = match a.split_first() {
            Some((v, u)) if !u.is_empty() => (v.as_str(), u),
            _ => return fail(1, "usage: systemctl VERB UNIT..."),
        };
        for unit in units {
            match verb {
                "is-active" => {
                    let s = self.unit(unit).to_string();
                    self.out.push_str(&s);
                    self.out.push('\n');
                    if s != "active" {
                        return fail(3, "");
                    }
                }
                "start" | "restart" | "reload" => {
                    if unit == "mariadb" {
                        let members = self.galera_members();
                        if members.iter().all(|m| m == &self.name)
                            || self.cluster.bootstrap.is_none()
                        {
                            return fail(
                                1,
                                "Job for mariadb.service failed: WSREP: failed to reach primary view (no cluster to join; bootstrap one node with galera_new_cluster)",
                            );
                        }
                    }
                    let pkg_needed = unit
                        .trim_end_matches(".target")
                        .split('@')
                        .next()
                        .unwrap_or(unit);
                    let _ = pkg_needed;
                    self.node.units.insert(unit.clone(), "active".into());
                    self.mutated = true;
                    self.listen(unit);
                }
                "stop" => {
                    if unit == "mariadb" && self.unit("mariadb") == "active" {
                        self.node.seqno += 1;
                        let still: Vec<String> = self
                            .galera_members()
                            .into_iter()
                            .filter(|m| m != &self.name)
                            .collect();
                        if still.is_empty() {
                            self.cluster.bootstrap = None;
                        }
                        // As mariadbd does on a clean shutdown: the last
                        // node to leave is the one safe to bootstrap from.
                        let grastate = self.fs_path("/var/lib/mysql/grastate.dat");
                        let _ = fs::create_dir_all(grastate.parent().expect("parent"));
                        fs::write(
                            &grastate,
                            format!(
                                "# GALERA saved state\nversion: 2.1\nuuid:    6c3f5b8e-9c1a-11ee-8c90-0242ac120002\nseqno:   {}\nsafe_to_bootstrap: {}\n",
                                self.node.seqno,
                                u8::from(still.is_empty())
                            ),
                        )
                        .map_err(|e| (1, e.to_string()))?;
                    }
                    self.node.units.insert(unit.clone(), "inactive".into());
                    self.mutated = true;
                    self.unlisten(unit);
                }
                "enable" => {
                    self.node.enabled.insert(unit.clone());
                    self.mutated = true;
                }
                other => return fail(1, format!("Unknown command verb {other}.")),
            }
        }
        Ok(())
    }

    fn galera_new_cluster(&mut self) -> R {
        if self.unit("mariadb") == "active" {
            return fail(1, "mariadb is already running");
        }
        self.node.units.insert("mariadb".into(), "active".into());
        self.cluster.bootstrap = Some(self.name.clone());
        self.mutated = true;
        Ok(())
    }

    fn mysql(&mut self, a: &[String]) -> R {
        let sql = a
            .windows(2)
            .find(|w| w[0] == "-e")
            .map(|w| w[1].clone())
            .unwrap_or_default();
        let remote = a.iter().any(|x| x == "-h");
        if remote {
            // through the VIP: haproxy routes to a node not drained
            let ok = self.peers().iter().any(|(n, s)| {
                s.units.get("mariadb").map(String::as_str) == Some("active")
                    && !self
                        .nodes_dir()
                        .join(n)
                        .join("fs/var/tmp/clustercheck.disabled")
                        .exists()
            });
            if !ok || !self.db_up() {
                return fail(
                    1,
                    "ERROR 2013 (HY000): Lost connection to server at 'handshake: reading initial communication packet', system error: 11",
                );
            }
        } else if self.unit("mariadb") != "active" {
            return fail(
                1,
                "ERROR 2002 (HY000): Can't connect to local server through socket '/run/mysqld/mysqld.sock' (2)",
            );
        }
        if sql == "SHOW STATUS LIKE 'wsrep%'" {
            let members = self.galera_members();
            let synced = self.cluster.bootstrap.is_some();
            self.out = format!(
                "wsrep_cluster_size\t{}\nwsrep_cluster_status\t{}\nwsrep_local_state_comment\t{}\nwsrep_ready\t{}\n",
                members.len(),
                if synced { "Primary" } else { "non-Primary" },
                if synced { "Synced" } else { "Initialized" },
                if synced { "ON" } else { "OFF" }
            );
        } else if sql == "SELECT 1" {
            self.out = "1\n".into();
        } else if let Some(path) = sql.strip_prefix("source ") {
            let p = self.fs_path(path);
            let text = fs::read_to_string(&p).or_else(|_| {
                fail(
                    1,
                    format!("ERROR at line 1: Failed to open file '{path}', error: 2"),
                )
            })?;
            let db: BTreeMap<String, Vec<String>> = serde_json::from_str(
                text.lines()
                    .filter(|l| !l.starts_with("--"))
                    .collect::<String>()
                    .as_str(),
            )
            .or_else(|e| fail(1, format!("ERROR 1064 (42000): syntax error in dump: {e}")))?;
            self.cluster.db = db;
            self.mutated = true;
        } else if sql == "CHECKSUM" {
            self.out = serde_json::to_string(&self.cluster.db).unwrap_or_default();
        } else {
            return fail(
                1,
                format!("ERROR 1064 (42000): the simulator does not know `{sql}`"),
            );
        }
        Ok(())
    }

    fn mysqldump(&mut self, a: &[String]) -> R {
        if !self.db_up() || self.unit("mariadb") != "active" {
            return fail(
                2,
                "mysqldump: Got error: 2002: \"Can't connect to local server through socket '/run/mysqld/mysqld.sock' (2)\" when trying to connect",
            );
        }
        let file = a
            .iter()
            .find_map(|x| x.strip_prefix("--result-file="))
            .ok_or((2, "mysqldump: --result-file is required here".to_string()))?;
        let p = self.fs_path(file);
        fs::create_dir_all(p.parent().expect("parent")).map_err(|e| (2, e.to_string()))?;
        let body = format!(
            "-- MariaDB dump (simulated) of all databases\n{}\n",
            serde_json::to_string(&self.cluster.db).unwrap_or_default()
        );
        fs::write(&p, body).map_err(|e| (2, e.to_string()))?;
        self.mutated = true;
        Ok(())
    }

    fn sha256sum(&mut self, a: &[String]) -> R {
        use sha2::Digest;
        for f in a {
            let b = fs::read(self.fs_path(f))
                .or_else(|_| fail(1, format!("sha256sum: {f}: No such file or directory")))?;
            self.out
                .push_str(&format!("{}  {f}\n", hex::encode(sha2::Sha256::digest(&b))));
        }
        Ok(())
    }

    fn galera_recovery(&mut self) -> R {
        if self.unit("mariadb") == "active" {
            return fail(1, "galera_recovery: mariadb is running; stop it first");
        }
        self.out = format!(
            "--wsrep_start_position=6c3f5b8e-9c1a-11ee-8c90-0242ac120002:{}\n",
            self.node.seqno
        );
        Ok(())
    }

    fn files(&mut self, prog: &str, a: &[String]) -> R {
        // sed's expression is not a path.
        let paths: Vec<&String> = a
            .iter()
            .filter(|x| !x.starts_with('-') && (prog != "sed" || x.starts_with('/')))
            .collect();
        for p in paths {
            let fp = self.fs_path(p);
            match prog {
                "touch" => {
                    fs::create_dir_all(fp.parent().expect("parent"))
                        .map_err(|e| (1, e.to_string()))?;
                    fs::write(&fp, b"").map_err(|e| (1, e.to_string()))?;
                }
                "rm" => {
                    if fp.is_dir() {
                        fs::remove_dir_all(&fp).map_err(|e| (1, e.to_string()))?;
                    } else if fp.exists() {
                        fs::remove_file(&fp).map_err(|e| (1, e.to_string()))?;
                    } else if !a.iter().any(|x| x.starts_with("-") && x.contains('f')) {
                        return fail(
                            1,
                            format!("rm: cannot remove '{p}': No such file or directory"),
                        );
                    }
                }
                "chown" => {}
                "sed" => {
                    // The real sed, on the node's file.
                    let out = std::process::Command::new("sed")
                        .args(a.iter().filter(|x| !x.starts_with('/')))
                        .arg(&fp)
                        .output()
                        .map_err(|e| (1, e.to_string()))?;
                    if !out.status.success() {
                        return fail(1, String::from_utf8_lossy(&out.stderr).trim().to_string());
                    }
                }
                _ => unreachable!(),
            }
        }
        self.mutated = true;
        Ok(())
    }

    fn apt_get(&mut self, a: &[String]) -> R {
        if a.first().map(String::as_str) != Some("install") {
            return fail(
                100,
                "E: the simulator only knows `apt-get install -y PKG=VERSION`",
            );
        }
        for spec in a.iter().skip(1).filter(|x| !x.starts_with('-')) {
            let (pkg, ver) = spec.split_once('=').unwrap_or((spec, "latest"));
            self.node.packages.insert(pkg.into(), ver.into());
        }
        self.mutated = true;
        Ok(())
    }

    /// The port `unit` listens on while active, from `<node>/ports.json`
    /// (`{"keystone": 15001}`): a listener of this simulator, so that a
    /// probe sees the service go away and come back.
    fn port_of(&self, unit: &str) -> Option<u16> {
        let text = fs::read_to_string(self.root.join("ports.json")).ok()?;
        let ports: BTreeMap<String, u16> = serde_json::from_str(&text).ok()?;
        ports.get(unit).copied()
    }

    fn pid_file(&self, unit: &str) -> PathBuf {
        self.root.join(format!("listen-{unit}.pid"))
    }

    /// Stop `unit`'s listener, if it has one.
    fn unlisten(&self, unit: &str) {
        if let Some(pid) = fs::read_to_string(self.pid_file(unit))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let _ = fs::remove_file(self.pid_file(unit));
        }
    }

    /// (Re)start `unit`'s listener when it has a port; back once it accepts.
    fn listen(&self, unit: &str) {
        let Some(port) = self.port_of(unit) else {
            return;
        };
        self.unlisten(unit);
        use std::os::unix::process::CommandExt;
        let Ok(child) = std::process::Command::new(std::env::current_exe().expect("exe"))
            .arg0("uphost-demo-sim")
            .args(["__listen", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
        else {
            return;
        };
        let _ = fs::write(self.pid_file(unit), child.id().to_string());
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn version_of(&self, pkg: &str) -> String {
        self.node
            .packages
            .get(pkg)
            .cloned()
            .unwrap_or_else(|| "?".into())
    }

    fn rabbitmqctl(&mut self, a: &[String]) -> R {
        let running: Vec<String> = self
            .peers()
            .into_iter()
            .filter(|(_, s)| s.units.get("rabbitmq-server").map(String::as_str) == Some("active"))
            .map(|(n, _)| n)
            .collect();
        if self.unit("rabbitmq-server") != "active" {
            return fail(
                69,
                format!(
                    "Error: unable to perform an operation on node 'rabbit@{}'. Please see diagnostics information and suggestions below.",
                    self.name
                ),
            );
        }
        match a.first().map(String::as_str) {
            Some("cluster_status") => {
                let all: Vec<String> = self
                    .peers()
                    .into_iter()
                    .filter(|(_, s)| s.units.contains_key("rabbitmq-server"))
                    .map(|(n, _)| format!("'rabbit@{n}'"))
                    .collect();
                let run: Vec<String> = running.iter().map(|n| format!("'rabbit@{n}'")).collect();
                self.out = format!(
                    "Cluster status of node 'rabbit@{}' ...\n[{{nodes,[{{disc,[{}]}}]}},\n {{running_nodes,[{}]}},\n {{cluster_name,<<\"rabbit@{}\">>}},\n {{partitions,[]}}]\n...done.\n",
                    self.name,
                    all.join(","),
                    run.join(","),
                    self.name
                );
            }
            Some("set_policy") if a.len() == 4 => {
                self.cluster.policies.insert(a[1].clone(), a[3].clone());
                self.out = format!("Setting policy \"{}\" for pattern \"{}\" ...\n", a[1], a[2]);
                self.mutated = true;
            }
            _ => {
                return fail(
                    64,
                    "Error: the simulator does not know this rabbitmqctl command",
                );
            }
        }
        Ok(())
    }

    fn manage(&mut self, prog: &str, a: &[String]) -> R {
        if !self.db_up() {
            return fail(
                1,
                format!(
                    "{prog}: (pymysql.err.OperationalError) (2003, \"Can't connect to MySQL server\")"
                ),
            );
        }
        let joined = a.join(" ");
        let svc = prog
            .trim_end_matches("-manage")
            .trim_end_matches("-db")
            .to_string();
        match (prog, joined.as_str()) {
            ("keystone-manage", "db_sync")
            | ("nova-manage", "db sync")
            | ("nova-manage", "api_db sync")
            | ("neutron-db-manage", "upgrade heads")
            | ("glance-manage", "db sync")
            | ("placement-manage", "db sync") => {
                let pkg = match prog {
                    "keystone-manage" => "keystone",
                    "glance-manage" => "glance-api",
                    "nova-manage" => "nova-api",
                    "neutron-db-manage" => "neutron-server",
                    _ => "placement-api",
                };
                let key = if joined.starts_with("api_db") {
                    "nova_api".to_string()
                } else {
                    svc
                };
                let v = self.version_of(pkg);
                self.cluster.schema.insert(key, v);
                self.mutated = true;
            }
            ("nova-manage", "cell_v2 map_cell0") => {
                if !self.cluster.cells.contains(&"cell0".to_string()) {
                    self.cluster.cells.push("cell0".into());
                }
                self.mutated = true;
            }
            ("nova-manage", "cell_v2 create_cell --name=cell1") => {
                if self.cluster.cells.contains(&"cell1".to_string()) {
                    return fail(
                        2,
                        "The specified transport_url and/or database_connection combination already exists for another cell",
                    );
                }
                self.cluster.cells.push("cell1".into());
                self.mutated = true;
            }
            ("nova-manage", "cell_v2 list_cells") => {
                self.out = self.cluster.cells.join("\n") + "\n";
            }
            ("nova-manage", "cell_v2 discover_hosts") => {
                if !self.cluster.cells.contains(&"cell1".to_string()) {
                    return fail(
                        1,
                        "No cells are configured: run nova-manage cell_v2 create_cell first",
                    );
                }
                let computes: Vec<String> = self
                    .peers()
                    .into_iter()
                    .filter(|(_, s)| {
                        s.units.get("nova-compute").map(String::as_str) == Some("active")
                    })
                    .map(|(n, _)| n)
                    .collect();
                self.cluster.discovered.extend(computes);
                self.mutated = true;
            }
            _ => return fail(1, format!("{prog}: the simulator does not know `{joined}`")),
        }
        Ok(())
    }

    fn crudini(&mut self, a: &[String]) -> R {
        match a {
            [op, file, section, key, value] if op == "--set" => {
                self.node
                    .conf
                    .insert(format!("{file}:{section}:{key}"), value.clone());
            }
            [op, file, section, key] if op == "--del" => {
                self.node.conf.remove(&format!("{file}:{section}:{key}"));
            }
            [op, file, section, key] if op == "--get" => {
                match self.node.conf.get(&format!("{file}:{section}:{key}")) {
                    Some(v) => self.out = format!("{v}\n"),
                    None => return fail(1, format!("Parameter not found: {key}")),
                }
                return Ok(());
            }
            _ => {
                return fail(
                    1,
                    "crudini: usage: --set|--del|--get FILE SECTION KEY [VALUE]",
                );
            }
        }
        self.mutated = true;
        Ok(())
    }

    fn openstack(&mut self, a: &[String]) -> R {
        let keystone_up = self
            .peers()
            .iter()
            .any(|(_, s)| s.units.get("keystone").map(String::as_str) == Some("active"));
        if !keystone_up || !self.db_up() {
            return fail(
                1,
                "Failed to discover available identity versions when contacting http://vip:5000/v3. Attempting to parse version from URL.\nService Unavailable (HTTP 503)",
            );
        }
        let j = a.join(" ");
        if j.starts_with("endpoint list --service ") {
            let svc = &a[3];
            let eps: Vec<&String> = self
                .cluster
                .endpoints
                .iter()
                .filter(|e| e.starts_with(&format!("{svc} ")))
                .collect();
            for e in eps {
                self.out.push_str(e.split(' ').nth(2).unwrap_or(""));
                self.out.push('\n');
            }
        } else if j.starts_with("user create --domain default --or-show ") {
            self.cluster.users.insert(a[4].clone());
            self.out = format!("| name | {} |\n", a[4]);
            self.mutated = true;
        } else if j.starts_with("role add --project service --user ") {
            self.mutated = true;
        } else if j.starts_with("service show ") {
            if !self.cluster.services.contains(&a[2]) {
                return fail(
                    1,
                    format!("No service with a type, name or ID of '{}' exists.", a[2]),
                );
            }
            self.out = format!("| name | {} |\n", a[2]);
        } else if j.starts_with("service create --name ") {
            self.cluster.services.insert(a[2].clone());
            self.mutated = true;
        } else if j.starts_with("endpoint create --region RegionOne ") && a.len() == 7 {
            let e = format!("{} {} {}", a[4], a[5], a[6]);
            if !self.cluster.endpoints.contains(&e) {
                self.cluster.endpoints.push(e);
            }
            self.mutated = true;
        } else if j == "network agent list -f value -c Host -c Alive" {
            for (n, s) in self.peers() {
                for (u, st) in &s.units {
                    if u.starts_with("neutron-") && u.ends_with("-agent") {
                        self.out.push_str(&format!(
                            "{n} {u} {}\n",
                            if st == "active" { "True" } else { "False" }
                        ));
                    }
                }
            }
        } else {
            return fail(1, format!("openstack: the simulator does not know `{j}`"));
        }
        Ok(())
    }

    fn ceph(&mut self, a: &[String]) -> R {
        let mons: Vec<(String, NodeState)> = self
            .peers()
            .into_iter()
            .filter(|(_, s)| s.units.keys().any(|u| u.starts_with("ceph-mon@")))
            .collect();
        let mons_up = mons
            .iter()
            .filter(|(n, s)| {
                s.units.get(&format!("ceph-mon@{n}")).map(String::as_str) == Some("active")
            })
            .count();
        if mons_up * 2 <= mons.len() {
            return fail(
                1,
                "[errno 110] RADOS timed out (error connecting to the cluster)",
            );
        }
        let osd_nodes: Vec<(String, NodeState)> = self
            .peers()
            .into_iter()
            .filter(|(_, s)| s.units.contains_key("ceph-osd.target"))
            .collect();
        let osds_down: Vec<&String> = osd_nodes
            .iter()
            .filter(|(_, s)| s.units.get("ceph-osd.target").map(String::as_str) != Some("active"))
            .map(|(n, _)| n)
            .collect();
        let j = a.join(" ");
        match j.as_str() {
            "health" | "-s" => {
                let mut warn = Vec::new();
                if self.cluster.ceph_flags.contains("noout") {
                    warn.push("noout flag(s) set".to_string());
                }
                if !osds_down.is_empty() {
                    warn.push(format!("{} osds down", osds_down.len() * 2));
                }
                if mons_up < mons.len() {
                    warn.push(format!("{}/{} mons down", mons.len() - mons_up, mons.len()));
                }
                self.out = if warn.is_empty() {
                    "HEALTH_OK\n".into()
                } else {
                    format!("HEALTH_WARN {}\n", warn.join("; "))
                };
            }
            "osd set noout" | "osd unset noout" => {
                if a[1] == "set" {
                    self.cluster.ceph_flags.insert("noout".into());
                    self.err = "noout is set\n".into();
                } else {
                    self.cluster.ceph_flags.remove("noout");
                    self.err = "noout is unset\n".into();
                }
                self.mutated = true;
            }
            _ if j.starts_with("osd ok-to-stop ") => {
                // OSDs already down may be stopped again: only others count.
                let asked: Vec<&str> = a[2..].iter().map(String::as_str).collect();
                let others_down = osds_down
                    .iter()
                    .filter(|n| {
                        let idx = osd_nodes.iter().position(|(m, _)| m == **n).unwrap_or(0);
                        !asked.contains(&(idx * 2).to_string().as_str())
                    })
                    .count();
                if others_down > 0 {
                    return fail(
                        16,
                        format!(
                            "Error EBUSY: unsafe to stop osd(s) at this time ({} already down)",
                            others_down * 2
                        ),
                    );
                }
                self.out = "OSD(s) are ok to stop without reducing availability\n".into();
            }
            _ if j.starts_with("osd ls-tree ") => {
                let idx = osd_nodes.iter().position(|(n, _)| n == &a[2]).unwrap_or(0);
                self.out = format!("{}\n{}\n", idx * 2, idx * 2 + 1);
            }
            _ if j.starts_with("osd set require_") && j.ends_with("_osds") => {
                self.cluster.ceph_flags.insert(a[2].clone());
                self.mutated = true;
            }
            _ if j.starts_with("osd crush tunables ") => {
                self.cluster.ceph_tunables = a[3].clone();
                self.mutated = true;
            }
            _ => {
                return fail(
                    22,
                    format!("Error EINVAL: the simulator does not know `{j}`"),
                );
            }
        }
        Ok(())
    }

    fn haproxy(&mut self, a: &[String]) -> R {
        if a.first().map(String::as_str) == Some("-c") {
            self.out = "Configuration file is valid\n".into();
            return Ok(());
        }
        fail(
            1,
            "haproxy: the simulator only checks configurations (-c -f FILE)",
        )
    }

    /// `systemctl reboot|kexec`: the node goes down at once and comes back
    /// with a new boot after the milliseconds in `<node>/reboot-ms` (1500
    /// by default).
    fn reboot(&mut self) -> R {
        let ms: u64 = fs::read_to_string(self.root.join("reboot-ms"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1500);
        self.node.boot += 1;
        self.node.down_until_ms = now_ms() + ms;
        self.mutated = true;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("reboots.log"))
            .expect("reboots log");
        let _ = writeln!(log, "boot {}", self.node.boot);
        Ok(())
    }

    /// `cat FILE...` in the node's files; the boot identity under /proc.
    fn cat(&mut self, a: &[String]) -> R {
        for p in a {
            if p == "/proc/sys/kernel/random/boot_id" {
                self.out.push_str(&format!(
                    "5e1d{:04x}-sim-{}-boot-{}\n",
                    self.node.boot, self.name, self.node.boot
                ));
                continue;
            }
            match fs::read_to_string(self.fs_path(p)) {
                Ok(t) => self.out.push_str(&t),
                Err(_) => return fail(1, format!("cat: {p}: No such file or directory")),
            }
        }
        Ok(())
    }

    /// `tee FILE`: standard input to the node's file (and to stdout).
    fn tee(&mut self, a: &[String]) -> R {
        let mut input = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).ok();
        for p in a.iter().filter(|p| !p.starts_with('-')) {
            if fs::write(self.fs_path(p), &input).is_err() {
                return fail(1, format!("tee: {p}: No such file or directory"));
            }
        }
        self.out = input;
        self.mutated = true;
        Ok(())
    }

    /// `mkdir [-p] DIR...` in the node's files.
    fn mkdir(&mut self, a: &[String]) -> R {
        for p in a.iter().filter(|p| !p.starts_with('-')) {
            fs::create_dir_all(self.fs_path(p))
                .map_err(|e| (1, format!("mkdir: cannot create directory '{p}': {e}")))?;
        }
        self.mutated = true;
        Ok(())
    }

    /// `docker`/`podman`: `stop|start|restart|rm NAME`, `rmi|pull IMAGE`,
    /// `create --name NAME ... IMAGE`, `inspect -f {{.State.Running}} NAME`,
    /// `exec NAME PROGRAM ARGS...`. A container's start and stop are its
    /// unit's (the cluster logic stays the same); its image's tag is its
    /// package's version.
    fn engine(&mut self, prog: &str, a: &[String]) -> R {
        let words: Vec<&str> = a.iter().map(String::as_str).collect();
        let missing = |n: &str| {
            (
                125,
                format!("Error: no container with name or ID \"{n}\" found: no such container"),
            )
        };
        match words.as_slice() {
            [verb @ ("stop" | "start" | "restart"), name] => {
                let Some((_, running)) = self.node.containers.get(*name).cloned() else {
                    return Err(missing(name));
                };
                let unit = unit_of(name);
                let v = if *verb == "stop" { "stop" } else { "start" };
                if *verb == "stop" && !running {
                    return Ok(());
                }
                if *verb == "start" && self.node.bootstrap.contains(*name) {
                    self.galera_new_cluster()?;
                } else {
                    self.systemctl(&[v.to_string(), unit])?;
                }
                self.node.containers.get_mut(*name).expect("checked").1 = *verb != "stop";
                self.mutated = true;
                self.out = format!("{name}\n");
                Ok(())
            }
            ["rm", name] => match self.node.containers.get(*name) {
                None => Err(missing(name)),
                Some((_, true)) => fail(
                    2,
                    format!(
                        "Error: cannot remove container {name} as it is running - running or paused containers cannot be removed without force"
                    ),
                ),
                Some(_) => {
                    self.node.containers.remove(*name);
                    self.node.bootstrap.remove(*name);
                    self.mutated = true;
                    Ok(())
                }
            },
            ["rmi", image] => {
                if self.node.containers.values().any(|(i, _)| i == image) {
                    return fail(2, format!("Error: image used by a container: {image}"));
                }
                if !self.node.images.remove(*image) {
                    return fail(1, format!("Error: {image}: image not known"));
                }
                self.mutated = true;
                Ok(())
            }
            ["pull", image] => {
                self.node.images.insert(image.to_string());
                self.mutated = true;
                Ok(())
            }
            ["create", "--name", name, .., image] => {
                if self.node.containers.contains_key(*name) {
                    return fail(
                        125,
                        format!(
                            "Error: creating container storage: the container name \"{name}\" is already in use"
                        ),
                    );
                }
                if !self.node.images.contains(*image) {
                    return fail(125, format!("Error: {image}: image not known"));
                }
                let tag = image.rsplit_once(':').map_or("latest", |(_, t)| t);
                let unit = unit_of(name);
                self.node.packages.insert(unit.clone(), tag.to_string());
                self.node.units.insert(unit, "inactive".into());
                self.node
                    .containers
                    .insert(name.to_string(), (image.to_string(), false));
                if words.contains(&"BOOTSTRAP_ARGS=--wsrep-new-cluster") {
                    self.node.bootstrap.insert(name.to_string());
                }
                self.mutated = true;
                Ok(())
            }
            ["run", "--rm", "--volumes-from", name, image, program, ..] => {
                if !self.node.containers.contains_key(*name) {
                    return Err(missing(name));
                }
                // `run` pulls an image it does not have.
                if self.node.images.insert(image.to_string()) {
                    self.mutated = true;
                }
                let program = program.to_string();
                self.dispatch(&program, &a[6..])
            }
            ["inspect", "-f", "{{.State.Running}}", name] => {
                match self.node.containers.get(*name) {
                    None => Err(missing(name)),
                    Some((_, r)) => {
                        self.out = format!("{r}\n");
                        Ok(())
                    }
                }
            }
            ["exec", name, program, ..] => match self.node.containers.get(*name) {
                Some((_, true)) => {
                    let program = program.to_string();
                    self.dispatch(&program, &a[3..])
                }
                Some(_) => fail(
                    125,
                    format!(
                        "Error: can only create exec sessions on running containers: container {name} is not running"
                    ),
                ),
                None => Err(missing(name)),
            },
            _ => fail(
                125,
                format!(
                    "{prog}: the simulator does not know `{prog} {}`",
                    a.join(" ")
                ),
            ),
        }
    }

    /// Run one program of the node.
    fn dispatch(&mut self, prog: &str, a: &[String]) -> R {
        match prog {
            "systemctl" if matches!(a, [v] if v == "reboot" || v == "kexec") => self.reboot(),
            "cat" => self.cat(a),
            "tee" => self.tee(a),
            "mkdir" => self.mkdir(a),
            "pcs" => self.pcs(a),
            "crm_resource" => Ok(()),
            "docker" | "podman" => self.engine(prog, a),
            "systemctl" => self.systemctl(a),
            "mysql" => self.mysql(a),
            "mysqldump" => self.mysqldump(a),
            "galera_new_cluster" => self.galera_new_cluster(),
            "galera_recovery" => self.galera_recovery(),
            "sha256sum" => self.sha256sum(a),
            "touch" | "rm" | "chown" | "sed" => self.files(prog, a),
            "apt-get" => self.apt_get(a),
            "rabbitmqctl" => self.rabbitmqctl(a),
            "keystone-manage" | "nova-manage" | "neutron-db-manage" | "placement-manage"
            | "glance-manage" => self.manage(prog, a),
            "python3" => self.dashboard(a),
            "crudini" => self.crudini(a),
            "openstack" => self.openstack(a),
            "ceph" => self.ceph(a),
            "haproxy" => self.haproxy(a),
            "sleep" => self.sleep(a),
            other => Err((127, format!("{other}: command not found"))),
        }
    }

    /// Horizon's `python3 /usr/share/openstack-dashboard/manage.py
    /// collectstatic|compress ...`: needs the dashboard installed.
    fn dashboard(&mut self, a: &[String]) -> R {
        match a {
            [script, verb, ..]
                if script == "/usr/share/openstack-dashboard/manage.py"
                    && (verb == "collectstatic" || verb == "compress") =>
            {
                if !self.node.packages.contains_key("openstack-dashboard") {
                    return fail(
                        2,
                        format!(
                            "python3: can't open file '{script}': [Errno 2] No such file or directory"
                        ),
                    );
                }
                self.mutated = true;
                self.out = format!("{verb}: done\n");
                Ok(())
            }
            _ => fail(
                2,
                format!(
                    "python3: the simulator runs only Horizon's manage.py, not `{}`",
                    a.join(" ")
                ),
            ),
        }
    }

    /// How many cluster nodes are not online.
    fn pcs_out(&self) -> usize {
        self.cluster
            .pacemaker
            .values()
            .filter(|s| s.as_str() != "online")
            .count()
    }

    fn pcs_set(&mut self, node: &str, state: &str) -> R {
        if !self.cluster.pacemaker.contains_key(node) {
            return fail(
                1,
                format!("Error: node '{node}' does not appear to exist in configuration"),
            );
        }
        self.cluster.pacemaker.insert(node.into(), state.into());
        self.mutated = true;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.nodes_dir().join("pacemaker.log"))
            .expect("pacemaker log");
        let _ = writeln!(log, "{node} {state} out={}", self.pcs_out());
        Ok(())
    }

    /// Pacemaker's `pcs`: `status nodes`, `status resources`, `node
    /// standby|unstandby NODE`, `cluster stop|start [NODE]`.
    fn pcs(&mut self, a: &[String]) -> R {
        let words: Vec<&str> = a
            .iter()
            .map(String::as_str)
            .filter(|w| !w.starts_with("--"))
            .collect();
        match words.as_slice() {
            ["status", "nodes"] => {
                let of = |st: &str| {
                    self.cluster
                        .pacemaker
                        .iter()
                        .filter(|(_, s)| s.as_str() == st)
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                self.out = format!(
                    "Pacemaker Nodes:\n Online: {}\n Standby: {}\n Maintenance:\n Offline: {}\n",
                    of("online"),
                    of("standby"),
                    of("offline")
                );
                Ok(())
            }
            ["status", "resources"] | ["status"] => {
                let online: Vec<&str> = self
                    .cluster
                    .pacemaker
                    .iter()
                    .filter(|(_, s)| s.as_str() == "online")
                    .map(|(n, _)| n.as_str())
                    .collect();
                self.out = format!(
                    "  * Clone Set: haproxy-clone [haproxy]:\n    * Started: [ {} ]\n  * ip-192.168.24.10 (ocf:heartbeat:IPaddr2): Started {}\n",
                    online.join(" "),
                    online.first().copied().unwrap_or("(none)")
                );
                if online.is_empty() {
                    return fail(1, "Error: cluster is not currently running on this node");
                }
                Ok(())
            }
            ["node", "standby", n] => self.pcs_set(n, "standby"),
            ["node", "unstandby", n] => self.pcs_set(n, "online"),
            ["cluster", "stop"] => {
                let n = self.name.clone();
                self.pcs_set(&n, "offline")
            }
            ["cluster", "stop", n] => self.pcs_set(n, "offline"),
            ["cluster", "start"] => {
                let n = self.name.clone();
                self.pcs_set(&n, "online")
            }
            ["cluster", "start", n] => self.pcs_set(n, "online"),
            _ => fail(
                1,
                format!("pcs: the simulator does not know `pcs {}`", a.join(" ")),
            ),
        }
    }

    fn sleep(&mut self, a: &[String]) -> R {
        let s: f64 = a.first().and_then(|x| x.parse().ok()).unwrap_or(0.0);
        std::thread::sleep(std::time::Duration::from_secs_f64(s.min(60.0)));
        Ok(())
    }
}

fn init(dir: &Path, release: &str, containers: bool, nodes: &[String]) {
    let nodes_dir = dir.join("nodes");
    let _ = fs::remove_dir_all(&nodes_dir);
    let exe = std::env::current_exe().expect("current exe");
    let tools = [
        "systemctl",
        "mysql",
        "mysqldump",
        "galera_new_cluster",
        "galera_recovery",
        "sha256sum",
        "touch",
        "rm",
        "chown",
        "sed",
        "apt-get",
        "rabbitmqctl",
        "keystone-manage",
        "nova-manage",
        "neutron-db-manage",
        "placement-manage",
        "glance-manage",
        "python3",
        "crudini",
        "openstack",
        "ceph",
        "haproxy",
        "sleep",
        "cat",
        "tee",
        "mkdir",
        "pcs",
        "crm_resource",
        "docker",
        "podman",
    ];
    let mut cluster = Cluster::default();
    cluster.db.insert(
        "keystone.project".into(),
        vec!["admin".into(), "service".into(), "demo".into()],
    );
    cluster.db.insert(
        "nova.instances".into(),
        (1..=5).map(|i| format!("vm-{i}")).collect(),
    );
    cluster.schema.insert("keystone".into(), release.into());
    cluster.schema.insert("nova".into(), release.into());
    cluster.services.insert("keystone".into());
    cluster.users.insert("admin".into());
    cluster.endpoints = vec![
        "identity public http://vip:5000/v3".into(),
        "identity internal http://vip:5000/v3".into(),
        "identity admin http://vip:35357/v3".into(),
    ];
    cluster.ceph_tunables = "hammer".into();
    cluster.bootstrap = nodes.first().cloned();
    for spec in nodes {
        // NAME:role,role
        let (name, roles) = spec.split_once(':').unwrap_or((spec, ""));
        let root = nodes_dir.join(name);
        fs::create_dir_all(root.join("bin")).expect("mkdir");
        fs::create_dir_all(root.join("fs/var/lib/mysql")).expect("mkdir");
        fs::create_dir_all(root.join("fs/var/lib/rabbitmq/mnesia")).expect("mkdir");
        fs::write(root.join("fs/var/lib/mysql/grastate.dat"), "seqno: -1\n").expect("write");
        for t in tools {
            let _ = std::os::unix::fs::symlink(&exe, root.join("bin").join(t));
        }
        let mut st = NodeState::default();
        for role in roles.split(',') {
            let (pkgs, units): (&[&str], &[&str]) = match role {
                "controller" => (
                    &[
                        "mariadb-server",
                        "rabbitmq-server",
                        "haproxy",
                        "keystone",
                        "nova-api",
                        "nova-conductor",
                        "nova-scheduler",
                        "placement-api",
                        "neutron-server",
                        "neutron-l3-agent",
                        "neutron-openvswitch-agent",
                        "ceph-mon",
                        "glance-api",
                        "openstack-dashboard",
                    ],
                    &[
                        "mariadb",
                        "rabbitmq-server",
                        "haproxy",
                        "keystone",
                        "nova-api",
                        "nova-conductor",
                        "nova-scheduler",
                        "placement-api",
                        "neutron-server",
                        "neutron-l3-agent",
                        "neutron-openvswitch-agent",
                        "glance-api",
                        "apache2",
                    ],
                ),
                "compute" => (&["nova-compute"], &["nova-compute"]),
                "storage" => (&["ceph-osd"], &["ceph-osd.target"]),
                _ => (&[], &[]),
            };
            for p in pkgs {
                st.packages.insert((*p).into(), release.into());
            }
            for u in units {
                st.units.insert((*u).into(), "active".into());
            }
            if role == "controller" {
                st.units.insert(format!("ceph-mon@{name}"), "active".into());
                st.packages.insert("pacemaker".into(), "1.1.15".into());
                st.units.insert("pacemaker".into(), "active".into());
                cluster.pacemaker.insert(name.to_string(), "online".into());
            }
        }
        st.seqno = 100;
        if containers {
            // kolla's deployment: each OpenStack unit runs in its
            // container, image tagged with the release.
            for u in [
                "mariadb",
                "rabbitmq-server",
                "keystone",
                "nova-api",
                "nova-conductor",
                "nova-scheduler",
                "neutron-server",
                "neutron-l3-agent",
                "neutron-openvswitch-agent",
                "nova-compute",
            ] {
                if st.units.contains_key(u) {
                    // The demo's versions: MariaDB 10.1, RabbitMQ 3.6.
                    let (name, tag) = match u {
                        "rabbitmq-server" => ("rabbitmq".to_string(), "3.6"),
                        "mariadb" => ("mariadb".to_string(), "10.1"),
                        _ => (u.replace('-', "_"), release),
                    };
                    let image = format!("kolla/{name}:{tag}");
                    st.images.insert(image.clone());
                    st.containers.insert(name, (image, true));
                }
            }
        }
        write_json(&root.join("state.json"), &st);
    }
    write_json(&nodes_dir.join("cluster.json"), &cluster);
    println!(
        "initialised {} simulated node(s) in {}",
        nodes.len(),
        nodes_dir.display()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let prog = Path::new(&args[0])
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if prog == "uphost-demo-sim" {
        match args.get(1).map(String::as_str) {
            Some("__listen") if args.len() == 3 => {
                // A simulated service's port: accept and close, until killed.
                let port: u16 = args[2].parse().expect("port");
                let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
                for c in l.incoming() {
                    drop(c);
                }
            }
            Some("init") if args.len() >= 4 => {
                let mut rest = &args[3..];
                let mut release = "newton";
                let mut containers = false;
                loop {
                    match rest {
                        [flag, r, tail @ ..] if flag == "--release" => {
                            release = r;
                            rest = tail;
                        }
                        [flag, tail @ ..] if flag == "--containers" => {
                            containers = true;
                            rest = tail;
                        }
                        _ => break,
                    }
                }
                init(Path::new(&args[2]), release, containers, rest)
            }
            _ => {
                eprintln!(
                    "usage: uphost-demo-sim init DIR [--release R] [--containers] NAME:role[,role]..."
                );
                std::process::exit(2);
            }
        }
        return;
    }
    let Some(root) = std::env::var_os("UPHOST_NODE_ROOT").map(PathBuf::from) else {
        eprintln!("{prog}: UPHOST_NODE_ROOT is not set (run through uphost's local transport)");
        std::process::exit(127);
    };
    let name = std::env::var("UPHOST_NODE").unwrap_or_else(|_| {
        root.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let nodes_dir = root.parent().expect("node root has a parent").to_path_buf();
    // One simulator at a time per cluster: a flock on the nodes directory.
    let lockf = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(nodes_dir.join(".lock"))
        .expect("lock file");
    rustix::fs::flock(&lockf, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let a = &args[1..];
    let argv_line = std::iter::once(prog.clone())
        .chain(a.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    // Fault injection.
    let faults_path = root.join("faults.json");
    if let Ok(text) = fs::read_to_string(&faults_path) {
        let mut faults: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
        let argv: Vec<String> = std::iter::once(prog.clone())
            .chain(a.iter().cloned())
            .collect();
        if let Some(i) = faults.iter().position(|f| {
            serde_json::from_value::<Fault>(f.clone())
                .map(|f| argv.starts_with(&f.argv))
                .unwrap_or(false)
        }) {
            let f: Fault = serde_json::from_value(faults[i].clone()).expect("checked");
            if f.times == 1 {
                faults.remove(i);
            } else if f.times > 1 {
                faults[i]["times"] = serde_json::json!(f.times - 1);
            }
            fs::write(&faults_path, serde_json::to_vec(&faults).expect("json"))
                .expect("write faults");
            if f.delay_s > 0.0 {
                // A slow command holds no lock while it takes its time:
                // the cluster's other nodes (and this one's other
                // commands) go on, as on real nodes.
                rustix::fs::flock(&lockf, rustix::fs::FlockOperation::Unlock).expect("unlock");
                std::thread::sleep(std::time::Duration::from_secs_f64(f.delay_s.min(60.0)));
                rustix::fs::flock(&lockf, rustix::fs::FlockOperation::LockExclusive)
                    .expect("flock");
            }
            if f.status != 0 {
                eprintln!("{}", f.stderr);
                std::process::exit(f.status);
            }
        }
    }
    let mut sim = Sim {
        node: read_json(&root.join("state.json")),
        cluster: read_json(&nodes_dir.join("cluster.json")),
        root: root.clone(),
        name,
        mutated: false,
        out: String::new(),
        err: String::new(),
    };
    if now_ms() < sim.node.down_until_ms {
        eprintln!(
            "ssh: connect to host {} port 22: Connection refused",
            sim.name
        );
        std::process::exit(255);
    }
    if prog == "sleep" {
        // It reads and writes no state: the other nodes' commands go on
        // while it waits, as for a slow command above.
        rustix::fs::flock(&lockf, rustix::fs::FlockOperation::Unlock).expect("unlock");
    }
    let res = sim.dispatch(&prog, a);
    if sim.mutated {
        write_json(&root.join("state.json"), &sim.node);
        write_json(&nodes_dir.join("cluster.json"), &sim.cluster);
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("ops.log"))
            .expect("ops log");
        let _ = writeln!(log, "{argv_line}");
        let _ = log.sync_data();
    }
    print!("{}", sim.out);
    eprint!("{}", sim.err);
    if let Err((status, msg)) = res {
        if !msg.is_empty() {
            eprintln!("{msg}");
        }
        std::process::exit(status);
    }
}
