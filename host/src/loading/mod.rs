//! Loading: find every `*.wasm` in the plugin directory, check it is a
//! component of the `uphost:plugin` world at a supported version, compile it
//! once (precompiled artifacts cached on disk, keyed by the file's sha256 and
//! the engine's compatibility hash) and call `describe` with no capabilities.

pub mod cache;
pub mod inspect;
pub mod meta;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

pub use meta::PluginMeta;

use crate::runtime::bindings::{Contract, PluginPre};
use crate::runtime::{HostState, Runtime};

/// The newest WIT package version this host implements (it also loads
/// every minor of [`Contract::SUPPORTED`]).
pub const WIT_VERSION: &str = "0.2.0";
/// The default cap on a plugin file's size.
pub use crate::config::DEFAULT_PLUGIN_MAX_BYTES as DEFAULT_MAX_BYTES;

/// The export a plugin must provide (without version).
pub const PLUGIN_EXPORT: &str = "uphost:plugin/plugin";

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The plugin directory could not be read.
    #[error(
        "cannot read the plugin directory {path}: {source}; create it, or fix `plugins:` in uphost.yaml"
    )]
    Dir {
        /// Path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A plugin file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a WebAssembly binary at all (or truncated before its header).
    #[error(
        "{path}: not a WebAssembly component ({detail}); rebuild the plugin with `cargo build --target wasm32-wasip2` or remove the file"
    )]
    NotWasm {
        /// File.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// A core module, not a component.
    #[error(
        "{path}: this is a core WebAssembly module, not a component; build the plugin for the `wasm32-wasip2` target (which emits a component) against the uphost:plugin@{WIT_VERSION} world"
    )]
    CoreModule {
        /// File.
        path: PathBuf,
    },
    /// Truncated or otherwise corrupt.
    #[error("{path}: corrupt or truncated component: {detail}; rebuild or re-download it")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// The decoder's message.
        detail: String,
    },
    /// A component of another world.
    #[error(
        "{path}: a component of another world: it exports [{exports}] but an uphost plugin must export `{PLUGIN_EXPORT}@{WIT_VERSION}` (world `service-plugin`); build it with uphost-sdk"
    )]
    WrongWorld {
        /// File.
        path: PathBuf,
        /// Its exports.
        exports: String,
    },
    /// A component built against an unsupported WIT version.
    #[error(
        "{path}: built against uphost:plugin@{found}, but this host supports uphost:plugin@0.1.x and @0.2.x; rebuild the plugin with an uphost-sdk for 0.2 (or 0.1), or upgrade uphost"
    )]
    WrongVersion {
        /// File.
        path: PathBuf,
        /// The version it targets.
        found: String,
    },
    /// It imports an interface this host does not provide (found in the
    /// file before compiling it).
    #[error("{path}: imports an interface this host does not provide: {detail}")]
    UnsupportedImport {
        /// File.
        path: PathBuf,
        /// The import and how to build without it.
        detail: String,
    },
    /// Its memory at start is above the largest cap any service has.
    #[error(
        "{path}: needs {} MiB of memory at start (its initial linear memory is {needed} bytes), above the {} MiB cap; raise `limits: {{memory_mb: {}}}` (or more) in uphost.yaml for every plugin, or on its service in services.yaml (`SERVICE: {{limits: {{memory_mb: {}}}}}`)",
        mib_up(*needed), cap >> 20, mib_up(*needed), mib_up(*needed)
    )]
    MemoryOverCap {
        /// File.
        path: PathBuf,
        /// Bytes it needs at start.
        needed: u64,
        /// The cap, bytes.
        cap: u64,
    },
    /// It imports something this host does not provide.
    #[error(
        "{path}: imports something this host does not provide: {detail}; a plugin may import only uphost:plugin/{{types,node-exec,log,state}} of the version it exports (0.1 or 0.2; and node-control in 0.2) and the WASI 0.2 interfaces of wasi:cli, wasi:io, wasi:clocks, wasi:random, wasi:filesystem and wasi:sockets (not wasi:http)"
    )]
    UnknownImport {
        /// File.
        path: PathBuf,
        /// Wasmtime's message.
        detail: String,
    },
    /// Larger than the cap on plugin files.
    #[error(
        "{path}: {size} bytes, over the {max} byte cap on a plugin file; if you trust this plugin, raise `plugin_max_mb:` in uphost.yaml, otherwise remove it"
    )]
    TooLarge {
        /// File.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// Compiling it took longer than allowed.
    #[error(
        "{path}: did not compile within {secs} s (a plugin this slow to compile is suspect: one huge function?); if you trust it, raise `plugin_compile_s:` in uphost.yaml, otherwise remove it"
    )]
    CompileTimeout {
        /// File.
        path: PathBuf,
        /// The deadline.
        secs: u64,
    },
    /// `describe` failed or returned nonsense.
    #[error("{path}: describe() failed: {detail}")]
    Describe {
        /// File.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Two plugins claim one service.
    #[error(
        "two plugins claim service `{service}`: {first} and {second}; remove one of them from the plugin directory"
    )]
    Duplicate {
        /// Service.
        service: String,
        /// First file.
        first: PathBuf,
        /// Second file.
        second: PathBuf,
    },
}

