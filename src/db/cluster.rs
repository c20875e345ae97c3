//! What the members of a cluster (several servers on one PostgreSQL
//! database, one identity) tell each other through the database: the
//! identity they share, who is connected to each, and events on one
//! `LISTEN/NOTIFY` channel. On SQLite a server is always alone: there is
//! nothing to share and these calls do nothing.
//!
//! A notification travels with the transaction that sends it: one sent by
//! the queue writer inside a batch arrives only if that batch commits, so
//! a member never pushes a message that was not stored.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use super::backend::{Backend, Conn};
use super::queue::NewMessage;
use super::{DbError, Millis, Store};
use crate::domain::{Fingerprint, MessageId, PhoneNumber};

/// Longest payload PostgreSQL accepts is 8000 bytes; larger events are not
/// sent (members learn of them at the next refresh).
pub const MAX_PAYLOAD: usize = 7900;
/// Events waiting for the member's router before older ones are dropped.
const EVENT_BACKLOG: usize = 4096;
/// Wait between attempts to listen again after the database went away.
const RELISTEN_WAIT: Duration = Duration::from_secs(1);

/// The entries of an [`Event::Spent`]: `phone:messages:bytes`, space
/// separated.
fn decode_spent(body: &str) -> Option<Vec<(PhoneNumber, u64, u64)>> {
    body.split(' ')
        .map(|entry| {
            let mut parts = entry.split(':');
            let phone = PhoneNumber::from_canonical(parts.next()?).ok()?;
            let messages = parts.next()?.parse().ok()?;
            let bytes = parts.next()?.parse().ok()?;
            parts.next().is_none().then_some((phone, messages, bytes))
        })
        .collect()
}

/// Bytes of an [`Event::Carried`] payload beside its envelope's base64: the
/// member, the kind, two phone numbers, the ids and numbers, and spaces.
const CARRIED_FIELDS: usize = 16 + 3 + 2 * 16 + 10 + 32 + 10 + 3 * 20 + 9;

/// The length a payload carrying `message` would have, at most.
fn carried_len(message: &NewMessage) -> usize {
    CARRIED_FIELDS + message.envelope.len().div_ceil(3) * 4
}

/// The message of an [`Event::Carried`]: recipient, device, id, sender,
/// sender's device, received and expiry times, base64 envelope.
fn decode_carried(body: &str) -> Option<NewMessage> {
    let mut parts = body.splitn(8, ' ');
    let mut next = || parts.next();
    Some(NewMessage {
        recipient: PhoneNumber::from_canonical(next()?).ok()?,
        device: next()?.parse().ok()?,
        id: MessageId::parse_hex(next()?)?,
        sender: PhoneNumber::from_canonical(next()?).ok()?,
        sender_device: next()?.parse().ok()?,
        received_at: next()?.parse().ok()?,
        expires_at: next()?.parse().ok()?,
        envelope: STANDARD.decode(next()?).ok()?,
    })
}

/// This process among the cluster's members: a random name, new at each
/// start, that lets a member skip its own notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberId(String);

impl MemberId {
    pub(super) fn random() -> Self {
        Self(MessageId::random().to_hex()[..16].to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What another member tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message for `recipient` was committed to the queue of their
    /// `device` (0: an account without devices).
    Queued {
        recipient: PhoneNumber,
        device: u32,
        id: MessageId,
    },
    /// A message was committed to its recipient's queue, and carried whole
    /// because the recipient was connected to another member and it fits
    /// a notification: that member pushes it without reading it back.
    Carried(Box<NewMessage>),
    /// A message for neighbour `0` was committed to its outbound queue.
    Outbound(Fingerprint),
    /// The directory entry of `0` changed.
    Directory(PhoneNumber),
    /// Account `0` published a new device list.
    Devices(PhoneNumber),
    /// Some member's connected users changed.
    Presence,
    /// A JSON body (a broadcast, a neighbour's presence report) that the
    /// member which received it passes on to the others.
    Relay(RelayKind, String),
    /// A new device asked through link rendezvous `0` (its request is in
    /// `link_rendezvous`): the member holding the opening session pushes it.
    LinkRequested(Vec<u8>),
    /// The opening device answered link rendezvous `0`: the member where
    /// the new device waits passes the answer on.
    LinkAnswered(Vec<u8>),
    /// What senders spent through another member (messages, bytes each),
    /// to be taken from their send rates here too.
    Spent(Vec<(PhoneNumber, u64, u64)>),
    /// Notifications may have been missed (the listening connection was
    /// lost and made again): whatever is cached should be read again.
    Resync,
}

/// Which JSON body an [`Event::Relay`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    Broadcast,
    NeighbourPresence,
}

impl Event {
    /// What the other members hear of `message`, just stored for a local
    /// recipient: the message itself when `carry` and it fits a
    /// notification, otherwise where to read it.
    pub(super) fn stored(message: &NewMessage, carry: bool) -> Event {
        if carry && carried_len(message) <= MAX_PAYLOAD {
            return Event::Carried(Box::new(message.clone()));
        }
        Event::Queued {
            recipient: message.recipient.clone(),
            device: message.device,
            id: message.id,
        }
    }

