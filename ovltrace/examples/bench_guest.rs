//! Helper that `cargo xtask bench` runs inside its VM (guest side).
//!
//! Busybox's `date` has no `%N` and /proc/uptime counts in 10 ms steps, so
//! timing goes through here (CLOCK_MONOTONIC, nanoseconds; under qemu
//! `-icount` guest time advances with instructions executed). It also builds
//! the workload trees quickly and runs the lookup storm with almost no
//! user-space cost per lookup, which a shell loop cannot do.
//!
//! Subcommands (all print one line on stdout):
//! - `time CMD [ARGS...]`: runs CMD, prints `<elapsed ns> <exit code>`;
//! - `tree DIR DIRS FILES_PER_DIR BYTES`: DIR/dNNN/fNNN, small files;
//! - `bigfile PATH MIB`: a file of MIB MiB of non-zero data (no holes);
//! - `lookup-layers BASE LAYERS EXISTING`: BASE/l1..lLAYERS, each with a
//!   directory `d`; file `d/e<i>` goes into layer `i % LAYERS + 1`;
//! - `lookups DIR EXISTING PASSES`: PASSES times: drop the dentry caches,
//!   then stat `e0..e<EXISTING>` and `m0..m<EXISTING>` (missing) in DIR;
//!   prints `<ns spent in the stat loops> <found> <missing>`;
//! - `cpu PID`: CPU time of every thread of PID in ns (from schedstat) and
//!   their context switches (voluntary and not): `<ns> <switches>`;
//! - `progstats`: one line per loaded BPF program (walked with
//!   BPF_PROG_GET_NEXT_ID): `<id> <type> <name> <run_cnt> <run_time_ns>`
//!   (name `-` when empty). The counters come from the fdinfo of a
//!   descriptor for the program and only advance while
//!   `kernel.bpf_stats_enabled` is 1.

use std::{
    ffi::CString,
    fs,
    io::Write,
    os::unix::{ffi::OsStrExt, process::ExitStatusExt},
    path::Path,
    process::{Command, ExitCode},
};

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_guest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<String> {
    let (cmd, rest) = args
        .split_first()
        .ok_or("usage: bench_guest time|tree|bigfile|lookup-layers|lookups|cpu|progstats ...")?;
    match cmd.as_str() {
        "time" => time(rest),
        "tree" => {
            let [dir, dirs, files, bytes] = rest else {
                return Err("usage: tree DIR DIRS FILES_PER_DIR BYTES".into());
            };
            tree(Path::new(dir), num(dirs)?, num(files)?, num(bytes)?)
        }
        "bigfile" => {
            let [path, mib] = rest else {
                return Err("usage: bigfile PATH MIB".into());
            };
            bigfile(Path::new(path), num(mib)?)
        }
        "lookup-layers" => {
            let [base, layers, existing] = rest else {
                return Err("usage: lookup-layers BASE LAYERS EXISTING".into());
            };
            lookup_layers(Path::new(base), num(layers)?, num(existing)?)
        }
        "lookups" => {
            let [dir, existing, passes] = rest else {
                return Err("usage: lookups DIR EXISTING PASSES".into());
            };
            lookups(Path::new(dir), num(existing)?, num(passes)?)
        }
        "cpu" => {
            let [pid] = rest else {
                return Err("usage: cpu PID".into());
            };
            cpu_ns(num(pid)?).map(|(ns, sw)| format!("{ns} {sw}"))
        }
        "progstats" => progstats(),
        other => Err(format!("unknown subcommand {other:?}")),
    }
}

fn num(s: &str) -> Result<usize> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

/// CLOCK_MONOTONIC in nanoseconds.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a local timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn time(cmd: &[String]) -> Result<String> {
    let (prog, args) = cmd.split_first().ok_or("usage: time CMD [ARGS...]")?;
    let mut child = Command::new(prog);
    child.args(args);
    let t0 = now_ns();
    let status = child
        .status()
        .map_err(|e| format!("starting {prog}: {e}"))?;
    let elapsed = now_ns() - t0;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(format!("{elapsed} {code}"))
}

