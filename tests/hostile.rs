//! The hostile-plugin suite: each hostile plugin (built from tests/hostile/)
//! runs through the real binary after a well-behaved one. The host must
//! survive, name the plugin and the violation, leave the good plugin's
//! result intact, and no forbidden command may create the canary file.

use std::path::{Path, PathBuf};

use uphost_tests::site::Site;
use uphost_tests::{Ran, uphost_bin, wasm, wasm_with_symbols};

struct Arena {
    site: Site,
    name: String,
}

impl Arena {
    fn new(hostile: &str, extra_params: &[(&str, &str)]) -> Arena {
        Arena::with_component(hostile, &wasm(&format!("hostile-{hostile}")), extra_params)
    }

    fn with_component(hostile: &str, component: &Path, extra_params: &[(&str, &str)]) -> Arena {
        let a = Arena::unapproved_with(hostile, component, extra_params);
        let r = a.uphost(&["plugins", "approve", "--all", "--yes"]);
        assert_eq!(r.code, 0, "{}", r.all());
        a
    }

    /// The arena with nothing approved (a plugin refused at load cannot
    /// be approved).
    fn unapproved(hostile: &str) -> Arena {
        Arena::unapproved_with(hostile, &wasm(&format!("hostile-{hostile}")), &[])
    }

    fn unapproved_with(hostile: &str, component: &Path, extra_params: &[(&str, &str)]) -> Arena {
        let site = Site::new();
        let name = format!("hostile-{hostile}");
        site.plugin(component, &name)
            .plugin(&wasm("fixture-good"), "good")
            .config("")
            .write(
                "inventory.yaml",
                "all:\n  vars:\n    ansible_connection: local\n  children:\n    arena:\n      hosts:\n        n1:\n    other:\n      hosts:\n        n2:\n",
            );
        let canary = site.path().join("canary");
        let mut params = format!("      canary: {}\n", canary.display());
        for (k, v) in extra_params {
            params.push_str(&format!("      {k}: \"{v}\"\n"));
        }
        site.write(
            "services.yaml",
            &format!(
                "services:\n  good:\n    roles: [arena]\n  {name}:\n    roles: [arena]\n    params:\n{params}    limits:\n      memory_mb: 32\n      hook_timeout_s: 3\n      exec_timeout_s: 2\n      output_cap_kb: 64\n      max_log_lines: 1000\n"
            ),
        );
        Arena { site, name }
    }

    /// A plugin refused when it describes itself: `plugins list` lists the
    /// good plugin and names this one with `needles`, `run` refuses, and
    /// nothing ran.
    fn refused_at_load(&self, needles: &[&str]) {
        let r = self.uphost(&["plugins", "list"]);
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.stdout.contains("good"),
            "the good plugin is not listed: {}",
            r.all()
        );
        assert!(
            r.stderr.contains(&format!("{}.wasm", self.name)),
            "{}",
            r.stderr
        );
        for n in needles {
            assert!(r.stderr.contains(n), "expected `{n}` in:\n{}", r.stderr);
        }
        let r = self.uphost(&["run", "--yes"]);
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            !self.canary().exists(),
            "the canary exists: a forbidden action ran"
        );
        assert!(!self.path().join("state/current").exists(), "a run started");
    }

    fn path(&self) -> &Path {
        self.site.path()
    }

    fn canary(&self) -> PathBuf {
        self.path().join("canary")
    }

    fn uphost(&self, args: &[&str]) -> Ran {
        std::process::Command::new(uphost_bin())
            .current_dir(self.path())
            .args(args)
            .output()
            .unwrap()
            .into()
    }

    fn run(&self) -> Ran {
        self.uphost(&["run", "--yes"])
    }

    fn journal(&self) -> String {
        let cur = std::fs::read_to_string(self.path().join("state/current")).unwrap();
        std::fs::read_to_string(
            self.path()
                .join("state/runs")
                .join(cur.trim())
                .join("journal.jsonl"),
        )
        .unwrap()
    }

    /// The good plugin's upgrade steps all completed.
    fn good_unaffected(&self) {
        let r = self.uphost(&["status", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let good = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "good")
            .unwrap();
        for st in good["steps"].as_array().unwrap() {
            if st["phase"] != "finalize" {
                assert_eq!(st["status"], "done", "good plugin step affected: {st}");
            }
        }
        assert!(
            !self.canary().exists(),
            "the canary exists: a forbidden action ran"
        );
    }

    fn fails_with(&self, needles: &[&str]) -> Ran {
        let r = self.run();
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(
            r.stderr.contains(&self.name),
            "plugin not named: {}",
            r.stderr
        );
        for n in needles {
            assert!(r.stderr.contains(n), "expected `{n}` in:\n{}", r.stderr);
        }
        assert!(
            !r.stderr.contains("thread 'main' panicked") && !r.stderr.contains("thread 'tokio"),
            "the host panicked: {}",
            r.stderr
        );
        self.good_unaffected();
        r
    }
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let a = Arena::new("loop", &[]);
    a.fails_with(&["exceeded its 3s deadline in upgrade"]);
}

