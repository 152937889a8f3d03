//! arborctl as the integration tests run it (the same code as the real binary;
//! its own name, so that it does not collide with arbor-supervisor's).

fn main() -> std::process::ExitCode {
    arbor_supervisor::programs::arborctl()
}
