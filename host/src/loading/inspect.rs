//! What a component file says about itself, read without compiling it: the
//! interfaces it imports and the memory its core modules need at start.
//! Loading refuses an import this host does not provide and a memory above
//! the cap here, in milliseconds, instead of after a compile that can take
//! half a minute (an 18 MB componentize-py plugin) and then failing with a
//! message about the wrong thing.

use wasmparser::{Parser, Payload};

/// What the file declares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared {
    /// The top-level component's imports (`wasi:cli/environment@0.2.3`).
    pub imports: Vec<String>,
    /// The largest initial size of a memory one of its core modules
    /// defines, in bytes.
    pub min_memory_bytes: u64,
}

/// Read the declarations; `Err` with the decoder's message for a file that
/// does not decode (reported as corrupt).
pub fn declared(bytes: &[u8]) -> Result<Declared, String> {
    let mut d = Declared::default();
    // Each nested module or component starts with a `Version` payload and
    // ends with an `End`: depth 1 is the file's own component.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| e.to_string())?;
                    d.imports.push(import.name.name.to_string());
                }
            }
            Payload::MemorySection(reader) => {
                for m in reader {
                    let m = m.map_err(|e| e.to_string())?;
                    let bytes = m.initial.saturating_mul(1u64 << m.page_size_log2());
                    d.min_memory_bytes = d.min_memory_bytes.max(bytes);
                }
            }
            _ => {}
        }
    }
    Ok(d)
}

/// The WASI 0.2 packages the host links (`wasi:http` is not one).
const WASI: [&str; 6] = ["cli", "io", "clocks", "random", "filesystem", "sockets"];

/// Why an import is not provided, with how to build without it; `None`
/// when the host provides its package (the linker checks the exact
/// interface and version after compiling).
pub fn unsupported(import: &str) -> Option<String> {
    let (name, version) = import.split_once('@').unwrap_or((import, ""));
    let package = name.split_once('/').map_or(name, |(p, _)| p);
    let ok = match package.split_once(':') {
        Some(("wasi", p)) => WASI.contains(&p) && version.starts_with("0.2."),
        // The contract's own interfaces, of any version: which version
        // it was built for is checked (and named) once it compiled.
        Some(("uphost", "plugin")) => true,
        _ => false,
    };
    if ok {
        return None;
    }
    let hint = match package {
        "wasi:http" => {
            "a plugin runs commands through the host, never HTTP; componentize-js adds wasi:http by default: build with `-d http fetch-event` (`componentize-js app.js … -d http fetch-event`, or `jco componentize … -d http -d fetch-event`), and with componentize-py do not import `wasi:http` bindings"
        }
        p if p.starts_with("wasi:") && !version.starts_with("0.2.") => {
            "this host provides WASI 0.2 (preview 2); build for `wasm32-wasip2` (or your toolchain's WASI 0.2 target)"
        }
        p if p.starts_with("wasi:") => {
            "this host provides only wasi:cli, wasi:io, wasi:clocks, wasi:random, wasi:filesystem and wasi:sockets (all denied or empty in the sandbox); build without it"
        }
        _ => {
            "a plugin may import only uphost:plugin/{types,node-exec,log,state,node-control} and WASI 0.2; build it against the uphost:plugin WIT only"
        }
    };
    Some(format!("`{import}`: {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_packages_pass_and_foreign_ones_are_named_with_a_fix() {
        for ok in [
            "wasi:cli/environment@0.2.3",
            "wasi:io/streams@0.2.0",
            "uphost:plugin/node-exec@0.2.0",
            "uphost:plugin/log@0.1.0",
        ] {
            assert_eq!(unsupported(ok), None, "{ok}");
        }
        let http = unsupported("wasi:http/outgoing-handler@0.2.3").unwrap();
        assert!(
            http.contains("-d http") && http.contains("wasi:http/outgoing-handler"),
            "{http}"
        );
        let p3 = unsupported("wasi:cli/environment@0.3.0").unwrap();
        assert!(p3.contains("WASI 0.2"), "{p3}");
        let other = unsupported("acme:kv/store@1.0.0").unwrap();
        assert!(other.contains("acme:kv/store@1.0.0"), "{other}");
        // The contract's version is named once the plugin compiled.
        assert_eq!(unsupported("uphost:plugin/types@0.3.0"), None);
    }

    #[test]
    fn memories_and_imports_are_read_from_the_bytes() {
        // Garbage is a decoder error, not a panic.
        assert!(declared(b"\0asm\x0d\0\x01\0garbage").is_err());
    }
}
