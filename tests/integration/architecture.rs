//! The architecture invariants of `src/lib.rs` that a test can hold: which
//! modules may not name which others.

use std::path::Path;

/// Every `.rs` file under `src/<module>` (or the file `src/<module>.rs`).
fn sources(module: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let file = root.join(format!("{module}.rs"));
    if file.is_file() {
        out.push((
            file.display().to_string(),
            std::fs::read_to_string(&file).unwrap(),
        ));
    }
    let mut dirs = vec![root.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                ));
            }
        }
    }
    assert!(!out.is_empty(), "no sources found for {module}");
    out
}

fn assert_never_names(module: &str, forbidden: &[&str], why: &str) {
    for (path, text) in sources(module) {
        for f in forbidden {
            assert!(!text.contains(f), "{path} names `{f}`: {why}");
        }
    }
}

#[test]
fn storage_and_routing_never_open_envelopes_or_hold_private_keys() {
    for module in ["db", "routing"] {
        assert_never_names(
            module,
            &[
                "crypto::open",
                "crypto::{open",
                "Identity",
                "envelope::open",
            ],
            "storage and routing see opaque bytes only",
        );
    }
}

#[test]
fn protocol_knows_no_sockets_storage_or_keys() {
    assert_never_names(
        "protocol",
        &["TcpStream", "rustls", "sqlx", "crate::crypto", "crate::db"],
        "the wire layer is pure",
    );
}

#[test]
fn the_client_never_reaches_into_the_server_stack() {
    assert_never_names(
        "client",
        &[
            "crate::server",
            "crate::db",
            "crate::routing",
            "crate::link",
            "crate::auth",
        ],
        "the two stacks meet only in protocol, crypto, tls and domain",
    );
}
