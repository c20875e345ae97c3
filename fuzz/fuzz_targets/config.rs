//! The server's configuration file: whatever the TOML says, loading it ends
//! in a configuration or an error naming the problem, never a panic.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use carrier::config::ServerConfig;
use libfuzzer_sys::fuzz_target;

/// One file per fuzzing process, rewritten for every input: the loader
/// takes a path, as `carrier-server --config` does. In memory (`/dev/shm`)
/// where there is one, since a disk-backed write costs more than the parse.
static PATH: LazyLock<PathBuf> = LazyLock::new(|| {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("carrier-fuzz-config-{}.toml", std::process::id()))
});

fuzz_target!(|data: &[u8]| {
    std::fs::write(&*PATH, data).expect("the temporary directory is writable");
    if let Err(e) = ServerConfig::load(&PATH) {
        assert!(!e.to_string().is_empty());
    }
});
