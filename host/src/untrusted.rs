//! Strings from plugins (and from the commands they run), as the operator
//! is shown them. Every such string is untrusted: an escape sequence in a
//! capability's reason could rewrite the approval screen, one in a log
//! line could set the window title, write the clipboard (OSC 52) or forge
//! a "run complete" line. What reaches the terminal has every control
//! character made visible (`\u{1b}`), bidirectional overrides too, and a
//! bounded length; the journal keeps the bytes as they were (JSON escapes
//! them), and the lock file records exactly the text that was shown.

use std::borrow::Cow;

/// Longest single-line string shown (a reason, a version, a log line).
pub const LINE: usize = 512;
/// Longest multi-line text shown (a hook's error, a command's output tail).
pub const TEXT: usize = 8192;

/// Shown as an escape rather than itself: C0 and C1 controls, DEL, and the
/// Unicode format characters that reorder or hide text (bidi overrides and
/// isolates, zero-width joiners, the BOM).
fn hidden(c: char, keep_newlines: bool) -> bool {
    match c {
        '\n' | '\t' if keep_newlines => false,
        c if c.is_control() => true,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        '\u{feff}' => true,
        _ => false,
    }
}

fn clean(s: &str, max: usize, keep_newlines: bool) -> Cow<'_, str> {
    if s.len() <= max && !s.chars().any(|c| hidden(c, keep_newlines)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max) + 32);
    let mut cut = false;
    for c in s.chars() {
        if out.len() >= max {
            cut = true;
            break;
        }
        if hidden(c, keep_newlines) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    if cut {
        out.push_str(&format!("… [{} bytes in all]", s.len()));
    }
    Cow::Owned(out)
}

/// One line for the terminal: every control character visible (newlines
/// too), at most [`LINE`] bytes.
pub fn line(s: &str) -> Cow<'_, str> {
    clean(s, LINE, false)
}

/// A line capped at `max` bytes instead.
pub fn line_max(s: &str, max: usize) -> Cow<'_, str> {
    clean(s, max, false)
}

/// Text of several lines capped at `max` bytes instead (an error that
/// lists every plugin's problems).
pub fn text_max(s: &str, max: usize) -> Cow<'_, str> {
    clean(s, max, true)
}

/// Text of several lines for the terminal: newlines and tabs kept, every
/// other control character visible, at most [`TEXT`] bytes.
pub fn text(s: &str) -> Cow<'_, str> {
    clean(s, TEXT, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        let forged = "read-only\r\x1b[1A\x1b[2K[read-only] systemctl status";
        let shown = line(forged);
        assert!(!shown.contains('\x1b') && !shown.contains('\r'), "{shown}");
        assert!(shown.contains("\\u{1b}[1A"), "{shown}");
        // OSC 52 (clipboard), BEL, C1 CSI, a bidi override.
        for bad in ["\x1b]52;c;ZWNobw==\x07", "\u{9b}2J", "a\u{202e}b", "\x7f"] {
            assert!(line(bad).chars().all(|c| !hidden(c, false)), "{bad:?}");
        }
        assert_eq!(line("plain text"), "plain text");
        assert!(matches!(line("plain text"), Cow::Borrowed(_)));
    }

    #[test]
    fn newlines_are_kept_only_in_text() {
        assert_eq!(text("a\nb\tc"), "a\nb\tc");
        assert_eq!(line("a\nb"), "a\\u{a}b");
    }

    #[test]
    fn length_is_capped_on_a_char_boundary() {
        let s = "é".repeat(10_000);
        let shown = line(&s);
        assert!(shown.len() < LINE + 64, "{}", shown.len());
        assert!(shown.ends_with("… [20000 bytes in all]"), "{shown}");
    }
}
