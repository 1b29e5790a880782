//! `uphost test`: scenarios against real plugin components, no cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Error;
use crate::harness::{self, scenario};
use crate::loading::{self, cache::Cache};
use crate::runtime::{EngineLimits, Runtime};

use super::exit;

/// A plugin and its scenarios.
struct Job {
    wasm: PathBuf,
    scenarios: Vec<PathBuf>,
}

fn crate_name(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("name = "))
        .map(|n| n.trim_matches('"').to_string())
}

/// The nearest `target/wasm32-wasip2/<profile>` above `dir` holding `file`.
fn find_wasm(dir: &Path, file: &str) -> Option<PathBuf> {
    let start = std::path::absolute(dir).ok()?;
    for anc in start.ancestors() {
        for profile in ["plugin", "release", "debug"] {
            let p = anc.join("target/wasm32-wasip2").join(profile).join(file);
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

fn jobs(path: &Path, scenarios: &[PathBuf], wasm_dir: Option<&Path>) -> Result<Vec<Job>, Error> {
    if path.extension().is_some_and(|x| x == "wasm") {
        if scenarios.is_empty() {
            return Err(Error::Usage(format!(
                "name the scenarios for {}: --scenario FILE.yaml (or pass the plugin's crate directory, whose scenarios/ are found by convention)",
                path.display()
            )));
        }
        let mut all = Vec::new();
        for s in scenarios {
            if s.is_dir() {
                all.extend(harness::yaml_files(s));
            } else {
                all.push(s.clone());
            }
        }
        all.sort();
        all.dedup();
        return Ok(vec![Job {
            wasm: path.to_path_buf(),
            scenarios: all,
        }]);
    }
    if !path.is_dir() {
        return Err(Error::Usage(format!(
            "{}: expected a .wasm file or a directory of plugin crates",
            path.display()
        )));
    }
    let mut dirs = vec![path.to_path_buf()];
    if !path.join("scenarios").is_dir() {
        dirs = std::fs::read_dir(path)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("scenarios").is_dir())
            .collect();
        dirs.sort();
    }
    if dirs.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no plugin crate with a scenarios/ directory found",
            path.display()
        )));
    }
    let mut out = Vec::new();
    for d in dirs {
        if !d.join("Cargo.toml").exists() {
            out.push(foreign_job(&d, wasm_dir)?);
            continue;
        }
        let name = crate_name(&d).ok_or_else(|| {
            Error::Usage(format!("{}: no package name in Cargo.toml", d.display()))
        })?;
        let file = format!("{}.wasm", name.replace('-', "_"));
        let wasm = match wasm_dir {
            Some(w) => w.join(&file),
            None => find_wasm(&d, &file).unwrap_or_else(|| PathBuf::from(&file)),
        };
        if !wasm.exists() {
            return Err(Error::Usage(format!(
                "{}: {file} is not built; build it with `cargo build --target wasm32-wasip2 --release` (or pass --wasm-dir)",
                d.display()
            )));
        }
        out.push(Job {
            wasm,
            scenarios: harness::scenario_files(&d),
        });
    }
    Ok(out)
}

/// A plugin directory of another language (no Cargo.toml): its component
/// is `NAME.wasm` beside its code (what its `build.sh` writes), or in
/// `wasm_dir`; NAME is the directory's name.
fn foreign_job(d: &Path, wasm_dir: Option<&Path>) -> Result<Job, Error> {
    let abs = std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf());
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = format!("{name}.wasm");
    let wasm = wasm_dir.map_or_else(|| abs.join(&file), |w| w.join(&file));
    if !wasm.exists() {
        return Err(Error::Usage(format!(
            "{}: {} is not built; build it with its ./build.sh (or pass --wasm-dir)",
            d.display(),
            wasm.display()
        )));
    }
    Ok(Job {
        wasm,
        scenarios: harness::scenario_files(d),
    })
}

/// Run the scenarios; exit non-zero if any expectation is unmet.
pub async fn test(
    path: &Path,
    scenarios: &[PathBuf],
    wasm_dir: Option<&Path>,
    quiet: bool,
) -> Result<i32, Error> {
    let jobs = jobs(path, scenarios, wasm_dir)?;
    let rt = Arc::new(Runtime::new(&EngineLimits {
        max_instances: 8,
        max_memory_bytes: 64 << 20,
        quick_tier: true,
    })?);
    // The same cache as runs (unless their uphost.yaml moves it).
    let cache = Cache::new(&rt, crate::execution::session::user_cache_dir());
    let (mut passed, mut failed) = (0, 0);
    for job in jobs {
        let plugin = loading::load_file(&rt, &cache, &job.wasm, 64 << 20).await?;
        for sfile in &job.scenarios {
            let sc = scenario::load(sfile)?;
            let report = harness::run(&rt, &plugin, &sc).await;
            let title = format!(
                "{} {}{}",
                plugin.name,
                sfile.display(),
                if sc.name.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", sc.name)
                }
            );
            if report.failures.is_empty() {
                passed += 1;
                outln!("PASS {title}");
                if !quiet {
                    for l in &report.trace {
                        outln!("     {}", crate::untrusted::text(l));
                    }
                }
            } else {
                failed += 1;
                outln!("FAIL {title}");
                for l in &report.trace {
                    outln!("     {}", crate::untrusted::text(l));
                }
                outln!("  unmet expectations in {}:", sfile.display());
                for f in &report.failures {
                    outln!("   ✗ {}", crate::untrusted::text(f));
                }
            }
        }
    }
    outln!("{passed} scenario(s) passed, {failed} failed");
    Ok(if failed == 0 { exit::OK } else { exit::FAILED })
}
