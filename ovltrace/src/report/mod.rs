//! The report model: what a trace found, independent of how it is shown.
//! `json` serialises it as is (schema in docs/json-schema.md), `view` derives
//! what the human outputs show, `render` shows it.

pub mod advice;
pub mod filter;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod json;
pub mod merge;
pub mod view;

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use ovltrace_ebpf::{LookupStats, HIST_SLOTS};
use serde::{Deserialize, Serialize};

pub use crate::catalog::{KnownContainer, KnownMount};
pub use crate::hdr::{Bucket, Hist};

use crate::{
    aggregate::{Aggregator, FileAgg, FileKey, GroupAgg},
    bpf::event::{Cause, OverlayKey},
    catalog::{ImageInfo, LayerInfo, SourceLayer},
};

/// 2: `files` (how many files were seen, kept, listed and evicted), the
/// cause of copy-ups (`causes` per file, `by_cause` in every total).
/// 3: `hot_spots` (the two hot-spot tables, by total time and by bytes),
/// `by_kind` in every total, `number` in the containers' `layers[]`
/// (docs/json-schema.md).
pub const SCHEMA_VERSION: u32 = 3;
/// The oldest schema `ovltrace report` still reads (upgraded on reading).
pub const OLDEST_SCHEMA_READ: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub schema_version: u32,
    pub tool: Tool,
    /// Host name of the traced machine. A report merged from several hosts
    /// says which here ("a, b" or "12 hosts") and lists them in `hosts`.
    pub host: String,
    /// The hosts of a report merged from several (sorted); empty for one host.
    /// When non-empty, mounts, containers, files, lookups and per-mount
    /// layers carry their own `host`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    pub kernel: String,
    /// Wall-clock start of the trace, Unix milliseconds.
    pub started_unix_ms: u64,
    pub duration_ms: u64,
    pub probe: ProbeInfo,
    pub mounts: Vec<Mount>,
    /// Containers whose overlay was seen (live at some point during the trace).
    pub containers: Vec<Container>,
    /// The hottest paths (top N by total copy-up time, plus the top N by
    /// bytes; every file the tracer kept with `--top 0`), each once.
    pub copy_ups: Vec<CopyUpFile>,
    /// The two hot-spot tables over `copy_ups`: by total time and by bytes.
    #[serde(default)]
    pub hot_spots: HotSpots,
    /// How many files were seen, kept, listed in `copy_ups` and evicted.
    #[serde(default)]
    pub files: FileCounts,
    /// The source layers that cost the most (top N by total copy-up time,
    /// plus the top N by bytes).
    pub layers: Vec<LayerCost>,
    pub lookups: Vec<Lookups>,
    /// What to do about it, with the numbers behind each suggestion.
    pub advice: Vec<Advice>,
    pub drops: Drops,
    pub counters: Counters,
    pub warnings: Vec<String>,
    /// What the trace was limited to (absent: every copy-up was counted).
    #[serde(default, skip_serializing_if = "Filters::is_empty")]
    pub filters: Filters,
}

/// The filters a trace ran with: a copy-up is counted when it matches every
/// one given. Copy-ups dropped in user space are `counters.filtered_user`,
/// in the kernel `counters.filtered`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Filters {
    /// `--container`: names or id prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    /// `--image`: NAME, NAME:TAG or an image id prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// `--comm`: command names of the processes that copy up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comms: Vec<String>,
    /// `--min-latency`, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_latency_ns: Option<u64>,
    /// `run -- CMD`: the command whose run was the trace's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The container filter was applied in the kernel (false: in user space,
    /// because a name was waited for when the trace started).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub containers_in_kernel: bool,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
            && self.images.is_empty()
            && self.comms.is_empty()
            && self.min_latency_ns.is_none()
            && self.command.is_none()
    }

    /// "container web, image myapp:1.2, comm chown, min latency 10ms": the
    /// active filters, each as its flag says it (untrusted: escape it for
    /// the output).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let list = |name: &str, v: &[String]| format!("{name} {}", v.join(" or "));
        if !self.containers.is_empty() {
            parts.push(list("container", &self.containers));
        }
        if !self.images.is_empty() {
            parts.push(list("image", &self.images));
        }
        if !self.comms.is_empty() {
            parts.push(list("comm", &self.comms));
        }
        if let Some(ns) = self.min_latency_ns {
            parts.push(format!("min latency {}", crate::units::fmt_ns(ns)));
        }
        if let Some(c) = &self.command {
            parts.push(format!("while `{c}` ran"));
        }
        parts.join(", ")
    }
}

/// The two hot-spot tables: indices into `copy_ups`, each table sorted by
/// its own key (largest first) and at most `top` long (every listed file
/// when `top` is 0).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct HotSpots {
    /// The `--top` the tables were cut to (0: none).
    pub top: usize,
    /// By total copy-up time.
    pub by_time: Vec<usize>,
    /// By bytes copied.
    pub by_bytes: Vec<usize>,
}

impl HotSpots {
    /// Ranks `files` by total time and by bytes, `top` rows each (ties in
    /// list order).
    pub fn rank(files: &[CopyUpFile], top: usize) -> Self {
        let n = match top {
            0 => files.len(),
            n => n.min(files.len()),
        };
        let ranked = |key: fn(&CopyUpFile) -> u64| {
            let mut v: Vec<usize> = (0..files.len()).collect();
            v.sort_by(|&a, &b| key(&files[b]).cmp(&key(&files[a])).then(a.cmp(&b)));
            v.truncate(n);
            v
        };
        HotSpots {
            top,
            by_time: ranked(|f| f.total_ns),
            by_bytes: ranked(|f| f.bytes),
        }
    }
}

impl Report {
    /// The rows of a hot-spot table (indices out of range are skipped: a
    /// report read from a file may hold anything).
    pub fn hot_spot_rows<'a>(&'a self, table: &'a [usize]) -> Vec<&'a CopyUpFile> {
        table.iter().filter_map(|&i| self.copy_ups.get(i)).collect()
    }
}

