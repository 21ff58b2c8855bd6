//! Prometheus text exposition (format 0.0.4) of a report: served on
//! `/metrics` by `ovltrace run --prometheus ADDR`, and written for
//! node_exporter's textfile collector by `ovltrace run --textfile DIR`.
//!
//! ## Metrics
//!
//! Times are in seconds and sizes in bytes. Counters count from the start of
//! the trace (`ovltrace_start_time_seconds`).
//!
//! | Metric | Type | Labels | Meaning |
//! |---|---|---|---|
//! | `ovltrace_build_info` | gauge | `version`, `strategy`, `kernel` | Always 1: the ovltrace version, the attach strategy (`kprobe` or `fentry`) and the kernel release. |
//! | `ovltrace_start_time_seconds` | gauge | | When the trace started (Unix time). |
//! | `ovltrace_trace_duration_seconds` | gauge | | How long the trace has run. |
//! | `ovltrace_copy_ups_total` | counter | `container`, `image` | Copy-ups (files, directories and symlinks copied up to the upper layer). |
//! | `ovltrace_copy_up_bytes_total` | counter | `container`, `image` | Bytes copied by copy-ups. |
//! | `ovltrace_copy_up_errors_total` | counter | `container`, `image` | Copy-ups that failed. |
//! | `ovltrace_copy_ups_by_cause_total` | counter | `container`, `image`, `cause` | Copy-ups by why they happened: `cause` is `write` (open for writing), `truncate` (open with truncation: no data copied), `metadata` (chown, chmod, utimes, truncate, xattr), `link` (hard link), `rename`, `parent` (a directory copied up for a file below it) or `unknown`. |
//! | `ovltrace_copy_up_seconds` | histogram | `container`, `image` | Copy-up latency; buckets 10µs to 10s. |
//! | `ovltrace_data_copy_seconds` | histogram | `container`, `image` | Time spent copying file data within copy-ups; same buckets. Empty when the data-copy function is not probed. |
//! | `ovltrace_lookups_total` | counter | `container`, `image`, `result` | Overlay name lookups; `result` is `found`, `not_found` or `error`. |
//! | `ovltrace_lookup_seconds` | histogram | `container`, `image` | Lookup latency from the in-kernel log2 histogram: bucket bounds are 2^k ns (about 1µs to 17s); a bucket counts lookups shorter than its bound. |
//! | `ovltrace_layer_copy_ups_total` | counter | `diff_id` | Copy-ups whose file came from this image layer. |
//! | `ovltrace_layer_copy_up_bytes_total` | counter | `diff_id` | Bytes copied up from this image layer. |
//! | `ovltrace_layer_copy_up_seconds_total` | counter | `diff_id` | Total copy-up time of files from this image layer. |
//! | `ovltrace_layer_copy_ups_by_cause_total` | counter | `diff_id`, `cause` | Copy-ups of files from this image layer by cause (the causes seen; same values as above). |
//! | `ovltrace_dropped_events_total` | counter | `reason` | Events lost: `ringbuf_full` (ring buffer full), `lost_return` (return not seen), `inflight_full` (operation not timed), `decode_error` (record not decodable). |
//! | `ovltrace_events_total` | counter | | Copy-up events received from the kernel. |
//! | `ovltrace_kernel_calls_total` | counter | `op`, `phase` | Probe hits in the kernel: `op` is `copy_up`, `lookup` or `data_copy`, `phase` is `entry` or `exit`. |
//! | `ovltrace_filtered_total` | counter | | Operations skipped in the kernel because of `--container`. |
//! | `ovltrace_hot_spot_evictions_total` | counter | | Files dropped from the hot-spot table to keep memory bounded (their copy-ups still count everywhere else). |
//! | `ovltrace_containers` | gauge | `state` | Containers seen: `running`, or `gone` (their overlay was unmounted). |
//! | `ovltrace_containers_omitted` | gauge | | Containers left out of the per-container series to bound their number. |
//!
//! Labels:
//! - `container`: the container name (its 12-character id when it has none).
//!   Containers of the same name (e.g. one removed and re-created) share
//!   series. Overlays that are no container's are summed into
//!   `container=""`, `image=""`.
//! - `image`: the image's first `repo:tag`, else its 12-character id.
//! - `cause`: one of the seven values above, a fixed set.
//! - `diff_id`: only for the image layers the report lists (the top layers by
//!   copy-up time and by bytes, `--top`; every layer with copy-ups with
//!   `--top 0`), so there is never one series per file.
//! - Running containers always have series; containers that are gone keep
//!   theirs only if they copied up or looked up anything. At most
//!   [`MAX_CONTAINER_SERIES`] containers get series, the busiest first.
//!
//! Histogram precision: copy-up and data-copy bucket counts come from the HDR
//! histograms (3 significant digits: an observation within 0.1% of a bound
//! may land on either side of it); `ovltrace_copy_up_seconds_sum` and
//! `ovltrace_lookup_seconds_sum` are exact totals, `ovltrace_data_copy_seconds_sum`
//! is computed from its HDR histogram. Lookup buckets are exact (the kernel
//! keeps power-of-two buckets).
//!
//! The layer series follow the report's top layers, so a layer can enter or
//! leave the set between scrapes as the ranking changes.
//!
//! Label values come from containers and images, which are untrusted: they are
//! escaped as the format requires (backslash, double quote, line feed).

use std::{collections::BTreeMap, collections::HashMap, fmt::Write as _};

use crate::bpf::event::{Cause, CauseCounts};

use crate::report::{Bucket, Container, CopyUpTotals, Hist, Report};
use crate::text;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds of the copy-up and data-copy histograms, in nanoseconds.
pub const LATENCY_BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The lookup histogram's bounds are 2^k ns for k in this range (1.024µs to
/// 17.2s); the in-kernel buckets are powers of two, so these are exact.
pub const LOOKUP_BOUNDS_LOG2: std::ops::RangeInclusive<u32> = 10..=34;

/// Most containers given per-container series (the busiest are kept).
pub const MAX_CONTAINER_SERIES: usize = 200;

/// Renders the report in the text exposition format, one function per
/// group of metric families.
pub fn render(report: &Report) -> String {
    let lookup_bounds: Vec<u64> = LOOKUP_BOUNDS_LOG2.map(|k| 1u64 << k).collect();
    let groups = Groups::of(report, &lookup_bounds);
    let mut out = Out::default();
    build_info(&mut out, report);
    copy_up_counters(&mut out, &groups);
    copy_up_histograms(&mut out, &groups);
    lookups(&mut out, &groups, &lookup_bounds);
    layer_totals(&mut out, report);
    layer_causes(&mut out, report);
    drops_and_counters(&mut out, report);
    containers(&mut out, report, &groups);
    out.text
}

