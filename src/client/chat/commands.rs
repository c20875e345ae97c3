//! The commands typed in `chat`: `send`, `broadcast`, `fetch`, `list`,
//! `/help`, `quit`. A command may start with `/`. A failed command is
//! reported and the session goes on.

use super::screen::Screen;
use crate::client::{ClientError, Received, Refusal, Session, show};

/// Whether to go on after a command.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Quit,
}

/// The lines `/help` prints.
const HELP: &[&str] = &[
    "send <phone> <text>   send an encrypted message (Tab completes your contacts' numbers)",
    "broadcast <text>      a signed public message to everyone connected now",
    "fetch                 show the messages waiting on the server",
    "list                  the users of the neighbourhood, online or offline",
    "/help                 this help",
    "quit                  leave (also exit, or Ctrl-D on a terminal)",
];

/// The command names, for completion.
pub(super) const NAMES: &[&str] = &["send", "broadcast", "fetch", "list", "/help", "quit"];

/// Runs one command line; `session` is `None` while reconnecting.
pub(super) async fn run(
    session: Option<&mut Session<'_>>,
    screen: &mut impl Screen,
    line: &str,
) -> Flow {
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    let cmd = cmd.strip_prefix('/').unwrap_or(cmd);
    let outcome = match (cmd, session) {
        ("", _) => Ok(()),
        ("quit" | "exit", _) => return Flow::Quit,
        ("help" | "?", _) => {
            HELP.iter().for_each(|l| screen.out(l));
            Ok(())
        }
        ("send" | "fetch" | "broadcast" | "list", None) => Err(ClientError::Input(
            "not connected to the server: reconnecting, try again in a moment".into(),
        )),
        ("send", Some(session)) => send(session, screen, rest).await,
        ("fetch", Some(session)) => session.fetch().await.map(|(received, refused)| {
            show_fetched(screen, &received, &refused);
            if received.is_empty() {
                screen.out("No new messages.");
            }
        }),
        ("broadcast", Some(session)) if !rest.trim().is_empty() => session
            .broadcast(rest.trim())
            .await
            .map(|id| screen.out(&format!("Broadcast {id} sent"))),
        ("broadcast", Some(_)) => Err(ClientError::Input("usage: broadcast <text>".into())),
        ("list", Some(session)) => session
            .list()
            .await
            .map(|users| users.iter().for_each(|u| screen.out(&show::user(u)))),
        (other, _) => Err(ClientError::Input(format!(
            "unknown command '{}': send, broadcast, fetch, list or quit",
            show::clean(other)
        ))),
    };
    if let Err(e) = outcome {
        screen.err(&show::error(&e));
    }
    Flow::Continue
}

async fn send(
    session: &mut Session<'_>,
    screen: &mut impl Screen,
    rest: &str,
) -> Result<(), ClientError> {
    let Some((to, text)) = rest.trim().split_once(' ') else {
        return Err(ClientError::Input("usage: send <phone> <text>".into()));
    };
    let id = session.send(to, text.trim()).await?;
    screen.out(&format!("Sent message {id} to {to}"));
    Ok(())
}

/// What a fetch brought: messages with `out`, refusals with `err`.
pub(super) fn show_fetched(screen: &mut impl Screen, received: &[Received], refused: &[Refusal]) {
    received.iter().for_each(|m| screen.out(&show::message(m)));
    refused.iter().for_each(|r| screen.err(&show::refusal(r)));
}
