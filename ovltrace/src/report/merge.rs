//! Merging saved reports (`ovltrace report a.json b.json`): several traces,
//! from one host or many, as one report.
//!
//! The aim is that the merge of the reports of some event streams equals the
//! report built from all their events. What that takes, field by field:
//!
//! - **Counts, bytes, errors, total times, drops and counters** add.
//! - **HDR histograms** (`latency_ns`, `data_copy_ns`, `size_bytes` of every
//!   [`CopyUpTotals`]) are decoded from their serialized form (`hdr`), added
//!   and summarised again, so the percentiles of a merge are those of the
//!   combined samples, not an average of percentiles. A histogram that has
//!   samples but no `hdr` cannot be merged and is an error.
//! - **Lookup histograms** (log2 buckets) add bucket by bucket; the mean
//!   comes from the summed `total_ns` (from `mean × count` for reports
//!   written before `total_ns` existed).
//! - **Identity.** Device numbers repeat across hosts, so mounts and lookups
//!   are keyed by (host, dev), files by (host, dev, path bytes, container)
//!   (a device number is reused once its overlay is gone), and layers
//!   without a diff-id by (host, dev, index). Containers are keyed by their
//!   id, and layers with a diff-id by the diff-id alone: the same image layer
//!   on two hosts is one layer. In a report of one host every item's `host`
//!   is left out (the report's `host` applies); a report spanning several
//!   sets it on every mount, container, file, lookup and per-mount layer, and
//!   lists them all in `hosts`.
//! - **Time**: the merge starts at the earliest start and lasts until the
//!   latest end.
//! - **Descriptive fields** (mount point, image, layer stack, source layer,
//!   instruction) come from the first input that has them. A container is
//!   `gone` if any input saw its overlay go.
//!
//! Limits, where a report does not carry enough to be exact:
//! - `copy_ups` and `layers` are top-N lists. The merge is exact when no
//!   input's list was truncated (fewer files than its `--top`); otherwise a
//!   file that was just below the cut on every host may be missing, and the
//!   totals of one that made the cut only somewhere are too low. Without
//!   `top`, the merge keeps the union of the lists; with `top` it cuts the
//!   same way `build` does (N files by total time; N layers by time plus N
//!   by bytes).
//! - A file's `p50`/`p99` are exact when one input has the file; when
//!   several do, they are the largest of the inputs' values, an upper bound
//!   of the true percentile (which lies between the smallest and the
//!   largest). `pids` and `comms` are unions cut to the aggregator's bounds.
//! - `advice` is not recomputed (volume advice needs the full file table):
//!   the inputs' advice is kept, duplicates removed. So are `warnings`. In a
//!   multi-host merge, warnings and advice of no container are prefixed
//!   with their host.
//!
//! Merging is associative and, up to the order of advice and warnings,
//! commutative.

use std::collections::{btree_map::Entry, BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;
use hdrhistogram::Histogram;

use super::{
    lookup_latency, Advice, Bucket, Container, CopyUpFile, CopyUpTotals, Counters, Drops,
    FileCounts, Hist, HotSpots, Latency, LayerCost, Lookups, Mount, ProbeInfo, Report, Tool,
    OLDEST_SCHEMA_READ, SCHEMA_VERSION,
};
use crate::{
    aggregate::{limit, select_top, GroupAgg},
    bpf::event::{Cause, FileKind},
};

/// Bounds the aggregator applies to a file's pids and comms, and to a layer's
/// containers.
const MAX_PIDS: usize = 16;
const MAX_COMMS: usize = 8;
const MAX_CONTAINERS_PER_LAYER: usize = 64;
/// Beyond this many hosts the top-level `host` says "N hosts".
const MAX_HOSTS_NAMED: usize = 4;

/// A merge failure, naming the input (0-based index into the slice given to
/// [`merge`]) and what in it is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct MergeError {
    pub input: usize,
    pub reason: String,
}

/// Checks what a report read from a file must satisfy before anything uses
/// it: the schema version this binary understands. (Histograms are checked
/// when they are merged.)
pub fn check_schema(r: &Report) -> Result<()> {
    if r.schema_version != SCHEMA_VERSION {
        bail!(
            "unsupported schema_version {} (this ovltrace reads {})",
            r.schema_version,
            schemas_read()
        );
    }
    Ok(())
}

/// The schema versions `ovltrace report` reads, for messages.
pub fn schemas_read() -> String {
    let v: Vec<String> = (OLDEST_SCHEMA_READ..=SCHEMA_VERSION)
        .map(|v| v.to_string())
        .collect();
    match v.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => v.join(""),
    }
}

/// A report of an older schema this binary reads, brought to the current
/// one (fields it did not have get what can be known of them).
///
/// - 1: `files` becomes lower bounds of the counts it did not record.
/// - 1 and 2: the containers' layers are numbered
///   ([`crate::catalog::number_layers`]); the kinds of copy-ups (`by_kind`)
///   stay unknown.
/// - Every schema: the hot-spot tables are ranked again from `copy_ups`
///   (before schema 3, every listed file; then the `top` they were cut to),
///   so they never point outside the list.
pub fn upgrade(r: &mut Report) {
    if r.schema_version == 1 {
        r.files = FileCounts::from_schema_1(r);
        r.schema_version = 2;
    }
    if r.schema_version == 2 {
        r.containers
            .iter_mut()
            .for_each(|c| crate::catalog::number_layers(&mut c.layers));
        r.hot_spots = HotSpots::default();
        r.schema_version = SCHEMA_VERSION;
    }
    r.hot_spots = HotSpots::rank(&r.copy_ups, r.hot_spots.top);
}

/// Merges `reports` into one (see the module documentation for what that
/// means). `top`: cut the hot-spot and layer lists as `build` does; `None`
/// keeps their union.
pub fn merge(reports: &[Report], top: Option<usize>) -> Result<Report, MergeError> {
    let Some(first) = reports.first() else {
        return Err(MergeError {
            input: 0,
            reason: "nothing to merge".into(),
        });
    };
    for (i, r) in reports.iter().enumerate() {
        check_schema(r).map_err(|e| MergeError {
            input: i,
            reason: e.to_string(),
        })?;
    }
    let hosts: Vec<String> = reports
        .iter()
        .flat_map(hosts_of)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let multi = hosts.len() > 1;
    let mut m = Merger::default();
    for (i, r) in reports.iter().enumerate() {
        m.add(r, multi).map_err(|e| MergeError {
            input: i,
            reason: format!("{e:#}"),
        })?;
    }
    let mut out = m.into_report(header(reports, first, hosts));
    if reports.windows(2).any(|w| w[0].filters != w[1].filters) {
        out.warnings.push(
            "the merged reports were traced with different filters; \
             the merged report names the first one's"
                .into(),
        );
    }
    finish(&mut out, top, multi);
    Ok(out)
}

