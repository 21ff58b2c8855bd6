//! `cargo xtask vm`: boots a Debian cloud kernel under qemu (TCG) with an
//! initramfs holding busybox, overlay.ko and the freshly built ovltrace, runs
//! one command in it and exits with that command's exit code.
//!
//! Output plumbing: four serial ports. ttyS0 is the kernel console and goes to
//! a log file (shown on failure, or live with `--console`); ttyS1 and ttyS2
//! carry the command's stdout and stderr to ours; ttyS3 is a control channel
//! on which /init reports the exit code. So the command's output is exactly
//! what it wrote, free of console noise.

use std::{
    collections::VecDeque,
    fs::{self, File},
    io::{self, BufRead, BufReader, Read, Write},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::{
    initramfs::{self, Entry, Recipe, VM_ETC},
    kernels::{self, Series},
    say, util,
};

/// Exit code when the VM ran out of time (as timeout(1)).
pub const EXIT_TIMEOUT: u8 = 124;
/// Exit code when the guest died or its set-up failed before the command
/// could report an exit code.
pub const EXIT_GUEST_FAILED: u8 = 125;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum With {
    /// dockerd, containerd, runc and the docker CLI; /init starts the daemons.
    Docker,
    /// bpftrace and its libraries.
    Bpftrace,
    /// containerd (standalone, overlayfs snapshotter), its runc shim, runc and
    /// ctr; /init starts containerd.
    Containerd,
    /// Podman (rootful, daemonless), conmon, runc and containers-common's
    /// configuration; /init prepares cgroup2 and /var/lib.
    Podman,
}

#[derive(Args, Debug, Clone)]
pub struct VmArgs {
    /// Kernel series to boot (the current Debian cloud kernel of it).
    #[arg(long, value_enum)]
    pub kernel: Series,
    /// Guest memory in MB [default: 1024, 2048 with a container runtime].
    #[arg(long, value_name = "MB")]
    pub mem: Option<u32>,
    /// Guest CPUs [default: 2; 1 with --icount].
    #[arg(long, value_name = "N")]
    pub smp: Option<u32>,
    /// Kill the VM after this many seconds (exit code 124).
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub timeout: u64,
    /// Copy a host file or directory into the guest (default guest path:
    /// /host/<basename>). Repeatable.
    #[arg(long, value_name = "HOST_PATH[:GUEST_PATH]")]
    pub include: Vec<String>,
    /// Deterministic timing for benchmarks: guest time advances by
    /// instructions executed (`-icount shift=0,sleep=off`, one CPU).
    #[arg(long)]
    pub icount: bool,
    /// Also stream the kernel console to stderr.
    #[arg(long)]
    pub console: bool,
    /// Extra software in the guest. Repeatable or comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub with: Vec<With>,
    /// A `docker save` tarball to `docker load` before the command (implies
    /// --with docker). Repeatable.
    #[arg(long, value_name = "TAR")]
    pub docker_image: Vec<PathBuf>,
    /// Extra kernel command-line parameters (e.g. `quiet`).
    #[arg(long, value_name = "PARAMS", allow_hyphen_values = true)]
    pub append: Option<String>,
    /// Don't build ovltrace; use the release binary already built.
    #[arg(long)]
    pub no_build: bool,
    /// The command to run in the guest, with its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<String>,
}

impl VmArgs {
    fn docker(&self) -> bool {
        self.with.contains(&With::Docker) || !self.docker_image.is_empty()
    }

    fn containerd(&self) -> bool {
        self.with.contains(&With::Containerd)
    }

    fn podman(&self) -> bool {
        self.with.contains(&With::Podman)
    }

    /// Some container runtime runs in the guest.
    fn containers(&self) -> bool {
        self.docker() || self.containerd() || self.podman()
    }
}

pub fn run(args: &VmArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let ovltrace = if args.no_build {
        release_binary_path()?
    } else {
        build_release()?
    };
    let kernel = kernels::resolve(args.kernel)?;

    let run_dir = RunDir::create()?;
    let mut parts = vec![initramfs::base(&kernel)?.cached()?];
    if args.docker() {
        parts.push(initramfs::docker()?.cached()?);
    }
    if args.with.contains(&With::Bpftrace) {
        parts.push(initramfs::bpftrace()?.cached()?);
    }
    if args.containerd() {
        parts.push(initramfs::containerd()?.cached()?);
    }
    if args.podman() {
        parts.push(initramfs::podman()?.cached()?);
    }
    let per_run = run_dir.path.join("run.cpio");
    per_run_recipe(args, &ovltrace)?.write(&per_run)?;
    parts.push(per_run);
    let initrd = run_dir.path.join("initrd");
    initramfs::concatenate(&parts, &initrd)?;
    let prepared = started.elapsed();

    let boot = Instant::now();
    let outcome = boot_qemu(args, &kernel.vmlinuz, &initrd, &run_dir.path)?;
    let booted = boot.elapsed();

    let console_log = run_dir.path.join("console.log");
    let kept_log = util::cache_dir()?.join("last-console.log");
    let _ = fs::copy(&console_log, &kept_log);
    let code = match outcome {
        Outcome::Exited(code) => {
            say!(
                "vm {} ({}): exit {code}, boot-to-poweroff {:.1} s (prepared in {:.1} s)",
                args.kernel.name(),
                kernel.release,
                booted.as_secs_f64(),
                prepared.as_secs_f64()
            );
            code
        }
        Outcome::TimedOut => {
            say!(
                "vm: timed out after {} s; kernel console tail:",
                args.timeout
            );
            print_tail(&console_log, 60);
            say!("full console log: {}", kept_log.display());
            EXIT_TIMEOUT
        }
        Outcome::SetupFailed(reason) => {
            say!("vm: guest set-up failed: {reason}; kernel console tail:");
            print_tail(&console_log, 60);
            say!("full console log: {}", kept_log.display());
            EXIT_GUEST_FAILED
        }
        Outcome::Died(status) => {
            say!("vm: guest died without reporting an exit code (qemu: {status}); kernel console tail:");
            print_tail(&console_log, 60);
            print_tail(&run_dir.path.join("qemu.log"), 20);
            say!("full console log: {}", kept_log.display());
            EXIT_GUEST_FAILED
        }
    };
    Ok(ExitCode::from(code))
}

/// `cargo build --release -p ovltrace`; returns the binary's path.
fn build_release() -> Result<PathBuf> {
    let out = util::cargo()
        .args(["build", "--release", "-p", "ovltrace"])
        .args(["--message-format=json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("cargo build --release -p ovltrace failed: {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "ovltrace"
            && msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo build reported no ovltrace executable")
}

/// The release binary's path without building (for `--no-build`).
fn release_binary_path() -> Result<PathBuf> {
    let out = util::output(util::cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let meta: serde_json::Value = serde_json::from_str(&out).context("parsing cargo metadata")?;
    let target = meta["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    let exe = Path::new(target).join("release/ovltrace");
    if !exe.is_file() {
        bail!(
            "{} does not exist; build it or drop --no-build",
            exe.display()
        );
    }
    Ok(exe)
}

/// The per-run archive: ovltrace, the command, settings, includes, images.
fn per_run_recipe(args: &VmArgs, ovltrace: &Path) -> Result<Recipe> {
    let mut r = Recipe::new("run");
    r.binary_with_libs_at("usr/bin/ovltrace", ovltrace)?;

    let mut script = String::from("# generated by cargo xtask vm\n");
    let words: Vec<String> = args.cmd.iter().map(|w| util::sh_quote(w)).collect();
    script.push_str(&words.join(" "));
    script.push('\n');
    r.bytes(&format!("{VM_ETC}/cmd.sh"), 0o755, script);

    let mut images = Vec::new();
    for (i, tar) in args.docker_image.iter().enumerate() {
        if !tar.is_file() {
            bail!("--docker-image {}: no such file", tar.display());
        }
        let guest = format!("/images/{i}.tar");
        r.push(Entry::HostFile {
            guest: guest.clone(),
            host: tar.clone(),
        });
        images.push(guest);
    }
    let config = format!(
        "VM_DOCKER={}\nVM_CONTAINERD={}\nVM_PODMAN={}\nVM_IMAGES={}\n",
        u8::from(args.docker()),
        u8::from(args.containerd()),
        u8::from(args.podman()),
        util::sh_quote(&images.join(" "))
    );
    r.bytes(&format!("{VM_ETC}/config"), 0o644, config);

    for spec in &args.include {
        let (host, guest) = parse_include(spec)?;
        if fs::symlink_metadata(&host).is_err() {
            bail!("--include {spec}: {} does not exist", host.display());
        }
        r.push(Entry::HostTree { guest, host });
    }
    Ok(r)
}

/// `HOST_PATH[:GUEST_PATH]`; the guest path defaults to /host/<basename>.
fn parse_include(spec: &str) -> Result<(PathBuf, String)> {
    let (host, guest) = match spec.split_once(':') {
        Some((h, g)) if !g.is_empty() => (h, Some(g)),
        Some((h, _)) => (h, None),
        None => (spec, None),
    };
    let host = PathBuf::from(host);
    let guest = match guest {
        Some(g) => {
            if !g.starts_with('/') {
                bail!("--include {spec}: the guest path must be absolute");
            }
            g.to_string()
        }
        None => {
            let base = host
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_os_string()))
                .or_else(|| host.file_name().map(|n| n.to_os_string()))
                .with_context(|| format!("--include {spec}: no file name"))?;
            let base = base
                .to_str()
                .with_context(|| format!("--include {spec}: non-UTF-8 name"))?
                .to_string();
            format!("/host/{base}")
        }
    };
    Ok((host, guest))
}

/// A per-run scratch directory under the cache, removed when dropped.
/// Directories left by killed runs are removed by the next run.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create() -> Result<Self> {
        let runs = util::cache_dir()?.join("runs");
        fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        if let Ok(entries) = fs::read_dir(&runs) {
            for entry in entries.flatten() {
                let stale = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i32>().ok())
                    // SAFETY: kill with signal 0 only checks for existence.
                    .is_some_and(|pid| unsafe { libc::kill(pid, 0) } != 0);
                if stale {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let path = runs.join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

enum Outcome {
    Exited(u8),
    TimedOut,
    SetupFailed(String),
    Died(String),
}

fn boot_qemu(args: &VmArgs, vmlinuz: &Path, initrd: &Path, dir: &Path) -> Result<Outcome> {
    let (console_r, console_w) = io::pipe().context("creating pipe")?;
    let (stdout_r, stdout_w) = io::pipe().context("creating pipe")?;
    let (stderr_r, stderr_w) = io::pipe().context("creating pipe")?;
    let (ctl_r, ctl_w) = io::pipe().context("creating pipe")?;
    let fds = [
        console_w.as_raw_fd(),
        stdout_w.as_raw_fd(),
        stderr_w.as_raw_fd(),
        ctl_w.as_raw_fd(),
    ];

    let mem = args
        .mem
        .unwrap_or(if args.containers() { 2048 } else { 1024 });
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-no-reboot", "-cpu", "max", "-m", &mem.to_string()]);
    if args.icount {
        cmd.args(["-accel", "tcg", "-icount", "shift=0,sleep=off"])
            .args(["-smp", &args.smp.unwrap_or(1).to_string()]);
    } else {
        // One host thread for all vCPUs: with multi-threaded TCG, a vCPU can
        // run a kernel text location another vCPU is patching (static keys,
        // kprobes) and die of an int3 oops (seen in cgroup_mkdir on 6.12).
        cmd.args(["-accel", "tcg,thread=single"])
            .args(["-smp", &args.smp.unwrap_or(2).to_string()]);
    }
    cmd.arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(kernel_cmdline(args.append.as_deref()));
    for fd in fds {
        cmd.args(["-serial", &format!("file:/dev/fd/{fd}")]);
    }
    let qemu_log = File::create(dir.join("qemu.log")).context("creating qemu.log")?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(qemu_log);
    // SAFETY: only async-signal-safe calls (fcntl, prctl, getppid) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // qemu must not outlive the harness, however the harness ends.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                return Err(io::Error::other("harness already gone"));
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", util::describe(&cmd)))?;
    // Our copies of the write ends must go, or the readers never see EOF.
    drop((console_w, stdout_w, stderr_w, ctl_w));

    let console_log = File::create(dir.join("console.log")).context("creating console.log")?;
    let show_console = args.console;
    let console_thread = thread::spawn(move || {
        let mut sinks: Vec<Box<dyn Write>> = vec![Box::new(console_log)];
        if show_console {
            sinks.push(Box::new(io::stderr()));
        }
        forward(console_r, &mut sinks)
    });
    let stdout_thread = thread::spawn(move || forward(stdout_r, &mut [io::stdout()]));
    let stderr_thread = thread::spawn(move || forward(stderr_r, &mut [io::stderr()]));
    let (ctl_tx, ctl_rx) = mpsc::channel();
    let ctl_thread = thread::spawn(move || {
        for line in BufReader::new(ctl_r).lines() {
            let Ok(line) = line else { break };
            if ctl_tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let status = wait_until(&mut child, deadline)?;
    let timed_out = status.is_none();
    if timed_out {
        let _ = child.kill();
        let _ = child.wait();
    }
    let console_last = console_thread.join().ok().flatten();
    let _ = stdout_thread.join();
    let stderr_last = stderr_thread.join().ok().flatten();
    // Keep the harness's own messages on lines of their own.
    let shown_last = if show_console {
        console_last.or(stderr_last)
    } else {
        stderr_last
    };
    if shown_last.is_some_and(|b| b != b'\n') {
        eprintln!();
    }
    let _ = ctl_thread.join();

    let mut outcome = None;
    for line in ctl_rx.try_iter() {
        if let Some(code) = line.strip_prefix("EXIT ") {
            let code: i64 = code.trim().parse().unwrap_or(i64::from(EXIT_GUEST_FAILED));
            outcome = Some(Outcome::Exited(u8::try_from(code & 0xff).unwrap_or(1)));
        } else if let Some(reason) = line.strip_prefix("SETUP-FAILED ") {
            outcome = Some(Outcome::SetupFailed(reason.to_string()));
        }
    }
    Ok(match (outcome, status) {
        (Some(o), _) => o,
        (None, None) => Outcome::TimedOut,
        (None, Some(status)) => Outcome::Died(status.to_string()),
    })
}

/// `panic=-1` reboots at once on a panic, which `-no-reboot` turns into an
/// exit, so a crashed guest does not hang until the timeout.
fn kernel_cmdline(extra: Option<&str>) -> String {
    let mut line = String::from("console=ttyS0 panic=-1 8250.nr_uarts=4");
    if let Some(extra) = extra {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

/// Waits for the child until `deadline`; `None` on timeout.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<std::process::ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Copies a pipe to the sinks as data arrives; returns the last byte seen.
fn forward<W: Write>(mut src: impl Read, sinks: &mut [W]) -> Option<u8> {
    let mut buf = [0u8; 8192];
    let mut last = None;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return last,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return last,
        };
        last = Some(buf[n - 1]);
        for sink in sinks.iter_mut() {
            let _ = sink.write_all(&buf[..n]);
            let _ = sink.flush();
        }
    }
}

fn print_tail(path: &Path, lines: usize) {
    let Ok(text) = fs::read(path) else { return };
    let text = String::from_utf8_lossy(&text);
    let mut tail: VecDeque<&str> = VecDeque::with_capacity(lines);
    for line in text.lines() {
        if tail.len() == lines {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    for line in tail {
        eprintln!("  | {}", line.trim_end_matches('\r'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_specs() {
        let (h, g) = parse_include("/etc/hostname").unwrap();
        assert_eq!(
            (h, g.as_str()),
            (PathBuf::from("/etc/hostname"), "/host/hostname")
        );
        let (h, g) = parse_include("some/dir:/data/x").unwrap();
        assert_eq!((h, g.as_str()), (PathBuf::from("some/dir"), "/data/x"));
        assert!(parse_include("a:relative").is_err());
    }
}
