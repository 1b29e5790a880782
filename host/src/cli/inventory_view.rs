//! `uphost inventory`: every host as uphost resolved it, so an operator
//! can check it (and diff it with `ansible-inventory --list`).

use super::StatusFormat;
use super::exit;
use crate::Error;
use crate::config::Inventory;
use crate::untrusted::line as shown;

/// Print the inventory.
pub fn show(inv: &Inventory, format: StatusFormat) -> Result<i32, Error> {
    match format {
        StatusFormat::Json => {
            let groups: Vec<&String> = inv.groups.iter().collect();
            let hosts: Vec<serde_json::Value> = inv
                .nodes
                .iter()
                .map(|n| serde_json::to_value(&**n).unwrap_or_default())
                .collect();
            outln!(
                "{}",
                serde_json::json!({
                    "sources": inv.sources,
                    "groups": groups,
                    "hosts": hosts,
                })
            );
        }
        StatusFormat::Text => {
            outln!("inventory: {}", shown(&inv.label()));
            outln!("{} hosts in {} groups", inv.nodes.len(), inv.groups.len());
            for n in &inv.nodes {
                let mut conn = format!("{:?}", n.connection).to_lowercase();
                if n.connection == crate::config::Connection::Ssh {
                    conn = format!(
                        "ssh {}{}{}",
                        n.user
                            .as_deref()
                            .map(|u| format!("{u}@"))
                            .unwrap_or_default(),
                        n.address,
                        n.port.map(|p| format!(":{p}")).unwrap_or_default()
                    );
                }
                if let Some(u) = &n.become_user {
                    conn.push_str(&format!(", become {u} (sudo -n)"));
                }
                outln!(
                    "{:<24} {:<40} {}",
                    shown(&n.name),
                    shown(&conn),
                    n.roles.join(",")
                );
            }
        }
    }
    Ok(exit::OK)
}
