//! Making the fds a [`Layout`] names: the socketpairs, `/dev/null`, the
//! capture pipes, and the spec's listen sockets put in their places. Every
//! fd made here is close-on-exec; the child inherits one only because the
//! fork path (`crate::spawn`) dup2s it to its number.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::plan::{Layout, Source};
use crate::sys;

/// A worker's fds, made: those for the child, and the ends that stay here.
#[derive(Debug)]
pub(super) struct Made {
    /// (fd to give, its number in the worker).
    pub(super) fds: Vec<(OwnedFd, RawFd)>,
    /// Our end of the channel, when the layout has one.
    pub(super) channel: Option<UnixStream>,
    /// Our end of the tree link, for a sub-worker that speaks the protocol.
    pub(super) link: Option<UnixStream>,
    /// The read ends of the captured stdout and stderr.
    pub(super) captured: [Option<OwnedFd>; 2],
}

/// Makes the fds of `layout`; `listen` are the spec's listen sockets, in
/// order. A plain sub-worker's channel end that nobody gets is closed here.
pub(super) fn make(layout: &Layout, listen: Vec<OwnedFd>) -> io::Result<Made> {
    let (channel, mut theirs) = match layout.channel {
        true => UnixStream::pair().map(|(ours, theirs)| (Some(ours), Some(theirs)))?,
        false => (None, None),
    };
    let mut listen: Vec<Option<OwnedFd>> = listen.into_iter().map(Some).collect();
    let mut made = Made {
        fds: Vec::with_capacity(layout.fds.len()),
        channel,
        link: None,
        captured: [None, None],
    };
    for &(source, at) in &layout.fds {
        let fd = match source {
            Source::Channel => theirs.take().map(OwnedFd::from),
            Source::TreeLink => {
                let (ours, theirs) = UnixStream::pair()?;
                made.link = Some(ours);
                Some(OwnedFd::from(theirs))
            }
            Source::Null => Some(devnull()?),
            Source::Capture => {
                let (read, write) = sys::pipe()?;
                // Stdout's read end first, then stderr's (at fd 2).
                made.captured[usize::from(at == 2)] = Some(read);
                Some(write)
            }
            Source::Listen(i) => listen.get_mut(i).and_then(Option::take),
        };
        let fd = fd.ok_or_else(|| io::Error::other(format!("no fd for {source:?} at {at}")))?;
        made.fds.push((fd, at));
    }
    Ok(made)
}

fn devnull() -> io::Result<OwnedFd> {
    std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn each_fd_of_the_layout_is_made_and_ours_stay_here() {
        let layout = Layout {
            fds: vec![
                (Source::Channel, 4),
                (Source::TreeLink, 5),
                (Source::Null, 0),
                (Source::Capture, 2),
                (Source::Listen(0), 3),
            ],
            channel: true,
        };
        let listen = vec![OwnedFd::from(UnixStream::pair().unwrap().0)];
        let made = make(&layout, listen).unwrap();
        let targets: Vec<RawFd> = made.fds.iter().map(|(_, at)| *at).collect();
        assert_eq!(targets, [4, 5, 0, 2, 3]);
        assert!(made.channel.is_some() && made.link.is_some());
        assert!(made.captured[0].is_none() && made.captured[1].is_some());
        assert!(made
            .fds
            .iter()
            .all(|(fd, _)| arbor_protocol::is_cloexec(fd.as_fd()).unwrap()));
    }

    #[test]
    fn a_plain_sub_workers_channel_is_made_for_its_parent_alone() {
        let layout = Layout {
            fds: vec![(Source::Null, 0)],
            channel: true,
        };
        let made = make(&layout, Vec::new()).unwrap();
        assert_eq!(made.fds.len(), 1);
        assert!(made.channel.is_some());
    }
}
