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

/// A directory of precompiled components.
pub struct Cache {
    dir: PathBuf,
    engine_hash: String,
    /// The handle on `dir`, opened (and the directory made) on first use.
    root: std::sync::OnceLock<cap_std::fs::Dir>,
}

impl Cache {
    /// A cache in `dir` for `rt`'s engine.
    pub fn new(rt: &Runtime, dir: PathBuf) -> Cache {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        rt.engine.precompile_compatibility_hash().hash(&mut h);
        Cache {
            dir,
            engine_hash: format!("{:016x}", h.finish()),
            root: std::sync::OnceLock::new(),
        }
    }

    /// The artifact's file name for a file hash (hex digits, a dash, `.cwasm`:
    /// never a path).
    fn name(&self, sha256: &str) -> String {
        format!("{sha256}-{}.cwasm", self.engine_hash)
    }

    /// The artifact path for a file hash.
    pub fn artifact(&self, sha256: &str) -> PathBuf {
        self.dir.join(self.name(sha256))
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

    /// The component for `bytes`, from the cache or freshly compiled (and
    /// then cached). Returns whether it compiled.
    pub fn component(
        &self,
        rt: &Runtime,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<(Component, bool), CacheError> {
        // The cache only saves time: a directory that cannot be made or
        // written (a full disk, a read-only state directory) costs a
        // compile per load, not the load.
        let root = self
            .root()
            .map_err(|e| {
                tracing::warn!(dir = %self.dir.display(), error = %e, "compile cache unusable; compiling in memory");
            })
            .ok();
        let name = self.name(sha256);
        // A regular file of ours, not a symlink planted to point elsewhere.
        if let Some(root) = root
            && root.symlink_metadata(&name).is_ok_and(|m| m.is_file())
        {
            let art = self.artifact(sha256);
            // SAFETY: the file was written by `Engine::precompile_component`
            // of an engine with the same compatibility hash (in its name),
            // through the atomic rename below, inside our own state dir.
            if let Ok(c) = unsafe { Component::deserialize_file(&rt.engine, &art) } {
                // Used now: the last to be evicted.
                if let Ok(f) = root.open(&name) {
                    let _ = f.into_std().set_modified(std::time::SystemTime::now());
                }
                return Ok((c, false));
            }
            tracing::warn!(path = %art.display(), "unusable cache entry; recompiling");
        }
        let compiled = rt
            .engine
            .precompile_component(bytes)
            .map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        if let Some(root) = root {
            let tmp = format!(".{sha256}-{}.{}.tmp", self.engine_hash, std::process::id());
            if let Err(e) = root
                .write(&tmp, &compiled)
                .and_then(|()| root.rename(&tmp, root, &name))
            {
                let _ = root.remove_file(&tmp);
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not cache the compiled plugin; the next load compiles it again");
            }
        }
        // SAFETY: produced just now by this engine.
        let c = unsafe { Component::deserialize(&rt.engine, &compiled) }
            .map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        Ok((c, true))
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

    #[test]
    fn the_least_recently_used_go_first_and_stale_temporaries_go() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(&crate::runtime::EngineLimits {
            max_instances: 1,
            max_memory_bytes: 1 << 20,
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