/// Bytes, in MiB, rounded up.
pub fn mib_up(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// A loaded, described plugin.
pub struct LoadedPlugin {
    /// Service name (from describe).
    pub name: String,
    /// The `.wasm` file.
    pub path: PathBuf,
    /// sha256 of the file, hex.
    pub sha256: String,
    /// What describe said.
    pub meta: PluginMeta,
    /// Ready to instantiate, against the minor it was built for.
    pub pre: PluginPre<HostState>,
    /// The memory it has at start, bytes: a service whose cap is below it
    /// cannot run it.
    pub min_memory_bytes: u64,
    /// Its vendor signature, checked.
    pub signature: crate::capabilities::signing::Signature,
}

impl LoadedPlugin {
    /// The file name.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The `*.wasm` files of a directory, sorted.
pub fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let rd = std::fs::read_dir(dir).map_err(|source| LoadError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Classify the binary header.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            path: path.to_path_buf(),
            detail: if bytes.len() < 8 {
                format!("only {} bytes", bytes.len())
            } else {
                "no `\\0asm` magic number".to_string()
            },
        });
    }
    match &bytes[4..8] {
        [1, 0, 0, 0] => Err(LoadError::CoreModule {
            path: path.to_path_buf(),
        }),
        [_, _, 1, 0] => Ok(()),
        other => Err(LoadError::NotWasm {
            path: path.to_path_buf(),
            detail: format!("unknown WebAssembly version/layer {other:?}"),
        }),
    }
}

/// Check the component exports the plugin interface at a supported
/// version: which minor of the contract it was built against.
fn check_world(path: &Path, component: &Component) -> Result<Contract, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(component.engine())
        .map(|(n, _)| n.to_string())
        .collect();
    let ours = exports.iter().find_map(|n| {
        n.strip_prefix(PLUGIN_EXPORT)
            .map(|v| v.trim_start_matches('@'))
    });
    match ours {
        None => Err(LoadError::WrongWorld {
            path: path.to_path_buf(),
            exports: exports.join(", "),
        }),
        Some(v) => Contract::of_version(v).ok_or_else(|| LoadError::WrongVersion {
            path: path.to_path_buf(),
            found: if v.is_empty() {
                "(unversioned)".into()
            } else {
                v.to_string()
            },
        }),
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Prepared {
    path: PathBuf,
    sha256: String,
    component: Component,
    contract: Contract,
    min_memory_bytes: u64,
    signature: crate::capabilities::signing::Signature,
}

fn prepare(
    rt: &Runtime,
    cache: &cache::Cache,
    path: &Path,
    limits: &LoadLimits,
) -> Result<Prepared, LoadError> {
    let max_bytes = limits.max_bytes;
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > max_bytes {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            size,
            max: max_bytes,
        });
    }
    use std::io::Read;
    let mut bytes = Vec::with_capacity(size as usize);
    std::fs::File::open(path)
        .map_err(io)?
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            max: max_bytes,
        });
    }
    check_header(path, &bytes)?;
    // Before compiling: what it imports and the memory it starts with.
    let declared = inspect::declared(&bytes).map_err(|detail| LoadError::Corrupt {
        path: path.to_path_buf(),
        detail,
    })?;
    if let Some(detail) = declared
        .imports
        .iter()
        .find_map(|i| inspect::unsupported(i))
    {
        return Err(LoadError::UnsupportedImport {
            path: path.to_path_buf(),
            detail,
        });
    }
    if declared.min_memory_bytes > limits.memory_bytes {
        return Err(LoadError::MemoryOverCap {
            path: path.to_path_buf(),
            needed: declared.min_memory_bytes,
            cap: limits.memory_bytes,
        });
    }
    let sha256 = sha256_hex(&bytes);
    let (component, got) = cache
        .component(rt, &sha256, &bytes, limits.compile)
        .map_err(|e| match e {
            cache::CacheError::Compile(detail) => LoadError::Corrupt {
                path: path.to_path_buf(),
                detail,
            },
        })?;
    if got == cache::Got::Quick {
        tracing::info!(
            plugin = %path.display(),
            "loaded by the quick compiler (Winch); its optimized code compiles in the background for the next load (`first_load: optimized` in uphost.yaml waits for it instead)"
        );
    }
    let contract = check_world(path, &component)?;
    Ok(Prepared {
        path: path.to_path_buf(),
        sha256,
        component,
        contract,
        min_memory_bytes: declared.min_memory_bytes,
        signature: crate::capabilities::signing::signature(&bytes),
    })
}

