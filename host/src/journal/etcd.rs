//! The journal on etcd (opt-in, `etcd:` in uphost.yaml): the run lock is a
//! key bound to a lease the running uphost keeps alive, and every journal
//! record is copied, in order, into the deployment's prefix by a
//! transaction that succeeds only while that lock key is still the one
//! this uphost created (compare on its create revision). An uphost that
//! was frozen or cut off past its lease, and wakes up after a standby took
//! over, therefore cannot write a record, so it never starts a command
//! (a mutating command starts only once its intent is written).
//!
//! Keys under the prefix:
//!
//! | key | value |
//! | --- | --- |
//! | `lock` | the holder (JSON), bound to its lease |
//! | `current` | the id of the current run |
//! | `runs/<id>/j/<seq:012>.<part:04>` | journal record `seq` (its exact line, cut in parts of at most 512 KiB) |
//!
//! The local state directory stays the working copy every reader uses
//! (status, report, watch): a resume or a standby first writes the run's
//! journal there from etcd, byte for byte, so the checksum chain is the
//! same on every machine.
//!
//! `etcd-client` is async (tonic); the journal's sink is not. The store
//! owns a small runtime of its own and every call waits on a channel, so it
//! works from any thread, inside the host's runtime or not.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse,
};

use super::lock::Holder;
use crate::config::store::EtcdSettings;

/// A journal record is stored in parts of at most this many bytes (etcd
/// refuses requests above 1.5 MiB).
const PART: usize = 512 << 10;
/// Records per transaction at most (etcd's default `--max-txn-ops` is 128).
const OPS: usize = 100;
/// Bytes per transaction at most.
const TXN_BYTES: usize = 1 << 20;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No member answered.
    #[error(
        "etcd is unreachable at {endpoints} ({detail}); nothing was run. Check that the members are up and reachable from this machine, or remove `etcd:` from uphost.yaml to keep the state in the local directory"
    )]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// What the client said.
        detail: String,
    },
    /// Another uphost holds the deployment's run lock.
    #[error(
        "another uphost holds this deployment's run lock on etcd ({prefix}/lock): {holder}; wait for it to finish, or run `uphost standby` to take over if it dies"
    )]
    Busy {
        /// The key prefix.
        prefix: String,
        /// Who.
        holder: String,
    },
    /// This uphost no longer holds the lock: another took over.
    #[error(
        "fenced: this uphost no longer holds the run lock on etcd ({detail}); it writes nothing more and starts no command"
    )]
    Fenced {
        /// Who holds it now, or that nobody does.
        detail: String,
    },
    /// An operation failed (after retries within the lease).
    #[error("etcd {what} failed: {detail}")]
    Etcd {
        /// Which operation.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// What etcd holds is not a journal uphost wrote.
    #[error("the journal of run {run} on etcd is damaged at {key}: {detail}")]
    Damaged {
        /// The run.
        run: String,
        /// The key.
        key: String,
        /// Why.
        detail: String,
    },
    /// Writing the local copy.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A connection to the deployment's etcd.
pub struct Store {
    /// Always `Some` until dropped (taken to shut it down without
    /// blocking: the store may be dropped inside the host's runtime).
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    prefix: String,
    endpoints: String,
    lease_s: u64,
    /// The deadline of one request: a request stuck on a member that went
    /// away is abandoned in time to try another within the lease.
    attempt: Duration,
}

/// A held run lock on etcd.
pub struct Held {
    store: Arc<Store>,
    lease: i64,
    /// The lock key's create revision: the fence every write compares.
    revision: i64,
    lost: Arc<AtomicBool>,
    released: AtomicBool,
    keeper: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the run lock on {:?} (lease {:x})",
            self.store, self.lease
        )
    }
}

fn etcd_err(what: &'static str) -> impl Fn(etcd_client::Error) -> StoreError {
    move |e| StoreError::Etcd {
        what,
        detail: e.to_string(),
    }
}