/// Version, strategy, kernel; when the trace started and how long it ran.
fn build_info(out: &mut Out, report: &Report) {
    out.family(
        "ovltrace_build_info",
        "gauge",
        "ovltrace version, attach strategy and kernel release (always 1).",
    );
    out.sample(
        "ovltrace_build_info",
        &[
            ("version", &report.tool.version),
            ("strategy", &report.probe.strategy),
            ("kernel", &report.kernel),
        ],
        "1",
    );
    out.gauge(
        "ovltrace_start_time_seconds",
        "Start of the trace, seconds since the Unix epoch.",
        &seconds(u128::from(report.started_unix_ms) * 1_000_000),
    );
    out.gauge(
        "ovltrace_trace_duration_seconds",
        "How long the trace has been running.",
        &seconds(u128::from(report.duration_ms) * 1_000_000),
    );
}

/// Copy-ups, bytes, errors and causes per container.
fn copy_up_counters(out: &mut Out, groups: &Groups) {
    type Get = fn(&Acc) -> u64;
    let counters: [(&str, &str, Get); 3] = [
        (
            "ovltrace_copy_ups_total",
            "Overlayfs copy-ups (files, directories and symlinks copied to the upper layer).",
            |a| a.copy_ups,
        ),
        (
            "ovltrace_copy_up_bytes_total",
            "Bytes copied by overlayfs copy-ups.",
            |a| a.bytes,
        ),
        (
            "ovltrace_copy_up_errors_total",
            "Overlayfs copy-ups that failed.",
            |a| a.errors,
        ),
    ];
    for (name, help, get) in counters {
        out.family(name, "counter", help);
        for (w, a) in &groups.shown {
            out.sample(name, &w.labels(), &get(a).to_string());
        }
    }
    let name = "ovltrace_copy_ups_by_cause_total";
    out.family(
        name,
        "counter",
        "Overlayfs copy-ups by cause (write, truncate, metadata, link, rename, parent, unknown).",
    );
    for (w, a) in &groups.shown {
        let [c, i] = w.labels();
        for cause in Cause::ALL {
            out.sample(
                name,
                &[c, i, ("cause", cause.as_str())],
                &a.by_cause[cause.index()].to_string(),
            );
        }
    }
}

/// Copy-up and data-copy latency histograms per container.
fn copy_up_histograms(out: &mut Out, groups: &Groups) {
    type GetHist = fn(&Acc) -> &Cumulative;
    let hists: [(&str, &str, GetHist); 2] = [
        (
            "ovltrace_copy_up_seconds",
            "Overlayfs copy-up latency.",
            |a| &a.latency,
        ),
        (
            "ovltrace_data_copy_seconds",
            "Time spent copying file data within copy-ups.",
            |a| &a.data_copy,
        ),
    ];
    for (name, help, get) in hists {
        out.family(name, "histogram", help);
        for (w, a) in &groups.shown {
            out.histogram(name, &w.labels(), &LATENCY_BOUNDS_NS, get(a));
        }
    }
}

/// Lookups by result, and their latency, per container.
fn lookups(out: &mut Out, groups: &Groups, lookup_bounds: &[u64]) {
    let name = "ovltrace_lookups_total";
    out.family(
        name,
        "counter",
        "Overlayfs name lookups, by result (found, not_found, error).",
    );
    for (w, a) in &groups.shown {
        let [c, i] = w.labels();
        for (result, n) in [
            ("found", a.found),
            ("not_found", a.not_found),
            ("error", a.lookup_errors),
        ] {
            out.sample(name, &[c, i, ("result", result)], &n.to_string());
        }
    }
    let name = "ovltrace_lookup_seconds";
    out.family(
        name,
        "histogram",
        "Overlayfs lookup latency (in-kernel power-of-two buckets; a bucket counts lookups shorter than its bound).",
    );
    for (w, a) in &groups.shown {
        out.histogram(name, &w.labels(), lookup_bounds, &a.lookup);
    }
}

/// Copy-ups, bytes and time per image layer the report lists.
fn layer_totals(out: &mut Out, report: &Report) {
    // Per layer: only the layers the report lists (bounded by --top).
    let mut layers: BTreeMap<&str, (u64, u64, u128)> = BTreeMap::new();
    for l in &report.layers {
        if let Some(d) = l.diff_id.as_deref() {
            let e = layers.entry(d).or_default();
            e.0 += l.copy_up.count;
            e.1 += l.copy_up.bytes;
            e.2 += latency_sum_ns(&l.copy_up);
        }
    }
    let layer_metrics: [(&str, &str); 3] = [
        (
            "ovltrace_layer_copy_ups_total",
            "Copy-ups of files from this image layer (the top layers by copy-up time and by bytes).",
        ),
        (
            "ovltrace_layer_copy_up_bytes_total",
            "Bytes copied up from this image layer.",
        ),
        (
            "ovltrace_layer_copy_up_seconds_total",
            "Total copy-up time of files from this image layer.",
        ),
    ];
    for (i, (name, help)) in layer_metrics.into_iter().enumerate() {
        out.family(name, "counter", help);
        for (diff_id, &(count, bytes, ns)) in &layers {
            let value = match i {
                0 => count.to_string(),
                1 => bytes.to_string(),
                _ => seconds(ns),
            };
            out.sample(name, &[("diff_id", diff_id)], &value);
        }
    }
}

/// Copy-ups per image layer the report lists, by cause.
fn layer_causes(out: &mut Out, report: &Report) {
    let mut layer_causes: BTreeMap<(&str, Cause), u64> = BTreeMap::new();
    for l in &report.layers {
        if let Some(d) = l.diff_id.as_deref() {
            for (&cause, &n) in &l.copy_up.by_cause {
                let e = layer_causes.entry((d, cause)).or_default();
                *e = e.saturating_add(n);
            }
        }
    }
    let name = "ovltrace_layer_copy_ups_by_cause_total";
    out.family(
        name,
        "counter",
        "Copy-ups of files from this image layer, by cause.",
    );
    for ((diff_id, cause), n) in &layer_causes {
        out.sample(
            name,
            &[("diff_id", diff_id), ("cause", cause.as_str())],
            &n.to_string(),
        );
    }
}

