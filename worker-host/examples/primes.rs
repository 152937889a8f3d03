//! The Web Workers spec's background number-cruncher: posts every prime it
//! finds (as a `u64` value) while the parent goes on with its own work.
//!
//! `primes [LIMIT]`: with a limit it posts the primes up to it and closes
//! itself; without one it runs until the parent closes it.

use arbor_worker::nonblocking::AsyncWorker;

#[tokio::main(flavor = "current_thread")]
async fn main() -> arbor_worker::Result<()> {
    let limit: Option<u64> = std::env::args().nth(1).and_then(|n| n.parse().ok());
    let worker = AsyncWorker::connect()?;
    let (poster, closer) = (worker.poster(), worker.closer());
    let search = tokio::spawn(async move {
        let mut n = 1u64;
        loop {
            n += 1;
            if limit.is_some_and(|limit| n > limit) {
                closer.close();
                return Ok::<(), arbor_worker::Error>(());
            }
            if (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
            {
                poster.post_value(&n).await?;
            }
            if n.is_multiple_of(1024) {
                tokio::task::yield_now().await; // let Close in
            }
        }
    });
    let result = worker.run().await;
    search.abort();
    result
}
