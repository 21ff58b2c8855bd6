//! Running scripts in VMs through `cargo xtask vm`.
//!
//! VMs are heavy (the machines have two cores), so every call holds an
//! exclusive file lock for the whole boot: VMs of all test binaries and
//! threads run one at a time.
//!
//! Scripts run under busybox `sh` in /tmp, as root, with `ovltrace` on PATH.
//! [`run`] defines a shell function for them, `ovl_section NAME [FILE]`, which
//! prints FILE (or its stdin) between `==> BEGIN NAME` and `==> END NAME`
//! lines; [`VmOutput::section`] gets that text back on the host.

use std::{
    env,
    fs::{self, File},
    io::{self, Write as _},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

/// Options of one VM run (the flags of `cargo xtask vm`).
#[derive(Debug, Clone, Default)]
pub struct VmOpts {
    /// `--with docker`: dockerd is running when the script starts.
    pub docker: bool,
    /// `--with bpftrace`.
    pub bpftrace: bool,
    /// `--with containerd`: a standalone containerd is running.
    pub containerd: bool,
    /// `--with podman`: podman, conmon and runc are installed.
    pub podman: bool,
    /// `--docker-image TAR`: `docker save` tarballs loaded before the script.
    pub docker_images: Vec<PathBuf>,
    /// `--include HOST:GUEST`.
    pub includes: Vec<(PathBuf, String)>,
    /// `--mem MB`.
    pub mem_mb: Option<u32>,
    /// `--smp N`.
    pub smp: Option<u32>,
    /// `--timeout SECS` (the harness defaults to 900).
    pub timeout_secs: Option<u64>,
    /// `--icount`: deterministic guest time, one CPU.
    pub icount: bool,
    /// `--no-build`: use the release binary as it is.
    pub no_build: bool,
}

impl VmOpts {
    pub fn with_docker(mut self) -> Self {
        self.docker = true;
        self
    }

    pub fn with_bpftrace(mut self) -> Self {
        self.bpftrace = true;
        self
    }

    pub fn with_containerd(mut self) -> Self {
        self.containerd = true;
        self
    }

    pub fn with_podman(mut self) -> Self {
        self.podman = true;
        self
    }

    pub fn docker_image(mut self, tar: impl Into<PathBuf>) -> Self {
        self.docker_images.push(tar.into());
        self
    }

    pub fn include(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.includes.push((host.into(), guest.into()));
        self
    }

    pub fn timeout(mut self, secs: u64) -> Self {
        self.timeout_secs = Some(secs);
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.docker {
            args.extend(["--with".into(), "docker".into()]);
        }
        if self.bpftrace {
            args.extend(["--with".into(), "bpftrace".into()]);
        }
        if self.containerd {
            args.extend(["--with".into(), "containerd".into()]);
        }
        if self.podman {
            args.extend(["--with".into(), "podman".into()]);
        }
        for tar in &self.docker_images {
            args.extend(["--docker-image".into(), tar.display().to_string()]);
        }
        for (host, guest) in &self.includes {
            args.extend(["--include".into(), format!("{}:{guest}", host.display())]);
        }
        if let Some(mem) = self.mem_mb {
            args.extend(["--mem".into(), mem.to_string()]);
        }
        if let Some(smp) = self.smp {
            args.extend(["--smp".into(), smp.to_string()]);
        }
        if let Some(t) = self.timeout_secs {
            args.extend(["--timeout".into(), t.to_string()]);
        }
        if self.icount {
            args.push("--icount".into());
        }
        if self.no_build {
            args.push("--no-build".into());
        }
        args
    }
}

/// What a VM run produced.
#[derive(Debug, Clone)]
pub struct VmOutput {
    /// The harness's exit code: the command's, or 124 (timeout), 125 (the
    /// guest died or its set-up failed), 1 (the harness failed).
    pub code: Option<i32>,
    /// The command's stdout, byte for byte (lossily decoded).
    pub stdout: String,
    /// The command's stderr plus the harness's own lines (`xtask: ...`) and
    /// cargo's build output.
    pub stderr: String,
}

impl VmOutput {
    /// The text printed between the lines `==> BEGIN name` and
    /// `==> END name` on stdout (each line with its newline), or None.
    pub fn section(&self, name: &str) -> Option<String> {
        let begin = format!("==> BEGIN {name}");
        let end = format!("==> END {name}");
        let mut lines = self.stdout.split_inclusive('\n');
        lines.find(|l| l.trim_end_matches(['\n', '\r']) == begin)?;
        let mut text = String::new();
        for line in lines {
            if line.trim_end_matches(['\n', '\r']) == end {
                return Some(text);
            }
            text.push_str(line);
        }
        None
    }

    /// stderr without the harness's and cargo's lines: what the command
    /// itself wrote (as far as it can be told apart).
    pub fn guest_stderr(&self) -> String {
        self.stderr
            .split_inclusive('\n')
            .filter(|l| !is_harness_line(l))
            .collect()
    }

    /// Panics with the whole output unless the exit code is `code`.
    pub fn assert_exit(&self, code: i32) {
        if self.code != Some(code) {
            panic!(
                "VM run exited with {:?}, expected {code}\n{}",
                self.code,
                self.dump()
            );
        }
    }

    /// Everything, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "---- exit code: {:?}\n---- stdout:\n{}\n---- stderr:\n{}\n----",
            self.code, self.stdout, self.stderr
        )
    }
}

