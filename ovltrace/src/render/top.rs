//! `ovltrace top`: the hottest containers and files of the trace so far,
//! redrawn in place on a terminal (as filetop and `docker stats` do), or a
//! block of plain text per interval when standard output is not one.

use std::{
    fmt::Write as _,
    io::{IsTerminal as _, Write as _},
    time::Duration,
};

use crate::{
    report::{CopyUpFile, Report},
    text::terminal as sanitize,
    units::{fmt_bytes, fmt_ns},
};

/// How the view is drawn.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Rows per table; None: what fits the terminal (10 when not one).
    pub rows: Option<usize>,
}

/// Rows per table when neither the user nor the terminal says.
pub const DEFAULT_ROWS: usize = 10;
/// Lines that are not table rows: the header, a blank line and a title
/// line per table, and a line to spare.
const CHROME_LINES: usize = 7;

/// The view on standard output.
pub struct Screen {
    opts: Options,
    terminal: bool,
    drawn: bool,
}

impl Screen {
    pub fn new(opts: Options) -> Self {
        Self {
            opts,
            terminal: std::io::stdout().is_terminal(),
            drawn: false,
        }
    }

    /// Draws `r` (the trace so far): in place on a terminal, else appended.
    pub fn draw(&mut self, r: &Report, elapsed: Duration) {
        let size = if self.terminal { terminal_size() } else { None };
        let rows = self.opts.rows.unwrap_or_else(|| match size {
            Some((h, _)) => (usize::from(h).saturating_sub(CHROME_LINES) / 2).max(1),
            None => DEFAULT_ROWS,
        });
        let width = size.map(|(_, w)| usize::from(w));
        let text = frame(r, elapsed, rows, width);
        let mut out = std::io::stdout().lock();
        if self.terminal {
            // Home, then clear to the end of the screen: no flicker of a
            // blank screen between two frames.
            let _ = write!(out, "\x1b[H{}\x1b[J", text.replace('\n', "\x1b[K\n"));
        } else {
            if self.drawn {
                let _ = writeln!(out);
            }
            let _ = write!(out, "{text}");
        }
        let _ = out.flush();
        self.drawn = true;
    }

    /// The trace ends: the last frame stays on the screen.
    pub fn leave(&mut self) {
        if self.terminal && !self.drawn {
            return;
        }
        let _ = std::io::stdout().flush();
    }
}

/// One frame: a header line, the containers by copy-ups, the files by
/// copy-up time; `rows` rows per table, lines cut to `width` columns.
pub fn frame(r: &Report, elapsed: Duration, rows: usize, width: Option<usize>) -> String {
    let mut out = String::new();
    header(&mut out, r, elapsed);
    containers(&mut out, r, rows);
    files(&mut out, r, rows);
    match width {
        Some(w) => out
            .lines()
            .map(|l| cut(l, w))
            .fold(String::new(), |mut acc, l| {
                acc.push_str(&l);
                acc.push('\n');
                acc
            }),
        None => out,
    }
}

fn header(out: &mut String, r: &Report, elapsed: Duration) {
    let count: u64 = r.mounts.iter().map(|m| m.copy_up.count).sum();
    let bytes: u64 = r.mounts.iter().map(|m| m.copy_up.bytes).sum();
    let time: u64 = r.mounts.iter().map(|m| m.copy_up.total_ns).sum();
    let _ = write!(
        out,
        "ovltrace top - {} - {count} copy-ups, {}, {} copying - {} dropped",
        clock(elapsed),
        fmt_bytes(bytes),
        fmt_ns(time),
        r.drops.total
    );
    if !r.filters.is_empty() {
        let _ = write!(out, " - only {}", sanitize(&r.filters.summary()));
    }
    out.push('\n');
}

fn containers(out: &mut String, r: &Report, rows: usize) {
    let _ = writeln!(
        out,
        "\n{:<24} {:<28} {:>9} {:>10} {:>10} {:>10}",
        "CONTAINER", "IMAGE", "COPY-UPS", "BYTES", "TIME", "P99 <="
    );
    let busy: Vec<_> = r
        .containers
        .iter()
        .filter(|c| c.copy_up.count > 0)
        .collect();
    for c in busy.iter().take(rows) {
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| c.id.chars().take(12).collect());
        let image = c
            .image
            .tags
            .first()
            .cloned()
            .or_else(|| c.image.id.as_ref().map(|id| short_id(id)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<24} {:<28} {:>9} {:>10} {:>10} {:>10}",
            cut(&sanitize(&name), 24),
            cut(&sanitize(&image), 28),
            c.copy_up.count,
            fmt_bytes(c.copy_up.bytes),
            fmt_ns(c.copy_up.total_ns),
            fmt_ns(c.copy_up.latency_ns.p99),
        );
    }
    if busy.len() > rows {
        let _ = writeln!(out, "... {} more containers", busy.len() - rows);
    }
    let in_containers: u64 = r.containers.iter().map(|c| c.copy_up.count).sum();
    let others: u64 = r
        .mounts
        .iter()
        .filter(|m| m.container.is_none())
        .map(|m| m.copy_up.count)
        .sum();
    if others > 0 || busy.is_empty() {
        let _ = writeln!(
            out,
            "{:<24} {:<28} {:>9}",
            if busy.is_empty() && others == 0 && in_containers == 0 {
                "(no copy-ups yet)"
            } else {
                "(no container)"
            },
            "",
            others
        );
    }
}

