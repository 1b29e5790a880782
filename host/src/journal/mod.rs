//! The run journal: `<state>/runs/<run-id>/journal.jsonl`, one JSON event
//! per line, append-only. Every record is written with one `write` as soon
//! as it happens; step ends, command intents and results, state changes and
//! confirmations are fsync'd before the run goes on, so a step that counts
//! as done is on disk. A torn last line (SIGKILL mid-write) is ignored and
//! cut off when the run resumes. Plugin key/value state lives here too.

pub mod etcd;
pub mod integrity;
pub mod lock;
pub mod memory;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::events::{CommandRecord, Event, Outcome, Sink, StepKey, StepResult};

/// Journal failures.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No run to resume or show.
    #[error("no run found in {0}; start one with `uphost run`")]
    NoRun(PathBuf),
    /// A well-formed run id with no journal in the state directory.
    #[error("no run `{run}` in {runs}: {known}")]
    UnknownRun {
        /// The id asked for.
        run: String,
        /// The runs directory.
        runs: PathBuf,
        /// The runs there, described.
        known: String,
    },
    /// A run id that is not one uphost made (it could name a path outside
    /// the state directory).
    #[error(
        "`{0}` is not a run id (letters, digits, `-` and `_` only); `uphost status` shows the latest"
    )]
    BadRunId(String),
    /// A record in the middle is unreadable.
    #[error(
        "journal {path}:{line}: unreadable record ({detail}); the journal was edited or damaged, so uphost will not resume it: check the cluster, then start over with `uphost run --abandon-unfinished`"
    )]
    Corrupt {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Parser message.
        detail: String,
    },
    /// A record the run cannot account for (out of order, of a service
    /// the run did not plan, a broken checksum chain).
    #[error(
        "journal {path}:{line}: {detail}. The journal was damaged or edited, so what the run did is not known for sure: uphost will not resume it or replay its commands. Check the cluster, then start over with `uphost run --abandon-unfinished` (the journal stays as it is)"
    )]
    Inconsistent {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Parser message.
        detail: String,
    },
    /// The replicated journal on etcd.
    #[error(transparent)]
    Replica(#[from] etcd::StoreError),
}

/// Status of a step as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Finished ok.
    Done,
    /// Finished with an error.
    Failed,
    /// Started, not finished (interrupted or in flight).
    Running,
}

impl StepStatus {
    /// The word for it (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Done => "done",
            StepStatus::Failed => "failed",
            StepStatus::Running => "running",
        }
    }
}

/// The rollback a run began, as its first rollback-started record lists it
/// (a resumed rollback works through the same lists).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollbackPlan {
    /// Services to roll back, in order.
    pub services: Vec<String>,
    /// Touched services that cannot roll back.
    pub irreversible: Vec<String>,
    /// In a release train, the rollback steps in order (empty: one per
    /// service of `services`).
    pub steps: Vec<StepKey>,
}

impl RollbackPlan {
    /// The rollback steps, in the order they run.
    pub fn steps_in_order(&self) -> Vec<StepKey> {
        if self.steps.is_empty() {
            self.services
                .iter()
                .map(|s| StepKey::of(s, crate::events::Phase::Rollback))
                .collect()
        } else {
            self.steps.clone()
        }
    }
}

/// `JournalError::Io` for errors on `path`.
pub(crate) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> JournalError + Copy + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a journal says, replayed.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    /// Every event in order (only from [`replay`]; [`replay_summary`]
    /// keeps none, so memory stays bounded for huge runs).
    pub events: Vec<Event>,
    /// The run-started record.
    pub started: Option<Event>,
    /// The last record.
    pub last: Option<Event>,
    /// Last status of each step.
    pub steps: BTreeMap<StepKey, StepStatus>,
    /// Plugin state.
    pub state: BTreeMap<(String, String), String>,
    /// Results of commands of unfinished steps, for replay.
    pub commands: HashMap<(StepKey, u32), CommandRecord>,
    /// Commands whose start was recorded but not their end, with their
    /// node.
    pub in_doubt: BTreeMap<(StepKey, u32), String>,
    /// Reboots issued and not seen back (their journaled argv, with the
    /// boot identity before): a resume waits for them, never reboots
    /// again. A failed step does not clear them.
    pub reboots: HashMap<(StepKey, u32), Vec<String>>,
    /// Reboots deferred to the end of the run and not done yet:
    /// (service, node, kind).
    pub deferred: BTreeSet<(String, String, String)>,
    /// The nodes this run stamped with its update identifier.
    pub stamped: BTreeSet<String>,
    /// The rollback the run began, if it began one.
    pub rollback: Option<RollbackPlan>,
    /// The last timestamp seen.
    pub last_ms: u64,
    /// The last link of the checksum chain (`None`: a journal written
    /// before records were chained).
    pub chain: Option<String>,
    /// Byte length of the complete records (a torn tail starts here).
    pub valid_len: u64,
    /// Why the run was paused, when it was and has not resumed since.
    pub paused: Option<String>,
    /// Each probe's figures, from the ends of the run's attempts.
    pub probes: BTreeMap<String, crate::events::ProbeFigures>,
    /// The survival resources created: (service, name).
    pub created: BTreeSet<(String, String)>,
}

