//! Envelope sealing and opening, P-256 → P-256 and RSA-3072 → RSA-3072, with
//! 256-byte texts. `cargo bench --bench crypto`.

use std::hint::black_box;

use carrier::crypto::{self, Identity, Outgoing};
use carrier::domain::{MessageId, PhoneNumber};
use carrier::protocol::KeyType;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn envelopes(c: &mut Criterion) {
    let text = "x".repeat(256);
    let alice_phone = PhoneNumber::parse("+12025550101").expect("a valid number");
    let bob_phone = PhoneNumber::parse("+12025550102").expect("a valid number");
    for (key_type, name) in [(KeyType::P256, "p256"), (KeyType::Rsa, "rsa3072")] {
        let alice = Identity::generate(key_type);
        let bob = Identity::generate(key_type);
        let (alice_key, bob_key) = (alice.public_key(), bob.public_key());
        let msg = Outgoing {
            id: MessageId::random(),
            counter: 1,
            sent_at_ms: 1_700_000_000_000,
            sender_phone: &alice_phone,
            recipient_phone: &bob_phone,
            text: &text,
        };
        let sealed = crypto::seal(&alice, &bob_key, &msg).expect("seals");
        let mut group = c.benchmark_group(format!("envelope/{name}"));
        group.throughput(Throughput::Elements(1));
        if key_type == KeyType::Rsa {
            group.sample_size(20);
        }
        group.bench_function("seal", |b| {
            b.iter(|| crypto::seal(&alice, &bob_key, black_box(&msg)).expect("seals"))
        });
        group.bench_function("open", |b| {
            b.iter(|| {
                crypto::open(&bob, &bob_phone, &alice_key, black_box(&sealed)).expect("opens")
            })
        });
        group.finish();
    }
}

criterion_group!(benches, envelopes);
criterion_main!(benches);
