//! Thread identity, stack-size rules, OS thread names, and raw thread creation.
//!
//! Threads are started with `pthread_create` directly rather than `std::thread`, for two
//! reasons:
//!
//! - Stack size: with no explicit size, glibc gives a new thread `RLIMIT_STACK` bytes (usually
//!   8 MiB), which is what CPython's threads get. `std::thread` would give 2 MiB, and deep
//!   recursion that works on CPython would crash.
//! - Forced unwinding: CPython (up to 3.13) ends a daemon thread that touches the interpreter
//!   after finalization with `pthread_exit`, a forced unwind. The start routine is declared
//!   `extern "C-unwind"` so that unwind may legally pass through it.
//!
//! # Notes about memory ordering
//!
//! The process-wide stack size ([`stack_size`], [`set_stack_size`]) is a single `AtomicUsize`
//! read and swapped with `Relaxed`: it is a standalone setting that publishes no other data, and
//! the thread that reads it uses only the value itself.

use core::ffi::{c_char, c_int, c_void};
use core::mem::MaybeUninit;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::io;

/// The smallest nonzero stack size accepted, as CPython's `THREAD_STACK_MIN` (32 KiB).
pub const STACK_SIZE_MIN: usize = 0x8000;

/// The smallest nonzero stack size CPython 3.14+ accepts (release builds): three times the
/// interpreter's 2048-pointer stack-overflow margin, plus one page (53 248 bytes on 64-bit).
/// Sizes below it are refused before the platform is asked.
pub const STACK_SIZE_MIN_PY314: usize = 3 * 2048 * core::mem::size_of::<*const ()>() + 4096;

/// The longest OS thread name, in bytes, without the trailing NUL (Linux's limit).
pub const NAME_MAXLEN: usize = 15;

/// The calling thread's ident: `pthread_self()` as a `u64`, which is what CPython's
/// `_thread.get_ident()` returns on Linux. Never 0. On x86-64 Linux it is the thread pointer
/// ([`thread_pointer`]), one load instead of a call.
#[must_use]
#[inline(always)]
pub fn current_ident() -> u64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        thread_pointer() as u64
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        // SAFETY: `pthread_self` has no preconditions and cannot fail.
        let me = unsafe { libc::pthread_self() };
        pthread_to_u64(me)
    }
}

/// The calling thread's thread pointer: the word at `%fs:0`, which the x86-64 ELF TLS ABI
/// makes the thread control block's pointer to itself; glibc and musl both return that block's
/// address from `pthread_self()`. One load, where a `thread_local!` in a shared library costs a
/// `__tls_get_addr` call. Constant for the thread's life; a new thread may get an ended one's.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
#[must_use]
pub fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: on x86-64 Linux (glibc and musl alike) `%fs` addresses the calling thread's
    // control block, whose first word is its own address for the whole life of the thread;
    // the instruction only reads that word.
    unsafe {
        core::arch::asm!(
            "mov {}, qword ptr fs:[0]",
            out(reg) tp,
            options(nostack, readonly, preserves_flags, pure)
        );
    }
    tp
}

#[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
fn pthread_to_u64(t: libc::pthread_t) -> u64 {
    // `pthread_t` is an integer on Linux and a pointer on some other systems.
    t as usize as u64
}

/// The calling thread's kernel thread id (`gettid()` on Linux), as CPython's
/// `_thread.get_native_id()`.
///
/// # Panics
///
/// Never in practice: only if the kernel returned a negative thread id.
#[must_use]
pub fn native_id() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: `SYS_gettid` takes no arguments, has no preconditions and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        u64::try_from(tid).expect("gettid returned a negative id")
    }
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        let mut tid: u64 = 0;
        // SAFETY: a null thread means the calling thread; `tid` is a valid, writable u64.
        unsafe { libc::pthread_threadid_np(0, &mut tid) };
        tid
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios"
    )))]
    {
        current_ident()
    }
}

/// Why a requested stack size was refused (Python raises `ValueError` for both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StackSizeError {
    /// The size was negative ("size must be 0 or a positive value").
    Negative,
    /// Below [`STACK_SIZE_MIN`], or refused by `pthread_attr_setstacksize`
    /// ("size not valid: N bytes").
    Invalid(usize),
}

impl core::fmt::Display for StackSizeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StackSizeError::Negative => f.write_str("size must be 0 or a positive value"),
            StackSizeError::Invalid(size) => write!(f, "size not valid: {size} bytes"),
        }
    }
}

