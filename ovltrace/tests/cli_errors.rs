//! CLI errors are one line: bad flags, bad durations and sizes, and `run`
//! without root. Hermetic: nothing is traced, mounted or started. The cases
//! that need root (`--container` names, `--json` onto a symlink) are in
//! tests/tests/cli_errors_root.rs.

use std::process::{Command, Output};

// The one-line check, shared with the root cases (tests/src is their library).
#[path = "../../tests/src/cli.rs"]
mod cli;
use cli::one_error_line;

const BIN: &str = env!("CARGO_BIN_EXE_ovltrace");

fn ovltrace(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        // Warnings of the tool itself would be extra lines; keep the default.
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("running {BIN}: {e}"))
}

#[test]
fn bad_flags() {
    let line = one_error_line(&ovltrace(&["run", "--bogus"]), 2);
    assert!(line.contains("'--bogus'"), "{line}");
    let line = one_error_line(&ovltrace(&["frobnicate"]), 2);
    assert!(line.contains("frobnicate"), "{line}");
    let line = one_error_line(&ovltrace(&["run", "--probe", "uprobe"]), 2);
    assert!(line.contains("uprobe"), "{line}");
    let line = one_error_line(&ovltrace(&["run", "--top=-3"]), 2);
    assert!(line.contains("--top"), "{line}");
}

#[test]
fn bad_durations_and_sizes() {
    for (args, want) in [
        (&["run", "--duration", "10x"][..], "unknown unit \"x\""),
        (&["run", "--duration", "0s"], "greater than zero"),
        (&["run", "--duration=-5s"], "expected a number"),
        (&["run", "--duration", "-5s"], "'-5'"),
        (&["run", "--duration", ""], "empty duration"),
        (&["run", "-d", "99999999999999999999s"], "too large"),
        (&["run", "--interval", "soon"], "invalid duration"),
        (
            &["run", "--ring-buffer-size", "lots"],
            "expected a number of bytes",
        ),
        (&["run", "--ring-buffer-size", "100"], "out of range"),
    ] {
        let line = one_error_line(&ovltrace(args), 2);
        assert!(line.contains(want), "{args:?}: {want:?} not in {line:?}");
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn not_root_is_one_line() {
    if is_root() {
        // Run as nobody (uid 65534) through setpriv (util-linux, which every
        // Debian has: a hermetic test does not skip).
        let o = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                BIN,
                "run",
            ])
            .output()
            .unwrap_or_else(|e| panic!("running setpriv (util-linux): {e}"));
        let line = one_error_line(&o, 1);
        assert!(line.contains("needs root"), "{line}");
    } else {
        let line = one_error_line(&ovltrace(&["run"]), 1);
        assert!(line.contains("needs root"), "{line}");
    }
}
