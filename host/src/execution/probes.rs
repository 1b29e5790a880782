//! Probes beside a run: each of the operator's probes (the services file's
//! `probes:`) is sampled at its interval from the start of the run to its
//! end, on its own task, so it never slows a step. A state change (and the
//! first sample) is journaled as `probe`; at the end each probe's figures
//! (`probe-summary`: samples, outages, time down, longest outage). An
//! outage past a probe's budget warns, or halts the run at the next step
//! boundary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::{Inventory, OnBudget, ProbeConfig};
use crate::events::{Event, ProbeTally, Sink};
use crate::transport::{CommandSpec, Transport};

/// What every probe saw last, for the gates before batches: how many
/// samples it took and how many of the last ones in a row were healthy.
#[derive(Default)]
pub struct ProbeBoard {
    seen: std::sync::Mutex<std::collections::BTreeMap<String, Seen>>,
}

#[derive(Default, Clone)]
struct Seen {
    samples: u64,
    streak: u64,
    last: String,
}

impl ProbeBoard {
    fn saw(&self, name: &str, res: &Result<(), String>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let s = seen.entry(name.to_string()).or_default();
        s.samples += 1;
        match res {
            Ok(()) => {
                s.streak += 1;
                s.last = "up".into();
            }
            Err(e) => {
                s.streak = 0;
                s.last = e.clone();
            }
        }
    }