/// Events lost, and the raw kernel and user-space counters.
fn drops_and_counters(out: &mut Out, report: &Report) {
    let name = "ovltrace_dropped_events_total";
    out.family(name, "counter", "Events lost, by reason.");
    let d = &report.drops;
    for (reason, n) in [
        ("ringbuf_full", d.ringbuf_full),
        ("lost_return", d.lost_returns),
        ("inflight_full", d.inflight_full),
        ("decode_error", d.decode_errors),
    ] {
        out.sample(name, &[("reason", reason)], &n.to_string());
    }
    let c = &report.counters;
    out.counter(
        "ovltrace_events_total",
        "Copy-up events received from the kernel.",
        c.events_received,
    );
    let name = "ovltrace_kernel_calls_total";
    out.family(
        name,
        "counter",
        "Probe hits in the kernel, by operation and phase.",
    );
    for (op, phase, n) in [
        ("copy_up", "entry", c.copy_up_entries),
        ("copy_up", "exit", c.copy_up_exits),
        ("lookup", "entry", c.lookup_entries),
        ("lookup", "exit", c.lookup_exits),
        ("data_copy", "entry", c.data_copies),
    ] {
        out.sample(name, &[("op", op), ("phase", phase)], &n.to_string());
    }
    out.counter(
        "ovltrace_filtered_total",
        "Operations skipped in the kernel because their overlay is not selected by --container.",
        c.filtered,
    );
    out.counter(
        "ovltrace_hot_spot_evictions_total",
        "Files dropped from the hot-spot table to keep memory bounded.",
        c.evicted_files,
    );
}

/// Containers seen, and those left out of the per-container series.
fn containers(out: &mut Out, report: &Report, groups: &Groups) {
    let name = "ovltrace_containers";
    out.family(name, "gauge", "Containers seen during the trace, by state.");
    let gone = report.containers.iter().filter(|c| c.gone).count();
    let running = report.containers.len() - gone;
    out.sample(name, &[("state", "running")], &running.to_string());
    out.sample(name, &[("state", "gone")], &gone.to_string());
    out.gauge(
        "ovltrace_containers_omitted",
        "Containers left out of the per-container series to bound their number.",
        &groups.omitted.to_string(),
    );
}

/// The labels of a per-container series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Who {
    container: String,
    image: String,
}

impl Who {
    fn labels(&self) -> [(&'static str, &str); 2] {
        [
            ("container", self.container.as_str()),
            ("image", self.image.as_str()),
        ]
    }

    /// Overlays that are no container's.
    fn none() -> Self {
        Who {
            container: String::new(),
            image: String::new(),
        }
    }

    fn of(c: &Container) -> Self {
        let container = c.display_name().to_string();
        let image = match c.image.tags.first() {
            Some(t) => t.clone(),
            None => c
                .image
                .id
                .as_deref()
                .map(|i| crate::catalog::short_digest(i).to_string())
                .unwrap_or_default(),
        };
        Who { container, image }
    }
}

fn short(id: &str) -> String {
    crate::catalog::short_id(id).to_string()
}

/// Everything shown for one `Who`.
#[derive(Debug, Clone)]
struct Acc {
    running: bool,
    copy_ups: u64,
    bytes: u64,
    errors: u64,
    latency: Cumulative,
    data_copy: Cumulative,
    by_cause: CauseCounts,
    found: u64,
    not_found: u64,
    lookup_errors: u64,
    lookup: Cumulative,
}

impl Acc {
    fn new(lookup_bounds: usize) -> Self {
        Acc {
            running: false,
            copy_ups: 0,
            bytes: 0,
            errors: 0,
            latency: Cumulative::new(LATENCY_BOUNDS_NS.len()),
            data_copy: Cumulative::new(LATENCY_BOUNDS_NS.len()),
            by_cause: CauseCounts::default(),
            found: 0,
            not_found: 0,
            lookup_errors: 0,
            lookup: Cumulative::new(lookup_bounds),
        }
    }

    fn merge(&mut self, o: &Acc) {
        self.running |= o.running;
        self.copy_ups = self.copy_ups.saturating_add(o.copy_ups);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.errors = self.errors.saturating_add(o.errors);
        self.latency.add(&o.latency);
        self.data_copy.add(&o.data_copy);
        for (a, b) in self.by_cause.iter_mut().zip(o.by_cause) {
            *a = a.saturating_add(b);
        }
        self.found = self.found.saturating_add(o.found);
        self.not_found = self.not_found.saturating_add(o.not_found);
        self.lookup_errors = self.lookup_errors.saturating_add(o.lookup_errors);
        self.lookup.add(&o.lookup);
    }

    fn activity(&self) -> u64 {
        self.copy_ups
            .saturating_add(self.found)
            .saturating_add(self.not_found)
            .saturating_add(self.lookup_errors)
    }
}

/// Copy-up totals as cumulative histograms.
struct CopyUps {
    count: u64,
    bytes: u64,
    errors: u64,
    latency: Cumulative,
    data_copy: Cumulative,
    by_cause: CauseCounts,
}

impl CopyUps {
    fn of(t: &CopyUpTotals) -> Self {
        CopyUps {
            count: t.count,
            bytes: t.bytes,
            errors: t.errors,
            latency: Cumulative::of_hist(
                &t.latency_ns,
                &LATENCY_BOUNDS_NS,
                (t.total_ns > 0 || t.count == 0).then_some(t.total_ns),
            ),
            data_copy: Cumulative::of_hist(&t.data_copy_ns, &LATENCY_BOUNDS_NS, None),
            by_cause: {
                let mut c = CauseCounts::default();
                for (cause, &n) in &t.by_cause {
                    c[cause.index()] = n;
                }
                c
            },
        }
    }

    fn add_to(&self, a: &mut Acc) {
        a.copy_ups = a.copy_ups.saturating_add(self.count);
        a.bytes = a.bytes.saturating_add(self.bytes);
        a.errors = a.errors.saturating_add(self.errors);
        a.latency.add(&self.latency);
        a.data_copy.add(&self.data_copy);
        for (x, n) in a.by_cause.iter_mut().zip(self.by_cause) {
            *x = x.saturating_add(n);
        }
    }