/// What became of the files the trace saw copied up (a file: a path within
/// one overlay, per container).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct FileCounts {
    /// Distinct files copied up. A file evicted from the tracer's table and
    /// copied up again later counts twice (rare: a file is copied up once in
    /// the life of an overlay).
    pub seen: u64,
    /// Files in the tracer's table at the end: `seen` minus `evicted`.
    pub kept: u64,
    /// Files listed in `copy_ups`.
    pub listed: u64,
    /// Files dropped from the table to bound its memory (their copy-ups are
    /// in every total; `counters.evicted_files` too).
    pub evicted: u64,
}

impl FileCounts {
    /// The counts of a schema 1 report, which has only the evicted count
    /// and its list: lower bounds (as if it had kept only what it listed).
    pub fn from_schema_1(r: &Report) -> Self {
        let listed = r.copy_ups.len() as u64;
        let evicted = r.counters.evicted_files;
        FileCounts {
            seen: listed.saturating_add(evicted),
            kept: listed,
            listed,
            evicted,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProbeInfo {
    /// "kprobe" or "fentry".
    pub strategy: String,
    /// Data-copy function timed, if any.
    pub data_copy: Option<String>,
}

/// An overlay mount seen during the trace, with its copy-up totals.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mount {
    /// Host of a merged multi-host report (absent: the report's `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Null when the mount was gone before it could be looked up.
    pub mountpoint: Option<String>,
    /// Overlay superblock device, "major:minor" as in mountinfo.
    pub dev: String,
    pub upperdir: Option<String>,
    pub lowerdirs: Vec<String>,
    /// The container whose overlay this is: its root file system, or (not a
    /// container's section of its own) Docker's short-lived mount of its init
    /// layer while the container was created. Absent: no container's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub copy_up: CopyUpTotals,
}

/// A container and its layer stack, with its copy-up totals.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Container {
    pub id: String,
    /// Host of a merged multi-host report (absent: the report's `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub name: Option<String>,
    /// The Kubernetes pod the container is in (absent: none known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<crate::catalog::PodInfo>,
    pub image: ImageInfo,
    pub runtime: String,
    pub mountpoint: String,
    pub dev: String,
    /// One per lowerdir, uppermost first (`index` 1 is the first lowerdir).
    pub layers: Vec<LayerInfo>,
    /// The overlay was unmounted before the trace ended.
    pub gone: bool,
    pub copy_up: CopyUpTotals,
}

impl Container {
    /// Its name, else its 12-character id ([`crate::catalog::display_name`]).
    pub fn display_name(&self) -> &str {
        crate::catalog::display_name(self.name.as_deref(), &self.id)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CopyUpTotals {
    pub count: u64,
    pub bytes: u64,
    /// Sum of the copy-up latencies.
    #[serde(default)]
    pub total_ns: u64,
    pub errors: u64,
    pub latency_ns: Hist,
    /// Time in the data-copy function (empty when not measured).
    pub data_copy_ns: Hist,
    /// Bytes copied per copy-up.
    pub size_bytes: Hist,
    /// Copy-ups by cause (only causes seen): `write`, `truncate`,
    /// `metadata`, `link`, `rename`, `parent`, `unknown`.
    #[serde(default)]
    pub by_cause: BTreeMap<Cause, u64>,
    /// Copy-ups by kind of file (only kinds seen): `regular`, `dir`,
    /// `symlink`, `other`.
    #[serde(default)]
    pub by_kind: BTreeMap<String, u64>,
}

/// Per-cause counts as a map without the zeros.
pub fn cause_map(counts: &crate::bpf::event::CauseCounts) -> BTreeMap<Cause, u64> {
    Cause::ALL
        .into_iter()
        .filter(|c| counts[c.index()] > 0)
        .map(|c| (c, counts[c.index()]))
        .collect()
}

/// "metadata 300, parent 2": counts by cause, most first.
pub fn causes_text(by_cause: &BTreeMap<Cause, u64>) -> String {
    let mut v: Vec<(&Cause, &u64)> = by_cause.iter().filter(|(_, &n)| n > 0).collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A file's causes: "write,truncate".
pub fn file_causes(f: &CopyUpFile) -> String {
    f.causes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Adds `from` into `into`.
pub fn add_causes(into: &mut BTreeMap<Cause, u64>, from: &BTreeMap<Cause, u64>) {
    for (&c, &n) in from {
        let v = into.entry(c).or_default();
        *v = v.saturating_add(n);
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Latency {
    pub min: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// One copied-up path (aggregated over the trace).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CopyUpFile {
    /// Host of a merged multi-host report (absent: the report's `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub mountpoint: Option<String>,
    pub dev: String,
    /// Relative to the overlay root, no leading slash. Invalid UTF-8 is
    /// replaced by U+FFFD here; the exact bytes are then in `path_b64`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    /// The kernel stopped walking the path (too deep or too long).
    pub path_truncated: bool,
    /// Container id, or null for overlays that are no container's.
    pub container: Option<String>,
    /// The lower layer the file was copied up from (null when no lower layer
    /// holds it any more, or the mount is unknown).
    pub layer: Option<SourceLayer>,
    pub kind: String,
    pub bytes: u64,
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub latency_ns: Latency,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    /// Why it was copied up: every cause seen for it (`write`, `truncate`,
    /// `metadata`, `link`, `rename`, `parent`, `unknown`).
    #[serde(default)]
    pub causes: Vec<Cause>,
    /// Some copy-up of this file was made from outside the container, from
    /// the host's mount namespace: the runtime setting the container up (or a
    /// host process), not the container's own processes.
    #[serde(default)]
    pub outside: bool,
}

/// Copy-ups attributed to one source layer. The same image layer used by
/// several containers is one entry (keyed by diff-id); layers without a
/// diff-id (non-container overlays) are keyed by mount and index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerCost {
    pub diff_id: Option<String>,
    pub created_by: Option<String>,
    /// For layers without a diff-id: the mount and overlay index.
    pub dev: Option<String>,
    /// Host of a merged multi-host report (absent: the report's `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub index: Option<usize>,
    /// Containers whose copy-ups came from this layer.
    pub containers: Vec<String>,
    pub copy_up: CopyUpTotals,
}

impl LayerCost {
    /// Short name of the layer, as the hot spots name it: a container's
    /// layer by [`view::layer_label`] ("2/5 ab12cd34ef56", "init layer of
    /// NAME"; a shared layer numbered differently in its images by its
    /// short diff-id alone); a plain overlay's as its lower directory;
    /// otherwise "DEV lower N" (a layer of an overlay no container was known
    /// for: [`layer_rows`] shows those on one line).
    pub fn label(&self, r: &Report) -> String {
        if let Some(d) = &self.diff_id {
            return self.label_by_diff_id(r, d);
        }
        let (Some(dev), Some(i)) = (&self.dev, self.index) else {
            return "?".into();
        };
        let host = match (&self.host, !r.hosts.is_empty()) {
            (Some(h), true) => format!("{h} "),
            _ => String::new(),
        };
        let in_container = self.containers.iter().find_map(|id| {
            let c = r.containers.iter().find(|c| &c.id == id)?;
            let name = c.display_name().to_string();
            Some((c, name, c.layers.iter().find(|l| l.index == i)))
        });
        if let Some((c, name, layer)) = in_container {
            return match layer {
                Some(l) if l.init => format!("{host}init layer of {name}"),
                Some(l) if l.diff_id.is_some() => format!("{host}{}", view::layer_label(c, l)),
                Some(l) if l.number.is_some() => {
                    format!("{host}{} of {name}", view::layer_label(c, l))
                }
                _ => format!("{host}lower {i} of {name}"),
            };
        }
        if let Some(m) = self.plain_mount(r) {
            if let Some(dir) = i.checked_sub(1).and_then(|k| m.lowerdirs.get(k)) {
                return format!("{host}{dir}");
            }
        }
        format!("{host}{dev} lower {i}")
    }

    /// An image layer by diff-id: numbered as in its containers when they
    /// all agree, else its short diff-id.
    fn label_by_diff_id(&self, r: &Report, d: &str) -> String {
        let labels: std::collections::BTreeSet<String> = self
            .containers
            .iter()
            .filter_map(|id| {
                let c = r.containers.iter().find(|c| &c.id == id)?;
                let l = c.layers.iter().find(|l| l.diff_id.as_deref() == Some(d))?;
                l.number.map(|_| view::layer_label(c, l))
            })
            .collect();
        match (labels.len(), labels.first()) {
            (1, Some(one)) => one.clone(),
            _ => view::short_digest(d),
        }
    }

    /// The overlay of no container this layer belongs to, when the report
    /// knows it as such.
    fn plain_mount<'a>(&self, r: &'a Report) -> Option<&'a Mount> {
        if !self.containers.is_empty() || self.diff_id.is_some() {
            return None;
        }
        let dev = self.dev.as_deref()?;
        r.mounts.iter().find(|m| {
            m.dev == dev
                && m.host == self.host
                && m.mountpoint.is_some()
                && !r.containers.iter().any(|c| {
                    c.dev == m.dev
                        && c.host == m.host
                        && Some(&c.mountpoint) == m.mountpoint.as_ref()
                })
        })
    }

    /// Copy-ups from a layer of an overlay that was no known container's
    /// and that the report does not know as a plain overlay either (a
    /// runtime setting a container up before it was known, a device number
    /// reused, a mount gone before it could be looked up).
    pub fn unattributed(&self, r: &Report) -> bool {
        self.diff_id.is_none() && self.containers.is_empty() && self.plain_mount(r).is_none()
    }
}

/// One line of a human report's source-layer table.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRow {
    /// [`LayerCost::label`], or "not attributed".
    pub label: String,
    pub diff_id: Option<String>,
    pub created_by: Option<String>,
    /// Why the copy-ups on this line have no layer to name (the line of
    /// unattributed copy-ups only).
    pub reason: Option<String>,
    /// Containers whose copy-ups came from the layer (none for an overlay
    /// of no container).
    pub containers: usize,
    pub copy_up: CopyUpTotals,
}

/// The report's layers as the human outputs list them, by total copy-up
/// time: every layer that can be named, then the copy-ups of layers that
/// cannot (overlays no container was known for) summed on one line that
/// says why.
pub fn layer_rows(r: &Report) -> Vec<LayerRow> {
    let (lost, named): (Vec<&LayerCost>, Vec<&LayerCost>) =
        r.layers.iter().partition(|l| l.unattributed(r));
    let mut rows: Vec<LayerRow> = named
        .into_iter()
        .map(|l| LayerRow {
            label: l.label(r),
            diff_id: l.diff_id.clone(),
            created_by: l.created_by.clone(),
            reason: None,
            containers: l.containers.len(),
            copy_up: l.copy_up.clone(),
        })
        .collect();
    rows.sort_by_key(|l| std::cmp::Reverse(l.copy_up.total_ns));
    if !lost.is_empty() {
        let copy_up = merge::sum_totals(lost.iter().map(|l| &l.copy_up)).unwrap_or_else(|| {
            let sum = |f: fn(&CopyUpTotals) -> u64| {
                lost.iter()
                    .fold(0u64, |a, l| a.saturating_add(f(&l.copy_up)))
            };
            CopyUpTotals {
                count: sum(|t| t.count),
                bytes: sum(|t| t.bytes),
                total_ns: sum(|t| t.total_ns),
                errors: sum(|t| t.errors),
                by_cause: {
                    let mut m = BTreeMap::new();
                    for l in &lost {
                        add_causes(&mut m, &l.copy_up.by_cause);
                    }
                    m
                },
                ..Default::default()
            }
        });
        let mut devs: Vec<String> = lost
            .iter()
            .filter_map(|l| {
                let dev = l.dev.as_deref()?;
                Some(match (&l.host, r.hosts.is_empty()) {
                    (Some(h), false) => format!("{dev} on {h}"),
                    _ => dev.to_string(),
                })
            })
            .collect();
        devs.sort();
        devs.dedup();
        let overlays = match devs.len() {
            0 => "an overlay".to_string(),
            1 => format!("overlay {}", devs[0]),
            2..=3 => format!("overlays {}", devs.join(", ")),
            n => format!("{n} overlays"),
        };
        rows.push(LayerRow {
            label: "not attributed".into(),
            diff_id: None,
            created_by: None,
            reason: Some(format!(
                "(no container known for {overlays} at copy-up time)"
            )),
            containers: 0,
            copy_up,
        });
    }
    rows
}

/// A suggestion backed by measurements.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Advice {
    /// "volume" (move a write-heavy directory or file out of the image),
    /// "build" (do at build time what containers do at start: metadata
    /// changes, package managers and build tools), "layer" (restructure a
    /// layer every container of an image copies up from) or "flatten"
    /// (fewer layers for faster lookups).
    pub kind: String,
    /// Container id the advice is about (null: an overlay of no container).
    pub container: Option<String>,
    /// The directory (volume) or image (flatten) concerned.
    pub target: String,
    pub message: String,
    /// The figures behind the advice, by name.
    pub numbers: std::collections::BTreeMap<String, u64>,
    /// The cause of the copy-ups the advice is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// The source layer of those files: its diff-id, or "lower N of ...".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// That layer's instruction (`created_by`), whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// The containers concerned (names, else short ids), when several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
}

/// Lookups of one overlay mount, from the in-kernel log2 histogram.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lookups {
    /// Host of a merged multi-host report (absent: the report's `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub mountpoint: Option<String>,
    pub dev: String,
    /// Container id whose overlay this is, if any.
    pub container: Option<String>,
    /// Number of lower layers of the mount.
    pub layers: usize,
    pub count: u64,
    pub found: u64,
    pub not_found: u64,
    pub errors: u64,
    /// Sum of the lookup latencies (so that merged means stay exact).
    #[serde(default)]
    pub total_ns: u64,
    /// `mean` is exact; the percentiles and `max` are the upper bounds of
    /// the log2 buckets that hold them.
    pub latency_ns: LookupLatency,
    /// Non-empty buckets: `count` lookups took less than `le_ns` (and at
    /// least half of it).
    pub histogram: Vec<Bucket>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct LookupLatency {
    pub mean: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// Events that were lost, by cause. `total` is their sum.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Drops {
    pub total: u64,
    /// Copy-up events lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Copy-ups whose return the kernel did not report (kretprobe instances
    /// exhausted).
    pub lost_returns: u64,
    /// Operations not timed: their per-thread slot was taken by another
    /// thread (thread ids that share their low bits, at the same moment).
    pub inflight_full: u64,
    /// Records user space could not decode.
    pub decode_errors: u64,
}

impl Drops {
    pub fn with_total(mut self) -> Self {
        self.total = self
            .ringbuf_full
            .saturating_add(self.lost_returns)
            .saturating_add(self.inflight_full)
            .saturating_add(self.decode_errors);
        self
    }
}

/// Raw kernel counters, for cross-checking.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Counters {
    pub copy_up_entries: u64,
    pub copy_up_exits: u64,
    pub data_copies: u64,
    pub lookup_entries: u64,
    pub lookup_exits: u64,
    /// Operations skipped in the kernel (`--container`).
    pub filtered: u64,
    /// Copy-ups received but not counted: they matched no filter, or fell
    /// outside `run -- CMD`'s window.
    #[serde(default)]
    pub filtered_user: u64,
    pub events_received: u64,
    /// Files dropped from the hot-spot table to keep memory bounded.
    pub evicted_files: u64,
    /// Copy-ups on overlays that are not a known container's.
    pub unattributed: u64,
}

/// Kernel dev_t encoding (major << 20 | minor) to "major:minor".
pub fn dev_string(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xf_ffff)
}

