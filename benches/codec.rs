//! The wire codec: frames written to and read from memory, and the JSON of
//! the hot requests and responses (`send`, `accepted`, a `fetch` batch),
//! and what the server does with a v2 envelope (`device_send`).
//! `cargo bench --bench codec`.

use std::hint::black_box;

use carrier::crypto::{self, Identity, Outgoing};
use carrier::domain::{MessageId, PhoneNumber};
use carrier::protocol::{
    self, B64, Delivered, KeyType, Request, RequestFrame, Response, ResponseFrame,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::executor::block_on;

/// A real sealed envelope of a 256-byte text.
fn envelope() -> (MessageId, String, Vec<u8>) {
    let alice = Identity::generate(KeyType::P256);
    let bob = Identity::generate(KeyType::P256);
    let from = PhoneNumber::parse("+12025550101").expect("a valid number");
    let to = PhoneNumber::parse("+12025550102").expect("a valid number");
    let id = MessageId::random();
    let text = "x".repeat(256);
    let msg = Outgoing {
        id,
        counter: 1,
        sent_at_ms: 1_700_000_000_000,
        sender_phone: &from,
        recipient_phone: &to,
        text: &text,
    };
    let sealed = crypto::seal(&alice, &bob.public_key(), &msg).expect("seals");
    (id, to.to_string(), sealed)
}

fn frames(c: &mut Criterion) {
    let (id, to, env) = envelope();
    let body = serde_json::to_vec(&RequestFrame {
        seq: Some(42),
        request: Request::Send {
            id,
            to,
            envelope: B64(env),
        },
    })
    .expect("serialises");
    let mut framed = Vec::new();
    block_on(protocol::write_frame(&mut framed, &body)).expect("writes");

    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Bytes(framed.len() as u64));
    group.bench_function("write send frame", |b| {
        let mut out = Vec::with_capacity(framed.len());
        b.iter(|| {
            out.clear();
            block_on(protocol::write_frame(&mut out, black_box(&body))).expect("writes");
        })
    });
    group.bench_function("read send frame", |b| {
        b.iter(|| {
            let mut input: &[u8] = black_box(&framed);
            block_on(protocol::read_frame(
                &mut input,
                protocol::MAX_REQUEST_FRAME,
            ))
            .expect("reads")
            .expect("a frame")
        })
    });
    group.finish();
}

fn json(c: &mut Criterion) {
    let (id, to, env) = envelope();
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Elements(1));

    let send = RequestFrame {
        seq: Some(42),
        request: Request::Send {
            id,
            to: to.clone(),
            envelope: B64(env.clone()),
        },
    };
    let send_bytes = serde_json::to_vec(&send).expect("serialises");
    group.bench_function("encode send", |b| {
        b.iter(|| serde_json::to_vec(black_box(&send)).expect("serialises"))
    });
    group.bench_function("decode send", |b| {
        b.iter(|| serde_json::from_slice::<RequestFrame>(black_box(&send_bytes)).expect("parses"))
    });

    let accepted = ResponseFrame {
        re: Some(42),
        response: Response::Accepted { id },
    };
    let accepted_bytes = serde_json::to_vec(&accepted).expect("serialises");
    group.bench_function("encode accepted", |b| {
        b.iter(|| serde_json::to_vec(black_box(&accepted)).expect("serialises"))
    });
    group.bench_function("decode accepted", |b| {
        b.iter(|| {
            serde_json::from_slice::<ResponseFrame>(black_box(&accepted_bytes)).expect("parses")
        })
    });

    let batch = fetch_batch(&env, None);
    let batch_bytes = serde_json::to_vec(&batch).expect("serialises");
    group.throughput(Throughput::Elements(100));
    group.bench_function("encode fetch batch of 100", |b| {
        b.iter(|| serde_json::to_vec(black_box(&batch)).expect("serialises"))
    });
    group.bench_function("decode fetch batch of 100", |b| {
        b.iter(|| serde_json::from_slice::<ResponseFrame>(black_box(&batch_bytes)).expect("parses"))
    });
    group.finish();
}

/// A running session's kind-2 envelope of a 256-byte text (497 bytes).
/// A `fetch` answer of 100 copies of `env`, from senders' `device`.
fn fetch_batch(env: &[u8], device: Option<u32>) -> ResponseFrame {
    ResponseFrame {
        re: Some(7),
        response: Response::Messages {
            messages: (0..100)
                .map(|_| Delivered {
                    id: MessageId::random(),
                    from: "+12025550101".into(),
                    envelope: B64(env.to_vec()),
                    received_at: 1_700_000_000_000,
                    device,
                })
                .collect(),
            more: true,
            cursor: Some(100),
        },
    }
}

fn v2_envelope() -> (MessageId, String, Vec<u8>) {
    use carrier::bench::envelopes::running_session;
    use carrier::bench::users::{PhoneGen, User};
    use carrier::crypto::v2::Content;
    let phones = PhoneGen::new(0).take(2);
    let alice = User::generate(phones[0].clone(), KeyType::P256);
    let bob = User::generate(phones[1].clone(), KeyType::P256);
    let text = "x".repeat(256);
    let now = 1_700_000_000_000;
    let mut session = running_session(&alice, &bob, &text, now).expect("a session");
    let id = MessageId::random();
    let sealed = session
        .seal(&alice.device.local, id, &Content::Text(text), now)
        .expect("seals");
    (id, bob.phone.to_string(), sealed)
}

/// What the server does with a v2 envelope's bytes: decode the
/// `device_send` request, read the clear header (against the full parse a
/// client makes), and encode a `fetch` batch.
fn device_send(c: &mut Criterion) {
    use carrier::crypto::v2::{ClearHeader, Envelope};
    let (id, to, env) = v2_envelope();
    let mut group = c.benchmark_group("v2");
    group.throughput(Throughput::Elements(1));
    let request = serde_json::to_vec(&RequestFrame {
        seq: Some(42),
        request: Request::DeviceSend {
            id,
            to,
            device: 1,
            list_version: 1,
            envelope: B64(env.clone()),
        },
    })
    .expect("serialises");
    group.bench_function("decode device_send", |b| {
        b.iter(|| serde_json::from_slice::<RequestFrame>(black_box(&request)).expect("parses"))
    });
    group.bench_function("full envelope parse", |b| {
        b.iter(|| Envelope::parse(black_box(&env)).expect("parses"))
    });
    group.bench_function("clear header read", |b| {
        b.iter(|| ClearHeader::read(black_box(&env)).expect("parses"))
    });
    let batch = fetch_batch(&env, Some(1));
    group.throughput(Throughput::Elements(100));
    group.bench_function("encode v2 fetch batch of 100", |b| {
        b.iter(|| serde_json::to_vec(black_box(&batch)).expect("serialises"))
    });
    group.finish();
}

criterion_group!(benches, frames, json, device_send);
criterion_main!(benches);