fn tree(dir: &Path, dirs: usize, files: usize, bytes: usize) -> Result<String> {
    let data = vec![b'x'; bytes];
    for d in 0..dirs {
        let sub = dir.join(format!("d{d:03}"));
        fs::create_dir_all(&sub).map_err(|e| format!("mkdir {}: {e}", sub.display()))?;
        for f in 0..files {
            let p = sub.join(format!("f{f:03}"));
            fs::write(&p, &data).map_err(|e| format!("writing {}: {e}", p.display()))?;
        }
    }
    Ok(format!("{} dirs, {} files", dirs, dirs * files))
}

fn bigfile(path: &Path, mib: usize) -> Result<String> {
    let chunk = vec![b'x'; 1 << 20];
    let mut f = fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    for _ in 0..mib {
        f.write_all(&chunk)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(format!("{mib} MiB"))
}

fn lookup_layers(base: &Path, layers: usize, existing: usize) -> Result<String> {
    if layers == 0 {
        return Err("at least one layer".into());
    }
    for l in 1..=layers {
        let d = base.join(format!("l{l}/d"));
        fs::create_dir_all(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    for i in 0..existing {
        let p = base.join(format!("l{}/d/e{i}", i % layers + 1));
        fs::write(&p, b"").map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    Ok(format!("{layers} layers, {existing} files"))
}

fn drop_dentries() -> Result<()> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .map_err(|e| format!("opening drop_caches: {e}"))?;
    f.write_all(b"2")
        .map_err(|e| format!("writing drop_caches: {e}"))
}

fn lookups(dir: &Path, existing: usize, passes: usize) -> Result<String> {
    let mut names = Vec::with_capacity(2 * existing);
    for prefix in ["e", "m"] {
        for i in 0..existing {
            names.push(CString::new(format!("{prefix}{i}")).map_err(|e| e.to_string())?);
        }
    }
    let cdir = CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: valid NUL-terminated path.
    let dirfd = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dirfd < 0 {
        return Err(format!(
            "opening {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    let (mut total, mut found, mut missing) = (0u64, 0usize, 0usize);
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    for _ in 0..passes {
        drop_dentries()?;
        let t0 = now_ns();
        for n in &names {
            // SAFETY: valid dirfd, NUL-terminated name, valid out-buffer.
            let rc =
                unsafe { libc::fstatat(dirfd, n.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
            if rc == 0 {
                found += 1;
            } else {
                missing += 1;
            }
        }
        total += now_ns() - t0;
    }
    // SAFETY: our own descriptor.
    unsafe { libc::close(dirfd) };
    Ok(format!("{total} {found} {missing}"))
}

fn cpu_ns(pid: usize) -> Result<(u64, u64)> {
    let tasks = format!("/proc/{pid}/task");
    let (mut ns, mut switches) = (0u64, 0u64);
    for entry in fs::read_dir(&tasks).map_err(|e| format!("{tasks}: {e}"))? {
        let Ok(entry) = entry else { continue };
        if let Ok(text) = fs::read_to_string(entry.path().join("schedstat")) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(text) = fs::read_to_string(entry.path().join("status")) {
            for line in text.lines() {
                if let Some(v) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    switches += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    Ok((ns, switches))
}

fn progstats() -> Result<String> {
    use std::os::fd::{AsFd, AsRawFd};
    let mut lines = Vec::new();
    for info in aya::programs::loaded_programs() {
        let info = info.map_err(|e| format!("walking the loaded programs: {e}"))?;
        // A program unloaded between the walk and here has no descriptor.
        let Ok(fd) = info.fd() else { continue };
        let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
        let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| "0".into())
        };
        let name = match info.name_as_str() {
            Some(n) if !n.is_empty() => n.replace(char::is_whitespace, "_"),
            _ => "-".into(),
        };
        let kind = format!("{:?}", info.program_type());
        let kind = kind.strip_prefix("BPF_PROG_TYPE_").unwrap_or(&kind);
        lines.push(format!(
            "{} {} {name} {} {}",
            field("prog_id"),
            kind.to_ascii_lowercase(),
            field("run_cnt"),
            field("run_time_ns")
        ));
    }
    Ok(lines.join("\n"))
}