    fn subtract_from(&self, a: &mut Acc) {
        a.copy_ups = a.copy_ups.saturating_sub(self.count);
        a.bytes = a.bytes.saturating_sub(self.bytes);
        a.errors = a.errors.saturating_sub(self.errors);
        a.latency.subtract(&self.latency);
        a.data_copy.subtract(&self.data_copy);
        for (x, n) in a.by_cause.iter_mut().zip(self.by_cause) {
            *x = x.saturating_sub(n);
        }
    }
}

/// The per-container series to show, and how many containers were left out.
struct Groups {
    shown: Vec<(Who, Acc)>,
    omitted: usize,
}

impl Groups {
    fn of(report: &Report, lookup_bounds: &[u64]) -> Self {
        let mut by_who: BTreeMap<Who, Acc> = BTreeMap::new();
        let mut ids: HashMap<&str, Who> = HashMap::new();
        let mut all_containers = Acc::new(lookup_bounds.len());
        for c in &report.containers {
            let who = Who::of(c);
            ids.insert(c.id.as_str(), who.clone());
            let t = CopyUps::of(&c.copy_up);
            let a = by_who
                .entry(who)
                .or_insert_with(|| Acc::new(lookup_bounds.len()));
            a.running |= !c.gone;
            t.add_to(a);
            t.add_to(&mut all_containers);
        }
        // Every copy-up counts in its mount; the containers' share of the
        // mounts' totals leaves what belongs to no container.
        let mut none = Acc::new(lookup_bounds.len());
        for m in &report.mounts {
            CopyUps::of(&m.copy_up).add_to(&mut none);
        }
        CopyUps {
            count: all_containers.copy_ups,
            bytes: all_containers.bytes,
            errors: all_containers.errors,
            latency: all_containers.latency,
            data_copy: all_containers.data_copy,
            by_cause: all_containers.by_cause,
        }
        .subtract_from(&mut none);
        for l in &report.lookups {
            let a = match l.container.as_deref() {
                Some(id) => {
                    let who = ids.get(id).cloned().unwrap_or_else(|| Who {
                        container: short(id),
                        image: String::new(),
                    });
                    by_who
                        .entry(who)
                        .or_insert_with(|| Acc::new(lookup_bounds.len()))
                }
                None => &mut none,
            };
            a.found = a.found.saturating_add(l.found);
            a.not_found = a.not_found.saturating_add(l.not_found);
            a.lookup_errors = a.lookup_errors.saturating_add(l.errors);
            a.lookup.add(&Cumulative::of_log2(
                &l.histogram,
                lookup_bounds,
                l.total_ns,
            ));
        }
        // Only a container without even an id would have the labels of "no
        // container": its numbers join that series rather than duplicate it.
        if let Some(a) = by_who.remove(&Who::none()) {
            none.merge(&a);
        }
        let mut candidates: Vec<(Who, Acc)> = by_who
            .into_iter()
            .filter(|(_, a)| a.running || a.activity() > 0)
            .collect();
        candidates.sort_by(|a, b| {
            b.1.activity()
                .cmp(&a.1.activity())
                .then_with(|| a.0.cmp(&b.0))
        });
        let omitted = candidates.len().saturating_sub(MAX_CONTAINER_SERIES);
        candidates.truncate(MAX_CONTAINER_SERIES);
        candidates.sort_by(|a, b| a.0.cmp(&b.0));
        let mut shown = vec![(Who::none(), none)];
        shown.extend(candidates);
        Groups { shown, omitted }
    }
}

/// A histogram as Prometheus shows it: for each bound, how many observations
/// were at most that (cumulative), plus the total count and sum.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cumulative {
    le: Vec<u64>,
    count: u64,
    sum_ns: u128,
}

impl Cumulative {
    fn new(bounds: usize) -> Self {
        Cumulative {
            le: vec![0; bounds],
            count: 0,
            sum_ns: 0,
        }
    }

    /// From an HDR histogram: an HDR bucket counts as at most `bound` when
    /// its lowest value is (so the cut is exact to the histogram's 3
    /// significant digits). `exact_sum_ns`, when known, is used as the sum;
    /// otherwise it is computed from the histogram.
    fn of_hist(h: &Hist, bounds: &[u64], exact_sum_ns: Option<u64>) -> Self {
        let mut c = Cumulative::new(bounds.len());
        // Counts per bucket, the last one above every bound (+Inf).
        let mut per = vec![0u64; bounds.len() + 1];
        let mut sum = 0u128;
        match h.to_hdr() {
            Ok(hdr) if hdr.len() == h.count => {
                for v in hdr.iter_recorded() {
                    let n = v.count_at_value();
                    let top = v.value_iterated_to();
                    let low = hdr.lowest_equivalent(top);
                    per[bounds.partition_point(|&b| b < low)] += n;
                    sum += u128::from(hdr.median_equivalent(top)) * u128::from(n);
                }
            }
            _ => {
                // No usable HDR histogram (a damaged or foreign report): the
                // log2 buckets give a lower bound of each cumulative count.
                log::debug!("histogram without a usable HDR encoding; using its log2 buckets");
                for b in &h.buckets {
                    per[bounds.partition_point(|&x| x < b.le_ns)] += b.count;
                }
                sum = u128::from(h.mean) * u128::from(h.count);
            }
        }
        c.count = h.count;
        c.sum_ns = exact_sum_ns.map_or(sum, u128::from);
        c.fill(&per);
        c
    }

    /// From log2 buckets (`count` values below `le_ns`), exact when every
    /// `le_ns` below the top bound is one of `bounds`.
    fn of_log2(buckets: &[Bucket], bounds: &[u64], sum_ns: u64) -> Self {
        let mut c = Cumulative::new(bounds.len());
        let mut per = vec![0u64; bounds.len() + 1];
        for b in buckets {
            per[bounds.partition_point(|&x| x < b.le_ns)] += b.count;
            c.count = c.count.saturating_add(b.count);
        }
        c.sum_ns = u128::from(sum_ns);
        c.fill(&per);
        c
    }

    /// Cumulative counts from per-bucket counts, capped by `count` so the
    /// buckets never exceed `+Inf` whatever the input.
    fn fill(&mut self, per: &[u64]) {
        let mut acc = 0u64;
        for (slot, n) in self.le.iter_mut().zip(per) {
            acc = acc.saturating_add(*n);
            *slot = acc.min(self.count);
        }
    }

    fn add(&mut self, o: &Cumulative) {
        for (a, b) in self.le.iter_mut().zip(&o.le) {
            *a = a.saturating_add(*b);
        }
        self.count = self.count.saturating_add(o.count);
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
    }

    fn subtract(&mut self, o: &Cumulative) {
        for (a, b) in self.le.iter_mut().zip(&o.le) {
            *a = a.saturating_sub(*b);
        }
        self.count = self.count.saturating_sub(o.count);
        self.sum_ns = self.sum_ns.saturating_sub(o.sum_ns);
        // Keep the shape valid even if the inputs were inconsistent.
        let mut prev = 0;
        for a in &mut self.le {
            *a = (*a).max(prev).min(self.count);
            prev = *a;
        }
    }
}

/// Total copy-up time: exact when the report has it, else from the histogram.
fn latency_sum_ns(t: &CopyUpTotals) -> u128 {
    if t.total_ns > 0 || t.count == 0 {
        u128::from(t.total_ns)
    } else {
        Cumulative::of_hist(&t.latency_ns, &[], None).sum_ns
    }
}

