//! arborctl: see `arbor_supervisor::cli::arborctl`.

fn main() -> std::process::ExitCode {
    arbor_supervisor::cli::arborctl::main()
}