impl Replayed {
    /// The RunStarted event.
    pub fn run_started(&self) -> Option<&Event> {
        self.started.as_ref()
    }

    /// The run's final outcome, if it finished (and was not resumed since).
    pub fn outcome(&self) -> Option<Outcome> {
        match &self.last {
            Some(Event::RunFinished { outcome, .. }) => Some(*outcome),
            _ => None,
        }
    }
}

/// The last complete record of a journal, read from its tail only (a run's
/// outcome without replaying a journal of a million steps); `None` for an
/// empty journal.
pub fn last_record(path: &Path) -> Result<Option<Event>, JournalError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = io_error(path);
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let from = len.saturating_sub(1 << 16);
    f.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).map_err(io)?;
    // Complete lines only: a torn last record has no newline yet.
    let complete = match tail.iter().rposition(|b| *b == b'\n') {
        Some(end) => &tail[..end],
        None => return Ok(None),
    };
    Ok(complete
        .split(|b| *b == b'\n')
        .rev()
        .find_map(|l| serde_json::from_slice(l).ok()))
}

/// Read and replay a journal file, keeping every event.
pub fn replay(path: &Path) -> Result<Replayed, JournalError> {
    replay_with(path, true)
}

/// Replay without keeping the events (bounded memory).
pub fn replay_summary(path: &Path) -> Result<Replayed, JournalError> {
    replay_with(path, false)
}

/// The complete records of a journal, read as a stream (a torn last
/// record ends the stream; a bad record before the end is an error).
pub struct Records {
    path: PathBuf,
    reader: std::io::BufReader<File>,
    offset: u64,
    lineno: usize,
    line: Vec<u8>,
    done: bool,
    checker: integrity::Checker,
}

/// Open a journal for streaming.
pub fn records(path: &Path) -> Result<Records, JournalError> {
    let file = File::open(path).map_err(io_error(path))?;
    Ok(Records {
        path: path.to_path_buf(),
        reader: std::io::BufReader::with_capacity(1 << 16, file),
        offset: 0,
        lineno: 0,
        line: Vec::new(),
        done: false,
        checker: integrity::Checker::default(),
    })
}

impl Records {
    /// Bytes of complete records read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The last link of the checksum chain read so far.
    pub fn last_link(&self) -> Option<&str> {
        self.checker.last_link()
    }
}

impl Iterator for Records {
    type Item = Result<Event, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::BufRead;
        if self.done {
            return None;
        }
        self.line.clear();
        let n = match self.reader.read_until(b'\n', &mut self.line) {
            Ok(n) => n,
            Err(source) => {
                self.done = true;
                return Some(Err(io_error(&self.path)(source)));
            }
        };
        if n == 0 || self.line.last() != Some(&b'\n') {
            self.done = true; // end, or a torn tail with no newline yet
            return None;
        }
        self.lineno += 1;
        // A whole line (it ends with its newline) must be a record: only
        // an unterminated last line is a torn write.
        match serde_json::from_slice::<Event>(&self.line[..n - 1]) {
            Ok(ev) => {
                if let Err(detail) = self.checker.check(&self.line[..n - 1], &ev) {
                    self.done = true;
                    return Some(Err(JournalError::Inconsistent {
                        path: self.path.clone(),
                        line: self.lineno,
                        detail,
                    }));
                }
                self.offset += n as u64;
                Some(Ok(ev))
            }
            Err(e) => {
                self.done = true;
                Some(Err(JournalError::Corrupt {
                    path: self.path.clone(),
                    line: self.lineno,
                    detail: e.to_string(),
                }))
            }
        }
    }
}

/// Call `f` on every complete record of a journal, in order; returns the
/// byte length of the complete records.
pub fn for_each(path: &Path, mut f: impl FnMut(Event)) -> Result<u64, JournalError> {
    let mut recs = records(path)?;
    for r in recs.by_ref() {
        f(r?);
    }
    Ok(recs.offset())
}

fn replay_with(path: &Path, keep: bool) -> Result<Replayed, JournalError> {
    let mut r = Replayed::default();
    let mut recs = records(path)?;
    for ev in recs.by_ref() {
        apply(&mut r, ev?, keep);
    }
    r.valid_len = recs.offset();
    r.chain = recs.last_link().map(String::from);
    Ok(r)
}