/// Nanoseconds as decimal seconds, exactly (no float rounding).
fn seconds(ns: u128) -> String {
    let whole = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:09}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Escapes HELP text: backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[derive(Default)]
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", text::prometheus_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], &value.to_string());
    }

    fn gauge(&mut self, name: &str, help: &str, value: &str) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], bounds: &[u64], c: &Cumulative) {
        let bucket = format!("{name}_bucket");
        let les = bounds
            .iter()
            .map(|b| seconds(u128::from(*b)))
            .chain(std::iter::once("+Inf".to_string()));
        let counts = c.le.iter().chain(std::iter::once(&c.count));
        for (le, n) in les.zip(counts) {
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, &n.to_string());
        }
        self.sample(&format!("{name}_sum"), labels, &seconds(c.sum_ns));
        self.sample(&format!("{name}_count"), labels, &c.count.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use ovltrace_ebpf::LookupStats;

    use super::*;
    use crate::bpf::event::OverlayKey;
    use crate::{
        aggregate::Aggregator,
        attribute::Attribution,
        bpf::event::{CopyUp, FileKind},
        catalog::{ContainerInfo, ImageInfo, LayerInfo, SourceLayer},
        hdr::{new_histogram, record},
        report::{self, Counters, Drops, KnownContainer, KnownMount, ProbeInfo},
        sys::mounts::Dev,
    };

    fn ev(dev: u32, path: &str, latency_ns: u64, bytes: u64) -> CopyUp {
        CopyUp {
            start_ns: 0,
            latency_ns,
            data_ns: None,
            data_len: Some(bytes),
            size: bytes,
            tgid: 1,
            tid: 1,
            overlay: OverlayKey::dev_only(dev),
            ret: 0,
            kind: FileKind::Regular,
            path: path.as_bytes().to_vec(),
            path_truncated: false,
            comm: "sh".into(),
            mnt_ns: 0,
            source: None,
            cause: Default::default(),
        }
    }

    fn container(id: &str, name: Option<&str>, image: ImageInfo, dev: u32) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: name.map(Into::into),
            image,
            mountpoint: format!("/var/lib/docker/overlay2/{id}/merged").into(),
            dev: Dev::from_kernel(dev),
            runtime: "docker",
            upperdir: None,
            layers: vec![LayerInfo {
                index: 1,
                diff_id: Some("sha256:l1".into()),
                ..Default::default()
            }],
            pod: None,
            mount_id: 0,
        }
    }

    fn tags(t: &[&str]) -> ImageInfo {
        ImageInfo {
            id: Some(format!("sha256:{}", "f".repeat(64))),
            tags: t.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Devices: 50 = web, 51 = db (gone), 52 = idle, 53 = old (gone, idle),
    /// 60 = an overlay of no container.
    struct Fixture {
        agg: Aggregator,
        mounts: HashMap<OverlayKey, KnownMount>,
        containers: Vec<KnownContainer>,
        lookups: Vec<(OverlayKey, LookupStats)>,
    }

    const WEB: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    impl Fixture {
        fn new() -> Self {
            Fixture {
                agg: Aggregator::new(1000),
                mounts: HashMap::new(),
                containers: Vec::new(),
                lookups: Vec::new(),
            }
        }

        fn add_container(&mut self, info: ContainerInfo, gone: bool) {
            self.mounts.insert(
                OverlayKey::dev_only(info.dev.to_kernel()),
                KnownMount {
                    container: Some(info.id.clone()),
                    mountpoint: Some(info.mountpoint.display().to_string()),
                    ..Default::default()
                },
            );
            self.containers.push(KnownContainer { info, gone });
        }

        fn copy_up(&mut self, e: &CopyUp, container: Option<&str>) {
            let source = SourceLayer {
                index: 1,
                diff_id: Some("sha256:l1".into()),
                created_by: Some("COPY . /app".into()),
                data_index: None,
            };
            let attr = Attribution {
                container: container.map(Into::into),
                layer: container.map(|_| 1),
                outside: false,
            };
            self.agg
                .add(e, &attr, container.is_some().then_some(&source));
        }

        fn report(&self) -> Report {
            report::build(report::Inputs {
                agg: &self.agg,
                lookups: &self.lookups,
                mounts: &self.mounts,
                containers: &self.containers,
                probe: ProbeInfo {
                    strategy: "kprobe".into(),
                    data_copy: Some("ovl_copy_up_file".into()),
                },
                host: "h".into(),
                kernel: "6.12.0-test".into(),
                started_unix_ms: 1_700_000_000_123,
                duration_ms: 61_500,
                drops: Drops {
                    ringbuf_full: 3,
                    lost_returns: 2,
                    inflight_full: 1,
                    decode_errors: 4,
                    ..Default::default()
                },
                counters: Counters {
                    copy_up_entries: 11,
                    copy_up_exits: 10,
                    data_copies: 7,
                    lookup_entries: 100,
                    lookup_exits: 99,
                    filtered: 5,
                    ..Default::default()
                },
                warnings: vec![],
                top: 10,
            })
        }
    }

    fn fixture() -> Fixture {
        let mut f = Fixture::new();
        f.add_container(
            container(WEB, Some("web"), tags(&["nginx:1.25", "nginx:latest"]), 50),
            false,
        );
        let db_image = ImageInfo {
            id: Some("sha256:0123456789abcdef0123".into()),
            tags: vec![],
        };
        f.add_container(container(DB, None, db_image, 51), true);
        f.add_container(
            container("c".repeat(64).as_str(), Some("idle"), tags(&[]), 52),
            false,
        );
        f.add_container(
            container("d".repeat(64).as_str(), Some("old"), tags(&[]), 53),
            true,
        );
        f.mounts.insert(
            OverlayKey::dev_only(60),
            KnownMount {
                mountpoint: Some("/mnt/plain".into()),
                ..Default::default()
            },
        );
        f.copy_up(&ev(50, "a", 9_999, 10), Some(WEB));
        f.copy_up(&ev(50, "b", 10_000, 20), Some(WEB));
        let mut slow = ev(50, "c", 3_000_000, 30);
        slow.data_ns = Some(1_000_000);
        f.copy_up(&slow, Some(WEB));
        let mut failed = ev(51, "d", 2_000_000_000, 4096);
        failed.ret = -5;
        f.copy_up(&failed, Some(DB));
        f.copy_up(&ev(60, "e", 15_000_000_000, 7), None);
        let mut web = LookupStats::ZERO;
        web.found = 5;
        web.not_found = 2;
        web.errors = 1;
        web.hist[10] = 6; // [1024, 2048) ns
        web.hist[12] = 2; // [4096, 8192) ns
        web.total_ns = 6 * 1500 + 2 * 5000;
        let mut plain = LookupStats::ZERO;
        plain.found = 1;
        plain.hist[ovltrace_ebpf::HIST_SLOTS - 1] = 1; // open-ended
        plain.total_ns = 1_000_000_000_000;
        f.lookups = vec![
            (OverlayKey::dev_only(50), web),
            (OverlayKey::dev_only(60), plain),
        ];
        f
    }

    /// The value of the sample whose name and labels are exactly `series`.
    fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    fn v(text: &str, series: &str) -> String {
        match value(text, series) {
            Some(x) => x.to_string(),
            None => panic!("no sample {series}:\n{text}"),
        }
    }

    const W: &str = r#"container="web",image="nginx:1.25""#;

    #[test]
    fn counters_and_gauges() {
        let text = render(&fixture().report());
        check_format(&text);
        assert_eq!(
            v(
                &text,
                r#"ovltrace_build_info{version="0.1.0",strategy="kprobe",kernel="6.12.0-test"}"#
            ),
            "1"
        );
        assert_eq!(v(&text, "ovltrace_start_time_seconds"), "1700000000.123");
        assert_eq!(v(&text, "ovltrace_trace_duration_seconds"), "61.5");
        assert_eq!(v(&text, &format!("ovltrace_copy_ups_total{{{W}}}")), "3");
        assert_eq!(
            v(&text, &format!("ovltrace_copy_up_bytes_total{{{W}}}")),
            "60"
        );
        assert_eq!(
            v(&text, &format!("ovltrace_copy_up_errors_total{{{W}}}")),
            "0"
        );
        // No name: the short id; no tag: the short image id.
        let db = r#"container="bbbbbbbbbbbb",image="0123456789ab""#;
        assert_eq!(v(&text, &format!("ovltrace_copy_ups_total{{{db}}}")), "1");
        assert_eq!(
            v(&text, &format!("ovltrace_copy_up_bytes_total{{{db}}}")),
            "4096"
        );
        assert_eq!(
            v(&text, &format!("ovltrace_copy_up_errors_total{{{db}}}")),
            "1"
        );
        // Overlays of no container.
        let none = r#"container="",image="""#;
        assert_eq!(v(&text, &format!("ovltrace_copy_ups_total{{{none}}}")), "1");
        assert_eq!(
            v(&text, &format!("ovltrace_copy_up_bytes_total{{{none}}}")),
            "7"
        );
        // A running container without activity has series; a gone one has not.
        let idle = r#"container="idle",image="ffffffffffff""#;
        assert_eq!(v(&text, &format!("ovltrace_copy_ups_total{{{idle}}}")), "0");
        assert!(!text.contains(r#"container="old""#), "{text}");
        assert_eq!(v(&text, r#"ovltrace_containers{state="running"}"#), "2");
        assert_eq!(v(&text, r#"ovltrace_containers{state="gone"}"#), "2");
        assert_eq!(v(&text, "ovltrace_containers_omitted"), "0");

        for (result, n) in [("found", "5"), ("not_found", "2"), ("error", "1")] {
            assert_eq!(
                v(
                    &text,
                    &format!("ovltrace_lookups_total{{{W},result=\"{result}\"}}")
                ),
                n
            );
        }
        assert_eq!(
            v(
                &text,
                &format!("ovltrace_lookups_total{{{none},result=\"found\"}}")
            ),
            "1"
        );
        for (reason, n) in [
            ("ringbuf_full", "3"),
            ("lost_return", "2"),
            ("inflight_full", "1"),
            ("decode_error", "4"),
        ] {
            assert_eq!(
                v(
                    &text,
                    &format!("ovltrace_dropped_events_total{{reason=\"{reason}\"}}")
                ),
                n
            );
        }
        assert_eq!(v(&text, "ovltrace_events_total"), "5");
        assert_eq!(
            v(
                &text,
                r#"ovltrace_kernel_calls_total{op="copy_up",phase="exit"}"#
            ),
            "10"
        );
        assert_eq!(
            v(
                &text,
                r#"ovltrace_kernel_calls_total{op="data_copy",phase="entry"}"#
            ),
            "7"
        );
        assert_eq!(v(&text, "ovltrace_filtered_total"), "5");
        assert_eq!(v(&text, "ovltrace_hot_spot_evictions_total"), "0");
        // Layers: by diff-id, web's and db's copy-ups came from sha256:l1.
        let l = r#"{diff_id="sha256:l1"}"#;
        assert_eq!(v(&text, &format!("ovltrace_layer_copy_ups_total{l}")), "4");
        assert_eq!(
            v(&text, &format!("ovltrace_layer_copy_up_bytes_total{l}")),
            "4156"
        );
        assert_eq!(
            v(&text, &format!("ovltrace_layer_copy_up_seconds_total{l}")),
            "2.003019999"
        );
    }

    #[test]
    fn copy_ups_by_cause() {
        let mut f = fixture();
        // The fixture's events have no cause (unknown); add known ones.
        for (path, cause) in [("m1", Cause::Metadata), ("m2", Cause::Metadata)] {
            let e = CopyUp {
                cause,
                ..ev(50, path, 1_000, 0)
            };
            f.copy_up(&e, Some(WEB));
        }
        f.copy_up(
            &CopyUp {
                cause: Cause::Write,
                ..ev(60, "w", 1_000, 1)
            },
            None,
        );
        let text = render(&f.report());
        check_format(&text);
        let by = |labels: &str, cause: &str| {
            v(
                &text,
                &format!("ovltrace_copy_ups_by_cause_total{{{labels},cause=\"{cause}\"}}"),
            )
        };
        assert_eq!(by(W, "metadata"), "2");
        assert_eq!(by(W, "unknown"), "3");
        assert_eq!(by(W, "write"), "0");
        let none = r#"container="",image="""#;
        assert_eq!(by(none, "write"), "1");
        assert_eq!(by(none, "unknown"), "1");
        // Bounded: every series has one of the seven causes.
        let causes: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("ovltrace_copy_ups_by_cause_total{"))
            .map(|l| {
                l.split("cause=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(causes.len(), Cause::ALL.len());
        assert_eq!(
            v(
                &text,
                r#"ovltrace_layer_copy_ups_by_cause_total{diff_id="sha256:l1",cause="metadata"}"#
            ),
            "2"
        );
    }

    #[test]
    fn copy_up_histograms_are_exact() {
        let text = render(&fixture().report());
        let b = |le: &str| {
            v(
                &text,
                &format!("ovltrace_copy_up_seconds_bucket{{{W},le=\"{le}\"}}"),
            )
        };
        // 9,999 ns and 10,000 ns are at most 10µs; 3 ms is above 2.5 ms.
        assert_eq!(b("0.00001"), "2");
        assert_eq!(b("0.000025"), "2");
        assert_eq!(b("0.0025"), "2");
        assert_eq!(b("0.005"), "3");
        assert_eq!(b("10"), "3");
        assert_eq!(b("+Inf"), "3");
        // The sum is the exact total, not the histogram's approximation.
        assert_eq!(
            v(&text, &format!("ovltrace_copy_up_seconds_sum{{{W}}}")),
            "0.003019999"
        );
        assert_eq!(
            v(&text, &format!("ovltrace_copy_up_seconds_count{{{W}}}")),
            "3"
        );
        // Data copy: only the 3 ms copy-up copied data (1 ms of it); its sum
        // comes from the HDR histogram (the middle of 1 ms's 512 ns bucket).
        let d = |le: &str| {
            v(
                &text,
                &format!("ovltrace_data_copy_seconds_bucket{{{W},le=\"{le}\"}}"),
            )
        };
        assert_eq!(d("0.0005"), "0");
        assert_eq!(d("0.001"), "1");
        assert_eq!(d("+Inf"), "1");
        assert_eq!(
            v(&text, &format!("ovltrace_data_copy_seconds_sum{{{W}}}")),
            "0.001000192"
        );
        // 15 s is above every bound.
        let none = r#"container="",image="""#;
        let n = |le: &str| {
            v(
                &text,
                &format!("ovltrace_copy_up_seconds_bucket{{{none},le=\"{le}\"}}"),
            )
        };
        assert_eq!(n("10"), "0");
        assert_eq!(n("+Inf"), "1");
        assert_eq!(
            v(&text, &format!("ovltrace_copy_up_seconds_sum{{{none}}}")),
            "15"
        );
        let db = r#"container="bbbbbbbbbbbb",image="0123456789ab""#;
        let d = |le: &str| {
            v(
                &text,
                &format!("ovltrace_copy_up_seconds_bucket{{{db},le=\"{le}\"}}"),
            )
        };
        assert_eq!((d("1").as_str(), d("2.5").as_str()), ("0", "1"));
    }

    #[test]
    fn lookup_histogram_from_log2_buckets() {
        let text = render(&fixture().report());
        let b = |le: &str| {
            v(
                &text,
                &format!("ovltrace_lookup_seconds_bucket{{{W},le=\"{le}\"}}"),
            )
        };
        assert_eq!(b("0.000001024"), "0");
        assert_eq!(b("0.000002048"), "6");
        assert_eq!(b("0.000004096"), "6");
        assert_eq!(b("0.000008192"), "8");
        assert_eq!(b("17.179869184"), "8");
        assert_eq!(b("+Inf"), "8");
        assert_eq!(
            v(&text, &format!("ovltrace_lookup_seconds_sum{{{W}}}")),
            "0.000019"
        );
        assert_eq!(
            v(&text, &format!("ovltrace_lookup_seconds_count{{{W}}}")),
            "8"
        );
        // The open-ended kernel bucket only counts in +Inf.
        let none = r#"container="",image="""#;
        let n = |le: &str| {
            v(
                &text,
                &format!("ovltrace_lookup_seconds_bucket{{{none},le=\"{le}\"}}"),
            )
        };
        assert_eq!((n("17.179869184").as_str(), n("+Inf").as_str()), ("0", "1"));
        assert_eq!(
            v(&text, &format!("ovltrace_lookup_seconds_sum{{{none}}}")),
            "1000"
        );
        // Buckets every power of two from 2^10 to 2^34 ns.
        let bounds = text
            .lines()
            .filter(|l| l.starts_with(&format!("ovltrace_lookup_seconds_bucket{{{W},")))
            .count();
        assert_eq!(bounds, 26);
    }

    #[test]
    fn hdr_bucket_cut() {
        let mut h = new_histogram();
        for x in [1, 9_999, 10_000, 10_008, 25_000, 10_010_000_000] {
            record(&mut h, x);
        }
        let c = Cumulative::of_hist(&Hist::from_hdr(&h), &LATENCY_BOUNDS_NS, Some(42));
        // 10,008 is in the HDR bucket after 10,000's; 10.01 s is above 10 s
        // (the cut is as fine as the histogram's 3 significant digits).
        assert_eq!(&c.le[..3], &[3, 5, 5]);
        assert_eq!(c.le[18], 5);
        assert_eq!((c.count, c.sum_ns), (6, 42));
        // A histogram whose encoding is damaged falls back on its log2
        // buckets (a lower bound) and never exceeds its count.
        let mut bad = Hist::from_hdr(&h);
        bad.hdr = "!!".into();
        let c = Cumulative::of_hist(&bad, &LATENCY_BOUNDS_NS, None);
        assert_eq!(c.count, 6);
        assert!(
            c.le.windows(2).all(|w| w[0] <= w[1]) && c.le[18] <= 6,
            "{c:?}"
        );
        // Only the 1 ns value is surely at most 10µs: 9,999's log2 bucket
        // reaches 16,384 ns.
        assert_eq!(c.le[0], 1);
        assert_eq!(c.le[1], 4);
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1), "0.000000001");
        assert_eq!(seconds(1_500_000_000), "1.5");
        assert_eq!(seconds(10_000), "0.00001");
        assert_eq!(seconds(u128::from(u64::MAX)), "18446744073.709551615");
    }

    const HOSTILE_NAME: &str = "we\"b\\x\nname{le=\"1\"},é😀\r\u{1b}[31m";
    const HOSTILE_TAG: &str = "evil\"\n# TYPE x counter\nx 1";

    fn hostile_report() -> Report {
        let mut f = Fixture::new();
        f.add_container(
            container(WEB, Some(HOSTILE_NAME), tags(&[HOSTILE_TAG]), 50),
            false,
        );
        f.copy_up(&ev(50, "a", 1_000, 1), Some(WEB));
        let mut r = f.report();
        r.kernel = "6.12\"\\\n".into();
        r.layers[0].diff_id = Some("sha256:\"}\n".into());
        r
    }

    #[test]
    fn hostile_label_values_are_escaped() {
        let text = render(&hostile_report());
        let name = r#"we\"b\\x\nname{le=\"1\"},é😀"#;
        let series = format!(
            "ovltrace_copy_ups_total{{container=\"{name}\\\\u{{d}}\\\\u{{1b}}[31m\",image=\"evil\\\"\\n# TYPE x counter\\nx 1\"}}"
        );
        assert_eq!(v(&text, &series), "1", "{text}");
        assert!(text.contains(r#"kernel="6.12\"\\\n""#), "{text}");
        assert!(text.contains(r#"{diff_id="sha256:\"}\n"}"#), "{text}");
        // Nothing injected: no line but ours starts a family or a sample.
        assert!(!text
            .lines()
            .any(|l| l.starts_with("x ") || l == "# TYPE x counter"));
        let parsed = check_format(&text);
        let containers: BTreeSet<&str> = parsed
            .iter()
            .filter_map(|(_, labels)| {
                labels
                    .iter()
                    .find(|(k, _)| k == "container")
                    .map(|(_, v)| v.as_str())
            })
            .collect();
        // The values parse back to the original text, with the control
        // characters made visible (crate::text's policy).
        let shown = HOSTILE_NAME
            .replace('\r', "\\u{d}")
            .replace('\u{1b}', "\\u{1b}");
        assert_eq!(containers, BTreeSet::from(["", shown.as_str()]));
        assert!(parsed
            .iter()
            .any(|(_, l)| l.iter().any(|(k, v)| k == "image" && v == HOSTILE_TAG)));
    }

    #[test]
    fn same_names_share_series() {
        let mut f = Fixture::new();
        // A container removed and re-created under the same name.
        f.add_container(container(WEB, Some("app"), tags(&["app:1"]), 50), true);
        f.add_container(container(DB, Some("app"), tags(&["app:1"]), 51), false);
        f.copy_up(&ev(50, "a", 1_000, 1), Some(WEB));
        f.copy_up(&ev(51, "a", 2_000, 2), Some(DB));
        let text = render(&f.report());
        check_format(&text);
        let app = r#"container="app",image="app:1""#;
        assert_eq!(v(&text, &format!("ovltrace_copy_ups_total{{{app}}}")), "2");
        assert_eq!(
            v(&text, &format!("ovltrace_copy_up_bytes_total{{{app}}}")),
            "3"
        );
        assert_eq!(
            v(&text, &format!("ovltrace_copy_up_seconds_sum{{{app}}}")),
            "0.000003"
        );
        assert_eq!(
            v(&text, r#"ovltrace_copy_ups_total{container="",image=""}"#),
            "0"
        );
    }

    #[test]
    fn container_series_are_bounded() {
        let mut f = Fixture::new();
        let n = MAX_CONTAINER_SERIES + 50;
        for i in 0..n {
            let id = format!("{i:064x}");
            let dev = 100 + i as u32;
            f.add_container(
                container(&id, Some(&format!("c{i:03}")), tags(&[]), dev),
                true,
            );
            // c000 is the least busy, c249 the busiest.
            for k in 0..=i {
                f.copy_up(&ev(dev, &format!("f{k}"), 1_000, 1), Some(&id));
            }
        }
        let text = render(&f.report());
        check_format(&text);
        let shown = text
            .lines()
            .filter(|l| l.starts_with("ovltrace_copy_ups_total{"))
            .count();
        assert_eq!(shown, MAX_CONTAINER_SERIES + 1); // plus container=""
        assert_eq!(v(&text, "ovltrace_containers_omitted"), "50");
        assert!(text.contains(r#"container="c249""#));
        assert!(!text.contains(r#"container="c049""#));
        assert!(text.contains(r#"container="c050""#));
    }

    #[test]
    fn empty_report_is_valid() {
        let text = render(&Fixture::new().report());
        check_format(&text);
        assert_eq!(
            v(&text, r#"ovltrace_copy_ups_total{container="",image=""}"#),
            "0"
        );
        assert_eq!(
            v(
                &text,
                r#"ovltrace_copy_up_seconds_bucket{container="",image="",le="+Inf"}"#
            ),
            "0"
        );
    }

    /// A strict reader of the text format (what this renderer may emit):
    /// every family has HELP and TYPE before its samples, label values use
    /// only the three escapes, no series repeats, histograms are cumulative
    /// and end with +Inf = _count. Returns (name, labels) of every sample.
    fn check_format(text: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut seen = BTreeSet::new();
        let mut samples = Vec::new();
        let mut last_bucket: HashMap<String, (f64, u64)> = HashMap::new();
        let mut inf: HashMap<String, u64> = HashMap::new();
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
                let name = name.unwrap_or_else(|| panic!("bad comment {line:?}"));
                match (kw, arg) {
                    (Some("HELP"), Some(_)) => {}
                    (Some("TYPE"), Some(t)) => {
                        assert!(["counter", "gauge", "histogram"].contains(&t), "{line}");
                        assert!(types.insert(name.into(), t.into()).is_none(), "{line}");
                    }
                    _ => panic!("bad comment {line:?}"),
                }
                continue;
            }
            let name_end = line
                .find(['{', ' '])
                .unwrap_or_else(|| panic!("bad sample {line:?}"));
            let name = &line[..name_end];
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line:?}"
            );
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if let Some(r) = rest.strip_prefix('{') {
                rest = r;
                loop {
                    let eq = rest.find("=\"").unwrap_or_else(|| panic!("{line:?}"));
                    let key = rest[..eq].to_string();
                    rest = &rest[eq + 2..];
                    let mut value = String::new();
                    let mut chars = rest.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, '\\')) => value.push('\\'),
                                Some((_, '"')) => value.push('"'),
                                Some((_, 'n')) => value.push('\n'),
                                other => panic!("bad escape {other:?} in {line:?}"),
                            },
                            Some((i, '"')) => break i,
                            Some((_, c)) => value.push(c),
                            None => panic!("unterminated value in {line:?}"),
                        }
                    };
                    labels.push((key, value));
                    rest = &rest[end + 1..];
                    if let Some(r) = rest.strip_prefix(',') {
                        rest = r;
                    } else if let Some(r) = rest.strip_prefix('}') {
                        rest = r;
                        break;
                    } else {
                        panic!("bad labels in {line:?}");
                    }
                }
            }
            let value = rest
                .strip_prefix(' ')
                .unwrap_or_else(|| panic!("no value in {line:?}"));
            let number: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "no TYPE before {line:?}");
            assert!(
                seen.insert(format!("{name}{labels:?}")),
                "duplicate series {line:?}"
            );
            let series: Vec<_> = labels.iter().filter(|(k, _)| k != "le").collect();
            let key = format!("{family}{series:?}");
            if name.ends_with("_bucket") && family != name {
                let le = &labels.last().unwrap().1;
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                let count = value.parse::<u64>().unwrap();
                if let Some((prev_le, prev)) = last_bucket.get(&key) {
                    assert!(le > *prev_le && count >= *prev, "not cumulative: {line:?}");
                }
                last_bucket.insert(key.clone(), (le, count));
                if le.is_infinite() {
                    inf.insert(key, count);
                }
            } else if name.ends_with("_count") && family != name {
                assert_eq!(inf.get(&key), Some(&(number as u64)), "{line:?}");
            }
            samples.push((name.to_string(), labels));
        }
        samples
    }
}
