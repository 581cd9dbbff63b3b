//! One error type for everything that stops the matrix before a kernel result exists: bad
//! input (kernels.yaml, --kernel-image, ids), the archive, the cache, qemu. Each is one line
//! that names the thing and the fix; the binary exits 2 for all of them. A kernel that boots
//! badly is *not* an error: it is that kernel's `broken` result.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep it one line whatever the source said.
        f.write_str(&self.0.replace('\n', " "))
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
