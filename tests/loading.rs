//! Loading, planning and approval, through the real binary: broken plugin
//! files, cycles, duplicates, missing dependencies, unapproved or changed
//! plugins. Each gives its specific error, a non-zero exit, and nothing runs.

use uphost_tests::{Demo, SEED_PLUGINS, wasm};

fn with_extra(file: &str, bytes: &[u8]) -> Demo {
    let d = Demo::new(&["haproxy", "galera"], true);
    std::fs::write(d.path().join("plugins").join(file), bytes).unwrap();
    d
}

fn assert_input_error(d: &Demo, args: &[&str], needles: &[&str]) {
    let r = d.uphost(args);
    assert_eq!(r.code, 2, "exit code for {args:?}: {}", r.all());
    for n in needles {
        assert!(r.stderr.contains(n), "expected `{n}` in:\n{}", r.stderr);
    }
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(d.ops("ctl1").is_empty(), "something was executed");
}

#[test]
fn plan_json_lists_every_dependency_first() {
    let d = Demo::new(SEED_PLUGINS, true);
    let v = d.json(&["plan", "--format", "json"]);
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), SEED_PLUGINS.len());
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for (i, s) in services.iter().enumerate() {
        for dep in s["depends_on"].as_array().unwrap() {
            let j = names
                .iter()
                .position(|n| n == &dep.as_str().unwrap())
                .unwrap();
            assert!(
                j < i,
                "{} listed before its dependency {}",
                names[i],
                names[j]
            );
            assert!(services[j]["level"].as_u64() < s["level"].as_u64());
        }
        assert!(!s["nodes"].as_array().unwrap().is_empty());
    }
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("galera") < pos("keystone") && pos("rabbitmq") < pos("keystone"));
    assert!(pos("keystone") < pos("placement") && pos("keystone") < pos("nova"));
    assert!(pos("ceph-mon") < pos("ceph-osd"));
    assert!(pos("nova") < pos("nova-compute"));
    for f in ["dot", "mermaid", "text"] {
        let r = d.uphost(&["plan", "--format", f]);
        assert_eq!(r.code, 0);
        assert!(
            r.stdout.contains("level 0") || r.stdout.contains("level0"),
            "{f}: {}",
            r.stdout
        );
    }
}

#[test]
fn truncated_component_is_named() {
    let bytes = std::fs::read(wasm("rabbitmq")).unwrap();
    let d = with_extra("rabbitmq.wasm", &bytes[..bytes.len() / 3]);
    assert_input_error(&d, &["plan"], &["rabbitmq.wasm", "corrupt or truncated"]);
    let d = with_extra("tiny.wasm", b"\0as");
    assert_input_error(
        &d,
        &["run", "--yes"],
        &["tiny.wasm", "not a WebAssembly component"],
    );
}

#[test]
fn core_module_is_rejected() {
    let d = with_extra("core.wasm", b"\0asm\x01\0\0\0");
    assert_input_error(
        &d,
        &["plan"],
        &["core.wasm", "core WebAssembly module", "wasm32-wasip2"],
    );
}

#[test]
fn component_of_another_world_is_rejected() {
    let bytes = std::fs::read(wasm("fixture-other-world")).unwrap();
    let d = with_extra("greeter.wasm", &bytes);
    assert_input_error(
        &d,
        &["plugins", "list"],
        &[
            "greeter.wasm",
            "another world",
            "uphost:plugin/plugin@0.2.0",
        ],
    );
}

/// A plugin that imports wasi:http (componentize-js's default build): its
/// own import renamed in a real plugin's bytes, as the toolchain would
/// have written it.
fn importing_wasi_http() -> Vec<u8> {
    let mut bytes = std::fs::read(wasm("haproxy")).unwrap();
    for v in ["0.2.0", "0.2.6"] {
        let (from, to) = (
            format!("wasi:cli/stdout@{v}"),
            format!("wasi:http/types@{v}"),
        );
        assert_eq!(from.len(), to.len());
        let mut i = 0;
        while let Some(at) = bytes[i..]
            .windows(from.len())
            .position(|w| w == from.as_bytes())
        {
            bytes[i + at..i + at + from.len()].copy_from_slice(to.as_bytes());
            i += at + from.len();
        }
    }
    bytes
}

