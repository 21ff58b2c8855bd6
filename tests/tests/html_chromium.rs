//! The HTML report in a real browser: headless Chromium renders a report
//! whose container names, image tags, instructions and file names are
//! hostile. It must produce a screenshot, show every name and path as text,
//! and run nothing: no element may come from the input, and the page title,
//! which every injected script tries to change, must stay as written.
//!
//! The page is loaded twice: as written, and with its Content-Security-Policy
//! removed, so that escaping alone is shown to hold (the policy is only the
//! second line of defence). Two control pages that do run a script prove that
//! the harness would see it.
//!
//! Needs Debian's `chromium`; the skip policy of `ovltrace_tests::require`
//! applies (`SKIPPED:`, or a failure with OVLTRACE_TEST_STRICT=1 as in CI).

use std::{path::Path, process::Command};

use base64::Engine as _;
use ovltrace::{render::html, report::json, text};
use ovltrace_tests::{
    bin,
    browser::{self, as_dom_text, console_lines, dump_dom, title},
    reports, require,
};

/// The elements of a serialised DOM: name and attribute names of every tag.
/// In Chromium's serialisation a `<` outside a tag is always escaped, and
/// attribute values are double-quoted.
fn tags(dom: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        // The tag runs to the first '>' outside a quoted value.
        let mut quoted = false;
        let mut end = rest.len();
        for (j, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '>' if !quoted => {
                    end = j;
                    break;
                }
                _ => {}
            }
        }
        let tag = &rest[..end];
        rest = &rest[end.min(rest.len())..];
        // Attribute values removed, then names are what is left.
        let mut bare = String::new();
        let mut quoted = false;
        for c in tag.chars() {
            if c == '"' {
                quoted = !quoted;
            } else if !quoted {
                bare.push(c);
            }
        }
        let mut words = bare
            .split(|c: char| c.is_whitespace() || c == '/')
            .filter(|w| !w.is_empty());
        let name = words.next().unwrap_or("").to_ascii_lowercase();
        let attrs = words
            .map(|w| w.trim_end_matches('=').to_ascii_lowercase())
            .collect();
        out.push((name, attrs));
    }
    out
}

/// Every element and attribute is one the report itself writes: none came
/// from the input. No raw control or bidi character survived either.
fn assert_inert(dom: &str, what: &str) {
    const ELEMENTS: &[&str] = &[
        "!doctype",
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "header",
        "h1",
        "h2",
        "h3",
        "p",
        "div",
        "b",
        "span",
        "nav",
        "a",
        "main",
        "section",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "code",
        "br",
        "ul",
        "li",
        "figure",
        "figcaption",
        "svg",
        "line",
        "text",
        "rect",
        "footer",
    ];
    const ATTRIBUTES: &[&str] = &[
        "html",
        "lang",
        "charset",
        "http-equiv",
        "content",
        "name",
        "class",
        "id",
        "href",
        "title",
        "xmlns",
        "width",
        "height",
        "viewbox",
        "role",
        "aria-label",
        "x",
        "y",
        "x1",
        "y1",
        "x2",
        "y2",
        "text-anchor",
        "transform",
    ];
    let all = tags(dom);
    assert!(all.len() > 100, "{what}: only {} tags", all.len());
    for (name, attrs) in &all {
        assert!(
            ELEMENTS.contains(&name.as_str()),
            "{what}: element <{name}> in the DOM"
        );
        for a in attrs {
            assert!(
                ATTRIBUTES.contains(&a.as_str()),
                "{what}: attribute {a:?} on <{name}>"
            );
        }
    }
    for raw in ['\u{1b}', '\u{202e}'] {
        assert!(!dom.contains(raw), "{what}: raw {raw:?} in the DOM");
    }
}

