//! `cargo xtask test`: the one test command (README and CI use it).
//! setup, fmt check, clippy -D warnings, release build, then the tests of
//! the workspace's default members with OVLTRACE_TEST_STRICT=1 (a missing
//! prerequisite fails instead of skipping).

use std::{
    process::ExitCode,
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
        if let Err(e) = &result {
            say!("test: {name} FAILED: {e}");
        }
        steps.push(Step {
            name,
            elapsed: t.elapsed(),
            result,
        });
        ok
    };

    // A failed setup or build makes every later step meaningless.
    let mut ok = record("setup", &mut || setup::run(setup::Verbosity::Steps));
    if ok && !args.no_lint {
        record("cargo fmt --check", &mut || {
            util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))
        });
        // Default members only: --workspace would build the eBPF crate's
        // binary for the host, which cannot work.
        record("cargo clippy", &mut || {
            util::run(util::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))
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
            util::run(&mut cmd)
        });
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
