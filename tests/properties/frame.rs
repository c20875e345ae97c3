//! The frame codec: a 4-byte big-endian length, then the body.

use carrier::protocol::{FrameError, read_frame, write_frame};
use futures::executor::block_on;
use proptest::prelude::*;

/// Reads frames until the stream ends or a frame is refused.
fn read_all(mut stream: &[u8], max: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut frames = Vec::new();
    loop {
        match block_on(read_frame(&mut stream, max)) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

proptest! {
    #[test]
    fn frames_round_trip(bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..600), 0..8)) {
        let mut stream = Vec::new();
        for body in &bodies {
            block_on(write_frame(&mut stream, body)).unwrap();
        }
        prop_assert_eq!(stream.len(), bodies.iter().map(|b| 4 + b.len()).sum::<usize>());
        let (frames, err) = read_all(&stream, 600);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(frames, bodies);
    }

    #[test]
    fn reading_arbitrary_bytes_never_panics_and_respects_the_limit(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        max in 0usize..1024,
    ) {
        let (frames, _) = read_all(&bytes, max);
        let consumed: usize = frames.iter().map(|f| 4 + f.len()).sum();
        prop_assert!(consumed <= bytes.len());
        for f in &frames {
            prop_assert!(!f.is_empty() && f.len() <= max, "frame of {} bytes, max {}", f.len(), max);
        }
    }

    #[test]
    fn a_cut_stream_is_truncated_not_a_frame(body in prop::collection::vec(any::<u8>(), 1..300), cut in 1usize..303) {
        let mut stream = Vec::new();
        block_on(write_frame(&mut stream, &body)).unwrap();
        let cut = cut.min(stream.len() - 1);
        let (frames, err) = read_all(&stream[..cut], 1024);
        prop_assert!(frames.is_empty());
        prop_assert!(matches!(err, Some(FrameError::Truncated)), "{:?}", err);
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading_the_body(len in 1025u32.., tail in prop::collection::vec(any::<u8>(), 0..16)) {
        let stream = [&len.to_be_bytes()[..], &tail].concat();
        let (frames, err) = read_all(&stream, 1024);
        prop_assert!(frames.is_empty());
        let refused = matches!(err, Some(FrameError::TooLarge { len: l, max: 1024 }) if l == len as usize);
        prop_assert!(refused, "{:?}", err);
    }
}