#[test]
fn hostile_report_renders_as_text_in_chromium() {
    let Some(chromium) = require("chromium", browser::find()) else {
        return;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("html_chromium");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let profile = tempfile::tempdir().unwrap();

    let report = reports::report(
        "victim-host",
        &reports::hostile_specs(),
        reports::hostile_warnings(),
    );
    let json_file = dir.join("hostile.json");
    std::fs::write(&json_file, json::to_string(&report).unwrap()).unwrap();
    let page = dir.join("hostile.html");
    let o = Command::new(bin::ovltrace())
        .arg("report")
        .arg(&json_file)
        .arg("--html")
        .arg(&page)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let source = std::fs::read_to_string(&page).unwrap();
    let expected_title = "ovltrace report: victim-host";

    // A screenshot, and nothing logged to the console while rendering.
    let png = dir.join("hostile.png");
    let err = browser::screenshot(&chromium, profile.path(), &page, &png, (1280, 2000));
    assert_eq!(console_lines(&err), Vec::<&str>::new(), "console output");
    let image = std::fs::read(&png).expect("no screenshot written");
    assert_eq!(&image[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let dim =
        |at: usize| u32::from_be_bytes([image[at], image[at + 1], image[at + 2], image[at + 3]]);
    assert_eq!(&image[12..16], b"IHDR");
    assert_eq!((dim(16), dim(20)), (1280, 2000));
    assert!(image.len() > 20_000, "a blank page? {} bytes", image.len());

    // The DOM as rendered, with the policy and without it.
    let bare = dir.join("hostile-no-csp.html");
    let meta = format!(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">",
        text::escape_html(html::CSP)
    );
    assert!(source.contains(&meta), "no CSP meta tag");
    std::fs::write(&bare, source.replace(&meta, "")).unwrap();
    for (what, p) in [("with CSP", &page), ("without CSP", &bare)] {
        let (dom, err) = dump_dom(&chromium, profile.path(), p);
        std::fs::write(dir.join(format!("{what}.dom.html")), &dom).unwrap();
        assert_eq!(title(&dom), expected_title, "{what}: a script ran");
        assert_eq!(
            console_lines(&err),
            Vec::<&str>::new(),
            "{what}: console output"
        );
        assert_inert(&dom, what);
        // Every container and hot spot is there, as text.
        for c in &report.containers {
            let name = c.name.as_deref().unwrap();
            let text = as_dom_text(&text::terminal(name));
            assert!(
                dom.contains(&format!(">{text}<")),
                "{what}: container {name:?} missing"
            );
        }
        assert!(report.copy_ups.len() >= 8);
        for f in &report.copy_ups {
            let shown = match &f.path_b64 {
                Some(b) => {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
                    text::terminal_bytes(&bytes)
                }
                None => text::terminal(&f.path),
            };
            // Container files from the container's root; others under their mount.
            let root = match (&f.container, &f.mountpoint) {
                (None, Some(m)) => text::terminal(m),
                _ => String::new(),
            };
            let text = as_dom_text(&format!("{root}/{shown}"));
            assert!(
                dom.contains(&format!(">{text}<")),
                "{what}: path {:?} missing",
                f.path
            );
        }
        assert!(
            dom.contains("\\xff\\xfe"),
            "{what}: invalid UTF-8 not shown as bytes"
        );
        assert!(dom.contains("\\u{202e}"), "{what}: bidi override not shown");
        assert!(dom.contains("<svg"), "{what}: no charts");
    }

    // Controls: the harness sees a script that runs, at once or on an error.
    for (name, body) in [
        (
            "control-script",
            format!("<script>document.title='{}'</script>", reports::PWNED),
        ),
        (
            "control-onerror",
            format!(
                "<img src=x onerror=\"document.title='{}'\">",
                reports::PWNED
            ),
        ),
    ] {
        let p = dir.join(format!("{name}.html"));
        std::fs::write(
            &p,
            format!("<!DOCTYPE html><html><head><title>{expected_title}</title></head><body>{body}</body></html>"),
        )
        .unwrap();
        let (dom, _) = dump_dom(&chromium, profile.path(), &p);
        assert_eq!(
            title(&dom),
            reports::PWNED,
            "{name}: the harness missed a script"
        );
    }
}

#[test]
fn merged_report_of_two_hosts_renders_in_chromium() {
    let Some(chromium) = require("chromium", browser::find()) else {
        return;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("html_chromium_merged");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let ra = reports::report("host-a", &reports::plain_specs("web"), vec![]);
    let rb = reports::report("host-b", &reports::plain_specs("db"), vec![]);
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    std::fs::write(&a, json::to_string(&ra).unwrap()).unwrap();
    std::fs::write(&b, json::to_string(&rb).unwrap()).unwrap();
    let page = dir.join("merged.html");
    let o = Command::new(bin::ovltrace())
        .arg("report")
        .args([&a, &b])
        .arg("--html")
        .arg(&page)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = dir.join("merged.png");
    let err = browser::screenshot(&chromium, profile.path(), &page, &png, (1280, 2000));
    assert_eq!(console_lines(&err), Vec::<&str>::new(), "console output");
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let (dom, _) = dump_dom(&chromium, profile.path(), &page);
    assert_eq!(title(&dom), "ovltrace report: host-a, host-b");
    assert_inert(&dom, "merged");
    for name in ["web-0", "web-1", "db-0", "db-1"] {
        assert!(
            dom.contains(&format!("<b>{name}</b>")),
            "container {name} missing"
        );
    }
    for path in [
        "/var/lib/app/db-0.sqlite",
        "/var/lib/app/db-1.sqlite",
        "/etc/app.conf",
    ] {
        assert!(dom.contains(&format!(">{path}<")), "path {path} missing");
    }
    // Device 0:50 of both hosts, each in its own row with its host.
    assert!(dom.contains("<th>Host</th>"));
    assert_eq!(
        dom.matches(">host-b<").count(),
        dom.matches(">host-a<").count()
    );
}
