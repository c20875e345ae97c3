//! The frame decoder on an arbitrary byte stream, with an arbitrary limit:
//! it never panics, never returns an empty frame or one over the limit, and
//! reads back exactly what the encoder wrote.
#![no_main]

use carrier::protocol::{read_frame, write_frame};
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((limit, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = usize::from(u16::from_be_bytes(*limit));
    let mut reader = stream;
    let mut consumed = 0;
    while let Ok(Some(frame)) = block_on(read_frame(&mut reader, max)) {
        assert!(!frame.is_empty() && frame.len() <= max);
        consumed += 4 + frame.len();
    }
    assert!(consumed <= stream.len());

    if !stream.is_empty() {
        let mut encoded = Vec::new();
        block_on(write_frame(&mut encoded, stream)).expect("writing to memory");
        let mut reader = &encoded[..];
        let back = block_on(read_frame(&mut reader, stream.len())).expect("reads back");
        assert_eq!(back.as_deref(), Some(stream));
    }
});
