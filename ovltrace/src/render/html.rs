//! A self-contained HTML report: one file, no scripts, nothing fetched.
//!
//! Charts are inline SVG. Every string that came from a report (container
//! and image names, paths, instructions, messages) is untrusted: it passes
//! through [`text::html`] (control and bidirectional-formatting characters
//! become visible escapes, HTML metacharacters entities, safe in text and in
//! double-quoted attributes). A Content-Security-Policy
//! that forbids scripts and every fetch is a second line of defence.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::{
    report::{
        view::{self, Summary},
        Bucket, Container, CopyUpFile, CopyUpTotals, Lookups, Mount, Report,
    },
    text::{self, escape_html as esc, terminal as show},
    units::{fmt_bytes, fmt_ns, utc},
};

/// The policy in the page's meta tag: no scripts, no fetches, inline styles only.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                       base-uri 'none'; form-action 'none'";

/// Untrusted text, ready for HTML text or a quoted attribute.
fn t(s: &str) -> String {
    text::html(s)
}

/// Characters of an instruction shown in a cell (the whole text is in its
/// tooltip).
const INSTRUCTION_WIDTH: usize = 120;

/// A history `created_by` as its Dockerfile line ([`crate::catalog::instruction`]),
/// ready for HTML.
fn instruction(created_by: Option<&str>) -> String {
    t(&crate::catalog::instruction::display(
        created_by,
        INSTRUCTION_WIDTH,
    ))
}

/// A hot spot's path as its owner sees it: from the container's root, else
/// joined to the mount point; exact bytes when the path is not UTF-8.
fn file_path(f: &CopyUpFile) -> String {
    let rel = match f
        .path_b64
        .as_deref()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
    {
        Some(bytes) => text::terminal_bytes(&bytes),
        None => show(&f.path),
    };
    let full = if f.container.is_some() {
        format!("/{rel}")
    } else {
        match &f.mountpoint {
            Some(m) => format!("{}/{rel}", show(m.trim_end_matches('/'))),
            None => format!("<gone>/{rel}"),
        }
    };
    if f.path_truncated {
        format!("…{full}")
    } else {
        full
    }
}

fn container_name(c: &Container) -> String {
    c.display_name().to_string()
}

fn image_label(c: &Container) -> String {
    c.image.tags.first().cloned().unwrap_or_else(|| {
        c.image
            .id
            .as_deref()
            .map_or("?".into(), |i| crate::catalog::short_digest(i).to_string())
    })
}

/// Index of a log2 bucket: `le_ns` 2^k is slot k; anything else rounds up.
fn slot(le_ns: u64) -> u32 {
    if le_ns <= 1 {
        0
    } else {
        64 - (le_ns - 1).leading_zeros()
    }
}

/// A bar chart of log2 buckets as inline SVG: one bar per power of two from
/// the lowest to the highest non-empty bucket.
pub fn chart(buckets: &[Bucket], caption: &str, unit: &str) -> String {
    let mut counts = std::collections::BTreeMap::<u32, u64>::new();
    for b in buckets.iter().filter(|b| b.count > 0) {
        let c = counts.entry(slot(b.le_ns)).or_default();
        *c = c.saturating_add(b.count);
    }
    let (Some((&lo, _)), Some((&hi, _))) = (counts.first_key_value(), counts.last_key_value())
    else {
        return String::new();
    };
    let max = counts.values().copied().max().unwrap_or(1).max(1);
    let n = (hi - lo + 1) as usize;
    let bar = (640 / n).clamp(14, 44);
    let left = 56usize;
    let top = 18usize;
    let plot_h = 140usize;
    // Room for the caption under narrow charts.
    let width = (left + n * bar + 12).max(340);
    let height = top + plot_h + 64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<figure class=\"chart\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" \
         height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\">",
        esc(caption)
    );
    // Axes and the count scale.
    let base = top + plot_h;
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{base}\" class=\"axis\"/>\
         <line x1=\"{left}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" class=\"axis\"/>\
         <text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">{max}</text>\
         <text x=\"{}\" y=\"{base}\" class=\"tick\" text-anchor=\"end\">0</text>",
        left + n * bar,
        left - 4,
        top + 4,
        left - 4
    );
    for (i, k) in (lo..=hi).enumerate() {
        let count = counts.get(&k).copied().unwrap_or(0);
        let geometry = BarGeometry {
            x: left + i * bar,
            width: bar,
            base,
            plot_h,
            max,
        };
        chart_bar(&mut s, &geometry, k, count, unit);
    }
    let _ = write!(
        s,
        "</svg><figcaption>{}</figcaption></figure>",
        esc(caption)
    );
    s
}

