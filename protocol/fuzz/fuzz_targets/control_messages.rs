//! Feeds arbitrary bytes to the control socket's decoders, as arbord reads
//! a request and arborctl an answer: whatever the input, no panic, and
//! whatever decodes re-encodes to a message that decodes to the same value
//! (the codec loses nothing a peer sent).
//!
//! Run: `cd protocol/fuzz && cargo +nightly fuzz run control_messages`.

#![no_main]

use arbor_protocol::control::{ControlRequest, ControlResponse};
use arbor_protocol::Message;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `data` as a `T`; what decodes must survive a round trip.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(value) = Message::new(data.to_vec()).decode::<T>() else {
        return;
    };
    let again = Message::from_value(&value).expect("a decoded value encodes");
    let back: T = again.decode().expect("an encoded value decodes");
    assert_eq!(back, value);
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the decoder, so both get every shape of input.
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        round_trip::<ControlRequest>(rest);
    } else {
        round_trip::<ControlResponse>(rest);
    }
});
