//! Who is online: our users' sessions joining and leaving, the reports we
//! announce to the neighbourhood and take from it, and `list`, which joins
//! the directory with both.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::registry::SessionLink;
use super::{FUTURE_LIMIT_MS, RouteError, Router, link_frame};
use crate::crypto::v2::PublicPoint;
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::link::LinkMessage;
use crate::protocol::{ListedUser, Outbox};

/// How often a server re-announces who is connected to it.
const PRESENCE_REFRESH: Duration = Duration::from_secs(30);
/// Delay that gathers a burst of logins and logouts into one announcement.
const PRESENCE_DEBOUNCE: Duration = Duration::from_millis(100);

/// Which sessions count against the most one user may have.
#[derive(Clone, Copy)]
enum Room {
    /// Those under the key logging in, here and on the other members.
    Cluster,
    /// Only those here under the key logging in: it replaces the account's
    /// key, so every session on the other members is under the old key and
    /// closes as soon as that member reads the new entry.
    NewKey,
}

impl Router {
    /// A session just logged in as `phone` (as its `device`, 0 for the
    /// account key) with a proof under the account key `account` (a
    /// fingerprint, hex): it receives pushes from now on and the
    /// neighbourhood hears of it soon. Keep the link for
    /// [`Router::session_left`]. Refused when `phone` has the most sessions
    /// allowed already under `account`, counting those on the other
    /// members too unless `account` just replaced the account's key (see
    /// [`Router::session_room`]).
    pub fn session_joined(
        &self,
        phone: PhoneNumber,
        device: u32,
        account: String,
        outbox: Outbox,
    ) -> Result<SessionLink, RouteError> {
        self.join_session(phone, device, account, outbox, Room::Cluster)
    }

    /// [`Router::session_joined`] for the registration whose key `account`
    /// just replaced the account's old one: sessions on the other members
    /// are all under the old key and do not count.
    pub fn new_key_session_joined(
        &self,
        phone: PhoneNumber,
        account: String,
        outbox: Outbox,
    ) -> Result<SessionLink, RouteError> {
        self.join_session(phone, 0, account, outbox, Room::NewKey)
    }

    fn join_session(
        &self,
        phone: PhoneNumber,
        device: u32,
        account: String,
        outbox: Outbox,
        room: Room,
    ) -> Result<SessionLink, RouteError> {
        let max = self.limits().sessions_per_user;
        self.room_under(&phone, &account, room)?;
        let link = self
            .registry
            .join(phone.clone(), device, account, outbox)
            .ok_or(RouteError::TooManySessions { phone, max })?;
        self.presence_changed.notify_one();
        Ok(link)
    }

    /// Whether what a session that just joined proved is still true: its
    /// account key is still the account's, and its device (with
    /// `device_key`) still listed. A login is proved against the key read
    /// before its proof was checked; a key replaced or a device removed
    /// meanwhile closed the sessions joined by then, and this catches the
    /// ones that join after.
    pub async fn login_holds(
        &self,
        link: &SessionLink,
        device_key: Option<&PublicPoint>,
    ) -> Result<bool, RouteError> {
        let phone = link.phone();
        let account_holds = self
            .user(phone)
            .await
            .is_some_and(|u| u.via.is_none() && u.info.fingerprint == link.account());
        if !account_holds {
            return Ok(false);
        }
        match device_key {
            None => Ok(true),
            Some(key) => Ok(self.device_key(phone, link.device()).await?.as_ref() == Some(key)),
        }
    }

    /// Closes the sessions of `phone` logged in under an account key that
    /// is no longer its registered one (a new registration replaced it),
    /// after the new key is in the directory; all of them when the entry
    /// says `phone` is now at home on another server.
    pub fn close_replaced(&self, phone: &PhoneNumber) {
        match self.directory.get(phone) {
            Some(entry) if entry.via.is_none() => {
                self.registry.close_replaced(phone, &entry.info.fingerprint);
            }
            Some(entry) => self.registry.close_moved(phone, &entry.home_name),
            None => {}
        }
    }

    /// Whether `phone` may log in one more session under the account key
    /// `account` (a fingerprint, hex) now: its sessions here under that key
    /// and, in a cluster, its sessions on the other members (as their last
    /// presence said, which names no key: a login on another member in the
    /// last fraction of a second may not be counted yet). Sessions under
    /// another key are closing or about to: a new registration replaces
    /// that key, so they must not keep it out; and while `account` is not
    /// the account's key yet, every session on the other members is under
    /// another.
    pub fn session_room(&self, phone: &PhoneNumber, account: &str) -> Result<(), RouteError> {
        let current = self
            .directory
            .get(phone)
            .is_some_and(|e| e.via.is_none() && e.info.fingerprint == account);
        let room = if current { Room::Cluster } else { Room::NewKey };
        self.room_under(phone, account, room)
    }

    fn room_under(&self, phone: &PhoneNumber, account: &str, room: Room) -> Result<(), RouteError> {
        let max = self.limits().sessions_per_user;
        let elsewhere = match room {
            Room::Cluster => self.elsewhere.sessions_of(phone.as_str()),
            Room::NewKey => 0,
        };
        let sessions = self.registry.sessions_under(phone, account) + elsewhere;
        if sessions < max {
            return Ok(());
        }
        Err(RouteError::TooManySessions {
            phone: phone.clone(),
            max,
        })
    }

