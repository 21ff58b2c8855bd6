//! Facts read from the running kernel and the local file system: BTF
//! offsets, overlay mounts, capabilities, and file access that never follows
//! a link out of a directory.

pub mod btf;
pub mod module_btf;
pub mod mounts;
pub mod privilege;
pub mod safe_fs;

/// Kernel release string (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Host name, as in /proc/sys/kernel/hostname.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Loading eBPF programs needs root.
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("ovltrace needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN) to load eBPF programs; run it with sudo");
    }
    Ok(())
}
