//! Aggregation of decoded events: per overlay mount totals with HDR latency
//! histograms, and a bounded table of the files that cost copy-ups.

use std::{collections::BTreeSet, sync::Arc};

use hdrhistogram::Histogram;
use smallvec::SmallVec;

use crate::{
    attribute::{Attribution, LAST_BY_LAYER},
    bpf::event::{Cause, CauseCounts, Comm, CopyUp, FileKind, OverlayKey},
    catalog::SourceLayer,
    hdr::{new_histogram, Counts},
};

/// The hash maps of the per-event path (SipHash was a third of the ingest
/// time). foldhash is seeded at random per map, so hashes are not
/// predictable from outside; the table keyed by container-chosen names (file
/// paths, [`FileTable`]) uses its higher-quality variant.
pub type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// Latency samples kept per file for exact percentiles (a reservoir beyond).
const FILE_SAMPLES: usize = 256;
const MAX_PIDS: usize = 16;
const MAX_COMMS: usize = 8;
const MAX_CONTAINERS_PER_LAYER: usize = 64;

/// Copy-up totals for one group (a mount, a container or a layer).
#[derive(Debug, Clone)]
pub struct GroupAgg {
    pub count: u64,
    pub bytes: u64,
    pub total_ns: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
    pub data_time: Histogram<u64>,
    pub size: Histogram<u64>,
    /// Copy-ups by cause ([`Cause::index`]).
    pub by_cause: CauseCounts,
    /// Copy-ups by kind of file (`FileKind as usize`).
    pub by_kind: [u64; 4],
}

impl Default for GroupAgg {
    fn default() -> Self {
        Self {
            count: 0,
            bytes: 0,
            total_ns: 0,
            errors: 0,
            latency: new_histogram(),
            data_time: new_histogram(),
            size: new_histogram(),
            by_cause: CauseCounts::default(),
            by_kind: [0; 4],
        }
    }
}

/// A leaf's [`GroupAgg`], its histograms kept as [`Counts`] (the per-event
/// path records three values), made histograms when a view adds it up.
#[derive(Debug, Default)]
struct LeafTotals {
    count: u64,
    bytes: u64,
    total_ns: u64,
    errors: u64,
    latency: Counts,
    data_time: Counts,
    size: Counts,
    by_cause: CauseCounts,
    by_kind: [u64; 4],
}

impl LeafTotals {
    fn add(&mut self, ev: &CopyUp) {
        self.count += 1;
        self.by_cause[ev.cause.index()] += 1;
        self.by_kind[ev.kind as usize] += 1;
        self.bytes += ev.bytes();
        self.total_ns += ev.latency_ns;
        if ev.ret != 0 {
            self.errors += 1;
        }
        self.latency.record(ev.latency_ns.max(1));
        if let Some(d) = ev.data_ns {
            self.data_time.record(d.max(1));
        }
        self.size.record(ev.bytes());
    }

    /// Adds these totals to `g`.
    fn add_to(&self, g: &mut GroupAgg) {
        g.count += self.count;
        g.bytes += self.bytes;
        g.total_ns += self.total_ns;
        g.errors += self.errors;
        for (a, b) in g.by_cause.iter_mut().zip(self.by_cause.iter()) {
            *a += b;
        }
        for (a, b) in g.by_kind.iter_mut().zip(self.by_kind.iter()) {
            *a += b;
        }
        self.latency.add_to(&mut g.latency);
        self.data_time.add_to(&mut g.data_time);
        self.size.add_to(&mut g.size);
    }
}

/// A copied-up path within one overlay instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileKey {
    pub overlay: OverlayKey,
    pub container: Option<Arc<str>>,
    pub path: Vec<u8>,
}

// The container is left out of the hash (it is compared): an overlay
// belongs to one container, and hashing its 64-character id per event
// cost as much as the rest of the lookup.
impl std::hash::Hash for FileKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.overlay.hash(h);
        self.path.hash(h);
    }
}

/// A [`FileKey`] borrowed from an event: looks the file up without copying
/// the path (hashed as a `FileKey` is).
struct FileKeyRef<'a> {
    overlay: OverlayKey,
    container: Option<&'a str>,
    path: &'a [u8],
}

impl std::hash::Hash for FileKeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.overlay.hash(h);
        self.path.hash(h);
    }
}

