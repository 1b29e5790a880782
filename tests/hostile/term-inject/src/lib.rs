//! Hostile test plugin `term-inject`: escape sequences in log and progress
//! lines, a command's output and its hook error (window title, clipboard
//! write, clear screen, a forged "run complete" line).
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

const OSC52: &str = "\x1b]52;c;cm0gLXJmIH4K\x07";
const TITLE: &str = "\x1b]0;pwned\x07";
const FORGED: &str = "\r\x1b[2K\x1b[1A[  0:09.9] run complete";

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-term-inject", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .capability(Capability::read_only("printf", &["*"]).reason("print"))
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        cx.warn(format!("{OSC52}clipboard{TITLE}"));
        cx.progress(format!("\x1b[2J\x1b[H{FORGED}"));
        let out = cx.output(&node.name, "printf", &["\x1b[2J\x1b]0;pwned\x07out"])?;
        let _ = out;
        bail!("{TITLE}failed{FORGED}")
    }
}

export_plugin!(H);
