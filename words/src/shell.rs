//! POSIX shell quoting: one word the way `sh` reads it back unchanged.

/// Bytes that need no quoting in a POSIX shell word (they cannot start a
/// glob, an expansion or a redirection).
const PLAIN: &[u8] = b"-_./=:@%+,";

/// Quote one word for a POSIX shell. Words made only of letters, digits
/// and `-_./=:@%+,` are left bare; everything else is single-quoted.
///
/// Quoting does not stop a first word `NAME=value` (or any word after
/// `env`) from being read as an assignment: a command's program is never
/// allowed to hold `=` (the host refuses it when the plugin describes
/// itself), and environment names are `[A-Za-z_][A-Za-z0-9_]*`.
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || PLAIN.contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// An argv as one shell-quoted line.
pub fn join(argv: &[String]) -> String {
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_bare_and_the_rest_is_quoted() {
        assert_eq!(quote("systemctl"), "systemctl");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(touch x); `y`\n"), "'$(touch x); `y`\n'");
        assert_eq!(join(&["a".into(), "b c".into()]), "a 'b c'");
    }
}
