//! `carrier chat`: one logged-in session that reads commands line by line
//! (send, broadcast, fetch, list, quit), prints what the server pushes as it
//! arrives, and pings now and then so an idle session is not closed.

use std::io::Write;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::{Client, ClientError, Event, Received, Refusal, Session, show};
use crate::protocol::Request;

/// How often `chat` pings, so an idle session is not closed by the server.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// Runs a chat session for the client's account: commands come from
/// `input`, answers and messages go to `out`, warnings and errors to `err`.
/// Ends at `quit`, `exit` or the end of the input.
pub async fn chat(
    client: &Client,
    input: impl AsyncBufRead + Unpin,
    out: impl Write,
    err: impl Write,
) -> Result<(), ClientError> {
    let mut console = Console {
        out,
        err,
        broken: None,
    };
    let mut session = client.login().await?;
    console.out(&format!(
        "Logged in as {}. Commands: send <phone> <text> | broadcast <text> | fetch | list | quit",
        session.me()
    ));
    let (received, refused) = session.fetch().await?;
    console.fetched(&received, &refused);
    let mut lines = input.lines();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    loop {
        console.check()?;
        tokio::select! {
            _ = keepalive.tick() => {
                let _ = session.conn.start(Request::Ping).await;
            }
            line = lines.next_line() => {
                let line = line.map_err(|source| ClientError::Io {
                    context: "cannot read input".into(),
                    source,
                })?;
                let Some(line) = line else { break };
                if !command(&mut session, &mut console, line.trim()).await {
                    break;
                }
            }
            pushed = session.conn.next_event() => {
                let Some(event) = pushed else {
                    return Err(ClientError::Disconnected);
                };
                show_event(&mut session, &mut console, event).await?;
            }
        }
    }
    session.close().await;
    console.check()
}

/// Shows something the server pushed.
async fn show_event(
    session: &mut Session<'_>,
    console: &mut Console<impl Write, impl Write>,
    event: Event,
) -> Result<(), ClientError> {
    match event {
        Event::Message(m) => match session.take_pushed(m).await? {
            Ok(Some(m)) => console.out(&show::message(&m)),
            Ok(None) => {}
            Err(r) => console.err(&show::refusal(&r)),
        },
        Event::Broadcast(b) => match session.verify_broadcast(&b).await {
            Ok(()) => console.out(&show::broadcast(&b)),
            Err(e) => console.err(&format!("warning: {e}")),
        },
    }
    Ok(())
}

/// Runs one command; returns false to leave. A failed command is reported
/// and the session goes on.
async fn command(
    session: &mut Session<'_>,
    console: &mut Console<impl Write, impl Write>,
    line: &str,
) -> bool {
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    let outcome = match cmd {
        "" => Ok(()),
        "quit" | "exit" => return false,
        "send" => match rest.trim().split_once(' ') {
            Some((to, text)) => session
                .send(to, text.trim())
                .await
                .map(|id| console.out(&format!("Sent message {id} to {to}"))),
            None => Err(ClientError::Input("usage: send <phone> <text>".into())),
        },
        "fetch" => session.fetch().await.map(|(received, refused)| {
            console.fetched(&received, &refused);
            if received.is_empty() {
                console.out("No new messages.");
            }
        }),
        "broadcast" if !rest.trim().is_empty() => session
            .broadcast(rest.trim())
            .await
            .map(|id| console.out(&format!("Broadcast {id} sent"))),
        "broadcast" => Err(ClientError::Input("usage: broadcast <text>".into())),
        "list" => session
            .list()
            .await
            .map(|users| users.iter().for_each(|u| console.out(&show::user(u)))),
        other => Err(ClientError::Input(format!(
            "unknown command '{other}': send, broadcast, fetch, list or quit"
        ))),
    };
    if let Err(e) = outcome {
        console.err(&format!("error: {e}"));
    }
    true
}

/// Where chat writes: answers and messages to `out`, warnings and errors to
/// `err`, a line at a time. The first failed write is kept and ends the
/// session at the next [`Console::check`].
struct Console<O, E> {
    out: O,
    err: E,
    broken: Option<std::io::Error>,
}

impl<O: Write, E: Write> Console<O, E> {
    fn out(&mut self, line: &str) {
        let written = writeln!(self.out, "{line}");
        self.keep(written);
    }

    fn err(&mut self, line: &str) {
        let written = writeln!(self.err, "{line}");
        self.keep(written);
    }

    fn keep(&mut self, written: std::io::Result<()>) {
        if let Err(e) = written {
            self.broken.get_or_insert(e);
        }
    }

    /// What a fetch brought: messages on `out`, refusals on `err`.
    fn fetched(&mut self, received: &[Received], refused: &[Refusal]) {
        received.iter().for_each(|m| self.out(&show::message(m)));
        refused.iter().for_each(|r| self.err(&show::refusal(r)));
    }

    /// The first write that failed, if any.
    fn check(&mut self) -> Result<(), ClientError> {
        match self.broken.take() {
            Some(source) => Err(ClientError::Io {
                context: "cannot write to the terminal".into(),
                source,
            }),
            None => Ok(()),
        }
    }
}
