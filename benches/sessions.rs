//! Protocol v2 seal and open rates, 256-byte texts: a new session (bundle
//! check, PQXDH with ML-KEM-768, first message; and on the other side
//! signature check, decapsulation, first message) and a running session
//! (one ratchet chain step). `cargo bench --bench sessions`.

use std::hint::black_box;

use carrier::crypto::Identity;
use carrier::crypto::v2::{
    ClaimedPrekeys, Content, DeviceCertificate, DeviceId, DeviceKey, DeviceList, Envelope,
    LocalDevice, PrekeyBundle, PrekeyKind, PrekeyStore, PublicPrekey, Session, VerifiedDevice,
    VerifiedDeviceList,
};
use carrier::domain::{MessageId, PhoneNumber};
use carrier::protocol::KeyType;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const NOW: u64 = 1_700_000_000_000;

/// One account with one device, as its contacts see it after lookup.
struct Device {
    local: LocalDevice,
    store: PrekeyStore,
    published: Vec<PublicPrekey>,
    certificate: DeviceCertificate,
    list: VerifiedDeviceList,
}

impl Device {
    fn new(phone: &str) -> Self {
        let account = Identity::generate(KeyType::P256);
        let phone = PhoneNumber::parse(phone).expect("a valid number");
        let (id, key) = (DeviceId::new(1).expect("non-zero"), DeviceKey::generate());
        let certificate =
            DeviceCertificate::issue(&account, &phone, id, &key.public(), "bench", NOW).unwrap();
        let list = DeviceList::issue(&account, &phone, 1, NOW, vec![(id, key.public())])
            .unwrap()
            .verify(&account.public_key(), &phone)
            .unwrap();
        let mut store = PrekeyStore::new();
        let published = store.maintain(&key, NOW);
        Self {
            local: LocalDevice::new(phone, id, key),
            store,
            published,
            certificate,
            list,
        }
    }

    fn seen(&self) -> VerifiedDevice {
        self.list.certify(&self.certificate).unwrap()
    }

    fn bundle(&self) -> PrekeyBundle {
        let (signed_prekey, kem_prekey) = self.store.current(self.local.key()).unwrap();
        PrekeyBundle {
            certificate: self.certificate.clone(),
            signed_prekey,
            kem_prekey,
        }
    }

    /// The n-th one-time prekeys, as a claim would hand them out.
    fn claim(&self, n: usize) -> ClaimedPrekeys {
        let of = |kind| {
            let all: Vec<_> = self.published.iter().filter(|p| p.kind == kind).collect();
            Some(all[n % all.len()].clone())
        };
        ClaimedPrekeys {
            device_id: self.local.device_id,
            one_time: of(PrekeyKind::OneTime),
            kem_one_time: of(PrekeyKind::KemOneTime),
        }
    }
}

fn first_message(alice: &Device, bob: &Device, n: usize, text: &Content) -> Vec<u8> {
    let bundle = bob.bundle().verify(&bob.list, NOW).unwrap();
    let bundle = bundle.with_claim(&bob.claim(n)).unwrap();
    let mut session = Session::initiate(&alice.local, &bundle, NOW);
    session
        .seal(&alice.local, MessageId::random(), text, NOW)
        .unwrap()
}

fn new_session(c: &mut Criterion) {
    let text = Content::Text("x".repeat(256));
    let (alice, bob) = (Device::new("+12025550101"), Device::new("+12025550102"));
    let alice_seen = alice.seen();
    let store_bytes = bob.store.to_bytes();
    let mut group = c.benchmark_group("v2/new_session");
    group.throughput(Throughput::Elements(1));
    let mut n = 0;
    group.bench_function("seal", |b| {
        b.iter(|| {
            n += 1;
            first_message(&alice, &bob, n, black_box(&text))
        })
    });
    let mut n = 0;
    group.bench_function("open", |b| {
        b.iter_batched(
            || {
                n += 1;
                let store = PrekeyStore::from_bytes(&store_bytes).unwrap();
                (store, first_message(&alice, &bob, n, &text))
            },
            |(mut store, bytes)| {
                let envelope = Envelope::parse(&bytes).unwrap();
                Session::accept(&bob.local, &mut store, &alice_seen, &envelope, NOW).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn running_session(c: &mut Criterion) {
    let text = Content::Text("x".repeat(256));
    let (alice, mut bob) = (Device::new("+12025550101"), Device::new("+12025550102"));
    let (alice_seen, bob_seen) = (alice.seen(), bob.seen());
    let bundle = bob.bundle().verify(&bob.list, NOW).unwrap();
    let mut a = Session::initiate(
        &alice.local,
        &bundle.with_claim(&bob.claim(0)).unwrap(),
        NOW,
    );
    let first = a
        .seal(&alice.local, MessageId::random(), &text, NOW)
        .unwrap();
    let envelope = Envelope::parse(&first).unwrap();
    let (mut b, _) =
        Session::accept(&bob.local, &mut bob.store, &alice_seen, &envelope, NOW).unwrap();
    let reply = b.seal(&bob.local, MessageId::random(), &text, NOW).unwrap();
    a.open(
        &alice.local,
        &bob_seen,
        &Envelope::parse(&reply).unwrap(),
        NOW,
    )
    .unwrap();

    let (mut sender, mut receiver) = (a.clone(), b.clone());
    let mut group = c.benchmark_group("v2/running_session");
    group.throughput(Throughput::Elements(1));
    group.bench_function("seal", |bench| {
        bench.iter(|| {
            a.seal(&alice.local, MessageId::random(), black_box(&text), NOW)
                .unwrap()
        })
    });
    group.bench_function("open", |bench| {
        bench.iter_batched(
            || {
                sender
                    .seal(&alice.local, MessageId::random(), &text, NOW)
                    .unwrap()
            },
            |bytes| {
                let envelope = Envelope::parse(&bytes).unwrap();
                receiver
                    .open(&bob.local, &alice_seen, &envelope, NOW)
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, new_session, running_session);
criterion_main!(benches);
