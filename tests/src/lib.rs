//! Helpers for ovltrace's integration tests.
//!
//! - [`vm`]: run a shell script (or a command) inside a VM booted by
//!   `cargo xtask vm`, capture its output and exit code, extract sections.
//! - [`host_docker`]: a Docker daemon on the host and offline-built images
//!   to load into VMs.
//! - [`attribution`]: checks of a traced workload on the attribution image
//!   for runtimes without an init layer (containerd, Podman).
//! - [`images`]: the cached multi-layer attribution image and Docker's own
//!   description of it (layers, diff-ids, instructions).
//! - [`require_or_skip`]: the skip policy for missing prerequisites. With
//!   `OVLTRACE_TEST_STRICT=1` (set by `cargo xtask test` and so by CI) a
//!   missing prerequisite fails the test; otherwise the test prints a loud
//!   `SKIPPED:` line and returns early.
//!
//! ```no_run
//! use ovltrace_tests::{require_or_skip, vm};
//!
//! if !require_or_skip("vm") {
//!     return;
//! }
//! let out = vm::run("6.12", &vm::VmOpts::default(), "ovltrace --version > /tmp/v\novl_section version /tmp/v\n");
//! out.assert_exit(0);
//! assert!(out.section("version").unwrap().starts_with("ovltrace"));
//! ```

pub mod attribution;
pub mod host_docker;
pub mod images;
pub mod vm;

use std::{
    env,
    path::{Path, PathBuf},
};

/// The kernel series the VM tests run on.
pub const KERNELS: [&str; 2] = ["6.1", "6.12"];

/// The workspace root (where `cargo xtask` works).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Whether missing prerequisites must fail tests (`OVLTRACE_TEST_STRICT=1`).
pub fn strict() -> bool {
    env::var("OVLTRACE_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// Checks a named prerequisite and applies the skip policy: returns true when
/// it is available; otherwise fails the test in strict mode (panics), or
/// prints `SKIPPED: <what> (<reason>)` to stderr and returns false.
///
/// Known names: `vm` (qemu and busybox-static for `cargo xtask vm`),
/// `docker` (Debian's docker.io: dockerd and its CLI), `bpftrace`, `root`.
/// For anything else use [`require_or_skip_with`].
pub fn require_or_skip(what: &str) -> bool {
    require_or_skip_with(what, check(what))
}

/// [`require_or_skip`] with a check done by the caller: `Err(reason)` when
/// the prerequisite is missing.
pub fn require_or_skip_with(what: &str, available: Result<(), String>) -> bool {
    match available {
        Ok(()) => true,
        Err(reason) if strict() => {
            panic!("prerequisite missing: {what} ({reason}); OVLTRACE_TEST_STRICT=1 makes this a failure")
        }
        Err(reason) => {
            eprintln!();
            eprintln!("**********************************************************");
            eprintln!("SKIPPED: {what} ({reason})");
            eprintln!("  set up with `cargo xtask setup`, or run `cargo xtask test`");
            eprintln!("**********************************************************");
            false
        }
    }
}

fn check(what: &str) -> Result<(), String> {
    match what {
        "vm" => {
            on_path("qemu-system-x86_64")?;
            file("/usr/bin/busybox", "busybox-static")
        }
        "docker" => {
            file("/usr/sbin/dockerd", "docker.io")?;
            file("/usr/bin/docker", "docker.io")
        }
        "bpftrace" => on_path("bpftrace"),
        // SAFETY: geteuid has no preconditions.
        "root" => match unsafe { libc::geteuid() } {
            0 => Ok(()),
            uid => Err(format!("running as uid {uid}")),
        },
        other => {
            panic!("require_or_skip: unknown prerequisite {other:?}; use require_or_skip_with")
        }
    }
}

fn on_path(name: &str) -> Result<(), String> {
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|d| d.join(name).is_file()) {
        Ok(())
    } else {
        Err(format!("{name} not on PATH"))
    }
}

fn file(path: &str, package: &str) -> Result<(), String> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(format!("{path} missing (package {package})"))
    }
}
