//! Plugins in Python and JavaScript through the real binary: the examples
//! (glance in Python, horizon in JavaScript, built from PyPI's
//! componentize-py and npm's componentize-js by `cargo xtask build`)
//! upgrade the simulated cluster beside the Rust plugins, and `uphost new
//! plugin --lang python|js` writes a plugin that builds with its pinned
//! toolchain and passes its scenario.

use std::process::Command;

use uphost_tests::{Demo, uphost_bin, uphost_in};

#[test]
fn python_and_javascript_plugins_upgrade_the_cluster_beside_rust_ones() {
    let d = Demo::of(
        "polyglot",
        "newton",
        &[
            "haproxy", "galera", "rabbitmq", "keystone", "glance", "horizon",
        ],
        true,
    );
    let r = d.uphost(&["plugins", "list"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("glance") && r.stdout.contains("horizon"),
        "{}",
        r.stdout
    );
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // Glance (Python): stopped everywhere, installed, one db sync, started.
    let ops = d.ops("ctl1");
    let pos = |ops: &[String], w: &str| {
        ops.iter()
            .position(|o| o == w)
            .unwrap_or_else(|| panic!("`{w}` not in {ops:#?}"))
    };
    assert!(pos(&ops, "systemctl stop glance-api") < pos(&ops, "glance-manage db sync"));
    assert!(pos(&ops, "glance-manage db sync") < pos(&ops, "systemctl start glance-api"));
    assert_eq!(
        d.ops("ctl2")
            .iter()
            .filter(|o| o.starts_with("glance-manage"))
            .count(),
        0,
        "the migration ran on more than one node"
    );
    // Horizon (JavaScript): one controller at a time, each rebuilt and
    // reloaded.
    for n in ["ctl1", "ctl2", "ctl3"] {
        let ops = d.ops(n);
        assert!(
            pos(&ops, "apt-get install -y openstack-dashboard=ocata")
                < pos(
                    &ops,
                    "python3 /usr/share/openstack-dashboard/manage.py collectstatic --noinput"
                )
        );
        pos(&ops, "systemctl reload apache2");
        let st: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.path().join(format!("nodes/{n}/state.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(st["packages"]["glance-api"], "ocata", "{n}");
        assert_eq!(st["packages"]["openstack-dashboard"], "ocata", "{n}");
    }
    let status = d.uphost(&["status"]);
    assert!(
        status.stdout.contains("glance") && status.stdout.contains("horizon"),
        "{}",
        status.stdout
    );
}

/// `uphost new plugin NAME --lang L`, its `build.sh` (the pinned toolchain
/// from the language's registry) and `uphost test DIR`.
fn scaffold_builds_and_passes(lang: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let r = uphost_in(
        dir.path(),
        &["new", "plugin", name, "--lang", lang, "--dir", "."],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let root = dir.path().join(name);
    let out = Command::new(root.join("build.sh")).output().unwrap();
    assert!(
        out.status.success(),
        "build.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(root.join(format!("{name}.wasm")).exists());
    let r = uphost_in(&root, &["test", "."]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("1 scenario(s) passed, 0 failed"),
        "{}",
        r.stdout
    );
    // The plugin's own directory is not a workspace of anything else.
    assert!(!root.join("Cargo.toml").exists());
    let _ = uphost_bin();
}

#[test]
fn a_new_python_plugin_builds_and_passes_its_scenario() {
    scaffold_builds_and_passes("python", "memcached");
}

#[test]
fn a_new_javascript_plugin_builds_and_passes_its_scenario() {
    scaffold_builds_and_passes("js", "kvstore");
}
