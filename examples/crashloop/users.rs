//! The crash loop's users, each a `carrier` client with its own home:
//! senders that retry until their message is accepted, and recipients
//! that fetch, store and acknowledge, logging in again whenever their
//! server dies under them.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use carrier::bench::users::OtpReader;
use carrier::client::{Client, ClientError, CodeAnswer, Home, Session};
use carrier::domain::PhoneNumber;
use carrier::protocol::{ErrorCode, KeyType, Request, Response};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ledger::{Attempt, Key, Ledger};
use crate::plan;
use crate::servers::Server;

/// First wait before trying again; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// A recipient fetches at least this often, pushes or not.
const POLL: Duration = Duration::from_millis(250);

/// Messages asked for per fetch.
const FETCH_LIMIT: u32 = 100;

/// A registered user.
pub struct User {
    pub phone: PhoneNumber,
    pub client: Client,
}

/// Registers `phone` on `server` with a new P-256 key in the home `dir`,
/// as `carrier register` does.
pub async fn register(
    server: &Server,
    otp: &OtpReader,
    phone: PhoneNumber,
    dir: &Path,
) -> Result<User> {
    let home = Home::open(dir).await?;
    let client = Client::new(
        home,
        server.addr.to_string(),
        Some(server.fingerprint),
        None,
        Arc::new(|_| {}),
    );
    let registration = client
        .start_registration(phone.as_str(), KeyType::P256)
        .await
        .with_context(|| format!("register {phone}"))?;
    let code = otp.code_for(&phone).await?;
    match registration.verify(&code).await? {
        CodeAnswer::Registered(session, _) => session.close().await,
        CodeAnswer::Wrong(_, message) => bail!("register {phone}: {message}"),
    }
    Ok(User { phone, client })
}

/// Counts of the current cycle, which the kills wait on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub accepted: u64,
    pub delivered: u64,
    /// Fetches that found nothing waiting.
    pub empty_fetches: u64,
}

/// What senders and recipients share.
pub struct Shared {
    pub ledger: Mutex<Ledger>,
    pub progress: watch::Sender<Progress>,
}

impl Shared {
    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What an error means for the operation that met it.
enum Failure {
    /// The connection died before an answer: tried again, fate unknown.
    Unanswered,
    /// The server answered with a code that a later try may not get.
    Refused(ErrorCode),
    /// Anything else: the run reports it.
    Fatal,
}

fn classify(e: &ClientError) -> Failure {
    match e {
        ClientError::Disconnected | ClientError::Connect(_) | ClientError::Unreachable { .. } => {
            Failure::Unanswered
        }
        ClientError::Server { code, .. }
            if matches!(
                code,
                ErrorCode::RateLimited
                    | ErrorCode::ShuttingDown
                    | ErrorCode::TooManyInFlight
                    | ErrorCode::ServerBusy
                    | ErrorCode::StorageFull
                    | ErrorCode::StorageUnavailable
                    | ErrorCode::Internal
            ) =>
        {
            Failure::Refused(*code)
        }
        _ => Failure::Fatal,
    }
}

fn longer(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

/// Logs in, trying again while the server is down.
async fn log_in<'c>(user: &'c User, stop: &CancellationToken) -> Result<Option<Session<'c>>> {
    let mut backoff = MIN_BACKOFF;
    loop {
        match user.client.login().await {
            Ok(session) => return Ok(Some(session)),
            Err(e) if matches!(classify(&e), Failure::Fatal) => {
                return Err(anyhow!("{} cannot log in: {e}", user.phone));
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = longer(backoff);
    }
}

/// Sends `sends` from sender number `index` in `cycle`, each until it is
/// accepted.
pub async fn send_all(
    user: &User,
    index: usize,
    cycle: u32,
    sends: &[plan::Send],
    recipients: &[PhoneNumber],
    shared: &Shared,
) -> Result<()> {
    let never = CancellationToken::new();
    let mut session = None;
    for (n, send) in sends.iter().enumerate() {
        let key = Key {
            cycle,
            sender: index,
            n,
        };
        let to = recipients[send.recipient].as_str();
        let text = key.text(send.filler);
        shared.ledger().intend(key, user.phone.as_str(), to, &text);
        let mut backoff = MIN_BACKOFF;
        loop {
            if session.is_none() {
                session = log_in(user, &never).await?;
            }
            let s = session.as_ref().expect("logged in");
            let accepted = match s.send(to, &text).await {
                Ok(id) => Ok(id),
                // The recipient's device took it; only what came after (the
                // copies for the sender's other devices) was cut short.
                Err(ClientError::PartlySent(cut)) => Ok(cut.id),
                Err(e) => Err(e),
            };
            let failure = match accepted {
                Ok(id) => {
                    shared.ledger().attempt(key, Attempt::Accepted(id));
                    shared.progress.send_modify(|p| p.accepted += 1);
                    break;
                }
                Err(e) => (classify(&e), e),
            };
            match failure {
                (Failure::Unanswered, _) => {
                    shared.ledger().attempt(key, Attempt::Unanswered);
                    session = None;
                }
                (Failure::Refused(code), _) => shared.ledger().attempt(key, Attempt::Refused(code)),
                (Failure::Fatal, e) => bail!("{} sending {key:?}: {e}", user.phone),
            }
            tokio::time::sleep(backoff).await;
            backoff = longer(backoff);
        }
    }
    if let Some(s) = session {
        s.close().await;
    }
    Ok(())
}

/// Takes `user`'s messages until `stop`: fetches whenever a push says
/// something arrived (and every [`POLL`] anyway), logging in again after
/// each crash.
pub async fn receive_until(user: &User, stop: &CancellationToken, shared: &Shared) -> Result<()> {
    while let Some(mut session) = log_in(user, stop).await? {
        loop {
            match take_waiting(&mut session, shared).await {
                Ok(0) => shared.progress.send_modify(|p| p.empty_fetches += 1),
                Ok(_) => continue,
                Err(e) if matches!(classify(&e), Failure::Fatal) => {
                    return Err(anyhow!("{} fetching: {e}", user.phone));
                }
                Err(_) => break,
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    session.close().await;
                    return Ok(());
                }
                _ = session.conn.next_event() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
    Ok(())
}

/// One fetch, each message handed to the client in turn (which stores it,
/// then acknowledges it); returns how many came. The one step below
/// `Session::fetch`, which drops redeliveries silently: here each delivery
/// is recorded first.
async fn take_waiting(session: &mut Session<'_>, shared: &Shared) -> Result<usize, ClientError> {
    let fetch = Request::Fetch {
        limit: Some(FETCH_LIMIT),
        after: None,
    };
    let Response::Messages { messages, .. } = session.conn.call(fetch).await? else {
        return Err(ClientError::Protocol(
            "a fetch not answered with messages".into(),
        ));
    };
    let n = messages.len();
    for m in messages {
        let id = m.id;
        shared.ledger().delivered(id);
        shared.progress.send_modify(|p| p.delivered += 1);
        if let Err(refusal) = session.take_pushed(m).await? {
            shared.ledger().refused(format!(
                "{id} from {} refused: {}",
                refusal.from, refusal.reason
            ));
        }
    }
    Ok(n)
}
