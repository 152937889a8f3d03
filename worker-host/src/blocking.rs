//! The blocking worker API: install handlers, then [`Worker::run`].
//!
//! ```no_run
//! use arbor_worker::blocking::Worker;
//!
//! fn main() -> arbor_worker::Result<()> {
//!     let mut worker = Worker::connect()?;
//!     worker.on_message(|ctx, message, fds| {
//!         let fds: Vec<_> = fds.iter().map(|fd| std::os::fd::AsFd::as_fd(fd)).collect();
//!         ctx.reply(&message.data, &fds) // a Reply to a request, else a message
//!     });
//!     worker.run() // returns once the parent's Close has been handled
//! }
//! ```

use std::os::fd::{BorrowedFd, OwnedFd};

use arbor_protocol::blocking::{Channel, Sender};
use arbor_protocol::{Frame, Message, Ready, Request};
use serde::Serialize;

use crate::env::{take_channel, Identity};
use crate::error::{Error, Result};

type MessageHandler = Box<dyn FnMut(&mut Context<'_>, Message, Vec<OwnedFd>) -> Result<()>>;
type CloseHandler = Box<dyn FnMut(&mut Context<'_>) -> Result<()>>;

/// The worker's side of its channel, with the Web Workers handlers.
pub struct Worker {
    channel: Channel,
    identity: Identity,
    on_message: Option<MessageHandler>,
    on_close: Option<CloseHandler>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// What a handler can do: post messages, ask to close.
#[derive(Debug)]
pub struct Context<'a> {
    sender: &'a mut Sender,
    identity: &'a Identity,
    close_requested: bool,
    request_id: Option<u64>,
}

impl Context<'_> {
    /// Posts a message to the parent (written when the handler returns, or
    /// at once when it carries fds).
    pub fn post_message(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        Ok(self.sender.feed_bytes(data, fds)?)
    }

    /// Answers the message being handled: a Reply naming its id when it
    /// came as a Request (the parent's `request`), else a plain message.
    pub fn reply(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        match self.request_id.take() {
            Some(id) => Ok(self.sender.feed(
                &Frame::Reply(Request {
                    id,
                    data: data.to_vec(),
                }),
                fds,
            )?),
            None => self.post_message(data, fds),
        }
    }

    /// Whether the message being handled is a Request awaiting [`Context::reply`].
    pub fn is_request(&self) -> bool {
        self.request_id.is_some()
    }

    /// Posts `value` encoded with the wire codec.
    pub fn post_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        Ok(self.sender.send_value(value, &[])?)
    }

    /// Closes the worker from inside: once this handler returns, onclose
    /// runs, pending messages are flushed and [`Worker::run`] returns.
    pub fn close(&mut self) {
        self.close_requested = true;
    }

    /// This worker's id.
    pub fn id(&self) -> u64 {
        self.identity.id
    }

    /// This worker's name.
    pub fn name(&self) -> &str {
        &self.identity.name
    }
}

impl Worker {
    /// Connects to the channel the supervisor left at `ARBOR_CHANNEL_FD` and
    /// installs the panic hook. Outside a supervisor: [`Error::NotUnderSupervisor`].
    pub fn connect() -> Result<Self> {
        let (socket, identity) = take_channel()?;
        crate::panic::install(&socket);
        Ok(Self {
            channel: Channel::new(socket).map_err(arbor_protocol::Error::from)?,
            identity,
            on_message: None,
            on_close: None,
        })
    }

    /// This worker's id.
    pub fn id(&self) -> u64 {
        self.identity.id
    }

    /// This worker's name.
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// Sets the message handler (the spec's `onmessage`).
    pub fn on_message(
        &mut self,
        handler: impl FnMut(&mut Context<'_>, Message, Vec<OwnedFd>) -> Result<()> + 'static,
    ) -> &mut Self {
        self.on_message = Some(Box::new(handler));
        self
    }

    /// Sets the close handler (the spec's `onclose`), run to completion
    /// before the worker exits, whoever asked for the close.
    pub fn on_close(
        &mut self,
        handler: impl FnMut(&mut Context<'_>) -> Result<()> + 'static,
    ) -> &mut Self {
        self.on_close = Some(Box::new(handler));
        self
    }

    /// Posts a message to the parent outside a handler.
    pub fn post_message(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        Ok(self.channel.send_bytes(data, fds)?)
    }

    /// Sends Ready, then handles messages until a Close from the parent or
    /// a `close()` from inside; runs onclose, flushes, and returns `Ok`.
    /// The caller then returns from `main` (exit code 0).
    pub fn run(self) -> Result<()> {
        let Worker {
            channel,
            identity,
            mut on_message,
            mut on_close,
        } = self;
        let (mut sender, mut receiver) = channel.into_split();
        let ready = Ready::new(identity.id, identity.name.clone(), std::process::id());
        sender.send(&Frame::Ready(ready), &[])?;
        loop {
            let (frame, fds) = match receiver.recv() {
                Ok(received) => received,
                Err(arbor_protocol::Error::Closed) => return Err(Error::ParentGone),
                Err(e) => return Err(e.into()),
            };
            let mut ctx = Context {
                sender: &mut sender,
                identity: &identity,
                close_requested: false,
                request_id: None,
            };
            match frame {
                Frame::Message(message) => {
                    if let Some(handler) = on_message.as_mut() {
                        handler(&mut ctx, message, fds)?;
                    }
                }
                Frame::Request(request) => {
                    ctx.request_id = Some(request.id);
                    if let Some(handler) = on_message.as_mut() {
                        handler(&mut ctx, Message::new(request.data), fds)?;
                    }
                }
                Frame::Close => ctx.close_requested = true,
                Frame::Ping(nonce) => ctx.sender.feed(&Frame::Pong(nonce), &[])?,
                // The blocking worker has no connection handler: refused, so
                // the parent hands the connection to another replica (the
                // fd that came with it is closed here).
                Frame::Connection(connection) => ctx.sender.feed(
                    &Frame::ConnectionAck(arbor_protocol::ConnectionAck {
                        id: connection.id,
                        accepted: false,
                        open: 0,
                    }),
                    &[],
                )?,
                _ => {}
            }
            if ctx.close_requested {
                if let Some(handler) = on_close.as_mut() {
                    handler(&mut ctx)?;
                }
                sender.flush()?;
                return Ok(());
            }
            sender.flush()?;
        }
    }
}