/// Where a chart's bar goes: its left edge and width, the baseline, the
/// plot's height and the largest count (the full height).
#[derive(Clone, Copy)]
struct BarGeometry {
    x: usize,
    width: usize,
    base: usize,
    plot_h: usize,
    max: u64,
}

/// One bar of a chart: log2 slot `k` (at least 2^(k-1), below 2^k) holding
/// `count`, with its range as a tooltip, its count and its lower bound.
fn chart_bar(s: &mut String, g: &BarGeometry, k: u32, count: u64, unit: &str) {
    let BarGeometry {
        x,
        width: bar,
        base,
        plot_h,
        max,
    } = *g;
    let h = ((count as f64 / max as f64) * plot_h as f64).round() as usize;
    let h = if count > 0 { h.max(1) } else { 0 };
    let lo_v = if k == 0 { 0 } else { 1u64 << (k - 1).min(63) };
    let hi_v = if k >= 64 { u64::MAX } else { (1u64 << k) - 1 };
    let range = if unit == "ns" {
        format!("{} to {}", fmt_ns(lo_v), fmt_ns(hi_v))
    } else {
        format!("{lo_v} to {hi_v} {unit}")
    };
    let _ = write!(
        s,
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{h}\" class=\"bar\">\
         <title>{}: {count}</title></rect>",
        x + 1,
        base - h,
        bar.saturating_sub(2),
        esc(&range)
    );
    if count > 0 {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"count\" text-anchor=\"middle\">{count}</text>",
            x + bar / 2,
            base - h - 3
        );
    }
    let label = if unit == "ns" {
        fmt_ns(lo_v)
    } else {
        lo_v.to_string()
    };
    let lx = x + bar / 2;
    let ly = base + 12;
    let _ = write!(
        s,
        "<text x=\"{lx}\" y=\"{ly}\" class=\"tick\" text-anchor=\"end\" \
         transform=\"rotate(-45 {lx} {ly})\">{}</text>",
        esc(&label)
    );
}

