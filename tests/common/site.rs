//! A throwaway configuration directory built up by a test: the plugins
//! it copies in, its inventory and services, and an `uphost.yaml` with
//! the usual paths (`plugins/`, `inventory.yaml`, `services.yaml`,
//! `state/`) and whatever else the test adds. For the tests that need
//! neither the demo's nodes nor its configuration.

use std::path::Path;

use crate::{Ran, uphost_in};

/// The usual first lines of a test's `uphost.yaml`.
const PATHS: &str =
    "plugins: plugins/\ninventory: inventory.yaml\nservices: services.yaml\nstate_dir: state/\n";

/// A configuration directory of a test's own.
pub struct Site {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
}

impl Default for Site {
    fn default() -> Site {
        Site::new()
    }
}

impl Site {
    /// An empty directory with its `plugins/`.
    pub fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("plugins")).expect("mkdir plugins");
        Site { dir }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copy the component `from` into `plugins/` as `<name>.wasm`.
    pub fn plugin(&self, from: &Path, name: &str) -> &Site {
        std::fs::copy(
            from,
            self.path().join("plugins").join(format!("{name}.wasm")),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build it first: cargo xtask build, cargo xtask fixtures)",
                from.display()
            )
        });
        self
    }

    /// Write `text` to the file `name` of the directory.
    pub fn write(&self, name: &str, text: &str) -> &Site {
        std::fs::write(self.path().join(name), text).expect("write a site file");
        self
    }

    /// Write `uphost.yaml`: the usual paths, then `extra` (whole lines).
    pub fn config(&self, extra: &str) -> &Site {
        self.write("uphost.yaml", &format!("{PATHS}{extra}"))
    }

    /// Run the built uphost here.
    pub fn uphost(&self, args: &[&str]) -> Ran {
        uphost_in(self.path(), args)
    }

    /// Approve every plugin of `plugins/`; the test fails if that does.
    pub fn approve(&self) -> &Site {
        let r = self.uphost(&["plugins", "approve", "--all", "--yes"]);
        assert_eq!(r.code, 0, "{}", r.all());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_has_the_usual_paths_and_what_the_test_adds() {
        let s = Site::new();
        s.config("forks: 3\n")
            .write("services.yaml", "services: {}\n");
        let cfg = std::fs::read_to_string(s.path().join("uphost.yaml")).unwrap();
        assert!(cfg.starts_with("plugins: plugins/\n"), "{cfg}");
        assert!(cfg.ends_with("state_dir: state/\nforks: 3\n"), "{cfg}");
        assert!(s.path().join("plugins").is_dir());
        assert_eq!(
            std::fs::read_to_string(s.path().join("services.yaml")).unwrap(),
            "services: {}\n"
        );
    }
}
