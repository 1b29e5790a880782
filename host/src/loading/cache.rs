//! The compiled-artifact cache: `<cache>/<sha256>-<engine hash>.cwasm`.
//! Only files this cache wrote (atomically, via a temporary name) are ever
//! deserialized; the engine hash changes with the wasmtime version and
//! settings, so a stale artifact is never loaded.

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
