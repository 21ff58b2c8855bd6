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
    render::terminal::layer_label,
    report::{Bucket, Container, CopyUpFile, CopyUpTotals, Report},
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
        let h = ((count as f64 / max as f64) * plot_h as f64).round() as usize;
        let h = if count > 0 { h.max(1) } else { 0 };
        let x = left + i * bar;
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
    let _ = write!(
        s,
        "</svg><figcaption>{}</figcaption></figure>",
        esc(caption)
    );
    s
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

/// The whole report as one HTML document.
pub fn render(r: &Report) -> String {
    let multi = !r.hosts.is_empty();
    let host_of = |h: &Option<String>| t(h.as_deref().unwrap_or(&r.host));
    let mut o = String::with_capacity(64 * 1024);
    let total: u64 = r
        .mounts
        .iter()
        .fold(0u64, |a, m| a.saturating_add(m.copy_up.count));
    let bytes: u64 = r
        .mounts
        .iter()
        .fold(0u64, |a, m| a.saturating_add(m.copy_up.bytes));
    let time: u64 = r
        .mounts
        .iter()
        .fold(0u64, |a, m| a.saturating_add(m.copy_up.total_ns));
    let lookups: u64 = r
        .lookups
        .iter()
        .fold(0u64, |a, l| a.saturating_add(l.count));

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
    for (v, label) in [
        (total.to_string(), "copy-ups"),
        (fmt_bytes(bytes), "copied up"),
        (fmt_ns(time), "in copy-ups"),
        (lookups.to_string(), "lookups"),
        (r.drops.total.to_string(), "events dropped"),
    ] {
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

    // Per container.
    o.push_str("<section id=\"containers\"><h2>Copy-ups by container</h2>");
    if r.containers.is_empty() {
        o.push_str("<p class=\"muted\">No containers were seen.</p>");
    } else {
        o.push_str("<div class=\"scroll\"><table>");
        let mut cols = vec![("Container", false)];
        if multi {
            cols.push(("Host", false));
        }
        cols.extend([("Image", false), ("Layers", true)]);
        cols.extend(TOTALS_COLS);
        th(&mut o, &cols);
        o.push_str("<tbody>");
        for c in &r.containers {
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
            if multi {
                let _ = write!(o, "<td>{}</td>", host_of(&c.host));
            }
            let _ = write!(o, "<td>{}</td>", t(&image_label(c)));
            num(&mut o, c.layers.iter().filter(|l| !l.init).count());
            totals_cells(&mut o, &c.copy_up);
            o.push_str("</tr>");
        }
        o.push_str("</tbody></table></div>");
    }
    // Overlays that are no container's root.
    let plain: Vec<&crate::report::Mount> = r
        .mounts
        .iter()
        .filter(|m| {
            m.copy_up.count > 0
                && m.container.is_none()
                && !r.containers.iter().any(|c| {
                    c.dev == m.dev
                        && c.host == m.host
                        && Some(&c.mountpoint) == m.mountpoint.as_ref()
                })
        })
        .collect();
    if !plain.is_empty() {
        o.push_str("<h3>Overlays of no container</h3><div class=\"scroll\"><table>");
        let mut cols = vec![("Mount point", false), ("Device", false)];
        if multi {
            cols.push(("Host", false));
        }
        cols.extend(TOTALS_COLS);
        th(&mut o, &cols);
        o.push_str("<tbody>");
        for m in &plain {
            let _ = write!(
                o,
                "<tr><td class=\"path\">{}</td><td>{}</td>",
                t(m.mountpoint.as_deref().unwrap_or("<gone>")),
                t(&m.dev)
            );
            if multi {
                let _ = write!(o, "<td>{}</td>", host_of(&m.host));
            }
            totals_cells(&mut o, &m.copy_up);
            o.push_str("</tr>");
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section>\n");

    // Latency charts.
    o.push_str("<section id=\"latency\"><h2>Copy-up latency</h2><div class=\"charts\">");
    let mut charts = 0;
    for c in r.containers.iter().filter(|c| c.copy_up.count > 0) {
        let l = &c.copy_up.latency_ns;
        o.push_str(&chart(
            &l.buckets,
            &format!(
                "{}: {} copy-ups, p50 {}, p99 {}, max {}",
                show(&container_name(c)),
                c.copy_up.count,
                fmt_ns(l.p50),
                fmt_ns(l.p99),
                fmt_ns(l.max)
            ),
            "ns",
        ));
        charts += 1;
    }
    for m in &plain {
        let l = &m.copy_up.latency_ns;
        o.push_str(&chart(
            &l.buckets,
            &format!(
                "{}: {} copy-ups, p50 {}, p99 {}, max {}",
                show(m.mountpoint.as_deref().unwrap_or("<gone>")),
                m.copy_up.count,
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

    // Hot spots.
    o.push_str("<section id=\"hotspots\"><h2>Hot spots, by total copy-up time</h2>");
    if r.copy_ups.is_empty() {
        o.push_str("<p class=\"muted\">No copy-ups.</p>");
    } else {
        o.push_str("<div class=\"scroll\"><table>");
        let mut cols = vec![("Path", false), ("Container", false)];
        if multi {
            cols.push(("Host", false));
        }
        cols.extend([
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
        ]);
        th(&mut o, &cols);
        o.push_str("<tbody>");
        for f in &r.copy_ups {
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
                "<tr><td class=\"path\">{}</td><td class=\"name\">{}</td>",
                esc(&file_path(f)),
                t(&who)
            );
            if multi {
                let _ = write!(o, "<td>{}</td>", host_of(&f.host));
            }
            let _ = write!(
                o,
                "<td class=\"nw\"><code>{}</code></td><td class=\"instr\" title=\"{}\"><code>{}</code></td>",
                t(&layer_label(r, f)),
                t(created_by.unwrap_or("")),
                instruction(created_by)
            );
            let _ = write!(o, "<td>{}</td>", t(&crate::report::file_causes(f)));
            num(&mut o, f.count);
            num(&mut o, fmt_bytes(f.bytes));
            num(&mut o, fmt_ns(f.total_ns));
            num(&mut o, fmt_ns(f.latency_ns.p50));
            num(&mut o, fmt_ns(f.latency_ns.p99));
            num(&mut o, fmt_ns(f.latency_ns.max));
            let _ = write!(o, "<td>{}</td></tr>", t(&f.comms.join(", ")));
        }
        o.push_str("</tbody></table></div>");
        if r.counters.evicted_files > 0 {
            let _ = write!(
                o,
                "<p class=\"muted\">{} files were evicted from the hot-spot table to keep memory \
                 bounded; their copy-ups are in the totals.</p>",
                r.counters.evicted_files
            );
        }
    }
    o.push_str("</section>\n");

    // Source layers.
    o.push_str("<section id=\"layers\"><h2>Source layers, by total copy-up time</h2>");
    if r.layers.is_empty() {
        o.push_str("<p class=\"muted\">No copy-up came from a known layer.</p>");
    } else {
        o.push_str("<div class=\"scroll\"><table>");
        th(
            &mut o,
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
                0 => num(&mut o, "-"),
                n => num(&mut o, n),
            }
            num(&mut o, l.copy_up.count);
            num(&mut o, fmt_bytes(l.copy_up.bytes));
            num(&mut o, fmt_ns(l.copy_up.total_ns));
            num(&mut o, fmt_ns(l.copy_up.latency_ns.p99));
            let _ = write!(
                o,
                "<td>{}</td></tr>",
                t(&crate::report::causes_text(&l.copy_up.by_cause))
            );
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section>\n");

    // Lookups.
    o.push_str("<section id=\"lookups\"><h2>Lookups</h2>");
    if r.lookups.is_empty() {
        o.push_str("<p class=\"muted\">No lookups were measured.</p>");
    } else {
        o.push_str("<div class=\"scroll\"><table>");
        let mut cols = vec![("Overlay", false)];
        if multi {
            cols.push(("Host", false));
        }
        cols.extend([
            ("Lower layers", true),
            ("Lookups", true),
            ("Found", true),
            ("Not found", true),
            ("Errors", true),
            ("Mean", true),
            ("p50 <", true),
            ("p99 <", true),
        ]);
        th(&mut o, &cols);
        o.push_str("<tbody>");
        let label = |l: &crate::report::Lookups| {
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
        };
        for l in &r.lookups {
            let _ = write!(o, "<tr><td class=\"path\">{}</td>", t(&label(l)));
            if multi {
                let _ = write!(o, "<td>{}</td>", host_of(&l.host));
            }
            num(&mut o, l.layers);
            num(&mut o, l.count);
            num(&mut o, l.found);
            num(&mut o, l.not_found);
            num(&mut o, l.errors);
            num(&mut o, fmt_ns(l.latency_ns.mean));
            num(&mut o, fmt_ns(l.latency_ns.p50));
            num(&mut o, fmt_ns(l.latency_ns.p99));
            o.push_str("</tr>");
        }
        o.push_str("</tbody></table></div><div class=\"charts\">");
        for l in r.lookups.iter().filter(|l| l.count > 0) {
            o.push_str(&chart(
                &l.histogram,
                &format!(
                    "lookups in {}: {} through {} lower layers, mean {}",
                    show(&label(l)),
                    l.count,
                    l.layers,
                    fmt_ns(l.latency_ns.mean)
                ),
                "ns",
            ));
        }
        o.push_str("</div>");
    }
    o.push_str("</section>\n");

    // Advice.
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

    // Drops, counters, warnings.
    let d = r.drops;
    let c = r.counters;
    o.push_str("<section id=\"drops\"><h2>Drops and counters</h2><table>");
    th(&mut o, &[("Events lost", false), ("Count", true)]);
    o.push_str("<tbody>");
    for (label, v) in [
        ("Total", d.total),
        ("Ring buffer full", d.ringbuf_full),
        ("Copy-up returns not reported", d.lost_returns),
        ("In-flight table full", d.inflight_full),
        ("Undecodable records", d.decode_errors),
    ] {
        let _ = write!(o, "<tr><td>{label}</td>");
        num(&mut o, v);
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table><table>");
    th(
        &mut o,
        &[("Kernel and user-space counters", false), ("Count", true)],
    );
    o.push_str("<tbody>");
    for (label, v) in [
        ("Copy-up entries", c.copy_up_entries),
        ("Copy-up exits", c.copy_up_exits),
        ("Data copies", c.data_copies),
        ("Lookup entries", c.lookup_entries),
        ("Lookup exits", c.lookup_exits),
        ("Filtered out", c.filtered),
        ("Events received", c.events_received),
        ("Files evicted from the hot-spot table", c.evicted_files),
        ("Copy-ups of no container", c.unattributed),
    ] {
        let _ = write!(o, "<tr><td>{label}</td>");
        num(&mut o, v);
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    if !r.warnings.is_empty() {
        o.push_str("<h3>Warnings</h3><ul>");
        for w in &r.warnings {
            let _ = write!(o, "<li class=\"warn\">{}</li>", t(w));
        }
        o.push_str("</ul>");
    }
    o.push_str("</section>\n</main>\n");
    let _ = write!(
        o,
        "<footer>Written by {} {} (report schema {}).</footer>\n</body>\n</html>\n",
        t(&r.tool.name),
        t(&r.tool.version),
        r.schema_version
    );
    o
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
            html.contains("<td>write 1, truncate 1, metadata 1</td>"),
            "{html}"
        );
        assert!(html.contains("<td>write 1, truncate 1</td>"), "{html}");
        assert!(html.contains(&format!(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">",
            esc(CSP)
        )));
        assert_no_foreign_markup(&html);
        for want in [
            "<b>web-1</b>",
            "shop/api:2.3",
            "/var/lib/app/catalog.db",
            "2/2 ab12cd34ef56",
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