pub fn totals(g: &GroupAgg) -> CopyUpTotals {
    CopyUpTotals {
        count: g.count,
        bytes: g.bytes,
        total_ns: g.total_ns,
        errors: g.errors,
        latency_ns: Hist::from_hdr(&g.latency),
        data_copy_ns: Hist::from_hdr(&g.data_time),
        size_bytes: Hist::from_hdr(&g.size),
        by_cause: cause_map(&g.by_cause),
        by_kind: kind_map(&g.by_kind),
    }
}

/// Per-kind counts as a map without the zeros.
pub fn kind_map(counts: &[u64; 4]) -> BTreeMap<String, u64> {
    use crate::bpf::event::FileKind;
    [
        FileKind::Regular,
        FileKind::Dir,
        FileKind::Symlink,
        FileKind::Other,
    ]
    .into_iter()
    .filter(|&k| counts[k as usize] > 0)
    .map(|k| (k.as_str().to_string(), counts[k as usize]))
    .collect()
}

/// Path bytes as JSON fields: lossy text plus the exact bytes when needed.
///
/// How file names reach the JSON report (names are chosen by containers and
/// are bytes, not text):
/// - `path` is always a valid JSON string: the path decoded as UTF-8, each
///   invalid byte sequence replaced by U+FFFD. Control characters (newline,
///   ESC, ...) stay in it, escaped the JSON way (`\n`, `\u001b`).
/// - `path_b64` is present only when the path is not valid UTF-8: the exact
///   bytes, in standard base64 (RFC 4648 alphabet, with `=` padding).
/// - The exact bytes are therefore: base64-decode `path_b64` when present,
///   otherwise UTF-8-encode `path`.
pub fn path_fields(path: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(path) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(path).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(path)),
        ),
    }
}

