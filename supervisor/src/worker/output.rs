//! A worker's captured stdout and stderr: one task per stream splits it
//! into lines, each a [`WorkerEvent::Output`], until the pipe closes (the
//! worker and whatever inherited the pipe are gone).
//!
//! A consumer that does not read events slows the capture, and with it the
//! worker once the pipe is full; no line is dropped.

use std::io;
use std::os::fd::OwnedFd;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Stream, WorkerEvent};

/// Starts a capture task for each pipe given (the read ends of stdout's and
/// stderr's pipes, in that order; `None` for a stream not captured).
pub(super) fn capture(
    pipes: [Option<OwnedFd>; 2],
    events: &mpsc::Sender<WorkerEvent>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for (fd, stream) in pipes.into_iter().zip([Stream::Stdout, Stream::Stderr]) {
        if let Some(fd) = fd {
            let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
            tasks.push(tokio::spawn(capture_lines(pipe, stream, events.clone())));
        }
    }
    Ok(tasks)
}

/// Longest line kept whole; longer lines are cut into pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// Bytes read from a pipe at once (into a buffer on the stack, so that an
/// idle worker's capture holds no buffer at all).
const READ_CHUNK: usize = 4096;

async fn capture_lines(
    pipe: tokio::net::unix::pipe::Receiver,
    stream: Stream,
    events: mpsc::Sender<WorkerEvent>,
) {
    // The unfinished last line; empty (unallocated) between lines.
    let mut line = Vec::new();
    loop {
        let mut lines = Vec::new();
        let open = match pipe.readable().await {
            Ok(()) => match read_lines(&pipe, &mut line, &mut lines) {
                Ok(open) => open,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => false,
            },
            Err(_) => false,
        };
        if !open && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        for line in lines {
            if events
                .send(WorkerEvent::Output { stream, line })
                .await
                .is_err()
            {
                return;
            }
        }
        if !open {
            return;
        }
    }
}

/// Reads what the pipe has into whole lines (added to `lines`), keeping an
/// unfinished one in `line`; `false` at the end of the stream.
fn read_lines(
    pipe: &tokio::net::unix::pipe::Receiver,
    line: &mut Vec<u8>,
    lines: &mut Vec<Vec<u8>>,
) -> io::Result<bool> {
    let mut chunk = [0u8; READ_CHUNK];
    let read = pipe.try_read(&mut chunk)?;
    let mut rest = &chunk[..read];
    while !rest.is_empty() {
        let window = &rest[..rest.len().min(MAX_LINE - line.len())];
        match window.iter().position(|&b| b == b'\n') {
            Some(at) => {
                line.extend_from_slice(&window[..at]);
                lines.push(std::mem::take(line));
                rest = &rest[at + 1..];
            }
            None => {
                line.extend_from_slice(window);
                rest = &rest[window.len()..];
                if line.len() == MAX_LINE {
                    lines.push(std::mem::take(line));
                }
            }
        }
    }
    Ok(read > 0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;

    /// Every line `written` becomes, as the capture sends them.
    async fn lines_of(written: Vec<u8>) -> Vec<Vec<u8>> {
        let (read, write) = crate::sys::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            std::fs::File::from(write).write_all(&written).unwrap();
        });
        let (events, mut received) = mpsc::channel(16);
        let tasks = capture([None, Some(read)], &events).unwrap();
        drop(events);
        let mut lines = Vec::new();
        let collect = async {
            while let Some(event) = received.recv().await {
                match event {
                    WorkerEvent::Output {
                        stream: Stream::Stderr,
                        line,
                    } => lines.push(line),
                    other => panic!("not a stderr line: {other:?}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), collect)
            .await
            .expect("the capture ends when the pipe closes");
        writer.join().unwrap();
        assert_eq!(tasks.len(), 1);
        lines
    }

    #[tokio::test]
    async fn lines_come_without_their_newline_and_a_last_unfinished_one_still_comes() {
        let lines = lines_of(b"one\n\nthree\nlast".to_vec()).await;
        assert_eq!(lines, [&b"one"[..], b"", b"three", b"last"]);
    }

    #[tokio::test]
    async fn a_line_over_64_kib_comes_in_pieces() {
        let mut written = vec![b'x'; MAX_LINE + 10];
        written.extend_from_slice(b"\nnext\n");
        let lines = lines_of(written).await;
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], vec![b'x'; MAX_LINE]);
        assert_eq!(lines[1], vec![b'x'; 10]);
        assert_eq!(lines[2], b"next");
    }
}
