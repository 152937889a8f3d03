//! A borrowed receive (`recv_ref`) of a burst of small messages allocates
//! nothing per message, where the owned receive (`recv`) allocates for each
//! (its `Vec`). Counted by this test binary's own global allocator, on the
//! receiving thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::thread;

use arbor_protocol::blocking::Channel;
use arbor_protocol::FrameRef;

/// The system allocator, counting the allocations of threads that ask it to.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; the count
// is a thread-local cell (no allocation, no lock).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: as GlobalAlloc::realloc requires, passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const BURST: usize = 10_000;

/// Allocations on this thread while `receive` runs.
fn allocations_during(receive: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    receive();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

/// A burst of 64-byte messages, fed from another thread (whose allocations
/// are not counted) as fast as the receiver takes them.
fn burst() -> (Channel, thread::JoinHandle<()>) {
    let (mut sender, receiver) = Channel::pair().expect("a channel");
    let sending = thread::spawn(move || {
        for i in 0..BURST {
            let message = [(i % 251) as u8; 64];
            sender.feed_bytes(&message, &[]).expect("feed");
        }
        sender.flush().expect("flush");
        // Kept open until the receiver is done.
        std::thread::park();
        drop(sender);
    });
    (receiver, sending)
}

#[test]
fn a_burst_of_small_messages_received_borrowed_allocates_nothing_per_message() {
    let (mut receiver, sending) = burst();
    // The first message sizes the receive buffer; it is not counted.
    receiver.recv_ref().expect("first message");
    let mut sum = 0u64;
    let allocations = allocations_during(|| {
        for i in 1..BURST {
            match receiver.recv_ref().expect("a message") {
                (FrameRef::Message(data), fds) => {
                    assert_eq!(data, &[(i % 251) as u8; 64][..]);
                    assert!(fds.is_empty());
                    sum += u64::from(data[0]);
                }
                (other, _) => panic!("{other:?}"),
            }
        }
    });
    assert!(sum > 0);
    // The buffer may grow a few times as reads get larger; never once a
    // message.
    assert!(
        allocations <= 8,
        "{allocations} allocations for {} messages received borrowed",
        BURST - 1
    );
    sending.thread().unpark();
    sending.join().expect("the sender");

    // The owned receive, for contrast: at least one allocation a message.
    let (mut receiver, sending) = burst();
    receiver.recv().expect("first message");
    let allocations = allocations_during(|| {
        for _ in 1..BURST {
            receiver.recv().expect("a message");
        }
    });
    assert!(
        allocations >= (BURST - 1) as u64,
        "only {allocations} allocations for {} owned messages",
        BURST - 1
    );
    sending.thread().unpark();
    sending.join().expect("the sender");
}