/// Load one file.
pub async fn load_file(
    rt: &Arc<Runtime>,
    cache: &cache::Cache,
    path: &Path,
    memory_bytes: u64,
) -> Result<LoadedPlugin, LoadError> {
    let limits = LoadLimits {
        max_bytes: DEFAULT_MAX_BYTES,
        compile: std::time::Duration::MAX,
        memory_bytes,
    };
    let p = prepare(rt, cache, path, &limits)?;
    finish(rt, p).await
}

async fn finish(rt: &Runtime, p: Prepared) -> Result<LoadedPlugin, LoadError> {
    let pre = rt
        .pre(&p.component, p.contract)
        .map_err(|e| LoadError::UnknownImport {
            path: p.path.clone(),
            detail: format!("{e:#}"),
        })?;
    let info = crate::runtime::describe(rt, &pre)
        .await
        .map_err(|e| LoadError::Describe {
            path: p.path.clone(),
            detail: format!("{e:#}"),
        })?;
    let meta = PluginMeta::from_wit(info).map_err(|detail| LoadError::Describe {
        path: p.path.clone(),
        detail,
    })?;
    Ok(LoadedPlugin {
        name: meta.name.clone(),
        path: p.path,
        sha256: p.sha256,
        meta,
        pre,
        min_memory_bytes: p.min_memory_bytes,
        signature: p.signature,
    })
}

/// How much loading one plugin may cost before anyone approved it.
#[derive(Debug, Clone, Copy)]
pub struct LoadLimits {
    /// Its file's size.
    pub max_bytes: u64,
    /// Compiling it (a file under the size cap can still be crafted to
    /// compile for minutes). Past it, the plugin is reported and the
    /// command goes on without waiting for the compile.
    pub compile: std::time::Duration,
    /// The largest memory cap of any service: a plugin that starts with
    /// more memory is refused before it compiles.
    pub memory_bytes: u64,
}

/// Load every plugin of a directory (compiling in parallel), rejecting two
/// plugins that claim one service: the first problem is the error.
pub async fn load_dir(
    rt: &Arc<Runtime>,
    cache: &Arc<cache::Cache>,
    dir: &Path,
    limits: LoadLimits,
) -> Result<Vec<LoadedPlugin>, LoadError> {
    let (plugins, mut failed) = load_dir_all(rt, cache, dir, limits).await?;
    match failed.is_empty() {
        true => Ok(plugins),
        false => Err(failed.swap_remove(0)),
    }
}

/// Load every plugin of a directory, keeping going past the ones that fail
/// to load (`plugins list` shows them beside the others): the loaded
/// plugins and every problem, in file order.
pub async fn load_dir_all(
    rt: &Arc<Runtime>,
    cache: &Arc<cache::Cache>,
    dir: &Path,
    limits: LoadLimits,
) -> Result<(Vec<LoadedPlugin>, Vec<LoadError>), LoadError> {
    let mut files = wasm_files(dir)?;
    // Smallest first, one file at a time (wasmtime compiles a file's
    // functions in parallel; two files compiling at once showed a huge one
    // holding up a small one beside it): a huge file is taken last and
    // cannot hold up the others, and one still compiling at the deadline
    // is reported and not waited for.
    files.sort_by_key(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(u64::MAX));
    let deadline = tokio::time::Instant::now() + limits.compile;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    {
        let (rt, cache, files) = (rt.clone(), cache.clone(), files.clone());
        // Past the deadline nobody waits for this thread: the command goes
        // on (and the process exit ends it).
        tokio::task::spawn_blocking(move || {
            for f in &files {
                if tx.send(prepare(&rt, &cache, f, &limits)).is_err() {
                    return;
                }
            }
        });
    }
    // The results come in file order; those not in by the deadline are
    // the file still compiling and the (larger) ones after it.
    let mut results = Vec::with_capacity(files.len());
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        results.push(r);
    }
    let results = results
        .into_iter()
        .map(Some)
        .chain(std::iter::repeat_with(|| None));
    let mut plugins = Vec::new();
    let mut failed = Vec::new();
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (path, r) in files.into_iter().zip(results) {
        let p = match r {
            None => {
                failed.push(LoadError::CompileTimeout {
                    path,
                    secs: limits.compile.as_secs(),
                });
                continue;
            }
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                failed.push(e);
                continue;
            }
        };
        let lp = match finish(rt, p).await {
            Ok(lp) => lp,
            Err(e) => {
                failed.push(e);
                continue;
            }
        };
        if let Some(first) = by_name.get(&lp.name) {
            failed.push(LoadError::Duplicate {
                service: lp.name.clone(),
                first: first.clone(),
                second: lp.path.clone(),
            });
            continue;
        }
        by_name.insert(lp.name.clone(), lp.path.clone());
        plugins.push(lp);
    }
    Ok((plugins, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_classified() {
        let p = Path::new("x.wasm");
        assert!(matches!(
            check_header(p, b"\0as"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header(p, b"hello world"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header(p, b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(check_header(p, b"\0asm\x0d\0\x01\0").is_ok());
    }
}
