//! arborctl: its code is the library's private `cli::arborctl`.

fn main() -> std::process::ExitCode {
    arbor_supervisor::programs::arborctl()
}