    /// A logged-in session ended.
    pub fn session_left(&self, link: &SessionLink) {
        self.registry.leave(link);
        self.presence_changed.notify_one();
    }

    /// A presence report from the neighbourhood; floods it on if it is news.
    pub fn presence_in(&self, from: Fingerprint, origin: String, seq: u64, online: Vec<String>) {
        self.take_presence(Some(from), origin, seq, online, true);
    }

    /// [`Router::presence_in`]; `tell_members` unless another member of the
    /// cluster passed it here. Only the phones our directory says are homed
    /// at `origin` are kept and passed on, and a report from an origin that
    /// is home to nobody in it is dropped: what a neighbour can make every
    /// server hold is then bounded by the directory, not by what it sends.
    /// A member passing a report on has filtered it already; this member
    /// filters it again with its own copy of the directory, which is the
    /// same table. A user whose entry has not reached this server yet is
    /// left out until the origin's next report (within 30 s).
    pub(super) fn take_presence(
        &self,
        from: Option<Fingerprint>,
        origin: String,
        seq: u64,
        online: Vec<String>,
        tell_members: bool,
    ) {
        let Some(origin_fp) = Fingerprint::parse(&origin) else {
            return;
        };
        // Sequence numbers are the origin's clock in milliseconds; one far in
        // the future would freeze that server's presence until restart.
        if seq > (self.clock.now_ms() + FUTURE_LIMIT_MS).max(0) as u64 {
            return;
        }
        if origin_fp == self.me.fingerprint {
            return;
        }
        let Some(online) = self.directory.homed_at(&origin_fp, online) else {
            return;
        };
        if !self.neighbours.presence_in(origin_fp, seq, online.clone()) {
            return;
        }
        if tell_members {
            self.tell_members_presence(&origin, seq, &online);
        }
        let frame = link_frame(&LinkMessage::Presence {
            origin,
            seq,
            online,
        });
        self.neighbours.send_all_except(from, &frame);
    }

    /// Presence frames for a neighbour that just linked: ours and every
    /// recent one we know.
    pub fn presence_frames(&self) -> Vec<Vec<u8>> {
        let mut frames = vec![self.own_presence_frame()];
        for (origin, seq, online) in self.neighbours.presence_reports() {
            frames.push(link_frame(&LinkMessage::Presence {
                origin: origin.to_hex(),
                seq,
                online,
            }));
        }
        frames
    }

    /// Users of the neighbourhood with their home and presence: at most
    /// `limit` whose phone sorts after `after`, in phone order, and whether
    /// more follow.
    pub fn list(&self, after: Option<&PhoneNumber>, limit: usize) -> (Vec<ListedUser>, bool) {
        let (entries, more) = self.directory.page(after, limit);
        let users = entries
            .iter()
            .map(|e| {
                let online = match e.via {
                    None => {
                        self.registry.is_connected(&e.phone)
                            || self.elsewhere.contains(e.phone.as_str())
                    }
                    Some(_) => self.neighbours.is_online_at(&e.home, e.phone.as_str()),
                };
                ListedUser {
                    phone: e.info.phone.clone(),
                    fingerprint: e.info.fingerprint.clone(),
                    home: e.home_name.clone(),
                    home_fingerprint: e.home.to_hex(),
                    online,
                }
            })
            .collect();
        (users, more)
    }

    /// Our clock in milliseconds, or one more than the last report if that
    /// is later: strictly increasing, and comparable across restarts.
    fn next_presence_seq(&self) -> u64 {
        let now = self.clock.now_ms().max(0) as u64;
        let step = |prev: u64| Some(prev.max(now) + 1);
        let prev = self
            .presence_seq
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, step);
        prev.map_or(now + 1, |p| p.max(now) + 1)
    }

    /// Our users connected to any member of the cluster.
    fn own_presence_frame(&self) -> Vec<u8> {
        let mut online = self.registry.online();
        online.extend(self.elsewhere.all());
        online.sort();
        online.dedup();
        link_frame(&LinkMessage::Presence {
            origin: self.me.fingerprint.to_hex(),
            seq: self.next_presence_seq(),
            online,
        })
    }

    /// Records who is connected here for the other members, and reads who
    /// is connected to them.
    async fn share_presence(&self) {
        if !self.store.is_shared() {
            return;
        }
        let shared = match self
            .store
            .publish_presence(&self.registry.online_sessions(), self.clock.now_ms())
            .await
        {
            Ok(()) => self.refresh_elsewhere().await,
            Err(e) => Err(e),
        };
        if let Err(e) = shared {
            tracing::warn!(error = %e, "could not share presence with the other members");
        }
    }
}

/// Announces who is connected here: soon after a change, and periodically
/// so neighbours can tell a silent server from an empty one (and the other
/// members of a cluster, a live member from a dead one).
pub(super) async fn announce(router: Weak<Router>, changed: Arc<Notify>) {
    let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
    loop {
        // Holds no reference to the router while it waits, so a shutdown
        // need not wait for the next refresh.
        let was_change = tokio::select! {
            _ = refresh.tick() => false,
            _ = changed.notified() => true,
        };
        if was_change {
            tokio::time::sleep(PRESENCE_DEBOUNCE).await;
        }
        let Some(router) = router.upgrade() else {
            return;
        };
        router.share_presence().await;
        router
            .neighbours
            .send_all_except(None, &router.own_presence_frame());
    }
}
