//! The server's key files are refused at start when they are not private:
//! the long-term key when it belongs to another user (its mode is checked
//! where keys are read, in `crypto`), the one-time-code key when others
//! can read it.

use std::os::unix::fs::MetadataExt;

use carrier::clock::Clock;
use carrier::config::ServerConfig;
use carrier::server::{KEY_FILE, Server, StartError};

#[tokio::test]
async fn a_key_file_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = ServerConfig {
        port: 0,
        data_dir: dir.path().join("data"),
        ..ServerConfig::default()
    };
    let key = config.data_dir.join(KEY_FILE);
    carrier::crypto::load_or_create_server_key(&key).expect("the key is made");
    let me = std::fs::metadata(&key).expect("the key exists").uid();
    let stranger = me ^ 0x5a5a;
    if let Err(e) = std::os::unix::fs::chown(&key, Some(stranger), None) {
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        return eprintln!("skipped: giving the key file away needs root ({e})");
    }
    let refused = Server::open(&config, Clock::manual()).await;
    let Err(err) = refused else {
        panic!("a server started with a key file owned by user id {stranger}");
    };
    assert!(matches!(err, StartError::KeyOwner(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&stranger.to_string()) && message.contains("chown"),
        "{message}"
    );
}

/// A one-time-code key others can read is refused as that key (not as the
/// data directory), with what to do, and is left exactly as it was.
#[tokio::test]
async fn a_code_key_others_can_read_is_refused_as_that_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = ServerConfig {
        port: 0,
        data_dir: dir.path().join("data"),
        ..ServerConfig::default()
    };
    std::fs::create_dir(&config.data_dir).unwrap();
    std::fs::set_permissions(&config.data_dir, PermissionsExt::from_mode(0o700)).unwrap();
    let code_key = config.data_dir.join(carrier::auth::code_key::CODE_KEY_FILE);
    std::fs::write(&code_key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&code_key, PermissionsExt::from_mode(0o644)).unwrap();
    let refused = Server::open(&config, Clock::manual()).await;
    let Err(err) = refused else {
        panic!("a server started with a one-time-code key others can read");
    };
    assert!(matches!(err, StartError::CodeKey { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("the one-time-code key {}", code_key.display()))
            && message.contains("chmod 600"),
        "{message}"
    );
    assert_eq!(std::fs::read(&code_key).unwrap(), [7u8; 32]);
    let mode = std::fs::metadata(&code_key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
}

/// A first start that makes a new server key and then fails (here on a
/// one-time-code key others can read) still says the key was made, and
/// its fingerprint, which neighbours will pin.
#[test]
fn a_failed_first_start_says_it_made_a_key() {
    use std::os::unix::fs::PermissionsExt;
    let files = crate::process::ServerFiles::on_sqlite();
    let data = files.data_dir();
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, PermissionsExt::from_mode(0o700)).unwrap();
    let code_key = data.join(carrier::auth::code_key::CODE_KEY_FILE);
    std::fs::write(&code_key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&code_key, PermissionsExt::from_mode(0o644)).unwrap();
    let mut start = files.command();
    start.env("RUST_LOG", "info");
    let out = crate::process::run(&mut start, "a first start refused after its key");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let (key, created) = carrier::crypto::load_or_create_server_key(&data.join(KEY_FILE)).unwrap();
    assert!(!created, "the failed start made no key");
    let said = String::from_utf8_lossy(&out.stderr);
    let line = said
        .lines()
        .find(|l| l.contains("created a new server key"))
        .unwrap_or_else(|| panic!("no word of the new key: {said}"));
    assert!(line.contains(&key.fingerprint().to_string()), "{line}");
}
