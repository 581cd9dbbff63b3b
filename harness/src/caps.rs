//! Capability names (capabilities(7)) and bit sets.

/// Capability names in bit order, from include/uapi/linux/capability.h.
const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub const SYS_PTRACE: u32 = 19;
pub const SYS_ADMIN: u32 = 21;

/// A capability set as the kernel stores it: one bit per capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSet(pub u64);

impl serde::Serialize for CapSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#x}", self.0))
    }
}

impl CapSet {
    /// Every capability this kernel interface knows (`CAP_LAST_CAP` and below): what root
    /// holds outside a restricted container.
    pub fn all() -> CapSet {
        CapSet((1u64 << NAMES.len()) - 1)
    }
    /// The names of the capabilities in the set, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        (0..NAMES.len())
            .filter(|&b| self.has(b as u32))
            .map(|b| NAMES[b])
            .collect()
    }
    pub fn has(self, cap: u32) -> bool {
        self.0 & (1u64 << cap) != 0
    }
    pub fn without(self, other: CapSet) -> CapSet {
        CapSet(self.0 & !other.0)
    }
    pub fn is_subset_of(self, other: CapSet) -> bool {
        self.0 & !other.0 == 0
    }
}

/// Real, effective and saved user and group ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Ids {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
}

/// What `__ptrace_may_access` and `cap_ptrace_access_check` look at in a process's creds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Credentials {
    pub ids: Ids,
    pub permitted: CapSet,
    pub effective: CapSet,
}

/// The number of a capability name; accepts `CAP_SYS_PTRACE` or `sys_ptrace`.
pub fn from_name(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

/// A set from a list of names; the error names the first unknown one.
pub fn set_from_names(names: &[String]) -> Result<CapSet, String> {
    let mut set = 0u64;
    for n in names {
        let bit = from_name(n)
            .ok_or_else(|| format!("unknown capability `{n}` (use names like CAP_SYS_PTRACE)"))?;
        set |= 1u64 << bit;
    }
    Ok(CapSet(set))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(from_name("CAP_SYS_PTRACE"), Some(SYS_PTRACE));
        assert_eq!(from_name("sys_admin"), Some(SYS_ADMIN));
        assert_eq!(from_name("CAP_NOPE"), None);
        let s = set_from_names(&["CAP_SYS_PTRACE".into()]).unwrap();
        assert!(s.has(SYS_PTRACE));
        assert!(s.is_subset_of(CapSet(u64::MAX)));
        assert!(!CapSet(u64::MAX).is_subset_of(s));
    }
}
