//! The compiled-artifact cache: `<cache>/<sha256>-<engine hash>.cwasm`.
//! Only files this cache wrote (atomically, via a temporary name) are ever
//! deserialized; the engine hash changes with the wasmtime version and
//! its compilation settings, so a stale artifact is never loaded. Runtime
//! limits (memory caps) are enforced per store and are not part of it:
//! changing `memory_mb` compiles nothing.
//!
//! One cache serves runs and `uphost test` (the user's cache directory,
//! `$XDG_CACHE_HOME/uphost`, unless `cache_dir:` says otherwise). It is
//! bounded: each hit marks its artifact used (its modification time), and
//! past the cap the least recently used artifacts are dropped, so one
//! whose plugin file changed or went away ages out; so does one of another
//! wasmtime version.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use wasmtime::component::Component;

use crate::runtime::Runtime;

/// Cache failures.
#[derive(Debug)]
pub enum CacheError {
    /// The component did not compile.
    Compile(String),
}

/// A plugin file at least this large whose optimized code is not cached
/// yet is compiled by the quick tier (Winch) for this load, and by
/// Cranelift in the background for the next: an interpreter built into a
/// component (componentize-py, 18 MB) takes Cranelift ≈ 30 s here and
/// Winch ≈ 1 s (BENCHMARKS.md "First load of a large plugin"). Smaller
/// plugins compile in well under a second and are always optimized.
pub const QUICK_FROM_BYTES: usize = 4 << 20;

/// How a load got its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// The optimized code, from the cache.
    Cached,
    /// The optimized code, compiled now.
    Compiled,
    /// The quick tier's code (compiled now, or from the cache); the
    /// optimized code is being compiled in the background.
    Quick,
}

