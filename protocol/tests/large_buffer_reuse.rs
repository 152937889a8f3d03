//! A ping-pong of large messages (each answered before the next is sent, so
//! the receiver goes idle between them and gives its large buffer back)
//! reuses one receive buffer: once the first message is in, the receiving
//! thread makes no large allocation for the next ones. Counted by this test
//! binary's own global allocator, on the receiving thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::thread;

use arbor_protocol::blocking::Channel;
use arbor_protocol::FrameRef;

/// What counts as large: the decoder keeps buffers up to 4 MiB anyway.
const LARGE: usize = 4 * 1024 * 1024;
const MESSAGE: usize = 6 * 1024 * 1024;
const MESSAGES: usize = 8;

/// The system allocator, counting the large allocations of threads that
/// ask it to.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static LARGE_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count(size: usize) {
    if size >= LARGE && COUNTING.with(Cell::get) {
        LARGE_ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is passed to the system allocator unchanged; the count
// is a thread-local cell (no allocation, no lock).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as GlobalAlloc::realloc requires, passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The spare buffers are process-wide: the two tests here take turns, so
/// that neither finds the spares in the other's hands.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// The other side of the ping-pong: sends MESSAGES large messages, each
/// after the answer to the one before.
fn large_message_sender(mut sender: Channel) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let data = vec![5u8; MESSAGE];
        for _ in 0..MESSAGES {
            sender.send_bytes(&data, &[]).expect("send a large message");
            match sender.recv_ref().expect("the answer") {
                (FrameRef::Message(b"next"), _) => {}
                (other, _) => panic!("not the answer: {other:?}"),
            }
        }
    })
}

#[test]
fn a_ping_pong_of_large_messages_allocates_no_large_buffer_after_the_first_message() {
    let _turn = turn();
    let (mut receiver, sender) = Channel::pair().expect("a channel pair");
    let peer = large_message_sender(sender);
    let mut sizes = Vec::new();
    for i in 0..MESSAGES {
        // The first message grows the buffer; the rest are counted.
        COUNTING.with(|c| c.set(i > 0));
        match receiver.recv_ref().expect("a large message") {
            (FrameRef::Message(data), _) => sizes.push(data.len()),
            (other, _) => panic!("not a message: {other:?}"),
        }
        receiver.send_bytes(b"next", &[]).expect("answer");
    }
    COUNTING.with(|c| c.set(false));
    assert_every_message_came_without_a_large_allocation(peer, sizes);
}

/// The same through the tokio transport, whose receive learns that the
/// channel is idle from a read that emptied the socket, not from EAGAIN.
#[test]
fn an_async_ping_pong_of_large_messages_allocates_no_large_buffer_after_the_first_message() {
    let _turn = turn();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (stream, peer_stream) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let peer = large_message_sender(Channel::new(peer_stream).expect("the peer's channel"));
    let sizes = runtime.block_on(async move {
        stream.set_nonblocking(true).expect("nonblocking");
        let mut receiver =
            arbor_protocol::nonblocking::AsyncChannel::from_std(stream, Default::default())
                .expect("the async channel");
        let mut sizes = Vec::new();
        for i in 0..MESSAGES {
            COUNTING.with(|c| c.set(i > 0));
            match receiver.recv_ref().await.expect("a large message") {
                (FrameRef::Message(data), _) => sizes.push(data.len()),
                (other, _) => panic!("not a message: {other:?}"),
            }
            receiver.send_bytes(b"next", &[]).await.expect("answer");
        }
        COUNTING.with(|c| c.set(false));
        sizes
    });
    assert_every_message_came_without_a_large_allocation(peer, sizes);
}

/// Joins the sender, then checks that every message came whole and that
/// the receiving thread made no large allocation after the first.
fn assert_every_message_came_without_a_large_allocation(
    peer: thread::JoinHandle<()>,
    sizes: Vec<usize>,
) {
    peer.join().expect("the sending thread");
    assert_eq!(sizes, vec![MESSAGE; MESSAGES]);
    let large = LARGE_ALLOCATIONS.with(Cell::get);
    assert_eq!(
        large, 0,
        "large allocations for the messages after the first"
    );
}