/// Whether an error may pass on another attempt (a member went away, a
/// leader election), not a refusal.
fn transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Unknown
                | Code::Internal
                | Code::Aborted
                | Code::Cancelled
                | Code::ResourceExhausted
        ),
        etcd_client::Error::IoError(_)
        | etcd_client::Error::TransportError(_)
        | etcd_client::Error::LeaseKeepAliveError(_) => true,
        _ => false,
    }
}

impl Store {
    /// Connect to the members and check that one answers.
    pub fn connect(s: &EtcdSettings) -> Result<Arc<Store>, StoreError> {
        let endpoints = s.endpoints.join(", ");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("uphost-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Etcd {
                what: "runtime",
                detail: e.to_string(),
            })?;
        let wait = Duration::from_secs(s.connect_timeout_s);
        let eps = s.endpoints.clone();
        // No channel-wide request timeout: it would also end the lease's
        // keep-alive stream (gRPC deadlines cover a whole stream). Each
        // unary call gets its own deadline in `retry` instead.
        let attempt = attempt_time(s.lease_s);
        let opts = ConnectOptions::new()
            .with_connect_timeout(wait)
            .with_keep_alive(
                Duration::from_secs(1),
                Duration::from_secs(s.lease_s.max(2)),
            );
        let unreachable = |detail: String| StoreError::Unreachable {
            endpoints: endpoints.clone(),
            detail,
        };
        let client = on(&rt, async move {
            let t0 = Instant::now();
            let mut last = String::new();
            // The client connects lazily: a read proves a member answers.
            while t0.elapsed() < wait {
                match Client::connect(&eps, Some(opts.clone())).await {
                    Ok(mut c) => {
                        let probe = c.get("/", Some(GetOptions::new().with_count_only()));
                        match tokio::time::timeout(attempt, probe).await {
                            Ok(Ok(_)) => return Ok(c),
                            Ok(Err(e)) => last = e.to_string(),
                            Err(_) => last = format!("no answer within {attempt:?}"),
                        }
                    }
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(last)
        });
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                // Dropped here, maybe inside the host's runtime: no blocking.
                rt.shutdown_background();
                return Err(unreachable(e));
            }
        };
        Ok(Arc::new(Store {
            rt: Some(rt),
            client,
            prefix: s.prefix.clone(),
            endpoints,
            lease_s: s.lease_s,
            attempt,
        }))
    }

    /// The deployment's prefix as one path component (`/uphost/a` is
    /// `uphost_a`).
    pub fn tag(&self) -> String {
        self.prefix.trim_start_matches('/').replace('/', "_")
    }

    /// The deployment's key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the store")
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    fn journal_prefix(&self, run_id: &str) -> String {
        self.key(&format!("runs/{run_id}/j/"))
    }

    /// Run `f` (given a client) to completion on the store's runtime,
    /// retrying transient failures until `within` has passed.
    fn retry<T: Send + 'static, F, Fut>(
        &self,
        what: &'static str,
        within: Duration,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>> + Send,
    {
        self.retry_while(what, within, None, f)
    }

    /// As [`Store::retry`], and stopping early once `lost` is set (a write
    /// under the run lock is retried for as long as the lock may still be
    /// held: its fence makes a repeated write harmless).
    fn retry_while<T: Send + 'static, F, Fut>(
        &self,
        what: &'static str,
        within: Duration,
        lost: Option<Arc<AtomicBool>>,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>> + Send,
    {
        let client = self.client.clone();
        let attempt = self.attempt;
        on(self.rt(), async move {
            let t0 = Instant::now();
            let gone = || lost.as_ref().is_some_and(|l| l.load(Ordering::SeqCst));
            loop {
                let detail = match tokio::time::timeout(attempt, f(client.clone())).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(e)) if !transient(&e) => return Err(etcd_err(what)(e)),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {attempt:?}"),
                };
                if t0.elapsed() >= within || gone() {
                    return Err(StoreError::Etcd { what, detail });
                }
                tracing::debug!(what, error = %detail, "etcd: retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_s)
    }

    /// Who holds the run lock, if anyone.
    pub fn holder(&self) -> Result<Option<String>, StoreError> {
        let key = self.key("lock");
        let kv = self.retry("read of the lock", self.lease(), move |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        Ok(kv.kvs().first().map(|kv| shown_holder(kv.value())))
    }

    /// The current run, if any.
    pub fn current(&self) -> Result<Option<String>, StoreError> {
        let key = self.key("current");
        let r = self.retry("read of the current run", self.lease(), move |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        Ok(r.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .filter(|id| super::check_run_id(id).is_ok()))
    }

    /// The runs with a journal on etcd, oldest first.
    pub fn run_ids(&self) -> Result<Vec<String>, StoreError> {
        let from = self.key("runs/");
        let r = self.retry("list of the runs", self.lease(), move |mut c| {
            let from = from.clone();
            async move {
                c.get(from, Some(GetOptions::new().with_prefix().with_keys_only()))
                    .await
            }
        })?;
        let runs = self.key("runs/");
        let mut ids: Vec<String> = r
            .kvs()
            .iter()
            .filter_map(|kv| {
                let k = String::from_utf8_lossy(kv.key()).into_owned();
                k.strip_prefix(&runs)
                    .and_then(|r| r.split('/').next())
                    .map(str::to_string)
            })
            .filter(|id| super::check_run_id(id).is_ok())
            .collect();
        ids.dedup();
        Ok(ids)
    }

    /// Every record of `run_id`'s journal, in order (each line with its
    /// newline), read in pages.
    pub fn records(&self, run_id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let prefix = self.journal_prefix(run_id);
        let end = prefix_end(&prefix);
        let mut from = prefix.clone();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut expect_part = 0u32;
        loop {
            let (start, end2) = (from.clone(), end.clone());
            let page = self.retry("read of the journal", self.lease(), move |mut c| {
                let (start, end2) = (start.clone(), end2.clone());
                async move {
                    c.get(
                        start,
                        Some(
                            GetOptions::new()
                                .with_range(end2)
                                .with_limit(256)
                                .with_sort(SortTarget::Key, SortOrder::Ascend),
                        ),
                    )
                    .await
                }
            })?;
            let kvs = page.kvs();
            for kv in kvs {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let damaged = |detail: &str| StoreError::Damaged {
                    run: run_id.to_string(),
                    key: key.clone(),
                    detail: detail.to_string(),
                };
                let (seq, part) = record_key(&prefix, &key)
                    .and_then(|(s, p)| Some((s.parse::<usize>().ok()?, p.parse::<u32>().ok()?)))
                    .ok_or_else(|| damaged("not a record key"))?;
                if part == 0 {
                    if seq != lines.len() {
                        return Err(damaged(&format!(
                            "record {seq} follows record {} (a gap)",
                            lines.len() as i64 - 1
                        )));
                    }
                    if lines.last().is_some_and(|l| l.last() != Some(&b'\n')) {
                        return Err(damaged("the record before it is cut short"));
                    }
                    lines.push(kv.value().to_vec());
                    expect_part = 1;
                } else {
                    if seq + 1 != lines.len() || part != expect_part {
                        return Err(damaged("a part out of order"));
                    }
                    lines
                        .last_mut()
                        .expect("checked")
                        .extend_from_slice(kv.value());
                    expect_part += 1;
                }
            }
            match kvs.last() {
                Some(kv) if page.more() => {
                    let mut next = kv.key().to_vec();
                    next.push(0);
                    from = String::from_utf8_lossy(&next).into_owned();
                }
                _ => break,
            }
        }
        // A record whose last part never arrived is a torn tail: dropped.
        if lines.last().is_some_and(|l| l.last() != Some(&b'\n')) {
            lines.pop();
        }
        Ok(lines)
    }

    /// Whether `run_id`'s journal on etcd ends with the run's end (its
    /// holder ended it: nothing for a standby to take over); `None` when it
    /// has no record. Reads the last record only (a standby asks this
    /// every poll).
    pub fn ended(&self, run_id: &str) -> Result<Option<bool>, StoreError> {
        let prefix = self.journal_prefix(run_id);
        let (p2, end) = (prefix.clone(), prefix_end(&prefix));
        let last = self.retry("read of the journal's end", self.lease(), move |mut c| {
            let (start, end) = (p2.clone(), end.clone());
            async move {
                let o = GetOptions::new()
                    .with_range(end)
                    .with_limit(1)
                    .with_keys_only()
                    .with_sort(SortTarget::Key, SortOrder::Descend);
                c.get(start, Some(o)).await
            }
        })?;
        let Some(key) = last.kvs().first().map(|kv| kv.key().to_vec()) else {
            return Ok(None);
        };
        let key = String::from_utf8_lossy(&key).into_owned();
        let seq = record_key(&prefix, &key)
            .map(|(seq, _)| seq.to_string())
            .ok_or_else(|| StoreError::Damaged {
                run: run_id.to_string(),
                key: key.clone(),
                detail: "not a record key".into(),
            })?;
        let parts = format!("{prefix}{seq}.");
        let r = self.retry("read of the journal's end", self.lease(), move |mut c| {
            let parts = parts.clone();
            async move {
                let o = GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Ascend);
                c.get(parts, Some(o)).await
            }
        })?;
        let line: Vec<u8> = r.kvs().iter().flat_map(|kv| kv.value().to_vec()).collect();
        // A record whose last part never arrived is not the run's end.
        Ok(Some(line.ends_with(b"\n") && is_run_end(&line)))
    }

    /// Whether `run_id` has a journal on etcd (one record at least).
    pub fn has_records(&self, run_id: &str) -> Result<bool, StoreError> {
        Ok(self.ended(run_id)?.is_some())
    }

    /// Take the deployment's run lock: a key bound to a new lease, created
    /// only if absent. The lease is kept alive by a task of the store's
    /// runtime; `on_lost` is called once if it cannot be (the holder must
    /// stop at once: a standby may take over when the lease runs out).
    pub fn lock(
        self: &Arc<Self>,
        holder: &Holder,
        on_lost: impl Fn() + Send + Sync + 'static,
    ) -> Result<Held, StoreError> {
        let ttl = self.lease_s as i64;
        let key = self.key("lock");
        let me = serde_json::to_vec(holder).expect("holder serializes");
        let lease = self
            .retry("lease grant", self.lease(), move |mut c| async move {
                c.lease_grant(ttl, None).await
            })?
            .id();
        let (k2, me2) = (key.clone(), me.clone());
        let r = self.retry("take of the lock", self.lease(), move |mut c| {
            let (key, me) = (k2.clone(), me2.clone());
            async move {
                c.txn(
                    Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(
                            key.clone(),
                            me,
                            Some(PutOptions::new().with_lease(lease)),
                        )])
                        .or_else([TxnOp::get(key, None)]),
                )
                .await
            }
        })?;
        if !r.succeeded() {
            let _ = self.retry(
                "lease revoke",
                Duration::from_secs(1),
                move |mut c| async move { c.lease_revoke(lease).await },
            );
            let holder = first_get(&r)
                .map(|v| shown_holder(&v))
                .unwrap_or_else(|| "a holder that just released it".into());
            return Err(StoreError::Busy {
                prefix: self.prefix.clone(),
                holder,
            });
        }
        let revision = r.header().map(|h| h.revision()).unwrap_or_default();
        let lost = Arc::new(AtomicBool::new(false));
        let keeper = self.rt().spawn(keep_alive(
            self.client.clone(),
            lease,
            self.lease(),
            self.attempt,
            lost.clone(),
            on_lost,
        ));
        Ok(Held {
            store: self.clone(),
            lease,
            revision,
            lost,
            released: AtomicBool::new(false),
            keeper,
        })
    }
}

