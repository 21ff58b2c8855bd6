//! The HTML report of a real trace in headless Chromium: two Docker
//! containers in a VM (6.12) write to files of their image, one of which has
//! a name made to inject markup; `ovltrace run --json` traces it and
//! `ovltrace report --html` renders it in the VM. On the host, Chromium must
//! render the page to a PNG without a console message, and the page must
//! show every container and every hot spot of the JSON report, as text, with
//! no element made from the file name and the title unchanged.
//!
//! Needs the VM tooling, Docker on the host (to build the image) and
//! Debian's `chromium`; the skip policy of `require_or_skip` applies.

use ovltrace_tests::{
    browser::{self, as_dom_text, console_lines},
    host_docker, require, require_or_skip, vm,
};
use serde_json::Value;

const IMAGE: &str = "ovltrace-test/html:1";
/// A file name that tries to be markup (no '/', so it can be a file name).
const HOSTILE: &str = "\"><img src=x onerror=document.title='PWNED'>.txt";

const SCRIPT: &str = r#"
IMG=ovltrace-test/html:1
ovl_trace /tmp/r.txt /tmp/r.err --top 50 --json /tmp/r.json
docker run --network none --name web $IMG sh -c '
    echo x >> /data/big.bin
    for f in /data/*.txt; do echo x >> "$f"; done' || exit 4
docker run --network none --name db $IMG sh -c '
    echo y >> /app/config.json
    chown -R 1:1 /data' || exit 5
kill -INT $pid
wait $pid
echo $? | ovl_section rc
ovltrace report /tmp/r.json --html /tmp/r.html > /tmp/rr.txt 2> /tmp/rr.err
echo $? | ovl_section html-rc
ovl_section html-err /tmp/rr.err
ovl_section json /tmp/r.json
ovl_section html /tmp/r.html
"#;

#[test]
fn html_report_of_a_vm_trace_renders_in_chromium() {
    if !require_or_skip("vm") || !require_or_skip("docker") {
        return;
    }
    let Some(chromium_bin) = require("chromium", browser::find()) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ovltrace-vm-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let hostile = format!("data/{HOSTILE}");
    let big = vec![7u8; 256 << 10];
    let Some(image) = require(
        "a Docker image built on the host",
        host_docker::busybox_image(
            IMAGE,
            &[
                ("data/big.bin", &big),
                (&hostile, b"hostile\n"),
                ("data/notes.txt", b"notes\n"),
                ("app/config.json", b"{}\n"),
            ],
            &dir,
        ),
    ) else {
        return;
    };
    let out = vm::run(
        "6.12",
        &vm::VmOpts::default().docker_image(&image).timeout(900),
        SCRIPT,
    );
    // The image is in the VM's past now; the page and screenshot stay for a look.
    let _ = std::fs::remove_file(&image);
    out.assert_exit(0);
    let dump = || out.dump();
    assert_eq!(
        out.section("rc").as_deref().map(str::trim),
        Some("0"),
        "{}",
        dump()
    );
    assert_eq!(
        out.section("html-rc").as_deref().map(str::trim),
        Some("0"),
        "ovltrace report --html failed: {:?}",
        out.section("html-err")
    );
    let json = out
        .section("json")
        .unwrap_or_else(|| panic!("no JSON\n{}", dump()));
    let r: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON ({e}): {json}"));
    let html = out
        .section("html")
        .unwrap_or_else(|| panic!("no HTML\n{}", dump()));
    let page = dir.join("vm-report.html");
    std::fs::write(&page, &html).unwrap_or_else(|e| panic!("writing {}: {e}", page.display()));

    // What the page must show: the active containers and every hot spot.
    let containers: Vec<String> = r["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["copy_up"]["count"].as_u64() > Some(0))
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        containers
            .iter()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        ["db", "web"].into(),
        "{json}"
    );
    let paths: Vec<String> = r["copy_ups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["path"].as_str().map(|p| format!("/{p}")))
        .collect();
    for want in ["/data/big.bin", "/app/config.json", &format!("/{hostile}")] {
        assert!(
            paths.iter().any(|p| p == want),
            "{want} not copied up: {json}"
        );
    }

    let profile = dir.join("chromium-profile");
    let png = dir.join("vm-report.png");
    let err = browser::screenshot(&chromium_bin, &profile, &page, &png, (1280, 2000));
    assert_eq!(console_lines(&err), Vec::<&str>::new(), "console output");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot: {e}"));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 20_000, "a blank page? {} bytes", bytes.len());

    let (dom, err) = browser::dump_dom(&chromium_bin, &profile, &page);
    assert_eq!(console_lines(&err), Vec::<&str>::new(), "console output");
    let host = r["host"].as_str().unwrap_or_default();
    assert!(
        dom.contains(&format!(
            "<title>ovltrace report: {}</title>",
            as_dom_text(host)
        )),
        "title changed"
    );
    let lower = dom.to_ascii_lowercase();
    for bad in ["<script", "<img", "<iframe", "<object", "<embed"] {
        assert!(!lower.contains(bad), "the DOM holds {bad}");
    }
    for name in &containers {
        assert!(
            dom.contains(&format!("<b>{}</b>", as_dom_text(name))),
            "container {name} missing"
        );
    }
    for p in &paths {
        assert!(
            p.chars().all(|c| c.is_ascii_graphic() || c == ' ') && !p.contains('\\'),
            "unexpected characters in {p:?}"
        );
        assert!(
            dom.contains(&format!(">{}<", as_dom_text(p))),
            "hot spot {p} missing"
        );
    }
    // Kept for a look: the screenshot and page of the last run.
    eprintln!(
        "vm_html_report: page {} screenshot {}",
        page.display(),
        png.display()
    );
}
