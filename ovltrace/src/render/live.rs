//! Live mode: per-interval summaries (`--interval`) and the status line shown
//! on a terminal while a trace runs.

use std::{
    fmt::Write as _,
    io::Write as _,
    time::{Duration, Instant},
};

use crate::{
    aggregate::Aggregator,
    render::terminal::Style,
    report::{view::Summary, Container, Report},
    text::terminal as sanitize,
    units::{fmt_bytes, fmt_ns},
};

/// How often the status line is redrawn.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// A few lines per interval: totals, then one line per busy container.
pub fn summary(r: &Report, elapsed: Duration, _style: Style) -> String {
    let mut out = String::new();
    let sum = Summary::of(r);
    let _ = writeln!(
        out,
        "[{:>7.1}s] last {:.1}s: {} copy-ups ({}), p99 {}; {} lookups ({} not found); {} events lost so far",
        elapsed.as_secs_f64(),
        r.duration_ms as f64 / 1000.0,
        sum.copy_ups,
        fmt_bytes(sum.bytes),
        fmt_ns(sum.max_p99_ns),
        sum.lookups,
        sum.not_found,
        r.drops.total
    );
    for c in r.containers.iter().filter(|c| c.copy_up.count > 0) {
        container_line(&mut out, r, c);
    }
    out
}

/// A busy container: its copy-ups and its hottest file (by total time).
fn container_line(out: &mut String, r: &Report, c: &Container) {
    let name = c.display_name();
    let top = r
        .hot_spot_rows(&r.hot_spots.by_time)
        .into_iter()
        .find(|f| f.container.as_deref() == Some(&c.id))
        .map(|f| {
            let by = f.layer.as_ref().and_then(|l| l.created_by.as_deref());
            match crate::catalog::instruction::display(by, 40) {
                i if i.is_empty() => format!(", top /{}", f.path),
                i => format!(", top /{} ({i})", f.path),
            }
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "           {}: {} copy-ups ({}), p99 {}{}",
        sanitize(name),
        c.copy_up.count,
        fmt_bytes(c.copy_up.bytes),
        fmt_ns(c.copy_up.latency_ns.p99),
        sanitize(&top)
    );
}

/// One self-overwriting line on stderr: elapsed time, events/s, copy-ups,
/// bytes and drops.
pub struct StatusLine {
    enabled: bool,
    shown: bool,
    last_events: u64,
    last_at: Instant,
}

impl StatusLine {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            shown: false,
            last_events: 0,
            last_at: Instant::now(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn update(&mut self, agg: &Aggregator, elapsed: Duration, drops: u64) {
        if !self.enabled {
            return;
        }
        let secs = self.last_at.elapsed().as_secs_f64().max(0.001);
        let rate = (agg.events - self.last_events) as f64 / secs;
        self.last_events = agg.events;
        self.last_at = Instant::now();
        let bytes = agg.bytes();
        let line = status_text(elapsed, rate, agg.events, bytes, drops);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.shown = true;
    }

    /// Erases the line (before a report is printed).
    pub fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

pub fn status_text(elapsed: Duration, rate: f64, copy_ups: u64, bytes: u64, drops: u64) -> String {
    format!(
        "ovltrace {:>6.0}s | {:>7.0} events/s | {copy_ups} copy-ups | {} | {drops} dropped",
        elapsed.as_secs_f64(),
        rate,
        fmt_bytes(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_shows_the_figures() {
        let s = status_text(Duration::from_secs(12), 340.4, 1234, 45 << 20, 3);
        assert_eq!(
            s,
            "ovltrace     12s |     340 events/s | 1234 copy-ups | 45.0 MiB | 3 dropped"
        );
    }

    #[test]
    fn interval_summary_names_busy_containers() {
        let r = crate::report::fixtures::golden_report();
        let s = summary(&r, Duration::from_secs(30), Style::default());
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[0].contains("5 copy-ups (415.0 MiB)"), "{s}");
        assert!(lines[0].contains("100 lookups (10 not found)"), "{s}");
        assert!(lines[1].contains("web-1: 4 copy-ups"), "{s}");
        assert!(
            lines[1]
                .contains("top /var/lib/app/catalog.db (COPY file:01344f2ea10c… in /var/lib/app/)"),
            "{s}"
        );
    }
}
