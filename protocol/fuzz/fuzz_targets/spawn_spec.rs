//! Feeds arbitrary bytes to what the supervisor does with a worker's Spawn
//! frame: the `SpawnSpec` decoder, then `WorkerSpec::from_wire` with up to
//! three fds. Whatever the input: no panic, a spec that is accepted passes
//! `WorkerSpec::check` (names, environment, NUL bytes), and the fds come
//! back as the spec's sockets or are closed with the refusal.
//!
//! Run: `cd protocol/fuzz && cargo +nightly fuzz run spawn_spec`.

#![no_main]

use std::os::fd::OwnedFd;

use arbor_protocol::{Message, SpawnSpec, WorkerSpec};
use libfuzzer_sys::fuzz_target;

fn devnull() -> OwnedFd {
    std::fs::File::open("/dev/null").expect("/dev/null").into()
}

fuzz_target!(|data: &[u8]| {
    let Some((&fd_count, rest)) = data.split_first() else {
        return;
    };
    let Ok(wire) = Message::new(rest.to_vec()).decode::<SpawnSpec>() else {
        return;
    };
    let fds: Vec<OwnedFd> = (0..fd_count % 4).map(|_| devnull()).collect();
    let given = fds.len();
    if let Ok((spec, listen)) = WorkerSpec::from_wire(wire, fds) {
        assert_eq!(spec.check(), Ok(()), "an accepted spec passes its checks");
        assert_eq!(listen.len(), given, "every fd is one of its sockets");
    }
});
