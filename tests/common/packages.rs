//! tests/debian-packages.txt, read one way by the tests that check it and
//! by `cargo xtask test`, which installs it (xtask includes this file by
//! path).

/// One line of the list.
pub struct Need {
    /// The test that needs it (`services`, `ssh`, `operator`).
    pub test: &'static str,
    /// An absolute path, or a program looked up on PATH.
    pub what: &'static str,
    /// The Debian package that has it.
    pub package: &'static str,
}

/// Every line of the list (comments and blank lines skipped); a malformed
/// line is an error naming it.
pub fn needs() -> Result<Vec<Need>, String> {
    let mut v = Vec::new();
    for (i, line) in include_str!("../debian-packages.txt").lines().enumerate() {
        let fields: Vec<&str> = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        match fields[..] {
            [] => {}
            [test, what, package] => v.push(Need {
                test,
                what,
                package,
            }),
            _ => {
                return Err(format!(
                    "tests/debian-packages.txt:{}: expected `TEST WHAT PACKAGE`",
                    i + 1
                ));
            }
        }
    }
    Ok(v)
}

/// Whether `what` (an absolute path, or a program on PATH) is there.
pub fn present(what: &str) -> bool {
    if what.starts_with('/') {
        return std::path::Path::new(what).exists();
    }
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {what}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
