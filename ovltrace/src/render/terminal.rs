//! Plain-text report for a terminal. Everything that came from a container
//! (paths, process names) is escaped: a file name must not be able to move
//! the cursor or change colours in the reader's terminal.
//!
//! [`render_styled`] is the list of the report's sections, one function each;
//! figures come from the report model ([`crate::report::view`]).

use std::fmt::Write as _;

use comfy_table::{presets::NOTHING, CellAlignment, ContentArrangement, Table};

use crate::report::{
    view::{self, Summary},
    Bucket, Container, CopyUpFile, CopyUpTotals, Lookups, Mount, Report,
};
use crate::text::terminal as sanitize;
use crate::units::{fmt_bytes, fmt_ns};

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

fn right_align(t: &mut Table, from: usize, to: usize) {
    for i in from..to.min(t.column_count()) {
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

/// bcc-style log2 histogram (`print_log2_hist`), its bounds in units picked
/// for each bucket ("65.5µs -> 131.1µs": at least the first, less than the
/// second).
pub fn log2_hist(out: &mut String, buckets: &[Bucket]) {
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    if max == 0 {
        return;
    }
    let _ = writeln!(out, "{:>24} : {:<8} distribution", "latency", "count");
    for b in buckets {
        let stars = ((b.count as f64 / max as f64) * 40.0).round() as usize;
        let _ = writeln!(
            out,
            "{:>11} -> {:<9} : {:<8} |{:<40}|",
            fmt_ns(b.le_ns / 2),
            fmt_ns(b.le_ns),
            b.count,
            "*".repeat(stars.min(40))
        );
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

/// "3 copy-ups (2 files, 1 directory), 412.0 MiB, 0 errors; latency ...".
fn latency_line(t: &CopyUpTotals) -> String {
    let l = &t.latency_ns;
    let kinds = match view::kinds_text(&t.by_kind) {
        k if k.is_empty() => String::new(),
        k => format!(" ({k})"),
    };
    format!(
        "{} copy-ups{kinds}, {}, {} errors; latency p50 {} p90 {} p99 {} p99.9 {} max {}",
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

/// A hot spot's path as its owner sees it: from the container's root, else
/// joined to the mount point.
fn file_path(f: &CopyUpFile) -> String {
    let mut path = full_path(f.mountpoint.as_deref(), &f.path);
    if f.container.is_some() {
        // Inside a container the mount point means nothing to its owner.
        path = format!("/{}", f.path);
    }
    if f.path_truncated {
        path = format!("…{path}");
    }
    sanitize(&path)
}

/// The processes that copied a file up; "(outside)" when made from the
/// host's mount namespace (a runtime setting the container up).
fn file_comms(f: &CopyUpFile) -> String {
    let comms = sanitize(&f.comms.join(","));
    if f.outside && f.container.is_some() {
        format!("{comms} (outside)")
    } else {
        comms
    }
}

/// The container a hot spot belongs to ("-": an overlay of no container).
fn file_owner(r: &Report, f: &CopyUpFile) -> String {
    match f.container.as_deref() {
        Some(id) => sanitize(
            &r.containers
                .iter()
                .find(|c| c.id == id)
                .map(container_name)
                .unwrap_or_else(|| crate::catalog::short_id(id).to_string()),
        ),
        None => "-".into(),
    }
}

/// A table of hot spots; a CONTAINER column when they belong to several.
fn file_rows(r: &Report, files: &[&CopyUpFile]) -> Table {
    let owners: std::collections::BTreeSet<_> = files
        .iter()
        .map(|f| (&f.container, f.dev.as_str(), &f.host))
        .collect();
    let with_owner = owners.len() > 1;
    let multi_host = !r.hosts.is_empty();
    let mut header = vec!["PATH", "KIND"];
    if multi_host {
        header.push("HOST");
    }
    if with_owner {
        header.push("CONTAINER");
    }
    header.extend([
        "LAYER",
        "INSTRUCTION",
        "CAUSE",
        "COUNT",
        "BYTES",
        "TOTAL",
        "MAX",
        "COMM",
    ]);
    let mut t = table(&header);
    for f in files {
        let mut row = vec![file_path(f), view::kind_word(&f.kind).to_string()];
        if multi_host {
            row.push(sanitize(f.host.as_deref().unwrap_or(&r.host)));
        }
        if with_owner {
            row.push(file_owner(r, f));
        }
        row.extend([
            sanitize(&view::file_layer_label(r, f)),
            instruction(f),
            crate::report::file_causes(f),
            f.count.to_string(),
            fmt_bytes(f.bytes),
            fmt_ns(f.total_ns),
            fmt_ns(f.latency_ns.max),
            file_comms(f),
        ]);
        t.add_row(row);
    }
    let numbers = header.len() - 5;
    right_align(&mut t, numbers, header.len());
    t
}

/// "  why: metadata 300, parent 2" (nothing when no cause is known).
fn cause_line(out: &mut String, t: &CopyUpTotals) {
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

fn container_name(c: &Container) -> String {
    c.display_name().to_string()
}

fn image_label(c: &Container) -> String {
    c.image
        .tags
        .first()
        .cloned()
        .unwrap_or_else(|| c.image.id.as_deref().map_or("?".into(), view::short_digest))
}

fn lookup_lines(out: &mut String, r: &Report, l: &Lookups) {
    let _ = writeln!(
        out,
        "  lookups: {} ({} found, {} not found, {} errors) through {}; mean {}, p99 ≤ {}",
        l.count,
        l.found,
        l.not_found,
        l.errors,
        view::lookup_depth(r, l),
        fmt_ns(l.latency_ns.mean),
        fmt_ns(l.latency_ns.p99)
    );
    log2_hist(out, &l.histogram);
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

/// The report, section by section.
pub fn render_styled(r: &Report, st: Style) -> String {
    let mut out = String::new();
    let sum = Summary::of(r);
    title(&mut out, r, &sum, st);
    for c in view::active_containers(r) {
        container_section(&mut out, r, c, st);
    }
    let plain = view::plain_overlays(r);
    for m in &plain {
        overlay_section(&mut out, r, m, st);
    }
    unattributed_section(&mut out, r, &plain, st);
    if sum.copy_ups == 0 {
        let _ = writeln!(out, "\n  (no copy-ups)");
    }
    hot_spots_section(&mut out, r, st);
    layers_section(&mut out, r, st);
    advice_section(&mut out, r, st);
    drops_section(&mut out, r, st);
    out
}

/// The first line: what was traced, how long, and the totals.
fn title(out: &mut String, r: &Report, sum: &Summary, st: Style) {
    let kinds = match view::kinds_text(&sum.by_kind) {
        k if k.is_empty() => String::new(),
        k => format!("{k}; "),
    };
    let _ = writeln!(
        out,
        "{}",
        st.heading(&format!(
            "ovltrace: traced {:.1}s with {} probes: {} copy-ups ({kinds}{}), {} lookups, {} events lost",
            r.duration_ms as f64 / 1000.0,
            sanitize(&r.probe.strategy),
            sum.copy_ups,
            fmt_bytes(sum.bytes),
            sum.lookups,
            r.drops.total
        ))
    );
}

/// A container: its totals, why, latency histogram and lookups.
fn container_section(out: &mut String, r: &Report, c: &Container, st: Style) {
    let _ = writeln!(
        out,
        "\n{} {} ({}, {}){} image {}{}",
        st.heading("CONTAINER"),
        st.name(&sanitize(&container_name(c))),
        crate::catalog::short_id(&c.id),
        sanitize(&c.runtime),
        on_host(r, &c.host),
        sanitize(&image_label(c)),
        if c.gone { " (gone)" } else { "" }
    );
    let _ = writeln!(out, "  {}", latency_line(&c.copy_up));
    cause_line(out, &c.copy_up);
    log2_hist(out, &c.copy_up.latency_ns.buckets);
    for l in r
        .lookups
        .iter()
        .filter(|l| l.container.as_deref() == Some(&c.id))
    {
        lookup_lines(out, r, l);
    }
}

/// An overlay of no container: its totals, why, histogram and lookups.
fn overlay_section(out: &mut String, r: &Report, m: &Mount, st: Style) {
    let name = match &m.mountpoint {
        Some(p) => format!("{} (no container)", st.name(&sanitize(p))),
        None => format!("{} (device {})", st.name("<unmounted>"), sanitize(&m.dev)),
    };
    let _ = writeln!(
        out,
        "\n{} {name}{}",
        st.heading("OVERLAY"),
        on_host(r, &m.host)
    );
    let _ = writeln!(out, "  {}", latency_line(&m.copy_up));
    cause_line(out, &m.copy_up);
    log2_hist(out, &m.copy_up.latency_ns.buckets);
    for l in r
        .lookups
        .iter()
        .filter(|l| l.dev == m.dev && l.host == m.host && l.container.is_none())
    {
        lookup_lines(out, r, l);
    }
}

/// Copy-ups that no container claimed, on a device a container's overlay
/// holds by the end (a runtime's own writes while it set the container up,
/// or an earlier overlay with the same device number): in no section above.
fn unattributed_section(out: &mut String, r: &Report, plain: &[&Mount], st: Style) {
    let (hidden, files) = view::unattributed(r, plain);
    if hidden == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "\n{} {hidden} copy-ups on overlays no container was known for when they happened \
         (a runtime setting a container up, or a reused device number)",
        st.heading("NOT ATTRIBUTED")
    );
    if files.is_empty() {
        let _ = writeln!(out, "  (none of them is among the files this report kept)");
    } else {
        let _ = writeln!(out, "{}", file_rows(r, &files));
    }
}

/// The two hot-spot tables, each sorted by its own key, and what the LAYER
/// column means.
fn hot_spots_section(out: &mut String, r: &Report, st: Style) {
    for (title, table) in [
        ("HOT SPOTS, by total copy-up time", &r.hot_spots.by_time),
        ("HOT SPOTS, by bytes copied", &r.hot_spots.by_bytes),
    ] {
        let files = r.hot_spot_rows(table);
        if !files.is_empty() {
            let _ = writeln!(out, "\n{}", st.heading(title));
            let _ = writeln!(out, "{}", file_rows(r, &files));
        }
    }
    if r.copy_ups
        .iter()
        .any(|f| f.container.is_some() && f.layer.is_some())
    {
        let _ = writeln!(out, "  {}", view::LAYER_LEGEND);
    }
}

/// The source layers, by total copy-up time.
fn layers_section(out: &mut String, r: &Report, st: Style) {
    if r.layers.is_empty() {
        return;
    }
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
    right_align(&mut t, 2, 7);
    let _ = writeln!(out, "{t}");
}

fn advice_section(out: &mut String, r: &Report, st: Style) {
    if r.advice.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", st.heading("ADVICE"));
    for a in &r.advice {
        let _ = writeln!(
            out,
            "  * [{}] {}",
            sanitize(&a.kind),
            st.warn(&sanitize(&a.message))
        );
    }
}

/// Events lost in plain words, how many files the lists show, warnings.
fn drops_section(out: &mut String, r: &Report, st: Style) {
    let reasons = view::drop_reasons(&r.drops);
    if r.drops.total == 0 {
        let _ = writeln!(out, "\nDROPS: none (no event was lost)");
    } else {
        let _ = writeln!(out, "\nDROPS: {} events lost", r.drops.total);
    }
    for (n, why) in reasons {
        let _ = writeln!(out, "  {n} {why}");
    }
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
        r.hot_spots = crate::report::HotSpots::rank(&r.copy_ups, 0);
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
    fn log2_histogram_in_human_units() {
        let b = |le_ns, count| Bucket { le_ns, count };
        let mut s = String::new();
        log2_hist(
            &mut s,
            &[b(1024, 4), b(2048, 2), b(1 << 21, 1), b(1 << 31, 1)],
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines,
            [
                "                 latency : count    distribution",
                &format!("      512ns -> 1.0µs     : 4        |{}|", "*".repeat(40)),
                &format!(
                    "      1.0µs -> 2.0µs     : 2        |{:<40}|",
                    "*".repeat(20)
                ),
                &format!(
                    "     1.05ms -> 2.10ms    : 1        |{:<40}|",
                    "*".repeat(10)
                ),
                &format!(
                    "      1.07s -> 2.15s     : 1        |{:<40}|",
                    "*".repeat(10)
                ),
            ]
        );
        // No raw nanosecond bounds.
        assert!(!s.contains("1073741824"), "{s}");
    }
}
