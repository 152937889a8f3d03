//! Feeds arbitrary text to arbord's configuration parser, as arbord reads
//! its file at boot and on SIGHUP. Whatever the input: no panic, and a
//! refusal names a place inside the text (a line and column from 1, or 0
//! for the whole file) with a message.
//!
//! Run: `cd supervisor/fuzz && cargo +nightly fuzz run config_file seeds`
//! (`seeds` holds configurations that parse, so the fuzzer starts from
//! every table and key).

#![no_main]

use arbor_supervisor::programs::parse_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err((line, column, message)) = parse_config(text) {
        let lines = text.split('\n').count();
        assert!(line <= lines, "line {line} of a {lines}-line text: {message}");
        assert!(
            line > 0 || column == 0,
            "a column without a line: {message}"
        );
        assert!(!message.is_empty());
    }
});