impl hashbrown::Equivalent<FileKey> for FileKeyRef<'_> {
    fn equivalent(&self, k: &FileKey) -> bool {
        self.overlay == k.overlay && self.path == k.path && self.container == k.container.as_deref()
    }
}

/// The file table: the files in a vector, found through a hash table of
/// (hash, index). Growing it moves 16-byte entries and hashes no path again
/// (growth of a map of whole entries re-hashed every path and moved every
/// entry, a fifth of the ingest time in a copy-up storm).
#[derive(Debug, Default)]
pub struct FileTable {
    slots: Vec<FileSlot>,
    index: hashbrown::HashTable<(u64, usize)>,
    /// Paths are container-chosen: seeded at random, quality hash.
    hasher: foldhash::quality::RandomState,
}

/// One file of a [`FileTable`].
#[derive(Debug)]
pub struct FileSlot {
    hash: u64,
    key: FileKey,
    agg: FileAgg,
}

fn slot_item(s: &FileSlot) -> (&FileKey, &FileAgg) {
    (&s.key, &s.agg)
}

pub type FileIter<'a> =
    std::iter::Map<std::slice::Iter<'a, FileSlot>, fn(&'a FileSlot) -> (&'a FileKey, &'a FileAgg)>;

impl FileTable {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The files, in no particular order.
    pub fn iter(&self) -> FileIter<'_> {
        self.slots.iter().map(slot_item)
    }

    pub fn keys(&self) -> impl Iterator<Item = &FileKey> {
        self.slots.iter().map(|s| &s.key)
    }

    pub fn values(&self) -> impl Iterator<Item = &FileAgg> {
        self.slots.iter().map(|s| &s.agg)
    }

    /// Keeps the files `keep` says to, in their order.
    fn retain(&mut self, mut keep: impl FnMut(&FileAgg) -> bool) {
        self.slots.retain(|s| keep(&s.agg));
        self.index.clear();
        for (i, s) in self.slots.iter().enumerate() {
            self.index.insert_unique(s.hash, (s.hash, i), |&(h, _)| h);
        }
    }
}

impl<'a> IntoIterator for &'a FileTable {
    type Item = (&'a FileKey, &'a FileAgg);
    type IntoIter = FileIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Copy-ups from one source layer.
#[derive(Debug, Clone, Default)]
pub struct LayerAgg {
    pub total: GroupAgg,
    pub created_by: Option<String>,
    /// Containers whose copy-ups came from this layer (bounded).
    pub containers: BTreeSet<String>,
}

/// A source layer as aggregated: the same image layer (diff-id) in two
/// containers is one layer; without a diff-id it is the index within a mount.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerKey {
    DiffId(String),
    Index { overlay: OverlayKey, index: usize },
}

/// A [`LayerKey`] borrowed from an event (same variants and fields, so the
/// same hash).
#[derive(Hash)]
enum LayerKeyRef<'a> {
    DiffId(&'a str),
    Index { overlay: OverlayKey, index: usize },
}

impl hashbrown::Equivalent<LayerKey> for LayerKeyRef<'_> {
    fn equivalent(&self, k: &LayerKey) -> bool {
        match (self, k) {
            (LayerKeyRef::DiffId(a), LayerKey::DiffId(b)) => *a == b,
            (
                LayerKeyRef::Index { overlay, index },
                LayerKey::Index {
                    overlay: o,
                    index: i,
                },
            ) => overlay == o && index == i,
            _ => false,
        }
    }
}

/// The layer key of overlay index `index`: its diff-id when the source
/// layer has one.
fn layer_key_ref(
    overlay: OverlayKey,
    index: usize,
    source: Option<&SourceLayer>,
) -> LayerKeyRef<'_> {
    match source.and_then(|s| s.diff_id.as_deref()) {
        Some(d) => LayerKeyRef::DiffId(d),
        None => LayerKeyRef::Index { overlay, index },
    }
}

impl LayerKeyRef<'_> {
    fn to_owned(&self) -> LayerKey {
        match *self {
            LayerKeyRef::DiffId(d) => LayerKey::DiffId(d.to_string()),
            LayerKeyRef::Index { overlay, index } => LayerKey::Index { overlay, index },
        }
    }
}