const STYLE: &str = "
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 16px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .meta { margin: 0; color: #d0d7de; }
nav { padding: 8px 28px; background: #fff; border-bottom: 1px solid #d0d7de; }
nav a { margin-right: 16px; color: #0969da; text-decoration: none; }
main { padding: 8px 28px 32px; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 4px 18px 14px; margin: 16px 0; }
h2 { font-size: 18px; border-bottom: 1px solid #d8dee4; padding-bottom: 6px; }
h3 { font-size: 15px; margin: 14px 0 4px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 12px; }
.card { background: #32383f; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card b { display: block; font-size: 20px; }
.card span { color: #d0d7de; font-size: 12px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #eaeef2; vertical-align: top; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
td.name { min-width: 10em; max-width: 16em; }
td.instr { min-width: 10em; max-width: 20em; }
th { background: #f6f8fa; font-weight: 600; white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fbfcfd; }
code, .path { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.path { min-width: 14em; }
.muted { color: #656d76; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; }
figure.chart { margin: 6px 0; }
figure.chart figcaption { font-size: 12px; color: #57606a; overflow-wrap: anywhere; max-width: 340px; }
.nw { white-space: nowrap; }
svg .bar { fill: #0969da; }
svg .axis { stroke: #8c959f; stroke-width: 1; }
svg text { font: 10px system-ui, sans-serif; fill: #57606a; }
svg text.count { fill: #1f2328; font-size: 9px; }
.tag { display: inline-block; font-size: 11px; font-weight: 600; padding: 1px 7px; border-radius: 10px; background: #fff8c5; border: 1px solid #d4a72c; margin-right: 6px; }
.advice li { margin: 8px 0; }
.numbers { color: #57606a; font-size: 12.5px; }
.warn { color: #9a6700; }
footer { padding: 0 28px 24px; color: #656d76; font-size: 12px; }
";

fn th(out: &mut String, cols: &[(&str, bool)]) {
    out.push_str("<thead><tr>");
    for (c, num) in cols {
        let _ = write!(
            out,
            "<th{}>{}</th>",
            if *num { " class=\"n\"" } else { "" },
            c
        );
    }
    out.push_str("</tr></thead>");
}

fn num(out: &mut String, v: impl std::fmt::Display) {
    let _ = write!(out, "<td class=\"n\">{}</td>", esc(&v.to_string()));
}

/// Count, bytes, errors, total and the latency percentiles as cells.
fn totals_cells(out: &mut String, c: &CopyUpTotals) {
    let l = &c.latency_ns;
    num(out, c.count);
    num(out, fmt_bytes(c.bytes));
    num(out, c.errors);
    num(out, fmt_ns(c.total_ns));
    for v in [l.p50, l.p90, l.p99, l.p999, l.max] {
        num(out, fmt_ns(v));
    }
    let _ = write!(
        out,
        "<td>{}</td>",
        t(&crate::report::causes_text(&c.by_cause))
    );
}

const TOTALS_COLS: [(&str, bool); 10] = [
    ("Copy-ups", true),
    ("Bytes", true),
    ("Errors", true),
    ("Total time", true),
    ("p50", true),
    ("p90", true),
    ("p99", true),
    ("p99.9", true),
    ("Max", true),
    ("Why", false),
];

/// The whole report as one HTML document, section by section.
pub fn render(r: &Report) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let plain: Vec<&Mount> = view::plain_overlays(r)
        .into_iter()
        .filter(|m| m.copy_up.count > 0)
        .collect();
    head(&mut o, r);
    header(&mut o, r, &Summary::of(r));
    containers_section(&mut o, r, &plain);
    latency_section(&mut o, r, &plain);
    hot_spots_section(&mut o, r);
    layers_section(&mut o, r);
    lookups_section(&mut o, r);
    advice_section(&mut o, r);
    drops_section(&mut o, r);
    let _ = write!(
        o,
        "</main>\n<footer>Written by {} {} (report schema {}).</footer>\n</body>\n</html>\n",
        t(&r.tool.name),
        t(&r.tool.version),
        r.schema_version
    );
    o
}

/// A cell naming the host of an item of a multi-host report.
fn host_cell(o: &mut String, r: &Report, host: &Option<String>) {
    if !r.hosts.is_empty() {
        let _ = write!(o, "<td>{}</td>", t(host.as_deref().unwrap_or(&r.host)));
    }
}

/// Table columns: `first`, a Host column in a multi-host report, `rest`.
fn columns<'a>(
    r: &Report,
    first: &[(&'a str, bool)],
    rest: &[(&'a str, bool)],
) -> Vec<(&'a str, bool)> {
    let mut cols = first.to_vec();
    if !r.hosts.is_empty() {
        cols.push(("Host", false));
    }
    cols.extend_from_slice(rest);
    cols
}

fn head(o: &mut String, r: &Report) {
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>ovltrace report: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(CSP),
        t(&r.host)
    );
}

/// The page header: host, kernel, start, duration, probes; the totals as
/// cards; the navigation.
fn header(o: &mut String, r: &Report, sum: &Summary) {
    let multi = !r.hosts.is_empty();
    let _ = write!(
        o,
        "<header><h1>ovltrace report</h1><p class=\"meta\">{} {} · kernel {} · started {} · \
         traced {:.1} s · {} probes{}</p>\n<div class=\"cards\">",
        if multi { "hosts" } else { "host" },
        if multi {
            t(&r.hosts.join(", "))
        } else {
            t(&r.host)
        },
        t(&r.kernel),
        utc(r.started_unix_ms),
        r.duration_ms as f64 / 1000.0,
        t(&r.probe.strategy),
        r.probe
            .data_copy
            .as_deref()
            .map(|d| format!(", data copy timed in {}", t(d)))
            .unwrap_or_default()
    );
    let kinds = view::kinds_text(&sum.by_kind);
    for (v, label) in [
        (sum.copy_ups.to_string(), "copy-ups"),
        (kinds, "files and directories"),
        (fmt_bytes(sum.bytes), "copied up"),
        (fmt_ns(sum.total_ns), "in copy-ups"),
        (sum.lookups.to_string(), "lookups"),
        (r.drops.total.to_string(), "events lost"),
    ] {
        if v.is_empty() {
            continue;
        }
        let _ = write!(
            o,
            "<div class=\"card\"><b>{}</b><span>{label}</span></div>",
            esc(&v)
        );
    }
    o.push_str("</div></header>\n<nav><a href=\"#containers\">Containers</a><a href=\"#latency\">Latency</a>\
                <a href=\"#hotspots\">Hot spots</a><a href=\"#layers\">Layers</a>\
                <a href=\"#lookups\">Lookups</a><a href=\"#advice\">Advice</a>\
                <a href=\"#drops\">Drops</a></nav>\n<main>\n");
}

/// Copy-ups by container, then by overlay of no container.
fn containers_section(o: &mut String, r: &Report, plain: &[&Mount]) {
    o.push_str("<section id=\"containers\"><h2>Copy-ups by container</h2>");
    if r.containers.is_empty() {
        o.push_str("<p class=\"muted\">No containers were seen.</p>");
    } else {
        o.push_str("<div class=\"scroll\"><table>");
        let mut rest = vec![("Image", false), ("Image layers", true)];
        rest.extend(TOTALS_COLS);
        th(o, &columns(r, &[("Container", false)], &rest));
        o.push_str("<tbody>");
        for c in &r.containers {
            container_row(o, r, c);
        }
        o.push_str("</tbody></table></div>");
    }
    if !plain.is_empty() {
        o.push_str("<h3>Overlays of no container</h3><div class=\"scroll\"><table>");
        th(
            o,
            &columns(
                r,
                &[("Mount point", false), ("Device", false)],
                &TOTALS_COLS,
            ),
        );
        o.push_str("<tbody>");
        for m in plain {
            let _ = write!(
                o,
                "<tr><td class=\"path\">{}</td><td>{}</td>",
                t(m.mountpoint.as_deref().unwrap_or("<gone>")),
                t(&m.dev)
            );
            host_cell(o, r, &m.host);
            totals_cells(o, &m.copy_up);
            o.push_str("</tr>");
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section>\n");
}

fn container_row(o: &mut String, r: &Report, c: &Container) {
    let _ = write!(
        o,
        "<tr><td class=\"name\"><b>{}</b>{}<br><code class=\"muted\" title=\"{}\">{}</code> <span class=\"muted\">{}</span>{}</td>",
        t(&container_name(c)),
        if c.gone {
            " <span class=\"muted\">(gone)</span>"
        } else {
            ""
        },
        t(&c.id),
        t(crate::catalog::short_id(&c.id)),
        t(&c.runtime),
        c.pod
            .as_ref()
            .map(|p| format!(
                "<br><span class=\"muted\">pod {}{}</span>",
                p.namespace
                    .as_deref()
                    .map(|n| format!("{}/", t(n)))
                    .unwrap_or_default(),
                t(&p.name)
            ))
            .unwrap_or_default()
    );
    host_cell(o, r, &c.host);
    let _ = write!(o, "<td>{}</td>", t(&image_label(c)));
    num(o, view::image_layers(c));
    totals_cells(o, &c.copy_up);
    o.push_str("</tr>");
}

/// A latency chart per container and per overlay of no container.
fn latency_section(o: &mut String, r: &Report, plain: &[&Mount]) {
    o.push_str("<section id=\"latency\"><h2>Copy-up latency</h2><div class=\"charts\">");
    let mut charts = 0;
    let owners = r
        .containers
        .iter()
        .filter(|c| c.copy_up.count > 0)
        .map(|c| (container_name(c), &c.copy_up))
        .chain(plain.iter().map(|m| {
            (
                m.mountpoint.clone().unwrap_or_else(|| "<gone>".into()),
                &m.copy_up,
            )
        }));
    for (name, totals) in owners {
        let l = &totals.latency_ns;
        o.push_str(&chart(
            &l.buckets,
            &format!(
                "{}: {} copy-ups, p50 {}, p99 {}, max {}",
                show(&name),
                totals.count,
                fmt_ns(l.p50),
                fmt_ns(l.p99),
                fmt_ns(l.max)
            ),
            "ns",
        ));
        charts += 1;
    }
    o.push_str("</div>");
    if charts == 0 {
        o.push_str("<p class=\"muted\">No copy-ups.</p>");
    }
    o.push_str("</section>\n");
}

/// The two hot-spot tables, each sorted by its own key.
fn hot_spots_section(o: &mut String, r: &Report) {
    o.push_str("<section id=\"hotspots\"><h2>Hot spots</h2>");
    if r.copy_ups.is_empty() {
        o.push_str("<p class=\"muted\">No copy-ups.</p>");
    }
    for (title, table) in [
        ("By total copy-up time", &r.hot_spots.by_time),
        ("By bytes copied", &r.hot_spots.by_bytes),
    ] {
        let files = r.hot_spot_rows(table);
        if !files.is_empty() {
            let _ = write!(o, "<h3>{title}</h3>");
            hot_spot_table(o, r, &files);
        }
    }
    if r.copy_ups
        .iter()
        .any(|f| f.container.is_some() && f.layer.is_some())
    {
        let _ = write!(o, "<p class=\"muted\">{}</p>", esc(view::LAYER_LEGEND));
    }
    if r.counters.evicted_files > 0 {
        let _ = write!(
            o,
            "<p class=\"muted\">{} files were evicted from the hot-spot table to keep memory \
             bounded; their copy-ups are in the totals.</p>",
            r.counters.evicted_files
        );
    }
    o.push_str("</section>\n");
}

fn hot_spot_table(o: &mut String, r: &Report, files: &[&CopyUpFile]) {
    o.push_str("<div class=\"scroll\"><table>");
    th(
        o,
        &columns(
            r,
            &[("Path", false), ("Kind", false), ("Container", false)],
            &[
                ("Layer", false),
                ("Instruction", false),
                ("Why", false),
                ("Count", true),
                ("Bytes", true),
                ("Total", true),
                ("p50", true),
                ("p99", true),
                ("Max", true),
                ("Processes", false),
            ],
        ),
    );
    o.push_str("<tbody>");
    for f in files {
        hot_spot_row(o, r, f);
    }
    o.push_str("</tbody></table></div>");
}

fn hot_spot_row(o: &mut String, r: &Report, f: &CopyUpFile) {
    let who = f
        .container
        .as_deref()
        .map(|id| {
            r.containers
                .iter()
                .find(|c| c.id == id)
                .map(container_name)
                .unwrap_or_else(|| crate::catalog::short_id(id).to_string())
        })
        .unwrap_or_else(|| "-".into());
    let created_by = f.layer.as_ref().and_then(|l| l.created_by.as_deref());
    let _ = write!(
        o,
        "<tr><td class=\"path\">{}</td><td>{}</td><td class=\"name\">{}</td>",
        esc(&file_path(f)),
        t(view::kind_word(&f.kind)),
        t(&who)
    );
    host_cell(o, r, &f.host);
    let _ = write!(
        o,
        "<td class=\"nw\"><code>{}</code></td><td class=\"instr\" title=\"{}\"><code>{}</code></td>",
        t(&view::file_layer_label(r, f)),
        t(created_by.unwrap_or("")),
        instruction(created_by)
    );
    let _ = write!(o, "<td>{}</td>", t(&crate::report::file_causes(f)));
    num(o, f.count);
    num(o, fmt_bytes(f.bytes));
    for v in [
        f.total_ns,
        f.latency_ns.p50,
        f.latency_ns.p99,
        f.latency_ns.max,
    ] {
        num(o, fmt_ns(v));
    }
    let _ = write!(o, "<td>{}</td></tr>", t(&f.comms.join(", ")));
}

/// The source layers, by total copy-up time.
fn layers_section(o: &mut String, r: &Report) {
    o.push_str("<section id=\"layers\"><h2>Source layers, by total copy-up time</h2>");
    if r.layers.is_empty() {
        o.push_str("<p class=\"muted\">No copy-up came from a known layer.</p>");
        o.push_str("</section>\n");
        return;
    }
    o.push_str("<div class=\"scroll\"><table>");
    th(
        o,
        &[
            ("Layer", false),
            ("Instruction", false),
            ("Containers", true),
            ("Copy-ups", true),
            ("Bytes", true),
            ("Total", true),
            ("p99", true),
            ("Why", false),
        ],
    );
    o.push_str("<tbody>");
    for l in crate::report::layer_rows(r) {
        let what = match &l.reason {
            Some(why) => t(why),
            None => instruction(l.created_by.as_deref()),
        };
        let _ = write!(
            o,
            "<tr><td class=\"nw\"><code title=\"{}\">{}</code></td><td class=\"instr\" title=\"{}\">{}</td>",
            t(l.diff_id.as_deref().unwrap_or("")),
            t(&l.label),
            t(l.created_by.as_deref().unwrap_or("")),
            what
        );
        match l.containers {
            0 => num(o, "-"),
            n => num(o, n),
        }
        num(o, l.copy_up.count);
        num(o, fmt_bytes(l.copy_up.bytes));
        num(o, fmt_ns(l.copy_up.total_ns));
        num(o, fmt_ns(l.copy_up.latency_ns.p99));
        let _ = write!(
            o,
            "<td>{}</td></tr>",
            t(&crate::report::causes_text(&l.copy_up.by_cause))
        );
    }
    o.push_str("</tbody></table></div></section>\n");
}

/// Which overlay a lookup row is about.
fn lookup_label(r: &Report, l: &Lookups) -> String {
    let c = l
        .container
        .as_deref()
        .and_then(|id| r.containers.iter().find(|c| c.id == id));
    match c {
        Some(c) => format!("container {}", container_name(c)),
        None => format!(
            "{} ({})",
            l.mountpoint.as_deref().unwrap_or("<gone>"),
            l.dev
        ),
    }
}

/// Lookups per overlay (their percentiles are bucket bounds), and a chart
/// of each.
fn lookups_section(o: &mut String, r: &Report) {
    o.push_str("<section id=\"lookups\"><h2>Lookups</h2>");
    if r.lookups.is_empty() {
        o.push_str("<p class=\"muted\">No lookups were measured.</p></section>\n");
        return;
    }
    o.push_str("<div class=\"scroll\"><table>");
    let rest = [
        ("Through", false),
        ("Lookups", true),
        ("Found", true),
        ("Not found", true),
        ("Errors", true),
        ("Mean", true),
        ("p50 ≤", true),
        ("p99 ≤", true),
    ];
    th(o, &columns(r, &[("Overlay", false)], &rest));
    o.push_str("<tbody>");
    for l in &r.lookups {
        let _ = write!(o, "<tr><td class=\"path\">{}</td>", t(&lookup_label(r, l)));
        host_cell(o, r, &l.host);
        let _ = write!(o, "<td>{}</td>", t(&view::lookup_depth(r, l)));
        for v in [l.count, l.found, l.not_found, l.errors] {
            num(o, v);
        }
        for v in [l.latency_ns.mean, l.latency_ns.p50, l.latency_ns.p99] {
            num(o, fmt_ns(v));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table></div><div class=\"charts\">");
    for l in r.lookups.iter().filter(|l| l.count > 0) {
        o.push_str(&chart(
            &l.histogram,
            &format!(
                "lookups in {}: {} through {}, mean {}",
                show(&lookup_label(r, l)),
                l.count,
                view::lookup_depth(r, l),
                fmt_ns(l.latency_ns.mean)
            ),
            "ns",
        ));
    }
    o.push_str("</div></section>\n");
}

fn advice_section(o: &mut String, r: &Report) {
    o.push_str("<section id=\"advice\"><h2>Advice</h2>");
    if r.advice.is_empty() {
        o.push_str("<p class=\"muted\">Nothing to suggest from these numbers.</p>");
    } else {
        o.push_str("<ul class=\"advice\">");
        for a in &r.advice {
            let numbers: Vec<String> = a
                .numbers
                .iter()
                .map(|(k, v)| format!("{} {v}", t(k)))
                .collect();
            let _ = write!(
                o,
                "<li><span class=\"tag\">{}</span>{}<br><span class=\"numbers\">{}</span></li>",
                t(&a.kind),
                t(&a.message),
                numbers.join(" · ")
            );
        }
        o.push_str("</ul>");
    }
    o.push_str("</section>\n");
}

/// A two-column table of labelled counts.
fn count_table(o: &mut String, title: &str, rows: &[(&str, u64)]) {
    o.push_str("<table>");
    th(o, &[(title, false), ("Count", true)]);
    o.push_str("<tbody>");
    for (label, v) in rows {
        let _ = write!(o, "<tr><td>{label}</td>");
        num(o, v);
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
}

/// Events lost in plain words, the raw counters, warnings.
fn drops_section(o: &mut String, r: &Report) {
    let c = r.counters;
    o.push_str("<section id=\"drops\"><h2>Drops and counters</h2>");
    let mut lost: Vec<(&str, u64)> = vec![("Total", r.drops.total)];
    lost.extend(
        view::drop_reasons(&r.drops)
            .into_iter()
            .map(|(n, w)| (w, n)),
    );
    count_table(o, "Events lost", &lost);
    count_table(
        o,
        "Kernel and user-space counters",
        &[
            ("Copy-up entries", c.copy_up_entries),
            ("Copy-up exits", c.copy_up_exits),
            ("Data copies", c.data_copies),
            ("Lookup entries", c.lookup_entries),
            ("Lookup exits", c.lookup_exits),
            ("Filtered out", c.filtered),
            ("Events received", c.events_received),
            ("Files evicted from the hot-spot table", c.evicted_files),
            ("Copy-ups of no container", c.unattributed),
        ],
    );
    if !r.warnings.is_empty() {
        o.push_str("<h3>Warnings</h3><ul>");
        for w in &r.warnings {
            let _ = write!(o, "<li class=\"warn\">{}</li>", t(w));
        }
        o.push_str("</ul>");
    }
    o.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{empty_report, golden_report};

    #[test]
    fn escapes_markup_in_text_and_attributes() {
        assert_eq!(
            esc(r#"<a href="x" onclick='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(esc("naïve ✓ /var/lib"), "naïve ✓ /var/lib");
    }

    #[test]
    fn shows_invisible_characters() {
        assert_eq!(show("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(show("x\u{202e}y\u{200b}z"), "x\\u{202e}y\\u{200b}z");
        assert_eq!(show("back\\slash"), "back\\\\slash");
        assert_eq!(text::terminal_bytes(b"ok/\xff\xfe<x>"), "ok/\\xff\\xfe<x>");
        assert_eq!(text::terminal_bytes("é\u{1b}".as_bytes()), "é\\u{1b}");
    }

    #[test]
    fn chart_has_a_bar_per_power_of_two() {
        let b = |le_ns, count| Bucket { le_ns, count };
        let svg = chart(&[b(1024, 3), b(8192, 1)], "c<1>", "ns");
        // 512..1023, 1024..2047 (empty), 2048..4095 (empty), 4096..8191.
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("height=\"0\""));
        assert!(svg.contains("c&lt;1&gt;"));
        assert!(!svg.contains("c<1>"));
        assert_eq!(chart(&[], "x", "ns"), "");
        assert_eq!(chart(&[b(64, 0)], "x", "ns"), "");
        // Extremes do not panic and stay bounded.
        let svg = chart(&[b(0, 1), b(u64::MAX, u64::MAX), b(3, 7)], "x", "ns");
        assert_eq!(svg.matches("<rect").count(), 65);
    }

    /// Markup the report itself never writes; none may come from input.
    fn assert_no_foreign_markup(html: &str) {
        let lower = html.to_ascii_lowercase();
        for bad in [
            "<script", "<img", "<iframe", "<object", "<embed", "<link", "<base", "@import", "url(",
        ] {
            assert!(!lower.contains(bad), "{bad} in the page");
        }
        for (i, _) in html.match_indices("href=\"") {
            assert_eq!(&html[i + 6..i + 7], "#", "a link off the page");
        }
        for raw in ['\u{1b}', '\u{202e}', '\u{0}'] {
            assert!(!html.contains(raw), "raw {raw:?} in the page");
        }
    }

    #[test]
    fn renders_the_golden_report() {
        let r = golden_report();
        let html = render(&r);
        assert!(html.starts_with("<!DOCTYPE html>"));
        // Why, per file, per container and per layer.
        assert!(html.contains("<th>Why</th>"), "{html}");
        assert!(html.contains("<td>truncate</td>"), "{html}");
        assert!(
            html.contains("<td>write 1, truncate 1, metadata 1, parent 1</td>"),
            "{html}"
        );
        assert!(
            html.contains("<td>write 1, truncate 1, parent 1</td>"),
            "{html}"
        );
        assert!(html.contains(&format!(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">",
            esc(CSP)
        )));
        assert_no_foreign_markup(&html);
        for want in [
            "<b>web-1</b>",
            "shop/api:2.3",
            "/var/lib/app/catalog.db",
            "1/2 ab12cd34ef56",
            "2/2 0123456789ab",
            "<h3>By total copy-up time</h3>",
            "<h3>By bytes copied</h3>",
            "<td>dir</td>",
            "<th class=\"n\">p99 ≤</th>",
            "2 image layers and the init layer",
            "<td>copy-ups not recorded: the buffer between kernel and ovltrace was full",
            "COPY file:01344f2ea10c… in /var/lib/app/",
            // The hostile name from the golden trace, escaped.
            "/etc/\\u{1b}[31mevil\\nname",
            "<svg",
        ] {
            assert!(html.contains(want), "missing {want:?}");
        }
        // One chart per active container and plain overlay, one per lookup mount.
        assert_eq!(html.matches("<figure").count(), 3);
    }

    #[test]
    fn renders_hostile_strings_inert() {
        let mut r = golden_report();
        let evil =
            "</title><script>alert(1)</script>\"'><img src=x onerror=alert(2)>\u{1b}[2J\u{202e}";
        r.host = evil.into();
        r.kernel = evil.into();
        r.probe.strategy = evil.into();
        r.tool.version = evil.into();
        r.warnings.push(evil.into());
        for c in &mut r.containers {
            c.name = Some(evil.into());
            c.image.tags = vec![evil.into()];
            c.id = evil.into();
        }
        for f in &mut r.copy_ups {
            f.path = evil.into();
            f.comms = vec![evil.into()];
            f.container = Some(evil.into());
            if let Some(l) = &mut f.layer {
                l.created_by = Some(evil.into());
            }
        }
        for l in &mut r.layers {
            l.created_by = Some(evil.into());
            l.diff_id = Some(evil.into());
        }
        for l in &mut r.lookups {
            l.mountpoint = Some(evil.into());
            l.dev = evil.into();
        }
        for m in &mut r.mounts {
            m.mountpoint = Some(evil.into());
            m.dev = evil.into();
        }
        r.advice.push(crate::report::Advice {
            kind: evil.into(),
            container: None,
            target: evil.into(),
            message: evil.into(),
            numbers: [(evil.to_string(), 1)].into(),
            instruction: Some(evil.into()),
            ..Default::default()
        });
        r.hosts = vec![evil.into(), "b".into()];
        for m in &mut r.mounts {
            m.host = Some(evil.into());
        }
        let html = render(&r);
        assert_no_foreign_markup(&html);
        assert!(html.contains("&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&gt;"));
        assert_eq!(
            html.matches("</title>").count(),
            1 + html.matches("</title></rect>").count()
        );
    }

    #[test]
    fn renders_an_empty_report() {
        let html = render(&empty_report());
        assert_no_foreign_markup(&html);
        assert!(html.contains("No containers were seen."));
        assert!(html.contains("No copy-ups."));
        assert!(html.ends_with("</html>\n"));
    }
}
