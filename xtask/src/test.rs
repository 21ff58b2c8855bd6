//! `cargo xtask test`: the one test command (README and CI use it).
//! setup, fmt check, clippy -D warnings, release build, then the tests of
//! the workspace's default members with OVLTRACE_TEST_STRICT=1 (a missing
//! prerequisite fails instead of skipping), then each cargo-fuzz target of
//! tests/fuzz for a bounded time (a crash fails the step).

use std::{
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;

use crate::{say, setup, util};

#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    /// Skip fmt and clippy (quicker iteration on tests).
    #[arg(long)]
    pub no_lint: bool,
    /// Seconds each fuzz target runs (0: skip fuzzing).
    #[arg(long, default_value_t = FUZZ_SECS)]
    pub fuzz_secs: u64,
    /// Extra arguments passed to `cargo test` (after `--` they go to the
    /// test binaries), e.g. `-- vm_smoke`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_test_args: Vec<String>,
}

struct Step {
    name: &'static str,
    elapsed: Duration,
    result: Result<(), String>,
}

pub fn run(args: &TestArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let mut steps = Vec::new();
    let mut record = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| -> bool {
        say!("test: == {name}");
        let t = Instant::now();
        let result = f().map_err(|e| format!("{e:#}"));
        let ok = result.is_ok();
        if result.is_err() {
            say!("test: {name} FAILED (why: at the end)");
        }
        steps.push(Step {
            name,
            elapsed: t.elapsed(),
            result,
        });
        ok
    };

    // A failed setup or build makes every later step meaningless.
    let mut ok = record("setup", &mut || {
        setup::run(setup::Needs::All, setup::Verbosity::Steps)
    });
    if ok && !args.no_lint {
        record("cargo fmt --check", &mut || {
            util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))
        });
        // Default members only: --workspace would build the eBPF crate's
        // binary for the host, which cannot work.
        record("cargo clippy", &mut || {
            util::run_logged(
                util::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]),
                &log("clippy"),
                true,
            )
        });
    }
    if ok {
        ok = record("cargo build --release -p ovltrace", &mut || {
            util::run(util::cargo().args(["build", "--release", "-p", "ovltrace"]))
        });
    }
    if ok {
        record("cargo test", &mut || {
            let mut cmd = util::cargo();
            // --no-fail-fast: report every failing test binary, not the first.
            cmd.args(["test", "--no-fail-fast"])
                .args(&args.cargo_test_args)
                .env("OVLTRACE_TEST_STRICT", "1");
            util::run_logged(&mut cmd, &log("cargo-test"), true)
        });
    }

    if ok && args.fuzz_secs > 0 {
        record("cargo fuzz (each target)", &mut || fuzz(args.fuzz_secs));
    }

    say!("test: summary");
    let mut failed = 0;
    for step in &steps {
        let status = match &step.result {
            Ok(()) => "ok",
            Err(_) => {
                failed += 1;
                "FAILED"
            }
        };
        say!(
            "test:   {:<36} {:>7} {:>8.1} s",
            step.name,
            status,
            step.elapsed.as_secs_f64()
        );
    }
    // Why each failed step failed, last: CI logs are read from the end.
    for step in &steps {
        if let Err(e) = &step.result {
            say!("test: why `{}` failed: {e}", step.name);
        }
    }
    say!(
        "test: {} in {:.1} s",
        if failed == 0 { "all passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where a step's full output is kept (the terminal gets a digest on failure).
fn log(step: &str) -> std::path::PathBuf {
    util::workspace_root()
        .join("target/xtask-logs")
        .join(format!("{step}.log"))
}

/// Default seconds per fuzz target in `cargo xtask test`.
pub const FUZZ_SECS: u64 = 20;
/// The cargo-fuzz project (its own workspace; needs nightly).
const FUZZ_DIR: &str = "tests/fuzz";
pub const FUZZ_TARGETS: [&str; 3] = ["mountinfo", "docker_metadata", "event_decode"];

/// `cargo +nightly fuzz run` of every target for `secs` seconds each, from
/// the committed seeds plus the corpus kept in tests/fuzz/corpus (ignored by
/// git). libFuzzer exits non-zero on a crash, a leak or a timeout and leaves
/// the input in tests/fuzz/artifacts.
pub fn fuzz(secs: u64) -> Result<()> {
    let nightly =
        util::raw_output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]))?;
    if !nightly.status.success() {
        anyhow::bail!(
            "cargo-fuzz needs a nightly toolchain and rustup has none: `rustup toolchain install nightly`"
        );
    }
    let root = util::workspace_root();
    let mut failed = Vec::new();
    for target in FUZZ_TARGETS {
        let corpus = root.join(FUZZ_DIR).join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let seeds = root.join(FUZZ_DIR).join("seeds").join(target);
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&root)
            .args(["+nightly", "fuzz", "run", "--fuzz-dir", FUZZ_DIR, target])
            .arg(&corpus)
            .arg(&seeds)
            .args([
                "--",
                &format!("-max_total_time={secs}"),
                "-print_final_stats=1",
            ])
            // The fuzz build needs no eBPF programs (and must not build them
            // with sanitizer flags); it keeps its own target dir.
            .env("AYA_BUILD_SKIP", "1")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("RUSTUP_TOOLCHAIN");
        // libFuzzer's progress lines go to the log only.
        let log = log(&format!("fuzz-{target}"));
        say!(
            "test: fuzz {target} for {secs} s (output: {})",
            log.display()
        );
        match util::run_logged(&mut cmd, &log, false) {
            Ok(()) => {
                let out = std::fs::read_to_string(&log).unwrap_or_default();
                for line in out
                    .lines()
                    .filter(|l| l.starts_with("stat::") || l.starts_with("Done "))
                {
                    say!("test: fuzz {target}: {line}");
                }
            }
            Err(e) => {
                say!("test: fuzz {target} FAILED: {e:#}");
                failed.push(target);
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "fuzz targets failed: {} (inputs in {FUZZ_DIR}/artifacts)",
            failed.join(", ")
        );
    }
    Ok(())
}
