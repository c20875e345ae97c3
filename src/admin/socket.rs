//! The admin socket of a running server: `admin.sock` in the data
//! directory, mode 0600. One request per connection: a JSON line in, a JSON
//! line out (`{"ok": reply}` or `{"error": "sentence"}`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{AdminError, Context, Reply, Request, execute};

/// File name of the socket inside the data directory.
pub const SOCKET_FILE: &str = "admin.sock";

/// The longest request line read; requests are a few hundred bytes.
const MAX_REQUEST: u64 = 64 * 1024;

/// How long a connection may take to send its request: one that stays
/// silent is dropped rather than held, and never holds up a stop.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Pause after a failed accept (out of descriptors, say), so the loop
/// does not spin; warnings come at most every [`crate::listen::WARN_EVERY`].
const ACCEPT_BACK_OFF: std::time::Duration = std::time::Duration::from_millis(50);

/// The answer on the wire.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Ok(Reply),
    Error(String),
}

/// Where the socket of the server using `data_dir` is.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Binds the socket (replacing one a killed server left; the caller holds
/// the data-directory lock, so no live server owns it) with mode 0600.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers admin requests until `shutdown`, then removes the socket.
pub async fn serve(
    listener: UnixListener,
    cx: std::sync::Arc<Context>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let warn = crate::telemetry::Throttle::new(crate::listen::WARN_EVERY);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if let Some(held_back) = warn.ready() {
                        tracing::warn!(error = %e, held_back, "admin socket: accept failed");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACK_OFF) => continue,
                    }
                }
            },
        };
        let cx = cx.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = answer(stream, &cx, &shutdown).await {
                tracing::debug!(error = %e, "admin socket: connection failed");
            }
        });
    }
    let _ = std::fs::remove_file(path(&cx.data_dir));
}

async fn answer(
    stream: UnixStream,
    cx: &Context,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    tokio::select! {
        read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)) => {
            read.map_err(|_| std::io::ErrorKind::TimedOut)??;
        }
        _ = shutdown.cancelled() => return Ok(()),
    }
    // Bytes, not a string, are read: a request that is not UTF-8 gets an
    // answer saying so rather than a closed connection.
    let answer = match std::str::from_utf8(&line) {
        Err(e) => Answer::Error(format!("not an admin request: not UTF-8 ({e})")),
        Ok(text) => match serde_json::from_str::<Request>(text) {
            Ok(request) => match execute(cx, request).await {
                Ok(reply) => Answer::Ok(reply),
                Err(e) => Answer::Error(e.to_string()),
            },
            Err(e) => Answer::Error(format!("not an admin request: {e}")),
        },
    };
    let mut bytes = serde_json::to_vec(&answer).expect("an answer always serialises");
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

/// Sends `request` to the server running on `data_dir`.
pub async fn call(data_dir: &Path, request: &Request) -> Result<Reply, AdminError> {
    let path = path(data_dir);
    let io = |e: std::io::Error| {
        AdminError::Io(format!(
            "cannot reach the running server's admin socket {}: {e}",
            path.display()
        ))
    };
    let mut stream = UnixStream::connect(&path).await.map_err(io)?;
    let mut bytes = serde_json::to_vec(request).expect("a request always serialises");
    bytes.push(b'\n');
    stream.write_all(&bytes).await.map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .await
        .map_err(io)?;
    match serde_json::from_str::<Answer>(&line) {
        Ok(Answer::Ok(reply)) => Ok(reply),
        Ok(Answer::Error(sentence)) => Err(AdminError::Refused(sentence)),
        Err(e) => Err(AdminError::Io(format!(
            "the server's answer was not understood ({e}); is it the same version?"
        ))),
    }
}