/// One file (path within one mount) that was copied up.
#[derive(Debug, Clone)]
pub struct FileAgg {
    pub kind: FileKind,
    /// Attribution of the first copy-up of this path.
    pub attribution: Attribution,
    /// Where a metacopy file's data came from (first copy-up of the path).
    pub data_layer: Option<usize>,
    pub count: u64,
    pub bytes: u64,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub errors: u64,
    pub truncated: bool,
    /// Some copy-up of it was made from outside the container (see
    /// [`Attribution::outside`]).
    pub outside: bool,
    // Inline storage: most files are copied up once, by one process. Each
    // inline part is as large as a heap pointer and length (16 bytes).
    samples: SmallVec<[u64; 2]>,
    /// Distinct process ids, sorted (bounded).
    pub pids: SmallVec<[u32; 2]>,
    /// Distinct process names, sorted (bounded).
    pub comms: SmallVec<[Comm; 1]>,
    /// Causes seen for this file, one bit per [`Cause::index`].
    pub cause_bits: u8,
}

impl FileAgg {
    fn new(kind: FileKind, attribution: Attribution, data_layer: Option<usize>) -> Self {
        Self {
            kind,
            attribution,
            data_layer,
            count: 0,
            bytes: 0,
            total_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            errors: 0,
            truncated: false,
            outside: false,
            samples: SmallVec::new(),
            pids: SmallVec::new(),
            comms: SmallVec::new(),
            cause_bits: 0,
        }
    }

