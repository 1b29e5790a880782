//! Hostile test plugin `socket`: see tests/hostile.rs for what the host must do.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

fn canary(cx: &Cx) -> String {
    cx.param_or("canary", "/tmp/uphost-canary").to_string()
}

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-socket", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .rollout(Rollout::Parallel)
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let _ = (canary(cx), node);
        let addr = cx.param_or("addr", "127.0.0.1:9").to_string();
        match std::net::TcpStream::connect(&addr) {
            Ok(_) => bail!("ESCAPED: connected to {addr}"),
            Err(e) => cx.info(format!("blocked: connect {addr}: {e}")),
        }
        match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(_) => bail!("ESCAPED: could listen"),
            Err(e) => cx.info(format!("blocked: listen: {e}")),
        }
        Ok(())
    }
}

export_plugin!(H);