/// What a merged report says of itself: tool, hosts, kernels, probes and
/// the time from the earliest start to the latest end.
fn header(reports: &[Report], first: &Report, hosts: Vec<String>) -> Report {
    let started = reports
        .iter()
        .map(|r| r.started_unix_ms)
        .min()
        .unwrap_or(first.started_unix_ms);
    let end = reports
        .iter()
        .map(|r| r.started_unix_ms.saturating_add(r.duration_ms))
        .max()
        .unwrap_or(started);
    let host = match hosts.len() {
        0 => first.host.clone(),
        1..=MAX_HOSTS_NAMED => hosts.join(", "),
        n => format!("{n} hosts"),
    };
    let data_copy = joined(reports.iter().filter_map(|r| r.probe.data_copy.as_deref()));
    Report {
        schema_version: SCHEMA_VERSION,
        tool: Tool {
            name: "ovltrace".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        host,
        hosts: if hosts.len() > 1 { hosts } else { Vec::new() },
        kernel: joined(reports.iter().map(|r| r.kernel.as_str())),
        started_unix_ms: started,
        duration_ms: end - started,
        probe: ProbeInfo {
            strategy: joined(reports.iter().map(|r| r.probe.strategy.as_str())),
            data_copy: (!data_copy.is_empty()).then_some(data_copy),
        },
        filters: merged_filters(reports),
        ..Report::default()
    }
}

/// Orders and cuts a merged report as `build` does a trace's.
fn finish(out: &mut Report, top: Option<usize>, multi: bool) {
    out.containers.sort_by(|a, b| {
        b.copy_up
            .count
            .cmp(&a.copy_up.count)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.id.cmp(&b.id))
    });
    out.copy_ups = select_files(std::mem::take(&mut out.copy_ups), top.and_then(limit));
    out.layers = select_layers(std::mem::take(&mut out.layers), top.and_then(limit));
    out.files.listed = out.copy_ups.len() as u64;
    out.hot_spots = HotSpots::rank(&out.copy_ups, top.unwrap_or(0));
    if !multi {
        clear_hosts(out);
    }
}

impl Merger {
    /// The merged sections, under `header`.
    fn into_report(self, header: Report) -> Report {
        Report {
            mounts: self
                .mounts
                .into_values()
                .map(|(mnt, acc)| Mount {
                    copy_up: super::totals(&acc),
                    ..mnt
                })
                .collect(),
            containers: self
                .containers
                .into_values()
                .map(|(c, acc)| Container {
                    copy_up: super::totals(&acc),
                    ..c
                })
                .collect(),
            copy_ups: self.files.into_values().collect(),
            hot_spots: HotSpots::default(),
            files: self.file_counts,
            layers: self
                .layers
                .into_values()
                .map(|(l, acc)| LayerCost {
                    copy_up: super::totals(&acc),
                    ..l
                })
                .collect(),
            lookups: self.lookups.into_values().map(LookupAcc::finish).collect(),
            advice: self.advice,
            drops: self.drops.with_total(),
            counters: self.counters,
            warnings: self.warnings,
            ..header
        }
    }
}

/// The filters of the merged reports: the first one's (they should agree).
fn merged_filters(reports: &[Report]) -> super::Filters {
    reports
        .first()
        .map(|r| r.filters.clone())
        .unwrap_or_default()
}

/// Applies `--top` to a single report the way [`merge`] does (0: no cut).
pub fn cut(r: &mut Report, top: usize) {
    r.copy_ups = select_files(std::mem::take(&mut r.copy_ups), limit(top));
    r.layers = select_layers(std::mem::take(&mut r.layers), limit(top));
    r.files.listed = r.copy_ups.len() as u64;
    r.hot_spots = HotSpots::rank(&r.copy_ups, top);
}

/// The hosts a report covers.
fn hosts_of(r: &Report) -> Vec<String> {
    if r.hosts.is_empty() {
        vec![r.host.clone()]
    } else {
        r.hosts.clone()
    }
}

/// Distinct values (each possibly a ", "-joined list already), sorted and
/// joined with ", ".
fn joined<'a>(values: impl Iterator<Item = &'a str>) -> String {
    values
        .flat_map(|v| v.split(", "))
        .filter(|v| !v.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ")
}

fn clear_hosts(r: &mut Report) {
    r.mounts.iter_mut().for_each(|x| x.host = None);
    r.containers.iter_mut().for_each(|x| x.host = None);
    r.copy_ups.iter_mut().for_each(|x| x.host = None);
    r.layers.iter_mut().for_each(|x| x.host = None);
    r.lookups.iter_mut().for_each(|x| x.host = None);
}

/// "major:minor" sorts as the kernel's dev_t does; anything else after.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum DevKey {
    Num(u64, u64),
    Text(String),
}