/// A directory of precompiled components.
pub struct Cache {
    dir: PathBuf,
    engine_hash: String,
    /// The quick tier's compatibility hash, where there is one.
    quick_hash: Option<String>,
    /// The handle on `dir`, opened (and the directory made) on first use.
    root: std::sync::OnceLock<cap_std::fs::Dir>,
    /// The files whose optimized code this process compiles in the
    /// background (once each).
    optimizing: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn hash_of(engine: &wasmtime::Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Write an artifact through a temporary name and an atomic rename, so a
/// reader never sees half of one.
fn store(root: &cap_std::fs::Dir, name: &str, compiled: &[u8]) -> std::io::Result<()> {
    let tmp = format!(".{name}.{}.tmp", std::process::id());
    root.write(&tmp, compiled)
        .and_then(|()| root.rename(&tmp, root, name))
        .inspect_err(|_| {
            let _ = root.remove_file(&tmp);
        })
}

impl Cache {
    /// A cache in `dir` for `rt`'s engines.
    pub fn new(rt: &Runtime, dir: PathBuf) -> Cache {
        Cache {
            dir,
            engine_hash: hash_of(&rt.engine),
            quick_hash: rt.quick.as_ref().map(|q| hash_of(&q.engine)),
            root: std::sync::OnceLock::new(),
            optimizing: Default::default(),
        }
    }

    /// The artifact's file name for a file hash and an engine hash (hex
    /// digits, a dash, `.cwasm`: never a path).
    fn name(sha256: &str, engine_hash: &str) -> String {
        format!("{sha256}-{engine_hash}.cwasm")
    }

    /// A capability handle on the cache directory (created if missing):
    /// every name is resolved inside it. Opened once per cache (plugins
    /// load in parallel; a lost race drops its extra handle).
    fn root(&self) -> std::io::Result<&cap_std::fs::Dir> {
        if let Some(d) = self.root.get() {
            return Ok(d);
        }
        std::fs::create_dir_all(&self.dir)?;
        let d = cap_std::fs::Dir::open_ambient_dir(&self.dir, cap_std::ambient_authority())?;
        Ok(self.root.get_or_init(|| d))
    }

    /// The cached artifact `name` for `engine`, if there is a usable one.
    fn cached(
        &self,
        root: Option<&cap_std::fs::Dir>,
        engine: &wasmtime::Engine,
        name: &str,
    ) -> Option<Component> {
        // A regular file of ours, not a symlink planted to point elsewhere.
        let root = root?;
        if !root.symlink_metadata(name).is_ok_and(|m| m.is_file()) {
            return None;
        }
        let art = self.dir.join(name);
        // SAFETY: the file was written by `Engine::precompile_component`
        // of an engine with the same compatibility hash (in its name),
        // through an atomic rename (`store`), inside our own cache dir.
        match unsafe { Component::deserialize_file(engine, &art) } {
            Ok(c) => {
                // Used now: the last to be evicted.
                if let Ok(f) = root.open(name) {
                    let _ = f.into_std().set_modified(std::time::SystemTime::now());
                }
                Some(c)
            }
            Err(_) => {
                tracing::warn!(path = %art.display(), "unusable cache entry; recompiling");
                None
            }
        }
    }

    /// Compile `bytes` with `engine` and cache the artifact as `name`.
    fn compile(
        &self,
        root: Option<&cap_std::fs::Dir>,
        engine: &wasmtime::Engine,
        name: &str,
        bytes: &[u8],
    ) -> Result<Component, CacheError> {
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        if let Some(root) = root
            && let Err(e) = store(root, name, &compiled)
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not cache the compiled plugin; the next load compiles it again");
        }
        // SAFETY: produced just now by this engine.
        unsafe { Component::deserialize(engine, &compiled) }
            .map_err(|e| CacheError::Compile(format!("{e:#}")))
    }

    /// The component for `bytes`: the optimized code from the cache, else
    /// for a large file the quick tier's (with the optimized code compiled
    /// in the background for the next load), else the optimized code
    /// compiled now (and then cached).
    ///
    /// `deadline` bounds the background compile as the load's compile is
    /// bounded (`plugin_compile_s:`): a file that is quick to compile once
    /// but a bomb for the optimizer costs that long at most.
    pub fn component(
        &self,
        rt: &Runtime,
        sha256: &str,
        bytes: &[u8],
        deadline: std::time::Duration,
    ) -> Result<(Component, Got), CacheError> {
        // The cache only saves time: a directory that cannot be made or
        // written (a full disk, a read-only state directory) costs a
        // compile per load, not the load.
        let root = self
            .root()
            .map_err(|e| {
                tracing::warn!(dir = %self.dir.display(), error = %e, "compile cache unusable; compiling in memory");
            })
            .ok();
        let optimized = Self::name(sha256, &self.engine_hash);
        if let Some(c) = self.cached(root, &rt.engine, &optimized) {
            return Ok((c, Got::Cached));
        }
        if let (Some(q), Some(qh), Some(root)) = (&rt.quick, &self.quick_hash, root)
            && bytes.len() >= QUICK_FROM_BYTES
        {
            let quick = Self::name(sha256, qh);
            let c = match self.cached(Some(root), &q.engine, &quick) {
                Some(c) => c,
                None => self.compile(Some(root), &q.engine, &quick, bytes)?,
            };
            self.optimize_later(rt, root, sha256, optimized, bytes, deadline);
            return Ok((c, Got::Quick));
        }
        Ok((
            self.compile(root, &rt.engine, &optimized, bytes)?,
            Got::Compiled,
        ))
    }

    /// Compile the optimized code of a plugin loaded by the quick tier
    /// into the cache, for the next load, while this process goes on with
    /// the quick code: in a detached `uphost __optimize` (the binary's own
    /// executable, given by [`set_optimizer`]), which outlives a short
    /// command such as `uphost plan`; without one (a library user), on a
    /// thread, which ends with the process.
    fn optimize_later(
        &self,
        rt: &Runtime,
        root: &cap_std::fs::Dir,
        sha256: &str,
        name: String,
        bytes: &[u8],
        deadline: std::time::Duration,
    ) {
        if !self
            .optimizing
            .lock()
            .expect("not poisoned")
            .insert(sha256.to_string())
        {
            return;
        }
        if let Some(exe) = OPTIMIZER.get() {
            match spawn_optimizer(exe, &self.dir, sha256, bytes, deadline) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the background compile; compiling on a thread")
                }
            }
        }
        let Ok(root) = root.try_clone() else { return };
        let (engine, bytes) = (rt.engine.clone(), bytes.to_vec());
        // A thread cannot be stopped at the deadline: it ends with the
        // process (a library user without the binary's optimizer).
        let _ = deadline;
        let spawned = std::thread::Builder::new()
            .name("uphost-optimize".into())
            .spawn(move || optimize(&engine, &root, &name, &bytes));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the background compile");
        }
    }
}