fn apply(r: &mut Replayed, ev: Event, keep: bool) {
    match &ev {
        Event::StepStarted { step, at_ms } => {
            r.steps.insert(step.clone(), StepStatus::Running);
            r.last_ms = r.last_ms.max(*at_ms);
        }
        Event::StepFinished {
            step,
            status,
            at_ms,
            ..
        } => {
            r.steps.insert(
                step.clone(),
                if *status == StepResult::Ok {
                    StepStatus::Done
                } else {
                    StepStatus::Failed
                },
            );
            r.commands.retain(|(s, _), _| s != step);
            r.in_doubt.retain(|(s, _), _| s != step);
            r.last_ms = r.last_ms.max(*at_ms);
        }
        Event::CommandStarted {
            step,
            seq,
            argv,
            node,
        } => {
            if argv.first().map(String::as_str) == Some(crate::events::REBOOT) {
                r.reboots.insert((step.clone(), *seq), argv.clone());
            } else {
                r.in_doubt.insert((step.clone(), *seq), node.clone());
            }
        }
        Event::CommandFinished {
            step,
            seq,
            result,
            argv,
            node,
        } => {
            r.in_doubt.remove(&(step.clone(), *seq));
            if argv.first().map(String::as_str) == Some(crate::events::REBOOT) {
                if result.status == Some(0) {
                    r.reboots.remove(&(step.clone(), *seq));
                }
                if result.stdout.starts_with(crate::events::REBOOT_DEFERRED) {
                    r.deferred.insert((
                        step.service.clone(),
                        node.clone(),
                        argv.get(1).cloned().unwrap_or_default(),
                    ));
                } else if step.phase == crate::events::Phase::Reboot && result.status == Some(0) {
                    r.deferred.retain(|(_, n, _)| n != node);
                }
            }
            if !result.skipped {
                r.commands.insert((step.clone(), *seq), result.clone());
            }
        }
        Event::State {
            service,
            key,
            value,
        } => match value {
            Some(v) => {
                r.state.insert((service.clone(), key.clone()), v.clone());
            }
            None => {
                r.state.remove(&(service.clone(), key.clone()));
            }
        },
        Event::Log { at_ms, .. } | Event::RunFinished { at_ms, .. } => {
            r.last_ms = r.last_ms.max(*at_ms)
        }
        Event::RunResumed { at_ms, .. } => {
            r.last_ms = r.last_ms.max(*at_ms);
            r.paused = None;
        }
        Event::Survival {
            service,
            name,
            what,
            passed: true,
            ..
        } if what == "create" => {
            r.created.insert((service.clone(), name.clone()));
        }
        Event::NodeStamped { node, .. } => {
            r.stamped.insert(node.clone());
        }
        Event::ProbeSummary { name, .. } => {
            r.probes.entry(name.clone()).or_default().absorb(&ev);
        }
        Event::Probe { at_ms, .. } => r.last_ms = r.last_ms.max(*at_ms),
        Event::Paused { reason, at_ms } => {
            r.last_ms = r.last_ms.max(*at_ms);
            r.paused = Some(reason.clone());
        }
        Event::RollbackStarted {
            services,
            irreversible,
            steps,
        } if r.rollback.is_none() => {
            r.rollback = Some(RollbackPlan {
                services: services.clone(),
                irreversible: irreversible.clone(),
                steps: steps.clone(),
            });
        }
        Event::RunStarted { .. } if r.started.is_none() => {
            r.started = Some(ev.clone());
        }
        _ => {}
    }
    if keep {
        r.events.push(ev.clone());
    }
    r.last = Some(ev);
}

/// A `run-started` whose plan names every service and node `events`
/// mention: the first record a test journal needs to pass the checks.
#[cfg(test)]
pub(crate) fn test_start(events: &[Event]) -> Event {
    let mut plan: Vec<crate::events::PlannedService> = Vec::new();
    let mut add = |service: &str, node: Option<&str>| {
        let i = match plan.iter().position(|p| p.name == service) {
            Some(i) => i,
            None => {
                plan.push(crate::events::PlannedService {
                    name: service.to_string(),
                    level: 0,
                    depends_on: vec![],
                    nodes: vec![],
                    rollout: "parallel".into(),
                    reversible: true,
                    hops: vec![],
                    guard: false,
                });
                plan.len() - 1
            }
        };
        if let Some(n) = node
            && !plan[i].nodes.iter().any(|x| x == n)
        {
            plan[i].nodes.push(n.to_string());
        }
    };
    for e in events {
        match e {
            Event::StepStarted { step, .. }
            | Event::StepFinished { step, .. }
            | Event::CommandStarted { step, .. }
            | Event::CommandFinished { step, .. } => add(&step.service, step.node.as_deref()),
            Event::State { service, .. } => add(service, None),
            Event::RollbackStarted {
                services,
                irreversible,
                ..
            } => services
                .iter()
                .chain(irreversible)
                .for_each(|s| add(s, None)),
            _ => {}
        }
    }
    Event::RunStarted {
        run_id: "test".into(),
        time: String::new(),
        plan,
        plugins: vec![],
        options: crate::events::RunOptionsRecord::default(),
        train: None,
    }
}

/// Observers of events (progress display, JSON stream).
pub type Observer = Box<dyn Fn(&Event) + Send + Sync>;

/// Fed every record once it is written, in the journal's order, under
/// the journal's lock: what a reader of the file would see, without
/// reading it back.
pub type Tap = Box<dyn FnMut(&Event) + Send>;

struct Inner {
    file: File,
    state: BTreeMap<(String, String), String>,
    replay: HashMap<(StepKey, u32), CommandRecord>,
    /// Bytes of whole records in the file (what an fsync makes durable);
    /// a failed write is cut back to this, so no record ever follows a
    /// torn one.
    len: u64,
    /// The first write or sync failure. From then on nothing more is
    /// written (the journal ends at its last whole record) and the run
    /// stops: nothing may count as done that is not on disk.
    error: Option<String>,
    /// The last link of the checksum chain written.
    chain: String,
    /// Records written (the sequence number of the next one).
    records: u64,
    /// Records written here and not yet copied to etcd (the last ones).
    pending: Vec<Vec<u8>>,
    /// Fed each record written (see [`Journal::tap`]).
    tap: Option<Tap>,
    /// A dry run's records sealed and not yet written to the file (see
    /// [`Journal::volatile`]).
    buf: Vec<u8>,
}

