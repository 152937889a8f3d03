//! The clone that starts a worker: `clone3(CLONE_VM | CLONE_VFORK)` with the
//! child on a stack of its own, as `posix_spawn` does it, plus
//! `CLONE_INTO_CGROUP`, which `posix_spawn` cannot do here.
//!
//! # Why not fork
//!
//! A fork copies the parent's page tables under its mmap lock: the cost
//! grows with arbord's memory, and while the copy runs every thread of
//! arbord that faults a page waits for that lock (a chaos soak froze on
//! exactly this, the fork in `dup_mmap` and four threads in
//! `lock_mm_and_find_vma`). With `CLONE_VM` the child shares the parent's
//! memory until its exec: nothing is copied. With `CLONE_VFORK` the thread
//! that cloned sleeps until the child has exec'ed or exited, so the child
//! can use what the parent prepared (its stack frame, its errno) without a
//! race. Only the calling thread, the spawner, sleeps, and for a fraction
//! of a millisecond unless the child is stuck before its exec.
//!
//! # The trampoline
//!
//! A child with `CLONE_VM` must not return from the syscall on the parent's
//! stack: its first call would overwrite the frames the sleeping parent
//! returns through. So the kernel starts it on [`ChildStack`], and a few
//! instructions of inline assembly (glibc's `clone` does the same, but has
//! no `clone3` wrapper, which `CLONE_INTO_CGROUP` needs) call the child's
//! entry there, which never returns. x86_64 and aarch64 have it; elsewhere
//! [`clone_vfork`] reports `ENOSYS` and the caller forks.
//!
//! # Signals
//!
//! The child shares the parent's memory, so a handler of the parent's that
//! ran in the child would write into the parent's state. The spawner
//! blocks every signal around the clone ([`BlockedSignals`]); the child
//! sets every signal to its default before it unblocks them
//! ([`reset_signal_dispositions`]).

use std::ffi::c_void;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicI32;

use nix::sys::mman::{mmap_anonymous, mprotect, munmap, MapFlags, ProtFlags};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};

/// The child's stack: it runs a few dozen syscalls (debug builds use more
/// stack than release). Memory that is never touched costs nothing.
const STACK_SIZE: usize = 256 * 1024;
/// Below the stack: a page that faults instead of overflowing into memory.
const GUARD_SIZE: usize = 64 * 1024;

/// A stack for children, with a guard region below it; the spawner thread
/// keeps one (with `CLONE_VFORK` a child is done with it when its clone
/// returns).
#[derive(Debug)]
pub(crate) struct ChildStack {
    base: NonNull<c_void>,
}

// SAFETY: the mapping is owned by this value alone, and only the thread that
// holds it (and its vfork child, while that thread sleeps) touches it.
unsafe impl Send for ChildStack {}

impl ChildStack {
    pub(crate) fn new() -> io::Result<Self> {
        let length =
            NonZeroUsize::new(GUARD_SIZE + STACK_SIZE).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh anonymous private mapping, aliased by nothing.
        let base = unsafe {
            mmap_anonymous(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_STACK,
            )
        }?;
        let stack = ChildStack { base };
        // SAFETY: the first GUARD_SIZE bytes of our own mapping, which
        // nothing uses: a child that overflows its stack faults there.
        unsafe { mprotect(base, GUARD_SIZE, ProtFlags::PROT_NONE) }?;
        Ok(stack)
    }