    fn encode(&self, member: &MemberId) -> String {
        let m = member.as_str();
        match self {
            Event::Queued {
                recipient,
                device,
                id,
            } => format!("{m} q {recipient} {device} {id}"),
            Event::Carried(c) => format!(
                "{m} m {} {} {} {} {} {} {} {}",
                c.recipient,
                c.device,
                c.id,
                c.sender,
                c.sender_device,
                c.received_at,
                c.expires_at,
                STANDARD.encode(&c.envelope)
            ),
            Event::Outbound(fp) => format!("{m} o {}", fp.to_hex()),
            Event::Directory(phone) => format!("{m} d {phone}"),
            Event::Devices(phone) => format!("{m} v {phone}"),
            Event::Presence => format!("{m} p"),
            Event::Relay(RelayKind::Broadcast, body) => format!("{m} b {body}"),
            Event::Relay(RelayKind::NeighbourPresence, body) => format!("{m} n {body}"),
            Event::LinkRequested(id) => format!("{m} k {}", hex::encode(id)),
            Event::LinkAnswered(id) => format!("{m} a {}", hex::encode(id)),
            Event::Spent(spent) => {
                let entries: Vec<String> = spent
                    .iter()
                    .map(|(p, messages, bytes)| format!("{p}:{messages}:{bytes}"))
                    .collect();
                format!("{m} s {}", entries.join(" "))
            }
            Event::Resync => format!("{m} r"),
        }
    }

    /// The event in `payload` and the member that sent it; `None` for
    /// anything malformed.
    fn decode(payload: &str) -> Option<(&str, Event)> {
        let (member, rest) = payload.split_once(' ')?;
        let (kind, body) = rest.split_once(' ').unwrap_or((rest, ""));
        let event = match kind {
            "q" => {
                let (recipient, rest) = body.split_once(' ')?;
                let (device, id) = rest.split_once(' ')?;
                Event::Queued {
                    recipient: PhoneNumber::from_canonical(recipient).ok()?,
                    device: device.parse().ok()?,
                    id: MessageId::parse_hex(id)?,
                }
            }
            "m" => Event::Carried(Box::new(decode_carried(body)?)),
            "o" => Event::Outbound(Fingerprint::parse(body)?),
            "d" => Event::Directory(PhoneNumber::from_canonical(body).ok()?),
            "v" => Event::Devices(PhoneNumber::from_canonical(body).ok()?),
            "p" => Event::Presence,
            "b" => Event::Relay(RelayKind::Broadcast, body.to_owned()),
            "n" => Event::Relay(RelayKind::NeighbourPresence, body.to_owned()),
            "s" => Event::Spent(decode_spent(body)?),
            "k" => Event::LinkRequested(hex::decode(body).ok()?),
            "a" => Event::LinkAnswered(hex::decode(body).ok()?),
            _ => return None,
        };
        Some((member, event))
    }
}

/// This member and the cluster it belongs to: every server on the same
/// database and schema. Notifications and advisory locks are
/// database-wide, so both are named after the schema (servers on other
/// schemas of one database are not members of each other).
#[derive(Debug)]
pub struct Membership {
    member: MemberId,
    /// Hex of a hash of the database's and schema's names.
    scope: String,
    /// Users connected to the other members, as routing last heard: the
    /// messages stored for them are carried whole in their notifications.
    online_elsewhere: RwLock<HashSet<String>>,
}

impl Membership {
    pub(super) fn alone() -> Self {
        Self {
            member: MemberId::random(),
            scope: String::new(),
            online_elsewhere: RwLock::default(),
        }
    }

