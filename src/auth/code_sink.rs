//! Where a one-time code goes: the console, a file, or the standard input of
//! a command (an SMS gateway script). The line is always
//! `OTP for <phone>: <code>`. This is the only place a code is written out;
//! it never reaches the log.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::domain::PhoneNumber;

/// How long a delivery command may run before the code counts as undelivered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// The configured channel for one-time codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSink {
    /// Print the line on standard output (the operator's console).
    Console,
    /// Append the line to a file (created with mode 0600).
    File(PathBuf),
    /// Run `sh -c <command>` and write the line to its standard input.
    Command(String),
}

impl CodeSink {
    /// Sends the code line; an error says why delivery failed, without the code.
    pub async fn deliver(&self, phone: &PhoneNumber, code: &str) -> Result<(), String> {
        let line = zeroize::Zeroizing::new(format!("OTP for {phone}: {code}\n"));
        match self {
            CodeSink::Console => {
                let mut out = tokio::io::stdout();
                out.write_all(line.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                out.flush().await.map_err(|e| e.to_string())
            }
            CodeSink::File(path) => append(path, line.as_bytes())
                .await
                .map_err(|e| format!("cannot append to {}: {e}", path.display())),
            CodeSink::Command(cmd) => run_command(cmd, line.as_bytes()).await,
        }
    }
}

async fn append(path: &PathBuf, line: &[u8]) -> std::io::Result<()> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .await?;
    file.write_all(line).await?;
    file.flush().await
}

async fn run_command(cmd: &str, line: &[u8]) -> Result<(), String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the code delivery command: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let write = async {
        stdin.write_all(line).await?;
        stdin.shutdown().await?;
        drop(stdin);
        child.wait().await
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, write).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("the code delivery command failed ({status})")),
        Ok(Err(e)) => Err(format!("the code delivery command failed: {e}")),
        Err(_) => Err("the code delivery command took too long".into()),
    }
}
