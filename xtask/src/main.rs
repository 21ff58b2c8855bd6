//! Build, test and VM tooling for ovltrace: `cargo xtask <subcommand>`.

mod bench;
mod cpio;
mod demo;
mod dist;
mod initramfs;
mod kernels;
mod setup;
mod test;
mod util;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use setup::{Needs, Verbosity};

#[derive(Parser)]
#[command(about = "ovltrace build, test and VM tooling")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything the project needs on Debian 12 (as root); idempotent.
    Setup,
    /// Boot a Debian cloud kernel in qemu and run a command in it.
    Vm(vm::VmArgs),
    /// fmt check, clippy, build and all tests, VM tests included.
    Test(test::TestArgs),
    /// Boot a VM and show ovltrace tracing copy-ups of a small workload
    /// (installs only what the demo needs).
    Demo,
    /// A static release binary (musl) with the eBPF programs embedded,
    /// packed as target/dist/ovltrace-VERSION-x86_64-linux.tar.gz.
    Dist,
    /// Overhead in a VM (ratios to untraced, bpftrace and the empty-probe
    /// floor) and user-space costs on the host; rewrites BENCHMARKS.md.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Cmd::Setup => setup::run(Needs::All, Verbosity::Steps).map(|()| ExitCode::SUCCESS),
        Cmd::Vm(args) => setup::run(Needs::All, Verbosity::Summary).and_then(|()| vm::run(args)),
        Cmd::Test(args) => test::run(args),
        // Only what the demo needs: not the fuzz toolchain, the deploy
        // linters, the browser or the other runtimes.
        Cmd::Demo => setup::run(Needs::Demo, Verbosity::Summary).and_then(|()| demo::run()),
        Cmd::Dist => setup::run(Needs::Demo, Verbosity::Summary)
            .and_then(|()| dist::run())
            .map(|()| ExitCode::SUCCESS),
        Cmd::Bench(args) => {
            setup::run(Needs::All, Verbosity::Summary).and_then(|()| bench::run(args))
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            say!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