/// A dry run's journal writes its records in blocks of about this size.
const BLOCK: usize = 256 << 10;

/// The buffer a record is serialized into: a step's records (the longest,
/// a command's, is about 300 bytes with its chain) fit without regrowing.
const RECORD_CAPACITY: usize = 512;

/// An open journal of one run, and the run's event sink.
pub struct Journal {
    /// Run id.
    pub run_id: String,
    /// The journal file.
    pub path: PathBuf,
    inner: Mutex<Inner>,
    /// Set with `Inner::error`, read without the lock: every step asks
    /// whether the journal failed, and two workers asking took turns on
    /// the lock.
    failed: std::sync::atomic::AtomicBool,
    /// Whether `Inner::replay` ever held a result: a new run's steps then
    /// never take the lock to find none.
    replays: std::sync::atomic::AtomicBool,
    /// Reboots in doubt (see [`Replayed::reboots`]): known when the
    /// journal is opened, never changed after.
    reboots: HashMap<(StepKey, u32), Vec<String>>,
    /// A second handle for fsync, used outside the write lock.
    sync_file: File,
    /// Serialises fsyncs; with `synced`, gives group commit.
    sync_lock: Mutex<()>,
    /// Every byte up to this offset is on disk.
    synced: std::sync::atomic::AtomicU64,
    start: Instant,
    base_ms: u64,
    observers: Vec<Observer>,
    /// A dry run's journal: nothing it records changed a node, so no
    /// record needs a durability barrier (no fsync).
    volatile: bool,
    /// The copy on etcd, fenced by the run lock held there.
    replica: Option<std::sync::Arc<etcd::Held>>,
    /// Serialises copies to etcd; with `replicated`, in order, grouped.
    replica_lock: Mutex<()>,
    /// Every record before this one is on etcd.
    replicated: std::sync::atomic::AtomicU64,
}

/// The directory of a run.
pub fn run_dir(state_dir: &Path, run_id: &str) -> PathBuf {
    state_dir.join("runs").join(run_id)
}

/// The journal of run `run_id`: a plain id whose journal exists, or an
/// error that lists the runs the state directory has.
pub fn journal_of(state_dir: &Path, run_id: &str) -> Result<PathBuf, JournalError> {
    check_run_id(run_id)?;
    let path = run_dir(state_dir, run_id).join("journal.jsonl");
    if path.is_file() {
        return Ok(path);
    }
    let runs = state_dir.join("runs");
    let ids = run_ids(state_dir);
    let known = match ids.len() {
        0 => "there are no runs; start one with `uphost run`".to_string(),
        1 => format!("the only run there is {}", ids[0]),
        n if n <= 5 => format!("its runs are {} (oldest first)", ids.join(", ")),
        n => format!(
            "its {n} runs end with {} (oldest first)",
            ids[n - 5..].join(", ")
        ),
    };
    Err(JournalError::UnknownRun {
        run: run_id.to_string(),
        runs,
        known,
    })
}

/// Check that a run id is a plain name (never a path).
pub fn check_run_id(id: &str) -> Result<(), JournalError> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(JournalError::BadRunId(id.to_string()))
    }
}

