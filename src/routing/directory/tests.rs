//! The judging rule of [`super::Directory::judge`], and which phones a
//! presence report may name ([`super::Directory::homed_at`]), on made-up
//! entries.

use super::*;

/// Judging never checks a signature (the caller does, for what it
/// takes), so these entries carry made-up keys and signature bytes.
const USER_KEY: &[u8] = b"user key";
const HOME: &[u8] = b"home key";

/// A neighbour's fingerprint, for routes.
fn neighbour(n: u8) -> Fingerprint {
    Fingerprint::of_spki(&[n])
}

/// An entry at version `registered_at`, homed at [`HOME`] under `name`,
/// reached through `via` at `hops`.
fn entry(name: &str, registered_at: i64, via: u8, hops: u32) -> Entry {
    Entry {
        phone: PhoneNumber::from_canonical("+12025550101").unwrap(),
        info: UserInfo {
            phone: "+12025550101".into(),
            key_type: KeyType::P256,
            fingerprint: Fingerprint::of_spki(USER_KEY).to_hex(),
            public_key: B64(USER_KEY.to_vec()),
            registered_at,
            devices: None,
        },
        home: Fingerprint::of_spki(HOME),
        home_key: HOME.to_vec(),
        home_name: name.into(),
        signature: format!("signed by the home as {name}").into_bytes(),
        via: Some(neighbour(via)),
        hops,
    }
}

fn holding(current: &Entry) -> Directory {
    let users = HashMap::from([(current.phone.clone(), Arc::new(current.clone()))]);
    Directory::holding(users, HashMap::new())
}

/// The same statement from `via` at `hops`, under other signature bytes.
fn resigned(current: &Entry, via: u8, hops: u32) -> Entry {
    let mut copy = current.clone();
    copy.signature.iter_mut().for_each(|b| *b ^= 0x5a);
    copy.via = Some(neighbour(via));
    copy.hops = hops;
    copy
}

#[test]
fn other_signature_bytes_are_not_news() {
    let current = entry("home", 1_000, 1, 2);
    let directory = holding(&current);
    for (via, hops) in [(9, 6), (9, 2), (1, 2), (1, 7)] {
        let verdict = directory.judge(&resigned(&current, via, hops));
        assert!(
            matches!(verdict, Applied::Unchanged),
            "via {via} at {hops} hops: {verdict:?}"
        );
    }
}

#[test]
fn fewer_hops_reroute_and_keep_the_checked_signature() {
    let current = entry("home", 1_000, 1, 3);
    let verdict = holding(&current).judge(&resigned(&current, 9, 2));
    let Applied::Rerouted(ours) = verdict else {
        panic!("expected a reroute, got {verdict:?}");
    };
    assert_eq!((ours.via, ours.hops), (Some(neighbour(9)), 2));
    assert_eq!(ours.signature, current.signature);
    assert_eq!(signed_bytes(&ours), signed_bytes(&current));
}

#[test]
fn a_restatement_comes_from_our_route_or_a_shorter_one() {
    let current = entry("old name", 1_000, 1, 3);
    let directory = holding(&current);
    let restated = |via, hops| entry("new name", 1_000, via, hops);
    let cases = [
        ("our route, more hops", restated(1, 5), true),
        ("another neighbour, fewer hops", restated(9, 2), true),
        ("another neighbour, as many hops", restated(9, 3), false),
        ("another neighbour, more hops", restated(9, 6), false),
    ];
    for (case, candidate, taken) in cases {
        let verdict = directory.judge(&candidate);
        assert_eq!(
            matches!(verdict, Applied::Updated),
            taken,
            "{case}: {verdict:?}"
        );
    }
}

#[test]
fn versions_decide_before_routes() {
    let current = entry("home", 1_000, 1, 1);
    let directory = holding(&current);
    let newer = entry("home", 1_001, 9, 9);
    assert!(matches!(directory.judge(&newer), Applied::Updated));
    let older = entry("home", 999, 9, 0);
    assert!(matches!(directory.judge(&older), Applied::Unchanged));
    let own = Entry {
        via: None,
        hops: 0,
        ..current.clone()
    };
    let candidate = resigned(&current, 9, 0);
    assert!(matches!(
        holding(&own).judge(&candidate),
        Applied::Unchanged
    ));
}

#[test]
fn a_presence_report_keeps_only_phones_homed_at_its_origin() {
    let alice = entry("home", 1_000, 1, 1);
    let directory = holding(&alice);
    let home = Fingerprint::of_spki(HOME);
    let named = vec![
        "+12025550199".to_owned(),
        alice.info.phone.clone(),
        "not a phone".to_owned(),
        alice.info.phone.clone(),
    ];
    assert_eq!(
        directory.homed_at(&home, named.clone()),
        Some(vec![alice.info.phone.clone()]),
        "unknown phones and repeats are dropped"
    );
    assert_eq!(
        directory.homed_at(&home, Vec::new()),
        Some(Vec::new()),
        "a known home with nobody online"
    );
    assert_eq!(
        directory.homed_at(&neighbour(7), named),
        None,
        "a home of nobody in the directory"
    );
}
