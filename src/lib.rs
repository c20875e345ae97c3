//! Carrier: a store-and-forward messaging server and its client.
pub mod auth;
pub mod bench;
pub mod client;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod frame_writer;
pub mod link;
pub mod protocol;
pub mod routing;
pub mod server;
pub mod tls;