    /// The lowest usable address and the size above it.
    fn usable(&self) -> (u64, u64) {
        (
            self.base.as_ptr() as u64 + GUARD_SIZE as u64,
            STACK_SIZE as u64,
        )
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of this length; no child runs on it (the
        // spawner thread that owns it is the one dropping it).
        let _ = unsafe { munmap(self.base, GUARD_SIZE + STACK_SIZE) };
    }
}

/// Every signal blocked on this thread while it lives; the old mask back
/// at drop.
pub(crate) struct BlockedSignals(SigSet);

impl BlockedSignals {
    pub(crate) fn now() -> io::Result<Self> {
        let mut old = SigSet::empty();
        pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&SigSet::all()),
            Some(&mut old),
        )?;
        Ok(BlockedSignals(old))
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// `clone3`'s arguments (`struct clone_args`, its version 2 with `cgroup`).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A child started by [`clone_vfork`], which has exec'ed or exited by now.
pub(crate) struct Cloned {
    pub(crate) pid: libc::pid_t,
    /// From `CLONE_PIDFD`: taken with the pid, so it can never name a
    /// process that reused the pid.
    pub(crate) pidfd: OwnedFd,
}

/// The child's entry: runs on [`ChildStack`] with the argument given to
/// [`clone_vfork`], and never returns.
pub(crate) type ChildEntry = extern "C" fn(*mut c_void) -> !;

/// Starts a child sharing this process's memory on `stack`, in the cgroup
/// whose directory is `cgroup` where one is given, running `entry(arg)`;
/// returns once it has exec'ed or exited. The child's pid is stored in
/// `pid_slot` before it runs, so that another thread can kill a child that
/// never gets to its exec (this thread sleeps until it does).
///
/// # Safety
///
/// `entry` runs in the child with every signal blocked (see
/// [`BlockedSignals`], which the caller must hold), on memory it shares with
/// this process: it may only make async-signal-safe calls, must not unwind,
/// and must end in `execve` or `_exit`. `arg` must stay valid until this
/// returns (it does: the caller's frame outlives the call).
pub(crate) unsafe fn clone_vfork(
    stack: &mut ChildStack,
    cgroup: Option<RawFd>,
    pid_slot: &AtomicI32,
    entry: ChildEntry,
    arg: *mut c_void,
) -> io::Result<Cloned> {
    let mut pidfd: RawFd = -1;
    let (stack_low, stack_size) = stack.usable();
    let flags = (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::CLONE_PARENT_SETTID)
        as u64
        | cgroup.map_or(0, |_| CLONE_INTO_CGROUP);
    let mut args = CloneArgs {
        flags,
        pidfd: &mut pidfd as *mut RawFd as u64,
        child_tid: 0,
        parent_tid: pid_slot.as_ptr() as u64,
        // Reaped like any child (waitpid without __WALL).
        exit_signal: libc::SIGCHLD as u64,
        stack: stack_low,
        stack_size,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.map_or(0, |fd| fd as u64),
    };
    // SAFETY: args is a valid clone_args of the size passed, the stack is
    // ours and unused, and the caller's promise covers what the child runs.
    let pid = unsafe { clone3_calling(&mut args, entry, arg) };
    if pid < 0 {
        return Err(io::Error::from_raw_os_error(-pid as i32));
    }
    // SAFETY: CLONE_PIDFD stored a new close-on-exec pidfd that nothing
    // else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Cloned {
        pid: pid as libc::pid_t,
        pidfd,
    })
}

/// `clone3(args)`; in the child, `entry(arg)` on the new stack. The child's
/// pid, or `-errno`.
///
/// # Safety
///
/// As [`clone_vfork`]; `args` names a stack (the child never returns into
/// this function's frame).
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_calling(args: &mut CloneArgs, entry: ChildEntry, arg: *mut c_void) -> i64 {
    let ret: i64;
    // SAFETY: the syscall's registers are as the kernel's ABI wants them; in
    // the parent (rax != 0) nothing but rax, rcx and r11 changes. The child
    // (rax == 0) starts on its own stack (16-byte aligned at the top, so the
    // call leaves it as a function entry expects), clears the frame pointer
    // so nothing walks into the parent's frames, and calls `entry`, which
    // never returns (ud2 would trap if it did).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// As the x86_64 one.
///
/// # Safety
///
/// As [`clone_vfork`].
#[cfg(target_arch = "aarch64")]
unsafe fn clone3_calling(args: &mut CloneArgs, entry: ChildEntry, arg: *mut c_void) -> i64 {
    let ret: i64;
    // SAFETY: as for x86_64: in the parent (x0 != 0) only x0 changes; the
    // child (x0 == 0) starts on its own 16-byte aligned stack, clears the
    // frame pointer and link register, and branches to `entry`, which never
    // returns (brk would trap if it did).
    unsafe {
        std::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x29, xzr",
            "mov x30, xzr",
            "mov x0, x10",
            "blr x11",
            "brk #1",
            "2:",
            inlateout("x0") args as *mut CloneArgs => ret,
            in("x1") std::mem::size_of::<CloneArgs>(),
            in("x8") libc::SYS_clone3,
            in("x10") arg,
            in("x11") entry,
            options(nostack),
        );
    }
    ret
}

/// Elsewhere: no trampoline, so the caller forks.
///
/// # Safety
///
/// None needed; it starts nothing.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn clone3_calling(_: &mut CloneArgs, _: ChildEntry, _: *mut c_void) -> i64 {
    -(libc::ENOSYS as i64)
}

/// In the child, before it unblocks signals: every signal back to its
/// default action, as systemd starts a service. Handled ones, so that no
/// handler of the parent's ever runs on the memory the child shares with
/// it; ignored ones too, so that what arbord ignores (SIGPIPE, as every
/// Rust program; SIGHUP under `nohup`; the C library's own signals) is not
/// passed on to workers, as an ignored signal is across exec. The raw
/// `rt_sigaction` system call (async-signal-safe), since the C library's
/// wrapper refuses the signals it keeps for itself; SIGKILL and SIGSTOP
/// refuse, which is fine.
///
/// # Safety
///
/// Only in a child between clone and exec.
pub(crate) unsafe fn reset_signal_dispositions(highest: i32) {
    // The kernel's `struct sigaction` with SIG_DFL (0), no flags and an
    // empty mask is all zeros; four words cover its largest layout.
    let default = [0u64; 4];
    for signal in 1..=highest {
        // SAFETY: rt_sigaction reads a zeroed kernel sigaction (SIG_DFL) of
        // the right size, with an 8-byte signal set, and writes nothing back.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
    }
}
