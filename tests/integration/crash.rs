//! Durability: the real binary is killed with SIGKILL while pipelined sends
//! are in flight; every send it acknowledged is there after a restart.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use carrier::domain::MessageId;
use carrier::protocol::{KeyType, Request, Response};

use crate::common::*;
use crate::process::ServerFiles;

const N: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9() {
    let files = ServerFiles::new();
    let mut server = files.start();
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;

    let a = alice.client.login().await.expect("Alice logs in");
    let mut envelopes: Vec<(MessageId, String, Request)> = Vec::new();
    for n in 1..=N {
        let text = format!("message {n}");
        let (id, send) = sealed_for(&a, BOB, &text).await;
        envelopes.push((id, text, send));
    }
    let sent: HashMap<MessageId, String> = envelopes
        .iter()
        .map(|(id, text, _)| (*id, text.clone()))
        .collect();

    let conn = &a.conn;
    // First half: pipelined, and every one acknowledged.
    let mut envelopes = envelopes.into_iter();
    let mut first_half = Vec::new();
    for (id, _, envelope) in envelopes.by_ref().take(N as usize / 2) {
        first_half.push((id, conn.start(envelope).await.expect("written")));
    }
    let mut accepted = HashSet::new();
    for (id, answer) in first_half {
        match within("an answer", answer).await {
            Ok(Response::Accepted { id: got }) if got == id => accepted.insert(id),
            other => panic!("a send before the crash was answered {other:?}"),
        };
    }

    // Second half: pipelined; the server is killed at the first answer,
    // with the rest still on their way.
    let killed = Cell::new(false);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pipeline = async {
        for (id, _, envelope) in envelopes {
            if killed.get() {
                break;
            }
            match conn.start(envelope).await {
                Ok(answer) => tx.send((id, answer)).expect("the collector is listening"),
                Err(_) => break,
            }
        }
        drop(tx);
    };
    let collect = async {
        while let Some((id, answer)) = rx.recv().await {
            match within("an answer or a closed connection", answer).await {
                Ok(Response::Accepted { id: got }) => {
                    assert_eq!(got, id);
                    accepted.insert(id);
                }
                Ok(other) => panic!("a send was answered {other:?}"),
                Err(_) => {} // the connection died first: unknown fate
            }
            if !killed.get() {
                killed.set(true);
                server.kill_9();
            }
        }
    };
    tokio::join!(pipeline, collect);
    assert!(killed.get(), "the server was never killed");
    eprintln!("{} of {N} sends accepted before SIGKILL", accepted.len());
    drop(a);

    let server = files.start();
    let bob_client = bob.client_for(&server).await;
    let mut b = bob_client
        .login()
        .await
        .expect("Bob logs in after the restart");
    let (got, refused) = within("fetch after the restart", b.fetch())
        .await
        .expect("fetch");
    assert!(refused.is_empty(), "{refused:?}");
    let got_ids: HashSet<MessageId> = got.iter().map(|m| m.id).collect();
    assert_eq!(got_ids.len(), got.len(), "a message was delivered twice");
    let lost: Vec<&MessageId> = accepted.difference(&got_ids).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost in the crash: {lost:?}",
        lost.len()
    );
    eprintln!("{} of {N} messages present after the restart", got.len());
    for m in &got {
        assert_eq!(
            Some(&m.text),
            sent.get(&m.id),
            "message {} arrived altered or was never sent",
            m.id
        );
    }
    b.close().await;
}
