//! One control client: its uid checked, its requests read one after
//! another and each answered as [`super::control::dispatch`] says: one
//! answer, a stream of events, a port, or the end of arbord.
//!
//! Garbage, a frame other than a request, or a request that does not decode
//! gets an error and a closed connection; nothing else is affected.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::control::{ControlRequest, ControlResponse, DaemonEvent, Event, EventKind};
use arbor_protocol::nonblocking::AsyncChannel;
use arbor_protocol::{Frame, Limits};
use tokio::net::UnixStream;
use tokio::sync::broadcast;

use super::context::Daemon;
use super::control::{dispatch, Reply, StreamForm};
use super::error::ControlError;

/// Control connections served at once; one more is told arbord is busy.
pub(super) const MAX_CLIENTS: usize = 4096;

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
        let _ = channel.send_value(&refusal, &[]).await;
        return;
    }
    while let Some((request, fds)) = next_request(&mut channel).await {
        match dispatch(&daemon, request, fds, &origin).await {
            Reply::One(response) => {
                if channel.send_value(&response, &[]).await.is_err() {
                    return;
                }
            }
            Reply::End(response) => {
                let _ = channel.send_value(&response, &[]).await;
                return;
            }
            Reply::Stream {
                first,
                events,
                worker,
                form,
            } => {
                if channel.send_value(&first, &[]).await.is_ok() {
                    stream_events(channel, events, worker, form).await;
                }
                return;
            }
            Reply::Port { worker, port } => {
                // The client talks to the worker on its port from here on.
                let attached = ControlResponse::Attached { worker };
                let _ = channel.send_value(&attached, &[port.as_fd()]).await;
                return;
            }
            Reply::Shutdown => {
                let _ = channel.send_value(&ControlResponse::Ok, &[]).await;
                daemon.shutdown.notify_one();
                return;
            }
        }
    }
}

/// The client's next request with its fds; `None` once it hung up or sent
/// something else (it is told what, when it can be).
async fn next_request(
    channel: &mut AsyncChannel,
) -> Option<(ControlRequest, Vec<std::os::fd::OwnedFd>)> {
    loop {
        let refusal = match channel.recv().await {
            Ok((Frame::Message(message), fds)) => match message.decode::<ControlRequest>() {
                Ok(request) => return Some((request, fds)),
                Err(e) => ControlError::BadRequest(e.to_string()),
            },
            Ok((Frame::Ping(nonce), _)) => {
                let _ = channel.send(&Frame::Pong(nonce), &[]).await;
                continue;
            }
            Ok((other, _)) => ControlError::BadRequest(format!(
                "unexpected {} frame on the control socket",
                other.kind().name()
            )),
            Err(arbor_protocol::Error::Closed) => return None,
            Err(e) => {
                tracing::warn!("control client dropped: {e}");
                return None;
            }
        };
        let _ = channel.send_value(&refusal.response(), &[]).await;
        return None;
    }
}

/// Streams events to a watcher until it hangs up. A watcher that falls
/// behind gets a `missed` event with the count and carries on.
async fn stream_events(
    channel: AsyncChannel,
    mut events: broadcast::Receiver<Event>,
    worker: Option<u64>,
    form: StreamForm,
) {
    // Split, so that the client's hang-up is seen while waiting for events.
    let (mut sender, mut receiver) = channel.into_split();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = receiver.recv() => return, // the client sent something or hung up
        };
        let event = match event {
            Ok(event) if worker.is_some_and(|id| id != event.worker) => continue,
            Ok(event)
                if form == StreamForm::Output && !matches!(event.kind, EventKind::Output(_)) =>
            {
                continue
            }
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => Event {
                worker: 0,
                name: String::new(),
                parent: None,
                kind: EventKind::Missed(missed),
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let answer = match form {
            StreamForm::Typed => ControlResponse::Notice(event),
            StreamForm::Flat | StreamForm::Output => {
                ControlResponse::Event(DaemonEvent::from(&event))
            }
        };
        if sender.send_value(&answer, &[]).await.is_err() {
            return;
        }
    }
}
