//! Plugins in Python and JavaScript through the real binary: the examples
//! (glance in Python, horizon in JavaScript, built from PyPI's
//! componentize-py and npm's componentize-js by `cargo xtask build`)
//! upgrade the simulated cluster beside the Rust plugins, and `uphost new
//! plugin --lang python|js` writes a plugin that builds with its pinned
//! toolchain and passes its scenario.

use std::process::Command;

use uphost_tests::site::Site;
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

/// A large plugin (an interpreter in a component) whose optimized code is
/// not cached is loaded by the quick compiler, and its optimized code is
/// compiled in the background into the cache, where the next load finds
/// it; `first_load: optimized` compiles it before going on instead.
#[test]
fn a_large_plugins_first_load_is_quick_and_its_optimized_code_follows() {
    let site = Site::new();
    site.plugin(
        &uphost_tests::root().join("target/polyglot/horizon.wasm"),
        "horizon",
    )
    .write(
        "inventory.yaml",
        "all:\n  hosts:\n    h1:\n      ansible_connection: local\n",
    )
    .write("services.yaml", "services: {}\n");
    let d = site.path();
    let config = |first_load: &str, cache: &str| {
        site.config(&format!("cache_dir: {cache}/\nfirst_load: {first_load}\n"));
    };
    let artifacts = |cache: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.join(cache))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".cwasm"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    const QUICK: &str = "loaded by the quick compiler";

    config("quick", "cache");
    let r = uphost_in(d, &["-v", "plugins", "list"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("horizon"), "{}", r.all());
    assert!(r.stderr.contains(QUICK), "{}", r.stderr);
    // The quick code is cached at once; the optimized code follows from
    // the detached compile (Cranelift takes ≈ 12 s for it here).
    let t = std::time::Instant::now();
    while artifacts("cache").len() < 2 && t.elapsed() < std::time::Duration::from_secs(240) {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let both = artifacts("cache");
    assert_eq!(both.len(), 2, "the quick and the optimized code: {both:?}");
    // The next load takes the optimized code and starts no compile.
    let r = uphost_in(d, &["-v", "plugins", "list"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.stderr.contains(QUICK), "{}", r.stderr);
    assert_eq!(artifacts("cache"), both);

    // `first_load: optimized`: the optimized code only, before listing.
    config("optimized", "cache-optimized");
    let r = uphost_in(d, &["-v", "plugins", "list"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.stderr.contains(QUICK), "{}", r.stderr);
    let one = artifacts("cache-optimized");
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(
        both.contains(&one[0]),
        "the same optimized artifact: {one:?} in {both:?}"
    );
    // A value it does not know is an error naming the key.
    config("fast", "cache-optimized");
    let r = uphost_in(d, &["plugins", "list"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("first_load"), "{}", r.stderr);
}
