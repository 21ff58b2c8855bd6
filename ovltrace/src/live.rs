//! Live mode: per-interval summaries (`--interval`) and the status line shown
//! on a terminal while a trace runs.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::Write as _,
    time::{Duration, Instant},
};

use ovltrace_ebpf::{LookupStats, OverlayKey};

use crate::{
    aggregate::Aggregator,
    report::{
        terminal::{fmt_bytes, fmt_ns, sanitize, Style},
        Report,
    },
};

/// How often the status line is redrawn.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// What happened since the last interval report.
pub struct Interval {
    pub agg: Aggregator,
    pub started: Instant,
    /// Kernel lookup counters at the start of the interval (they are cumulative).
    base: HashMap<OverlayKey, LookupStats>,
    max_files: usize,
}

impl Interval {
    pub fn new(max_files: usize, lookups_now: Vec<(OverlayKey, LookupStats)>) -> Self {
        Self {
            agg: Aggregator::new(max_files),
            started: Instant::now(),
            base: lookups_now.into_iter().collect(),
            max_files,
        }
    }

    /// The lookups of this interval: `now` minus the counters at its start.
    pub fn lookup_delta(
        &self,
        now: &[(OverlayKey, LookupStats)],
    ) -> Vec<(OverlayKey, LookupStats)> {
        now.iter()
            .filter_map(|(dev, s)| {
                let d = match self.base.get(dev) {
                    Some(b) => sub(s, b),
                    None => *s,
                };
                (d.found + d.not_found + d.errors > 0).then_some((*dev, d))
            })
            .collect()
    }

    /// The next interval, starting now.
    pub fn next(self, lookups_now: Vec<(OverlayKey, LookupStats)>) -> Self {
        Self::new(self.max_files, lookups_now)
    }
}

fn sub(a: &LookupStats, b: &LookupStats) -> LookupStats {
    let mut d = LookupStats::ZERO;
    d.found = a.found.saturating_sub(b.found);
    d.not_found = a.not_found.saturating_sub(b.not_found);
    d.errors = a.errors.saturating_sub(b.errors);
    d.total_ns = a.total_ns.saturating_sub(b.total_ns);
    for (i, slot) in d.hist.iter_mut().enumerate() {
        *slot = a.hist[i].saturating_sub(b.hist[i]);
    }
    d
}

/// A few lines per interval: totals, then one line per busy container.
pub fn summary(r: &Report, elapsed: Duration, _style: Style) -> String {
    let mut out = String::new();
    let count: u64 = r.mounts.iter().map(|m| m.copy_up.count).sum();
    let bytes: u64 = r.mounts.iter().map(|m| m.copy_up.bytes).sum();
    let p99 = r
        .mounts
        .iter()
        .map(|m| m.copy_up.latency_ns.p99)
        .max()
        .unwrap_or(0);
    let lookups: u64 = r.lookups.iter().map(|l| l.count).sum();
    let missing: u64 = r.lookups.iter().map(|l| l.not_found).sum();
    let _ = writeln!(
        out,
        "[{:>7.1}s] last {:.1}s: {count} copy-ups ({}), p99 {}; {lookups} lookups ({missing} not found); {} dropped so far",
        elapsed.as_secs_f64(),
        r.duration_ms as f64 / 1000.0,
        fmt_bytes(bytes),
        fmt_ns(p99),
        r.drops.total
    );
    for c in r.containers.iter().filter(|c| c.copy_up.count > 0) {
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| c.id.chars().take(12).collect());
        let top = r
            .copy_ups
            .iter()
            .find(|f| f.container.as_deref() == Some(&c.id))
            .map(|f| {
                let by = f.layer.as_ref().and_then(|l| l.created_by.as_deref());
                match crate::instruction::display(by, 40) {
                    i if i.is_empty() => format!(", top /{}", f.path),
                    i => format!(", top /{} ({i})", f.path),
                }
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "           {}: {} copy-ups ({}), p99 {}{}",
            sanitize(&name),
            c.copy_up.count,
            fmt_bytes(c.copy_up.bytes),
            fmt_ns(c.copy_up.latency_ns.p99),
            sanitize(&top)
        );
    }
    out
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
        let bytes: u64 = agg.per_overlay.values().map(|g| g.bytes).sum();
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
    fn lookup_delta_subtracts_the_interval_start() {
        let mut a = LookupStats::ZERO;
        a.found = 10;
        a.hist[3] = 10;
        let mut b = a;
        b.found = 25;
        b.not_found = 2;
        b.hist[3] = 27;
        let i = Interval::new(10, vec![(OverlayKey::dev_only(1), a)]);
        let d = i.lookup_delta(&[(OverlayKey::dev_only(1), b), (OverlayKey::dev_only(2), a)]);
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].1.found, d[0].1.not_found, d[0].1.hist[3]),
            (15, 2, 17)
        );
        // A device first seen in this interval counts whole.
        assert_eq!(d[1].1.found, 10);
        // No change: not listed.
        assert!(i.lookup_delta(&[(OverlayKey::dev_only(1), a)]).is_empty());
    }

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
        let r = crate::report::terminal::tests::golden_report();
        let s = summary(&r, Duration::from_secs(30), Style::default());
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[0].contains("4 copy-ups (415.0 MiB)"), "{s}");
        assert!(lines[0].contains("100 lookups (10 not found)"), "{s}");
        assert!(lines[1].contains("web-1: 3 copy-ups"), "{s}");
        assert!(
            lines[1]
                .contains("top /var/lib/app/catalog.db (COPY file:01344f2ea10c… in /var/lib/app/)"),
            "{s}"
        );
    }
}
