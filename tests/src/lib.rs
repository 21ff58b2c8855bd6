//! The one helper library of ovltrace's tests that need more than the crate
//! itself: a VM, root, a daemon (Docker, containerd, Podman) or an installed
//! tool (Chromium, promtool, the deploy linters). They live in `tests/tests/`
//! (VM tests are the `vm_*` ones); hermetic tests live in `ovltrace/tests/`
//! and next to the code. docs/testing.md says which goes where.
//!
//! - [`require`], [`require_or_skip`], [`require_or_skip_with`]: the skip
//!   policy for missing prerequisites. In [`strict`] mode
//!   (`OVLTRACE_TEST_STRICT=1`, set by `cargo xtask test` and so by CI; or
//!   `CI=true`) a missing prerequisite fails the test; otherwise the test
//!   prints a loud `SKIPPED:` line and returns early.
//! - [`bin`]: the ovltrace binary of this workspace, built for host tests.
//! - [`vm`]: run a shell script (or a command) inside a VM booted by
//!   `cargo xtask vm`, capture its output and exit code, extract sections.
//! - [`host_docker`]: a Docker daemon on the host and offline-built images
//!   to load into VMs.
//! - [`attribution`]: checks of a traced workload on the attribution image
//!   for runtimes without an init layer (containerd, Podman).
//! - [`images`]: the cached multi-layer attribution image and Docker's own
//!   description of it (layers, diff-ids, instructions).
//! - [`browser`]: headless Chromium: finding it, rendering a page to a PNG or
//!   to its DOM, reading what it logged.
//! - [`reports`]: synthetic reports built with `report::build`, some with
//!   hostile names; [`cli`]: the one-line error check of the binary. Both are
//!   also compiled into hermetic tests of `ovltrace/tests` by `#[path]`.
//! - [`promtool`], [`deploy_tool`], [`cache_dir`]: where the tools that
//!   `cargo xtask setup` installs are.
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
pub mod bin;
pub mod browser;
pub mod cli;
pub mod host_docker;
pub mod images;
pub mod reports;
pub mod vm;

use std::{
    env,
    io::Write as _,
    path::{Path, PathBuf},
};

/// The kernel series the VM tests run on.
pub const KERNELS: [&str; 2] = ["6.1", "6.12"];

/// The workspace root (where `cargo xtask` works).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Whether missing prerequisites must fail tests: `OVLTRACE_TEST_STRICT=1`
/// (`cargo xtask test` sets it), or, when that is unset, `CI=true` (or `1`),
/// as CI services set it, so that a plain `cargo test` in CI cannot skip
/// silently either. `OVLTRACE_TEST_STRICT=0` turns it off.
pub fn strict() -> bool {
    match env::var("OVLTRACE_TEST_STRICT") {
        Ok(v) => v == "1",
        Err(_) => env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
    }
}

/// Checks a named prerequisite and applies the skip policy: returns true when
/// it is available; otherwise fails the test in strict mode (panics), or
/// prints `SKIPPED: <what> (<reason>)` to stderr and returns false.
///
/// Known names: `vm` (qemu and busybox-static for `cargo xtask vm`),
/// `docker` (Debian's docker.io: dockerd and its CLI), `bpftrace`, `root`,
/// `busybox` (busybox-static, for images built offline), `containerd`
/// (its `ctr`), `podman`.
/// For anything else use [`require_or_skip_with`] or [`require`].
pub fn require_or_skip(what: &str) -> bool {
    require_or_skip_with(what, check(what))
}

/// [`require_or_skip`] with a check done by the caller: `Err(reason)` when
/// the prerequisite is missing.
pub fn require_or_skip_with(what: &str, available: Result<(), String>) -> bool {
    require(what, available).is_some()
}

/// The skip policy on a value the test needs (a tool's path, a daemon's
/// guard): `Some` when available; otherwise a panic in strict mode, or a
/// loud `SKIPPED:` line and `None`.
///
/// ```no_run
/// let Some(promtool) = ovltrace_tests::require("promtool", ovltrace_tests::promtool()) else {
///     return;
/// };
/// ```
pub fn require<T>(what: &str, available: Result<T, String>) -> Option<T> {
    match available {
        Ok(v) => Some(v),
        Err(reason) if strict() => {
            panic!("prerequisite missing: {what} ({reason}); strict mode (OVLTRACE_TEST_STRICT=1 or CI=true) makes this a failure")
        }
        Err(reason) => {
            // Straight to stderr, not through eprintln!: the test harness
            // captures that and shows nothing for a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "\n**********************************************************\n\
                 SKIPPED: {what} ({reason})\n  \
                 set up with `cargo xtask setup`, or run `cargo xtask test`\n\
                 **********************************************************"
            );
            None
        }
    }
}

/// Where `cargo xtask` keeps downloads, images and tool venvs:
/// `$OVLTRACE_CACHE`, else `~/.cache/ovltrace` (as xtask's `cache_dir`).
pub fn cache_dir() -> PathBuf {
    match env::var_os("OVLTRACE_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".cache/ovltrace"),
    }
}

/// Debian's promtool (package prometheus) on PATH.
pub fn promtool() -> Result<PathBuf, String> {
    on_path("promtool")
        .map_err(|e| format!("{e} (apt-get install prometheus, or cargo xtask setup)"))
}

/// The bin directory of the deploy linters' venv (`cargo xtask setup` makes
/// it; xtask's `DEPLOY_VENV`).
pub fn deploy_venv_bin() -> PathBuf {
    cache_dir().join("deploy-venv/bin")
}

/// A tool of the deploy linters' venv (`<cache>/deploy-venv/bin`, made by
/// `cargo xtask setup`: hadolint, kubernetes-validate, its python3), else
/// on PATH.
pub fn deploy_tool(name: &str) -> Result<PathBuf, String> {
    let in_venv = deploy_venv_bin().join(name);
    if in_venv.is_file() {
        return Ok(in_venv);
    }
    on_path(name).map_err(|e| {
        format!(
            "{e}, nor in {} (cargo xtask setup installs it there)",
            deploy_venv_bin().display()
        )
    })
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
        "bpftrace" => on_path("bpftrace").map(drop),
        "busybox" => file("/usr/bin/busybox", "busybox-static"),
        "containerd" => file("/usr/bin/ctr", "containerd"),
        "podman" => file("/usr/bin/podman", "podman"),
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

/// The first `name` on PATH.
pub fn on_path(name: &str) -> Result<PathBuf, String> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} not on PATH"))
}

fn file(path: &str, package: &str) -> Result<(), String> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(format!("{path} missing (package {package})"))
    }
}
