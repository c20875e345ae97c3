//! The admin socket of a running server: `admin.sock` in the data
//! directory, mode 0600. One request per connection: a JSON line in, a JSON
//! line out (`{"ok": reply}` or `{"error": "sentence"}`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (out of descriptors, say), so the loop
/// does not spin; warnings come at most every [`crate::listen::WARN_EVERY`].
const ACCEPT_BACK_OFF: Duration = Duration::from_millis(50);

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

/// How long [`call`] waits for the running server's answer to a command
/// other than `backup`. The server answers once the command is done, and
/// every such command reads or changes rows of a few tables (the longest,
/// `users list` and `queue stats`, read every user and queue): seconds even
/// on a large server, so two minutes of silence means it is stuck.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// How long [`call`] waits for the answer to `backup`, which comes only
/// once the whole SQLite database is copied, at the disk's pace.
const BACKUP_ANSWER_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The longest answer read. The longest real ones, `users list` and
/// `queue stats`, take about 250 bytes a user: this holds some four
/// million, and stops whatever else listens on the socket from filling
/// the memory with an endless line.
const MAX_ANSWER: u64 = 1024 * 1024 * 1024;

/// Sends `request` to the server running on `data_dir`, waiting for its
/// answer no longer than the request's bound.
pub async fn call(data_dir: &Path, request: &Request) -> Result<Reply, AdminError> {
    let path = path(data_dir);
    let wait = match request {
        Request::Backup { .. } => BACKUP_ANSWER_TIMEOUT,
        _ => ANSWER_TIMEOUT,
    };
    match tokio::time::timeout(wait, exchange(&path, request)).await {
        Ok(answer) => answer,
        Err(_) => Err(AdminError::Io(format!(
            "the server at {} did not answer within {} s; check that it is alive \
             (its log, its process) and restart it if it is stuck",
            path.display(),
            wait.as_secs()
        ))),
    }
}

/// One request and its answer over the socket at `path`.
async fn exchange(path: &Path, request: &Request) -> Result<Reply, AdminError> {
    let io = |e: std::io::Error| {
        AdminError::Io(format!(
            "cannot reach the running server's admin socket {}: {e}",
            path.display()
        ))
    };
    let mut stream = UnixStream::connect(path).await.map_err(io)?;
    let mut bytes = serde_json::to_vec(request).expect("a request always serialises");
    bytes.push(b'\n');
    stream.write_all(&bytes).await.map_err(io)?;
    let mut line = Vec::new();
    BufReader::new(stream.take(MAX_ANSWER + 1))
        .read_until(b'\n', &mut line)
        .await
        .map_err(io)?;
    if line.len() as u64 > MAX_ANSWER {
        return Err(AdminError::Io(format!(
            "the answer on {} ran past {} MiB without ending, far longer than any \
             admin answer, and was dropped; check that a carrier-server of this \
             version is what listens there",
            path.display(),
            MAX_ANSWER / (1024 * 1024)
        )));
    }
    match serde_json::from_slice::<Answer>(&line) {
        Ok(Answer::Ok(reply)) => Ok(reply),
        Ok(Answer::Error(sentence)) => Err(AdminError::Refused(sentence)),
        Err(e) => Err(AdminError::Io(format!(
            "the server's answer was not understood ({e}); is it the same version?"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes the request and never answers: the call gives
    /// up after its bound, saying which server did not answer.
    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_is_given_up_after_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(path(dir.path())).unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        for (request, bound) in [
            (Request::Status, ANSWER_TIMEOUT),
            (
                Request::Backup {
                    file: dir.path().join("copy.db"),
                },
                BACKUP_ANSWER_TIMEOUT,
            ),
        ] {
            let started = tokio::time::Instant::now();
            let err = tokio::time::timeout(2 * bound, call(dir.path(), &request))
                .await
                .expect("the call gives up by itself")
                .unwrap_err()
                .to_string();
            assert_eq!(started.elapsed(), bound, "{request:?}");
            let expected = format!(
                "the server at {} did not answer within {} s",
                path(dir.path()).display(),
                bound.as_secs()
            );
            assert!(err.starts_with(&expected), "{request:?}: {err}");
            assert!(err.contains("check that it is alive"), "{err}");
        }
        held.abort();
    }
}
