//! Transfer: a large buffer moved between processes as a sealed memfd
//! instead of copied through the socket (the Web Workers standard's
//! transferable `ArrayBuffer`, Hop's donation).
//!
//! The writer fills a [`TransferBuffer`] (a memfd mapped read-write), then
//! [`TransferBuffer::seal`] unmaps it and adds `F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_WRITE | F_SEAL_SEAL`: from then on nobody, the writer included, can
//! change a byte. The sealed [`Transfer`] is move-only: posting it consumes
//! it ([`Transfer::into_fd`]), so the sender has nothing left to touch. Its
//! fd travels with any message. The receiver checks the seals before mapping
//! ([`Transfer::from_fd`]): an fd that is not a sealed memfd is refused with a
//! typed error, since its bytes could change under the reader. It maps it
//! read-only ([`Transfer::map`]).
//!
//! Below [`TRANSFER_THRESHOLD`] the socket is cheaper (a memfd costs a few
//! syscalls, fresh pages and their mapping); above it a transfer wins, since
//! a copy makes two more passes over the bytes. bench/README.md has the
//! figures: at 64 MiB a transfer costs 0.44x the copy, end to end.
//!
//! Two ways to fill one: [`Transfer::from_bytes`] writes existing bytes
//! with `write(2)` (whole pages are never zeroed first: the faster of the
//! two), and [`TransferBuffer`] maps a fresh memfd to produce the bytes in
//! place (no buffer of one's own, but the kernel zeroes each page first).
//!
//! This module is one of arbor-protocol's two with `unsafe`; [`crate::sys`]
//! is the other. memfd_create, ftruncate and the seals go through nix's safe
//! wrappers; what stays `unsafe` is the mapping itself: `mmap` and `munmap`
//! (unsafe in nix too, since the memory they hand out or take back is
//! beyond the borrow checker) and the slices made over that memory.

use std::ffi::CStr;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::unistd::ftruncate;

/// How many more times sealing is tried when the kernel answers EBUSY
/// (a page briefly held elsewhere), 10 ms apart.
const SEAL_ATTEMPTS: u32 = 20;

/// The size from which a transfer beats sending the bytes through the
/// socket: measured between 1 MiB (the copy is 2x faster) and 4 MiB (the
/// transfer is 2.6x faster).
pub const TRANSFER_THRESHOLD: usize = 2 << 20;

/// The seals a transfer must carry for a reader to trust it.
const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_WRITE);

