//! `carrier chat`: one logged-in session that reads commands line by line
//! (`commands`), prints what the server pushes as it arrives, pings now and
//! then so an idle session is not closed, and reconnects with backoff when
//! the connection is lost (a server restart, say), saying so.
//!
//! Lines come from, and go to, either plain streams (`screen::Plain`: a pipe
//! or a script, one line in and one line out, as any program reads them) or
//! a terminal's line editor (`terminal`: editing keys, history, completion
//! of contacts' numbers, and incoming lines printed above the line being
//! typed without breaking it).

mod commands;
mod screen;
mod terminal;

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::time::Instant;

use super::{Client, ClientError, Event, Exit, Session, show};
use crate::protocol::{ErrorCode, Request};
use commands::Flow;
use screen::{Input, Plain, Screen};

/// How often `chat` pings, so an idle session is not closed by the server.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// The first wait before reconnecting; each failure doubles it.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The longest wait between two tries to reconnect.
const LAST_RETRY: Duration = Duration::from_secs(30);

/// Runs a chat session for the client's account: commands come from
/// `input`, answers and messages go to `out`, warnings and errors to `err`.
/// Ends at `quit`, `exit` or the end of the input.
pub async fn chat(
    client: &Client,
    input: impl AsyncBufRead + Unpin,
    out: impl std::io::Write,
    err: impl std::io::Write,
) -> Result<(), ClientError> {
    let session = client.login().await?;
    let screen = Plain::new(out, err);
    run(client, session, screen::Lines(input.lines()), screen).await
}

/// [`chat`] on the terminal of standard input and output, through a line
/// editor; plain lines when the terminal cannot edit (`TERM=dumb`, say).
pub async fn chat_on_terminal(client: &Client) -> Result<(), ClientError> {
    let session = client.login().await?;
    let prompt = format!("{}> ", session.me());
    let contacts = client.home.contact_phones().await?;
    match terminal::start(prompt, contacts) {
        Some((input, screen, editor)) => {
            let outside = client.replace_notify(editor.notices());
            let ended = run(client, session, input, screen).await;
            client.replace_notify(outside);
            editor.finish(ended).await
        }
        None => {
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            let screen = Plain::new(std::io::stdout(), std::io::stderr());
            run(client, session, screen::Lines(input.lines()), screen).await
        }
    }
}

/// The session while connected; when not, when to try again.
enum Link<'c> {
    Up(Box<Session<'c>>),
    Down { retry_at: Instant, wait: Duration },
}

async fn run<'c>(
    client: &'c Client,
    session: Session<'c>,
    mut input: impl Input,
    mut screen: impl Screen,
) -> Result<(), ClientError> {
    screen.out(&format!(
        "Logged in as {}. Commands: send <phone> <text> | broadcast <text> | fetch | list | quit",
        session.me()
    ));
    let mut link = Link::Up(Box::new(session));
    let caught_up = catch_up(&mut link, &mut screen).await;
    unless_cut_off(caught_up, &mut screen)?;
    input.set_contacts(client.home.contact_phones().await?);
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    loop {
        screen.check()?;
        tokio::select! {
            _ = keepalive.tick() => {
                if let Link::Up(session) = &link {
                    let _ = session.conn.start(Request::Ping).await;
                }
            }
            line = input.next_line() => {
                let line = line.map_err(|source| ClientError::Io {
                    context: "cannot read input".into(),
                    source,
                })?;
                let Some(line) = line else { break };
                let session = match &mut link {
                    Link::Up(session) => Some(&mut **session),
                    Link::Down { .. } => None,
                };
                if commands::run(session, &mut screen, line.trim()).await == Flow::Quit {
                    break;
                }
                input.set_contacts(client.home.contact_phones().await?);
            }
            change = next_change(&mut link) => match change {
                Change::Pushed(event) => {
                    if let Link::Up(session) = &mut link {
                        let shown = show_event(session, &mut screen, event).await;
                        unless_cut_off(shown, &mut screen)?;
                    }
                    let caught_up = caught_up_on_missed(&mut link, &mut screen).await;
                    unless_cut_off(caught_up, &mut screen)?;
                }
                Change::Lost => {
                    screen.err(&lost(&link, client.server()));
                    link = down(FIRST_RETRY);
                }
                Change::RetryDue => reconnect(client, &mut link, &mut screen).await?,
            },
        }
    }
    if let Link::Up(session) = link {
        session.close().await;
    }
    screen.check()
}