#[test]
fn memory_bomb_traps_at_the_cap() {
    let a = Arena::new("membomb", &[]);
    // The trap names the cap and where to raise it.
    a.fails_with(&[
        "trapped in upgrade",
        "reached its memory cap of 32 MiB",
        "memory_mb",
    ]);
}

#[test]
fn unbounded_recursion_traps() {
    let a = Arena::new("recursion", &[]);
    a.fails_with(&["trapped in upgrade", "stack"]);
}

#[test]
fn panic_names_plugin_hook_and_message() {
    let a = Arena::new("panic", &[]);
    let r = a.fails_with(&["trapped in upgrade", "hostile plugin panicked on purpose"]);
    // The shipped build is stripped: no backtrace, and no noise either.
    assert!(!r.stderr.contains("backtrace"), "{}", r.stderr);
    assert!(!r.stderr.contains("RUST_BACKTRACE"), "{}", r.stderr);
}

#[test]
fn panic_in_a_build_with_symbols_shows_the_plugins_own_frame_first() {
    let a = Arena::with_component("panic", &wasm_with_symbols("hostile-panic"), &[]);
    let r = a.fails_with(&["trapped in upgrade", "hostile plugin panicked on purpose"]);
    let bt = r
        .stderr
        .split("backtrace (innermost first):\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no backtrace in:\n{}", r.stderr));
    let first = bt.lines().next().unwrap().trim();
    // The line of the plugin's `panic!`, read from its source.
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("hostile/panic/src/lib.rs"),
    )
    .unwrap();
    let line = src
        .lines()
        .position(|l| l.contains("panic!("))
        .expect("the plugin panics")
        + 1;
    assert!(
        first.starts_with("<hostile_panic::H as uphost_sdk::Plugin>::upgrade (")
            && first.ends_with(&format!("tests/hostile/panic/src/lib.rs:{line})")),
        "the first frame shown is not the plugin's panicking line: {first}\n{}",
        r.stderr
    );
    assert!(
        !bt.contains("std::panicking") && !bt.contains("_RNv"),
        "runtime frames or mangled names shown:\n{bt}"
    );
}

#[test]
fn ungranted_program_is_denied_and_journaled() {
    let a = Arena::new("ungranted", &[]);
    a.fails_with(&["denied: program `sh` is not granted"]);
    let j = a.journal();
    assert!(
        j.contains(r#""event":"denied""#) && j.contains(r#""plugin":"hostile-ungranted""#),
        "{j}"
    );
}

#[test]
fn forbidden_argument_is_denied() {
    let a = Arena::new("forbidden-arg", &[]);
    a.fails_with(&["does not match the granted pattern `/nonexistent/allowed-only`"]);
}

#[test]
fn a_path_glob_cannot_be_climbed_out_of_with_dot_dot() {
    let a = Arena::new("path-climb", &[]);
    a.fails_with(&["climbs out of the granted path pattern `/var/tmp/*` with `..`"]);
}

#[test]
fn shell_syntax_reaches_the_program_as_one_literal_argument() {
    let a = Arena::new("shell-syntax", &[]);
    let r = a.run();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        a.journal()
            .contains("every argument arrived as one literal argv element")
    );
    a.good_unaffected();
}

