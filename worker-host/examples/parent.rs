//! A parent that starts the echo worker, posts it a message with the write
//! end of a pipe, prints the reply, and reads what came through the pipe.
//!
//! One binary holds both sides: the worker is this executable's `echo`
//! entry point (run again with `ARBOR_ENTRY=echo`).
//!
//! `cargo run --release -p arbor-worker --example parent`

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use arbor_supervisor::{Supervisor, WorkerEvent, WorkerSpec};

#[path = "echo.rs"]
mod echo;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if arbor_worker::entry_point().as_deref() == Some("echo") {
        return Ok(echo::serve()?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(parent())
}

async fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let supervisor = Supervisor::new()?;
    let mut worker = supervisor.spawn(WorkerSpec::entry("echo")).await?;
    println!(
        "parent: started worker {} ({}), pid {}",
        worker.id(),
        worker.name(),
        worker.pid()
    );

    // Posted before the worker is Ready: held and delivered in order.
    let (mut pipe_read, pipe_write) = std::io::pipe()?;
    worker
        .post_message(
            b"hello through arbor".to_vec(),
            vec![OwnedFd::from(pipe_write)],
        )
        .await?;

    let deadline = Duration::from_secs(10);
    loop {
        match tokio::time::timeout(deadline, worker.next_event()).await? {
            Some(WorkerEvent::Ready) => println!("parent: worker is ready"),
            Some(WorkerEvent::Message { data, fds }) => {
                println!(
                    "parent: reply {:?} with {} fd(s)",
                    String::from_utf8_lossy(&data),
                    fds.len()
                );
                for fd in fds {
                    std::fs::File::from(fd)
                        .write_all(b"written through the fd the worker sent back")?;
                }
                break;
            }
            Some(other) => println!("parent: {other:?}"),
            None => return Err("worker ended early".into()),
        }
    }
    let mut through_pipe = String::new();
    pipe_read.read_to_string(&mut through_pipe)?;
    println!("parent: pipe says {through_pipe:?}");

    let exit = worker.close(Duration::from_secs(5)).await?;
    println!("parent: worker {exit}");
    Ok(())
}
