//! `--interval`: what happened since the last interval report.

use std::{collections::HashMap, time::Instant};

use ovltrace_ebpf::{LookupStats, OverlayKey};

use crate::aggregate::Aggregator;

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
}