/// The executable that compiles optimized code in the background.
static OPTIMIZER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Name the executable whose `__optimize` compiles optimized code in the
/// background (the `uphost` binary itself).
pub fn set_optimizer(exe: PathBuf) {
    let _ = OPTIMIZER.set(exe);
}

/// Compile `bytes` with the optimizing `engine` and store the artifact.
fn optimize(engine: &wasmtime::Engine, root: &cap_std::fs::Dir, name: &str, bytes: &[u8]) {
    match engine.precompile_component(bytes) {
        Ok(compiled) => match store(root, name, &compiled) {
            Ok(()) => tracing::info!(artifact = %name, "optimized code cached for the next load"),
            Err(e) => {
                tracing::warn!(artifact = %name, error = %e, "could not cache the optimized plugin")
            }
        },
        Err(e) => tracing::warn!(
            artifact = %name,
            error = %format!("{e:#}"),
            "the optimizing compiler refused a plugin the quick one took"
        ),
    }
}

/// Start `exe __optimize DIR SHA256 SECONDS` in a process group of its own (an
/// interrupt at the terminal is for the command, not for it), with the
/// plugin's bytes written to its stdin; not waited for.
fn spawn_optimizer(
    exe: &std::path::Path,
    dir: &std::path::Path,
    sha256: &str,
    bytes: &[u8],
    deadline: std::time::Duration,
) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::process::CommandExt as _;
    use std::process::Stdio;
    let mut child = std::process::Command::new(exe)
        .arg("__optimize")
        .arg(dir)
        .arg(sha256)
        .arg(deadline.as_secs().max(1).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    // Fed now, not by a thread: a short command exits right after the
    // load, and a half-fed child would compile nothing (its first act is
    // reading stdin to the end).
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(bytes)?;
    Ok(())
}

/// `uphost __optimize DIR SHA256 SECONDS`: read a plugin from stdin, and
/// if its sha256 is SHA256, compile its optimized code into the cache DIR,
/// giving up after SECONDS. Its exit code: 0 when cached, 1 otherwise
/// (nobody waits for it).
pub fn optimize_main(args: &[String]) -> i32 {
    use std::io::Read as _;
    let [dir, sha256, secs] = args else { return 2 };
    let Ok(secs) = secs.parse::<u64>() else {
        return 2;
    };
    // Idle priority: the command that started it (or the run) comes
    // first; its compiler threads inherit this.
    let _ = rustix::process::nice(19);
    let _ = std::thread::Builder::new()
        .name("uphost-optimize-deadline".into())
        .spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            std::process::exit(1);
        });
    let mut bytes = Vec::new();
    let max: u64 = 4096 << 20; // the largest `plugin_max_mb:`
    if std::io::stdin()
        .take(max + 1)
        .read_to_end(&mut bytes)
        .is_err()
        || bytes.len() as u64 > max
        || crate::loading::sha256_hex(&bytes) != *sha256
    {
        return 1;
    }
    let Ok(rt) = Runtime::new(&crate::runtime::EngineLimits {
        max_instances: 1,
        max_memory_bytes: 1 << 20,
        quick_tier: false,
    }) else {
        return 1;
    };
    let cache = Cache::new(&rt, PathBuf::from(dir));
    let Ok(root) = cache.root() else { return 1 };
    let name = Cache::name(sha256, &cache.engine_hash);
    once(root, &name, || optimize(&rt.engine, root, &name, &bytes));
    i32::from(root.symlink_metadata(&name).is_err())
}

