//! `ovltrace report`: re-rendering and merging saved reports, through the
//! binary. Fixture reports are built in code and written as `run --json`
//! writes them.

// The synthetic reports, shared with the browser and deploy tests (tests/src
// is their library).
#[path = "../../tests/src/reports.rs"]
mod reports;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use ovltrace::report::{json, merge, Report};

fn ovltrace(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovltrace"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running ovltrace")
}

fn run(args: &[&str]) -> Output {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    ovltrace(&args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, r: &Report) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, json::to_string(r).unwrap()).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts that `o` failed with exactly one line of error on stderr that
/// mentions `file` and `what`.
fn one_line_error(o: &Output, file: &str, what: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "succeeded: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(o.stdout.is_empty(), "{}", stdout(o));
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("ovltrace: error: "), "{err}");
    assert!(err.contains(file), "{err:?} does not name {file}");
    assert!(err.contains(what), "{err:?} does not say {what:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn rerenders_a_saved_report() {
    let dir = tempfile::tempdir().unwrap();
    let r = reports::report("host-a", &reports::plain_specs("web"), vec![]);
    let a = write(dir.path(), "a.json", &r);
    let o = run(&["report", s(&a), "--color", "never"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "CONTAINER web-0",
        "CONTAINER web-1",
        "/var/lib/app/db-1.sqlite",
        "/etc/app.conf",
        "OVERLAY /tmp/plain/merged",
        "DROPS: 2",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains('\x1b'), "colour without a TTY");
    // Colour on request.
    let o = run(&["report", s(&a), "--color", "always"]);
    assert!(stdout(&o).contains('\x1b'));
}

#[test]
fn json_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let r = reports::report(
        "host-a",
        &reports::hostile_specs(),
        reports::hostile_warnings(),
    );
    let a = write(dir.path(), "a.json", &r);
    // The fixture was cut to --top 50: re-rendered with the same, it is
    // not cut again.
    let o = run(&["report", s(&a), "--json", "--top", "50"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out, format!("{}\n", json::to_string(&r).unwrap()));
    let back: Report = serde_json::from_str(&out).unwrap();
    assert_eq!(back, r);
    // Non-UTF-8 file names keep their bytes.
    assert!(back.copy_ups.iter().any(|f| f.path_b64.is_some()));
}

#[test]
fn merges_reports_of_two_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let ra = reports::report(
        "host-a",
        &reports::plain_specs("web"),
        vec!["a warns".into()],
    );
    let rb = reports::report("host-b", &reports::plain_specs("db"), vec![]);
    let a = write(dir.path(), "a.json", &ra);
    let b = write(dir.path(), "b.json", &rb);
    let o = run(&["report", s(&a), s(&b), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: Report = serde_json::from_str(&stdout(&o)).unwrap();
    // Cut as `run` cuts (--top 10 by default).
    assert_eq!(
        m,
        merge::merge(&[ra.clone(), rb.clone()], Some(10)).unwrap()
    );
    assert_eq!(m.hosts, ["host-a", "host-b"]);
    assert_eq!(m.host, "host-a, host-b");
    // Both hosts use device 0:50: two mounts, each with its host.
    let devs: Vec<(Option<&str>, &str)> = m
        .mounts
        .iter()
        .map(|x| (x.host.as_deref(), x.dev.as_str()))
        .collect();
    assert!(devs.contains(&(Some("host-a"), "0:50")) && devs.contains(&(Some("host-b"), "0:50")));
    let count = |r: &Report| r.mounts.iter().map(|x| x.copy_up.count).sum::<u64>();
    assert_eq!(count(&m), count(&ra) + count(&rb));
    assert_eq!(m.containers.len(), 4);
    assert_eq!(m.copy_ups.len(), ra.copy_ups.len() + rb.copy_ups.len());
    assert_eq!(m.drops.total, 4);
    assert!(m.warnings.contains(&"host-a: a warns".to_string()));
    // The same image layer on both hosts is one layer, with both hosts' copy-ups.
    let base = format!("sha256:{:064x}", 200);
    let l = m
        .layers
        .iter()
        .find(|l| l.diff_id.as_deref() == Some(&base))
        .unwrap();
    let la = ra
        .layers
        .iter()
        .find(|l| l.diff_id.as_deref() == Some(&base))
        .unwrap();
    let lb = rb
        .layers
        .iter()
        .find(|l| l.diff_id.as_deref() == Some(&base))
        .unwrap();
    assert_eq!(l.copy_up.count, la.copy_up.count + lb.copy_up.count);
    assert_eq!(l.copy_up.latency_ns.count, l.copy_up.count);

    // The merged report is itself a report: re-rendered, merged again.
    let mfile = dir.path().join("m.json");
    std::fs::write(&mfile, stdout(&o)).unwrap();
    let o = run(&["report", s(&mfile), "--color", "never"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("CONTAINER db-1"));
    // Each host's items under their host: both plain overlays are 0:27.
    for h in ["host-a", "host-b"] {
        assert!(
            text.contains(&format!(
                "OVERLAY /tmp/plain/merged (no container) on {h}\n"
            )),
            "{text}"
        );
        assert_eq!(
            text.matches(&format!(") on {h} image ")).count(),
            2,
            "{text}"
        );
    }
    // One hot-spot row per host in each of the two tables, with its host.
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("/tmp/plain/merged/data/table.bin"))
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    for h in ["host-a", "host-b"] {
        assert_eq!(
            rows.iter()
                .filter(|l| l.contains(&format!(" {h} ")))
                .count(),
            2,
            "{text}"
        );
    }
    // Merging a report with itself doubles every count.
    let o = run(&["report", s(&a), s(&a), "--json"]);
    let twice: Report = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(count(&twice), 2 * count(&ra));
    assert_eq!(twice.host, "host-a");
    assert!(twice.hosts.is_empty());
    assert_eq!(twice.copy_ups.len(), ra.copy_ups.len());
    assert_eq!(twice.copy_ups[0].count, 2 * ra.copy_ups[0].count);
}

#[test]
fn top_cuts_the_lists() {
    let dir = tempfile::tempdir().unwrap();
    let r = reports::report("h", &reports::plain_specs("web"), vec![]);
    assert!(r.copy_ups.len() > 2);
    let a = write(dir.path(), "a.json", &r);
    for args in [vec![s(&a)], vec![s(&a), s(&a)]] {
        let mut full = vec!["report"];
        full.extend(&args);
        full.extend(["--json", "--top", "2"]);
        let o = run(&full);
        assert!(o.status.success(), "{}", stderr(&o));
        let m: Report = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(m.copy_ups.len(), 2);
        assert_eq!(m.copy_ups[0].path, r.copy_ups[0].path);
    }
}

#[test]
fn writes_html_atomically_and_never_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let r = reports::report("h", &reports::plain_specs("web"), vec![]);
    let a = write(dir.path(), "a.json", &r);
    let out = dir.path().join("r.html");
    let o = run(&["report", s(&a), "--html", s(&out), "--color", "never"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The terminal report still goes to stdout.
    assert!(stdout(&o).contains("CONTAINER web-0"));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("Content-Security-Policy"));
    assert!(html.contains("<svg"));
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let link = dir.path().join("link.html");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let o = run(&["report", s(&a), "--html", s(&link)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = reports::report("h", &reports::plain_specs("web"), vec![]);
    let g = write(dir.path(), "good.json", &good);
    let case = |name: &str, content: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    };
    let mut v4 = serde_json::to_value(&good).unwrap();
    v4["schema_version"] = 4.into();
    let mut corrupt = good.clone();
    corrupt.containers[0].copy_up.latency_ns.hdr = "HISTxxxx".into();
    let mut no_hdr = good.clone();
    no_hdr.mounts[0].copy_up.latency_ns.hdr.clear();
    let mut missing = serde_json::to_value(&good).unwrap();
    missing.as_object_mut().unwrap().remove("mounts");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(PathBuf, &str)> = vec![
        (dir.path().join("absent.json"), "cannot open"),
        (case("empty.json", b""), "not an ovltrace JSON report"),
        (
            case("garbage.json", b"\x00\xff\xfe{{{"),
            "not an ovltrace JSON report",
        ),
        (
            case("array.json", b"[1, 2, 3]"),
            "not an ovltrace JSON report",
        ),
        (
            case("deep.json", deep.as_bytes()),
            "not an ovltrace JSON report",
        ),
        (case("other.json", b"{\"a\": 1}"), "no schema_version"),
        (
            case("v4.json", v4.to_string().as_bytes()),
            "unsupported schema_version 4 (this ovltrace reads 1, 2 and 3)",
        ),
        (
            case("string.json", b"{\"schema_version\": \"1\"}"),
            "unsupported schema_version",
        ),
        (
            case("missing.json", missing.to_string().as_bytes()),
            "missing field `mounts`",
        ),
        (
            case(
                "truncated.json",
                &json::to_string(&good).unwrap().as_bytes()[..500],
            ),
            "EOF",
        ),
        (dir.path().to_path_buf(), "cannot read"),
    ];
    for (path, what) in &cases {
        let name = path.file_name().unwrap().to_str().unwrap();
        one_line_error(&run(&["report", s(path)]), name, what);
        // Second position in a merge: still named.
        one_line_error(&run(&["report", s(&g), s(path)]), name, what);
    }
    // Histograms are only decoded to merge them.
    let c = write(dir.path(), "corrupt.json", &corrupt);
    one_line_error(
        &run(&["report", s(&g), s(&c)]),
        "corrupt.json",
        "latency_ns",
    );
    let n = write(dir.path(), "nohdr.json", &no_hdr);
    one_line_error(
        &run(&["report", s(&n), s(&g)]),
        "nohdr.json",
        "no serialized histogram",
    );
    // A file name that is itself hostile is shown escaped.
    let evil = case("evil\n\x1b[2Jname.json", b"nope");
    one_line_error(
        &run(&["report", s(&evil)]),
        "evil\\n\\u{1b}[2Jname.json",
        "not an",
    );
    // No files at all is a usage error.
    let o = run(&["report"]);
    assert_eq!(o.status.code(), Some(2));
}

/// The rows of the terminal table under `heading`.
fn table_rows<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    text.split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("no {heading:?} in {text}"))
        .lines()
        .skip(2)
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("  LAYER"))
        .collect()
}

