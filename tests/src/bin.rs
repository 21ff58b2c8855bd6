//! The ovltrace binary for host tests. Tests of another package get no
//! `CARGO_BIN_EXE_ovltrace`, so [`ovltrace`] asks cargo to build it (in this
//! test's profile, in the same target directory) and returns the path cargo
//! reports: never a stale binary left from an earlier build. It builds what
//! `cargo test` builds (`cargo build --tests` of the workspace's default
//! members, whose integration tests need the binary), so that the features
//! of its dependencies are those of the test build and, under `cargo test`
//! or `cargo xtask test`, nothing is built again. Once per test process. VM
//! tests do not need it: `cargo xtask vm` builds the release binary it
//! copies in.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

/// The freshly built `ovltrace` binary of this workspace (this profile:
/// debug for `cargo test`, release for `cargo test --release`). Panics when
/// the build fails: a broken build is no missing prerequisite.
pub fn ovltrace() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build().unwrap_or_else(|e| panic!("building ovltrace: {e}")))
}

/// The release binary next to this profile's (`target/release/ovltrace`),
/// when one has been built (`cargo xtask test` builds it before the tests).
pub fn release() -> Option<PathBuf> {
    let bin = ovltrace();
    if cfg!(not(debug_assertions)) {
        return Some(bin.to_path_buf());
    }
    bin.parent()
        .and_then(Path::parent)
        .map(|t| t.join("release/ovltrace"))
        .filter(|p| p.is_file())
}

fn build() -> Result<PathBuf, String> {
    let cargo = env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::workspace_root())
        .args(["build", "--tests"])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if cfg!(not(debug_assertions)) {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo build --tests failed: {}", out.status));
    }
    // The binary itself, not the test harness built from its unit tests.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "ovltrace"
                && m["target"]["kind"] == serde_json::json!(["bin"])
                && m["profile"]["test"] == false
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo build reported no ovltrace executable".into())
}
