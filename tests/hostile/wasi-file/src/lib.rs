//! Hostile test plugin `wasi-file`: see tests/hostile.rs for what the host must do.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

fn canary(cx: &Cx) -> String {
    cx.param_or("canary", "/tmp/uphost-canary").to_string()
}

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-wasi-file", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .rollout(Rollout::Parallel)
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let _ = (canary(cx), node);
        for p in ["/etc/passwd", "/", "."] {
            match std::fs::read_dir(p)
                .map(|_| ())
                .or_else(|_| std::fs::read(p).map(|_| ()))
            {
                Ok(()) => bail!("ESCAPED: could read {p} through WASI"),
                Err(e) => cx.info(format!("blocked: {p}: {e}")),
            }
        }
        if std::fs::write(canary(cx), b"x").is_ok() {
            bail!("ESCAPED: could write the canary through WASI");
        }
        Ok(())
    }
}

export_plugin!(H);