/// A failure because the connection was cut is shown and the chat goes on
/// (the lost connection is noticed, and mended, next); any other ends it.
fn unless_cut_off(
    result: Result<(), ClientError>,
    screen: &mut impl Screen,
) -> Result<(), ClientError> {
    match result {
        Err(e) if e.exit() == Exit::Unreachable => {
            screen.err(&show::error(&e));
            Ok(())
        }
        other => other,
    }
}

/// The line that says the connection is gone, with the server's reason
/// when it gave one (it is shutting down, say): said here, above the
/// prompt, as the log line the client no longer prints would have.
fn lost(link: &Link<'_>, server: &str) -> String {
    let why = match link {
        Link::Up(session) => session.conn.ended_by(),
        Link::Down { .. } => None,
    };
    let why = match why {
        Some((ErrorCode::ShuttingDown, _)) => ": it is shutting down".to_owned(),
        Some((_, message)) => format!(": {}", show::clean(&message)),
        None => String::new(),
    };
    format!("Lost the connection to the server at {server}{why}; reconnecting…")
}

fn down(wait: Duration) -> Link<'static> {
    Link::Down {
        retry_at: Instant::now() + wait,
        wait,
    }
}

/// What happened to the link.
enum Change {
    /// The server pushed something.
    Pushed(Event),
    /// The connection is gone.
    Lost,
    /// Time to try reconnecting.
    RetryDue,
}

/// The next push while connected, or the loss of the connection; the time
/// to try again while not.
async fn next_change(link: &mut Link<'_>) -> Change {
    match link {
        Link::Up(session) => match session.conn.next_event().await {
            Some(event) => Change::Pushed(event),
            None => Change::Lost,
        },
        Link::Down { retry_at, .. } => {
            tokio::time::sleep_until(*retry_at).await;
            Change::RetryDue
        }
    }
}

/// One try to log in again. A failure that waiting may cure (the server is
/// not back yet) schedules the next try; any other (a changed server key, a
/// refused account) ends the chat.
async fn reconnect<'c>(
    client: &'c Client,
    link: &mut Link<'c>,
    screen: &mut impl Screen,
) -> Result<(), ClientError> {
    let Link::Down { wait, .. } = *link else {
        return Ok(());
    };
    match client.login().await {
        Ok(session) => {
            screen.err(&format!(
                "Reconnected to the server at {}.",
                client.server()
            ));
            *link = Link::Up(Box::new(session));
            let caught_up = catch_up(link, screen).await;
            unless_cut_off(caught_up, screen)
        }
        Err(e) if e.exit() == Exit::Unreachable => {
            let next = (wait * 2).min(LAST_RETRY);
            screen.err(&format!(
                "Still no connection ({}); next try in {} s.",
                show::clean(&e.to_string()),
                next.as_secs_f32()
            ));
            *link = down(next);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Shows what waits on the server: at the start and after a reconnection.
async fn catch_up(link: &mut Link<'_>, screen: &mut impl Screen) -> Result<(), ClientError> {
    if let Link::Up(session) = link {
        let (received, refused) = session.fetch().await?;
        commands::show_fetched(screen, &received, &refused);
    }
    Ok(())
}

/// Pushes dropped while this chat was busy: messages are still on the
/// server, so they are fetched; broadcasts are gone, which is said.
async fn caught_up_on_missed(
    link: &mut Link<'_>,
    screen: &mut impl Screen,
) -> Result<(), ClientError> {
    let Link::Up(session) = link else {
        return Ok(());
    };
    let missed = session.conn.missed_events();
    if missed.broadcasts > 0 {
        screen.err(&format!(
            "warning: {} broadcasts arrived faster than they could be shown and were missed",
            missed.broadcasts
        ));
    }
    if missed.messages > 0 {
        catch_up(link, screen).await?;
    }
    Ok(())
}

/// Shows something the server pushed.
async fn show_event(
    session: &mut Session<'_>,
    screen: &mut impl Screen,
    event: Event,
) -> Result<(), ClientError> {
    match event {
        Event::Message(m) => match session.take_pushed(m).await? {
            Ok(Some(m)) => screen.out(&show::message(&m)),
            Ok(None) => {}
            Err(r) => screen.err(&show::refusal(&r)),
        },
        Event::Broadcast(b) => match session.verify_broadcast(&b).await {
            Ok(authorship) => screen.out(&show::broadcast(&b, authorship)),
            Err(e) => screen.err(&format!("warning: {}", show::clean(&e.to_string()))),
        },
    }
    Ok(())
}