fn dev_key(dev: &str) -> DevKey {
    dev.split_once(':')
        .and_then(|(a, b)| Some(DevKey::Num(a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or_else(|| DevKey::Text(dev.to_string()))
}

/// The exact bytes of a file's path (`path_b64` when present and valid).
fn path_bytes(f: &CopyUpFile) -> Vec<u8> {
    f.path_b64
        .as_deref()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_else(|| f.path.as_bytes().to_vec())
}

/// Device, path, host and container: a device number can be reused by
/// another container's overlay once the first is unmounted.
type FileKey = (DevKey, Vec<u8>, Option<String>, Option<String>);

fn file_key(f: &CopyUpFile) -> FileKey {
    (
        dev_key(&f.dev),
        path_bytes(f),
        f.host.clone(),
        f.container.clone(),
    )
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LayerKey {
    DiffId(String),
    Index(DevKey, usize, Option<String>),
}

fn layer_key(l: &LayerCost) -> LayerKey {
    match (&l.diff_id, &l.dev) {
        (Some(d), _) => LayerKey::DiffId(d.clone()),
        (None, dev) => LayerKey::Index(
            dev_key(dev.as_deref().unwrap_or("")),
            l.index.unwrap_or(0),
            l.host.clone(),
        ),
    }
}

/// The top `n` layers by total time plus the top `n` by bytes (all, by
/// time, without `n`), as `build` chooses them.
fn select_layers(layers: Vec<LayerCost>, n: Option<usize>) -> Vec<LayerCost> {
    select_top(
        layers,
        n,
        |l| l.copy_up.total_ns,
        |l| l.copy_up.bytes,
        layer_key,
    )
}

/// The hot spots as `build` chooses them: the top `n` files by total time
/// plus the top `n` by bytes.
fn select_files(files: Vec<CopyUpFile>, n: Option<usize>) -> Vec<CopyUpFile> {
    select_top(files, n, |f| f.total_ns, |f| f.bytes, file_key)
}

/// Decodes a report histogram, insisting that it holds what it claims.
fn decode(h: &Hist, what: &str) -> Result<Histogram<u64>> {
    if h.count > 0 && h.hdr.is_empty() {
        bail!(
            "{what}: {} samples but no serialized histogram (hdr); cannot merge it losslessly",
            h.count
        );
    }
    let d = h.to_hdr().map_err(|e| anyhow!("{what}: {e:#}"))?;
    if d.len() != h.count {
        bail!(
            "{what}: count {} does not match its serialized histogram ({})",
            h.count,
            d.len()
        );
    }
    Ok(d)
}

fn add_hist(into: &mut Histogram<u64>, h: &Hist, what: &str) -> Result<()> {
    let d = decode(h, what)?;
    into.add(&d)
        .map_err(|e| anyhow!("{what}: histogram out of range: {e:?}"))
}

/// Adds a report's totals to a group's, histograms decoded (saturating:
/// a report read from a file may hold anything).
fn add_totals(acc: &mut GroupAgg, t: &CopyUpTotals, what: &str) -> Result<()> {
    acc.count = acc.count.saturating_add(t.count);
    acc.bytes = acc.bytes.saturating_add(t.bytes);
    acc.total_ns = acc.total_ns.saturating_add(t.total_ns);
    acc.errors = acc.errors.saturating_add(t.errors);
    for (&c, &n) in &t.by_cause {
        let v = &mut acc.by_cause[c.index()];
        *v = v.saturating_add(n);
    }
    for (kind, &n) in &t.by_kind {
        let v = &mut acc.by_kind[FileKind::from_name(kind) as usize];
        *v = v.saturating_add(n);
    }
    add_hist(
        &mut acc.latency,
        &t.latency_ns,
        &format!("{what} latency_ns"),
    )?;
    add_hist(
        &mut acc.data_time,
        &t.data_copy_ns,
        &format!("{what} data_copy_ns"),
    )?;
    add_hist(&mut acc.size, &t.size_bytes, &format!("{what} size_bytes"))?;
    Ok(())
}

/// A group of copy-ups whose first totals are `t`.
fn group_of(t: &CopyUpTotals, what: &str) -> Result<GroupAgg> {
    let mut acc = GroupAgg::default();
    add_totals(&mut acc, t, what)?;
    Ok(acc)
}

/// The sum of some totals, histograms included (`None` when one does not
/// decode: a report read from a file may hold anything).
pub fn sum_totals<'a>(items: impl IntoIterator<Item = &'a CopyUpTotals>) -> Option<CopyUpTotals> {
    let mut acc = GroupAgg::default();
    for t in items {
        add_totals(&mut acc, t, "copy_up").ok()?;
    }
    Some(super::totals(&acc))
}

struct LookupAcc {
    l: Lookups,
    buckets: BTreeMap<u64, u64>,
}

impl LookupAcc {
    fn finish(mut self) -> Lookups {
        self.l.histogram = self
            .buckets
            .into_iter()
            .filter(|&(_, count)| count > 0)
            .map(|(le_ns, count)| Bucket { le_ns, count })
            .collect();
        self.l.latency_ns = lookup_latency(self.l.total_ns, self.l.count, &self.l.histogram);
        self.l
    }
}

#[derive(Default)]
struct Merger {
    mounts: BTreeMap<(Option<String>, DevKey), (Mount, GroupAgg)>,
    containers: BTreeMap<String, (Container, GroupAgg)>,
    files: BTreeMap<FileKey, CopyUpFile>,
    layers: BTreeMap<LayerKey, (LayerCost, GroupAgg)>,
    lookups: BTreeMap<(Option<String>, DevKey), LookupAcc>,
    advice: Vec<Advice>,
    warnings: Vec<String>,
    drops: Drops,
    counters: Counters,
    file_counts: FileCounts,
}

fn first<T: Clone>(into: &mut Option<T>, from: &Option<T>) {
    if into.is_none() {
        into.clone_from(from);
    }
}

fn union_bounded<T: Ord + Clone>(a: &[T], b: &[T], max: usize) -> Vec<T> {
    let mut set: BTreeSet<T> = a.iter().cloned().collect();
    for x in b {
        if set.len() >= max {
            break;
        }
        set.insert(x.clone());
    }
    set.into_iter().collect()
}

/// The host of an item of `r`: its own (from a multi-host input) or the
/// report's.
fn host_of(r: &Report, h: &Option<String>) -> Option<String> {
    Some(h.clone().unwrap_or_else(|| r.host.clone()))
}

impl Merger {
    fn add(&mut self, r: &Report, multi: bool) -> Result<()> {
        self.add_file_counts(r);
        self.add_mounts(r)?;
        self.add_containers(r)?;
        self.add_files(r);
        self.add_layers(r)?;
        self.add_lookups(r);
        self.add_notes(r, multi);
        self.add_drops(r);
        self.add_counters(r);
        Ok(())
    }

    /// Files of different inputs add, except those that two inputs list
    /// (counted once, in [`Self::add_files`]); `listed` is set once the
    /// merged list is cut.
    fn add_file_counts(&mut self, r: &Report) {
        let f = &mut self.file_counts;
        f.seen = f.seen.saturating_add(r.files.seen);
        f.kept = f.kept.saturating_add(r.files.kept);
        f.evicted = f.evicted.saturating_add(r.files.evicted);
    }

    fn add_mounts(&mut self, r: &Report) -> Result<()> {
        for m in &r.mounts {
            let h = host_of(r, &m.host);
            let what = format!("mount {} copy_up", m.dev);
            match self.mounts.entry((h.clone(), dev_key(&m.dev))) {
                Entry::Vacant(e) => {
                    let acc = group_of(&m.copy_up, &what)?;
                    e.insert((
                        Mount {
                            host: h,
                            ..m.clone()
                        },
                        acc,
                    ));
                }
                Entry::Occupied(mut e) => {
                    let (mnt, acc) = e.get_mut();
                    add_totals(acc, &m.copy_up, &what)?;
                    first(&mut mnt.mountpoint, &m.mountpoint);
                    first(&mut mnt.upperdir, &m.upperdir);
                    first(&mut mnt.container, &m.container);
                    if mnt.lowerdirs.is_empty() {
                        mnt.lowerdirs.clone_from(&m.lowerdirs);
                    }
                }
            }
        }
        Ok(())
    }

    fn add_containers(&mut self, r: &Report) -> Result<()> {
        for c in &r.containers {
            let what = format!("container {} copy_up", c.id);
            match self.containers.entry(c.id.clone()) {
                Entry::Vacant(e) => {
                    let acc = group_of(&c.copy_up, &what)?;
                    e.insert((
                        Container {
                            host: host_of(r, &c.host),
                            ..c.clone()
                        },
                        acc,
                    ));
                }
                Entry::Occupied(mut e) => {
                    let (x, acc) = e.get_mut();
                    add_totals(acc, &c.copy_up, &what)?;
                    first(&mut x.name, &c.name);
                    first(&mut x.pod, &c.pod);
                    if x.image == Default::default() {
                        x.image.clone_from(&c.image);
                    }
                    if x.layers.is_empty() {
                        x.layers.clone_from(&c.layers);
                    }
                    x.gone |= c.gone;
                }
            }
        }
        Ok(())
    }

    fn add_files(&mut self, r: &Report) {
        for f in &r.copy_ups {
            let f = CopyUpFile {
                host: host_of(r, &f.host),
                ..f.clone()
            };
            match self.files.entry(file_key(&f)) {
                Entry::Vacant(e) => {
                    e.insert(f);
                }
                Entry::Occupied(mut e) => {
                    // Counted by both inputs: one file.
                    self.file_counts.seen = self.file_counts.seen.saturating_sub(1);
                    self.file_counts.kept = self.file_counts.kept.saturating_sub(1);
                    merge_file(e.get_mut(), &f);
                }
            }
        }
    }

    fn add_layers(&mut self, r: &Report) -> Result<()> {
        for l in &r.layers {
            let l = LayerCost {
                // Only layers without a diff-id belong to one host.
                host: if l.diff_id.is_none() {
                    host_of(r, &l.host)
                } else {
                    None
                },
                ..l.clone()
            };
            let what = match &l.diff_id {
                Some(d) => format!("layer {d} copy_up"),
                None => format!(
                    "layer {} lower {} copy_up",
                    l.dev.as_deref().unwrap_or("?"),
                    l.index.unwrap_or(0)
                ),
            };
            match self.layers.entry(layer_key(&l)) {
                Entry::Vacant(e) => {
                    let acc = group_of(&l.copy_up, &what)?;
                    e.insert((l, acc));
                }
                Entry::Occupied(mut e) => {
                    let (x, acc) = e.get_mut();
                    add_totals(acc, &l.copy_up, &what)?;
                    first(&mut x.created_by, &l.created_by);
                    x.containers =
                        union_bounded(&x.containers, &l.containers, MAX_CONTAINERS_PER_LAYER);
                }
            }
        }
        Ok(())
    }

    fn add_lookups(&mut self, r: &Report) {
        for l in &r.lookups {
            let h = host_of(r, &l.host);
            // Reports from before `total_ns` existed: the mean is all there is.
            let total = if l.total_ns == 0 {
                l.latency_ns.mean.saturating_mul(l.count)
            } else {
                l.total_ns
            };
            let acc = self
                .lookups
                .entry((h.clone(), dev_key(&l.dev)))
                .or_insert_with(|| LookupAcc {
                    l: Lookups {
                        host: h,
                        count: 0,
                        found: 0,
                        not_found: 0,
                        errors: 0,
                        total_ns: 0,
                        histogram: Vec::new(),
                        ..l.clone()
                    },
                    buckets: BTreeMap::new(),
                });
            let x = &mut acc.l;
            first(&mut x.mountpoint, &l.mountpoint);
            first(&mut x.container, &l.container);
            x.layers = x.layers.max(l.layers);
            x.count = x.count.saturating_add(l.count);
            x.found = x.found.saturating_add(l.found);
            x.not_found = x.not_found.saturating_add(l.not_found);
            x.errors = x.errors.saturating_add(l.errors);
            x.total_ns = x.total_ns.saturating_add(total);
            for b in &l.histogram {
                let c = acc.buckets.entry(b.le_ns).or_default();
                *c = c.saturating_add(b.count);
            }
        }
    }

    /// Advice and warnings, each once; those of no container name their
    /// host once the merge spans several hosts.
    fn add_notes(&mut self, r: &Report, multi: bool) {
        let single_input = r.hosts.len() <= 1;
        let note = |s: &str| {
            if multi && single_input {
                format!("{}: {s}", r.host)
            } else {
                s.to_string()
            }
        };
        for a in &r.advice {
            let a = if a.container.is_none() {
                Advice {
                    message: note(&a.message),
                    ..a.clone()
                }
            } else {
                a.clone()
            };
            if !self.advice.contains(&a) {
                self.advice.push(a);
            }
        }
        for w in &r.warnings {
            let w = note(w);
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
    }

    fn add_drops(&mut self, r: &Report) {
        // Destructured so that a new field cannot be forgotten here.
        let Drops {
            total: _,
            ringbuf_full,
            lost_returns,
            inflight_full,
            decode_errors,
        } = r.drops;
        let s = &mut self.drops;
        for (into, from) in [
            (&mut s.ringbuf_full, ringbuf_full),
            (&mut s.lost_returns, lost_returns),
            (&mut s.inflight_full, inflight_full),
            (&mut s.decode_errors, decode_errors),
        ] {
            *into = into.saturating_add(from);
        }
    }

    fn add_counters(&mut self, r: &Report) {
        // Destructured so that a new field cannot be forgotten here.
        let Counters {
            copy_up_entries,
            copy_up_exits,
            data_copies,
            lookup_entries,
            lookup_exits,
            filtered,
            filtered_user,
            events_received,
            evicted_files,
            unattributed,
        } = r.counters;
        let s = &mut self.counters;
        for (into, from) in [
            (&mut s.copy_up_entries, copy_up_entries),
            (&mut s.copy_up_exits, copy_up_exits),
            (&mut s.data_copies, data_copies),
            (&mut s.lookup_entries, lookup_entries),
            (&mut s.lookup_exits, lookup_exits),
            (&mut s.filtered, filtered),
            (&mut s.filtered_user, filtered_user),
            (&mut s.events_received, events_received),
            (&mut s.evicted_files, evicted_files),
            (&mut s.unattributed, unattributed),
        ] {
            *into = into.saturating_add(from);
        }
    }
}

/// A file two inputs list: their figures added, the rest the first known.
fn merge_file(x: &mut CopyUpFile, f: &CopyUpFile) {
    x.count = x.count.saturating_add(f.count);
    x.bytes = x.bytes.saturating_add(f.bytes);
    x.errors = x.errors.saturating_add(f.errors);
    x.total_ns = x.total_ns.saturating_add(f.total_ns);
    x.path_truncated |= f.path_truncated;
    x.outside |= f.outside;
    x.latency_ns = Latency {
        min: x.latency_ns.min.min(f.latency_ns.min),
        p50: x.latency_ns.p50.max(f.latency_ns.p50),
        p99: x.latency_ns.p99.max(f.latency_ns.p99),
        max: x.latency_ns.max.max(f.latency_ns.max),
    };
    first(&mut x.mountpoint, &f.mountpoint);
    first(&mut x.layer, &f.layer);
    x.pids = union_bounded(&x.pids, &f.pids, MAX_PIDS);
    x.comms = union_bounded(&x.comms, &f.comms, MAX_COMMS);
    x.causes = union_bounded(&x.causes, &f.causes, Cause::ALL.len());
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ovltrace_ebpf::{LookupStats, HIST_SLOTS};

    use super::*;
    use crate::bpf::event::OverlayKey;
    use crate::{
        aggregate::Aggregator,
        attribute::Attribution,
        bpf::event::{CopyUp, FileKind},
        catalog::{ContainerInfo, ImageInfo, LayerInfo, SourceLayer},
        report::{build, Inputs, KnownContainer, KnownMount},
        sys::mounts::Dev,
    };

    /// Deterministic pseudo-random numbers (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A mount of the synthetic world: device minor, owning container.
    const DEVS: [(u32, Option<usize>); 4] =
        [(50, Some(0)), (51, Some(1)), (52, Some(2)), (60, None)];

    fn containers() -> Vec<ContainerInfo> {
        let layer = |index: usize, position: Option<usize>, diff: &str| LayerInfo {
            index,
            diff_id: (!diff.is_empty()).then(|| format!("sha256:{diff}")),
            created_by: Some(format!("/bin/sh -c #(nop) COPY {diff} /")),
            init: position.is_none(),
            position,
            ..Default::default()
        };
        (0..3)
            .map(|i| ContainerInfo {
                id: format!("{i}{}", "c".repeat(63)),
                name: Some(format!("app-{i}")),
                image: ImageInfo {
                    id: Some("sha256:1mage".into()),
                    tags: vec!["shop/app:1".into()],
                },
                mountpoint: format!("/var/lib/docker/overlay2/m{i}/merged").into(),
                dev: Dev::new(0, DEVS[i].0),
                runtime: "docker",
                upperdir: None,
                // Containers 0 and 1 share their image layers; 2 has its own.
                layers: vec![
                    layer(1, None, ""),
                    layer(2, Some(2), if i < 2 { "a2" } else { "b2" }),
                    layer(3, Some(1), if i < 2 { "a1" } else { "b1" }),
                ],
                pod: None,
                mount_id: i as u32,
            })
            .collect()
    }

    /// `n` copy-ups spread over the mounts, with attribution and source layer.
    fn events(seed: u64, n: usize) -> Vec<(CopyUp, Attribution, Option<SourceLayer>)> {
        let cs = containers();
        let mut rng = Rng(seed);
        (0..n)
            .map(|_| {
                let (minor, owner) = DEVS[rng.below(DEVS.len() as u64) as usize];
                let dir = rng.below(3);
                let file = rng.below(8);
                let kind = if rng.below(10) == 0 {
                    FileKind::Dir
                } else {
                    FileKind::Regular
                };
                // Log-uniform latencies from 1 µs to about 1 s.
                let latency = 1000u64 << rng.below(20) | rng.below(1000);
                let bytes = rng.below(1 << 20);
                let ev = CopyUp {
                    start_ns: 0,
                    latency_ns: latency,
                    data_ns: (kind == FileKind::Regular).then_some(latency / 3),
                    data_len: (kind == FileKind::Regular).then_some(bytes),
                    size: bytes,
                    tgid: 100 + rng.below(5) as u32,
                    tid: 1,
                    overlay: OverlayKey::dev_only(Dev::new(0, minor).to_kernel()),
                    ret: if rng.below(50) == 0 { -28 } else { 0 },
                    kind,
                    path: format!("d{dir}/f{file}").into_bytes(),
                    path_truncated: false,
                    comm: format!("p{}", rng.below(3)).into(),
                    mnt_ns: 0,
                    source: None,
                    cause: Default::default(),
                };
                let index = 2 + rng.below(2) as usize;
                let (attr, src) = match owner {
                    Some(c) => {
                        let l = &cs[c].layers[index - 1];
                        (
                            Attribution {
                                container: Some(cs[c].id.as_str().into()),
                                layer: Some(index),
                                outside: false,
                            },
                            Some(SourceLayer {
                                index,
                                diff_id: l.diff_id.clone(),
                                created_by: l.created_by.clone(),
                                data_index: None,
                            }),
                        )
                    }
                    None => (
                        Attribution {
                            container: None,
                            layer: Some(index),
                            outside: false,
                        },
                        None,
                    ),
                };
                (ev, attr, src)
            })
            .collect()
    }

    fn lookups(seed: u64) -> Vec<(OverlayKey, LookupStats)> {
        let mut rng = Rng(seed);
        DEVS.iter()
            .map(|&(minor, _)| {
                let mut s = LookupStats::ZERO;
                for _ in 0..200 {
                    let slot = 8 + rng.below(12) as usize;
                    s.hist[slot.min(HIST_SLOTS - 1)] += 1;
                    s.total_ns += (1u64 << slot) + rng.below(1 << slot);
                    if rng.below(4) == 0 {
                        s.not_found += 1;
                    } else {
                        s.found += 1;
                    }
                }
                (OverlayKey::dev_only(Dev::new(0, minor).to_kernel()), s)
            })
            .collect()
    }

    fn add_stats(
        a: &[(OverlayKey, LookupStats)],
        b: &[(OverlayKey, LookupStats)],
    ) -> Vec<(OverlayKey, LookupStats)> {
        a.iter()
            .zip(b)
            .map(|((dev, x), (_, y))| {
                let mut s = *x;
                s.found += y.found;
                s.not_found += y.not_found;
                s.errors += y.errors;
                s.total_ns += y.total_ns;
                for (h, v) in s.hist.iter_mut().zip(y.hist) {
                    *h += v;
                }
                (*dev, s)
            })
            .collect()
    }

    struct Part<'a> {
        events: &'a [(CopyUp, Attribution, Option<SourceLayer>)],
        lookups: &'a [(OverlayKey, LookupStats)],
        host: &'a str,
        started: u64,
        duration: u64,
        ringbuf_full: u64,
        top: usize,
    }

    fn report(p: Part<'_>) -> Report {
        let mut agg = Aggregator::new(10_000);
        for (ev, attr, src) in p.events {
            agg.add(ev, attr, src.as_ref());
        }
        let cs = containers();
        let mut mounts = HashMap::new();
        for &(minor, owner) in &DEVS {
            mounts.insert(
                OverlayKey::dev_only(Dev::new(0, minor).to_kernel()),
                KnownMount {
                    container: owner.map(|c| cs[c].id.clone()),
                    mountpoint: Some(match owner {
                        Some(c) => cs[c].mountpoint.display().to_string(),
                        None => format!("/plain/{minor}"),
                    }),
                    upperdir: None,
                    lowerdirs: vec!["l1".into(), "l2".into(), "l3".into()],
                },
            );
        }
        let known: Vec<KnownContainer> = cs
            .into_iter()
            .map(|info| KnownContainer { info, gone: false })
            .collect();
        build(Inputs {
            agg: &agg,
            lookups: p.lookups,
            mounts: &mounts,
            containers: &known,
            probe: ProbeInfo {
                strategy: "kprobe".into(),
                data_copy: Some("ovl_copy_up_file".into()),
            },
            host: p.host.into(),
            kernel: "6.12.0".into(),
            started_unix_ms: p.started,
            duration_ms: p.duration,
            drops: Drops {
                ringbuf_full: p.ringbuf_full,
                ..Default::default()
            },
            counters: Counters {
                copy_up_entries: p.events.len() as u64,
                copy_up_exits: p.events.len() as u64,
                ..Default::default()
            },
            warnings: vec![],
            top: p.top,
        })
    }

    /// Every histogram of a report, decoded, and the report without the
    /// encodings (which may differ for equal histograms) and without advice
    /// (not recomputed by a merge).
    fn normalize(mut r: Report) -> (Report, Vec<Histogram<u64>>) {
        let mut hists = Vec::new();
        let mut take = |t: &mut CopyUpTotals| {
            for h in [&mut t.latency_ns, &mut t.data_copy_ns, &mut t.size_bytes] {
                hists.push(h.to_hdr().unwrap());
                h.hdr.clear();
            }
        };
        r.mounts.iter_mut().for_each(|m| take(&mut m.copy_up));
        r.containers.iter_mut().for_each(|c| take(&mut c.copy_up));
        r.layers.iter_mut().for_each(|l| take(&mut l.copy_up));
        r.advice.clear();
        (r, hists)
    }

    /// Asserts that `merged` is `whole`, except for the percentiles of files
    /// present in several parts, which must be upper bounds.
    fn assert_same(merged: Report, whole: Report, parts: &[&Report]) {
        let (mut merged, mh) = normalize(merged);
        let (mut whole, wh) = normalize(whole);
        assert_eq!(mh.len(), wh.len());
        for (i, (m, w)) in mh.iter().zip(&wh).enumerate() {
            assert_eq!(m, w, "histogram {i} differs");
        }
        assert_eq!(merged.copy_ups.len(), whole.copy_ups.len());
        let mut shared = 0;
        for (m, w) in merged.copy_ups.iter_mut().zip(whole.copy_ups.iter_mut()) {
            let seen = parts
                .iter()
                .filter(|p| {
                    p.copy_ups
                        .iter()
                        .any(|f| f.dev == w.dev && f.path == w.path)
                })
                .count();
            if seen > 1 {
                shared += 1;
                assert!(m.latency_ns.p50 >= w.latency_ns.p50, "{m:?} vs {w:?}");
                assert!(m.latency_ns.p99 >= w.latency_ns.p99, "{m:?} vs {w:?}");
                assert!(m.latency_ns.p99 <= w.latency_ns.max);
                for x in [&mut m.latency_ns, &mut w.latency_ns] {
                    x.p50 = 0;
                    x.p99 = 0;
                }
            }
        }
        assert!(shared > 0, "the parts should share files");
        assert_eq!(merged, whole);
    }

    #[test]
    fn merging_halves_equals_the_whole() {
        let evs = events(7, 3000);
        let (a, b) = evs.split_at(1400);
        let (la, lb) = (lookups(1), lookups(2));
        let part = |events, lookups, started, duration, ringbuf_full| Part {
            events,
            lookups,
            host: "h1",
            started,
            duration,
            ringbuf_full,
            top: 1000,
        };
        let ra = report(part(a, &la, 1_000, 500, 3));
        let rb = report(part(b, &lb, 1_500, 700, 4));
        let whole_lookups = add_stats(&la, &lb);
        let whole = report(part(&evs, &whole_lookups, 1_000, 1_200, 7));
        assert!(whole.copy_ups.len() < 1000, "lists must not be truncated");
        let merged = merge(&[ra.clone(), rb.clone()], Some(1000)).unwrap();
        // Spot checks of what the comparison below covers in full.
        assert_eq!(merged.duration_ms, 1_200);
        assert_eq!(merged.drops.total, 7);
        assert_eq!(merged.host, "h1");
        assert!(merged.hosts.is_empty());
        let n: u64 = merged.containers.iter().map(|c| c.copy_up.count).sum();
        assert!(n > 2000, "{n}");
        assert_eq!(
            merged.containers[0].copy_up.latency_ns.p99,
            whole.containers[0].copy_up.latency_ns.p99
        );
        assert_same(merged, whole.clone(), &[&ra, &rb]);

        // Cut to a top N: the same selection as `build` makes.
        let mut whole5 = report(part(&evs, &whole_lookups, 1_000, 1_200, 7));
        cut(&mut whole5, 5);
        let mut merged5 = merge(&[ra.clone(), rb.clone()], Some(5)).unwrap();
        // The 5 slowest files plus the biggest of the rest (at most 10).
        assert!((5..=10).contains(&merged5.copy_ups.len()));
        assert_eq!(merged5.copy_ups.len(), whole5.copy_ups.len());
        let (w5, m5) = (normalize(whole5).0, normalize(merged5.clone()).0);
        for (m, w) in m5.copy_ups.iter().zip(&w5.copy_ups) {
            assert_eq!((&m.dev, &m.path, m.total_ns), (&w.dev, &w.path, w.total_ns));
        }
        // Layers: top 5 by time plus top 5 by bytes, as built with top 5.
        let built5 = report(part(&evs, &whole_lookups, 1_000, 1_200, 7));
        let built5 = {
            let mut agg_top = built5;
            cut(&mut agg_top, 5);
            agg_top
        };
        merged5.layers.iter_mut().for_each(|l| {
            l.copy_up.latency_ns.hdr.clear();
        });
        let keys = |r: &Report| -> Vec<(Option<String>, Option<String>, Option<usize>)> {
            r.layers
                .iter()
                .map(|l| (l.diff_id.clone(), l.dev.clone(), l.index))
                .collect()
        };
        assert_eq!(keys(&merged5), keys(&built5));
    }

    #[test]
    fn top_cut_matches_build() {
        // `build` with a small top and `cut` of the untruncated report agree.
        let evs = events(11, 2000);
        let la = lookups(3);
        let part = |top| Part {
            events: &evs,
            lookups: &la,
            host: "h",
            started: 0,
            duration: 10,
            ringbuf_full: 0,
            top,
        };
        let small = report(part(3));
        let mut full = report(part(1000));
        cut(&mut full, 3);
        let (small, _) = normalize(small);
        let (full, _) = normalize(full);
        assert_eq!(small.copy_ups, full.copy_ups);
        assert_eq!(small.layers, full.layers);
        assert!(small.layers.len() >= 3);
    }

    #[test]
    fn merging_is_associative_across_hosts() {
        let evs = events(99, 2400);
        let parts: Vec<Report> = evs
            .chunks(800)
            .enumerate()
            .map(|(i, chunk)| {
                let l = lookups(20 + i as u64);
                report(Part {
                    events: chunk,
                    lookups: &l,
                    // Two parts from one host, one from another.
                    host: if i == 2 { "beta" } else { "alpha" },
                    started: 100 * i as u64,
                    duration: 1000,
                    ringbuf_full: i as u64,
                    top: 1000,
                })
            })
            .collect();
        let [a, b, c] = [&parts[0], &parts[1], &parts[2]].map(Clone::clone);
        let ab_c = merge(
            &[merge(&[a.clone(), b.clone()], None).unwrap(), c.clone()],
            None,
        )
        .unwrap();
        let a_bc = merge(
            &[a.clone(), merge(&[b.clone(), c.clone()], None).unwrap()],
            None,
        )
        .unwrap();
        let abc = merge(&[a.clone(), b.clone(), c.clone()], None).unwrap();
        let (x, xh) = normalize(ab_c);
        let (y, yh) = normalize(a_bc);
        let (z, zh) = normalize(abc);
        assert_eq!(xh, zh);
        assert_eq!(yh, zh);
        assert_eq!(x, z);
        assert_eq!(y, z);
        // Devices repeat across hosts: the same dev on two hosts stays two mounts.
        assert_eq!(z.hosts, vec!["alpha".to_string(), "beta".to_string()]);
        assert_eq!(z.host, "alpha, beta");
        assert_eq!(z.mounts.len(), 2 * DEVS.len());
        assert!(z.mounts.iter().all(|m| m.host.is_some()));
        assert!(z.copy_ups.iter().all(|f| f.host.is_some()));
        assert_eq!(z.lookups.len(), 2 * DEVS.len());
        // The same image layer on two hosts is one layer; per-mount ones are not.
        let shared = z
            .layers
            .iter()
            .filter(|l| l.diff_id.as_deref() == Some("sha256:a2"))
            .count();
        assert_eq!(shared, 1);
        let plain = z.layers.iter().filter(|l| l.diff_id.is_none()).count();
        assert_eq!(plain, 4, "two indexes of the plain overlay on two hosts");
        // Containers are keyed by id: the same three, with all their copy-ups.
        assert_eq!(z.containers.len(), 3);
        let total: u64 = z.mounts.iter().map(|m| m.copy_up.count).sum();
        assert_eq!(total, 2400);
        assert_eq!(z.counters.events_received, 2400);
        assert_eq!(z.drops.total, 3);
        assert_eq!((z.started_unix_ms, z.duration_ms), (0, 1200));
        // Round trip through JSON keeps the merge mergeable.
        let json = serde_json::to_string(&merge(&parts, None).unwrap()).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        let (back, bh) = normalize(merge(&[back], None).unwrap());
        assert_eq!(bh, zh);
        assert_eq!(back, z);
    }

    #[test]
    fn many_hosts_are_counted_not_listed() {
        let evs = events(5, 60);
        let parts: Vec<Report> = (0..6)
            .map(|i| {
                report(Part {
                    events: &evs[i * 10..i * 10 + 10],
                    lookups: &[],
                    host: ["h0", "h1", "h2", "h3", "h4", "h5"][i],
                    started: 0,
                    duration: 1,
                    ringbuf_full: 0,
                    top: 10,
                })
            })
            .collect();
        let m = merge(&parts, None).unwrap();
        assert_eq!(m.host, "6 hosts");
        assert_eq!(m.hosts.len(), 6);
    }

    #[test]
    fn malformed_input_is_an_error_naming_it() {
        let evs = events(3, 200);
        let good = report(Part {
            events: &evs,
            lookups: &[],
            host: "h",
            started: 0,
            duration: 1,
            ringbuf_full: 0,
            top: 10,
        });
        let fails = |bad: Report| {
            let e = merge(&[good.clone(), bad], None).unwrap_err();
            assert_eq!(e.input, 1);
            e.to_string()
        };
        let mut r = good.clone();
        r.schema_version = SCHEMA_VERSION + 1;
        let e = fails(r);
        assert!(
            e.contains(&format!("schema_version {}", SCHEMA_VERSION + 1)),
            "{e}"
        );
        assert!(e.contains("this ovltrace reads 1, 2 and 3"), "{e}");
        let mut r = good.clone();
        r.containers[0].copy_up.latency_ns.hdr = "!!!".into();
        let e = fails(r);
        assert!(e.contains("container") && e.contains("latency_ns"), "{e}");
        let mut r = good.clone();
        r.mounts[0].copy_up.latency_ns.hdr.clear();
        assert!(fails(r).contains("no serialized histogram"));
        let mut r = good.clone();
        r.mounts[0].copy_up.size_bytes.count += 1;
        assert!(fails(r).contains("does not match"));
        // A valid histogram of some other report, in the wrong place.
        let mut r = good.clone();
        r.mounts[0].copy_up.latency_ns.hdr = r.mounts[1].copy_up.latency_ns.hdr.clone();
        if r.mounts[0].copy_up.latency_ns.count != r.mounts[1].copy_up.latency_ns.count {
            fails(r);
        }
        assert!(merge(&[], None).is_err());
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let evs = events(17, 300);
        let la = lookups(4);
        let mut r = report(Part {
            events: &evs,
            lookups: &la,
            host: "h",
            started: u64::MAX - 5,
            duration: u64::MAX,
            ringbuf_full: u64::MAX,
            top: 10,
        });
        for t in r
            .mounts
            .iter_mut()
            .map(|m| &mut m.copy_up)
            .chain(r.containers.iter_mut().map(|c| &mut c.copy_up))
        {
            t.count = u64::MAX;
            t.bytes = u64::MAX;
            t.total_ns = u64::MAX;
            t.errors = u64::MAX;
        }
        for f in &mut r.copy_ups {
            f.count = u64::MAX;
            f.total_ns = u64::MAX;
            f.bytes = u64::MAX;
            f.dev = "4294967295:99999999999999999999".into();
            f.path_b64 = Some("%%%".into());
        }
        for l in &mut r.lookups {
            l.count = u64::MAX;
            l.total_ns = 0;
            l.latency_ns.mean = u64::MAX;
            l.histogram = vec![
                Bucket {
                    le_ns: 0,
                    count: u64::MAX,
                },
                Bucket {
                    le_ns: u64::MAX,
                    count: u64::MAX,
                },
            ];
        }
        r.counters.events_received = u64::MAX;
        let m = merge(&[r.clone(), r.clone(), r.clone()], Some(3)).unwrap();
        assert_eq!(m.drops.total, u64::MAX);
        assert_eq!(m.mounts[0].copy_up.count, u64::MAX);
        assert_eq!(m.started_unix_ms, u64::MAX - 5);
        let _ = crate::render::html::render(&m);
        let _ = crate::render::terminal::render(&m);
        let _ = crate::render::html::render(&r);
        let _ = crate::render::terminal::render(&r);
    }

    #[test]
    fn hostile_histograms_are_errors_not_panics() {
        use std::io::Write as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let deflate = |plain: &[u8]| {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(plain).unwrap();
            let body = z.finish().unwrap();
            let mut out = 0x1c84_9314u32.to_be_bytes().to_vec();
            out.extend((body.len() as u32).to_be_bytes());
            out.extend(body);
            out
        };
        let v2 = |payload_len: u32, payload: &[u8]| {
            let mut p = 0x1c84_9313u32.to_be_bytes().to_vec();
            p.extend(payload_len.to_be_bytes());
            p.extend(0u32.to_be_bytes()); // normalizing offset
            p.extend(3u32.to_be_bytes()); // digits
            p.extend(1u64.to_be_bytes()); // lowest
            p.extend(1_000_000u64.to_be_bytes()); // highest
            p.extend(1.0f64.to_be_bytes());
            p.extend(payload);
            p
        };
        let cases: Vec<Vec<u8>> = vec![
            vec![0x1c, 0x84, 0x93, 0x14],
            deflate(b"junk"),
            // Claims a 4 GiB payload.
            deflate(&v2(u32::MAX, &[2])),
            // A run of zeros the decoder would negate into overflow.
            deflate(&v2(9, &[0xff; 9])),
            // Claims more compressed bytes than there are.
            {
                let mut d = deflate(&v2(1, &[2]));
                d[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
                d
            },
        ];
        let expected = [
            "header is truncated",
            "not V2",
            "payload is shorter",
            // The raw decoder panics on this one ("attempt to negate with overflow").
            "impossible run length",
            "shorter than its header",
        ];
        for (i, (bytes, want)) in cases.iter().zip(expected).enumerate() {
            let h = Hist {
                count: 1,
                hdr: b64(bytes),
                ..Default::default()
            };
            let e = format!("{:#}", h.to_hdr().unwrap_err());
            assert!(e.contains(want), "case {i}: {e}");
        }
        // A well-formed one still decodes.
        let h = Hist {
            count: 1,
            hdr: b64(&deflate(&v2(1, &[2]))),
            ..Default::default()
        };
        assert_eq!(h.to_hdr().unwrap().len(), 1);
        let huge = Hist {
            count: 1,
            hdr: "A".repeat(5 << 20),
            ..Default::default()
        };
        assert!(huge.to_hdr().unwrap_err().to_string().contains("larger"));
    }
}
