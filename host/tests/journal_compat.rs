//! Journals written by the release before the journal's words became
//! types (uphost 0.1 at 20f5e2d: a complete demo run and a failed one that
//! was rolled back, kept in `tests/fixtures/`) replay after it: every
//! record reads back and writes out byte for byte as it was, and the run's
//! state is what that release said.

use uphost::events::Event;
use uphost::execution::lifecycle::RunState;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn same_bytes(name: &str) -> usize {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let ev: Event =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}:{}: {e}\n{line}", i + 1));
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            line,
            "{name}:{} does not write back as it was",
            i + 1
        );
        n += 1;
    }
    n
}

#[test]
fn a_complete_run_of_the_previous_release_replays() {
    assert!(same_bytes("journal-v0.1-complete.jsonl") > 500);
    let r = uphost::journal::replay(&fixture("journal-v0.1-complete.jsonl")).unwrap();
    assert_eq!(RunState::of(&r), RunState::Complete);
    assert_eq!(r.steps.len(), 70);
    assert!(
        r.steps
            .values()
            .all(|s| *s == uphost::journal::StepStatus::Done)
    );
}

#[test]
fn a_rolled_back_run_of_the_previous_release_replays() {
    assert!(same_bytes("journal-v0.1-rolled-back.jsonl") > 500);
    let r = uphost::journal::replay(&fixture("journal-v0.1-rolled-back.jsonl")).unwrap();
    assert_eq!(RunState::of(&r), RunState::RolledBack);
    let failed: Vec<String> = r
        .steps
        .iter()
        .filter(|(_, s)| **s == uphost::journal::StepStatus::Failed)
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(failed, ["nova post-upgrade"]);
    assert!(r.rollback.is_some());
}

#[test]
fn error_kinds_keep_their_words() {
    use uphost::events::ErrorKind;
    let words: Vec<String> = ErrorKind::ALL
        .iter()
        .map(|k| serde_json::to_string(k).unwrap())
        .collect();
    assert_eq!(
        words,
        [
            "\"timeout\"",
            "\"spawn-failed\"",
            "\"unreachable\"",
            "\"authentication-failed\"",
            "\"host-key-rejected\"",
            "\"connection-dropped\"",
        ]
    );
}
