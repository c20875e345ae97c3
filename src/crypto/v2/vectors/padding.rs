//! The padded sizes (`tests/vectors/v2_padding.json`, docs/PROTOCOL.md §13):
//! payload lengths around 256, every octave edge and the last size, with the
//! size each is padded to, and every size a receiver accepts. The test also
//! compares them with the sizes §13 lists, written out here by hand rather
//! than with Padmé's formula, so an implementation in another language can
//! check its size function against this file alone.

use serde_json::{Value, json};

use super::{assert_same, read, write};
use crate::crypto::v2::{MAX_PADDED, is_padded_size, padded_size};

const FILE: &str = "tests/vectors/v2_padding.json";

fn inputs() -> Value {
    let mut lengths = vec![
        0, 1, 255, 256, 257, 258, 271, 272, 273, 287, 288, 289, 496, 497,
    ];
    for e in 9..=16 {
        let edge = 1usize << e;
        lengths.extend([edge - 1, edge, edge + 1]);
        if e < 16 {
            let step = edge / 16;
            lengths.extend([
                edge + step,
                edge + step + 1,
                2 * edge - step,
                2 * edge - step + 1,
            ]);
        }
    }
    // The largest text (13 + 65 536) and the largest sync copy (13 + 1 + 16
    // + 16 + 65 536), then the last size and one past it.
    lengths.extend([65_549, 65_582, MAX_PADDED - 1, MAX_PADDED, MAX_PADDED + 1]);
    lengths.sort_unstable();
    lengths.dedup();
    json!({ "payload_lengths": lengths })
}

fn outputs(v: &Value) -> Value {
    let sizes: Vec<(u64, Option<usize>)> = v["payload_lengths"]
        .as_array()
        .expect("payload_lengths")
        .iter()
        .map(|n| {
            let n = n.as_u64().expect("a length");
            (n, padded_size(n as usize))
        })
        .collect();
    let valid: Vec<usize> = (0..=MAX_PADDED + 1)
        .filter(|&s| is_padded_size(s))
        .collect();
    json!({ "padded_sizes": sizes, "valid_sizes": valid })
}

/// The sizes of §13 as listed there: 16 evenly spaced sizes per octave from
/// 256 to 65 536, then 65 536 and 66 048.
fn listed() -> Vec<usize> {
    let mut sizes = Vec::new();
    for e in 8..16 {
        sizes.extend((0..16).map(|k| (1usize << e) + k * (1 << (e - 4))));
    }
    sizes.extend([65_536, 66_048]);
    sizes
}

#[test]
fn padding_vector() {
    let file = read(FILE);
    let computed = outputs(&file["inputs"]);
    assert_same("padding", &computed, &file["outputs"]);
    assert_eq!(computed["valid_sizes"], json!(listed()));
    for pair in computed["padded_sizes"].as_array().unwrap() {
        let n = pair[0].as_u64().unwrap() as usize;
        let by_hand = listed().into_iter().find(|&s| s >= n);
        assert_eq!(pair[1], json!(by_hand), "{n} bytes");
    }
}

pub(super) fn regenerate() {
    let v = inputs();
    let description = "Carrier v2 padded payload sizes (docs/PROTOCOL.md §13): each payload length \
        (13 + body length) with the size it is padded to (null: too long), and every size a \
        receiver accepts.";
    write(
        FILE,
        &json!({"description": description, "inputs": v, "outputs": outputs(&v)}),
    );
}
