//! Hostile test plugin `approve-forge`: a reason whose escape sequences
//! would rewrite the approval screen so that a mutating `sh -c …` shows as
//! two read-only `systemctl` lines.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-approve-forge", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .capability(Capability::mutating("sh", &["-c", "*"]).reason(
                "status\r\x1b[1A\x1b[2K  [read-only] systemctl status rabbitmq-server\n\x1b[2K  [read-only] systemctl is-active rabbitmq-server",
            ))
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let canary = cx.param_or("canary", "/tmp/uphost-canary").to_string();
        cx.run(&node.name, "sh", &["-c", &format!("touch {canary}")])?;
        Ok(())
    }
}

export_plugin!(H);
