//! One control client: its uid checked, its requests read one after
//! another and each answered as [`super::control::dispatch`] says: one
//! answer, a stream of events, a port, or the end of arbord.
//!
//! A frame other than a request, or a request that does not decode, gets a
//! `bad-request` answer and a closed connection; a client that sends no
//! complete request within the idle timeout gets `timeout` and the same; a
//! broken frame (garbage, a bad header) closes the connection at once.
//! Nothing else is affected.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::control::{ControlRequest, ControlResponse, DaemonEvent, Event, EventKind};
use arbor_protocol::nonblocking::AsyncChannel;
use arbor_protocol::{Frame, Limits};
use tokio::net::UnixStream;

use super::context::Daemon;
use super::control::{dispatch, Reply, StreamForm};
use super::error::ControlError;
use super::events::{Next, Subscription};

/// Control connections served at once; one more is told arbord is busy.
pub(super) const MAX_CLIENTS: usize = 4096;

/// How long a client has to take an answer, or a streamed event, off its
/// socket: one that does not read is dropped, so that no task, fd or
/// buffer of arbord waits on it for longer.
pub(super) const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// Whether `sending` completed within [`ANSWER_DEADLINE`].
async fn taken<T>(sending: impl std::future::Future<Output = arbor_protocol::Result<T>>) -> bool {
    matches!(
        tokio::time::timeout(ANSWER_DEADLINE, sending).await,
        Ok(Ok(_))
    )
}

/// Answers a client over the connection cap with an error, then hangs up.
pub(super) async fn refuse_busy(stream: UnixStream) {
    let mut channel = AsyncChannel::new(stream);
    let busy = ControlError::TooManyClients(MAX_CLIENTS).response();
    let _ = tokio::time::timeout(Duration::from_secs(1), channel.send_value(&busy, &[])).await;
}

/// Serves one control client until it disconnects or misbehaves.
pub(super) async fn serve_client(daemon: Arc<Daemon>, stream: UnixStream) {
    // One SO_PEERCRED read: the uid to check, the pid to name the client by.
    let cred = match stream.peer_cred() {
        Ok(cred) => cred,
        Err(e) => {
            tracing::warn!("control client without credentials: {e}");
            return;
        }
    };
    let uid = cred.uid();
    let origin = match cred.pid() {
        Some(pid) => format!("control client pid {pid} uid {uid}"),
        None => "control client".into(),
    };
    // Fds may come with `post` (arborctl send --fd); they are handed on or closed.
    let mut channel = AsyncChannel::with_limits(stream, Limits::default());
    let own = nix::unistd::geteuid().as_raw();
    if uid != 0 && uid != own && !daemon.config.daemon.allowed_uids.contains(&uid) {
        tracing::warn!(uid, "refused a control client");
        let refusal = ControlError::NotAllowed(uid).response();
        taken(channel.send_value(&refusal, &[])).await;
        return;
    }
    let idle = daemon.config.daemon.control_idle_timeout;
    let mut ahead = None;
    while let Some((request, fds)) = next_request(&mut channel, ahead.take(), idle).await {
        let reply = if matches!(request, ControlRequest::Request { .. }) {
            // A request only waits for a worker's reply: a client that hangs
            // up meanwhile takes it with it (its fd, task and permit go now,
            // not when the timeout runs out).
            let waiting = dispatch(&daemon, request, fds, &origin);
            match unless_hung_up(&mut channel, waiting, &mut ahead).await {
                Some(reply) => reply,
                None => return,
            }
        } else {
            dispatch(&daemon, request, fds, &origin).await
        };
        match reply {
            Reply::One(response) => {
                if !taken(channel.send_value(&response, &[])).await {
                    return;
                }
            }
            Reply::End(response) => {
                taken(channel.send_value(&response, &[])).await;
                return;
            }
            Reply::Stream {
                first,
                events,
                worker,
                form,
            } => {
                if taken(channel.send_value(&first, &[])).await {
                    stream_events(channel, events, worker, form).await;
                }
                return;
            }
            Reply::Port { worker, port } => {
                // The client talks to the worker on its port from here on.
                let attached = ControlResponse::Attached { worker };
                taken(channel.send_value(&attached, &[port.as_fd()])).await;
                return;
            }
            Reply::Shutdown => {
                taken(channel.send_value(&ControlResponse::Ok, &[])).await;
                daemon.shutdown.notify_one();
                return;
            }
        }
    }
}

