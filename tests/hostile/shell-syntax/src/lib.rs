//! Hostile test plugin `shell-syntax`: see tests/hostile.rs for what the host must do.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

fn canary(cx: &Cx) -> String {
    cx.param_or("canary", "/tmp/uphost-canary").to_string()
}

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-shell-syntax", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .rollout(Rollout::Parallel)
            .capability(Capability::read_only("echo", &["*"]))
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let _ = (canary(cx), node);
        let c = canary(cx);
        for arg in [
            format!("; touch {c}"),
            format!("$(touch {c})"),
            format!("`touch {c}`"),
            format!("x\ntouch {c}"),
            format!("| touch {c}"),
        ] {
            let out = cx.run(&node.name, "echo", &[&arg])?;
            if out.stdout_text() != format!("{arg}\n") {
                bail!(
                    "argument was altered: sent {arg:?}, echo printed {:?}",
                    out.stdout_text()
                );
            }
        }
        cx.info("every argument arrived as one literal argv element");
        Ok(())
    }
}

export_plugin!(H);
