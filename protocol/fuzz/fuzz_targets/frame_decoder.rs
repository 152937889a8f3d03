//! Feeds arbitrary bytes, cut into arbitrary reads with arbitrary fd batches,
//! to the frame decoder and the typed layer. Whatever the input: no panic,
//! no unbounded allocation, and every fd handed out is one that was fed in.
//!
//! Run: `cd protocol/fuzz && cargo +nightly fuzz run frame_decoder`.

#![no_main]

use std::os::fd::OwnedFd;

use arbor_protocol::decoder::FrameDecoder;
use arbor_protocol::{Frame, Limits};
use libfuzzer_sys::fuzz_target;

fn devnull() -> OwnedFd {
    std::fs::File::open("/dev/null").expect("/dev/null").into()
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks limits small enough that the fuzzer reaches them.
    let Some((&knobs, mut rest)) = data.split_first() else { return };
    let limits = Limits::default()
        .with_max_payload(if knobs & 1 == 0 { 1 << 16 } else { 1 << 24 })
        .with_max_fds(usize::from(knobs >> 4) + 1);
    let mut decoder = FrameDecoder::new(limits);
    let (mut fed_fds, mut taken_fds) = (0usize, 0usize);
    // Then chunks: one control byte (read size in the low 6 bits, fds in the
    // top 2), followed by that many stream bytes.
    while let Some((&control, tail)) = rest.split_first() {
        let len = usize::from(control & 0x3f).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        let batch: Vec<OwnedFd> = (0..control >> 6).map(|_| devnull()).collect();
        fed_fds += batch.len();
        let spare = decoder.spare();
        let n = len.min(spare.len());
        spare[..n].copy_from_slice(&chunk[..n]);
        decoder.commit(n, batch);
        loop {
            match decoder.next_frame() {
                Ok(Some(raw)) => {
                    assert_eq!(raw.fds.len(), usize::from(raw.header.fd_count));
                    assert!(raw.payload.len() <= limits.max_payload as usize);
                    taken_fds += raw.fds.len();
                    if let Ok(Frame::Message(message)) = Frame::decode(raw.header.kind, raw.payload) {
                        let _ = message.decode::<(String, Vec<u64>, Option<u8>)>();
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert!(taken_fds <= fed_fds);
    let _ = decoder.finish();
});