#[test]
fn exec_on_a_node_outside_the_service_is_denied() {
    let a = Arena::new("wrong-node", &[("other_node", "n2")]);
    a.fails_with(&["node `n2` does not host service `hostile-wrong-node`"]);
}

#[test]
fn wasi_has_no_files() {
    let a = Arena::new("wasi-file", &[]);
    let r = a.run();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = a.journal();
    assert!(j.contains("blocked: /etc/passwd"), "{j}");
    a.good_unaffected();
}

#[test]
fn wasi_has_no_sockets() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let a = Arena::new("socket", &[("addr", &addr)]);
    let r = a.run();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(a.journal().contains(&format!("blocked: connect {addr}")));
    assert!(
        listener.accept().is_err(),
        "the plugin connected to the host"
    );
    a.good_unaffected();
}

#[test]
fn flooding_output_and_log_is_capped() {
    let a = Arena::new("flood", &[]);
    let r = a.run();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = a.journal();
    assert!(j.contains("log capped at 1000 lines"), "no log cap marker");
    assert!(
        j.contains("[guest output truncated at the cap]"),
        "no output cap marker"
    );
    assert!(j.len() < 8 << 20, "journal grew to {} bytes", j.len());
    a.good_unaffected();
}

#[test]
fn a_command_that_never_exits_is_killed_with_its_group() {
    let a = Arena::new("never-exits", &[]);
    a.fails_with(&["timed out after 2000 ms"]);
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 1000.5"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "sleep survived: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
fn environment_injection_is_denied() {
    let a = Arena::new("env-inject", &[]);
    a.fails_with(&["environment variable `LD_PRELOAD` is not granted"]);
}

#[test]
fn oversized_state_traps() {
    let a = Arena::new("state-bomb", &[]);
    a.fails_with(&["exceeds the 65536 byte limit"]);
}

/// No byte of an escape sequence reaches the operator's terminal.
fn no_raw_controls(text: &str) {
    for bad in ['\x1b', '\x07', '\r', '\u{9b}'] {
        assert!(
            !text.contains(bad),
            "a raw {bad:?} reached the terminal:\n{}",
            text.escape_debug()
        );
    }
}

#[test]
fn a_program_pattern_is_refused_when_the_plugin_describes_itself() {
    // `rabbitmq*` matched as a glob let `rabbitmq_x=1 touch …` through,
    // which a remote shell runs as `touch`.
    Arena::unapproved("program-glob").refused_at_load(&[
        "program `rabbitmq*` is neither a plain name nor an absolute path",
        "matched literally",
    ]);
}

#[test]
fn an_environment_name_with_equals_is_refused() {
    Arena::unapproved("env-name")
        .refused_at_load(&["environment variable name `LD_PRELOAD=` is not a name"]);
}

#[test]
fn a_hundred_thousand_capabilities_are_refused() {
    Arena::unapproved("many-caps").refused_at_load(&["requests 100000 capabilities; at most 256"]);
}

#[test]
fn a_describe_that_loops_is_named_and_the_others_still_listed() {
    Arena::unapproved("describe-loop")
        .refused_at_load(&["describe did not return within 10 s: the plugin loops at load"]);
}

#[test]
fn an_oversized_plugin_file_is_refused_before_it_is_compiled() {
    let a = Arena::unapproved("big-error");
    // A component header and 3 MiB: over a 2 MiB cap.
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.resize(3 << 20, 0);
    std::fs::write(a.path().join("plugins/huge.wasm"), bytes).unwrap();
    let yaml = a.path().join("uphost.yaml");
    let mut text = std::fs::read_to_string(&yaml).unwrap();
    text.push_str("plugin_max_mb: 2\n");
    std::fs::write(&yaml, text).unwrap();
    let r = a.uphost(&["plugins", "list"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stdout.contains("good"), "{}", r.all());
    for n in [
        "huge.wasm",
        "3145728 bytes, over the 2097152 byte cap",
        "plugin_max_mb",
    ] {
        assert!(r.stderr.contains(n), "expected `{n}` in:\n{}", r.stderr);
    }
    assert!(
        !r.stderr.contains("corrupt"),
        "it was compiled: {}",
        r.stderr
    );
    let r = a.uphost(&["plan"]);
    assert_eq!(r.code, 2, "{}", r.all());
    // Out of range is an error naming the key.
    std::fs::write(
        &yaml,
        std::fs::read_to_string(&yaml)
            .unwrap()
            .replace("plugin_max_mb: 2", "plugin_max_mb: 0"),
    )
    .unwrap();
    let r = a.uphost(&["plan"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("plugin_max_mb") && r.stderr.contains("outside 1..=4096"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_approval_screen_shows_escape_sequences_and_flags_the_danger() {
    let a = Arena::unapproved("approve-forge");
    // Through a pseudo-terminal, as an operator sees it; the answer is no.
    let cmd = format!(
        "{} plugins approve hostile-approve-forge",
        uphost_bin().display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(a.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(2));
        let _ = stdin.write_all(b"n\n");
    }
    let out = child.wait_with_output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    for n in [
        "[mutating]  sh -c *",
        "\\u{1b}[1A\\u{1b}[2K",
        "DANGER: the program is a shell or interpreter",
        "DANGER: a bare `*` argument",
        "DANGER: its text holds control characters",
        "approve hostile-approve-forge with these capabilities?",
        "not approved",
    ] {
        assert!(
            screen.contains(n),
            "expected `{n}` on the screen:\n{}",
            screen.escape_debug()
        );
    }
    assert!(
        !screen.contains("\x1b[1A"),
        "the sequence reached the terminal: {}",
        screen.escape_debug()
    );
    let lock = a.path().join("plugins/uphost.lock");
    let locked = std::fs::read_to_string(&lock).unwrap_or_default();
    assert!(
        !locked.contains("hostile-approve-forge"),
        "declined, yet recorded: {locked}"
    );
    // Approved, the lock records the text that was shown, byte for byte.
    let r = a.uphost(&["plugins", "approve", "hostile-approve-forge", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    no_raw_controls(&r.stdout);
    let locked = std::fs::read_to_string(&lock).unwrap();
    assert!(!locked.contains('\x1b'), "{locked}");
    assert!(
        locked.contains("\\u{1b}[1A"),
        "the lock does not hold the shown text: {locked}"
    );
    let r = a.uphost(&["plugins", "inspect", "hostile-approve-forge"]);
    no_raw_controls(&r.stdout);
    assert!(r.stdout.contains("DANGER"), "{}", r.stdout);
}

#[test]
fn escape_sequences_at_run_time_are_shown_not_obeyed() {
    let a = Arena::new("term-inject", &[]);
    let r = a.fails_with(&["\\u{1b}]0;pwned\\u{7}failed"]);
    no_raw_controls(&r.stderr);
    no_raw_controls(&r.stdout);
    assert!(
        r.stderr.contains("\\u{1b}]52;c;"),
        "the log line is not shown: {}",
        r.stderr
    );
    // With -v, the command's own output and every log line too.
    let b = Arena::new("term-inject", &[]);
    let r = b.uphost(&["-v", "run", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    no_raw_controls(&r.stderr);
    no_raw_controls(&r.stdout);
    // The journal keeps the bytes as they were (JSON escapes them).
    assert!(
        b.journal().contains("\\u001b]52;c;"),
        "the journal lost the original"
    );
}

#[test]
fn a_flood_of_denied_commands_stops_the_hook() {
    let a = Arena::new("deny-flood", &[]);
    let r = a.fails_with(&["more than 32 denied commands in one hook call"]);
    let j = a.journal();
    assert!(j.len() < 1 << 20, "journal grew to {} bytes", j.len());
    assert!(
        r.stderr.len() < 1 << 20,
        "stderr grew to {} bytes",
        r.stderr.len()
    );
    assert!(
        j.contains("more arguments") || j.contains("bytes]"),
        "argv not capped"
    );
}

#[test]
fn state_abuse_is_bounded() {
    let a = Arena::new("state-churn", &[("mode", "churn")]);
    a.fails_with(&["bytes of state written in one hook call"]);
    let j = a.journal();
    assert!(j.len() < 16 << 20, "journal grew to {} bytes", j.len());
    let a = Arena::new("state-churn", &[("mode", "bigkey")]);
    a.fails_with(&["state.set: a key of 16777216 bytes exceeds the 256 byte limit"]);
    let a = Arena::new("state-churn", &[("mode", "delkey")]);
    a.fails_with(&["state.delete: a key of 8388608 bytes exceeds the 256 byte limit"]);
    assert!(a.journal().len() < 1 << 20);
}

#[test]
fn an_eight_megabyte_hook_error_is_capped() {
    let a = Arena::new("big-error", &[]);
    let r = a.fails_with(&["[error of 8388608 bytes cut]"]);
    assert!(
        r.stderr.len() < 256 << 10,
        "stderr grew to {} bytes",
        r.stderr.len()
    );
    assert!(
        a.journal().len() < 1 << 20,
        "journal grew to {} bytes",
        a.journal().len()
    );
}

/// LEB128 of `n`.
fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A wasm section: id, size, contents.
fn section(id: u8, contents: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(contents.len(), out);
    out.extend_from_slice(contents);
}

/// A compile bomb: a component (7 MB, well under any size cap) holding a
/// core module whose one function is a million `local.get; i32.const;
/// i32.add; local.set`, which takes the compiler many seconds and a
/// gigabyte or more.
fn compile_bomb() -> Vec<u8> {
    let mut body = vec![0x01, 0x01, 0x7f]; // one local: i32
    for _ in 0..1_000_000 {
        body.extend_from_slice(&[0x20, 0x00, 0x41, 0x01, 0x6a, 0x21, 0x00]);
    }
    body.push(0x0b); // end
    let mut code = vec![0x01]; // one body
    leb(body.len(), &mut code);
    code.extend_from_slice(&body);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[0x01, 0x60, 0x00, 0x00], &mut module); // type: [] -> []
    section(3, &[0x01, 0x00], &mut module); // one function of type 0
    section(10, &code, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component); // a core module section
    component
}

#[test]
fn a_compile_bomb_is_stopped_at_the_compile_deadline() {
    let a = Arena::unapproved("big-error");
    let bomb = compile_bomb();
    assert!(bomb.len() < 8 << 20 && bomb.len() > 6 << 20);
    std::fs::write(a.path().join("plugins/bomb.wasm"), bomb).unwrap();
    let yaml = a.path().join("uphost.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    // 5 s: the good plugins compile in well under a second, even beside
    // the bomb on two busy cores; the bomb takes 10 s alone.
    // Its own compile cache: a compile that ran on past the deadline may
    // have left the bomb compiled in the shared one. The optimizing
    // compiler from the first load (the bomb is large enough for the quick
    // tier, whose background compile has the same deadline).
    std::fs::write(
        &yaml,
        format!("{text}plugin_compile_s: 5\ncache_dir: compile-cache\nfirst_load: optimized\n"),
    )
    .unwrap();
    let r = a.uphost(&["plugins", "list"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stdout.contains("good"),
        "the others are listed: {}",
        r.all()
    );
    for n in [
        "bomb.wasm",
        "did not compile within 5 s",
        "plugin_compile_s",
    ] {
        assert!(r.stderr.contains(n), "expected `{n}` in:\n{}", r.stderr);
    }
    let r = a.uphost(&["plan"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("bomb.wasm"), "{}", r.stderr);
}

/// Each hook call has its own caps; the run has one more, per plugin: what
/// it writes to the journal in all its calls (`limits.journal_mb`).
#[test]
fn the_journal_a_plugin_writes_in_a_run_is_bounded() {
    // State churn writes 60 KiB values (8 MiB a call is allowed): with a
    // run budget of 1 MiB, it is stopped after about 17 writes.
    let a = Arena::new("state-churn", &[("mode", "churn")]);
    let services = a.path().join("services.yaml");
    let text = std::fs::read_to_string(&services).unwrap();
    std::fs::write(
        &services,
        text.replace(
            "      max_log_lines: 1000\n",
            "      max_log_lines: 1000\n      journal_mb: 1\n",
        ),
    )
    .unwrap();
    a.fails_with(&["wrote more than 1048576 bytes to the journal in this run"]);
    assert!(
        a.journal().len() < 3 << 20,
        "journal grew to {} bytes",
        a.journal().len()
    );
}
