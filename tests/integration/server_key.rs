//! The server's long-term key file is refused at start when it belongs to
//! another user (its mode is checked where keys are read, in `crypto`).

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
