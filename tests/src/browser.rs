//! Headless Chromium (Debian's `chromium`) for the HTML report tests: find
//! it, render a page to a PNG or to its DOM, read what it logged.
//!
//! ```no_run
//! use ovltrace_tests::{browser, require};
//!
//! let Some(chromium) = require("chromium", browser::find()) else {
//!     return;
//! };
//! let profile = std::env::temp_dir().join("profile");
//! let page = std::path::Path::new("/tmp/report.html");
//! let (dom, log) = browser::dump_dom(&chromium, &profile, page);
//! assert!(browser::console_lines(&log).is_empty());
//! assert_eq!(browser::title(&dom), "ovltrace report: host");
//! ```

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

/// How long one Chromium run may take before it is killed.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Chromium on PATH (`chromium`, or `chromium-browser`).
pub fn find() -> Result<PathBuf, String> {
    crate::on_path("chromium")
        .or_else(|_| crate::on_path("chromium-browser"))
        .map_err(|_| "chromium not on PATH (apt-get install chromium, or cargo xtask setup)".into())
}

/// Runs Chromium headless on `page` with `extra` arguments and its own
/// `profile` directory, with no network, logging console messages (script
/// errors, blocked actions) to stderr; killed (and the test failed) after
/// two minutes.
pub fn run(bin: &Path, profile: &Path, page: &Path, extra: &[String]) -> Output {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting chromium: {e}"));
    let deadline = Instant::now() + TIMEOUT;
    while child
        .try_wait()
        .unwrap_or_else(|e| panic!("waiting for chromium: {e}"))
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in {} s", TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("chromium output: {e}"))
}

/// A `width`x`height` screenshot of `page` to `png`; returns what Chromium
/// logged. Fails the test when Chromium fails.
pub fn screenshot(
    bin: &Path,
    profile: &Path,
    page: &Path,
    png: &Path,
    (width, height): (u32, u32),
) -> String {
    let o = run(
        bin,
        profile,
        page,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "chromium --screenshot failed: {err}");
    err
}

/// The DOM after load, with time for asynchronous handlers (a failed image's
/// onerror) to run, and what Chromium logged. Fails the test when Chromium
/// fails.
pub fn dump_dom(bin: &Path, profile: &Path, page: &Path) -> (String, String) {
    let o = run(
        bin,
        profile,
        page,
        &["--virtual-time-budget=5000".into(), "--dump-dom".into()],
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "chromium --dump-dom failed: {err}");
    (String::from_utf8_lossy(&o.stdout).into_owned(), err)
}

/// Console messages Chromium logged: script errors, blocked actions.
pub fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

/// The text of a serialised DOM's `<title>`.
pub fn title(dom: &str) -> &str {
    let start = dom.find("<title>").map(|i| i + 7).unwrap_or(0);
    let end = dom[start..].find("</title>").map_or(start, |i| start + i);
    &dom[start..end]
}

/// How Chromium serialises a text node.
pub fn as_dom_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{a0}', "&nbsp;")
}