    fn get(&self, name: &str) -> Seen {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Wait until each of `gate`'s probes was healthy for its number of
    /// consecutive samples, all taken since the wait began; `Err` names
    /// the probe that was not, and what it saw last, at the deadline.
    pub async fn wait_healthy(&self, gate: &crate::config::BatchGate) -> Result<String, String> {
        let need = gate.samples.unwrap_or(3);
        let deadline = Duration::from_secs(gate.deadline_s.unwrap_or(300));
        let t0 = std::time::Instant::now();
        let start: Vec<u64> = gate.probes.iter().map(|p| self.get(p).samples).collect();
        loop {
            let lacking = gate.probes.iter().zip(&start).find_map(|(p, s0)| {
                let s = self.get(p);
                let fresh = s.samples.saturating_sub(*s0);
                (s.streak.min(fresh) < need).then(|| (p.clone(), s))
            });
            match lacking {
                None => {
                    return Ok(format!(
                        "{} healthy for {need} samples after {:.1} s",
                        gate.probes.join(", "),
                        t0.elapsed().as_secs_f64()
                    ));
                }
                Some((p, s)) if t0.elapsed() >= deadline => {
                    return Err(format!(
                        "probe `{p}` was not healthy for {need} consecutive samples within {} s; last: {}",
                        deadline.as_secs(),
                        if s.samples == 0 {
                            "no sample yet"
                        } else {
                            s.last.as_str()
                        }
                    ));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

/// The probes of a run, sampling until [`Probes::stop`].
pub struct Probes {
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What one probe looks at, resolved from its configuration.
enum Target {
    Tcp(String),
    Http {
        host: String,
        port: u16,
        path: String,
        expect: Option<u16>,
        /// `https://`: how to verify the server.
        tls: Option<Arc<rustls::ClientConfig>>,
    },
    Command {
        node: Arc<crate::config::NodeSpec>,
        argv: Vec<String>,
        expect: Option<String>,
    },
}

/// `GET path` over `s`: its status is the one expected (any 2xx or 3xx by
/// default).
async fn http_get<S>(mut s: S, host: &str, path: &str, expect: Option<u16>) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: uphost-probe\r\n\r\n")
            .as_bytes(),
    )
    .await
    .map_err(|e| format!("send: {e}"))?;
    let mut head = vec![0u8; 64];
    let n = s.read(&mut head).await.map_err(|e| format!("read: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "no HTTP status line".to_string())?;
    let ok = match expect {
        Some(want) => status == want,
        None => (200..400).contains(&status),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// The TLS client of an `https://` probe: the public CAs (Mozilla's, as
/// webpki-roots carries them), and those of its `ca_file`.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(f) = ca_file {
        for c in crate::config::read_ca_file(f)? {
            roots.add(c).map_err(|e| format!("{}: {e}", f.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// One sample: up, or down and why.
async fn sample(t: &Target, timeout: Duration, transport: &dyn Transport) -> Result<(), String> {
    match t {
        Target::Tcp(addr) => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
                Err(_) => Err(format!(
                    "connect {addr}: no answer within {} ms",
                    timeout.as_millis()
                )),
            }
        }
        Target::Http {
            host,
            port,
            path,
            expect,
            tls,
        } => {
            let work = async {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("connect {host}:{port}: {e}"))?;
                let Some(cfg) = tls else {
                    return http_get(s, host, path, *expect).await;
                };
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("`{host}` is not a server name: {e}"))?;
                let s = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, s)
                    .await
                    .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
                http_get(s, host, path, *expect).await
            };
            tokio::time::timeout(timeout, work)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())))
        }
        Target::Command { node, argv, expect } => {
            let spec = CommandSpec::operator(argv, timeout);
            match transport.exec(node, &spec).await {
                Ok(o) if o.status != 0 => Err(format!("{} exited {}", argv[0], o.status)),
                Ok(o) => match expect {
                    Some(want) if !String::from_utf8_lossy(&o.stdout).contains(want.as_str()) => {
                        Err(format!("{}: its output lacks `{want}`", argv[0]))
                    }
                    _ => Ok(()),
                },
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// What the probes share with the end of the run: once `ended`, no probe
/// records anything more (the figures are written just before the run's
/// end, nothing after it).
#[derive(Default)]
struct Shared {
    ended: bool,
    figures: Vec<Figure>,
}

/// One probe's count so far.
struct Figure {
    name: String,
    service: Option<String>,
    budget_ms: Option<u64>,
    samples: u64,
    tally: ProbeTally,
}

impl Probes {
    /// Start sampling `probes`, journaling to `journal`; a probe past a
    /// `fail` budget calls `halt`. Also returns what records their figures,
    /// to be called just before the run's end (`Runner::before_end`).
    pub fn start(
        probes: &[ProbeConfig],
        inventory: &Inventory,
        transport: Arc<dyn Transport>,
        journal: Arc<dyn Sink>,
        halt: Arc<dyn Fn(String) + Send + Sync>,
        board: Arc<ProbeBoard>,
    ) -> (Probes, Box<dyn FnOnce() + Send>) {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let shared = Arc::new(std::sync::Mutex::new(Shared::default()));
        let mut tasks = Vec::new();
        for p in probes {
            let target = if let Some(t) = &p.tcp {
                Target::Tcp(t.clone())
            } else if let Some(u) = p.http.as_deref().and_then(crate::config::probe_url) {
                let tls = if u.tls {
                    match tls_config(p.ca_file.as_deref()) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::warn!(probe = %p.name, error = %e, "probe not started");
                            continue;
                        }
                    }
                } else {
                    None
                };
                Target::Http {
                    host: u.host,
                    port: u.port,
                    path: u.path,
                    expect: p.expect_status,
                    tls,
                }
            } else if let Some(c) = &p.command
                && let Some(node) = inventory.node(&c.node)
            {
                Target::Command {
                    node: Arc::new(node.clone()),
                    argv: c.argv.clone(),
                    expect: c.expect.clone(),
                }
            } else {
                continue; // config validation refused it already
            };
            let budget_ms = p.budget_s.map(|b| (b * 1000.0) as u64);
            let slot = {
                let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                sh.figures.push(Figure {
                    name: p.name.clone(),
                    service: p.service.clone(),
                    budget_ms,
                    samples: 0,
                    tally: ProbeTally::default(),
                });
                sh.figures.len() - 1
            };
            let p = p.clone();
            let (stop, wake, shared, board) =
                (stop.clone(), wake.clone(), shared.clone(), board.clone());
            let (transport, journal, halt) = (transport.clone(), journal.clone(), halt.clone());
            tasks.push(tokio::spawn(async move {
                let interval = Duration::from_millis(p.interval_ms.unwrap_or(500));
                let timeout = Duration::from_millis(p.timeout_ms.unwrap_or(1000));
                let mut over = false;
                while !stop.load(Ordering::SeqCst) {
                    let res = sample(&target, timeout, transport.as_ref()).await;
                    board.saw(&p.name, &res);
                    let over_budget = {
                        let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                        if sh.ended {
                            return;
                        }
                        let now = journal.now_ms();
                        let Figure { samples, tally, .. } = &mut sh.figures[slot];
                        *samples += 1;
                        let up = res.is_ok();
                        if tally.up != Some(up) {
                            let detail = res.err().unwrap_or_default();
                            let detail = crate::untrusted::line_max(&detail, 400).into_owned();
                            journal.emit(Event::Probe {
                                name: p.name.clone(),
                                up,
                                detail: detail.clone(),
                                at_ms: now,
                            });
                            tally.observe(up, &detail, now);
                        }
                        budget_ms.filter(|b| !over && tally.down_at(now) > *b).map(|b| {
                            format!(
                                "probe `{}` has been down {:.1} s in all, over its budget of {:.1} s",
                                p.name,
                                tally.down_at(now) as f64 / 1000.0,
                                b as f64 / 1000.0
                            )
                        })
                    };
                    if let Some(why) = over_budget {
                        over = true;
                        match p.on_budget {
                            OnBudget::Warn => tracing::warn!("{why}"),
                            OnBudget::Fail => halt(why),
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = wake.notified() => {}
                    }
                }
            }));
        }
        let end = {
            let (shared, stop, journal) = (shared.clone(), stop.clone(), journal.clone());
            move || {
                let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                stop.store(true, Ordering::SeqCst);
                if sh.ended {
                    return;
                }
                sh.ended = true;
                let now = journal.now_ms();
                for f in &sh.figures {
                    journal.emit(Event::ProbeSummary {
                        name: f.name.clone(),
                        service: f.service.clone(),
                        samples: f.samples,
                        outages: f.tally.outages,
                        down_ms: f.tally.down_at(now),
                        longest_ms: f.tally.longest_at(now),
                        budget_ms: f.budget_ms,
                    });
                }
            }
        };
        (Probes { stop, wake, tasks }, Box::new(end))
    }

    /// Stop sampling (the run has ended: its figures are recorded).
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