    /// The membership of a server on PostgreSQL `pool`'s schema.
    pub(super) async fn on(pool: &PgPool) -> Result<Self, DbError> {
        let name: String =
            sqlx::query_scalar("SELECT current_database() || '.' || current_schema()")
                .fetch_one(pool)
                .await?;
        Ok(Self {
            member: MemberId::random(),
            scope: hex::encode(&Sha256::digest(name.as_bytes())[..8]),
            online_elsewhere: RwLock::default(),
        })
    }

    /// Whether `phone` was connected to another member when last heard:
    /// then a message stored for them is worth carrying whole (a member's
    /// news of a login may lag; a message it does not carry is read back).
    pub(super) fn carries_for(&self, phone: &PhoneNumber) -> bool {
        let online = self.online_elsewhere.read();
        online
            .unwrap_or_else(|p| p.into_inner())
            .contains(phone.as_str())
    }

    /// The channel every member listens on.
    fn channel(&self) -> String {
        format!("carrier_{}", self.scope)
    }

    /// The advisory lock key of `name` in this cluster.
    pub(super) fn lock_key(&self, name: &str) -> i64 {
        let digest = Sha256::digest(format!("carrier:{}:{name}", self.scope).as_bytes());
        i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
    }
}

/// Why a member may not join the cluster on this database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    ServerKey { cluster: String, ours: String },
    CodeKey,
}

impl Store {
    /// Whether other servers may share this database (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.pool, Backend::Postgres(_))
    }

    /// Records the identity of the cluster if none is recorded yet, and
    /// says how ours differs from a recorded one.
    pub async fn claim_identity(
        &self,
        fingerprint: &str,
        code_key_check: &str,
        now: Millis,
    ) -> Result<Option<Mismatch>, DbError> {
        let Backend::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        // A no-op update rather than DO NOTHING: when another member
        // records its identity at the same moment, this insert waits for
        // that commit and then returns the other member's row. With DO
        // NOTHING and a read beside it, the read's snapshot predated that
        // commit and found no row at all.
        let recorded: (String, String) = sqlx::query_as(
            "INSERT INTO cluster_identity (id, fingerprint, code_key_check, recorded_at)
             VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET id = cluster_identity.id
             RETURNING fingerprint, code_key_check",
        )
        .bind(fingerprint)
        .bind(code_key_check)
        .bind(now)
        .fetch_one(pool)
        .await?;
        Ok(if recorded.0 != fingerprint {
            Some(Mismatch::ServerKey {
                cluster: recorded.0,
                ours: fingerprint.to_owned(),
            })
        } else if recorded.1 != code_key_check {
            Some(Mismatch::CodeKey)
        } else {
            None
        })
    }

    /// Records who is connected to this member now, and tells the others.
    pub async fn publish_presence(&self, online: &[String], now: Millis) -> Result<(), DbError> {
        let Backend::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let online = serde_json::to_string(online).expect("strings serialise");
        let done = sqlx::query(
            "WITH up AS (
                 INSERT INTO cluster_members (member, online, seen_at) VALUES ($1, $2, $3)
                 ON CONFLICT (member) DO UPDATE SET online = excluded.online,
                     seen_at = excluded.seen_at)
             SELECT pg_notify($4, $5)",
        )
        .bind(self.membership.member.as_str())
        .bind(online)
        .bind(now)
        .bind(self.membership.channel())
        .bind(Event::Presence.encode(&self.membership.member))
        .execute(pool)
        .await;
        self.wrote(done).map(drop)
    }

    /// Takes who is connected to the other members (as routing last read
    /// it), whose messages the queue writer then carries in notifications.
    pub fn set_online_elsewhere(&self, online: HashSet<String>) {
        *self
            .membership
            .online_elsewhere
            .write()
            .unwrap_or_else(|p| p.into_inner()) = online;
    }

    /// Everyone connected to the other members heard from since `since`.
    pub async fn online_elsewhere(&self, since: Millis) -> Result<Vec<String>, DbError> {
        let Backend::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        let rows: Result<Vec<String>, _> = sqlx::query_scalar(
            "SELECT online FROM cluster_members WHERE member <> $1 AND seen_at >= $2",
        )
        .bind(self.membership.member.as_str())
        .bind(since)
        .fetch_all(pool)
        .await;
        let mut online = Vec::new();
        for row in self.read(rows)? {
            let phones: Vec<String> = serde_json::from_str(&row)
                .map_err(|e| DbError::Corrupt(format!("cluster_members.online: {e}")))?;
            online.extend(phones);
        }
        Ok(online)
    }

    /// Tells the other members of `event` (not sent if it is too large).
    pub async fn notify(&self, event: &Event) -> Result<(), DbError> {
        let Backend::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let payload = event.encode(&self.membership.member);
        if payload.len() > MAX_PAYLOAD {
            tracing::debug!(bytes = payload.len(), "a cluster event too large to send");
            return Ok(());
        }
        let done = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(self.membership.channel())
            .bind(payload)
            .execute(pool)
            .await;
        self.wrote(done).map(drop)
    }

    /// The other members' events, from now on, until the store is closed.
    /// `None` on SQLite.
    pub async fn listen(&self) -> Result<Option<mpsc::Receiver<Event>>, DbError> {
        let Backend::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(&self.membership.channel()).await?;
        let (tx, rx) = mpsc::channel(EVENT_BACKLOG);
        tokio::spawn(follow(listener, self.membership.member.clone(), tx));
        Ok(Some(rx))
    }
}