    fn add(&mut self, ev: &CopyUp) {
        self.count += 1;
        self.cause_bits |= 1 << ev.cause.index();
        self.bytes += ev.bytes();
        self.total_ns += ev.latency_ns;
        self.min_ns = self.min_ns.min(ev.latency_ns);
        self.max_ns = self.max_ns.max(ev.latency_ns);
        self.truncated |= ev.path_truncated;
        if ev.ret != 0 {
            self.errors += 1;
        }
        if self.samples.len() < FILE_SAMPLES {
            self.samples.push(ev.latency_ns);
        } else {
            // Deterministic reservoir: replace a slot chosen from the count.
            let slot =
                (self.count.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % FILE_SAMPLES;
            self.samples[slot] = ev.latency_ns;
        }
        if self.pids.len() < MAX_PIDS {
            if let Err(i) = self.pids.binary_search(&ev.tgid) {
                self.pids.insert(i, ev.tgid);
            }
        }
        if self.comms.len() < MAX_COMMS {
            if let Err(i) = self.comms.binary_search(&ev.comm) {
                self.comms.insert(i, ev.comm);
            }
        }
    }

    /// The causes seen for this file, in [`Cause::ALL`] order.
    pub fn causes(&self) -> Vec<Cause> {
        Cause::ALL
            .into_iter()
            .filter(|c| self.cause_bits & (1 << c.index()) != 0)
            .collect()
    }

    /// Latency percentile (0..=100) over the kept samples, nearest-rank.
    pub fn percentile(&self, p: f64) -> u64 {
        percentile(&self.samples, p)
    }
}

pub fn percentile(samples: &[u64], p: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// All copy-up aggregates of a trace.
///
/// Every copy-up is added to exactly one *leaf*: the totals of one
/// (overlay, container, source layer). The per-mount, per-container and
/// per-layer totals are sums of leaves, made when a report asks for them
/// ([`per_overlay`](Self::per_overlay), ...): one group updated per event
/// instead of three, which in a copy-up storm is most of the ingest time.
#[derive(Debug)]
pub struct Aggregator {
    leaves: Vec<Leaf>,
    leaf_of: FastMap<LeafKey, usize>,
    /// The leaf of a (overlay, layer index, container `Arc`) as events name
    /// it: found without hashing the container id or the diff-id. Only the
    /// `Arc` a leaf holds gets an alias (so its address is not reused while
    /// the alias exists, and there is at most one alias per leaf).
    alias: FastMap<LeafAlias, usize>,
    /// The aliases found last, by source layer index (a storm hits the
    /// same few leaves over and over, one per layer its files come from).
    last: [Option<(LeafAlias, usize)>; LAST_BY_LAYER],
    /// Copy-ups that could not be tied to a container (not a container's
    /// overlay, or its metadata was unreadable).
    pub unattributed: u64,
    pub files: FileTable,
    max_files: usize,
    /// Files dropped from the table to keep it bounded (their copy-ups still
    /// count in the mount totals).
    pub evicted_files: u64,
    /// Files that entered the table: the distinct files seen, except that a
    /// file evicted and copied up again later counts again (rare: a file is
    /// copied up once in the life of an overlay).
    pub files_seen: u64,
    pub events: u64,
}

/// The copy-ups of one (overlay, container, source layer).
#[derive(Debug)]
struct Leaf {
    key: LeafKey,
    created_by: Option<String>,
    total: LeafTotals,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LeafKey {
    overlay: OverlayKey,
    container: Option<Arc<str>>,
    layer: Option<LayerKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LeafAlias {
    overlay: OverlayKey,
    layer: Option<usize>,
    /// Address of the attribution's container id (0: none).
    container: usize,
}

impl Aggregator {
    pub fn new(max_files: usize) -> Self {
        let max_files = max_files.max(16);
        Self {
            leaves: Vec::new(),
            leaf_of: FastMap::default(),
            alias: FastMap::default(),
            last: [None; LAST_BY_LAYER],
            unattributed: 0,
            // Grown as files come, not sized for the bound at once: the
            // rehashes cost less than the page faults of filling a table of
            // 100,000 buckets at random (the tracer's CPU in the VM's
            // copy-up storm doubled).
            files: FileTable::default(),
            max_files,
            evicted_files: 0,
            files_seen: 0,
            events: 0,
        }
    }

    /// Adds one copy-up; `source` describes its source layer when known.
    pub fn add(&mut self, ev: &CopyUp, attr: &Attribution, source: Option<&SourceLayer>) {
        self.add_taking_path(&mut ev.clone(), attr, source);
    }

    /// [`add`](Self::add), taking the event's path (left empty): it becomes
    /// the file table's key without a copy (the per-event path of a trace).
    pub fn add_taking_path(
        &mut self,
        ev: &mut CopyUp,
        attr: &Attribution,
        source: Option<&SourceLayer>,
    ) {
        self.events += 1;
        let leaf = self.leaf(ev, attr, source);
        self.leaves[leaf].total.add(ev);
        if attr.container.is_none() {
            self.unattributed += 1;
        }
        self.add_file(ev, attr, source);
        if self.files.len() > self.max_files {
            self.prune();
        }
    }

    /// The leaf of an event's attribution: by alias (two small hashes and a
    /// diff-id comparison), else by content, made when new.
    fn leaf(&mut self, ev: &CopyUp, attr: &Attribution, source: Option<&SourceLayer>) -> usize {
        let layer_ref = attr
            .layer
            .map(|index| layer_key_ref(ev.overlay, index, source));
        let alias = LeafAlias {
            overlay: ev.overlay,
            layer: attr.layer,
            container: attr
                .container
                .as_ref()
                .map_or(0, |c| Arc::as_ptr(c).cast::<u8>() as usize),
        };
        let slot = attr.layer.unwrap_or(0) % LAST_BY_LAYER;
        let found = match self.last[slot] {
            Some((a, i)) if a == alias => Some(i),
            _ => self.alias.get(&alias).copied(),
        };
        if let Some(i) = found {
            let same_layer = match (&layer_ref, &self.leaves[i].key.layer) {
                (Some(r), Some(k)) => hashbrown::Equivalent::equivalent(r, k),
                (None, None) => true,
                _ => false,
            };
            if same_layer {
                self.last[slot] = Some((alias, i));
                return i;
            }
        }
        let key = LeafKey {
            overlay: ev.overlay,
            container: attr.container.clone(),
            layer: layer_ref.map(|r| r.to_owned()),
        };
        let i = match self.leaf_of.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.leaves.len();
                self.leaf_of.insert(key.clone(), i);
                self.leaves.push(Leaf {
                    key,
                    created_by: None,
                    total: LeafTotals::default(),
                });
                i
            }
        };
        let leaf = &mut self.leaves[i];
        if leaf.created_by.is_none() && leaf.key.layer.is_some() {
            leaf.created_by = source.and_then(|s| s.created_by.clone());
        }
        // The alias must keep its container id alive: point it at a leaf
        // holding this very `Arc` (a new one's content is the same).
        if let (Some(c), Some(lc)) = (&attr.container, &leaf.key.container) {
            if !Arc::ptr_eq(c, lc) {
                return i;
            }
        }
        self.last[slot] = Some((alias, i));
        self.alias.insert(alias, i);
        i
    }

    fn add_file(&mut self, ev: &mut CopyUp, attr: &Attribution, source: Option<&SourceLayer>) {
        let key = FileKeyRef {
            overlay: ev.overlay,
            container: attr.container.as_deref(),
            path: &ev.path,
        };
        let t = &mut self.files;
        let hash = std::hash::BuildHasher::hash_one(&t.hasher, &key);
        let slots = &t.slots;
        let entry = t.index.entry(
            hash,
            |&(h, i)| {
                h == hash
                    && slots
                        .get(i)
                        .is_some_and(|s| hashbrown::Equivalent::equivalent(&key, &s.key))
            },
            |&(h, _)| h,
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(e) => {
                if let Some(s) = t.slots.get_mut(e.get().1) {
                    s.agg.outside |= attr.outside;
                    s.agg.add(ev);
                }
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((hash, t.slots.len()));
                self.files_seen += 1;
                let mut agg =
                    FileAgg::new(ev.kind, attr.clone(), source.and_then(|s| s.data_index));
                agg.outside = attr.outside;
                agg.add(ev);
                t.slots.push(FileSlot {
                    hash,
                    key: FileKey {
                        overlay: ev.overlay,
                        container: attr.container.clone(),
                        path: std::mem::take(&mut ev.path),
                    },
                    agg,
                });
            }
        }
    }

    /// Copy-up totals per overlay instance.
    pub fn per_overlay(&self) -> FastMap<OverlayKey, GroupAgg> {
        let mut out: FastMap<OverlayKey, GroupAgg> = FastMap::default();
        for l in &self.leaves {
            l.total.add_to(out.entry(l.key.overlay).or_default());
        }
        out
    }

    /// Copy-up totals per container id.
    pub fn per_container(&self) -> FastMap<String, GroupAgg> {
        let mut out: FastMap<String, GroupAgg> = FastMap::default();
        for l in &self.leaves {
            if let Some(c) = &l.key.container {
                l.total.add_to(out.entry(c.to_string()).or_default());
            }
        }
        out
    }

    /// Copy-up totals per source layer, with the containers that copied
    /// up from it (bounded).
    pub fn per_layer(&self) -> FastMap<LayerKey, LayerAgg> {
        let mut out: FastMap<LayerKey, LayerAgg> = FastMap::default();
        for l in &self.leaves {
            let Some(k) = &l.key.layer else { continue };
            let agg = out.entry(k.clone()).or_default();
            l.total.add_to(&mut agg.total);
            if agg.created_by.is_none() {
                agg.created_by.clone_from(&l.created_by);
            }
            if let Some(c) = &l.key.container {
                if agg.containers.len() < MAX_CONTAINERS_PER_LAYER {
                    agg.containers.insert(c.to_string());
                }
            }
        }
        out
    }

    /// Bytes copied up so far, in all.
    pub fn bytes(&self) -> u64 {
        self.leaves.iter().map(|l| l.total.bytes).sum()
    }

    /// Keeps the most expensive half of the file table (amortised O(1) per event).
    fn prune(&mut self) {
        // Keep the quarter costliest by time and the quarter biggest by bytes
        // (what the hot-spot lists draw from); no key is cloned.
        let k = (self.max_files / 4).max(1);
        let mut time = Quota::new(self.files.values().map(|f| f.total_ns), k);
        let mut bytes = Quota::new(self.files.values().map(|f| f.bytes), k);
        let before = self.files.len();
        self.files.retain(|f| {
            // Both quotas see every file, so each keeps exactly its k.
            let by_time = time.keep(f.total_ns);
            let by_bytes = bytes.keep(f.bytes);
            by_time || by_bytes
        });
        self.evicted_files += (before - self.files.len()) as u64;
    }

    /// The hot spots: the `n` files with the largest total copy-up time, then
    /// those of the `n` with the most bytes that are not among them; every
    /// file in the table when `n` is 0.
    pub fn top_files(&self, n: usize) -> Vec<(&FileKey, &FileAgg)> {
        select_top(
            self.files.iter().collect(),
            limit(n),
            |f| f.1.total_ns,
            |f| f.1.bytes,
            |f| f.0,
        )
    }
}

/// A `--top N` as a bound for [`select_top`]: 0 is no bound.
pub fn limit(top: usize) -> Option<usize> {
    (top > 0).then_some(top)
}

/// Admits the `k` largest values of a set seen once more in any order:
/// everything above the k-th largest, and as many equal to it as fit.
struct Quota {
    threshold: u64,
    ties_left: usize,
}

impl Quota {
    fn new(values: impl Iterator<Item = u64>, k: usize) -> Self {
        let mut v: Vec<u64> = values.collect();
        if v.len() <= k {
            return Self {
                threshold: 0,
                ties_left: usize::MAX,
            };
        }
        let (_, &mut threshold, _) = v.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        let above = v.iter().filter(|&&x| x > threshold).count();
        Self {
            threshold,
            ties_left: k - above,
        }
    }

    fn keep(&mut self, x: u64) -> bool {
        if x > self.threshold {
            true
        } else if x == self.threshold && self.ties_left > 0 {
            self.ties_left -= 1;
            true
        } else {
            false
        }
    }
}

/// The top `n` items by time, followed by the items of the top `n` by bytes
/// that are not already in (all items by time when `n` is None). Ties are
/// broken by `key`, so the choice is deterministic; reports and merges of
/// reports make their lists with this one function.
pub fn select_top<T, K: Ord>(
    mut items: Vec<T>,
    n: Option<usize>,
    time: impl Fn(&T) -> u64,
    bytes: impl Fn(&T) -> u64,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    items.sort_by(|a, b| time(b).cmp(&time(a)).then_with(|| key(a).cmp(&key(b))));
    let Some(n) = n else {
        return items;
    };
    let mut by_bytes: Vec<usize> = (0..items.len()).collect();
    by_bytes.sort_by(|&a, &b| {
        bytes(&items[b])
            .cmp(&bytes(&items[a]))
            .then_with(|| key(&items[a]).cmp(&key(&items[b])))
    });
    let mut chosen: Vec<usize> = (0..items.len().min(n)).collect();
    for i in by_bytes.into_iter().take(n) {
        if i >= n {
            chosen.push(i);
        }
    }
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    chosen
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(dev: u32, path: &str, lat: u64, bytes: u64) -> CopyUp {
        CopyUp {
            start_ns: 0,
            latency_ns: lat,
            data_ns: Some(lat / 2),
            data_len: Some(bytes),
            size: bytes,
            tgid: 100,
            tid: 100,
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

    impl Aggregator {
        fn add_plain(&mut self, e: &CopyUp) {
            self.add(e, &Attribution::default(), None);
        }
    }

    /// Each copy-up lands in one leaf, whichever way its attribution is
    /// found (the same `Arc`, or an equal id in a new one; a layer whose
    /// diff-id changed is another leaf), and the views sum the leaves.
    #[test]
    fn leaves_sum_into_every_view() {
        let mut a = Aggregator::new(1000);
        let id: Arc<str> = "c1".into();
        let same = Attribution {
            container: Some(id.clone()),
            layer: Some(1),
            outside: false,
        };
        let equal = Attribution {
            container: Some("c1".into()),
            ..same.clone()
        };
        let src = |d: &str| SourceLayer {
            index: 1,
            diff_id: Some(d.into()),
            created_by: None,
            data_index: None,
        };
        a.add(&ev(1, "a", 100, 1), &same, Some(&src("sha256:aa")));
        a.add(&ev(1, "b", 200, 2), &same, Some(&src("sha256:aa")));
        a.add(&ev(1, "c", 400, 4), &equal, Some(&src("sha256:aa")));
        a.add(&ev(1, "d", 800, 8), &same, Some(&src("sha256:bb")));
        a.add(&ev(1, "e", 1600, 16), &Attribution::default(), None);
        assert_eq!(
            a.leaves.len(),
            3,
            "{:?}",
            a.leaves.iter().map(|l| &l.key).collect::<Vec<_>>()
        );
        let m = &a.per_overlay()[&OverlayKey::dev_only(1)];
        assert_eq!((m.count, m.bytes, m.latency.len()), (5, 31, 5));
        assert_eq!(m.latency.max(), 1600);
        let c = &a.per_container()["c1"];
        assert_eq!((c.count, c.bytes, c.total_ns), (4, 15, 1500));
        let layers = a.per_layer();
        let aa = &layers[&LayerKey::DiffId("sha256:aa".into())];
        assert_eq!(
            (aa.total.count, aa.total.bytes, aa.total.size.len()),
            (3, 7, 3)
        );
        assert_eq!(layers[&LayerKey::DiffId("sha256:bb".into())].total.count, 1);
        assert_eq!(a.bytes(), 31);
        assert_eq!(a.unattributed, 1);
    }

    #[test]
    fn totals_per_container_and_layer() {
        let mut a = Aggregator::new(1000);
        let web = Attribution {
            container: Some("c1".into()),
            layer: Some(3),
            outside: false,
        };
        let db = Attribution {
            container: Some("c2".into()),
            layer: Some(2),
            outside: false,
        };
        let src = SourceLayer {
            index: 3,
            diff_id: Some("sha256:aa".into()),
            created_by: Some("COPY x /".into()),
            data_index: None,
        };
        a.add(&ev(1, "x", 100, 10), &web, Some(&src));
        a.add(&ev(2, "y", 300, 20), &db, Some(&src));
        a.add(&ev(2, "z", 300, 5), &db, None);
        a.add(&ev(3, "w", 300, 5), &Attribution::default(), None);
        assert_eq!(a.per_container()["c1"].count, 1);
        assert_eq!(a.per_container()["c2"].bytes, 25);
        assert_eq!(a.unattributed, 1);
        // The same image layer in two containers is one layer.
        let shared = &a.per_layer()[&LayerKey::DiffId("sha256:aa".into())];
        assert_eq!((shared.total.count, shared.total.total_ns), (2, 400));
        assert_eq!(shared.created_by.as_deref(), Some("COPY x /"));
        assert_eq!(shared.containers.len(), 2);
        assert_eq!(
            a.per_layer()[&LayerKey::Index {
                overlay: OverlayKey::dev_only(2),
                index: 2
            }]
                .total
                .bytes,
            5
        );
        assert_eq!(a.per_layer().len(), 2);
        assert_eq!(a.top_files(1)[0].1.attribution, db);
    }

    #[test]
    fn causes_per_file_container_and_layer() {
        let mut a = Aggregator::new(1000);
        let web = Attribution {
            container: Some("c1".into()),
            layer: Some(3),
            outside: false,
        };
        let src = SourceLayer {
            index: 3,
            diff_id: Some("sha256:aa".into()),
            created_by: Some("COPY x /".into()),
            data_index: None,
        };
        let with = |path: &str, cause: Cause| CopyUp {
            cause,
            ..ev(1, path, 100, 10)
        };
        a.add(&with("srv", Cause::Parent), &web, Some(&src));
        a.add(&with("srv/a", Cause::Metadata), &web, Some(&src));
        a.add(&with("srv/b", Cause::Metadata), &web, Some(&src));
        a.add(&with("db", Cause::Write), &web, Some(&src));
        // A file copied up again (another overlay of the same container
        // path is the same key) under another cause keeps both.
        a.add(&with("db", Cause::Truncate), &web, Some(&src));
        let c = &a.per_container()["c1"];
        assert_eq!(c.by_cause[Cause::Metadata.index()], 2);
        assert_eq!(c.by_cause[Cause::Parent.index()], 1);
        assert_eq!(c.by_cause[Cause::Write.index()], 1);
        assert_eq!(c.by_cause[Cause::Truncate.index()], 1);
        assert_eq!(c.by_cause.iter().sum::<u64>(), c.count);
        let layer = &a.per_layer()[&LayerKey::DiffId("sha256:aa".into())];
        assert_eq!(layer.total.by_cause, c.by_cause);
        let file = |p: &str| {
            a.files
                .iter()
                .find(|(k, _)| k.path == p.as_bytes())
                .map(|(_, f)| f.causes())
                .unwrap()
        };
        assert_eq!(file("srv"), vec![Cause::Parent]);
        assert_eq!(file("srv/a"), vec![Cause::Metadata]);
        assert_eq!(file("db"), vec![Cause::Write, Cause::Truncate]);
        let t = crate::report::totals(c);
        assert_eq!(
            serde_json::to_value(&t.by_cause).unwrap(),
            serde_json::json!({"write": 1, "truncate": 1, "metadata": 2, "parent": 1})
        );
    }

    #[test]
    fn same_path_of_two_containers_on_one_device_is_two_files() {
        let mut a = Aggregator::new(1000);
        let one = Attribution {
            container: Some("c1".into()),
            layer: Some(2),
            outside: false,
        };
        let two = Attribution {
            container: Some("c2".into()),
            layer: Some(2),
            outside: false,
        };
        a.add(&ev(7, "etc/app.conf", 100, 10), &one, None);
        a.add(&ev(7, "etc/app.conf", 100, 10), &two, None);
        let top = a.top_files(10);
        assert_eq!(top.len(), 2);
        assert!(top.iter().all(|(_, f)| f.count == 1));
        let owners: BTreeSet<_> = top
            .iter()
            .map(|(_, f)| f.attribution.container.clone())
            .collect();
        assert_eq!(owners.len(), 2);
    }

    #[test]
    fn totals_per_mount_and_file() {
        let mut a = Aggregator::new(1000);
        a.add_plain(&ev(1, "a", 1000, 10));
        a.add_plain(&ev(1, "a", 3000, 10));
        a.add_plain(&ev(1, "b", 2000, 5));
        a.add_plain(&ev(2, "a", 500, 1));
        let m = &a.per_overlay()[&OverlayKey::dev_only(1)];
        assert_eq!((m.count, m.bytes), (3, 25));
        assert_eq!(m.latency.min(), 1000);
        assert!(m.latency.equivalent(m.latency.max(), 3000));

        let top = a.top_files(10);
        assert_eq!(top[0].0.path, b"a");
        assert_eq!(top[0].0.overlay.dev, 1);
        assert_eq!(
            (top[0].1.count, top[0].1.total_ns, top[0].1.max_ns),
            (2, 4000, 3000)
        );
        assert_eq!(top[0].1.percentile(50.0), 1000);
        assert_eq!(top[0].1.percentile(99.0), 3000);
        assert_eq!(top.len(), 3);
        assert_eq!(a.top_files(1).len(), 1);
        // 0: every file.
        assert_eq!(a.top_files(0).len(), 3);
        assert_eq!(a.files_seen, 3);
        // Far larger values are kept, not clamped.
        a.add_plain(&ev(1, "slow", 90_000_000_000, 1));
        let h = &a.per_overlay()[&OverlayKey::dev_only(1)].latency;
        assert!(h.equivalent(h.max(), 90_000_000_000));
    }

    #[test]
    fn top_lists_take_the_slowest_then_the_biggest() {
        let mut a = Aggregator::new(1000);
        a.add_plain(&ev(1, "slow", 9_000, 1));
        a.add_plain(&ev(1, "slower", 10_000, 2));
        a.add_plain(&ev(1, "big", 10, 1 << 30));
        a.add_plain(&ev(1, "small", 5, 1));
        let top: Vec<&[u8]> = a
            .top_files(2)
            .iter()
            .map(|(k, _)| k.path.as_slice())
            .collect();
        // Two by time, plus the biggest that was not among them.
        assert_eq!(top, vec![&b"slower"[..], b"slow", b"big"]);
        let all = select_top(vec![3u64, 1, 2], None, |x| *x, |_| 0, |x| *x);
        assert_eq!(all, vec![3, 2, 1]);
        let none: Vec<u64> = select_top(vec![], Some(3), |x| *x, |x| *x, |x| *x);
        assert!(none.is_empty());
    }

    #[test]
    fn file_table_is_bounded_and_keeps_the_costly() {
        let mut a = Aggregator::new(100);
        a.add_plain(&ev(1, "expensive", 1_000_000_000, 1));
        for i in 0..10_000 {
            a.add_plain(&ev(1, &format!("f{i}"), 10 + i % 7, 1));
        }
        assert!(a.files.len() <= 100);
        assert!(a.evicted_files >= 9_900);
        assert_eq!(a.files.len() as u64 + a.evicted_files, 10_001);
        assert_eq!(a.files_seen, 10_001);
        assert_eq!(a.top_files(0).len(), a.files.len());
        assert_eq!(a.top_files(1)[0].0.path, b"expensive");
        // A quick but huge copy-up survives pruning too (the bytes list).
        let mut a = Aggregator::new(100);
        a.add_plain(&ev(1, "huge", 1, 1 << 40));
        for i in 0..10_000 {
            a.add_plain(&ev(1, &format!("f{i}"), 10 + i % 7, 1));
        }
        assert!(a.files.keys().any(|k| k.path == b"huge"));
        // Many equal costs: pruning still bounds the table.
        let mut a = Aggregator::new(100);
        for i in 0..1_000 {
            a.add_plain(&ev(1, &format!("same{i}"), 5, 5));
        }
        assert!(a.files.len() <= 100);
        // Mount totals are unaffected by eviction.
        assert_eq!(a.per_overlay()[&OverlayKey::dev_only(1)].count, 1_000);
        assert_eq!(a.files.len() as u64 + a.evicted_files, 1_000);
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 0.0), 7);
    }
}