/// What reading the client's channel gave.
type Received = arbor_protocol::Result<(Frame, Vec<std::os::fd::OwnedFd>)>;

/// `work`, unless the client hangs up first (`None`). What the client sends
/// meanwhile (a next request) is kept in `ahead`, to be read after.
async fn unless_hung_up<F: std::future::Future>(
    channel: &mut AsyncChannel,
    work: F,
    ahead: &mut Option<Received>,
) -> Option<F::Output> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return Some(done),
            // Cancel-safe: a frame half read stays buffered for the next call.
            received = channel.recv(), if ahead.is_none() => match received {
                Err(arbor_protocol::Error::Closed) => return None,
                other => *ahead = Some(other),
            },
        }
    }
}

/// The client's next request with its fds (`ahead`, if already read);
/// `None` once it hung up, sent something else, or sent no complete request
/// within `idle` (it is told which, when it can be).
async fn next_request(
    channel: &mut AsyncChannel,
    mut ahead: Option<Received>,
    idle: Duration,
) -> Option<(ControlRequest, Vec<std::os::fd::OwnedFd>)> {
    // One deadline for the whole request, however slowly its bytes come.
    let deadline = tokio::time::Instant::now() + idle;
    loop {
        let received = match ahead.take() {
            Some(received) => received,
            None => match tokio::time::timeout_at(deadline, channel.recv()).await {
                Ok(received) => received,
                Err(_) => {
                    let idle = ControlError::Idle(idle).response();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        channel.send_value(&idle, &[]),
                    )
                    .await;
                    return None;
                }
            },
        };
        let refusal = match received {
            Ok((Frame::Message(message), fds)) => match message.decode::<ControlRequest>() {
                Ok(request) => return Some((request, fds)),
                Err(e) => ControlError::BadRequest(e.to_string()),
            },
            // A client that pings and never reads its pongs is let go
            // after the answer deadline, as for any other answer.
            Ok((Frame::Ping(nonce), _)) => {
                if !taken(channel.send(&Frame::Pong(nonce), &[])).await {
                    return None;
                }
                continue;
            }
            Ok((other, _)) => ControlError::BadRequest(format!(
                "unexpected {} frame on the control socket",
                other.kind().name()
            )),
            Err(arbor_protocol::Error::Closed) => return None,
            // A broken frame cannot be answered: the stream is out of step,
            // and the channel has already shut the socket down (WIRE.md §7).
            Err(e) => {
                tracing::warn!("control client dropped: {e}");
                return None;
            }
        };
        taken(channel.send_value(&refusal.response(), &[])).await;
        return None;
    }
}

/// Streams events to a watcher until it hangs up. A watcher that falls
/// behind gets a `missed` event with the count and carries on; one that
/// stops reading is dropped after [`ANSWER_DEADLINE`].
async fn stream_events(
    channel: AsyncChannel,
    mut events: Subscription,
    worker: Option<u64>,
    form: StreamForm,
) {
    // Split, so that the client's hang-up is seen while waiting for events.
    let (mut sender, mut receiver) = channel.into_split();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = receiver.recv() => return, // the client sent something or hung up
        };
        let event = match event {
            Next::Event(event) if worker.is_some_and(|id| id != event.worker) => continue,
            Next::Event(event)
                if form == StreamForm::Output && !matches!(event.kind, EventKind::Output(_)) =>
            {
                continue
            }
            Next::Event(event) => event,
            Next::Missed(missed) => Event {
                worker: 0,
                name: String::new(),
                parent: None,
                kind: EventKind::Missed(missed),
            },
            Next::End => return,
        };
        let answer = match form {
            StreamForm::Typed => ControlResponse::Notice(event),
            StreamForm::Flat | StreamForm::Output => {
                ControlResponse::Event(DaemonEvent::from(&event))
            }
        };
        if !taken(sender.send_value(&answer, &[])).await {
            return;
        }
    }
}
