//! The VM harness works on both kernels: the guest runs the freshly built
//! ovltrace, reports its kernel release, and the exit code, arguments, stdout
//! and stderr come back exactly.

use ovltrace_tests::{require_or_skip, vm};

const SCRIPT: &str = r#"
uname -r | ovl_section uname
{ ovltrace --version || ovltrace --help; } 2>&1 | ovl_section ovltrace
grep -c overlay /proc/filesystems | ovl_section overlay
exit 7
"#;

fn smoke(kernel: &str) {
    if !require_or_skip("vm") {
        return;
    }
    let out = vm::run(kernel, &vm::VmOpts::default(), SCRIPT);
    out.assert_exit(7);
    let release = out.section("uname").unwrap_or_default();
    assert!(
        release.starts_with(&format!("{kernel}.")),
        "kernel release {release:?} is not of the {kernel} series\n{}",
        out.dump()
    );
    let ovltrace = out.section("ovltrace").unwrap_or_default();
    assert!(
        ovltrace.contains("ovltrace") || ovltrace.contains("Usage"),
        "ovltrace did not run: {ovltrace:?}\n{}",
        out.dump()
    );
    assert_eq!(
        out.section("overlay").as_deref(),
        Some("1\n"),
        "overlay module not loaded\n{}",
        out.dump()
    );
}

#[test]
fn smoke_6_1() {
    smoke("6.1");
}

#[test]
fn smoke_6_12() {
    smoke("6.12");
}

#[test]
fn arguments_and_streams_pass_through_exactly() {
    if !require_or_skip("vm") {
        return;
    }
    let out = vm::run_cmd(
        "6.12",
        &vm::VmOpts::default(),
        &[
            "sh",
            "-c",
            "printf '%s|' \"$@\"; printf 'line1\\nline2\\n'; echo to-stderr >&2; exit 3",
            "sh",
            "a b",
            "it's",
            "$HOME",
            "",
            "\"q\" \\n *",
        ],
    );
    out.assert_exit(3);
    assert_eq!(
        out.stdout,
        "a b|it's|$HOME||\"q\" \\n *|line1\nline2\n",
        "{}",
        out.dump()
    );
    assert_eq!(out.guest_stderr(), "to-stderr\n", "{}", out.dump());
}
