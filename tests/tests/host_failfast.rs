//! On a kernel where nothing can be attached to overlayfs (the build
//! machines: no kprobes, fentry refused with EPERM), `ovltrace run` fails
//! fast with the diagnosis, and `ovltrace doctor` shows the FAIL lines,
//! ends with a one-line verdict that says why, and exits 1.
//!
//! The timing bound is for the release binary (what users run, built by
//! `cargo xtask test` before the tests); when it is missing, the test binary
//! of this profile is measured against the same bound only if it is a
//! release build, and against a looser one otherwise. The bound applies to
//! the CPU time the run used (user + system), which does not depend on what
//! else the machine is doing; wall time gets a generous bound that only
//! catches waiting (a hang or a sleep).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use ovltrace_tests::{bin, require_or_skip, require_or_skip_with};

/// What "fails fast" means for the release binary.
const RELEASE_BOUND: Duration = Duration::from_secs(1);
/// Unoptimised code parses the kernel's BTF several times slower.
const DEBUG_BOUND: Duration = Duration::from_secs(5);
/// Wall-time bound: the machines are shared with builds and VMs.
const WALL_BOUND: Duration = Duration::from_secs(10);

/// CPU time (user + system) used by waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// This host cannot attach anything: no kprobe PMU nor kprobe_events.
fn host_has_no_kprobes() -> bool {
    !Path::new("/sys/bus/event_source/devices/kprobe").exists()
        && !Path::new("/sys/kernel/tracing/kprobe_events").exists()
        && !Path::new("/sys/kernel/debug/tracing/kprobe_events").exists()
}

/// The skip policy for what this host lacks (`why`).
fn skip(why: &str) {
    require_or_skip_with(why, Err::<(), _>("not on this host".into()));
}

/// The release binary when it exists, with the bound that applies to it;
/// otherwise this profile's.
fn binary() -> (PathBuf, Duration) {
    match bin::release() {
        Some(r) => (r, RELEASE_BOUND),
        None => (bin::ovltrace().to_path_buf(), DEBUG_BOUND),
    }
}

fn carries_programs(out: &Output) -> bool {
    !String::from_utf8_lossy(&out.stdout).contains("AYA_BUILD_SKIP")
        && !String::from_utf8_lossy(&out.stderr).contains("AYA_BUILD_SKIP")
}

#[test]
fn run_fails_fast_with_the_diagnosis() {
    // Root: run refuses to start without it.
    if !require_or_skip("root") {
        return;
    }
    if !host_has_no_kprobes() {
        return skip("a kernel without kprobes (this one has them: nothing to diagnose)");
    }
    let (bin, bound) = binary();
    // Best of three: the machine is shared with builds.
    let mut best = Duration::MAX;
    let mut best_wall = Duration::MAX;
    let mut out = None;
    for _ in 0..3 {
        let cpu = children_cpu();
        let t = Instant::now();
        let o = Command::new(&bin)
            .arg("run")
            .env_remove("RUST_LOG")
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
        best_wall = best_wall.min(t.elapsed());
        best = best.min(children_cpu().saturating_sub(cpu));
        out = Some(o);
    }
    let out = out.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}: {best:?} CPU, {best_wall:?} wall\n{err}", bin.display());
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty(), "no report without a trace");
    if !carries_programs(&out) {
        return skip("a binary with eBPF programs (built with AYA_BUILD_SKIP=1)");
    }
    assert!(
        best < bound,
        "{} used {best:?} of CPU to fail (bound {bound:?})",
        bin.display()
    );
    assert!(best_wall < WALL_BOUND, "{best_wall:?} to fail");
    // The diagnosis: every strategy tried, why each failed, what to run next.
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        "ovltrace: error: no probe could be attached to the overlayfs functions:"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("fentry: ") && l.contains("EPERM")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("kprobe: ")
                && l.contains("CONFIG_KPROBES is not set")),
        "{err}"
    );
    assert!(err.contains("ovltrace doctor"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn doctor_shows_the_fail_lines() {
    // Root: doctor's attach test.
    if !require_or_skip("root") {
        return;
    }
    if !host_has_no_kprobes() {
        return skip("a kernel without kprobes");
    }
    let (bin, _) = binary();
    let out = Command::new(&bin)
        .arg("doctor")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = |prefix: &str| -> &str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{text}"))
    };
    assert!(line("[FAIL] kprobes").contains("CONFIG_KPROBES is not set"));
    if carries_programs(&out) {
        assert!(line("[FAIL] fentry").contains("EPERM"), "{text}");
        assert!(line("[FAIL] attach test fentry").contains("EPERM"));
        assert!(line("[FAIL] attach test kprobe").contains("no kprobe support"));
    }
    // What run would keep after attaching, and why.
    assert!(
        line("[info] run keeps").contains("CAP_DAC_READ_SEARCH: reading the runtimes' metadata")
    );
    // The last line is the one-line verdict, with the reason.
    let verdict = text.lines().last().unwrap_or_default();
    assert!(
        verdict.starts_with("ovltrace run cannot trace overlayfs on this kernel: "),
        "{text}"
    );
    if carries_programs(&out) {
        assert!(
            verdict.contains("no probe attaches (tried fentry, kprobe)"),
            "{verdict}"
        );
        // No kprobes and fentry refused: the fix names both ways out.
        assert!(
            verdict.ends_with(
                "Fix: use a kernel with CONFIG_KPROBES=y, or one that allows fentry programs \
                 (BPF trampolines; not under lockdown)."
            ),
            "{verdict}"
        );
    }
}