/// Keep the lease alive, renewing at a third of its time. A renewal that
/// fails (a member went away, a leader election) is tried again every
/// 100 ms on a new stream; the lock is lost once the lease may have run out
/// since the last renewal that was sent and answered (said a little before,
/// to stop first), or once etcd says it has.
async fn keep_alive(
    mut client: Client,
    lease: i64,
    ttl: Duration,
    attempt: Duration,
    lost: Arc<AtomicBool>,
    on_lost: impl Fn() + Send + Sync + 'static,
) {
    let mut renewed = Instant::now();
    let mut stream = None;
    let mut wait = ttl / 3;
    loop {
        tokio::time::sleep(wait).await;
        let sent = Instant::now();
        let renewal = async {
            if stream.is_none() {
                stream = client.lease_keep_alive(lease).await.ok();
            }
            let (keeper, replies) = stream.as_mut()?;
            keeper.keep_alive().await.ok()?;
            replies.message().await.ok().flatten().map(|m| m.ttl() > 0)
        };
        match tokio::time::timeout(attempt.min(ttl / 3), renewal).await {
            Ok(Some(true)) => {
                renewed = sent;
                wait = ttl / 3;
                continue;
            }
            Ok(Some(false)) => {
                lose(lease, &lost, &on_lost);
                return;
            }
            _ => {}
        }
        stream = None;
        wait = Duration::from_millis(100);
        let gone =
            async { matches!(client.lease_time_to_live(lease, None).await, Ok(r) if r.ttl() <= 0) };
        if renewed.elapsed() + ttl / 6 >= ttl
            || tokio::time::timeout(attempt, gone).await.unwrap_or(false)
        {
            lose(lease, &lost, &on_lost);
            return;
        }
    }
}

