//! arbord: see `arbor_supervisor::cli::arbord`.

fn main() -> std::process::ExitCode {
    arbor_supervisor::cli::arbord::main()
}