/// Readies, inside the writer's transaction, one notification per event,
/// and returns the statement that sends them if it is to run with the
/// commit (saving the batch a round trip to the database).
///
/// That statement carries the payloads as literals: the writer's events
/// hold only names, numbers, hex and base64, so quoting is doubling any
/// single quote; an event with a character that would need more (a
/// backslash, a NUL) is sent at once with bound values instead.
pub(super) async fn notify_at_commit(
    conn: &mut Conn<'_>,
    membership: &Membership,
    events: &[Event],
) -> Result<Option<String>, DbError> {
    if !matches!(conn, Backend::Postgres(_)) || events.is_empty() {
        return Ok(None);
    }
    let payloads: Option<Vec<String>> = events
        .iter()
        .map(|e| literal(&e.encode(&membership.member)))
        .collect();
    match payloads {
        Some(payloads) => Ok(Some(format!(
            "SELECT count(*) FROM (SELECT pg_notify({}, p) FROM unnest(ARRAY[{}]::text[]) AS p) AS sent",
            literal(&membership.channel()).expect("a channel name is plain"),
            payloads.join(",")
        ))),
        None => notify_in(conn, membership, events).await.map(|()| None),
    }
}

/// `s` as a PostgreSQL string literal, if it holds nothing that quoting by
/// doubling single quotes would leave ambiguous.
fn literal(s: &str) -> Option<String> {
    if s.contains(['\\', '\0']) {
        return None;
    }
    Some(format!("'{}'", s.replace('\'', "''")))
}

/// Sends, inside the writer's transaction, one notification per event.
pub(super) async fn notify_in(
    conn: &mut Conn<'_>,
    membership: &Membership,
    events: &[Event],
) -> Result<(), DbError> {
    let Backend::Postgres(c) = conn.reborrow() else {
        return Ok(());
    };
    if events.is_empty() {
        return Ok(());
    }
    let payloads: Vec<String> = events
        .iter()
        .map(|e| e.encode(&membership.member))
        .collect();
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(membership.channel())
        .bind(payloads)
        .execute(c)
        .await?;
    Ok(())
}