/// Run `compile` unless artifact `name` is cached already or another
/// process is compiling it (commands started side by side each load a new
/// large plugin with the quick tier and start an `__optimize`; one of them
/// compiles). The lock is a `.tmp` file beside the artifact, locked with
/// `flock` for as long as the compile lasts: a crashed compile leaves no
/// lock held, and the cache's eviction removes the file after an hour.
fn once(root: &cap_std::fs::Dir, name: &str, compile: impl FnOnce()) {
    use rustix::fs::{FlockOperation, flock};
    if root.symlink_metadata(name).is_ok() {
        return;
    }
    let Ok(lock) = root.create(format!(".{name}.optimizing.tmp")) else {
        return;
    };
    if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        return; // another process is compiling it
    }
    // Stored by the one whose lock this was, since the look above.
    if root.symlink_metadata(name).is_err() {
        compile();
    }
}

pub use crate::config::user_cache_dir;

impl Cache {
    /// Drop the least recently used artifacts until the cache holds at
    /// most `max_bytes`, and temporary files a crashed writer left behind
    /// (older than an hour). Best effort: a file another process is using
    /// or already removed is skipped.
    pub fn evict(&self, max_bytes: u64) {
        let Ok(root) = self.root() else {
            return;
        };
        let Ok(entries) = root.entries() else {
            return;
        };
        let now = std::time::SystemTime::now();
        let mut artifacts = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().map(|t| t.into_std()).unwrap_or(now);
            if name.starts_with('.') && name.ends_with(".tmp") {
                if now.duration_since(modified).unwrap_or_default()
                    > std::time::Duration::from_secs(3600)
                {
                    let _ = root.remove_file(&name);
                }
            } else if name.ends_with(".cwasm") {
                artifacts.push((modified, meta.len(), name));
            }
        }
        let mut total: u64 = artifacts.iter().map(|(_, len, _)| len).sum();
        artifacts.sort();
        for (_, len, name) in artifacts {
            if total <= max_bytes {
                break;
            }
            if root.remove_file(&name).is_ok() {
                tracing::info!(artifact = %name, "compile cache over its cap: dropped the least recently used");
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flock locks are per open file description: the test's own open
    /// file holds the lock as another process's would.
    #[test]
    fn one_compile_per_artifact_and_none_once_it_is_cached() {
        use rustix::fs::{FlockOperation, flock};
        let dir = tempfile::tempdir().unwrap();
        let root =
            cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let held = root.create(".x.cwasm.optimizing.tmp").unwrap();
        flock(&held, FlockOperation::NonBlockingLockExclusive).unwrap();
        let mut ran = 0;
        once(&root, "x.cwasm", || ran += 1);
        assert_eq!(ran, 0, "compiled while another process holds the lock");
        flock(&held, FlockOperation::Unlock).unwrap();
        once(&root, "x.cwasm", || ran += 1);
        assert_eq!(ran, 1, "the lock was free: it compiles");
        root.write("x.cwasm", b"code").unwrap();
        once(&root, "x.cwasm", || ran += 1);
        assert_eq!(ran, 1, "cached already: nothing to compile");
    }

    #[test]
    fn the_least_recently_used_go_first_and_stale_temporaries_go() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(&crate::runtime::EngineLimits {
            max_instances: 1,
            max_memory_bytes: 1 << 20,
            quick_tier: false,
        })
        .unwrap();
        let cache = Cache::new(&rt, dir.path().to_path_buf());
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for (i, name) in ["a.cwasm", "b.cwasm", "c.cwasm"].iter().enumerate() {
            let p = dir.path().join(name);
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(old + std::time::Duration::from_secs(i as u64 * 60))
                .unwrap();
        }
        let tmp = dir.path().join(".x.1.tmp");
        std::fs::write(&tmp, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache.evict(2000);
        let left: Vec<String> = {
            let mut v: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(left, ["b.cwasm", "c.cwasm"]);
    }
}