/// Every run with a journal in the state directory, oldest first (run ids
/// begin with their UTC start time).
pub fn run_ids(state_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(state_dir.join("runs"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("journal.jsonl").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|id| check_run_id(id).is_ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The first record of a journal (its `run-started`), read without the
/// rest; `None` for an empty journal or a torn first record.
pub fn first_record(path: &Path) -> Result<Option<Event>, JournalError> {
    use std::io::BufRead;
    let io = io_error(path);
    let mut line = Vec::new();
    std::io::BufReader::new(File::open(path).map_err(io)?)
        .read_until(b'\n', &mut line)
        .map_err(io)?;
    if line.last() != Some(&b'\n') {
        return Ok(None);
    }
    Ok(serde_json::from_slice(&line).ok())
}

/// The most recent run id (from `<state>/current`).
pub fn current_run(state_dir: &Path) -> Result<String, JournalError> {
    let p = state_dir.join("current");
    let id = std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| JournalError::NoRun(state_dir.to_path_buf()))?;
    check_run_id(&id)?;
    Ok(id)
}

/// Point `current` at `run_id`, atomically and durably.
fn set_current(root: &cap_std::fs::Dir, run_id: &str) -> std::io::Result<()> {
    if let Err(e) = root.write(".current.tmp", run_id) {
        let _ = root.remove_file(".current.tmp");
        return Err(e);
    }
    root.rename(".current.tmp", root, "current")?;
    let _ = root.try_clone().map(|d| d.into_std_file().sync_all());
    Ok(())
}

/// A capability handle on the state directory (created if missing): the
/// journal writes through it, so no name can reach outside it.
pub(crate) fn state_root(state_dir: &Path) -> Result<cap_std::fs::Dir, JournalError> {
    let io = io_error(state_dir);
    std::fs::create_dir_all(state_dir).map_err(io)?;
    cap_std::fs::Dir::open_ambient_dir(state_dir, cap_std::ambient_authority()).map_err(io)
}

impl Journal {
    /// Start a new run's journal. It is not yet the current run (the one
    /// `status`, `report` and `resume` use by default): `make_current` makes
    /// it so once its start is on disk; a dry run beside an unfinished real
    /// run never is.
    pub fn create(
        state_dir: &Path,
        run_id: &str,
        observers: Vec<Observer>,
    ) -> Result<Journal, JournalError> {
        check_run_id(run_id)?;
        let dir = run_dir(state_dir, run_id);
        let path = dir.join("journal.jsonl");
        let io = io_error(&path);
        let root = state_root(state_dir)?;
        let rel = Path::new("runs").join(run_id);
        root.create_dir_all(&rel).map_err(io)?;
        let mut opts = cap_std::fs::OpenOptions::new();
        opts.create_new(true).append(true);
        let file = root
            .open_with(rel.join("journal.jsonl"), &opts)
            .map_err(io)?
            .into_std();
        if let Ok(d) = root.open_dir(&rel) {
            let _ = d.into_std_file().sync_all();
        }
        let sync_file = file.try_clone().map_err(io)?;
        Ok(Journal {
            run_id: run_id.to_string(),
            path,
            inner: Mutex::new(Inner {
                file,
                state: BTreeMap::new(),
                replay: HashMap::new(),
                len: 0,
                error: None,
                chain: String::new(),
                records: 0,
                pending: Vec::new(),
                tap: None,
                buf: Vec::new(),
            }),
            failed: Default::default(),
            replays: Default::default(),
            reboots: HashMap::new(),
            sync_file,
            sync_lock: Mutex::new(()),
            synced: Default::default(),
            start: Instant::now(),
            base_ms: 0,
            observers,
            volatile: false,
            replica: None,
            replica_lock: Mutex::new(()),
            replicated: Default::default(),
        })
    }

    /// Feed `tap` every record from now on, once it is written.
    pub fn tap(mut self, tap: Tap) -> Journal {
        self.inner.get_mut().unwrap_or_else(|p| p.into_inner()).tap = Some(tap);
        self
    }

    /// Make this a dry run's journal: records are written as they come,
    /// without fsync (a dry run changes nothing a crash could lose).
    pub fn volatile(mut self) -> Journal {
        self.volatile = true;
        self
    }

    /// Copy every record from now on to etcd, under the run lock `held`
    /// (the journal already has `records` records, all of them on etcd).
    pub fn replicate_to(mut self, held: std::sync::Arc<etcd::Held>, records: u64) -> Journal {
        self.inner
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .records = records;
        self.replicated = records.into();
        self.replica = Some(held);
        self
    }

    /// Make this run the current one (once its first record is on disk,
    /// and on etcd when the journal is replicated).
    pub fn make_current(&self, state_dir: &Path) -> Result<(), JournalError> {
        if let Some(held) = &self.replica {
            held.set_current(&self.run_id)?;
        }
        set_current(&state_root(state_dir)?, &self.run_id)
            .map_err(io_error(&state_dir.join("current")))
    }

    /// Remove a run that could not record its start (nothing ran).
    pub fn discard(self, state_dir: &Path) {
        if let Ok(root) = state_root(state_dir) {
            let _ = root.remove_dir_all(Path::new("runs").join(&self.run_id));
        }
    }

    /// Reopen a run's journal to continue it: cuts a torn tail, restores
    /// state and the replayable command results.
    pub fn reopen(
        state_dir: &Path,
        run_id: &str,
        observers: Vec<Observer>,
    ) -> Result<(Journal, Replayed), JournalError> {
        check_run_id(run_id)?;
        let path = run_dir(state_dir, run_id).join("journal.jsonl");
        let r = replay_summary(&path)?;
        let io = io_error(&path);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io)?;
        file.set_len(r.valid_len).map_err(io)?;
        file.sync_all().map_err(io)?;
        let sync_file = file.try_clone().map_err(io)?;
        Ok((
            Journal {
                run_id: run_id.to_string(),
                path: path.clone(),
                inner: Mutex::new(Inner {
                    file,
                    state: r.state.clone(),
                    replay: r.commands.clone(),
                    len: r.valid_len,
                    error: None,
                    chain: r.chain.clone().unwrap_or_default(),
                    records: 0,
                    pending: Vec::new(),
                    tap: None,
                    buf: Vec::new(),
                }),
                failed: Default::default(),
                replays: (!r.commands.is_empty()).into(),
                reboots: r.reboots.clone(),
                sync_file,
                sync_lock: Mutex::new(()),
                synced: Default::default(),
                start: Instant::now(),
                base_ms: r.last_ms + 1,
                observers,
                volatile: false,
                replica: None,
                replica_lock: Mutex::new(()),
                replicated: Default::default(),
            },
            r,
        ))
    }

    /// Where mutating commands record their results while they run.
    pub fn record_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(|p| p.join("inflight"))
            .unwrap_or_else(|| PathBuf::from("inflight"))
    }

    /// Settle commands whose start was journaled but not their end (the run
    /// was killed while they ran): wait for a wrapper still running, then
    /// take the result it recorded so the command is not run a second time.
    /// Returns the commands with no recorded result (they never finished
    /// and will run again).
    pub fn resolve_in_doubt(&self, r: &Replayed) -> Vec<(StepKey, u32)> {
        let dir = self.record_dir();
        let mut unresolved = Vec::new();
        for (step, seq) in r.in_doubt.keys() {
            let file = dir.join(crate::transport::record::record_name(step, *seq));
            wait_for_wrapper(&file);
            match std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<crate::transport::record::Recorded>(&b).ok())
            {
                Some(rec) => {
                    self.settle(step, *seq, rec.into_record());
                }
                None => unresolved.push((step.clone(), *seq)),
            }
        }
        unresolved
    }

    /// Take `rec` as the result of command `seq` of `step`, learned from
    /// the node (the command ran under an uphost that died): it is
    /// replayed, not run again.
    pub fn settle(&self, step: &StepKey, seq: u32, rec: CommandRecord) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.replay.insert((step.clone(), seq), rec);
        self.replays
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Where, on the nodes, mutating commands keep their results while
    /// they run, when another machine may have to learn them (a journal
    /// replicated on etcd): `/var/tmp/uphost/<deployment>/<run>`.
    pub fn node_record_dir(&self) -> Option<String> {
        self.replica
            .as_ref()
            .map(|h| format!("/var/tmp/uphost/{}/{}", h.store().tag(), self.run_id))
    }

    /// Why the journal can no longer be written, once a write or an fsync
    /// failed (it stays so): the run must stop, and no mutating command may
    /// start, since its intent would not be on disk.
    pub fn write_error(&self) -> Option<String> {
        if !self.failed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .error
            .clone()
    }
}

