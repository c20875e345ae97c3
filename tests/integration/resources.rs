//! What one client, user or address may take of a server, and what happens
//! past each limit: connections past the server's capacity are told
//! `server_busy` at once instead of waiting in the listen backlog.

use std::time::Duration;

use carrier::protocol::{self, ErrorCode, Request, RequestFrame, Response, ResponseFrame};
use carrier::tls::{self, ClientTlsStream, Pin};
use tokio::io::AsyncWriteExt;

use crate::common::within;
use crate::process::{ServerFiles, ServerProcess};

/// The next frame from the server, as a response; `None` once it closed.
async fn next_response(stream: &mut ClientTlsStream) -> Option<ResponseFrame> {
    let frame = within(
        "a frame from the server",
        protocol::read_frame(stream, protocol::MAX_RESPONSE_FRAME),
    )
    .await
    .expect("the connection reads cleanly")?;
    Some(serde_json::from_slice(&frame).expect("a response frame"))
}

/// Whether a new connection is served: it answers `ping` with `pong`.
async fn served(server: &ServerProcess) -> bool {
    let (mut stream, _) = tls::connect(&server.addr, Pin::Expect(server.fingerprint))
        .await
        .expect("the handshake completes");
    let ping = RequestFrame {
        seq: Some(1),
        request: Request::Ping,
    };
    protocol::write_frame(&mut stream, &serde_json::to_vec(&ping).unwrap())
        .await
        .unwrap();
    stream.flush().await.unwrap();
    matches!(
        next_response(&mut stream).await,
        Some(ResponseFrame {
            response: Response::Pong,
            ..
        })
    )
}

#[tokio::test]
async fn connections_past_the_open_file_limit_are_turned_away_at_once() {
    // The server keeps 128 descriptors for itself and takes as many
    // connections as the rest allow.
    const OPEN_FILES: u64 = 160;
    let slots = (OPEN_FILES - 128) as usize;
    let files = ServerFiles::new();
    let server = files.start_with_open_file_limit(OPEN_FILES);
    let pin = Pin::Expect(server.fingerprint);
    let mut held = Vec::new();
    for _ in 0..slots {
        // A completed handshake holds a slot: the server takes it on accept.
        let (stream, _) = tls::connect(&server.addr, pin).await.expect("served");
        held.push(stream);
    }
    let turned_away = 8;
    for i in 0..turned_away {
        let (mut stream, _) = tls::connect(&server.addr, pin)
            .await
            .unwrap_or_else(|e| panic!("connection {i} past the limit: {e}"));
        match next_response(&mut stream).await {
            Some(ResponseFrame {
                re: None,
                response: Response::Error { code, .. },
            }) => assert_eq!(code, ErrorCode::ServerBusy, "connection {i}"),
            other => panic!("connection {i} past the limit got {other:?}"),
        }
        assert!(next_response(&mut stream).await.is_none(), "then closed");
    }
    let warnings = files
        .log_text()
        .matches("every connection slot is taken")
        .count();
    assert!(
        (1..turned_away).contains(&warnings),
        "{warnings} warnings for {turned_away} connections turned away"
    );

    // A slot set free serves again.
    drop(held.pop());
    within("a freed slot serves a new connection", async {
        while !served(&server).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
