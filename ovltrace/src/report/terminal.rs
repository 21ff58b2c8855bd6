//! Plain-text report for a terminal. Everything that came from a container
//! (paths, process names) is escaped: a file name must not be able to move
//! the cursor or change colours in the reader's terminal.

use std::fmt::Write as _;

use comfy_table::{presets::NOTHING, CellAlignment, ContentArrangement, Table};

use super::{Bucket, CopyUpFile, Report};

/// Escapes control characters (C0, DEL, C1) and backslashes, so the result is
/// printable and unambiguous.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

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
                .map(|d| {
                    d.trim_start_matches("sha256:")
                        .chars()
                        .take(12)
                        .collect::<String>()
                })
                .unwrap_or_else(|| "?".into());
            format!("{pos}/{image_layers} {diff}")
        }
        None => format!("lower {}", src.index),
    }
}

/// The Dockerfile line that made the layer, as `docker history` shows it.
pub fn instruction(f: &CopyUpFile) -> String {
    let Some(cmd) = f.layer.as_ref().and_then(|l| l.created_by.as_deref()) else {
        return String::new();
    };
    let cmd = cmd.trim();
    // Legacy-builder history: `/bin/sh -c #(nop)  COPY ...` or `/bin/sh -c <run>`.
    let cmd = if let Some(rest) = cmd.strip_prefix("/bin/sh -c #(nop)") {
        rest.trim().to_string()
    } else if let Some(rest) = cmd.strip_prefix("/bin/sh -c ") {
        format!("RUN {}", rest.trim())
    } else {
        cmd.to_string()
    };
    truncate(&sanitize(&cmd), 60)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn totals_row(name: String, extra: String, t: &super::CopyUpTotals) -> Vec<String> {
    let l = &t.latency_ns;
    vec![
        name,
        extra,
        t.count.to_string(),
        fmt_bytes(t.bytes),
        t.errors.to_string(),
        fmt_ns(l.min),
        fmt_ns(l.p50),
        fmt_ns(l.p99),
        fmt_ns(l.max),
    ]
}

fn file_rows(r: &Report, files: &[&CopyUpFile]) -> Table {
    let mut t = table(&[
        "PATH",
        "LAYER",
        "INSTRUCTION",
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
            f.count.to_string(),
            fmt_bytes(f.bytes),
            fmt_ns(f.total_ns),
            fmt_ns(f.latency_ns.max),
            sanitize(&f.comms.join(",")),
        ]);
    }
    right_align(&mut t, 3);
    t
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let total: u64 = r.mounts.iter().map(|m| m.copy_up.count).sum();
    let bytes: u64 = r.mounts.iter().map(|m| m.copy_up.bytes).sum();
    let _ = writeln!(
        out,
        "ovltrace: traced {:.1}s with {} probes: {} copy-ups ({}), {} lookups, {} events dropped",
        r.duration_ms as f64 / 1000.0,
        r.probe.strategy,
        total,
        fmt_bytes(bytes),
        r.lookups.iter().map(|l| l.count).sum::<u64>(),
        r.drops.total
    );

    let active: Vec<&super::Container> = r
        .containers
        .iter()
        .filter(|c| c.copy_up.count > 0)
        .collect();
    if !active.is_empty() {
        let _ = writeln!(out, "\nCOPY-UPS BY CONTAINER");
        let mut t = table(&[
            "CONTAINER",
            "IMAGE",
            "COPY-UPS",
            "BYTES",
            "ERRORS",
            "MIN",
            "P50",
            "P99",
            "MAX",
        ]);
        for c in &active {
            let name = c
                .name
                .clone()
                .unwrap_or_else(|| c.id.chars().take(12).collect());
            let image = c.image.tags.first().cloned().unwrap_or_else(|| {
                c.image.id.as_deref().map_or("?".into(), |i| {
                    i.trim_start_matches("sha256:").chars().take(12).collect()
                })
            });
            t.add_row(totals_row(sanitize(&name), sanitize(&image), &c.copy_up));
        }
        right_align(&mut t, 2);
        let _ = writeln!(out, "{t}");
    }

    let _ = writeln!(out, "\nCOPY-UPS BY OVERLAY MOUNT");
    let mut t = table(&[
        "MOUNT", "DEV", "COPY-UPS", "BYTES", "ERRORS", "MIN", "P50", "P99", "MAX",
    ]);
    for m in r.mounts.iter().filter(|m| m.copy_up.count > 0) {
        t.add_row(totals_row(
            sanitize(m.mountpoint.as_deref().unwrap_or("<gone>")),
            m.dev.clone(),
            &m.copy_up,
        ));
    }
    right_align(&mut t, 2);
    if total == 0 {
        let _ = writeln!(out, "  (no copy-ups)");
    } else {
        let _ = writeln!(out, "{t}");
    }

    // Hot spots, grouped by container (then the overlays of no container).
    for c in &active {
        let files: Vec<&CopyUpFile> = r
            .copy_ups
            .iter()
            .filter(|f| f.container.as_deref() == Some(&c.id))
            .collect();
        if files.is_empty() {
            continue;
        }
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| c.id.chars().take(12).collect());
        let _ = writeln!(
            out,
            "\nHOT SPOTS in container {} ({}), by total copy-up time",
            sanitize(&name),
            c.id.chars().take(12).collect::<String>()
        );
        let _ = writeln!(out, "{}", file_rows(r, &files));
    }
    let other: Vec<&CopyUpFile> = r
        .copy_ups
        .iter()
        .filter(|f| f.container.is_none())
        .collect();
    if !other.is_empty() {
        let _ = writeln!(out, "\nHOT SPOTS outside containers, by total copy-up time");
        let _ = writeln!(out, "{}", file_rows(r, &other));
    }

    let _ = writeln!(out, "\nLOOKUPS BY OVERLAY MOUNT");
    if r.lookups.is_empty() {
        let _ = writeln!(out, "  (no lookups)");
    }
    for l in &r.lookups {
        let _ = writeln!(
            out,
            "{} ({}): {} lookups, {} found, {} not found, {} errors, mean {}, p99 < {}",
            sanitize(l.mountpoint.as_deref().unwrap_or("<gone>")),
            l.dev,
            l.count,
            l.found,
            l.not_found,
            l.errors,
            fmt_ns(l.latency_ns.mean),
            fmt_ns(l.latency_ns.p99)
        );
        log2_hist(&mut out, &l.histogram, "nsecs");
    }

    if !r.advice.is_empty() {
        let _ = writeln!(out, "\nADVICE");
        for a in &r.advice {
            let _ = writeln!(out, "  * [{}] {}", a.kind, sanitize(&a.message));
        }
    }

    let d = r.drops;
    let _ = writeln!(
        out,
        "\nDROPS: {} (ring buffer full {}, lost returns {}, in-flight table full {}, undecodable {})",
        d.total, d.ringbuf_full, d.lost_returns, d.inflight_full, d.decode_errors
    );
    if r.counters.evicted_files > 0 {
        let _ = writeln!(
            out,
            "{} files were evicted from the hot-spot table (their copy-ups are in the totals)",
            r.counters.evicted_files
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {}", sanitize(w));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_control_characters() {
        assert_eq!(sanitize("a\nb"), "a\\nb");
        assert_eq!(sanitize("\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(sanitize("x\u{9b}y"), "x\\u{9b}y");
        assert_eq!(sanitize("back\\slash"), "back\\\\slash");
        assert_eq!(sanitize("naïve ✓"), "naïve ✓");
    }

    #[test]
    fn instructions_read_like_a_dockerfile() {
        let f = |created_by: &str| CopyUpFile {
            mountpoint: None,
            dev: "0:1".into(),
            path: "x".into(),
            path_b64: None,
            path_truncated: false,
            container: None,
            layer: Some(crate::resolve::SourceLayer {
                index: 2,
                diff_id: None,
                created_by: Some(created_by.into()),
            }),
            kind: "regular".into(),
            bytes: 0,
            count: 1,
            errors: 0,
            total_ns: 0,
            latency_ns: Default::default(),
            pids: vec![],
            comms: vec![],
        };
        assert_eq!(
            instruction(&f("/bin/sh -c #(nop) COPY file:ab in /app/ ")),
            "COPY file:ab in /app/"
        );
        assert_eq!(
            instruction(&f("/bin/sh -c dd if=/dev/zero of=/x")),
            "RUN dd if=/dev/zero of=/x"
        );
        assert_eq!(
            instruction(&f("COPY x /y # buildkit")),
            "COPY x /y # buildkit"
        );
        assert_eq!(
            instruction(&f("/bin/sh -c echo \x1b[2J")),
            "RUN echo \\u{1b}[2J"
        );
        assert_eq!(instruction(&f(&"y".repeat(100))).chars().count(), 60);
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
