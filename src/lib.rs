//! Carrier: a store-and-forward messaging server and its client.
pub mod crypto;
pub mod domain;
pub mod protocol;
pub mod tls;
pub mod auth;
pub mod clock;
pub mod config;
pub mod db;
pub mod routing;
pub mod server;
pub mod client;
pub mod frame_writer;
pub mod link;
pub mod bench;