fn is_harness_line(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("xtask: ")
        || l.starts_with("Compiling ")
        || l.starts_with("Finished ")
        || l.starts_with("Blocking waiting")
        || l.starts_with("warning: ovltrace")
}

/// Shell function made available to every script run by [`run`].
const SCRIPT_PRELUDE: &str = r#"# --- prelude added by ovltrace_tests::vm::run
ovl_section() {
	echo "==> BEGIN $1"
	if [ $# -ge 2 ]; then cat "$2"; else cat; fi > /tmp/.ovl_section
	cat /tmp/.ovl_section
	[ -s /tmp/.ovl_section ] && [ -n "$(tail -c 1 /tmp/.ovl_section)" ] && echo
	echo "==> END $1"
}
# ovl_trace OUT ERR ARGS...: starts `ovltrace run ARGS` in the background
# (stdout to OUT, stderr to ERR), sets $pid, and returns once it traces; exits
# 3 with its stderr if it ends or does not trace within 60 s.
ovl_trace() {
	_ovl_out=$1; _ovl_err=$2; shift 2
	ovltrace run "$@" > "$_ovl_out" 2> "$_ovl_err" &
	pid=$!
	i=0
	until grep -q '^Tracing' "$_ovl_err"; do
		i=$((i + 1))
		if [ $i -ge 600 ] || ! kill -0 $pid 2>/dev/null; then
			cat "$_ovl_err" >&2
			exit 3
		fi
		sleep 0.1
	done
}
# --- end of prelude
"#;

/// Runs `script` with busybox sh in a VM booted on `kernel` ("6.1" or
/// "6.12"). The exit code is the script's.
pub fn run(kernel: &str, opts: &VmOpts, script: &str) -> VmOutput {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = env::temp_dir().join(format!("ovltrace-test-{}-{n}.sh", std::process::id()));
    let text = format!("{SCRIPT_PRELUDE}{script}");
    if let Err(e) = fs::write(&path, text) {
        panic!("writing the test script {}: {e}", path.display());
    }
    let opts = opts.clone().include(path.clone(), "/host/test.sh");
    let out = run_cmd(kernel, &opts, &["sh", "/host/test.sh"]);
    let _ = fs::remove_file(&path);
    out
}

/// Runs one command (with its arguments, passed through exactly) in a VM.
/// A guest kernel that dies of an emulation fault (see [`emulation_crash`])
/// is booted once more, loudly.
pub fn run_cmd(kernel: &str, opts: &VmOpts, cmd: &[&str]) -> VmOutput {
    let out = run_cmd_once(kernel, opts, cmd);
    if !emulation_crash(&out) {
        return out;
    }
    // Straight to stderr, past the test harness's capture: a retry must show
    // even when the test then passes.
    let _ = writeln!(
        io::stderr(),
        "\n******** RETRYING the VM once: the guest kernel died of an int3 oops while \
         patching its own code (a qemu TCG race between emulated vCPUs, not an eBPF \
         program: those are verified). Console tail:\n{}\n********\n",
        out.stderr
            .lines()
            .filter(|l| l.trim_start().starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    run_cmd_once(kernel, opts, cmd)
}

/// The guest kernel died (exit 125) of an `int3` oops: text patching
/// (jump labels, static calls) raced with another emulated vCPU executing
/// the patched bytes. Seen once in CI in `cgroup_mkdir` -> `__kmalloc_node`
/// while dockerd started a container.
pub fn emulation_crash(out: &VmOutput) -> bool {
    out.code == Some(125) && out.stderr.contains("Oops: int3")
}

fn run_cmd_once(kernel: &str, opts: &VmOpts, cmd: &[&str]) -> VmOutput {
    let _lock = VmLock::acquire();
    let cargo = env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(crate::workspace_root())
        .args(["xtask", "vm", "--kernel", kernel])
        .args(opts.args())
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe. A VM must not outlive the test.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let output = match command.output() {
        Ok(o) => o,
        Err(e) => panic!("starting `cargo xtask vm`: {e}"),
    };
    let out = VmOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    // Captured by the test harness; shown when the test fails.
    eprintln!(
        "== cargo xtask vm --kernel {kernel} {} -- {} ({:.1} s)\n{}",
        opts.args().join(" "),
        cmd.join(" "),
        started.elapsed().as_secs_f64(),
        out.dump()
    );
    out
}

/// Serialises VMs across threads and processes.
struct VmLock {
    _file: File,
}

impl VmLock {
    fn acquire() -> Self {
        let dir = crate::cache_dir();
        if let Err(e) = fs::create_dir_all(&dir) {
            panic!("creating {}: {e}", dir.display());
        }
        let path = dir.join("vm.lock");
        let file = match File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => panic!("opening {}: {e}", path.display()),
        };
        // SAFETY: flock on a valid descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            panic!("locking {}: {}", path.display(), io::Error::last_os_error());
        }
        Self { _file: file }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: &str) -> VmOutput {
        VmOutput {
            code: Some(0),
            stdout: stdout.into(),
            stderr: "xtask: setup: all satisfied\nguest says\n".into(),
        }
    }

    #[test]
    fn only_int3_oopses_of_a_dead_guest_are_emulation_crashes() {
        let out = |code: i32, stderr: &str| VmOutput {
            code: Some(code),
            stdout: String::new(),
            stderr: stderr.into(),
        };
        let oops = "xtask: vm: guest died\n  | [ 24.5] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI\n";
        assert!(emulation_crash(&out(125, oops)));
        assert!(!emulation_crash(&out(1, oops)));
        assert!(!emulation_crash(&out(
            125,
            "  | [ 3.1] BUG: kernel NULL pointer dereference\n"
        )));
        assert!(!emulation_crash(&out(0, "")));
    }

    #[test]
    fn sections() {
        let out = output("x\n==> BEGIN a\n{\"k\": 1}\n==> END a\n==> BEGIN empty\n==> END empty\n");
        assert_eq!(out.section("a").as_deref(), Some("{\"k\": 1}\n"));
        assert_eq!(out.section("empty").as_deref(), Some(""));
        assert_eq!(out.section("missing"), None);
        let unterminated = output("==> BEGIN a\nxyz\n");
        assert_eq!(unterminated.section("a"), None);
    }

    #[test]
    fn guest_stderr_drops_harness_lines() {
        assert_eq!(output("").guest_stderr(), "guest says\n");
    }
}