/// An unsupported import is named with how to build without it, found
/// before compiling (nothing is compiled into the cache for it), and
/// `plugins list` still lists every other plugin beside it.
#[test]
fn an_import_the_host_does_not_provide_is_named_before_compiling() {
    let d = own_cache(with_extra("js-plugin.wasm", &importing_wasi_http()));
    assert_input_error(
        &d,
        &["plan"],
        &[
            "js-plugin.wasm",
            "imports an interface this host does not provide",
            "wasi:http/types@0.2.",
            "-d http",
        ],
    );
    let r = d.uphost(&["plugins", "list"]);
    assert_eq!(r.code, 2, "{}", r.all());
    for n in ["haproxy", "galera", "js-plugin.wasm", "-d http"] {
        assert!(r.all().contains(n), "`{n}` not in {}", r.all());
    }
    // Compiled: the two good plugins only.
    assert_eq!(artifacts(&d.path().join("state/cache")).len(), 2);
}

/// A plugin whose memory at start is above the cap says so, with the
/// number needed and where to raise it: at load (above every cap) and at
/// plan (above its service's cap).
#[test]
fn a_plugin_starting_above_the_memory_cap_says_how_much_it_needs() {
    let d = Demo::new(&["haproxy", "galera"], true);
    d.edit(
        "uphost.yaml",
        "forks: 10\n",
        "forks: 10\nlimits: {memory_mb: 1}\n",
    );
    assert_input_error(
        &d,
        &["plan"],
        &[
            "haproxy.wasm",
            "MiB of memory at start",
            "above the 1 MiB cap",
            "memory_mb: 2",
            "services.yaml",
        ],
    );
    let d = Demo::new(&["haproxy", "galera"], true);
    d.edit(
        "services.yaml",
        "  haproxy:\n    roles: [controller]\n",
        "  haproxy:\n    roles: [controller]\n    limits: {memory_mb: 1}\n",
    );
    assert_input_error(
        &d,
        &["run", "--yes"],
        &[
            "`haproxy`",
            "above the service's 1 MiB cap",
            "haproxy: {limits: {memory_mb: 2}}",
            "Nothing was executed",
        ],
    );
}

#[test]
fn other_wit_version_says_which() {
    let bytes = std::fs::read(wasm("fixture-wrong-version")).unwrap();
    let d = with_extra("future.wasm", &bytes);
    assert_input_error(
        &d,
        &["plan"],
        &["future.wasm", "uphost:plugin@0.3.0", "0.1.x and @0.2.x"],
    );
}

#[test]
fn cycle_names_every_member() {
    let d = Demo::new(&["haproxy", "galera"], false);
    for c in ["fixture-cycle-a", "fixture-cycle-b"] {
        std::fs::copy(wasm(c), d.path().join("plugins").join(format!("{c}.wasm"))).unwrap();
    }
    assert_input_error(
        &d,
        &["plan"],
        &["dependency cycle", "cycle-a -> cycle-b -> cycle-a"],
    );
}

#[test]
fn duplicate_service_is_an_error() {
    let bytes = std::fs::read(wasm("galera")).unwrap();
    let d = with_extra("galera-copy.wasm", &bytes);
    assert_input_error(
        &d,
        &["plan"],
        &["two plugins claim service `galera`", "galera-copy.wasm"],
    );
}

#[test]
fn missing_dependency_names_plugin_and_service() {
    let d = Demo::new(&["keystone", "galera", "haproxy"], false);
    assert_input_error(
        &d,
        &["plan"],
        &["`keystone` depends on `rabbitmq`", "no plugin provides"],
    );
}

