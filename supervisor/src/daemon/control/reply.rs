//! How a control request is answered: [`Reply`].

use std::os::fd::OwnedFd;

use arbor_protocol::control::ControlResponse;

use crate::daemon::events::Subscription;

/// How a request is answered.
#[derive(Debug)]
pub(in crate::daemon) enum Reply {
    /// One answer; the client may send its next request.
    One(ControlResponse),
    /// One answer (an error where a stream or a port was asked for), then
    /// the connection ends.
    End(ControlResponse),
    /// A first answer, then the events of `worker` (every worker's when
    /// `None`) in `form` until the client hangs up: `watch`, `events`,
    /// `logs -f`. Subscribed before the first answer is sent, so that no
    /// event falls in between.
    Stream {
        first: ControlResponse,
        events: Subscription,
        worker: Option<u64>,
        form: StreamForm,
    },
    /// Attached to `worker`, with the client's end of a new port to it;
    /// the client talks to the worker on the port from then on.
    Port { worker: u64, port: OwnedFd },
    /// Ok, then arbord shuts down.
    Shutdown,
}

/// What a stream sends, and in which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::daemon) enum StreamForm {
    /// Every event, flat ([`ControlResponse::Event`], for `Watch`).
    Flat,
    /// Every event, typed ([`ControlResponse::Notice`], for `Events`).
    Typed,
    /// Output lines only, flat (`Logs { follow: true }`).
    Output,
}