impl std::error::Error for StackSizeError {}

/// Validates a requested thread stack size like CPython's `_thread.stack_size`.
///
/// 0 means the platform default. A negative size is [`StackSizeError::Negative`]; a nonzero size
/// below [`STACK_SIZE_MIN`] or refused by `pthread_attr_setstacksize` is
/// [`StackSizeError::Invalid`]. There is no page-multiple check (CPython has none either).
///
/// # Errors
///
/// [`StackSizeError`] as above; Python raises `ValueError` with its `Display` text.
pub fn check_stack_size(size: isize) -> Result<usize, StackSizeError> {
    let Ok(size) = usize::try_from(size) else {
        return Err(StackSizeError::Negative);
    };
    if size == 0 {
        return Ok(0);
    }
    if size < STACK_SIZE_MIN {
        return Err(StackSizeError::Invalid(size));
    }
    let mut attr = Attr::new().map_err(|_| StackSizeError::Invalid(size))?;
    attr.set_stack_size(size)
        .map_err(|_| StackSizeError::Invalid(size))?;
    Ok(size)
}

static STACK_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The process-wide stack size for new threads used by [`spawn`]; 0 (the start value) means
/// the platform default.
#[must_use]
pub fn stack_size() -> usize {
    STACK_SIZE.load(Ordering::Relaxed)
}

/// Sets the process-wide stack size used by [`spawn`] and returns the previous one. The value
/// is stored as given: validate it with [`check_stack_size`] first.
pub fn set_stack_size(size: usize) -> usize {
    STACK_SIZE.swap(size, Ordering::Relaxed)
}

/// A thread start routine, declared `"C-unwind"` so that a forced unwind (`pthread_exit` during
/// interpreter finalization) may pass through it.
pub type RawEntry = unsafe extern "C-unwind" fn(*mut c_void) -> *mut c_void;

extern "C-unwind" {
    // `libc` declares the start routine as `extern "C"`, which forbids unwinding out of it;
    // this is the same C function with the start routine type we need. The calling
    // conventions are identical: "C-unwind" only adds permission to unwind.
    #[link_name = "pthread_create"]
    fn pthread_create_unwind(
        thread: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        start: RawEntry,
        arg: *mut c_void,
    ) -> c_int;
}

/// An initialised `pthread_attr_t`, destroyed on drop.
struct Attr(libc::pthread_attr_t);