/// Why a received fd is not a usable transfer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The fd cannot carry seals (not a memfd): its bytes could change.
    #[error("not a sealable memfd: {0}")]
    NotSealable(#[source] io::Error),
    /// A memfd without the write, grow and shrink seals: its bytes could change.
    #[error("the memfd is not sealed (seals {seals:#x}; shrink, grow and write are required)")]
    NotSealed {
        /// The seals it has.
        seals: i32,
    },
    /// A system call failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A buffer being written: a memfd mapped read-write in this process.
#[derive(Debug)]
pub struct TransferBuffer {
    fd: OwnedFd,
    map: Option<Mapping>,
    len: usize,
}

/// A sealed buffer: nobody can change it any more. Move-only.
#[derive(Debug)]
pub struct Transfer {
    fd: OwnedFd,
    len: usize,
}

/// A transfer mapped read-only; unmapped on drop.
#[derive(Debug)]
pub struct TransferView {
    map: Option<Mapping>,
}

#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is plain memory owned by its holder (unmapped once, on
// drop); nothing about it is tied to the thread that mapped it.
unsafe impl Send for Mapping {}
// SAFETY: shared references only read it (a TransferView is read-only; a
// TransferBuffer hands out `&mut` only through `&mut self`).
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned, unmapped only here;
        // the slices handed out borrow the Mapping, so none outlives it.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

fn map(fd: &OwnedFd, len: usize, writable: bool) -> io::Result<Option<Mapping>> {
    let Some(length) = NonZeroUsize::new(len) else {
        return Ok(None);
    };
    // Populated up front: the pages are allocated (writer) or looked up
    // (reader) in one call instead of one page fault per 4 KiB.
    let flags = MapFlags::MAP_SHARED | MapFlags::MAP_POPULATE;
    let prot = if writable {
        ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
    } else {
        ProtFlags::PROT_READ
    };
    // SAFETY: a fresh mapping of `len` bytes of an fd we hold, at an address
    // the kernel chooses, so it aliases no Rust memory; the Mapping owns it.
    let ptr = unsafe { mmap(None, length, prot, flags, fd, 0) }?;
    Ok(Some(Mapping {
        ptr: ptr.cast(),
        len,
    }))
}

impl TransferBuffer {
    /// An empty memfd, not mapped.
    fn unmapped() -> io::Result<Self> {
        const NAME: &CStr = c"arbor-transfer";
        let fd = memfd_create(NAME, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        Ok(Self {
            fd,
            map: None,
            len: 0,
        })
    }

    /// A zeroed buffer of `len` bytes to write into.
    pub fn new(len: usize) -> io::Result<Self> {
        let fd = Self::unmapped()?.fd;
        let size = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "transfer too large"))?;
        ftruncate(&fd, size)?;
        let map = map(&fd, len, true)?;
        Ok(Self { fd, map, len })
    }

    /// The bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &self.map {
            // SAFETY: the mapping is ours, `len` bytes, read-write, and the
            // `&mut self` borrow makes this the only reference to it.
            Some(m) => unsafe { std::slice::from_raw_parts_mut(m.ptr.as_ptr(), m.len) },
            None => &mut [],
        }
    }

    /// Unmaps the buffer and seals it (shrink, grow, write, and no more
    /// seals): it can never change again.
    pub fn seal(mut self) -> io::Result<Transfer> {
        // F_SEAL_WRITE is refused while a writable shared mapping exists.
        self.map = None;
        // It is also refused (EBUSY) while something else briefly holds a
        // reference to one of the pages (page migration or compaction on a
        // busy machine: seen once in a benchmark beside heavy load); the
        // kernel waits a little itself, and so do we before giving up.
        let mut attempts = 0;
        loop {
            match fcntl(
                &self.fd,
                FcntlArg::F_ADD_SEALS(REQUIRED_SEALS | SealFlag::F_SEAL_SEAL),
            ) {
                Ok(_) => break,
                Err(nix::errno::Errno::EBUSY) if attempts < SEAL_ATTEMPTS => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(Transfer {
            fd: self.fd,
            len: self.len,
        })
    }
}

impl Transfer {
    /// A sealed copy of `bytes`, for data that is not produced in place.
    /// Written with `write(2)`, not through a mapping: whole pages written
    /// so are never zeroed first, which makes this the cheaper path when the
    /// bytes already exist.
    pub fn from_bytes(bytes: &[u8]) -> io::Result<Self> {
        let buffer = TransferBuffer::unmapped()?;
        let mut file = std::fs::File::from(buffer.fd);
        use std::io::Write;
        file.write_all(bytes)?;
        TransferBuffer {
            fd: file.into(),
            map: None,
            len: bytes.len(),
        }
        .seal()
    }

    /// Checks a received fd: it must be a memfd sealed against writing,
    /// growing and shrinking. Anything else is refused (and closed).
    pub fn from_fd(fd: OwnedFd) -> Result<Self, TransferError> {
        // Fails (EINVAL) on files that cannot carry seals.
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS)
            .map_err(|errno| TransferError::NotSealable(errno.into()))?;
        if !SealFlag::from_bits_retain(seals).contains(REQUIRED_SEALS) {
            return Err(TransferError::NotSealed { seals });
        }
        let len = std::fs::File::from(fd.try_clone()?).metadata()?.len();
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "transfer too large"))?;
        Ok(Self { fd, len })
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maps it read-only.
    pub fn map(&self) -> io::Result<TransferView> {
        Ok(TransferView {
            map: map(&self.fd, self.len, false)?,
        })
    }

    /// The fd to send; this consumes the transfer, so the sender keeps
    /// nothing to touch.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl std::ops::Deref for TransferView {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.map {
            // SAFETY: a read-only mapping of `len` bytes of a sealed memfd
            // (nobody can write it), alive as long as `self`.
            Some(m) => unsafe { std::slice::from_raw_parts(m.ptr.as_ptr(), m.len) },
            None => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_transfer_round_trips_and_is_read_only() {
        let mut buffer = TransferBuffer::new(3 << 20).unwrap();
        buffer.as_mut_slice().fill(7);
        let transfer = buffer.seal().unwrap();
        let received = Transfer::from_fd(transfer.into_fd()).unwrap();
        assert_eq!(received.len(), 3 << 20);
        let view = received.map().unwrap();
        assert!(view.iter().all(|b| *b == 7));
        // Sealed: no writable mapping, no write, no resize.
        let fd = received.into_fd();
        assert!(map(&fd, 3 << 20, true).is_err());
        let mut file = std::fs::File::from(fd);
        use std::io::Write;
        assert!(file.write_all(b"x").is_err());
        assert!(file.set_len(1).is_err());
        assert!(crate::is_cloexec(std::os::fd::AsFd::as_fd(&file)).unwrap());
    }

    #[test]
    fn unsealed_memfds_and_other_files_are_refused() {
        let unsealed = TransferBuffer::new(16).unwrap();
        assert!(matches!(
            Transfer::from_fd(unsealed.fd),
            Err(TransferError::NotSealed { .. })
        ));
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(matches!(
            Transfer::from_fd(file.into()),
            Err(TransferError::NotSealable(_))
        ));
    }

    #[test]
    fn empty_transfers_work() {
        let transfer = Transfer::from_bytes(&[]).unwrap();
        let transfer = Transfer::from_fd(transfer.into_fd()).unwrap();
        assert!(transfer.is_empty());
        assert!(transfer.map().unwrap().is_empty());
    }
}
