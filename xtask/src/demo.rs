//! `cargo xtask demo`: boots a 6.12 VM and runs the embedded workload
//! (demo.sh): a 3-layer overlay, ovltrace tracing it, and writes that cause
//! copy-ups.

use std::{fs, process::ExitCode};

use anyhow::{Context, Result};

use crate::{kernels::Series, util, vm};

const DEMO_SCRIPT: &str = include_str!("demo.sh");

pub fn run() -> Result<ExitCode> {
    let dir = util::cache_dir()?.join("demo");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("demo.sh");
    fs::write(&script, DEMO_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let script = script.to_str().context("non-UTF-8 cache path")?.to_string();
    let args = vm::VmArgs {
        kernel: Series::V6_12,
        mem: None,
        smp: None,
        timeout: 600,
        include: vec![format!("{script}:/host/demo.sh")],
        icount: false,
        console: false,
        with: Vec::new(),
        docker_image: Vec::new(),
        append: None,
        no_build: false,
        cmd: vec!["sh".into(), "/host/demo.sh".into()],
    };
    vm::run(&args)
}
