//! Errno names. Cases and reports speak in names (`EFAULT`), never numbers.

/// The errnos this suite can predict or observe, with their x86-64 numbers.
const TABLE: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("ESRCH", libc::ESRCH),
    ("EINTR", libc::EINTR),
    ("EIO", libc::EIO),
    ("E2BIG", libc::E2BIG),
    ("EBADF", libc::EBADF),
    ("EAGAIN", libc::EAGAIN),
    ("ENOMEM", libc::ENOMEM),
    ("EACCES", libc::EACCES),
    ("EFAULT", libc::EFAULT),
    ("EBUSY", libc::EBUSY),
    ("EINVAL", libc::EINVAL),
    ("ENOSYS", libc::ENOSYS),
    ("EOVERFLOW", libc::EOVERFLOW),
    // Setup failures: a MAP_FIXED_NOREPLACE collision, an io_uring ring off its place,
    // O_TMPFILE refused (gVisor's gofer).
    ("EEXIST", libc::EEXIST),
    ("EADDRNOTAVAIL", libc::EADDRNOTAVAIL),
    ("EISDIR", libc::EISDIR),
];

/// The number for an errno name, or `None` for a name this suite does not know.
pub fn from_name(name: &str) -> Option<i32> {
    TABLE.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// The name of an errno number; unknown numbers render as `errno<N>`.
pub fn name(errno: i32) -> String {
    TABLE
        .iter()
        .find(|(_, v)| *v == errno)
        .map(|(n, _)| (*n).to_string())
        .unwrap_or_else(|| format!("errno{errno}"))
}

/// All known names, for error messages that list the choices.
pub fn known_names() -> Vec<&'static str> {
    TABLE.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (n, v) in TABLE {
            assert_eq!(from_name(n), Some(*v));
            assert_eq!(name(*v), *n);
        }
        assert_eq!(from_name("EWHATEVER"), None);
        assert_eq!(name(9999), "errno9999");
        // Setup failures are reported by name too.
        assert_eq!(name(libc::EEXIST), "EEXIST");
    }
}