/// Passes the other members' notifications on until nobody listens. When
/// the connection is lost the listener makes it again by itself; events
/// sent meanwhile are lost, so a [`Event::Resync`] follows.
async fn follow(mut listener: PgListener, me: MemberId, tx: mpsc::Sender<Event>) {
    loop {
        let event = match listener.try_recv().await {
            Ok(Some(n)) => match Event::decode(n.payload()) {
                Some((member, _)) if member == me.as_str() => continue,
                Some((_, event)) => event,
                None => continue,
            },
            Ok(None) => {
                tracing::warn!("lost the cluster notification connection; listening again");
                Event::Resync
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::debug!(error = %e, "cannot listen for cluster events yet");
                tokio::time::sleep(RELISTEN_WAIT).await;
                Event::Resync
            }
        };
        if tx.is_closed() {
            return;
        }
        if tx.try_send(event).is_err() {
            tracing::warn!("cluster events arrive faster than they are handled; some are dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(envelope_bytes: usize) -> NewMessage {
        NewMessage {
            id: MessageId::random(),
            recipient: PhoneNumber::from_canonical("+155501000000000").unwrap(),
            device: u32::MAX,
            sender: PhoneNumber::from_canonical("+155501999999999").unwrap(),
            sender_device: u32::MAX,
            envelope: vec![7; envelope_bytes],
            received_at: i64::MAX,
            expires_at: i64::MIN,
        }
    }

    #[test]
    fn literals_are_quoted_or_refused() {
        assert_eq!(literal("m q +1 0 ab").as_deref(), Some("'m q +1 0 ab'"));
        assert_eq!(literal("it's").as_deref(), Some("'it''s'"));
        assert_eq!(literal("a\\b"), None);
        assert_eq!(literal("a\0b"), None);
    }

    #[test]
    fn a_message_is_carried_only_when_asked_and_it_fits() {
        let small = message(600);
        assert!(matches!(Event::stored(&small, true), Event::Carried(_)));
        assert!(matches!(Event::stored(&small, false), Event::Queued { .. }));
        let large = message(6000);
        assert!(matches!(Event::stored(&large, true), Event::Queued { .. }));
        // The largest envelope carried still fits the payload limit.
        let me = MemberId::random();
        let mut n = 0;
        while matches!(Event::stored(&message(n + 1), true), Event::Carried(_)) {
            n += 1;
        }
        let payload = Event::stored(&message(n), true).encode(&me);
        assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
        assert!(n > 5000, "{n}");
    }

    #[test]
    fn events_survive_their_payload() {
        let me = MemberId::random();
        let phone = PhoneNumber::from_canonical("+15550100").unwrap();
        let events = [
            Event::Queued {
                recipient: phone.clone(),
                device: 0,
                id: MessageId::random(),
            },
            Event::Queued {
                recipient: phone.clone(),
                device: u32::MAX,
                id: MessageId::random(),
            },
            Event::Carried(Box::new(NewMessage {
                id: MessageId::random(),
                recipient: phone.clone(),
                device: 3,
                sender: PhoneNumber::from_canonical("+15550199").unwrap(),
                sender_device: 0,
                envelope: vec![0, 1, 2, 255, 254],
                received_at: 1_700_000_000_000,
                expires_at: 1_700_600_000_000,
            })),
            Event::Outbound(Fingerprint::parse(&"ab".repeat(32)).unwrap()),
            Event::Directory(phone.clone()),
            Event::Devices(phone.clone()),
            Event::Presence,
            Event::Relay(RelayKind::Broadcast, "{\"a\": 1}".into()),
            Event::Relay(RelayKind::NeighbourPresence, "{}".into()),
            Event::LinkRequested(vec![7; 16]),
            Event::Spent(vec![(phone.clone(), 3, 1024), (phone.clone(), 1, 1)]),
            Event::LinkAnswered(vec![9; 16]),
        ];
        for event in events {
            let payload = event.encode(&me);
            assert_eq!(
                Event::decode(&payload),
                Some((me.as_str(), event.clone())),
                "{payload}"
            );
        }
        for bad in [
            "",
            "m",
            "m q +1555",
            "m o nothex",
            "m z",
            "m k xyz",
            "m s +15550100:1",
            "m s +15550100:1:2:3",
            "m q +15550100 xyz",
            "m q +15550100 0 xyz",
            "m q +15550100 -1 00",
            "m m +15550100 0",
            &format!("m m +15550100 0 {} +15550199 0 1 2 !!", MessageId::random()),
            &format!("m q +15550100 {}", MessageId::random()),
        ] {
            assert_eq!(Event::decode(bad), None, "{bad}");
        }
    }
}
