//! The echo worker: replies to every message (and answers every request)
//! with the same bytes and the same fds. Run it under a supervisor (see the
//! `parent` example).

use std::os::fd::AsFd;

use arbor_worker::blocking::Worker;

/// Serves echo on this process's channel until the parent closes it.
pub fn serve() -> arbor_worker::Result<()> {
    let mut worker = Worker::connect()?;
    worker.on_message(|ctx, message, fds| {
        let fds: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        ctx.reply(&message.data, &fds)
    });
    worker.run()
}

#[allow(dead_code)]
fn main() -> arbor_worker::Result<()> {
    serve()
}