fn lose(lease: i64, lost: &AtomicBool, on_lost: &(impl Fn() + Send + Sync + 'static)) {
    tracing::error!(lease, "the run lock's lease on etcd was lost");
    lost.store(true, Ordering::SeqCst);
    on_lost();
}

/// The value of the first get in a transaction's answer.
fn first_get(r: &etcd_client::TxnResponse) -> Option<Vec<u8>> {
    r.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    })
}

/// A holder as the operator is told.
fn shown_holder(v: &[u8]) -> String {
    serde_json::from_slice::<Holder>(v)
        .map(|h| h.to_string())
        .unwrap_or_else(|_| crate::untrusted::line(&String::from_utf8_lossy(v)).into_owned())
}

/// The `<seq>.<part>` of a journal record's key under `prefix`, as written
/// (digits, zero-padded so that keys sort in order); `None` for a key that
/// is not a record's.
fn record_key<'k>(prefix: &str, key: &'k str) -> Option<(&'k str, &'k str)> {
    key.strip_prefix(prefix)?.split_once('.')
}

/// The end of the key range of `prefix`.
fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    let last = b.pop().expect("non-empty prefix");
    b.push(last + 1);
    String::from_utf8_lossy(&b).into_owned()
}

/// The deadline of one request for a lease of `lease_s` seconds.
fn attempt_time(lease_s: u64) -> Duration {
    Duration::from_millis((lease_s * 1000 / 4).max(400))
}