#[test]
fn unapproved_plugins_are_refused_with_the_fix() {
    let d = Demo::new(SEED_PLUGINS, false);
    for args in [
        &["run", "--dry-run", "--yes"][..],
        &["check"][..],
        &["plan"][..],
    ] {
        let r = d.uphost(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        for p in SEED_PLUGINS {
            assert!(
                r.stderr.contains(&format!("plugin `{p}`")),
                "{p} not named: {}",
                r.stderr
            );
        }
        assert!(r.stderr.contains("plugins approve"), "{}", r.stderr);
    }
    assert!(!d.path().join("state/runs").exists(), "a run was started");
    for n in ["ctl1", "cmp1", "stor1"] {
        assert!(d.ops(n).is_empty());
    }
}

#[test]
fn a_changed_plugin_is_refused_naming_the_hash() {
    let d = Demo::new(&["galera", "haproxy"], true);
    // Same plugin, different bytes: append a custom section.
    let mut bytes = std::fs::read(wasm("galera")).unwrap();
    bytes.extend_from_slice(&[0, 6, 5, b'e', b'x', b't', b'r', b'a']);
    std::fs::write(d.path().join("plugins/galera.wasm"), &bytes).unwrap();
    let r = d.uphost(&["run", "--dry-run", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("changed since it was approved"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("approved sha256") && r.stderr.contains("current  sha256"));
    assert!(r.stderr.contains("plugins approve galera"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("haproxy"),
        "an unchanged plugin was reported: {}",
        r.stderr
    );
    // Approving it again makes it runnable.
    assert_eq!(d.uphost(&["plugins", "approve", "galera", "--yes"]).code, 0);
    assert_eq!(d.uphost(&["plan"]).code, 0);

    // A grant that no longer covers a request: the review marks the request
    // that is new (+) and the grant that is no longer asked for (-).
    d.edit(
        "plugins/uphost.lock",
        "program: touch\n",
        "program: touchy\n",
    );
    let r = d.uphost(&["plugins", "approve", "galera", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("requests (+ not in its current approval):")
            && r.stdout.contains("+ [mutating]  touch /*/clustercheck.disabled")
            && r.stdout.contains(
                "- [mutating]  touchy /*/clustercheck.disabled (approved before, no longer requested)"
            )
            && !r.stdout.contains("+ [mutating]  systemctl"),
        "{}",
        r.stdout
    );
}

/// The compile cache only saves time: when it cannot be used (here a file
/// stands where its directory should be; a full disk does the same) the
/// plugins are compiled in memory and the command does its work.
#[test]
fn an_unusable_compile_cache_costs_a_compile_not_the_run() {
    let d = own_cache(Demo::new(&["haproxy", "galera"], true));
    let _ = std::fs::remove_dir_all(d.path().join("state/cache"));
    std::fs::create_dir_all(d.path().join("state")).unwrap();
    std::fs::write(d.path().join("state/cache"), "not a directory").unwrap();
    let r = d.uphost(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("galera"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("compile cache unusable; compiling in memory"),
        "{}",
        r.stderr
    );
    let r = d.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
}

/// The demo with its compile cache in its own state directory (the
/// default is the user's cache directory, shared by every run and
/// `uphost test`).
fn own_cache(d: Demo) -> Demo {
    d.edit(
        "uphost.yaml",
        "state_dir: state/\n",
        "state_dir: state/\ncache_dir: state/cache\n",
    );
    d
}

/// Each artifact's file identity (a rewrite makes a new inode: the
/// atomic rename of a fresh compile).
fn artifacts(cache: &std::path::Path) -> Vec<(std::ffi::OsString, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .map(|e| (e.file_name(), e.metadata().unwrap().ino()))
        .collect();
    v.sort();
    v
}

#[test]
fn second_load_uses_the_compile_cache() {
    let d = own_cache(Demo::new(&["haproxy", "galera"], true));
    assert_eq!(d.uphost(&["plan"]).code, 0);
    let cache = d.path().join("state/cache");
    let before = artifacts(&cache);
    assert_eq!(before.len(), 2, "one artifact per plugin");
    assert_eq!(d.uphost(&["plan"]).code, 0);
    assert_eq!(
        before,
        artifacts(&cache),
        "an artifact was rewritten: a plugin was compiled again"
    );
}

/// Memory caps are enforced per store, not compiled in: changing
/// `memory_mb` (globally or for one service) compiles nothing again.
#[test]
fn changing_memory_mb_does_not_recompile() {
    let d = own_cache(Demo::new(&["haproxy", "galera"], true));
    assert_eq!(d.uphost(&["plan"]).code, 0);
    let cache = d.path().join("state/cache");
    let before = artifacts(&cache);
    assert_eq!(before.len(), 2);
    d.edit(
        "uphost.yaml",
        "forks: 10\n",
        "forks: 10\nlimits: {memory_mb: 256}\n",
    );
    d.edit(
        "services.yaml",
        "  haproxy:\n    roles: [controller]\n",
        "  haproxy:\n    roles: [controller]\n    limits: {memory_mb: 512}\n",
    );
    let r = d.uphost(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        before,
        artifacts(&cache),
        "a memory cap recompiled a plugin"
    );
}

/// The cache is bounded: past `cache_max_mb` the least recently used
/// artifacts go (here one left from a plugin file that changed since),
/// and those of the plugins in use stay.
#[test]
fn the_compile_cache_drops_the_least_recently_used_past_its_cap() {
    let d = own_cache(Demo::new(&["haproxy", "galera"], true));
    let cache = d.path().join("state/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let stale = cache.join(format!("{}-0000000000000000.cwasm", "ab".repeat(32)));
    std::fs::write(&stale, vec![0u8; 20 << 20]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(86400))
        .unwrap();
    d.edit(
        "uphost.yaml",
        "forks: 10\n",
        "forks: 10\ncache_max_mb: 16\n",
    );
    let r = d.uphost(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !stale.exists(),
        "the least recently used artifact is still there"
    );
    assert_eq!(
        artifacts(&cache).len(),
        2,
        "the plugins in use lost their artifacts"
    );
    let r = d.uphost(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.all());
    d.edit("uphost.yaml", "cache_max_mb: 16\n", "cache_max_mb: 1\n");
    let r = d.uphost(&["plan"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("cache_max_mb") && r.stderr.contains("16..=1048576"),
        "{}",
        r.stderr
    );
}

#[test]
fn config_errors_have_file_line_and_column() {
    let d = Demo::new(&["haproxy", "galera"], true);
    std::fs::write(
        d.path().join("services.yaml"),
        "services:\n  galera:\n    roles: [controller\n",
    )
    .unwrap();
    let r = d.uphost(&["plan"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("services.yaml:"), "{}", r.stderr);
    std::fs::write(
        d.path().join("services.yaml"),
        "services:\n  galera:\n    roles: [contoller]\n",
    )
    .unwrap();
    let r = d.uphost(&["plan"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("services.galera.roles[0]: `contoller`")
            && r.stderr.contains("closest groups: `controller`"),
        "{}",
        r.stderr
    );
    std::fs::write(
        d.path().join("services.yaml"),
        "services:\n  galera:\n    roles: [controller]\n    rollout: sometimes\n",
    )
    .unwrap();
    let r = d.uphost(&["plan"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("services.yaml:3:") || r.stderr.contains("services.yaml:4:"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("expected `parallel`"), "{}", r.stderr);
}

#[test]
fn out_of_range_settings_and_misspelt_services_are_refused_before_anything_runs() {
    let d = Demo::new(&["haproxy", "galera"], true);
    for forks in ["0", "99999999999", "ten"] {
        assert_input_error(
            &d,
            &["run", "--yes", "--forks", forks],
            &[&format!(
                "`{forks}` is not a parallelism bound: use a count from 1 to 10000"
            )],
        );
    }
    d.edit("uphost.yaml", "forks: 10", "forks: 0");
    assert_input_error(
        &d,
        &["run", "--yes"],
        &["uphost.yaml: forks: 0 is out of range"],
    );
    d.edit("uphost.yaml", "forks: 0", "forks: 10");
    // A typo in the services file leaves the real service unmapped.
    d.edit("services.yaml", "  galera:", "  galerra:");
    assert_input_error(
        &d,
        &["run", "--yes"],
        &[
            "no nodes host `galera`",
            "`services.galerra` names no plugin: did you mean `galera`?",
        ],
    );
    d.edit("services.yaml", "  galerra:", "  galera:");
    // The state directory is a file.
    d.edit(
        "uphost.yaml",
        "state_dir: state/",
        "state_dir: inventory.yaml",
    );
    assert_input_error(
        &d,
        &["run", "--yes"],
        &["the state directory ./inventory.yaml is a file, not a directory"],
    );
    d.edit(
        "uphost.yaml",
        "state_dir: inventory.yaml",
        "state_dir: state/",
    );
    // A directory where the inventory should be: named against its key.
    d.edit(
        "uphost.yaml",
        "inventory: inventory.yaml",
        "inventory: plugins",
    );
    // A directory is an inventory source (as in Ansible): each of its
    // files is read, and one that is not an inventory is named.
    assert_input_error(&d, &["plan"], &["plugins/galera.wasm", "not UTF-8"]);
    d.edit(
        "uphost.yaml",
        "inventory: plugins",
        "inventory: no-such-inventory",
    );
    assert_input_error(
        &d,
        &["plan"],
        &[
            "uphost.yaml: inventory: cannot read ./no-such-inventory",
            "point `inventory:` at the Ansible inventory",
        ],
    );
    d.edit(
        "uphost.yaml",
        "inventory: no-such-inventory",
        "inventory: plugins",
    );
    d.edit(
        "uphost.yaml",
        "inventory: plugins",
        "inventory: inventory.yaml",
    );
    // A run id that is not there: the runs that are.
    assert_eq!(d.uphost(&["run", "--yes", "--dry-run"]).code, 0);
    let id = d.status()["run_id"].as_str().unwrap().to_string();
    for cmd in ["status", "report"] {
        let r = d.uphost(&[cmd, "20990101T000000Z-0000"]);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(
            r.stderr
                .contains("no run `20990101T000000Z-0000` in ./state/runs")
                && r.stderr.contains(&format!("the only run there is {id}")),
            "{}",
            r.stderr
        );
    }
}

/// A symlink planted in the compile cache (here: to another plugin's valid
/// artifact, outside the cache) is never loaded: the plugin is compiled
/// again and the link replaced by a file of uphost's own.
#[test]
fn a_symlink_in_the_cache_is_not_followed() {
    let d = own_cache(Demo::new(&["haproxy", "galera"], true));
    assert_eq!(d.uphost(&["plan"]).code, 0);
    let sha =
        |p: &str| uphost_tests::sha256(&std::fs::read(d.path().join("plugins").join(p)).unwrap());
    let cache = d.path().join("state/cache");
    let find = |sha: &str| {
        std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(sha))
            .expect("an artifact")
    };
    let galera = find(&sha("galera.wasm"));
    let elsewhere = d.path().join("elsewhere.cwasm");
    std::fs::copy(find(&sha("haproxy.wasm")), &elsewhere).unwrap();
    std::fs::remove_file(&galera).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &galera).unwrap();
    let r = d.uphost(&["plan"]);
    assert_eq!(r.code, 0, "the planted artifact was loaded: {}", r.all());
    assert!(r.stdout.contains("galera"), "{}", r.stdout);
    let meta = std::fs::symlink_metadata(&galera).unwrap();
    assert!(meta.is_file(), "the link is still there");
}

/// Input files that are not files, or that would hang, exhaust or crash
/// the host: each is refused at once, naming the file and what it is.
#[test]
fn hostile_configuration_files_are_refused_by_name() {
    let d = Demo::new(SEED_PLUGINS, true);
    let inv = d.path().join("inventory.yaml");
    let kept = std::fs::read_to_string(&inv).unwrap();
    let reset = || {
        let _ = std::fs::remove_file(&inv);
        let _ = std::fs::remove_dir_all(&inv);
    };
    // A FIFO would block the read forever.
    reset();
    let st = std::process::Command::new("mkfifo")
        .arg(&inv)
        .status()
        .unwrap();
    assert!(st.success());
    assert_input_error(
        &d,
        &["plan"],
        &["inventory.yaml", "it is a FIFO, not a regular file"],
    );
    // /dev/zero and /dev/urandom never end.
    for dev in ["/dev/zero", "/dev/urandom"] {
        reset();
        std::os::unix::fs::symlink(dev, &inv).unwrap();
        assert_input_error(
            &d,
            &["plan"],
            &["inventory.yaml", "it is a device, not a regular file"],
        );
    }
    reset();
    std::fs::create_dir(&inv).unwrap();
    // A directory is a source, as in Ansible; an empty one is named.
    assert_input_error(
        &d,
        &["plan"],
        &["inventory.yaml", "holds no inventory file"],
    );
    // Over the size cap: refused before it is parsed.
    reset();
    let mut big = kept.clone();
    while big.len() <= 16 << 20 {
        big.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&inv, big).unwrap();
    assert_input_error(
        &d,
        &["plan"],
        &["inventory.yaml", "over the 16777216 byte cap"],
    );
    // Groups in a cycle overflowed the stack (SIGABRT, no file named).
    reset();
    std::fs::write(
        &inv,
        kept.replacen(
            "  children:\n",
            "  children:\n    loop_a:\n      children:\n        loop_b:\n    loop_b:\n      children:\n        loop_a:\n",
            1,
        ),
    )
    .unwrap();
    assert_input_error(
        &d,
        &["plan"],
        &[
            "inventory.yaml",
            "the groups form a cycle: loop_a -> loop_b -> loop_a",
        ],
    );
    // Limits out of range name the file, the key, the value and the range.
    reset();
    std::fs::write(&inv, &kept).unwrap();
    d.edit(
        "uphost.yaml",
        "plugins:",
        "limits: {memory_mb: 0}\nplugins:",
    );
    assert_input_error(
        &d,
        &["plan"],
        &["uphost.yaml", "limits.memory_mb", "0 is outside 1..=4096"],
    );
}

/// A YAML alias bomb and 100 000 levels of nesting in an inventory (a file
/// under the size cap) are refused at once, naming the file, the line and
/// the cap, in every YAML input the host reads.
#[test]
fn deep_nesting_and_alias_bombs_are_refused_at_once() {
    let d = Demo::new(&["haproxy"], true);
    let inv = d.path().join("inventory.yaml");
    let kept = std::fs::read_to_string(&inv).unwrap();
    let mut bomb =
        String::from("all:\n  vars:\n    a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        bomb.push_str(&format!(
            "    a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 9].join(", ")
        ));
    }
    let deep = format!(
        "all:\n  vars:\n    x: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep_block: String = (0..300)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i * 2)))
        .collect();
    for (name, text, needles) in [
        (
            "alias bomb",
            bomb,
            vec![
                "inventory.yaml:",
                "repetition limit exceeded",
                "cap on alias expansion",
            ],
        ),
        (
            "flow nesting",
            deep,
            vec!["inventory.yaml:3:", "nests deeper than 64 levels"],
        ),
        (
            "block nesting",
            deep_block,
            vec!["inventory.yaml:", "indentation nests deeper than 64 levels"],
        ),
    ] {
        std::fs::write(&inv, &text).unwrap();
        let t = std::time::Instant::now();
        let r = d.uphost(&["plan"]);
        assert_eq!(r.code, 2, "{name}: {}", r.all());
        for n in needles {
            assert!(r.stderr.contains(n), "{name}: `{n}` not in {}", r.stderr);
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "{name}: {:?}",
            t.elapsed()
        );
    }
    std::fs::write(&inv, kept).unwrap();
    // The same caps in the services file.
    d.edit(
        "services.yaml",
        "services:",
        &format!("x: {}{}\nservices:", "{".repeat(70), "}".repeat(70)),
    );
    let r = d.uphost(&["plan"]);
    assert!(
        r.stderr.contains("services.yaml:") && r.stderr.contains("nests deeper"),
        "{}",
        r.all()
    );
}

/// uphost.lock entries that no longer match (a plugin approved under
/// another file name, an approval of a plugin that is gone), an empty
/// `plugins:`, a symlink loop for uphost.yaml and a NUL byte are each
/// named, with the fix; approving records the file and drops what is gone.
#[test]
fn stale_lock_entries_empty_plugins_symlink_loops_and_nul_bytes_are_named() {
    let d = Demo::new(&["haproxy", "galera"], true);
    let lock = d.path().join("plugins/uphost.lock");
    let kept = std::fs::read_to_string(&lock).unwrap();
    d.edit(
        "plugins/uphost.lock",
        "file: haproxy.wasm",
        "file: other.wasm",
    );
    assert_input_error(
        &d,
        &["plan"],
        &[
            "was approved as file other.wasm, but is loaded from haproxy.wasm",
            "plugins approve haproxy",
        ],
    );
    let r = d.uphost(&["plugins", "approve", "--all", "--yes"]);
    assert!(
        r.stdout.contains("its file is now haproxy.wasm"),
        "{}",
        r.all()
    );
    assert_eq!(d.uphost(&["plan"]).code, 0);
    std::fs::write(
        &lock,
        kept.replacen(
            "plugins:\n",
            &format!(
                "plugins:\n  ghost:\n    file: ghost.wasm\n    version: 1.0.0\n    sha256: {}\n",
                "0".repeat(64)
            ),
            1,
        ),
    )
    .unwrap();
    assert_input_error(
        &d,
        &["plan"],
        &[
            "uphost.lock approves `ghost` (ghost.wasm), which is not in the plugin directory",
            "plugins approve --all",
        ],
    );
    let r = d.uphost(&["plugins", "approve", "--all", "--yes"]);
    assert!(r.stdout.contains("ghost: approval removed"), "{}", r.all());
    assert_eq!(d.uphost(&["plan"]).code, 0);
    d.edit("uphost.yaml", "plugins: plugins/", "plugins: ''");
    assert_input_error(&d, &["plan"], &["uphost.yaml: plugins: is empty"]);
    d.edit("uphost.yaml", "plugins: ''", "plugins: plugins/");
    let services = d.path().join("services.yaml");
    let text = std::fs::read_to_string(&services).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let third = format!("{}\0", lines[2]);
    lines[2] = &third;
    std::fs::write(&services, lines.join("\n")).unwrap();
    assert_input_error(&d, &["plan"], &["services.yaml:3:", "a NUL byte"]);
    std::fs::write(&services, text).unwrap();
    // uphost.yaml a symlink to itself.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("uphost.yaml", dir.path().join("uphost.yaml")).unwrap();
    let r = uphost_tests::uphost_in(dir.path(), &["plan"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("uphost.yaml") && r.stderr.contains("symbolic links"),
        "{}",
        r.stderr
    );
}
