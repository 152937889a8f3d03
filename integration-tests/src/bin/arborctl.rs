//! arborctl, built by the integration tests next to test-worker.

fn main() -> std::process::ExitCode {
    arbor_supervisor::cli::arborctl::main()
}