/// Run `fut` on `rt` and wait for it from this thread, whatever runtime it
/// belongs to.
fn on<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .expect("the store's runtime lives as long as the store")
}

impl Held {
    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Whether the lease was lost.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Write `puts` in transactions fenced by the lock's revision.
    fn fenced(&self, what: &'static str, puts: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        if self.lost() {
            return Err(StoreError::Fenced {
                detail: "its lease expired".into(),
            });
        }
        let lock = self.store.key("lock");
        let mut batches: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new()];
        let mut bytes = 0;
        for p in puts {
            let b = batches.last_mut().expect("one");
            if !b.is_empty() && (b.len() >= OPS || bytes + p.1.len() > TXN_BYTES) {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += p.1.len() + p.0.len();
            batches.last_mut().expect("one").push(p);
        }
        for batch in batches.into_iter().filter(|b| !b.is_empty()) {
            let (lock, rev) = (lock.clone(), self.revision);
            // Retried while the lease may live: a leader election or a member
            // that went away must not stop the run if the lock survives it.
            let within = self.store.lease() * 3;
            let lost = Some(self.lost.clone());
            let r = self
                .store
                .retry_while(what, within, lost, move |mut c| {
                    let ops: Vec<TxnOp> = batch
                        .iter()
                        .map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None))
                        .collect();
                    let lock = lock.clone();
                    async move {
                        c.txn(
                            Txn::new()
                                .when([Compare::create_revision(
                                    lock.clone(),
                                    CompareOp::Equal,
                                    rev,
                                )])
                                .and_then(ops)
                                .or_else([TxnOp::get(lock, None)]),
                        )
                        .await
                    }
                })
                .map_err(|e| match self.lost() {
                    true => StoreError::Fenced {
                        detail: "its lease expired".into(),
                    },
                    false => e,
                })?;
            if !r.succeeded() {
                self.lost.store(true, Ordering::SeqCst);
                return Err(StoreError::Fenced {
                    detail: match first_get(&r) {
                        Some(v) => format!("it is held by {}", shown_holder(&v)),
                        None => "its lease expired".into(),
                    },
                });
            }
        }
        Ok(())
    }

    /// Append journal records `first..first+lines.len()` of `run_id`.
    pub fn append(&self, run_id: &str, first: u64, lines: &[Vec<u8>]) -> Result<(), StoreError> {
        let prefix = self.store.journal_prefix(run_id);
        let mut puts = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            for (part, chunk) in line.chunks(PART).enumerate() {
                puts.push((
                    format!("{prefix}{:012}.{part:04}", first + i as u64),
                    chunk.to_vec(),
                ));
            }
        }
        self.fenced("journal write", puts)
    }

    /// Make `run_id` the deployment's current run.
    pub fn set_current(&self, run_id: &str) -> Result<(), StoreError> {
        self.fenced(
            "write of the current run",
            vec![(self.store.key("current"), run_id.as_bytes().to_vec())],
        )
    }

    /// Release the lock (revoke the lease); once.
    pub fn release(&self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        self.keeper.abort();
        let lease = self.lease;
        let _ = self.store.retry(
            "lease revoke",
            Duration::from_secs(2),
            move |mut c| async move { c.lease_revoke(lease).await },
        );
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.keeper.abort();
        if !self.lost() {
            self.release();
        }
    }
}

