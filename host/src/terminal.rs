//! The terminal shared by live progress and confirmation prompts: a prompt
//! hides the progress bar while it waits for an answer.

/// The live progress bar while a run draws one.
pub static BAR: std::sync::OnceLock<indicatif::ProgressBar> = std::sync::OnceLock::new();

/// Run `f` with the progress bar (if any) hidden.
pub fn suspend<T>(f: impl FnOnce() -> T) -> T {
    match BAR.get() {
        Some(b) => b.suspend(f),
        None => f(),
    }
}
