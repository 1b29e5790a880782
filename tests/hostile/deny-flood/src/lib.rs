//! Hostile test plugin `deny-flood`: denied commands with a 4 MB argv in
//! a loop, to fill the journal, the terminal and the host's memory.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-deny-flood", "a hostile plugin (tests only)").depends_on(&["good"])
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let canary = cx.param_or("canary", "/tmp/uphost-canary").to_string();
        // 4 MB arguments: the arena gives plugins 32 MiB of memory, and the
        // request is built and lowered from copies.
        loop {
            let _ = cx
                .cmd(&node.name, "touch")
                .arg(canary.clone())
                .arg("x".repeat(4 << 20))
                .run();
        }
    }
}

export_plugin!(H);
