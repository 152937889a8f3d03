//! The seeded chaos soak (`arbor_integration_tests::soak`) for
//! `ARBOR_SOAK_SECONDS` (default 30: the README's test command runs that)
//! with `ARBOR_SOAK_SEED` (default: from the clock). A failure prints the
//! seed and the last operations.

#[test]
fn a_seeded_chaos_soak_keeps_arbords_invariants() {
    let seconds: u64 = std::env::var("ARBOR_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("ARBOR_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("chaos soak: {seconds} s, ARBOR_SOAK_SEED={seed}");
    let report = arbor_integration_tests::soak::run(seconds, seed);
    eprintln!("{report}");
}
