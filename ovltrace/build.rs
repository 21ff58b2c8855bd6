//! Builds the kernel-side crate for the bpfel target and places the object in OUT_DIR.
//!
//! The eBPF crate needs `-Z build-std=core`; Debian's rustc with its matching std
//! source is linked into rustup as a custom toolchain by `cargo xtask setup`.
//! Set AYA_BUILD_SKIP=1 to build user space alone (unit tests of pure logic):
//! the binary then carries an empty object and `run` says so.

use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=OVLTRACE_BPF_TOOLCHAIN");
    let toolchain =
        env::var("OVLTRACE_BPF_TOOLCHAIN").unwrap_or_else(|_| "ovltrace-bpf".to_string());
    // aya-build passes -Z build-std only when RUSTC_BOOTSTRAP allows it.
    env::set_var("RUSTC_BOOTSTRAP", "1");
    let out = PathBuf::from(env::var("OUT_DIR")?).join("ovltrace");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    if skip {
        fs::write(&out, b"")?;
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .join("../ovltrace-ebpf")
        .canonicalize()?;
    let root = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "ovltrace-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
