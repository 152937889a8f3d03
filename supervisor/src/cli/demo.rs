//! Workers built into arbord, started with `entry = "..."` in a config: the
//! demo's `echo` (answers every message and request with the same bytes and
//! fds) and `primes` (answers every message and request with the primes up
//! to LIMIT, space-separated; `args = ["LIMIT"]`, 1000 when absent).

use std::os::fd::AsFd;

use arbor_worker::blocking::Worker;

/// Runs the built-in worker `entry`.
pub fn run(entry: &str) -> arbor_worker::Result<()> {
    let mut worker = Worker::connect()?;
    match entry {
        "echo" => {
            worker.on_message(|ctx, message, fds| {
                let fds: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
                ctx.reply(&message.data, &fds)
            });
        }
        "primes" => {
            let limit: u64 = std::env::args()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000);
            let primes: Vec<u64> = (2..=limit)
                .filter(|n| {
                    (2..)
                        .take_while(|d| d * d <= *n)
                        .all(|d| !n.is_multiple_of(d))
                })
                .collect();
            // Answer a request with the primes found, as text; post them to
            // anyone who sends a plain message.
            worker.on_message(move |ctx, _, _| {
                let text: Vec<String> = primes.iter().map(u64::to_string).collect();
                ctx.reply(text.join(" ").as_bytes(), &[])
            });
        }
        other => {
            return Err(arbor_worker::Error::NotUnderSupervisor {
                reason: format!("no built-in worker named {other:?}"),
            })
        }
    }
    worker.run()
}
