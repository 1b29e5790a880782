//! The plugins written in Python and JavaScript (`polyglot/`): their
//! pinned toolchains (componentize-py from PyPI, componentize-js from npm,
//! installed under `target/polyglot/`), and their builds into
//! `target/polyglot/NAME.wasm`, skipped when nothing they are built from
//! changed (a Python build takes about 12 s, a JavaScript one about 20 s).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{root, run};

/// The example plugins: (name, language).
pub(crate) const PLUGINS: [(&str, &str); 2] = [("glance", "python"), ("horizon", "js")];

fn out_dir() -> PathBuf {
    root().join("target/polyglot")
}

/// Where `name`'s component is built.
pub(crate) fn wasm_out(name: &str) -> PathBuf {
    out_dir().join(format!("{name}.wasm"))
}

fn toolchain() -> PathBuf {
    root().join("polyglot/toolchain")
}

/// componentize-py, pinned by `polyglot/toolchain/requirements.txt`, in a
/// venv of its own.
fn python() -> Result<PathBuf> {
    let venv = out_dir().join("venv");
    let bin = venv.join("bin/componentize-py");
    let req = toolchain().join("requirements.txt");
    let stamp = venv.join(".requirements");
    let wanted = std::fs::read_to_string(&req).context("reading requirements.txt")?;
    if bin.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(bin);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&req))?;
    std::fs::write(&stamp, wanted)?;
    Ok(bin)
}

/// componentize-js, pinned by `polyglot/toolchain/package-lock.json`.
fn js() -> Result<PathBuf> {
    let dir = out_dir().join("js");
    std::fs::create_dir_all(&dir)?;
    let bin = dir.join("node_modules/.bin/componentize-js");
    let lock = std::fs::read(toolchain().join("package-lock.json"))?;
    if bin.exists() && std::fs::read(dir.join("package-lock.json")).ok() == Some(lock.clone()) {
        return Ok(bin);
    }
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(toolchain().join(f), dir.join(f))?;
    }
    run(Command::new("npm")
        .current_dir(&dir)
        .args(["ci", "--silent", "--no-audit", "--no-fund"]))?;
    Ok(bin)
}

/// The newest modification time under `paths`.
fn newest(paths: &[PathBuf]) -> std::time::SystemTime {
    fn walk(p: &Path, t: &mut std::time::SystemTime) {
        if let Ok(m) = std::fs::metadata(p) {
            if let Ok(mt) = m.modified() {
                *t = (*t).max(mt);
            }
            if m.is_dir()
                && let Ok(rd) = std::fs::read_dir(p)
            {
                for e in rd.flatten() {
                    walk(&e.path(), t);
                }
            }
        }
    }
    let mut t = std::time::UNIX_EPOCH;
    for p in paths {
        walk(p, &mut t);
    }
    t
}

/// Build every example plugin whose sources (or the WIT, or the pinned
/// toolchain) changed since its component was built.
pub(crate) fn build() -> Result<()> {
    std::fs::create_dir_all(out_dir())?;
    let wit = root().join("wit/v0.2");
    for (name, lang) in PLUGINS {
        let src = root().join("polyglot").join(name);
        let out = wasm_out(name);
        let inputs = [
            src.join(if lang == "python" { "app.py" } else { "app.js" }),
            wit.clone(),
            toolchain(),
            root().join("host/templates/python"),
        ];
        let built = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
        if built.is_some_and(|b| b >= newest(&inputs)) {
            continue;
        }
        if lang == "python" {
            run(Command::new(python()?)
                .arg("-d")
                .arg(&wit)
                .args(["-w", "service-plugin", "componentize", "-p"])
                .arg(root().join("host/templates/python"))
                .arg("-p")
                .arg(&src)
                .args(["app", "-o"])
                .arg(&out))?;
        } else {
            run(Command::new(js()?)
                .arg(src.join("app.js"))
                .arg("--wit")
                .arg(&wit)
                .args([
                    "--world-name",
                    "service-plugin",
                    "-d",
                    "http",
                    "fetch-event",
                    "-o",
                ])
                .arg(&out))?;
        }
    }
    Ok(())
}