/// Wait while the wrapper that records `file` is still running.
fn wait_for_wrapper(file: &Path) {
    let pidfile = file.with_extension("pid");
    let Ok(text) = std::fs::read_to_string(&pidfile) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let alive = || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| c.windows(13).any(|w| w == b"__exec-record"))
            .unwrap_or(false)
    };
    let mut waited = 0;
    while alive() && !file.exists() {
        if waited % 100 == 0 {
            tracing::warn!(pid, file = %file.display(), "a command of the interrupted run is still running; waiting for it");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
}

/// Records that must be on disk before the run goes on: step ends, the
/// intent and result of mutating commands, state, confirmations, run
/// boundaries. Step starts, logs and read-only results are written at once
/// too, and reach the disk with the next fsync.
///
/// The end of an `upgrade(node)` step is made durable by the barrier at the
/// end of its batch (one fsync per batch instead of one per node): nothing
/// depends on one node's step before its batch is over, and the results of
/// its mutating commands are already on disk, so a step whose end record is
/// lost to a crash re-runs by replaying them.
fn durable(ev: &Event) -> bool {
    match ev {
        Event::Log { .. } | Event::StepStarted { .. } => false,
        Event::StepFinished { step, .. } => step.phase != crate::events::Phase::Upgrade,
        Event::CommandFinished { result, .. } => result.mutating,
        _ => true,
    }
}

impl Drop for Journal {
    /// A dry run's last records, when it ended without a record that
    /// writes them (its end record does).
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        if g.error.is_none() {
            let _ = Self::flush(g);
        }
    }
}

