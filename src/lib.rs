//! Carrier: a store-and-forward messaging server and its client.
pub mod domain;
pub mod protocol;
