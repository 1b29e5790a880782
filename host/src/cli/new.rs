//! `uphost new plugin NAME`: a plugin crate that builds for wasm32-wasip2,
//! passes `cargo test` and one scenario out of the box.

use std::path::Path;

use crate::Error;

use super::exit;

const CARGO: &str = include_str!("../../templates/plugin/Cargo.toml.tmpl");
const LIB: &str = include_str!("../../templates/plugin/lib.rs.tmpl");
const HAPPY: &str = include_str!("../../templates/plugin/happy.yaml.tmpl");

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

/// Create the crate `dir/name`.
pub fn plugin(name: &str, dir: &Path, sdk: Option<&Path>) -> Result<i32, Error> {
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
