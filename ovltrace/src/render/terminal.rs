//! Plain-text report for a terminal. Everything that came from a container
//! (paths, process names) is escaped: a file name must not be able to move
//! the cursor or change colours in the reader's terminal.

use std::fmt::Write as _;

use comfy_table::{presets::NOTHING, CellAlignment, ContentArrangement, Table};

use crate::report::{Bucket, CopyUpFile, Report};
use crate::text::terminal as sanitize;
use crate::units::{fmt_bytes, fmt_ns};

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

fn right_align(t: &mut Table, from: usize) {
    let n = t.column_count();
    for i in from..n {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Joins a mount point and a path relative to it for display.
fn full_path(mountpoint: Option<&str>, path: &str) -> String {
    match mountpoint {
        Some(m) => format!("{}/{}", m.trim_end_matches('/'), path),
        None => format!("<gone>/{path}"),
    }
}

/// bcc-style log2 histogram (`print_log2_hist`).
pub fn log2_hist(out: &mut String, buckets: &[Bucket], unit: &str) {
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    if max == 0 {
        return;
    }
    let _ = writeln!(out, "{:>26} : {:<8} distribution", unit, "count");
    for b in buckets {
        let lo = b.le_ns / 2;
        let hi = b.le_ns.saturating_sub(1);
        let stars = ((b.count as f64 / max as f64) * 40.0).round() as usize;
        let _ = writeln!(
            out,
            "{:>12} -> {:<11} : {:<8} |{:<40}|",
            lo,
            hi,
            b.count,
            "*".repeat(stars.min(40))
        );
    }
}

/// "3/7 ab12cd34ef56": the layer's position in its image (1 = base) and its
/// short diff-id; the init layer and non-container overlays by index.
pub fn layer_label(r: &Report, f: &CopyUpFile) -> String {
    let Some(src) = &f.layer else {
        return "-".into();
    };
    let container = f
        .container
        .as_deref()
        .and_then(|id| r.containers.iter().find(|c| c.id == id));
    let Some(c) = container else {
        return format!("lower {}", src.index);
    };
    let info = c.layers.iter().find(|l| l.index == src.index);
    let image_layers = c.layers.iter().filter(|l| !l.init).count();
    match info {
        Some(l) if l.init => "init".into(),
        Some(l) => {
            let pos = l.position.map_or("?".to_string(), |p| p.to_string());
            let diff = l
                .diff_id
                .as_deref()
                .map(|d| crate::catalog::short_digest(d).to_string())
                .unwrap_or_else(|| "?".into());
            format!("{pos}/{image_layers} {diff}")
        }
        None => format!("lower {}", src.index),
    }
}

/// Width of the INSTRUCTION column.
pub const INSTRUCTION_WIDTH: usize = 60;

/// The Dockerfile line that made the file's source layer, escaped.
pub fn instruction(f: &CopyUpFile) -> String {
    instruction_text(f.layer.as_ref().and_then(|l| l.created_by.as_deref()))
}

/// A history `created_by` for the INSTRUCTION column (see
/// [`crate::catalog::instruction::display`]), escaped.
pub fn instruction_text(created_by: Option<&str>) -> String {
    sanitize(&crate::catalog::instruction::display(
        created_by,
        INSTRUCTION_WIDTH,
    ))
}

fn latency_line(t: &crate::report::CopyUpTotals) -> String {
    let l = &t.latency_ns;
    format!(
        "{} copy-ups, {}, {} errors; latency p50 {} p90 {} p99 {} p99.9 {} max {}",
        t.count,
        fmt_bytes(t.bytes),
        t.errors,
        fmt_ns(l.p50),
        fmt_ns(l.p90),
        fmt_ns(l.p99),
        fmt_ns(l.p999),
        fmt_ns(l.max)
    )
}

fn file_rows(r: &Report, files: &[&CopyUpFile]) -> Table {
    let mut t = table(&[
        "PATH",
        "LAYER",
        "INSTRUCTION",
        "CAUSE",
        "COUNT",
        "BYTES",
        "TOTAL",
        "MAX",
        "COMM",
    ]);
    for f in files {
        let mut path = full_path(f.mountpoint.as_deref(), &f.path);
        if f.container.is_some() {
            // Inside a container the mount point means nothing to its owner.
            path = format!("/{}", f.path);
        }
        if f.path_truncated {
            path = format!("…{path}");
        }
        t.add_row(vec![
            sanitize(&path),
            layer_label(r, f),
            instruction(f),
            crate::report::file_causes(f),
            f.count.to_string(),
            fmt_bytes(f.bytes),
            fmt_ns(f.total_ns),
            fmt_ns(f.latency_ns.max),
            // Made from the host's mount namespace: a runtime setting the
            // container up, not the container's own processes.
            if f.outside && f.container.is_some() {
                format!("{} (outside)", sanitize(&f.comms.join(",")))
            } else {
                sanitize(&f.comms.join(","))
            },
        ]);
    }
    right_align(&mut t, 4);
    t
}

/// "  why: metadata 300, parent 2" (nothing when no cause is known).
fn cause_line(out: &mut String, t: &crate::report::CopyUpTotals) {
    if !t.by_cause.is_empty() {
        let _ = writeln!(out, "  why: {}", crate::report::causes_text(&t.by_cause));
    }
}

/// ANSI styling, enabled only when asked (`--color`, or a TTY).
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, style: anstyle::Style, text: &str) -> String {
        if self.color {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_string()
        }
    }

    fn heading(&self, text: &str) -> String {
        self.paint(anstyle::Style::new().bold(), text)
    }

    fn name(&self, text: &str) -> String {
        self.paint(
            anstyle::Style::new()
                .bold()
                .fg_color(Some(anstyle::AnsiColor::Cyan.into())),
            text,
        )
    }

    fn warn(&self, text: &str) -> String {
        self.paint(
            anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Yellow.into())),
            text,
        )
    }
}

