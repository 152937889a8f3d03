//! arbord: its code is the library's private `cli::arbord`.

fn main() -> std::process::ExitCode {
    arbor_supervisor::programs::arbord()
}
