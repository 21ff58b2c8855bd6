//! `cargo xtask dist`: a release binary a user can copy to any x86_64 Linux
//! host: statically linked (musl), the eBPF programs embedded, packed as
//! `target/dist/ovltrace-VERSION-x86_64-linux.tar.gz` with its SHA-256.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::{say, util};

const TARGET: &str = "x86_64-unknown-linux-musl";

pub fn run() -> Result<()> {
    util::run(Command::new("rustup").args(["target", "add", TARGET]))?;
    util::run(util::cargo().args(["build", "--release", "-p", "ovltrace", "--target", TARGET]))?;
    let root = util::workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let binary = target_dir.join(TARGET).join("release/ovltrace");
    check_static(&binary)?;
    let version = util::output(Command::new(&binary).arg("--version"))?;
    let version = version
        .split_whitespace()
        .nth(1)
        .context("`ovltrace --version` printed no version")?
        .to_string();
    let name = format!("ovltrace-{version}-x86_64-linux");
    let dist = target_dir.join("dist");
    let stage = dist.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    fs::copy(&binary, stage.join("ovltrace")).context("copying the binary")?;
    // Debug info is three quarters of the file; a user's copy needs none.
    util::run(Command::new("strip").arg(stage.join("ovltrace")))?;
    for doc in ["README.md", "LICENSE"] {
        let src = root.join(doc);
        if src.exists() {
            fs::copy(&src, stage.join(doc)).with_context(|| format!("copying {doc}"))?;
        }
    }
    let tarball = dist.join(format!("{name}.tar.gz"));
    util::run(
        Command::new("tar")
            .arg("-C")
            .arg(&dist)
            .args(["--owner=0", "--group=0", "-czf"])
            .arg(&tarball)
            .arg(&name),
    )?;
    let bytes = fs::read(&tarball).with_context(|| format!("reading {}", tarball.display()))?;
    let sum = format!("{:x}", Sha256::digest(&bytes));
    let sum_file = dist.join(format!("{name}.tar.gz.sha256"));
    fs::write(&sum_file, format!("{sum}  {name}.tar.gz\n"))
        .with_context(|| format!("writing {}", sum_file.display()))?;
    say!("dist: {} ({} bytes)", tarball.display(), bytes.len());
    say!("dist: sha256 {sum}");
    Ok(())
}

/// The binary must need no shared library: no PT_INTERP (ELF program header
/// type 3), so no dynamic loader is asked for.
fn check_static(binary: &std::path::Path) -> Result<()> {
    let elf = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        bail!("{} is not a 64-bit ELF file", binary.display());
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[32..40].try_into().context("ELF header")?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = elf
            .get(at..at + 4)
            .context("truncated ELF program headers")?;
        if u32::from_le_bytes(kind.try_into().context("ELF program header")?) == 3 {
            bail!(
                "{} asks for a dynamic loader: not a static binary",
                binary.display()
            );
        }
    }
    Ok(())
}