fn image_label(c: &crate::report::Container) -> String {
    c.image.tags.first().cloned().unwrap_or_else(|| {
        c.image
            .id
            .as_deref()
            .map_or("?".into(), |i| crate::catalog::short_digest(i).to_string())
    })
}

fn lookup_lines(out: &mut String, l: &crate::report::Lookups) {
    let _ = writeln!(
        out,
        "  lookups: {} ({} found, {} not found, {} errors) through {} lower layers; mean {}, p99 < {}",
        l.count,
        l.found,
        l.not_found,
        l.errors,
        l.layers,
        fmt_ns(l.latency_ns.mean),
        fmt_ns(l.latency_ns.p99)
    );
}

/// " on HOST" in a report merged from several hosts (`host` of the item).
fn on_host(r: &Report, host: &Option<String>) -> String {
    match host {
        Some(h) if !r.hosts.is_empty() => format!(" on {}", sanitize(h)),
        _ => String::new(),
    }
}

/// The report without colour.
pub fn render(r: &Report) -> String {
    render_styled(r, Style::default())
}

pub fn render_styled(r: &Report, st: Style) -> String {
    let mut out = String::new();
    // Saturating: a report read back from a file may hold anything.
    let sum = |it: &mut dyn Iterator<Item = u64>| it.fold(0u64, u64::saturating_add);
    let total = sum(&mut r.mounts.iter().map(|m| m.copy_up.count));
    let bytes = sum(&mut r.mounts.iter().map(|m| m.copy_up.bytes));
    let _ = writeln!(
        out,
        "{}",
        st.heading(&format!(
            "ovltrace: traced {:.1}s with {} probes: {} copy-ups ({}), {} lookups, {} events dropped",
            r.duration_ms as f64 / 1000.0,
            r.probe.strategy,
            total,
            fmt_bytes(bytes),
            sum(&mut r.lookups.iter().map(|l| l.count)),
            r.drops.total
        ))
    );

    // Containers first (most copy-ups first), then overlays of no container.
    for c in r.containers.iter().filter(|c| {
        c.copy_up.count > 0
            || r.lookups
                .iter()
                .any(|l| l.container.as_deref() == Some(&c.id))
    }) {
        let name = c.display_name();
        let _ = writeln!(
            out,
            "\n{} {} ({}, {}){} image {} overlay {}{}",
            st.heading("CONTAINER"),
            st.name(&sanitize(name)),
            crate::catalog::short_id(&c.id),
            sanitize(&c.runtime),
            on_host(r, &c.host),
            sanitize(&image_label(c)),
            c.dev,
            if c.gone { " (gone)" } else { "" }
        );
        let _ = writeln!(out, "  {}", latency_line(&c.copy_up));
        cause_line(&mut out, &c.copy_up);
        log2_hist(&mut out, &c.copy_up.latency_ns.buckets, "nsecs");
        let files: Vec<&CopyUpFile> = r
            .copy_ups
            .iter()
            .filter(|f| f.container.as_deref() == Some(&c.id))
            .collect();
        if !files.is_empty() {
            let _ = writeln!(out, "  hot spots, by total copy-up time:");
            let _ = writeln!(out, "{}", file_rows(r, &files));
        }
        for l in r
            .lookups
            .iter()
            .filter(|l| l.container.as_deref() == Some(&c.id))
        {
            lookup_lines(&mut out, l);
            log2_hist(&mut out, &l.histogram, "nsecs");
        }
    }
    let plain: Vec<&crate::report::Mount> = r
        .mounts
        .iter()
        .filter(|m| {
            // A container's root, or its init layer's mount (whose copy-ups
            // are the container's, in its section).
            let owned = m.container.is_some()
                || r.containers.iter().any(|c| {
                    c.dev == m.dev
                        && c.host == m.host
                        && Some(&c.mountpoint) == m.mountpoint.as_ref()
                });
            !owned
                && (m.copy_up.count > 0
                    || r.lookups
                        .iter()
                        .any(|l| l.dev == m.dev && l.host == m.host && l.container.is_none()))
        })
        .collect();
    for m in &plain {
        let _ = writeln!(
            out,
            "\n{} {} ({}){}",
            st.heading("OVERLAY"),
            st.name(&sanitize(m.mountpoint.as_deref().unwrap_or("<gone>"))),
            m.dev,
            on_host(r, &m.host)
        );
        let _ = writeln!(out, "  {}", latency_line(&m.copy_up));
        cause_line(&mut out, &m.copy_up);
        log2_hist(&mut out, &m.copy_up.latency_ns.buckets, "nsecs");
        let files: Vec<&CopyUpFile> = r
            .copy_ups
            .iter()
            .filter(|f| f.container.is_none() && f.dev == m.dev && f.host == m.host)
            .collect();
        if !files.is_empty() {
            let _ = writeln!(out, "  hot spots, by total copy-up time:");
            let _ = writeln!(out, "{}", file_rows(r, &files));
        }
        for l in r
            .lookups
            .iter()
            .filter(|l| l.dev == m.dev && l.host == m.host && l.container.is_none())
        {
            lookup_lines(&mut out, l);
            log2_hist(&mut out, &l.histogram, "nsecs");
        }
    }
    // Copy-ups that no container claimed, on a device a container's overlay
    // holds by the end (a runtime's own writes while it set the container up,
    // or an earlier overlay with the same device number): in no section above.
    let shown: u64 = plain.iter().map(|m| m.copy_up.count).sum();
    let hidden = r.counters.unattributed.saturating_sub(shown);
    if hidden > 0 {
        let _ = writeln!(
            out,
            "\n{} {hidden} copy-ups on overlays no container was known for when they happened \
             (a runtime setting a container up, or a reused device number)",
            st.heading("NOT ATTRIBUTED")
        );
        let files: Vec<&CopyUpFile> = r
            .copy_ups
            .iter()
            .filter(|f| {
                f.container.is_none() && !plain.iter().any(|m| m.dev == f.dev && m.host == f.host)
            })
            .collect();
        if files.is_empty() {
            let _ = writeln!(out, "  (none of them is among the files this report kept)");
        } else {
            let _ = writeln!(out, "{}", file_rows(r, &files));
        }
    }
    if total == 0 {
        let _ = writeln!(out, "\n  (no copy-ups)");
    }

    if !r.layers.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            st.heading("SOURCE LAYERS, by total copy-up time")
        );
        let mut t = table(&[
            "LAYER",
            "INSTRUCTION",
            "CONTAINERS",
            "COPY-UPS",
            "BYTES",
            "TOTAL",
            "P99",
            "WHY",
        ]);
        for l in crate::report::layer_rows(r) {
            let what = match &l.reason {
                Some(why) => sanitize(why),
                None => instruction_text(l.created_by.as_deref()),
            };
            let containers = match l.containers {
                0 => "-".to_string(),
                n => n.to_string(),
            };
            t.add_row(vec![
                sanitize(&l.label),
                what,
                containers,
                l.copy_up.count.to_string(),
                fmt_bytes(l.copy_up.bytes),
                fmt_ns(l.copy_up.total_ns),
                fmt_ns(l.copy_up.latency_ns.p99),
                crate::report::causes_text(&l.copy_up.by_cause),
            ]);
        }
        right_align(&mut t, 2);
        if let Some(c) = t.column_mut(7) {
            c.set_cell_alignment(CellAlignment::Left);
        }
        let _ = writeln!(out, "{t}");
    }

    if !r.advice.is_empty() {
        let _ = writeln!(out, "\n{}", st.heading("ADVICE"));
        for a in &r.advice {
            let _ = writeln!(out, "  * [{}] {}", a.kind, st.warn(&sanitize(&a.message)));
        }
    }

    let d = r.drops;
    let _ = writeln!(
        out,
        "\nDROPS: {} (ring buffer full {}, lost returns {}, in-flight table full {}, undecodable {})",
        d.total, d.ringbuf_full, d.lost_returns, d.inflight_full, d.decode_errors
    );
    if r.files.listed < r.files.kept {
        let _ = writeln!(
            out,
            "{} of {} copied-up files listed (--top 0 lists all {} the tracer kept)",
            r.files.listed, r.files.seen, r.files.kept
        );
    }
    if r.counters.evicted_files > 0 {
        let _ = writeln!(
            out,
            "{} files were evicted from the hot-spot table (their copy-ups are in the totals)",
            r.counters.evicted_files
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "{}", st.warn(&format!("warning: {}", sanitize(w))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::golden_report;

    #[test]
    fn sanitizes_control_characters() {
        assert_eq!(sanitize("a\nb"), "a\\nb");
        assert_eq!(sanitize("\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(sanitize("x\u{9b}y"), "x\\u{9b}y");
        assert_eq!(sanitize("back\\slash"), "back\\\\slash");
        assert_eq!(sanitize("naïve ✓"), "naïve ✓");
        assert_eq!(sanitize("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(sanitize("a\u{2028}b\u{2066}c"), "a\\u{2028}b\\u{2066}c");
    }

    #[test]
    fn instructions_read_like_a_dockerfile() {
        let f = |created_by: &str| CopyUpFile {
            host: None,
            mountpoint: None,
            dev: "0:1".into(),
            path: "x".into(),
            path_b64: None,
            path_truncated: false,
            container: None,
            layer: Some(crate::catalog::SourceLayer {
                index: 2,
                diff_id: None,
                created_by: Some(created_by.into()),
                data_index: None,
            }),
            kind: "regular".into(),
            bytes: 0,
            count: 1,
            errors: 0,
            total_ns: 0,
            latency_ns: Default::default(),
            pids: vec![],
            comms: vec![],
            outside: false,
            causes: vec![],
        };
        // The rules are crate::catalog::instruction's; this checks the column's use.
        assert_eq!(
            instruction(&f("/bin/sh -c #(nop) COPY file:01344f2ea10c2be8c3f5a2e2b1f1f1e0d7c7b5a0c3f5a2e2b1f1f1e0d7c7b5a0 in /var/lib/app/ ")),
            "COPY file:01344f2ea10c… in /var/lib/app/"
        );
        assert_eq!(
            instruction(&f("/bin/sh -c dd if=/dev/zero of=/x")),
            "RUN dd if=/dev/zero of=/x"
        );
        assert_eq!(instruction(&f("COPY x /y # buildkit")), "COPY x /y");
        assert_eq!(instruction(&f("")), crate::catalog::instruction::NO_HISTORY);
        assert_eq!(
            instruction(&f("/bin/sh -c echo \x1b[2J")),
            "RUN echo \\u{1b}[2J"
        );
        assert_eq!(instruction(&f(&"y".repeat(100))).chars().count(), 60);
    }

    /// The terminal report of a fixed trace, byte for byte. Set
    #[test]
    fn copy_ups_no_section_shows_are_listed_as_not_attributed() {
        let mut r = golden_report();
        assert!(!render(&r).contains("NOT ATTRIBUTED"));
        // A runtime's copy-up on a container's device, before the container
        // was known.
        let c = r.containers[0].clone();
        let mut f = r
            .copy_ups
            .iter()
            .find(|f| f.container.as_deref() == Some(c.id.as_str()))
            .expect("a copy-up of the first container")
            .clone();
        f.container = None;
        f.layer = None;
        f.path = "etc/runtime-setup".into();
        f.comms = vec!["runc".into()];
        r.copy_ups.push(f);
        let shown_plain: u64 = r
            .mounts
            .iter()
            .filter(|m| m.dev != c.dev && m.copy_up.count > 0)
            .map(|m| m.copy_up.count)
            .sum();
        r.counters.unattributed = shown_plain + 1;
        let text = render(&r);
        assert!(text.contains("NOT ATTRIBUTED 1 copy-ups"), "{text}");
        assert!(text.contains("/etc/runtime-setup"), "{text}");
        // Counted, but cut from the report's file list.
        r.copy_ups.pop();
        let text = render(&r);
        assert!(text.contains("NOT ATTRIBUTED 1 copy-ups"), "{text}");
        assert!(text.contains("none of them is among the files"), "{text}");
    }

    #[test]
    fn init_mount_copy_ups_are_the_containers_marked_outside() {
        let mut r = golden_report();
        let c = r.containers[0].clone();
        // dockerd's short-lived mount of the container's init layer.
        r.mounts.push(crate::report::Mount {
            host: None,
            mountpoint: None,
            dev: "0:99".into(),
            upperdir: Some("/var/lib/docker/overlay2/x-init/diff".into()),
            lowerdirs: vec![],
            container: Some(c.id.clone()),
            copy_up: crate::report::CopyUpTotals {
                count: 1,
                ..Default::default()
            },
        });
        let mut f = r
            .copy_ups
            .iter()
            .find(|f| f.container.as_deref() == Some(c.id.as_str()))
            .expect("a copy-up of the first container")
            .clone();
        f.dev = "0:99".into();
        f.path = "etc/init-setup".into();
        f.comms = vec!["dockerd".into()];
        f.outside = true;
        r.copy_ups.push(f);
        let text = render(&r);
        assert!(!text.contains("<gone>"), "not a plain overlay: {text}");
        assert!(!text.contains("NOT ATTRIBUTED"), "{text}");
        let row = text
            .lines()
            .find(|l| l.contains("/etc/init-setup"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(row.contains("dockerd (outside)"), "{row}");
    }

    /// OVLTRACE_BLESS=1 to rewrite the golden file after an intended change.
    #[test]
    fn golden_terminal_report() {
        let text = render(&golden_report());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/render/testdata/terminal.golden");
        if std::env::var("OVLTRACE_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &text).unwrap();
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            text, golden,
            "terminal report changed; OVLTRACE_BLESS=1 to accept:\n{text}"
        );
        // Hostile names cannot reach the terminal raw.
        assert!(!text.contains('\x1b'));
        assert!(text.contains("evil\\nname"));
        // Colour only when asked.
        let colored = render_styled(&golden_report(), Style { color: true });
        assert!(colored.contains("\x1b[1m"));
    }

    #[test]
    fn units() {
        assert_eq!(fmt_ns(999), "999ns");
        assert_eq!(fmt_ns(1_500), "1.5µs");
        assert_eq!(fmt_ns(2_340_000), "2.34ms");
        assert_eq!(fmt_ns(3_000_000_000), "3.00s");
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(4096), "4.0 KiB");
        assert_eq!(fmt_bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn log2_histogram_like_bcc() {
        let mut s = String::new();
        log2_hist(
            &mut s,
            &[
                Bucket {
                    le_ns: 1024,
                    count: 4,
                },
                Bucket {
                    le_ns: 2048,
                    count: 2,
                },
            ],
            "nsecs",
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].contains("512 -> 1023") && lines[1].contains(&"*".repeat(40)),
            "{s}"
        );
        assert!(
            lines[2].contains("1024 -> 2047")
                && lines[2].contains(&format!("|{}{}|", "*".repeat(20), " ".repeat(20))),
            "{s}"
        );
    }
}