impl Journal {
    fn record_error(&self, e: std::io::Error) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.fail(&mut g, e);
    }

    /// Write the records sealed and not yet written (a dry run's).
    fn flush(g: &mut Inner) -> std::io::Result<()> {
        if !g.buf.is_empty() {
            g.file.write_all(&g.buf)?;
            g.len += g.buf.len() as u64;
            g.buf.clear();
        }
        Ok(())
    }

    /// Stop writing after `e`, with the file cut back to its whole records.
    fn fail(&self, g: &mut Inner, e: std::io::Error) {
        tracing::error!(path = %self.path.display(), error = %e, "journal write failed");
        // Truncating frees space, so it works on a full disk too.
        let _ = g.file.set_len(g.len);
        self.set_error(g, format!("{}: {e}", self.path.display()));
    }

    /// Note the journal's first failure `why` (under its lock).
    fn set_error(&self, g: &mut Inner, why: String) {
        if g.error.is_none() {
            g.error = Some(why);
            self.failed
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Make every byte up to offset `upto` durable. Group commit: a caller whose
    /// record was covered by another caller's fsync returns at once.
    fn sync_upto(&self, upto: u64) {
        use std::sync::atomic::Ordering;
        if self.synced.load(Ordering::Acquire) >= upto {
            return;
        }
        let _g = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.synced.load(Ordering::Acquire) >= upto {
            return;
        }
        let target = self.inner.lock().unwrap_or_else(|p| p.into_inner()).len;
        match self.sync_file.sync_data() {
            Ok(()) => {
                self.synced.fetch_max(target, Ordering::AcqRel);
            }
            Err(e) => self.record_error(e),
        }
    }
}

impl Journal {
    /// Copy every record before `upto` to etcd, in order. Group commit as
    /// for fsync: one transaction takes every record waiting. A copy that
    /// fails (fenced, or etcd gone past the lease) stops the journal as a
    /// failed write does: the run stops, no command starts.
    fn replicate_upto(&self, upto: u64) {
        use std::sync::atomic::Ordering;
        let Some(held) = &self.replica else {
            return;
        };
        if self.replicated.load(Ordering::Acquire) >= upto {
            return;
        }
        let _g = self.replica_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.replicated.load(Ordering::Acquire) >= upto {
            return;
        }
        let (first, lines) = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let lines = std::mem::take(&mut g.pending);
            (g.records - lines.len() as u64, lines)
        };
        match held.append(&self.run_id, first, &lines) {
            Ok(()) => {
                self.replicated
                    .fetch_max(first + lines.len() as u64, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::error!(error = %e, "the journal's copy on etcd failed");
                let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                self.set_error(&mut g, e.to_string());
            }
        }
    }
}

impl Sink for Journal {
    fn emit(&self, ev: Event) {
        // Room for a step's record, its chain and newline: no regrowth.
        let mut json = Vec::with_capacity(RECORD_CAPACITY);
        serde_json::to_writer(&mut json, &ev).expect("events serialize");
        let mine = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if let Event::State {
                service,
                key,
                value,
            } = &ev
            {
                match value {
                    Some(v) => g.state.insert((service.clone(), key.clone()), v.clone()),
                    None => g.state.remove(&(service.clone(), key.clone())),
                };
            }
            if g.error.is_some() {
                None
            } else {
                // Each record is chained to the one before it (see
                // `integrity`); the link advances only once it is written.
                let (mut line, chain) = integrity::seal(&g.chain, json);
                line.push(b'\n');
                // A dry run's records that need no barrier are written a
                // block at a time (the run stops all the same on a failed
                // write: it is found at the next block, the next barrier
                // or the next record that needs one, and the run's end).
                let written = if self.volatile {
                    g.buf.extend_from_slice(&line);
                    if durable(&ev) || g.buf.len() >= BLOCK {
                        Self::flush(&mut g)
                    } else {
                        Ok(())
                    }
                } else {
                    g.file.write_all(&line).map(|()| g.len += line.len() as u64)
                };
                match written {
                    Ok(()) => {
                        g.chain = chain;
                        g.records += 1;
                        if self.replica.is_some() {
                            g.pending.push(line);
                        }
                        if let Some(tap) = g.tap.as_mut() {
                            tap(&ev);
                        }
                        Some((g.len, g.records))
                    }
                    Err(e) => {
                        self.fail(&mut g, e);
                        None
                    }
                }
            }
        };
        if let Some((n, records)) = mine
            && durable(&ev)
            && !self.volatile
        {
            self.sync_upto(n);
            self.replicate_upto(records);
        }
        for o in &self.observers {
            o(&ev);
        }
    }

    fn replay(&self, step: &StepKey, seq: u32) -> Option<CommandRecord> {
        if !self.replays.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replay
            .remove(&(step.clone(), seq))
    }

    fn reboot_in_doubt(&self, step: &StepKey, seq: u32) -> Option<Vec<String>> {
        self.reboots.get(&(step.clone(), seq)).cloned()
    }

    fn rebooting(&self, step: &StepKey) -> bool {
        self.reboots.keys().any(|(s, _)| s == step)
    }

    fn state_get(&self, service: &str, key: &str) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state
            .get(&(service.to_string(), key.to_string()))
            .cloned()
    }

    fn state_held(&self, service: &str) -> (usize, usize) {
        crate::events::held_by(
            &self.inner.lock().unwrap_or_else(|p| p.into_inner()).state,
            service,
        )
    }

    fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }

    fn barrier(&self) {
        if self.volatile {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if g.error.is_none()
                && let Err(e) = Self::flush(&mut g)
            {
                self.fail(&mut g, e);
            }
            return;
        }
        let (len, records) = {
            let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            (g.len, g.records)
        };
        self.sync_upto(len);
        self.replicate_upto(records);
    }

    fn write_error(&self) -> Option<String> {
        Journal::write_error(self)
    }

    fn no_room(&self, why: String) {
        self.record_error(std::io::Error::other(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Phase;

    fn step(node: Option<&str>) -> StepKey {
        StepKey {
            hop: None,
            service: "galera".into(),
            phase: Phase::Upgrade,
            node: node.map(String::from),
        }
    }

    #[test]
    fn torn_tail_is_tolerated_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), "r1", vec![]).unwrap();
        j.emit(test_start(&["n1", "n2"].map(|n| Event::StepStarted {
            step: step(Some(n)),
            at_ms: 1,
        })));
        j.emit(Event::StepStarted {
            step: step(Some("n1")),
            at_ms: 1,
        });
        j.emit(Event::StepFinished {
            step: step(Some("n1")),
            at_ms: 2,
            status: StepResult::Ok,
            duration_ms: 1,
            error: None,
        });
        j.emit(Event::State {
            service: "galera".into(),
            key: "backup".into(),
            value: Some("/b.sql".into()),
        });
        j.make_current(dir.path()).unwrap();
        drop(j);
        let path = run_dir(dir.path(), "r1").join("journal.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"event\":\"step-sta").unwrap();
        drop(f);
        let (j, r) = Journal::reopen(dir.path(), "r1", vec![]).unwrap();
        assert_eq!(r.steps[&step(Some("n1"))], StepStatus::Done);
        assert_eq!(j.state_get("galera", "backup").as_deref(), Some("/b.sql"));
        j.emit(Event::StepStarted {
            step: step(Some("n2")),
            at_ms: 3,
        });
        drop(j);
        let r = replay(&path).unwrap();
        assert_eq!(r.steps[&step(Some("n2"))], StepStatus::Running);
        assert_eq!(current_run(dir.path()).unwrap(), "r1");
    }

    #[test]
    fn run_ids_are_names_not_paths() {
        assert!(check_run_id("20261122T031038Z-f755").is_ok());
        for bad in ["", "..", "../../etc", "a/b", "run id", "x\0"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("current"), "../../outside").unwrap();
        assert!(matches!(
            current_run(dir.path()),
            Err(JournalError::BadRunId(_))
        ));
    }

    #[test]
    fn an_unknown_run_lists_the_runs_there() {
        let dir = tempfile::tempdir().unwrap();
        let e = journal_of(dir.path(), "r9").unwrap_err().to_string();
        assert!(
            e.contains("there are no runs; start one with `uphost run`"),
            "{e}"
        );
        for id in ["r1", "r2"] {
            drop(Journal::create(dir.path(), id, vec![]).unwrap());
        }
        assert!(journal_of(dir.path(), "r2").is_ok());
        let e = journal_of(dir.path(), "r9").unwrap_err().to_string();
        assert!(
            e.contains("no run `r9`") && e.contains("its runs are r1, r2"),
            "{e}"
        );
        for i in 3..=8 {
            drop(Journal::create(dir.path(), &format!("r{i}"), vec![]).unwrap());
        }
        let e = journal_of(dir.path(), "r9").unwrap_err().to_string();
        assert!(e.contains("its 8 runs end with r4, r5, r6, r7, r8"), "{e}");
        assert!(matches!(
            journal_of(dir.path(), "../r1"),
            Err(JournalError::BadRunId(_))
        ));
    }

    #[test]
    fn the_last_record_is_read_off_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), "r1", vec![]).unwrap();
        let path = j.path.clone();
        assert!(last_record(&path).unwrap().is_none());
        j.emit(test_start(&[]));
        for i in 0..2000 {
            j.emit(Event::StepStarted {
                step: step(Some(&format!("n{i}"))),
                at_ms: i,
            });
        }
        j.emit(Event::RunFinished {
            outcome: Outcome::Complete,
            at_ms: 9,
        });
        drop(j);
        assert!(std::fs::metadata(&path).unwrap().len() > 1 << 16);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"event\":\"step-sta").unwrap();
        drop(f);
        match last_record(&path).unwrap() {
            Some(Event::RunFinished { outcome, .. }) => assert_eq!(outcome, Outcome::Complete),
            other => panic!("not the run-finished record: {other:?}"),
        }
        assert!(matches!(
            first_record(&path).unwrap(),
            Some(Event::RunStarted { .. })
        ));
    }

    #[test]
    fn the_first_record_is_read_alone_and_a_torn_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, "").unwrap();
        assert!(first_record(&path).unwrap().is_none());
        std::fs::write(&path, "{\"event\":\"run-fini").unwrap();
        assert!(first_record(&path).unwrap().is_none());
        std::fs::write(
            &path,
            "{\"event\":\"run-finished\",\"outcome\":\"failed\",\"at_ms\":1}\nnot json\n",
        )
        .unwrap();
        assert!(matches!(
            first_record(&path).unwrap(),
            Some(Event::RunFinished { outcome, .. }) if outcome == Outcome::Failed
        ));
        assert_eq!(run_ids(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn corrupt_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        std::fs::write(
            &p,
            "garbage\n{\"event\":\"run-finished\",\"outcome\":\"complete\",\"at_ms\":1}\n",
        )
        .unwrap();
        let e = replay(&p).unwrap_err();
        assert!(e.to_string().contains(":1:"), "{e}");
    }

    #[test]
    fn unfinished_step_results_replay_and_finished_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), "r", vec![]).unwrap();
        j.emit(test_start(&["a", "b"].map(|n| Event::StepStarted {
            step: step(Some(n)),
            at_ms: 0,
        })));
        let rec = CommandRecord {
            status: Some(0),
            error: None,
            error_kind: None,
            stdout: "x".into(),
            stderr: String::new(),
            truncated: false,
            skipped: false,
            mutating: true,
            duration_ms: 1,
        };
        for n in ["a", "b"] {
            j.emit(Event::StepStarted {
                step: step(Some(n)),
                at_ms: 0,
            });
            j.emit(Event::CommandStarted {
                step: step(Some(n)),
                seq: 0,
                node: n.into(),
                argv: vec!["true".into()],
            });
            j.emit(Event::CommandFinished {
                step: step(Some(n)),
                seq: 0,
                node: n.into(),
                argv: vec!["true".into()],
                result: rec.clone(),
            });
        }
        j.emit(Event::StepFinished {
            step: step(Some("a")),
            at_ms: 1,
            status: StepResult::Failed,
            duration_ms: 1,
            error: Some("x".into()),
        });
        drop(j);
        let (j, _) = Journal::reopen(dir.path(), "r", vec![]).unwrap();
        assert!(j.replay(&step(Some("a")), 0).is_none());
        assert_eq!(j.replay(&step(Some("b")), 0), Some(rec));
    }
}