pub fn lookups_from_stats(s: &LookupStats) -> (u64, LookupLatency, Vec<Bucket>) {
    let count = s.found + s.not_found + s.errors;
    let histogram: Vec<Bucket> = s
        .hist
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(i, &c)| Bucket {
            le_ns: if i + 1 >= HIST_SLOTS {
                u64::MAX
            } else {
                1u64 << (i + 1)
            },
            count: c,
        })
        .collect();
    let latency = lookup_latency(s.total_ns, count, &histogram);
    (count, latency, histogram)
}

/// Lookup latency summary from the total time, the count and the log2
/// buckets (ascending `le_ns`): percentiles are bucket upper bounds.
pub fn lookup_latency(total_ns: u64, count: u64, histogram: &[Bucket]) -> LookupLatency {
    let hist_total: u64 = histogram
        .iter()
        .fold(0u64, |a, b| a.saturating_add(b.count));
    let at = |q: f64| -> u64 {
        let rank = ((q * hist_total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for b in histogram {
            seen = seen.saturating_add(b.count);
            if seen >= rank {
                return b.le_ns;
            }
        }
        0
    };
    LookupLatency {
        mean: total_ns.checked_div(count).unwrap_or(0),
        p50: at(0.5),
        p99: at(0.99),
        max: histogram.last().map_or(0, |b| b.le_ns),
    }
}

/// Everything `build` turns into a report.
pub struct Inputs<'a> {
    pub agg: &'a Aggregator,
    pub lookups: &'a [(OverlayKey, LookupStats)],
    /// Every overlay mount known during the trace.
    pub mounts: &'a HashMap<OverlayKey, KnownMount>,
    pub containers: &'a [KnownContainer],
    pub probe: ProbeInfo,
    pub host: String,
    pub kernel: String,
    pub started_unix_ms: u64,
    pub duration_ms: u64,
    pub drops: Drops,
    pub counters: Counters,
    pub warnings: Vec<String>,
    /// Files listed (and layers: N by time plus N by bytes); 0 lists all.
    pub top: usize,
}

pub fn build(inp: Inputs<'_>) -> Report {
    // Layer metadata the resolvers deferred is read now (once: they cache it).
    let known: Vec<KnownContainer> = inp
        .containers
        .iter()
        .map(|k| {
            let mut k = k.clone();
            k.info.complete();
            crate::catalog::number_layers(&mut k.info.layers);
            k
        })
        .collect();
    let inp = Inputs {
        containers: &known,
        ..inp
    };
    let mounts = report_mounts(&inp);
    let containers = report_containers(&inp);
    let copy_ups = report_files(&inp);
    let lookups = report_lookups(&inp);
    let layers = layer_costs(inp.agg, inp.top);
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        tool: Tool {
            name: "ovltrace".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        host: inp.host,
        hosts: Vec::new(),
        kernel: inp.kernel,
        started_unix_ms: inp.started_unix_ms,
        duration_ms: inp.duration_ms,
        probe: inp.probe,
        mounts,
        containers,
        files: FileCounts {
            seen: inp.agg.files_seen,
            kept: inp.agg.files.len() as u64,
            listed: copy_ups.len() as u64,
            evicted: inp.agg.evicted_files,
        },
        hot_spots: HotSpots::rank(&copy_ups, inp.top),
        copy_ups,
        layers,
        lookups,
        advice: Vec::new(),
        drops: inp.drops.with_total(),
        counters: Counters {
            evicted_files: inp.agg.evicted_files,
            events_received: inp.agg.events,
            unattributed: inp.agg.unattributed,
            ..inp.counters
        },
        warnings: inp.warnings,
        // Set by the trace that knows them.
        filters: Filters::default(),
    };
    report.advice = crate::report::advice::advise(inp.agg, &report);
    report
}

/// What was known about an overlay mount (nothing, when it was never seen
/// by a scan).
fn mount_meta(inp: &Inputs<'_>, key: &OverlayKey) -> KnownMount {
    inp.mounts.get(key).cloned().unwrap_or_default()
}

/// Every mount that was known at some point or had activity.
fn report_mounts(inp: &Inputs<'_>) -> Vec<Mount> {
    let per_overlay = inp.agg.per_overlay();
    let mut keys: Vec<OverlayKey> = inp.mounts.keys().copied().collect();
    keys.extend(per_overlay.keys());
    keys.extend(inp.lookups.iter().map(|(k, _)| *k));
    keys.sort_unstable_by_key(|k| (k.dev, k.upper_dev, k.upper_ino));
    keys.dedup();
    keys.iter()
        .map(|key| {
            let m = mount_meta(inp, key);
            Mount {
                host: None,
                mountpoint: m.mountpoint,
                dev: dev_string(key.dev),
                upperdir: m.upperdir,
                lowerdirs: m.lowerdirs,
                container: m.container,
                copy_up: per_overlay.get(key).map(totals).unwrap_or_default(),
            }
        })
        .collect()
}

/// Every container known, most copy-ups first.
fn report_containers(inp: &Inputs<'_>) -> Vec<Container> {
    let per_container = inp.agg.per_container();
    let mut containers: Vec<Container> = inp
        .containers
        .iter()
        .map(|k| {
            let c = &k.info;
            Container {
                id: c.id.clone(),
                host: None,
                name: c.name.clone(),
                pod: c.pod.clone(),
                image: c.image.clone(),
                runtime: c.runtime.to_string(),
                mountpoint: crate::sys::mounts::path_display(&c.mountpoint),
                dev: c.dev.to_string(),
                layers: c.layers.clone(),
                gone: k.gone,
                copy_up: per_container.get(&c.id).map(totals).unwrap_or_default(),
            }
        })
        .collect();
    containers.sort_by(|a, b| {
        b.copy_up
            .count
            .cmp(&a.copy_up.count)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.id.cmp(&b.id))
    });
    containers
}

