//! arbord for the benchmarks, next to bench-peer.

fn main() -> std::process::ExitCode {
    arbor_supervisor::programs::arbord()
}