impl Attr {
    fn new() -> io::Result<Attr> {
        let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
        // SAFETY: `attr` is valid writable memory for a `pthread_attr_t`.
        let rc = unsafe { libc::pthread_attr_init(attr.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: `pthread_attr_init` succeeded, so `attr` is initialised.
        Ok(Attr(unsafe { attr.assume_init() }))
    }

    fn set_stack_size(&mut self, size: usize) -> io::Result<()> {
        // SAFETY: `self.0` is an initialised attribute object, borrowed mutably. (`Attr::new`
        // moved it after `pthread_attr_init`: POSIX does not forbid that, and glibc, musl and
        // Apple's libc keep no pointers into the object itself, only to separate allocations.)
        let rc = unsafe { libc::pthread_attr_setstacksize(&mut self.0, size) };
        check(rc)
    }

    fn set_detached(&mut self) -> io::Result<()> {
        // SAFETY: as in `set_stack_size`.
        let rc = unsafe {
            libc::pthread_attr_setdetachstate(&mut self.0, libc::PTHREAD_CREATE_DETACHED)
        };
        check(rc)
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialised by `pthread_attr_init` and is destroyed only here.
        unsafe { libc::pthread_attr_destroy(&mut self.0) };
    }
}

fn check(rc: c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Starts a detached OS thread running `entry(arg)` and returns its `pthread_t` as a `u64`
/// (the same value [`current_ident`] returns on that thread).
///
/// The stack is `stack` bytes if nonzero, else the platform default: no size is set then, so
/// glibc uses `RLIMIT_STACK` (usually 8 MiB) as CPython's threads do, never Rust's 2 MiB.
/// # Errors
///
/// Those of `pthread_attr_setstacksize` (`EINVAL` for a size it refuses) and `pthread_create`
/// (e.g. `EAGAIN` when the system is out of threads or memory for the stack).
///
/// # Safety
///
/// - `entry` must be sound to call with `arg`, once, on a new thread, at any time after this
///   call starts (the caller keeps no borrow alive for it).
/// - If this returns `Ok`, ownership of whatever `arg` points to passes to the new thread; if it
///   returns `Err`, `entry` is never called and `arg` remains the caller's to free.
/// - No Rust panic may escape `entry` (catch it, as [`spawn`] does). The only unwinding allowed
///   out of it is a forced unwind (`pthread_exit`, thread cancellation).
pub unsafe fn spawn_raw(stack: usize, entry: RawEntry, arg: *mut c_void) -> io::Result<u64> {
    let mut attr = Attr::new()?;
    if stack != 0 {
        attr.set_stack_size(stack)?;
    }
    attr.set_detached()?;
    let mut thread = MaybeUninit::<libc::pthread_t>::uninit();
    // SAFETY:
    // - `thread` is writable memory for a `pthread_t`, and `attr` an initialised attribute
    //   object; both outlive the call.
    // - The caller guarantees that `entry(arg)` is sound on the new thread (see `# Safety`).
    let rc = unsafe { pthread_create_unwind(thread.as_mut_ptr(), &attr.0, entry, arg) };
    check(rc)?;
    // SAFETY: `pthread_create` succeeded, so it stored the new thread's id.
    let thread = unsafe { thread.assume_init() };
    Ok(pthread_to_u64(thread))
}

/// Runs `f` on a new detached thread, with the process-wide [`stack_size`] (0 = the platform
/// default, as in [`spawn_raw`]), and returns the new thread's ident.
///
/// A panic in `f` is caught at the thread's boundary: the panic hook has already printed it,
/// and the thread just ends. (Only if dropping the panic payload panics again is the process
/// aborted, as `std::thread` does.)
///
/// # Errors
///
/// As [`spawn_raw`]; `f` is dropped on this thread then.
pub fn spawn<F: FnOnce() + Send + 'static>(f: F) -> io::Result<u64> {
    unsafe extern "C-unwind" fn trampoline<F: FnOnce() + Send + 'static>(
        arg: *mut c_void,
    ) -> *mut c_void {
        // SAFETY: `arg` is the `Box<F>` leaked by `spawn`, whose ownership `spawn_raw` passed
        // to this thread; it is reclaimed exactly once, here.
        let f = unsafe { Box::from_raw(arg.cast::<F>()) };
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)))
                .is_err()
            {
                std::process::abort();
            }
        }
        ptr::null_mut()
    }

    let arg = Box::into_raw(Box::new(f)).cast::<c_void>();
    // SAFETY:
    // - `trampoline::<F>` is sound to call with `arg`: it reclaims the `Box<F>` that `arg` is,
    //   and `F: Send + 'static` may move to and outlive this thread.
    // - No panic leaves `trampoline`: both `catch_unwind`s stop them.
    let r = unsafe { spawn_raw(stack_size(), trampoline::<F>, arg) };
    if r.is_err() {
        // SAFETY: on error the thread was not started, so `arg` is still our `Box<F>`.
        drop(unsafe { Box::from_raw(arg.cast::<F>()) });
    }
    r
}

/// Sets the calling thread's OS-visible name (`pthread_setname_np`), for Rust callers.
///
/// The name is truncated to [`NAME_MAXLEN`] bytes on a UTF-8 character boundary. (Python
/// 3.14's `_thread.set_name` cuts at the byte limit even inside a character; the binding
/// follows it through [`set_current_name_bytes`].)
///
/// # Errors
///
/// `InvalidInput` if the name contains NUL; `Unsupported` where the platform has no thread
/// names; otherwise the error of `pthread_setname_np`.
pub fn set_current_name(name: &str) -> io::Result<()> {
    let mut end = name.len().min(NAME_MAXLEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    if name.contains('\0') {
        return Err(nul_error());
    }
    set_current_name_bytes(&name.as_bytes()[..end])
}

/// Like [`set_current_name`] for an already encoded name: truncated to [`NAME_MAXLEN`] bytes
/// (no character boundaries here).
///
/// # Errors
///
/// As [`set_current_name`].
pub fn set_current_name_bytes(name: &[u8]) -> io::Result<()> {
    if name.contains(&0) {
        return Err(nul_error());
    }
    let name = &name[..name.len().min(NAME_MAXLEN)];
    let mut buf = [0 as c_char; NAME_MAXLEN + 1];
    for (dst, &src) in buf.iter_mut().zip(name) {
        *dst = src as c_char;
    }
    set_name_cstr(&buf)
}

fn nul_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "thread name contains a NUL byte",
    )
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_name_cstr(buf: &[c_char; NAME_MAXLEN + 1]) -> io::Result<()> {
    // SAFETY: `buf` is NUL-terminated (its last byte is never written) and at most 16 bytes
    // long with the NUL, Linux's limit; `pthread_self()` is a live thread (the caller).
    let rc = unsafe { libc::pthread_setname_np(libc::pthread_self(), buf.as_ptr()) };
    check(rc)
}