/// Write `lines` as run `run_id`'s journal in the local state directory
/// (atomically replacing what was there) and, when `current`, make it the
/// local current run: the working copy a resume and every reader use.
pub fn materialize(
    state_dir: &Path,
    run_id: &str,
    lines: &[Vec<u8>],
    current: bool,
) -> Result<(), StoreError> {
    super::check_run_id(run_id).map_err(|e| StoreError::Etcd {
        what: "read of the current run",
        detail: e.to_string(),
    })?;
    let path = super::run_dir(state_dir, run_id).join("journal.jsonl");
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let root = super::state_root(state_dir).map_err(|e| StoreError::Io {
        path: state_dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let rel = Path::new("runs").join(run_id);
    root.create_dir_all(&rel).map_err(io)?;
    let tmp = rel.join(".journal.from-etcd");
    {
        let mut f = root.create(&tmp).map_err(io)?.into_std();
        use std::io::Write;
        for l in lines {
            f.write_all(l).map_err(io)?;
        }
        f.sync_all().map_err(io)?;
    }
    root.rename(&tmp, &root, rel.join("journal.jsonl"))
        .map_err(io)?;
    if current {
        super::set_current(&root, run_id).map_err(io)?;
    }
    Ok(())
}

/// Whether the journal record `line` is the run's end.
fn is_run_end(line: &[u8]) -> bool {
    serde_json::from_slice::<crate::events::Event>(line)
        .is_ok_and(|e| matches!(e, crate::events::Event::RunFinished { .. }))
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd at {} under {}", self.endpoints, self.prefix)
    }
}
