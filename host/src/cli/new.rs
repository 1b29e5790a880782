//! `uphost new plugin NAME [--lang rust|python|js]`: a plugin that builds
//! and passes one scenario out of the box: a Rust crate for wasm32-wasip2
//! (which also passes `cargo test`), or a Python or JavaScript directory
//! with the WIT, the code and a `build.sh` that installs its pinned
//! toolchain (componentize-py from PyPI, componentize-js from npm).

use std::path::Path;

use crate::Error;

use super::exit;

const CARGO: &str = include_str!("../../templates/plugin/Cargo.toml.tmpl");
const LIB: &str = include_str!("../../templates/plugin/lib.rs.tmpl");
const HAPPY: &str = include_str!("../../templates/plugin/happy.yaml.tmpl");
const WIT: &str = include_str!("../../../wit/v0.2/plugin.wit");
const FOREIGN_HAPPY: &str = include_str!("../../templates/happy-foreign.yaml.tmpl");
const PY_APP: &str = include_str!("../../templates/python/app.py.tmpl");
const PY_HELPER: &str = include_str!("../../templates/python/uphost.py");
const PY_BUILD: &str = include_str!("../../templates/python/build.sh.tmpl");
const PY_REQUIREMENTS: &str = include_str!("../../../polyglot/toolchain/requirements.txt");
const JS_APP: &str = include_str!("../../templates/js/app.js.tmpl");
const JS_BUILD: &str = include_str!("../../templates/js/build.sh.tmpl");
const JS_PACKAGE: &str = include_str!("../../templates/js/package.json.tmpl");

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A crate with uphost-sdk (the reference).
    Rust,
    /// componentize-py.
    Python,
    /// componentize-js.
    Js,
}

fn render(t: &str, name: &str, sdk: &str, workspace: &str) -> String {
    let ident: String = name
        .split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    t.replace("Plugin_", &ident)
        .replace("{{name}}", name)
        .replace("{{sdk}}", sdk)
        .replace("{{workspace}}", workspace)
}

/// Create the plugin `dir/name` in `lang`.
pub fn plugin(name: &str, dir: &Path, sdk: Option<&Path>, lang: Lang) -> Result<i32, Error> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        return Err(Error::Usage(format!(
            "`{name}` is not a valid plugin name: use lowercase letters, digits and `-`, starting with a letter"
        )));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(Error::Usage(format!(
            "{} already exists; choose another name or directory",
            root.display()
        )));
    }
    if lang != Lang::Rust {
        return foreign(name, &root, lang);
    }
    let sdk_dep = match sdk {
        Some(p) => format!(
            "uphost-sdk = {{ path = \"{}\" }}",
            std::path::absolute(p).unwrap_or(p.to_path_buf()).display()
        ),
        None => {
            let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
            match built_from.canonicalize() {
                Ok(p) => format!("uphost-sdk = {{ path = \"{}\" }}", p.display()),
                Err(_) => "uphost-sdk = \"0.1\"".to_string(),
            }
        }
    };
    // Standalone unless the parent workspace already lists it as a member.
    let workspace = "[workspace]";
    let io = |source| Error::Io {
        path: root.clone(),
        source,
    };
    std::fs::create_dir_all(root.join("src")).map_err(io)?;
    std::fs::create_dir_all(root.join("scenarios")).map_err(io)?;
    std::fs::write(
        root.join("Cargo.toml"),
        render(CARGO, name, &sdk_dep, workspace),
    )
    .map_err(io)?;
    std::fs::write(
        root.join("src/lib.rs"),
        render(LIB, name, &sdk_dep, workspace),
    )
    .map_err(io)?;
    std::fs::write(
        root.join("scenarios/happy.yaml"),
        render(HAPPY, name, &sdk_dep, workspace),
    )
    .map_err(io)?;
    outln!("created plugin crate {}", root.display());
    outln!("  cd {}", root.display());
    outln!("  cargo test                                   # native unit tests (mock host)");
    outln!("  cargo build --target wasm32-wasip2 --release # the component");
    outln!("  uphost test .                                # scenarios against the component");
    Ok(exit::OK)
}

/// A Python or JavaScript plugin directory.
fn foreign(name: &str, root: &Path, lang: Lang) -> Result<i32, Error> {
    let io = |source| Error::Io {
        path: root.to_path_buf(),
        source,
    };
    let r = |t: &str| t.replace("{{name}}", name);
    std::fs::create_dir_all(root.join("wit")).map_err(io)?;
    std::fs::create_dir_all(root.join("scenarios")).map_err(io)?;
    let mut files: Vec<(&str, String)> = vec![
        ("wit/plugin.wit", WIT.to_string()),
        ("scenarios/happy.yaml", r(FOREIGN_HAPPY)),
    ];
    match lang {
        Lang::Python => files.extend([
            ("app.py", r(PY_APP)),
            ("uphost.py", PY_HELPER.to_string()),
            ("requirements.txt", PY_REQUIREMENTS.to_string()),
            ("build.sh", r(PY_BUILD)),
        ]),
        _ => files.extend([
            ("app.js", r(JS_APP)),
            ("package.json", r(JS_PACKAGE)),
            ("build.sh", r(JS_BUILD)),
        ]),
    }
    for (f, text) in &files {
        std::fs::write(root.join(f), text).map_err(io)?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("build.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .map_err(io)?;
    outln!(
        "created {} plugin {}",
        if lang == Lang::Python {
            "Python"
        } else {
            "JavaScript"
        },
        root.display()
    );
    outln!("  cd {}", root.display());
    outln!(
        "  ./build.sh       # installs the pinned {} once, writes {name}.wasm",
        if lang == Lang::Python {
            "componentize-py (PyPI) in .venv"
        } else {
            "componentize-js (npm) in node_modules"
        }
    );
    outln!("  uphost test .    # scenarios against the component");
    Ok(exit::OK)
}