/// The hot spots: the files the aggregator ranks highest.
fn report_files(inp: &Inputs<'_>) -> Vec<CopyUpFile> {
    let by_id: HashMap<&str, &KnownContainer> = inp
        .containers
        .iter()
        .map(|c| (c.info.id.as_str(), c))
        .collect();
    inp.agg
        .top_files(inp.top)
        .into_iter()
        .map(|(k, f)| copy_up_file(inp, &by_id, k, f))
        .collect()
}

/// One copied-up file, with its container's layer and mount point.
fn copy_up_file(
    inp: &Inputs<'_>,
    by_id: &HashMap<&str, &KnownContainer>,
    k: &FileKey,
    f: &FileAgg,
) -> CopyUpFile {
    let (path, path_b64) = path_fields(&k.path);
    let container = f.attribution.container.as_deref().map(str::to_string);
    let known = container.as_deref().and_then(|id| by_id.get(id));
    let layer = f.attribution.layer.map(|index| {
        let info = known.and_then(|c| c.info.layer(index));
        SourceLayer {
            index,
            diff_id: info.and_then(|l| l.diff_id.clone()),
            created_by: info.and_then(|l| l.created_by.clone()),
            data_index: f.data_layer,
        }
    });
    // A container's own mountpoint: the device may have been another
    // container's mount since.
    let mountpoint = known
        .map(|c| crate::sys::mounts::path_display(&c.info.mountpoint))
        .or_else(|| mount_meta(inp, &k.overlay).mountpoint);
    CopyUpFile {
        host: None,
        mountpoint,
        dev: dev_string(k.overlay.dev),
        path,
        path_b64,
        path_truncated: f.truncated,
        container,
        layer,
        kind: f.kind.as_str().to_string(),
        bytes: f.bytes,
        count: f.count,
        errors: f.errors,
        total_ns: f.total_ns,
        latency_ns: Latency {
            min: f.min_ns,
            p50: f.percentile(50.0),
            p99: f.percentile(99.0),
            max: f.max_ns,
        },
        pids: f.pids.iter().copied().collect(),
        comms: f.comms.iter().map(|c| c.to_string()).collect(),
        outside: f.outside,
        causes: f.causes(),
    }
}