fn files(out: &mut String, r: &Report, rows: usize) {
    let _ = writeln!(
        out,
        "\n{:<48} {:<16} {:>10} {:>10} {:>6}",
        "FILE (by copy-up time)", "CONTAINER", "BYTES", "TIME", "COUNT"
    );
    let mut list: Vec<&CopyUpFile> = r.copy_ups.iter().collect();
    list.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(b.bytes.cmp(&a.bytes)));
    for f in list.iter().take(rows) {
        let container = f
            .container
            .as_deref()
            .map(|id| {
                r.containers
                    .iter()
                    .find(|c| c.id == id)
                    .and_then(|c| c.name.clone())
                    .unwrap_or_else(|| id.chars().take(12).collect())
            })
            .unwrap_or_else(|| "-".into());
        // A container's files by their path in it; others under their mount.
        let path = match (&f.container, &f.mountpoint) {
            (None, Some(m)) => format!("{}/{}", m.trim_end_matches('/'), f.path),
            _ => format!("/{}", f.path),
        };
        let _ = writeln!(
            out,
            "{:<48} {:<16} {:>10} {:>10} {:>6}",
            cut_left(&sanitize(&path), 48),
            cut(&sanitize(&container), 16),
            fmt_bytes(f.bytes),
            fmt_ns(f.total_ns),
            f.count,
        );
    }
}

/// `sha256:0123456789ab...` -> `0123456789ab`.
fn short_id(id: &str) -> String {
    id.strip_prefix("sha256:")
        .unwrap_or(id)
        .chars()
        .take(12)
        .collect()
}

/// "1:02:03" / "2:03" / "12s".
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}:{:02}", s / 60, s % 60),
        _ => format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
    }
}

/// At most `w` characters: cut at the end, marked with `…`.
fn cut(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_string();
    }
    let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// At most `w` characters: a path keeps its end (the file name).
fn cut_left(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        return s.to_string();
    }
    let mut t = String::from("…");
    t.extend(s.chars().skip(n - w.saturating_sub(1)));
    t
}

/// (rows, columns) of the terminal on standard output.
fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_lists_containers_and_files() {
        let mut r = crate::report::fixtures::golden_report();
        r.filters.containers = vec!["web-1".into()];
        let f = frame(&r, Duration::from_secs(75), 5, None);
        let lines: Vec<&str> = f.lines().collect();
        assert!(lines[0].starts_with("ovltrace top - 1:15 - "), "{f}");
        assert!(lines[0].ends_with(" - only container web-1"), "{f}");
        assert!(lines[2].starts_with("CONTAINER"), "{f}");
        assert!(lines[3].starts_with("web-1 "), "{f}");
        assert!(f.contains("FILE (by copy-up time)"), "{f}");
        assert!(f.contains("/var/lib/app/catalog.db "), "{f}");
        // A file of no container's is shown under its mount.
        assert!(f.contains("/tmp/o/merged/three_m "), "{f}");
        // A hostile file name is escaped.
        assert!(!f.contains('\x1b'), "{f:?}");
    }

    #[test]
    fn rows_and_width_are_kept() {
        let r = crate::report::fixtures::golden_report();
        let f = frame(&r, Duration::from_secs(1), 1, Some(40));
        assert!(f.lines().all(|l| l.chars().count() <= 40), "{f}");
        let files_at = f.lines().position(|l| l.starts_with("FILE")).unwrap();
        assert_eq!(f.lines().count(), files_at + 2, "one file row: {f}");
    }

    #[test]
    fn an_empty_trace_says_so() {
        let r = crate::report::fixtures::empty_report();
        let f = frame(&r, Duration::from_secs(3), 10, None);
        assert!(
            f.starts_with("ovltrace top - 3s - 0 copy-ups, 0 B, 0ns copying - 0 dropped\n"),
            "{f}"
        );
        assert!(f.contains("(no copy-ups yet)"), "{f}");
    }

    #[test]
    fn cuts() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(cut_left("/a/b/file", 6), "…/file");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
    }
}