#[test]
fn container_filter_and_top_as_run_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let r = reports::report("h", &reports::plain_specs("web"), vec![]);
    let a = write(dir.path(), "a.json", &r);
    let o = run(&["report", s(&a), "--container", "web-1", "--color", "never"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("CONTAINER web-1 "), "{out}");
    assert!(!out.contains("CONTAINER web-0"), "{out}");
    assert!(!out.contains("OVERLAY"), "{out}");
    for heading in [
        "HOT SPOTS, by total copy-up time",
        "HOT SPOTS, by bytes copied",
    ] {
        let rows = table_rows(&out, heading);
        assert!(!rows.is_empty(), "{out}");
        assert!(rows.iter().all(|l| !l.contains("/tmp/plain")), "{out}");
    }
    let o = run(&["report", s(&a), "--container", "nope"]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o),
        "ovltrace: error: no container nope in this report (it has: web-1, web-0)\n"
    );
    // --top N: two tables of exactly N rows each.
    assert!(r.copy_ups.len() > 2);
    let o = run(&["report", s(&a), "--top", "2", "--color", "never"]);
    let out = stdout(&o);
    assert_eq!(
        table_rows(&out, "HOT SPOTS, by total copy-up time").len(),
        2,
        "{out}"
    );
    assert_eq!(
        table_rows(&out, "HOT SPOTS, by bytes copied").len(),
        2,
        "{out}"
    );
}
