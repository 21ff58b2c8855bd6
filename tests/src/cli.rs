//! The shape of a CLI error: one line, nothing else but clap's short hints.
//!
//! Also compiled into the hermetic `ovltrace/tests/cli_errors.rs` by
//! `#[path]` (ovltrace cannot dev-depend on this crate, which depends on it),
//! so this file uses nothing but std.

use std::process::Output;

/// The one error line of a clap or ovltrace error, checking the rest is
/// only clap's short usage hint (no help dump, no backtrace, no panic) and
/// that the exit code is `code`.
pub fn one_error_line(o: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(o.stdout.is_empty(), "nothing on stdout: {:?}", o.stdout);
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "Options:"] {
        assert!(!err.contains(bad), "{bad:?} in\n{err}");
    }
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line:\n{err}");
    // clap adds at most a usage line, the possible values, a tip and a
    // pointer to --help.
    for l in &lines {
        let t = l.trim_start();
        assert!(
            l.contains("error:")
                || t.starts_with("Usage: ")
                || t.starts_with("[possible values: ")
                || t.starts_with("tip: ")
                || t.starts_with("For more information"),
            "unexpected line {l:?} in\n{err}"
        );
    }
    assert!(lines.len() <= 5, "{err}");
    errors[0].to_string()
}
