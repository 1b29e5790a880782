//! Probes through the real binary: a TCP probe on the port a simulated
//! keystone listens on while it runs (the demo simulator closes it when
//! keystone stops) measures the outage inside keystone's steps; a command
//! probe beside it; a probe past its budget halts the run.

use std::process::Command;

use serde_json::Value;
use uphost_tests::{Demo, SEED_PLUGINS};

/// Keystone on ctl1 listens on a free port while active; killed on drop.
struct Listening<'a> {
    d: &'a Demo,
    port: u16,
}

impl<'a> Listening<'a> {
    fn keystone(d: &'a Demo) -> Listening<'a> {
        let port = uphost_tests::free_port();
        let root = d.path().join("nodes/ctl1");
        std::fs::write(root.join("ports.json"), format!("{{\"keystone\": {port}}}")).unwrap();
        let st = Command::new(root.join("bin/systemctl"))
            .args(["start", "keystone"])
            .env("UPHOST_NODE_ROOT", &root)
            .env("UPHOST_NODE", "ctl1")
            .status()
            .unwrap();
        assert!(st.success());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        Listening { d, port }
    }
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        let pidf = self.d.path().join("nodes/ctl1/listen-keystone.pid");
        if let Some(pid) = std::fs::read_to_string(pidf)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

fn add_probes(d: &Demo, yaml: &str) {
    let services = d.path().join("services.yaml");
    let mut text = std::fs::read_to_string(&services).unwrap();
    text.push_str(yaml);
    std::fs::write(&services, text).unwrap();
}

fn at(j: &[Value], event: &str, service: &str, phase: &str) -> u64 {
    j.iter()
        .find(|e| {
            e["event"] == event && e["step"]["service"] == service && e["step"]["phase"] == phase
        })
        .and_then(|e| e["at_ms"].as_u64())
        .unwrap_or_else(|| panic!("no {event} of {service} {phase}"))
}

#[test]
fn a_probe_measures_the_outage_inside_the_service_steps() {
    let d = Demo::new(SEED_PLUGINS, true);
    let l = Listening::keystone(&d);
    // Keystone stays down while its database migrates: half a second.
    d.slow("ctl1", &["keystone-manage"], 0.5);
    add_probes(
        &d,
        &format!(
            "probes:\n  - name: keystone-api\n    service: keystone\n    tcp: \"127.0.0.1:{}\"\n    interval_ms: 20\n    budget_s: 60\n  - name: keystone-unit\n    command: {{node: ctl2, argv: [systemctl, is-active, keystone], expect: active}}\n    interval_ms: 50\n",
            l.port
        ),
    );
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = d.journal();
    let changes: Vec<(bool, u64)> = j
        .iter()
        .filter(|e| e["event"] == "probe" && e["name"] == "keystone-api")
        .map(|e| (e["up"].as_bool().unwrap(), e["at_ms"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        changes.iter().map(|c| c.0).collect::<Vec<_>>(),
        [true, false, true],
        "up, one outage, up again: {changes:?}"
    );
    let (down, up) = (changes[1].1, changes[2].1);
    let pre = at(&j, "step-started", "keystone", "pre-upgrade");
    let post = at(&j, "step-finished", "keystone", "post-upgrade");
    assert!(
        pre <= down && down <= post,
        "outage began at {down} ms, keystone ran {pre}..{post}"
    );
    assert!(
        up > down && up <= post + 1000,
        "back at {up} ms, post-upgrade ended at {post}"
    );
    let summary = j
        .iter()
        .find(|e| e["event"] == "probe-summary" && e["name"] == "keystone-api")
        .expect("its figures at the end");
    assert_eq!(summary["outages"], 1);
    assert!(
        up - down >= 500,
        "the migration alone took 0.5 s: {changes:?}"
    );
    assert_eq!(summary["down_ms"], up - down);
    assert_eq!(summary["longest_ms"], up - down);
    assert!(summary["samples"].as_u64().unwrap() >= 3);
    // The run-finished record is the last: the figures come before it.
    assert_eq!(j.last().unwrap()["event"], "run-finished");
    // The command probe saw keystone stopped on ctl2 as well.
    let unit = j
        .iter()
        .find(|e| e["event"] == "probe-summary" && e["name"] == "keystone-unit")
        .unwrap();
    assert_eq!(unit["outages"], 1, "{unit}");
    // status and the report carry the same figures.
    let st = d.status();
    assert_eq!(st["probes"]["keystone-api"]["down_ms"], up - down);
    assert_eq!(st["probes"]["keystone-api"]["service"], "keystone");
    let text = d.uphost(&["status"]);
    assert!(
        text.stdout.contains("probe keystone-api (keystone): down"),
        "{}",
        text.stdout
    );
    let report = d.report();
    assert!(report.contains("<h2>Measured downtime</h2>"));
    assert_eq!(
        report.matches("class=\"failed outage\"").count(),
        2,
        "one outage per probe on the timeline"
    );
}

#[test]
fn a_probe_past_its_budget_halts_the_run() {
    let d = Demo::new(SEED_PLUGINS, true);
    let port = uphost_tests::free_port();
    add_probes(
        &d,
        &format!(
            "probes:\n  - name: vip\n    tcp: \"127.0.0.1:{port}\"\n    interval_ms: 50\n    budget_s: 0.2\n"
        ),
    );
    d.slow("ctl1", &["mysqldump"], 1.0);
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("FAILED: probe `vip` has been down")
            && r.stderr.contains("over its budget of 0.2 s"),
        "{}",
        r.stderr
    );
    let st = d.status();
    assert_eq!(st["outcome"], "failed");
    assert!(
        st["probes"]["vip"]["down_ms"].as_u64().unwrap() > 200,
        "{st}"
    );
    // A warning instead goes on.
    let d = Demo::new(SEED_PLUGINS, true);
    add_probes(
        &d,
        &format!(
            "probes:\n  - name: vip\n    tcp: \"127.0.0.1:{port}\"\n    interval_ms: 50\n    budget_s: 0.2\n    on_budget: warn\n"
        ),
    );
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn bad_probes_are_refused_before_anything_runs() {
    let d = Demo::new(SEED_PLUGINS, true);
    for (yaml, want) in [
        ("probes:\n  - name: a\n    tcp: nowhere\n", "probes[0].tcp"),
        (
            "probes:\n  - name: a\n    http: ftp://vip/\n",
            "is not http://HOST[:PORT]/PATH or https://",
        ),
        (
            "probes:\n  - name: a\n    http: http://vip/\n    ca_file: ca.pem\n",
            "a CA file is for an https:// probe",
        ),
        (
            "probes:\n  - name: a\n    tcp: \"h:1\"\n    http: http://h/\n",
            "exactly one of",
        ),
        (
            "probes:\n  - name: a\n    command: {node: ctl9, argv: [true]}\n",
            "`ctl9` is not a node",
        ),
        (
            "probes:\n  - name: a\n    tcp: \"h:1\"\n    service: keystne\n",
            "did you mean `keystone`",
        ),
    ] {
        let services = d.path().join("services.yaml");
        let base = std::fs::read_to_string(&services).unwrap();
        std::fs::write(&services, format!("{base}{yaml}")).unwrap();
        let r = d.uphost(&["run", "--yes"]);
        assert_eq!(r.code, 2, "{yaml}: {}", r.all());
        assert!(r.stderr.contains(want), "{yaml}: {}", r.stderr);
        std::fs::write(&services, base).unwrap();
    }
    assert!(!d.path().join("state/current").exists());
}

#[test]
fn a_gate_that_never_becomes_healthy_stops_the_run_and_resume_continues_once_it_is() {
    let d = Demo::new(SEED_PLUGINS, true);
    let port = uphost_tests::free_port();
    add_probes(
        &d,
        &format!("probes:\n  - name: api\n    tcp: \"127.0.0.1:{port}\"\n    interval_ms: 20\n"),
    );
    d.edit(
        "services.yaml",
        "    rollout: {serial: 2}",
        "    rollout: {serial: 2}\n    gate: {probes: [api], samples: 2, deadline_s: 1}",
    );
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("gate before batch 1 of nova-compute: probe `api` was not healthy for 2 consecutive samples within 1 s; last: connect 127.0.0.1:"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("refused"),
        "the probe's last result: {}",
        r.stderr
    );
    assert!(d.ops("cmp1").is_empty(), "no compute touched");
    // The service it guards becomes reachable: resume waits for the gate
    // again, which passes, and completes.
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || for _ in l.incoming() {});
    let r = d.uphost(&["resume", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = d.journal();
    let gates: Vec<(u64, bool)> = j
        .iter()
        .filter(|e| e["event"] == "gate-checked" && e["node"].is_null())
        .map(|e| (e["batch"].as_u64().unwrap(), e["passed"].as_bool().unwrap()))
        .collect();
    assert_eq!(gates, [(0, false), (0, true), (1, true)], "{gates:?}");
    assert_eq!(d.status()["complete"], true);
    // `on_timeout: pause` pauses instead, for `resume`.
    let d = Demo::new(SEED_PLUGINS, true);
    add_probes(
        &d,
        "probes:\n  - name: api\n    tcp: \"127.0.0.1:9\"\n    interval_ms: 20\n",
    );
    d.edit(
        "services.yaml",
        "    rollout: {serial: 2}",
        "    rollout: {serial: 2}\n    gate: {probes: [api], samples: 2, deadline_s: 1, on_timeout: pause}",
    );
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 130, "{}", r.all());
    assert!(
        d.status()["paused"]
            .as_str()
            .unwrap()
            .contains("gate before batch 1 of nova-compute")
    );
}

/// A probe a plugin declares (haproxy: `systemctl is-active haproxy`,
/// covered by its own read-only capability) is shown for approval and by
/// `plugins inspect`, and sampled on each of its nodes during a run, its
/// figures journaled per node.
#[test]
fn a_plugins_declared_probe_is_shown_and_sampled_on_each_node() {
    let d = Demo::new(&["haproxy"], true);
    let r = d.uphost(&["plugins", "inspect", "haproxy"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(
            "probes:\n  active: `systemctl is-active haproxy` printing `active` on each node, every 1000 ms"
        ),
        "{}",
        r.stdout
    );
    // Slow enough for the probes to sample while the nodes restart.
    for n in ["ctl1", "ctl2", "ctl3"] {
        d.slow(n, &["apt-get"], 1.0);
    }
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = d.journal();
    for n in ["ctl1", "ctl2", "ctl3"] {
        let name = format!("haproxy/active@{n}");
        let s = j
            .iter()
            .find(|e| e["event"] == "probe-summary" && e["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no figures for {name}"));
        assert_eq!(s["service"], "haproxy");
        assert!(s["samples"].as_u64().unwrap() >= 2, "{s}");
        assert_eq!(s["down_ms"], 0, "{s}");
    }
    assert!(d.report().contains("haproxy/active@ctl2"));
}

/// An `https://` probe verifies the server's certificate: against a private
/// CA given by `ca_file` it is up through the run; without it the same
/// server is down, the reason naming the certificate.
#[test]
fn an_https_probe_verifies_the_certificate() {
    let d = Demo::new(&["haproxy"], true);
    let dir = d.path();
    // A private CA, and the server's certificate it signs (for 127.0.0.1).
    let openssl = |args: &[&str]| {
        let st = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian's openssl package)");
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-days",
                "2",
                "-subj",
                "/CN=uphost test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    let port = uphost_tests::free_port();
    let server = format!(
        "import http.server, ssl\n\
         class H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n    def log_message(self, *a): pass\n\
         s = http.server.ThreadingHTTPServer(('127.0.0.1', {port}), H)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('server.pem', 'key.pem')\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n"
    );
    let mut py = Command::new("python3")
        .arg("-c")
        .arg(server)
        .current_dir(dir)
        .spawn()
        .unwrap();
    uphost_tests::wait_until(
        "the https server",
        std::time::Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    add_probes(
        &d,
        &format!(
            "probes:\n  - {{name: api-tls, http: \"https://127.0.0.1:{port}/v3\", ca_file: ca.pem, interval_ms: 100}}\n  - {{name: api-untrusted, http: \"https://127.0.0.1:{port}/v3\", interval_ms: 100}}\n"
        ),
    );
    for n in ["ctl1", "ctl2", "ctl3"] {
        d.slow(n, &["apt-get"], 0.3);
    }
    let r = d.uphost(&["run", "--yes"]);
    let _ = py.kill();
    let _ = py.wait();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = d.journal();
    let summary = |name: &str| {
        j.iter()
            .find(|e| e["event"] == "probe-summary" && e["name"] == name)
            .unwrap_or_else(|| panic!("no figures for {name}"))
            .clone()
    };
    let ok = summary("api-tls");
    assert!(ok["samples"].as_u64().unwrap() >= 3, "{ok}");
    assert_eq!(ok["down_ms"], 0, "{ok}");
    let first_untrusted = j
        .iter()
        .find(|e| e["event"] == "probe" && e["name"] == "api-untrusted")
        .unwrap();
    assert_eq!(first_untrusted["up"], false);
    assert!(
        first_untrusted["detail"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{first_untrusted}"
    );
    // A CA file for a plain-HTTP probe, or one that holds no certificate,
    // is refused before anything runs.
    let d = Demo::new(&["haproxy"], true);
    std::fs::write(d.path().join("empty.pem"), "not a certificate\n").unwrap();
    add_probes(
        &d,
        "probes:\n  - {name: api, http: \"https://127.0.0.1:1/\", ca_file: empty.pem}\n",
    );
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("probes[0].ca_file"), "{}", r.stderr);
    assert!(r.stderr.contains("holds no certificate"), "{}", r.stderr);
}
