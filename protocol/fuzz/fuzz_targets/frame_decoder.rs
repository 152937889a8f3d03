//! Feeds arbitrary bytes, cut into arbitrary reads with arbitrary fd batches,
//! to the frame decoder and the typed layer. Whatever the input, checked on
//! every run:
//! - no panic;
//! - no unbounded allocation: the most memory live at once while decoding
//!   stays within a bound set by the bytes fed in (plus the decoder's fixed
//!   read-ahead), never by a length a header announces; a counting global
//!   allocator measures it;
//! - every fd handed out is one that was fed in and not handed out before
//!   (fds are told apart by number while the decoder holds them).
//!
//! Run: `cd protocol/fuzz && cargo +nightly fuzz run frame_decoder`.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use arbor_protocol::decoder::FrameDecoder;
use arbor_protocol::{Frame, Limits};
use libfuzzer_sys::fuzz_target;

/// The system allocator, counting the bytes live and the most live at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc` and `alloc`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        new
    }
}

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The decoder's own read-ahead, whatever the input: room made ahead of a
/// frame's bytes (1 MiB and a header) and two read chunks (64 KiB each).
const READ_AHEAD: usize = (1 << 20) + 64 + 2 * (64 << 10);

fn devnull() -> OwnedFd {
    std::fs::File::open("/dev/null").expect("/dev/null").into()
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks limits small enough that the fuzzer reaches them.
    let Some((&knobs, mut rest)) = data.split_first() else { return };
    let limits = Limits::default()
        .with_max_payload(if knobs & 1 == 0 { 1 << 16 } else { 1 << 24 })
        .with_max_fds(usize::from(knobs >> 4) + 1);
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let mut decoder = FrameDecoder::new(limits);
    let mut fed_bytes = 0usize;
    // The fds fed in that the decoder may still hand out, by number.
    let mut held: BTreeSet<RawFd> = BTreeSet::new();
    // Then chunks: one control byte (read size in the low 6 bits, fds in the
    // top 2), followed by that many stream bytes.
    let mut ended = false;
    while let Some((&control, tail)) = rest.split_first() {
        let len = usize::from(control & 0x3f).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        let batch: Vec<OwnedFd> = (0..control >> 6).map(|_| devnull()).collect();
        held.extend(batch.iter().map(|fd| fd.as_raw_fd()));
        let spare = decoder.spare();
        let n = len.min(spare.len());
        spare[..n].copy_from_slice(&chunk[..n]);
        fed_bytes += n;
        decoder.commit(n, batch);
        loop {
            match decoder.next_frame() {
                Ok(Some(raw)) => {
                    assert_eq!(raw.fds.len(), usize::from(raw.header.fd_count));
                    assert!(raw.payload.len() <= limits.max_payload as usize);
                    assert!(raw.payload.len() <= fed_bytes, "a payload longer than the input");
                    for fd in &raw.fds {
                        assert!(
                            held.remove(&fd.as_raw_fd()),
                            "fd {} handed out was never fed in, or handed out twice",
                            fd.as_raw_fd()
                        );
                    }
                    if let Ok(Frame::Message(message)) = Frame::decode(raw.header.kind, raw.payload) {
                        let _ = message.decode::<(String, Vec<u64>, Option<u8>)>();
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            break;
        }
    }
    if !ended {
        let _ = decoder.finish();
    }
    drop(decoder);
    let peak = PEAK.load(Ordering::Relaxed) - start;
    let bound = 4 * (fed_bytes + READ_AHEAD);
    assert!(
        peak <= bound,
        "{peak} bytes live at once for {fed_bytes} bytes fed (bound {bound})"
    );
});
