//! `carrier chat` as the client library runs it: commands typed in, answers
//! and messages printed while the session runs.

use std::io::Write;

use carrier::client;
use carrier::protocol::KeyType;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::common::*;

/// A `Write` that hands each complete line to a channel, so the test can
/// wait for what chat prints while it still runs.
struct LineSink {
    partial: Vec<u8>,
    lines: mpsc::UnboundedSender<String>,
}

impl Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let _ = self
                .lines
                .send(String::from_utf8_lossy(&line[..end]).into_owned());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sink() -> (LineSink, mpsc::UnboundedReceiver<String>) {
    let (lines, rx) = mpsc::unbounded_channel();
    let sink = LineSink {
        partial: Vec::new(),
        lines,
    };
    (sink, rx)
}

async fn next_line(lines: &mut mpsc::UnboundedReceiver<String>, what: &str) -> String {
    within(what, lines.recv())
        .await
        .unwrap_or_else(|| panic!("{what}: chat ended first"))
}

/// `[YYYY-MM-DD HH:MM:SS UTC] rest`: the rest, once the time's shape is checked.
fn after_time(line: &str) -> &str {
    let (time, rest) = line
        .strip_prefix('[')
        .and_then(|l| l.split_once("] "))
        .unwrap_or_else(|| panic!("no time in {line:?}"));
    assert!(
        time.len() == 23 && time.ends_with(" UTC") && time.as_bytes()[10] == b' ',
        "{line:?}"
    );
    rest
}

#[tokio::test]
async fn chat_shows_waiting_and_pushed_messages_and_runs_commands() {
    let server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let mut bob_session = bob.client.login().await.expect("Bob logs in");
    bob_session.send(ALICE, "waiting").await.expect("sent");

    let (mut keyboard, input) = tokio::io::duplex(4096);
    let (out, mut out_lines) = sink();
    let (err, mut err_lines) = sink();
    let chat = client::chat(&alice.client, BufReader::new(input), out, err);
    let script = async {
        assert_eq!(
            next_line(&mut out_lines, "greeting").await,
            format!(
                "Logged in as {ALICE}. Commands: send <phone> <text> | broadcast <text> | fetch | list | quit"
            )
        );
        let waiting = next_line(&mut out_lines, "the waiting message").await;
        assert_eq!(after_time(&waiting), format!("{BOB}: waiting"));

        bob_session.send(ALICE, "live").await.expect("sent");
        let live = next_line(&mut out_lines, "the pushed message").await;
        assert_eq!(after_time(&live), format!("{BOB}: live"));

        bob_session
            .broadcast("to everyone")
            .await
            .expect("broadcast");
        let broadcast = next_line(&mut out_lines, "the broadcast").await;
        assert_eq!(
            after_time(&broadcast),
            format!("(broadcast) {BOB}: to everyone")
        );

        keyboard
            .write_all(format!("send {BOB} hi bob\n").as_bytes())
            .await
            .unwrap();
        let sent = next_line(&mut out_lines, "send").await;
        assert!(
            sent.starts_with("Sent message ") && sent.ends_with(&format!(" to {BOB}")),
            "{sent:?}"
        );

        keyboard.write_all(b"list\n").await.unwrap();
        let mut listed = [
            next_line(&mut out_lines, "list").await,
            next_line(&mut out_lines, "list").await,
        ];
        listed.sort();
        for (line, user) in listed.iter().zip([&alice, &bob]) {
            // phone  fingerprint  home server  online|offline
            let fields: Vec<&str> = line.split("  ").collect();
            assert_eq!(fields.len(), 4, "{line:?}");
            assert_eq!(
                [fields[0], fields[1], fields[3]],
                [user.phone.as_str(), user.fingerprint.as_str(), "online"],
                "{line:?}"
            );
        }

        keyboard.write_all(b"frobnicate\nsend\n").await.unwrap();
        assert_eq!(
            next_line(&mut err_lines, "an unknown command").await,
            "error: unknown command 'frobnicate': send, broadcast, fetch, list or quit"
        );
        assert_eq!(
            next_line(&mut err_lines, "send without text").await,
            "error: usage: send <phone> <text>"
        );

        keyboard.write_all(b"fetch\nquit\n").await.unwrap();
        assert_eq!(next_line(&mut out_lines, "fetch").await, "No new messages.");
        [waiting, live]
    };
    let (ended, shown) = within("the chat session", async { tokio::join!(chat, script) }).await;
    ended.expect("chat ends cleanly at quit");

    // What chat showed is what the history holds, in its own words.
    let history = alice.client.home.history().await.unwrap();
    let received: Vec<String> = history
        .iter()
        .filter(|e| e.direction == client::Direction::In)
        .map(|e| format!("[{}] {BOB}: {}", carrier::clock::utc(e.sent_at), e.text))
        .collect();
    assert_eq!(received, shown);
    let (got, _) = bob_session.fetch().await.expect("Bob fetches");
    assert_eq!(
        got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["hi bob"]
    );
}
