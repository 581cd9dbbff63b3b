//! userfaultfd(2), raw: the target registers its own regions and (for `uffd` regions) a
//! handler thread resolves each fault. Everything here runs in a forked target, so it makes
//! raw syscalls only and never allocates.
//!
//! Layouts from uapi `linux/userfaultfd.h` (x86-64, the same from 5.10 on):
//! `struct uffdio_api { u64 api, features, ioctls }`, `struct uffdio_range { u64 start, len }`,
//! `struct uffdio_register { range; u64 mode, ioctls }`,
//! `struct uffdio_copy { u64 dst, src, len, mode; s64 copy }`,
//! `struct uffdio_zeropage { range; u64 mode; s64 zeropage }`,
//! `struct uffdio_writeprotect { range; u64 mode }`, and the 32-byte `struct uffd_msg`
//! (`u8 event` at 0, `pagefault.address` at 16).

#![allow(unsafe_code)]

const UFFD_API: u64 = 0xAA;
/// `_IOWR(0xAA, nr, size)`.
const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (0xAA << 8) | nr
}
const UFFDIO_API: u64 = iowr(0x3F, 24);
const UFFDIO_REGISTER: u64 = iowr(0x00, 32);
const UFFDIO_COPY: u64 = iowr(0x03, 40);
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, 32);
const UFFDIO_WRITEPROTECT: u64 = iowr(0x06, 24);
pub const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
pub const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
pub const MODE_MISSING: u64 = 1;
pub const MODE_WP: u64 = 2;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

fn ioctl(fd: i32, req: u64, arg: &mut [u64]) -> Result<(), i32> {
    // SAFETY: every request above takes a pointer to a struct of exactly `arg.len()` u64s
    // (the size encoded in the request), which the kernel reads and writes in place.
    let r = unsafe { libc::ioctl(fd, req as libc::c_ulong, arg.as_mut_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// A new userfaultfd with the API handshake done and `features` requested.
pub fn open(features: u64) -> Result<i32, (i32, &'static str)> {
    // SAFETY: userfaultfd takes one integer flag and returns a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC as libc::c_long) };
    if fd < 0 {
        return Err((errno(), "userfaultfd"));
    }
    let fd = fd as i32;
    let mut api = [UFFD_API, features, 0];
    if let Err(e) = ioctl(fd, UFFDIO_API, &mut api) {
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::close(fd) };
        return Err((e, "ioctl(UFFDIO_API)"));
    }
    Ok(fd)
}

/// `UFFDIO_REGISTER` of `[start, start+len)` with `mode`.
pub fn register(fd: i32, start: u64, len: u64, mode: u64) -> Result<(), (i32, &'static str)> {
    let mut reg = [start, len, mode, 0];
    ioctl(fd, UFFDIO_REGISTER, &mut reg).map_err(|e| (e, "ioctl(UFFDIO_REGISTER)"))
}

/// `UFFDIO_WRITEPROTECT` (mode WP) of `[start, start+len)`.
pub fn write_protect(fd: i32, start: u64, len: u64) -> Result<(), (i32, &'static str)> {
    let mut wp = [start, len, UFFDIO_WRITEPROTECT_MODE_WP];
    ioctl(fd, UFFDIO_WRITEPROTECT, &mut wp).map_err(|e| (e, "ioctl(UFFDIO_WRITEPROTECT)"))
}

/// Whether userfaultfd works here with the SIGBUS feature and anonymous WP registration.
/// Probed on a scratch page ([`super::with_scratch_page`]).
pub fn available() -> bool {
    let Ok(fd) = open(UFFD_FEATURE_SIGBUS | UFFD_FEATURE_PAGEFAULT_FLAG_WP) else {
        return false;
    };
    let ok = super::with_scratch_page(|p| register(fd, p, 4096, MODE_MISSING | MODE_WP).is_ok())
        .unwrap_or(false);
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    ok
}

/// What a handler thread serves: one registered region.
#[derive(Debug, Clone, Copy)]
pub struct Handler {
    pub fd: i32,
    pub start: u64,
    pub len: u64,
    pub tag: u8,
    /// `UFFDIO_ZEROPAGE` instead of `UFFDIO_COPY` of the pattern.
    pub zero: bool,
}

/// Serves page faults on `h.fd` forever: each missing page of the region gets the bytes
/// `layout::fill_words` would have written (`(tag << 56) | offset` per 8-byte word), or the
/// zero page. Returns only if the descriptor fails (the target is being torn down).
pub fn serve(h: &Handler) -> ! {
    let mut page = [0u64; 512];
    loop {
        let mut msg = [0u8; 32];
        // SAFETY: reads one uffd_msg into a local buffer of its size.
        let n = unsafe { libc::read(h.fd, msg.as_mut_ptr().cast(), msg.len()) };
        if n != msg.len() as isize {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            // Nothing more will come: stay idle until the target exits.
            loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            }
        }
        if msg[0] != UFFD_EVENT_PAGEFAULT {
            continue;
        }
        let addr = u64::from_le_bytes(msg[16..24].try_into().unwrap_or([0; 8])) & !4095;
        if addr < h.start || addr >= h.start + h.len {
            continue;
        }
        let r = if h.zero {
            let mut z = [addr, 4096, 0, 0];
            ioctl(h.fd, UFFDIO_ZEROPAGE, &mut z)
        } else {
            let off = addr - h.start;
            for (i, w) in page.iter_mut().enumerate() {
                *w = ((h.tag as u64) << 56) | (off + 8 * i as u64);
            }
            let mut c = [addr, page.as_ptr() as u64, 4096, 0, 0];
            ioctl(h.fd, UFFDIO_COPY, &mut c)
        };
        // EEXIST: another fault on the same page was resolved first; the waiter retries.
        let _ = r;
    }
}