/// Lookup statistics per overlay mount.
fn report_lookups(inp: &Inputs<'_>) -> Vec<Lookups> {
    inp.lookups
        .iter()
        .map(|(key, s)| {
            let (count, latency_ns, histogram) = lookups_from_stats(s);
            let m = mount_meta(inp, key);
            Lookups {
                host: None,
                mountpoint: m.mountpoint,
                dev: dev_string(key.dev),
                container: m.container,
                layers: m.lowerdirs.len(),
                count,
                found: s.found,
                not_found: s.not_found,
                errors: s.errors,
                total_ns: s.total_ns,
                latency_ns,
                histogram,
            }
        })
        .collect()
}

/// Top `n` layers by total copy-up time, plus the top `n` by bytes (all of
/// them when `n` is 0).
fn layer_costs(agg: &Aggregator, n: usize) -> Vec<LayerCost> {
    use crate::aggregate::{limit, select_top, LayerKey};
    let per_layer = agg.per_layer();
    let chosen: Vec<&LayerKey> = select_top(
        per_layer.iter().collect(),
        limit(n),
        |l| l.1.total.total_ns,
        |l| l.1.total.bytes,
        |l| l.0,
    )
    .into_iter()
    .map(|(k, _)| k)
    .collect();
    chosen
        .into_iter()
        .filter_map(|k| {
            let l = per_layer.get(k)?;
            let (diff_id, dev, index) = match k {
                LayerKey::DiffId(d) => (Some(d.clone()), None, None),
                LayerKey::Index { overlay, index } => {
                    (None, Some(dev_string(overlay.dev)), Some(*index))
                }
            };
            Some(LayerCost {
                diff_id,
                created_by: l.created_by.clone(),
                dev,
                host: None,
                index,
                containers: l.containers.iter().cloned().collect(),
                copy_up: totals(&l.total),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{html, terminal};
    use crate::report::fixtures::{empty_report, golden_report};

    #[test]
    fn layer_labels_name_the_init_layers_container() {
        let mut r = empty_report();
        let layer = |index: usize, init: bool| LayerInfo {
            index,
            init,
            ..Default::default()
        };
        r.containers.push(Container {
            id: "c0ffee".repeat(10),
            host: None,
            name: Some("web-1".into()),
            pod: None,
            image: Default::default(),
            runtime: "docker".into(),
            mountpoint: "/m".into(),
            dev: "0:31".into(),
            layers: vec![layer(1, true), layer(2, false)],
            gone: false,
            copy_up: Default::default(),
        });
        let cost = |index: usize, diff_id: Option<&str>| LayerCost {
            diff_id: diff_id.map(str::to_string),
            created_by: None,
            dev: Some("0:31".into()),
            host: None,
            index: Some(index),
            containers: vec!["c0ffee".repeat(10)],
            copy_up: Default::default(),
        };
        assert_eq!(cost(1, None).label(&r), "init layer of web-1");
        assert_eq!(cost(2, None).label(&r), "lower 2 of web-1");
        assert_eq!(
            cost(2, Some("sha256:0123456789abcdef")).label(&r),
            "0123456789ab"
        );
        // Numbered: the same label as the hot spots give the layer.
        let mut numbered = r.clone();
        let c = &mut numbered.containers[0];
        c.layers[1].diff_id = Some("sha256:0123456789abcdef".into());
        crate::catalog::number_layers(&mut c.layers);
        assert_eq!(
            cost(2, Some("sha256:0123456789abcdef")).label(&numbered),
            "1/1 0123456789ab"
        );
        assert_eq!(cost(2, None).label(&numbered), "1/1 0123456789ab");
        // An overlay no container was known for: named by its device, and
        // not attributed.
        let mut lost = cost(1, None);
        lost.containers.clear();
        assert_eq!(lost.label(&r), "0:31 lower 1");
        assert!(lost.unattributed(&r));
        // A plain overlay the report knows: its lower directory.
        let mut plain = cost(2, None);
        plain.containers.clear();
        plain.dev = Some("0:27".into());
        r.mounts.push(Mount {
            host: None,
            mountpoint: Some("/tmp/o/merged".into()),
            dev: "0:27".into(),
            upperdir: Some("/tmp/o/up".into()),
            lowerdirs: vec!["/tmp/o/l1".into(), "/tmp/o/l2".into()],
            container: None,
            copy_up: Default::default(),
        });
        assert_eq!(plain.label(&r), "/tmp/o/l2");
        assert!(!plain.unattributed(&r));
        assert!(!cost(2, None).unattributed(&r));
    }

    #[test]
    fn layers_of_no_known_overlay_are_one_line_with_the_reason() {
        let mut r = golden_report();
        let named = layer_rows(&r);
        assert!(named.iter().all(|l| l.reason.is_none()));
        let lost = |dev: &str, index: usize, count: u64, total_ns: u64| {
            let mut agg = Aggregator::new(16);
            let mut ev = crate::bpf::event::CopyUp {
                start_ns: 0,
                latency_ns: total_ns / count,
                data_ns: None,
                data_len: Some(100),
                size: 100,
                tgid: 1,
                tid: 1,
                overlay: OverlayKey::dev_only(0),
                ret: 0,
                kind: crate::bpf::event::FileKind::Regular,
                path: b"x".to_vec(),
                path_truncated: false,
                comm: "runc".into(),
                mnt_ns: 0,
                source: None,
                cause: Default::default(),
            };
            for _ in 0..count {
                agg.add(&ev, &Default::default(), None);
                ev.path.push(b'x');
            }
            LayerCost {
                diff_id: None,
                created_by: None,
                dev: Some(dev.into()),
                host: None,
                index: Some(index),
                containers: vec![],
                copy_up: totals(&agg.per_overlay()[&OverlayKey::dev_only(0)]),
            }
        };
        r.layers.push(lost("0:31", 5, 3, 3_000));
        r.layers.push(lost("0:31", 4, 1, 500));
        r.layers.push(lost("0:44", 2, 2, 2_000));
        let rows = layer_rows(&r);
        assert_eq!(rows.len(), named.len() + 1);
        assert_eq!(&rows[..named.len()], &named[..]);
        let last = rows.last().unwrap();
        assert_eq!(last.label, "not attributed");
        assert_eq!(
            last.reason.as_deref(),
            Some("(no container known for overlays 0:31, 0:44 at copy-up time)")
        );
        assert_eq!((last.copy_up.count, last.copy_up.bytes), (6, 600));
        assert_eq!(last.copy_up.latency_ns.count, 6);
        assert_eq!(last.containers, 0);
        let text = terminal::render(&r);
        assert!(!text.contains("0:31 lower"), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with(" not attributed")
                && l.contains("(no container known for overlays 0:31, 0:44 at copy-up time)")),
            "{text}"
        );
        let page = html::render(&r);
        assert!(!page.contains("0:31 lower"));
        assert!(page.contains("no container known for overlays 0:31, 0:44"));
    }

    #[test]
    fn top_zero_lists_every_kept_file_and_says_how_many() {
        let mut agg = Aggregator::new(16);
        for i in 0..40u64 {
            let ev = crate::bpf::event::CopyUp {
                start_ns: 0,
                latency_ns: 1000 + i,
                data_ns: None,
                data_len: Some(i),
                size: i,
                tgid: 1,
                tid: 1,
                overlay: OverlayKey::dev_only(7),
                ret: 0,
                kind: crate::bpf::event::FileKind::Regular,
                path: format!("f{i}").into_bytes(),
                path_truncated: false,
                comm: "sh".into(),
                mnt_ns: 0,
                source: None,
                cause: Default::default(),
            };
            agg.add(&ev, &Default::default(), None);
        }
        let report = |top: usize| {
            build(Inputs {
                agg: &agg,
                top,
                ..crate::report::fixtures::empty_inputs()
            })
        };
        let all = report(0);
        assert!(agg.evicted_files > 0);
        assert_eq!(all.copy_ups.len(), agg.files.len());
        assert_eq!(
            all.files,
            FileCounts {
                seen: 40,
                kept: agg.files.len() as u64,
                listed: agg.files.len() as u64,
                evicted: agg.evicted_files,
            }
        );
        assert_eq!(all.files.seen, all.files.kept + all.files.evicted);
        let top = report(3);
        // 3 by time plus the 3 by bytes (the same files here).
        assert_eq!(top.files.listed, 3);
        assert_eq!(top.copy_ups.len(), 3);
        assert_eq!(
            (top.files.seen, top.files.kept),
            (all.files.seen, all.files.kept)
        );
        let text = terminal::render(&top);
        assert!(
            text.contains(&format!(
                "3 of 40 copied-up files listed (--top 0 lists all {} the tracer kept)",
                all.files.kept
            )),
            "{text}"
        );
        assert!(!terminal::render(&all).contains("files listed"));
        // The JSON carries the counts.
        let v: serde_json::Value = serde_json::from_str(&json::to_string(&top).unwrap()).unwrap();
        assert_eq!(v["schema_version"], 3);
        assert_eq!(v["files"]["seen"], 40);
        assert_eq!(v["files"]["listed"], 3);
        assert_eq!(v["files"]["evicted"], agg.evicted_files);
        // `report --top 0` of a cut report keeps what it has; a cut recounts.
        let mut again = all.clone();
        merge::cut(&mut again, 0);
        assert_eq!(again.copy_ups.len(), all.copy_ups.len());
        merge::cut(&mut again, 2);
        assert_eq!(again.files.listed, 2);
    }

    /// Files whose order by time is not their order by bytes.
    fn two_orders(top: usize) -> Report {
        let mut agg = Aggregator::new(64);
        // (path, latency, bytes): by time a, b, c, d, e; by bytes e, d, c, b, a.
        for (i, path) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            let i = i as u64;
            let ev = crate::bpf::event::CopyUp {
                start_ns: 0,
                latency_ns: 50_000 - 10_000 * i,
                data_ns: None,
                data_len: Some(1000 * (i + 1)),
                size: 1000 * (i + 1),
                tgid: 1,
                tid: 1,
                overlay: OverlayKey::dev_only(7),
                ret: 0,
                kind: crate::bpf::event::FileKind::Regular,
                path: path.as_bytes().to_vec(),
                path_truncated: false,
                comm: "sh".into(),
                mnt_ns: 0,
                source: None,
                cause: Default::default(),
            };
            agg.add(&ev, &Default::default(), None);
        }
        let agg: &'static Aggregator = Box::leak(Box::new(agg));
        build(Inputs {
            agg,
            top,
            ..crate::report::fixtures::empty_inputs()
        })
    }

    #[test]
    fn two_hot_spot_tables_each_top_rows_by_their_own_key() {
        let r = two_orders(2);
        let paths = |table: &[usize]| -> Vec<String> {
            r.hot_spot_rows(table)
                .iter()
                .map(|f| f.path.clone())
                .collect()
        };
        // Listed once each: 2 by time plus 2 by bytes.
        assert_eq!(r.copy_ups.len(), 4);
        assert_eq!(paths(&r.hot_spots.by_time), ["a", "b"]);
        assert_eq!(paths(&r.hot_spots.by_bytes), ["e", "d"]);
        // The terminal: each table exactly --top rows, in its own order.
        let text = terminal::render(&r);
        let table = |heading: &str| -> Vec<String> {
            text.split(heading)
                .nth(1)
                .unwrap_or_else(|| panic!("no {heading:?} in {text}"))
                .lines()
                .skip(2)
                .take_while(|l| !l.trim().is_empty())
                .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(
            table("HOT SPOTS, by total copy-up time"),
            ["<gone>/a", "<gone>/b"],
            "{text}"
        );
        assert_eq!(
            table("HOT SPOTS, by bytes copied"),
            ["<gone>/e", "<gone>/d"],
            "{text}"
        );
        // The JSON: the two tables as indices into copy_ups.
        let v: serde_json::Value = serde_json::from_str(&json::to_string(&r).unwrap()).unwrap();
        assert_eq!(v["hot_spots"]["top"], 2);
        let named = |key: &str| -> Vec<String> {
            v["hot_spots"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    v["copy_ups"][i.as_u64().unwrap() as usize]["path"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(named("by_time"), ["a", "b"]);
        assert_eq!(named("by_bytes"), ["e", "d"]);
        // The HTML: two tables, in the same orders.
        let page = html::render(&r);
        let by_time = page.find("<h3>By total copy-up time</h3>").unwrap();
        let by_bytes = page.find("<h3>By bytes copied</h3>").unwrap();
        let at = |p: &str, from: usize| page[from..].find(p).map(|i| i + from).unwrap();
        assert!(at("&lt;gone&gt;/a", by_time) < at("&lt;gone&gt;/b", by_time));
        assert!(at("&lt;gone&gt;/e", by_bytes) < at("&lt;gone&gt;/d", by_bytes));
        assert!(at("&lt;gone&gt;/d", by_bytes) < page.find("id=\"layers\"").unwrap());
        // A cut re-ranks; --top 0 ranks every listed file.
        let mut cut = two_orders(0);
        assert_eq!(cut.hot_spots.by_bytes.len(), 5);
        merge::cut(&mut cut, 1);
        assert_eq!(cut.copy_ups.len(), 2);
        let first = |t: &[usize]| cut.copy_ups[t[0]].path.clone();
        assert_eq!(cut.hot_spots.by_time.len(), 1);
        assert_eq!(cut.hot_spots.by_bytes.len(), 1);
        assert_eq!(
            (
                first(&cut.hot_spots.by_time),
                first(&cut.hot_spots.by_bytes)
            ),
            ("a".into(), "e".into())
        );
    }

    #[test]
    fn schema_2_reports_get_layer_numbers_and_tables() {
        let r = golden_report();
        let mut v = serde_json::to_value(&r).unwrap();
        v["schema_version"] = 2.into();
        let o = v.as_object_mut().unwrap();
        o.remove("hot_spots");
        for c in v["containers"].as_array_mut().unwrap() {
            for l in c["layers"].as_array_mut().unwrap() {
                l.as_object_mut().unwrap().remove("number");
            }
        }
        let back = json::parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(back.schema_version, 3);
        let numbers: Vec<Option<usize>> =
            back.containers[0].layers.iter().map(|l| l.number).collect();
        assert_eq!(numbers, [None, Some(1), Some(2)]);
        assert_eq!(back.hot_spots.top, 0);
        assert_eq!(back.hot_spots.by_time.len(), r.copy_ups.len());
        assert_eq!(back.containers, r.containers);
        // Hostile indices in a schema 3 file are ranked again, not trusted.
        let mut v = serde_json::to_value(&r).unwrap();
        v["hot_spots"]["by_time"] = serde_json::json!([99, 0, 0]);
        let back = json::parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(back.hot_spots, r.hot_spots);
    }

    #[test]
    fn schema_1_reports_are_read_with_lower_bounds_of_the_file_counts() {
        let mut r = golden_report();
        r.counters.evicted_files = 5;
        let mut v = serde_json::to_value(&r).unwrap();
        v["schema_version"] = 1.into();
        v.as_object_mut().unwrap().remove("files");
        let back = json::parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(back.schema_version, SCHEMA_VERSION);
        assert_eq!(
            back.files,
            FileCounts {
                seen: 5 + 5,
                kept: 5,
                listed: 5,
                evicted: 5
            }
        );
    }

    #[test]
    fn dev_strings() {
        assert_eq!(dev_string((8 << 20) | 1), "8:1");
        assert_eq!(dev_string(42), "0:42");
    }

    #[test]
    fn non_utf8_paths_round_trip() {
        assert_eq!(path_fields(b"a/b"), ("a/b".to_string(), None));
        let (text, b64) = path_fields(b"x\xff");
        assert_eq!(text, "x\u{fffd}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.unwrap())
            .unwrap();
        assert_eq!(bytes, b"x\xff");
    }

    #[test]
    fn lookup_histogram_summary() {
        let mut s = LookupStats::ZERO;
        s.found = 90;
        s.not_found = 10;
        s.total_ns = 100 * 1500;
        s.hist[10] = 60; // [1024, 2048)
        s.hist[11] = 39; // [2048, 4096)
        s.hist[20] = 1; // [1 Mi, 2 Mi)
        let (count, lat, hist) = lookups_from_stats(&s);
        assert_eq!(count, 100);
        assert_eq!(lat.mean, 1500);
        assert_eq!(lat.p50, 2048);
        assert_eq!(lat.p99, 4096);
        assert_eq!(lat.max, 2 << 20);
        assert_eq!(hist.len(), 3);
        assert_eq!(
            hist[0],
            Bucket {
                le_ns: 2048,
                count: 60
            }
        );
        let (count, lat, hist) = lookups_from_stats(&LookupStats::ZERO);
        assert_eq!((count, lat, hist.len()), (0, LookupLatency::default(), 0));
    }

    #[test]
    fn drops_total_is_the_sum() {
        let d = Drops {
            ringbuf_full: 3,
            lost_returns: 2,
            inflight_full: 1,
            decode_errors: 4,
            ..Default::default()
        }
        .with_total();
        assert_eq!(d.total, 10);
    }
}