#[cfg(any(target_os = "macos", target_os = "ios"))]
fn set_name_cstr(buf: &[c_char; NAME_MAXLEN + 1]) -> io::Result<()> {
    // SAFETY: `buf` is NUL-terminated (its last byte is never written).
    let rc = unsafe { libc::pthread_setname_np(buf.as_ptr()) };
    check(rc)
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios"
)))]
fn set_name_cstr(_buf: &[c_char; NAME_MAXLEN + 1]) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// The calling thread's OS-visible name (`pthread_getname_np`), as Python 3.14's
/// `_thread._get_name`; bytes that are not UTF-8 are replaced with U+FFFD.
///
/// # Errors
///
/// As [`current_name_bytes`].
pub fn current_name() -> io::Result<String> {
    Ok(String::from_utf8_lossy(&current_name_bytes()?).into_owned())
}

/// The calling thread's OS-visible name as the raw bytes the OS keeps, for callers that
/// decode it themselves (with Python's filesystem encoding, say).
///
/// # Errors
///
/// `Unsupported` where the platform has no thread names; otherwise the error of
/// `pthread_getname_np`.
pub fn current_name_bytes() -> io::Result<Vec<u8>> {
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios"
    ))]
    {
        // Room for macOS's 64-byte names too.
        let mut buf = [0 as c_char; 64];
        // SAFETY: `buf` is writable for `buf.len()` bytes, the length we pass; the calling
        // thread is alive.
        let rc =
            unsafe { libc::pthread_getname_np(libc::pthread_self(), buf.as_mut_ptr(), buf.len()) };
        check(rc)?;
        Ok(buf
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect())
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios"
    )))]
    {
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_stack_size_cases() {
        assert_eq!(check_stack_size(-1), Err(StackSizeError::Negative));
        assert_eq!(check_stack_size(isize::MIN), Err(StackSizeError::Negative));
        assert_eq!(check_stack_size(1), Err(StackSizeError::Invalid(1)));
        assert_eq!(check_stack_size(32767), Err(StackSizeError::Invalid(32767)));
        assert_eq!(check_stack_size(0), Ok(0));
        assert_eq!(check_stack_size(32768), Ok(32768));
        assert_eq!(check_stack_size(32769), Ok(32769));
        assert_eq!(check_stack_size(1 << 20), Ok(1 << 20));
    }

    #[test]
    fn stack_size_error_messages() {
        assert_eq!(
            StackSizeError::Negative.to_string(),
            "size must be 0 or a positive value"
        );
        assert_eq!(
            StackSizeError::Invalid(1).to_string(),
            "size not valid: 1 bytes"
        );
    }

    #[test]
    fn ident_is_stable_and_nonzero() {
        assert_ne!(current_ident(), 0);
        assert_eq!(current_ident(), current_ident());
        assert_ne!(native_id(), 0);
        assert_eq!(native_id(), native_id());
    }

    #[test]
    fn names_truncate_and_reject_nul() {
        // Runs on a thread of its own so the test harness's thread name stays intact.
        std::thread::spawn(|| {
            set_current_name("short").unwrap();
            assert_eq!(current_name().unwrap(), "short");
            set_current_name("exactly15bytes!").unwrap();
            assert_eq!(current_name().unwrap(), "exactly15bytes!");
            set_current_name("sixteen bytes!!!").unwrap();
            assert_eq!(current_name().unwrap(), "sixteen bytes!!");
            // 14 ASCII bytes then a 2-byte character: cut before it, not through it.
            set_current_name("abcdefghijklmné").unwrap();
            assert_eq!(current_name().unwrap(), "abcdefghijklmn");
            assert_eq!(
                set_current_name("a\0b").unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(
                set_current_name_bytes(b"a\0b").unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            set_current_name_bytes(b"0123456789abcdefXYZ").unwrap();
            assert_eq!(current_name().unwrap(), "0123456789abcde");
            set_current_name("").unwrap();
            assert_eq!(current_name().unwrap(), "");
        })
        .join()
        .unwrap();
    }
}
