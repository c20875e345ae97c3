//! Link codes' rendezvous as the members of a cluster share them
//! (`link_rendezvous`): the device that opened one may be connected to one
//! member and the new device to another. Rows hold only what passes
//! between them (sealed bytes the server cannot read) and who may use the
//! rendezvous; each change is followed by a notification to the other
//! members ([`super::cluster::Event::LinkRequested`],
//! [`super::cluster::Event::LinkAnswered`]), which carry only the id since
//! a sealed request may be larger than a notification. On SQLite a server
//! is alone, keeps its rendezvous in memory, and none of this is called.

use super::backend::Backend;
use super::cluster::Event;
use super::{DbError, Millis, Store};
use crate::domain::PhoneNumber;

/// What the opening device did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAnswer {
    /// Its sealed answer, for the new device.
    Linked(Vec<u8>),
    /// It refused the link.
    Refused,
}

impl Store {
    /// Records an opened rendezvous (forgetting expired ones on the way);
    /// false if the id is open already.
    pub async fn rendezvous_open(
        &self,
        id: &[u8],
        phone: &PhoneNumber,
        expires_at: Millis,
        now: Millis,
    ) -> Result<bool, DbError> {
        let Backend::Postgres(pool) = &self.pool else {
            return Ok(true);
        };
        let swept = sqlx::query("DELETE FROM link_rendezvous WHERE expires_at <= $1")
            .bind(now)
            .execute(pool)
            .await;
        self.wrote(swept)?;
        let opened = sqlx::query(
            "INSERT INTO link_rendezvous (id, phone, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(phone)
        .bind(expires_at)
        .execute(pool)
        .await;
        Ok(self.wrote(opened)?.rows_affected() == 1)
    }

    /// Stores a new device's sealed request in the rendezvous `id` of
    /// `phone` if it is open, unexpired and not yet asked, and tells the
    /// other members; returns when it expires, or `None` (nothing stored).
    pub async fn rendezvous_request(
        &self,
        id: &[u8],
        phone: &PhoneNumber,
        request: &[u8],
        now: Millis,
    ) -> Result<Option<Millis>, DbError> {
        let Backend::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let claimed: Result<Option<Millis>, _> = sqlx::query_scalar(
            "UPDATE link_rendezvous SET request = $3
             WHERE id = $1 AND phone = $2 AND expires_at > $4 AND request IS NULL
             RETURNING expires_at",
        )
        .bind(id)
        .bind(phone)
        .bind(request)
        .bind(now)
        .fetch_optional(pool)
        .await;
        let claimed = self.wrote(claimed)?;
        if claimed.is_some() {
            self.notify(&Event::LinkRequested(id.to_vec())).await?;
        }
        Ok(claimed)
    }

    /// The phone and the sealed request of rendezvous `id`, if a new
    /// device has asked through it.
    pub async fn rendezvous_asked(&self, id: &[u8]) -> Result<Option<(String, Vec<u8>)>, DbError> {
        let Backend::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let row: Result<Option<(String, Vec<u8>)>, _> = sqlx::query_as(
            "SELECT phone, request FROM link_rendezvous WHERE id = $1 AND request IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(pool)
        .await;
        self.read(row)
    }

    /// Records the opening device's answer to rendezvous `id` and tells
    /// the other members (the new device waits on one of them).
    pub async fn rendezvous_answer(&self, id: &[u8], answer: &LinkAnswer) -> Result<(), DbError> {
        let Backend::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let response = match answer {
            LinkAnswer::Linked(bytes) => Some(bytes.as_slice()),
            LinkAnswer::Refused => None,
        };
        let done =
            sqlx::query("UPDATE link_rendezvous SET answered = TRUE, response = $2 WHERE id = $1")
                .bind(id)
                .bind(response)
                .execute(pool)
                .await;
        self.wrote(done)?;
        self.notify(&Event::LinkAnswered(id.to_vec())).await
    }

    /// Takes the answer to rendezvous `id` and closes it, if it was
    /// answered.
    pub async fn rendezvous_take_answer(&self, id: &[u8]) -> Result<Option<LinkAnswer>, DbError> {
        let Backend::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let taken: Result<Option<Option<Vec<u8>>>, _> = sqlx::query_scalar(
            "DELETE FROM link_rendezvous WHERE id = $1 AND answered RETURNING response",
        )
        .bind(id)
        .fetch_optional(pool)
        .await;
        Ok(self.wrote(taken)?.map(|response| match response {
            Some(bytes) => LinkAnswer::Linked(bytes),
            None => LinkAnswer::Refused,
        }))
    }

    /// Closes rendezvous `id` (used up, or expired).
    pub async fn rendezvous_close(&self, id: &[u8]) -> Result<(), DbError> {
        let Backend::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let done = sqlx::query("DELETE FROM link_rendezvous WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await;
        self.wrote(done).map(drop)
    }
}
