//! Mount -> container/image/layer resolution, one resolver per runtime.
//!
//! A [`Resolver`] claims the overlay mounts that are its containers' root file systems
//! and describes them as [`ContainerInfo`]. [`Catalog`] is what the tracer holds: it
//! maps overlay devices to what is known about them, rescans (rate-limited) when it
//! meets an unknown device, keeps entries of mounts that have gone away, and answers
//! which lower layer a copied-up path came from.

pub mod bolt;
pub mod cgroup;
pub mod containerd;
pub mod docker;
pub mod layer;
pub mod oci;
pub mod podman;
pub mod safe_fs;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::mounts::{self, serialize_opt_path, serialize_path, Dev, OverlayMount};
use layer::LayerStack;

/// One container runtime's view of the overlay mounts.
pub trait Resolver: Send {
    /// Short runtime name, e.g. "docker"; also [`ContainerInfo::runtime`].
    fn runtime(&self) -> &'static str;
    /// The containers whose root file system is one of `mounts`. Never fails as a
    /// whole: unreadable or corrupt metadata is logged and degrades single fields to
    /// `None`; a mount it cannot attribute is simply not returned. Layer metadata
    /// that attribution does not need may be left [`LayerInfo::deferred`]: call
    /// [`ContainerInfo::complete`] (or [`LayerInfo::complete`]) before reading
    /// diff-ids, chain-ids, sizes or instructions.
    fn scan(&mut self, mounts: &[OverlayMount]) -> Vec<ContainerInfo>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: Option<String>,
    pub image: ImageInfo,
    #[serde(serialize_with = "serialize_path")]
    pub mountpoint: PathBuf,
    pub dev: Dev,
    pub runtime: &'static str,
    /// The container's read-write layer (overlay index 0).
    #[serde(serialize_with = "serialize_opt_path")]
    pub upperdir: Option<PathBuf>,
    /// One per lowerdir, uppermost first: `layers[i].index == i + 1`.
    pub layers: Vec<LayerInfo>,
    /// The Kubernetes pod the container is in (from the runtime's labels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodInfo>,
    /// mountinfo id of the mount this was resolved from.
    #[serde(skip)]
    pub mount_id: u32,
}

impl ContainerInfo {
    /// The layer with this overlay index (1 = first lowerdir).
    pub fn layer(&self, index: usize) -> Option<&LayerInfo> {
        index.checked_sub(1).and_then(|i| self.layers.get(i))
    }

    /// Reads every layer's deferred metadata ([`LayerInfo::complete`]).
    pub fn complete(&mut self) {
        self.layers.iter_mut().for_each(LayerInfo::complete);
    }

    /// 12-character id, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// `name` if known, else the short id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or_else(|| self.short_id())
    }

    /// Matches a `--container` filter: the exact name, or a prefix of the id.
    pub fn matches(&self, filter: &str) -> bool {
        !filter.is_empty()
            && (self.name.as_deref() == Some(filter.trim_start_matches('/'))
                || self.id.starts_with(filter))
    }
}

/// A Kubernetes pod, as the runtime's labels or metadata name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `sha256:<hex>`.
    pub id: Option<String>,
    /// `repo:tag` names pointing at this image, sorted.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Overlay layer index: 1 = first lowerdir (the init layer for Docker).
    pub index: usize,
    /// The layer's directory name in the graph driver (overlay2/<cache_id>).
    pub cache_id: Option<String>,
    /// The `l/<short_id>` link name.
    pub short_id: Option<String>,
    pub diff_id: Option<String>,
    pub chain_id: Option<String>,
    /// Bytes, as the layer store records it (what `docker history` shows).
    pub size: Option<u64>,
    /// The image-history instruction that created the layer ("" when the history
    /// entry has none, e.g. an imported base).
    pub created_by: Option<String>,
    pub comment: Option<String>,
    /// The container's init layer (not part of the image).
    pub init: bool,
    /// Position in the image, 1 = base layer; `None` for the init layer.
    pub position: Option<usize>,
    /// The layer's directory (absolute), validated to lie in the runtime's root.
    #[serde(serialize_with = "serialize_opt_path")]
    pub dir: Option<PathBuf>,
    /// What the resolver has not read yet (diff-id, chain-id, size,
    /// instruction): [`LayerInfo::complete`] reads it. `None` once read, or
    /// when the resolver read everything at scan time.
    #[serde(skip)]
    pub deferred: Option<Deferred>,
}

impl LayerInfo {
    /// Reads the metadata the resolver deferred (at most once per layer and
    /// scan: the resolver caches what it read). Never fails: unreadable
    /// metadata is logged and leaves its fields `None`.
    pub fn complete(&mut self) {
        if let Some(d) = self.deferred.take() {
            (d.0)(self);
        }
    }
}

/// A resolver's way to fill a [`LayerInfo`]'s deferred fields on first need:
/// a scan reads only what attribution needs (which container owns which
/// mount, each layer's directory and identity), and a layer's diff-id, size
/// and history are read when a report or an event first asks for them.
///
/// Compares equal to any other `Deferred`: two scans that found the same
/// layer describe it equally, whether or not its metadata was read.
#[derive(Clone)]
pub struct Deferred(Arc<dyn Fn(&mut LayerInfo) + Send + Sync>);

impl Deferred {
    pub fn new(f: impl Fn(&mut LayerInfo) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deferred")
    }
}

impl PartialEq for Deferred {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Deferred {}

/// The layer a copied-up file came from, as recorded on copy-up events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLayer {
    pub index: usize,
    pub diff_id: Option<String>,
    pub created_by: Option<String>,
}

/// Every runtime's resolver, in the order they claim mounts: Docker
/// (overlay2), containerd (its overlayfs snapshotter, also Docker's
/// containerd store), containers/storage (Podman, CRI-O).
pub fn all_resolvers(docker: &crate::cli::DockerArgs) -> Vec<Box<dyn Resolver>> {
    vec![
        Box::new(docker::DockerResolver::new(docker)),
        Box::new(containerd::ContainerdResolver::new()),
        Box::new(podman::PodmanResolver::new(docker.podman_root.clone())),
    ]
}

/// Containers and the overlay mounts no resolver claimed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    pub containers: Vec<ContainerInfo>,
    pub mounts: Vec<OverlayMount>,
}

/// Runs every resolver over `mounts`. A device claimed twice (a bind mount of a
/// container's root, or two runtimes) goes to the first claim.
pub fn inventory<'a>(
    resolvers: impl IntoIterator<Item = &'a mut (dyn Resolver + 'static)>,
    mounts: &[OverlayMount],
) -> Inventory {
    let mut containers: Vec<ContainerInfo> = Vec::new();
    for r in resolvers {
        for c in r.scan(mounts) {
            if !containers.iter().any(|k| k.dev == c.dev) {
                containers.push(c);
            }
        }
    }
    let mut plain: Vec<OverlayMount> = Vec::new();
    for m in mounts {
        if !containers.iter().any(|c| c.dev == m.dev) && !plain.iter().any(|p| p.dev == m.dev) {
            plain.push(m.clone());
        }
    }
    Inventory {
        containers,
        mounts: plain,
    }
}

/// What the catalog knows about one overlay mount (one instance of a device:
/// the kernel gives an unmounted overlay's device number to the next overlay
/// mounted, so one device can be several containers over a trace).
///
/// Times are CLOCK_MONOTONIC nanoseconds, the clock of event timestamps.
#[derive(Debug)]
pub struct MountEntry {
    pub mount: OverlayMount,
    pub container: Option<ContainerInfo>,
    /// The mount was not in the latest scan; what was known is kept.
    pub gone: bool,
    /// Unique per mount instance within one catalog.
    pub instance: u64,
    /// The scan before the first one that saw the mount (0: there was none):
    /// the mount did not exist then.
    pub absent_before_ns: u64,
    /// When a scan first saw the mount.
    pub first_seen_ns: u64,
    /// The latest time the mount was known to be mounted.
    pub last_seen_ns: u64,
    /// The first scan that no longer saw the mount.
    pub gone_at_ns: Option<u64>,
    /// `stat` of the mountpoint cannot confirm the mount (e.g. it is only
    /// visible in another mount namespace): rely on scans alone.
    unconfirmable: bool,
    stack: LayerStack,
}

impl MountEntry {
    fn new(mount: OverlayMount, container: Option<ContainerInfo>) -> Self {
        let dirs = match &container {
            Some(c) => c.layers.iter().map(|l| l.dir.clone()).collect(),
            // Relative lowerdirs of unknown mounts cannot be located: treat as unknown.
            None => mount
                .lowerdirs
                .iter()
                .map(|p| p.is_absolute().then(|| p.clone()))
                .collect(),
        };
        Self {
            mount,
            container,
            gone: false,
            instance: 0,
            absent_before_ns: 0,
            first_seen_ns: 0,
            last_seen_ns: 0,
            gone_at_ns: None,
            unconfirmable: false,
            stack: LayerStack::new(dirs),
        }
    }

    /// Known to be mounted at `t`.
    fn covers(&self, t: u64) -> bool {
        self.first_seen_ns <= t && t <= self.last_seen_ns
    }

    /// Could have been mounted at `t`, as far as the scans tell.
    fn possible_at(&self, t: u64) -> bool {
        self.absent_before_ns < t && self.gone_at_ns.is_none_or(|g| t < g)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, so of
/// event timestamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a local timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Whether the mount at `mountpoint` is the overlay with device `dev`.
fn mounted(mountpoint: &Path, dev: Dev) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(mountpoint).is_ok_and(|m| {
        let d = m.dev();
        Dev::new(libc::major(d), libc::minor(d)) == dev
    })
}

/// Replaced mount instances kept for late events (oldest dropped first).
const MAX_RETIRED: usize = 1024;
/// Distinct unknown cgroups that may each trigger one rescan, before the
/// record of them is reset.
const MAX_TRIED_CGROUPS: usize = 65_536;
/// Scans further apart than this leave a hole in what is known: mounts may
/// have come and gone unseen (the tracer was stopped or starved; it normally
/// rescans every few seconds and on every change of the mount table).
const MAX_SCAN_GAP_NS: u64 = 10_000_000_000;
/// Holes remembered.
const MAX_HOLES: usize = 256;

/// Overlay devices -> mounts/containers, kept current for a running tracer.
pub struct Catalog {
    resolvers: Vec<Box<dyn Resolver>>,
    mountinfo: PathBuf,
    /// The current (latest) instance of every device seen.
    entries: HashMap<Dev, MountEntry>,
    /// Instances replaced by a newer mount on the same device, oldest first.
    retired: VecDeque<MountEntry>,
    next_instance: u64,
    last_scan: Option<Instant>,
    /// Monotonic time of the latest scan (0: none yet).
    scan_ns: u64,
    /// Times between two consecutive scans that were too far apart.
    holes: VecDeque<(u64, u64)>,
    min_rescan: Duration,
    /// The mount table of the last full scan, and when it ran.
    last_full: Option<(Vec<u8>, Instant)>,
    /// Where cgroup v2 is mounted, once found.
    cgroup_root: Option<PathBuf>,
    cgroups: cgroup::CgroupSnapshot,
    /// Unknown cgroups that already caused a rescan.
    cgroups_tried: HashSet<u64>,
    /// Tells whether a mount is (still) the given overlay; `stat` normally.
    is_mounted: fn(&Path, Dev) -> bool,
}

impl Catalog {
    /// Default minimum time between rescans triggered by unknown devices.
    pub const DEFAULT_MIN_RESCAN: Duration = Duration::from_secs(1);
    /// Metadata is re-read at least this often even when mounts are unchanged
    /// (renamed containers, new tags).
    pub const FULL_SCAN_EVERY: Duration = Duration::from_secs(60);

    pub fn new(resolvers: Vec<Box<dyn Resolver>>) -> Self {
        Self::with_mountinfo(resolvers, PathBuf::from(mounts::MOUNTINFO))
    }

    pub fn with_mountinfo(resolvers: Vec<Box<dyn Resolver>>, mountinfo: PathBuf) -> Self {
        Self {
            resolvers,
            mountinfo,
            entries: HashMap::new(),
            retired: VecDeque::new(),
            next_instance: 1,
            last_scan: None,
            scan_ns: 0,
            holes: VecDeque::new(),
            min_rescan: Self::DEFAULT_MIN_RESCAN,
            last_full: None,
            cgroup_root: None,
            cgroups: cgroup::CgroupSnapshot::default(),
            cgroups_tried: HashSet::new(),
            is_mounted: mounted,
        }
    }

    pub fn set_min_rescan(&mut self, d: Duration) {
        self.min_rescan = d;
    }

    pub fn mountinfo_path(&self) -> &Path {
        &self.mountinfo
    }

    /// Re-reads the mount table and rescans. Mounts that disappeared stay, marked
    /// `gone`; a device now used by a different mount gets a fresh entry.
    ///
    /// When the mount table is byte-for-byte what the last full scan saw
    /// (and that scan is recent), the runtimes' metadata is not read again:
    /// on a host with a thousand containers a scan is the expensive part.
    pub fn refresh(&mut self) -> anyhow::Result<()> {
        self.refresh_inner(false)
    }

    /// `walk_cgroups`: map cgroups to containers even if the mount table
    /// did not change (an unknown cgroup was seen).
    fn refresh_inner(&mut self, walk_cgroups: bool) -> anyhow::Result<()> {
        self.last_scan = Some(Instant::now());
        let now = monotonic_ns();
        let data = std::fs::read(&self.mountinfo)
            .with_context(|| format!("reading {}", self.mountinfo.display()))?;
        if self.cgroup_root.is_none() {
            self.cgroup_root = cgroup::cgroup2_root(&data);
        }
        let unchanged = self
            .last_full
            .as_ref()
            .is_some_and(|(prev, at)| *prev == data && at.elapsed() < Self::FULL_SCAN_EVERY);
        if unchanged {
            // Everything mounted at the last full scan still is.
            self.note_scan(now);
            for e in self.entries.values_mut().filter(|e| !e.gone) {
                e.last_seen_ns = now;
            }
        } else {
            let parsed = mounts::parse_mountinfo(&data);
            for w in &parsed.warnings {
                log::warn!("{}: {w}", self.mountinfo.display());
            }
            self.apply_at(&parsed.mounts, now);
            self.last_full = Some((data, Instant::now()));
        }
        if !unchanged || walk_cgroups {
            self.walk_cgroups();
        }
        Ok(())
    }

    /// Maps the cgroups named after known containers to them.
    fn walk_cgroups(&mut self) {
        let Some(root) = &self.cgroup_root else {
            return;
        };
        let ids: HashSet<String> = self
            .entries
            .values()
            .chain(self.retired.iter())
            .filter_map(|e| e.container.as_ref().map(|c| c.id.clone()))
            .collect();
        match cgroup::walk(root, &ids) {
            Ok(snap) => {
                // Keep what is known of cgroups that are gone: late events.
                let mut owner = std::mem::take(&mut self.cgroups.owner);
                owner.retain(|_, cid| ids.contains(cid));
                owner.extend(snap.owner);
                self.cgroups = cgroup::CgroupSnapshot {
                    alive: snap.alive,
                    owner,
                };
            }
            Err(e) => log::debug!("walking cgroups under {}: {e}", root.display()),
        }
    }

    /// [`refresh`](Self::refresh) with a given mount list.
    pub fn apply(&mut self, mounts: &[OverlayMount]) {
        self.apply_at(mounts, monotonic_ns());
    }

    /// [`apply`](Self::apply) as of `now` (monotonic ns).
    pub fn apply_at(&mut self, mounts: &[OverlayMount], now: u64) {
        let previous_scan = self.scan_ns;
        self.note_scan(now);
        let inv = inventory(self.resolvers.iter_mut().map(|r| r.as_mut()), mounts);
        let mut by_dev: HashMap<Dev, ContainerInfo> =
            inv.containers.into_iter().map(|c| (c.dev, c)).collect();
        let mut seen = HashSet::new();
        for m in mounts {
            // First line per device wins (bind mounts of an overlay share its device).
            if !seen.insert(m.dev) {
                continue;
            }
            let container = by_dev.remove(&m.dev);
            match self.entries.get_mut(&m.dev) {
                // The same mount: the same instance, still there.
                Some(e) if e.mount == *m && e.gone_at_ns.is_none() => {
                    if e.container != container {
                        // Metadata changed (renamed, or readable now).
                        let mut fresh = MountEntry::new(m.clone(), container);
                        fresh.instance = e.instance;
                        fresh.absent_before_ns = e.absent_before_ns;
                        fresh.first_seen_ns = e.first_seen_ns;
                        *e = fresh;
                    }
                    e.gone = false;
                    e.last_seen_ns = now;
                }
                _ => {
                    let mut fresh = MountEntry::new(m.clone(), container);
                    fresh.instance = self.next_instance;
                    self.next_instance += 1;
                    fresh.absent_before_ns = previous_scan;
                    fresh.first_seen_ns = now;
                    fresh.last_seen_ns = now;
                    if let Some(mut old) = self.entries.insert(m.dev, fresh) {
                        old.gone = true;
                        old.gone_at_ns.get_or_insert(now);
                        self.retire(old);
                    }
                }
            }
        }
        for (dev, e) in self.entries.iter_mut() {
            if !seen.contains(dev) {
                e.gone = true;
                e.gone_at_ns.get_or_insert(now);
            }
        }
    }

    fn note_scan(&mut self, now: u64) {
        if self.scan_ns != 0 && now.saturating_sub(self.scan_ns) > MAX_SCAN_GAP_NS {
            if self.holes.len() >= MAX_HOLES {
                self.holes.pop_front();
            }
            self.holes.push_back((self.scan_ns, now));
        }
        self.scan_ns = self.scan_ns.max(now);
    }

    fn retire(&mut self, e: MountEntry) {
        if self.retired.len() >= MAX_RETIRED {
            self.retired.pop_front();
        }
        self.retired.push_back(e);
    }

    /// The entry for `dev`, if known. Does not rescan.
    pub fn get(&self, dev: Dev) -> Option<&MountEntry> {
        self.entries.get(&dev)
    }

    /// The entry for `dev`; an unknown device triggers a rescan unless one ran
    /// within the minimum rescan interval.
    pub fn lookup(&mut self, dev: Dev) -> Option<&MountEntry> {
        if !self.entries.contains_key(&dev) && self.rescan_allowed() {
            self.rescan(false);
        }
        self.entries.get(&dev)
    }

    fn rescan(&mut self, walk_cgroups: bool) {
        if let Err(e) = self.refresh_inner(walk_cgroups) {
            log::warn!("rescanning overlay mounts: {e:#}");
        }
    }

    fn rescan_allowed(&self) -> bool {
        self.last_scan
            .is_none_or(|t| t.elapsed() >= self.min_rescan)
    }

    /// The mount instance a copy-up on `dev` at time `t` (monotonic ns, the
    /// event's timestamp) by a process in cgroup `cgroup` happened on.
    ///
    /// Device numbers are reused as soon as an overlay is unmounted, so the
    /// current entry of a device need not be the mount an event happened on
    /// (the event may be older than the latest scan, or newer). In order:
    /// - a mount known to be mounted at `t` (rescanning, or checking with
    ///   `stat` that the mount is still there, when `t` is newer than what
    ///   is known);
    /// - the container whose cgroup the writer is in (events of processes
    ///   inside containers), found by walking the cgroups;
    /// - for writers outside any container (the runtime setting up a
    ///   container, a host process): the only mount the scans leave possible,
    ///   if no scans were missed around it (the tracer was not stopped).
    ///
    /// `None` when it cannot be told: the copy-up is then counted as not
    /// attributed, never attributed to the wrong container.
    pub fn resolve_event(&mut self, dev: Dev, t: u64, cgroup: u64) -> Option<u64> {
        // A writer in a cgroup never seen: learn whose it is (once per cgroup).
        if self.cgroup_root.is_some()
            && !self.cgroups.alive.contains(&cgroup)
            && !self.cgroups.owner.contains_key(&cgroup)
        {
            if self.cgroups_tried.len() >= MAX_TRIED_CGROUPS {
                self.cgroups_tried.clear();
            }
            if self.cgroups_tried.insert(cgroup) {
                self.rescan(true);
            }
        }
        if !self.entries.contains_key(&dev) {
            if t > self.scan_ns {
                // Mounted after the latest scan (a runtime mounts, then at
                // once writes into the mount): always worth a scan, however
                // recent the last one. Bounded: the scan is newer than every
                // queued event.
                self.rescan(false);
            } else {
                self.lookup(dev);
            }
        }
        // Newer than what is known: is the current mount still there?
        let is_mounted = self.is_mounted;
        let stale = match self.entries.get_mut(&dev) {
            Some(e) if t > e.last_seen_ns && !e.gone => {
                if !e.unconfirmable && is_mounted(&e.mount.mountpoint, dev) {
                    e.last_seen_ns = monotonic_ns().max(t);
                    None
                } else {
                    Some((e.instance, e.unconfirmable))
                }
            }
            _ => None,
        };
        if let Some((instance, unconfirmable)) = stale {
            if !unconfirmable || self.rescan_allowed() {
                self.rescan(false);
                if let Some(e) = self.entries.get_mut(&dev) {
                    if e.instance == instance && !e.gone && !unconfirmable {
                        // Scans see it, stat does not: stop asking stat.
                        e.unconfirmable = true;
                    }
                }
            }
        }
        let instances = || {
            self.entries
                .get(&dev)
                .into_iter()
                .chain(self.retired.iter().rev().filter(|e| e.mount.dev == dev))
        };
        if let Some(e) = instances().find(|e| e.covers(t)) {
            return Some(e.instance);
        }
        if let Some(cid) = self.cgroups.owner.get(&cgroup) {
            if let Some(e) =
                instances().find(|e| e.container.as_ref().is_some_and(|c| &c.id == cid))
            {
                return Some(e.instance);
            }
        }
        // A process in a cgroup that no longer exists was most likely in a
        // container that came and went unseen: only the above is certain.
        let outside = self.cgroup_root.is_none() || self.cgroups.alive.contains(&cgroup);
        if !outside {
            return None;
        }
        let mut possible = instances().filter(|e| e.possible_at(t));
        let only = match (possible.next(), possible.next()) {
            (Some(e), None) => e,
            _ => return None,
        };
        // ... unless scans missed a stretch of time around it.
        let (from, to) = if t < only.first_seen_ns {
            (only.absent_before_ns, only.first_seen_ns)
        } else {
            (only.last_seen_ns, only.gone_at_ns.unwrap_or(u64::MAX))
        };
        let blind = self.holes.iter().any(|&(a, b)| a < to && from < b);
        (!blind).then_some(only.instance)
    }

    /// A mount instance of `dev` (current or replaced).
    pub fn instance(&self, dev: Dev, instance: u64) -> Option<&MountEntry> {
        match self.entries.get(&dev) {
            Some(e) if e.instance == instance => Some(e),
            _ => self
                .retired
                .iter()
                .rev()
                .find(|e| e.instance == instance && e.mount.dev == dev),
        }
    }

    fn instance_mut(&mut self, dev: Dev, instance: u64) -> Option<&mut MountEntry> {
        match self.entries.get_mut(&dev) {
            Some(e) if e.instance == instance => Some(e),
            _ => self
                .retired
                .iter_mut()
                .rev()
                .find(|e| e.instance == instance && e.mount.dev == dev),
        }
    }

    /// The lower layer that `rel` (relative to the overlay root) comes from.
    /// `None` when the device is unknown or no lower layer holds the path.
    pub fn source_layer(&mut self, dev: Dev, rel: &[u8]) -> Option<SourceLayer> {
        let instance = self.lookup(dev)?.instance;
        self.source_layer_in(dev, instance, rel)
    }

    /// [`source_layer`](Self::source_layer) in one mount instance.
    pub fn source_layer_in(&mut self, dev: Dev, instance: u64, rel: &[u8]) -> Option<SourceLayer> {
        let e = self.instance_mut(dev, instance)?;
        let index = e.stack.source_index(rel)?;
        let layer = e
            .container
            .as_mut()
            .and_then(|c| c.layers.get_mut(index.checked_sub(1)?));
        let layer = layer.map(|l| {
            l.complete();
            &*l
        });
        Some(SourceLayer {
            index,
            diff_id: layer.and_then(|l| l.diff_id.clone()),
            created_by: layer.and_then(|l| l.created_by.clone()),
        })
    }

    pub fn entries(&self) -> impl Iterator<Item = &MountEntry> {
        self.entries.values()
    }

    /// Containers whose name or id prefix matches any of `filters`.
    pub fn matching(&self, filters: &[String]) -> Vec<&ContainerInfo> {
        self.entries
            .values()
            .filter_map(|e| e.container.as_ref())
            .filter(|c| filters.iter().any(|f| c.matches(f)))
            .collect()
    }

    /// Everything currently mounted, as `ovltrace layers --json` shows it.
    pub fn inventory(&self) -> Inventory {
        let mut inv = Inventory::default();
        let mut live: Vec<&MountEntry> = self.entries.values().filter(|e| !e.gone).collect();
        live.sort_by_key(|e| e.mount.mount_id);
        for e in live {
            match &e.container {
                Some(c) => {
                    let mut c = c.clone();
                    c.complete();
                    inv.containers.push(c);
                }
                None => inv.mounts.push(e.mount.clone()),
            }
        }
        inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl Resolver for Fake {
        fn runtime(&self) -> &'static str {
            "fake"
        }
        fn scan(&mut self, mounts: &[OverlayMount]) -> Vec<ContainerInfo> {
            mounts
                .iter()
                .filter(|m| m.mountpoint.starts_with("/c"))
                .map(|m| ContainerInfo {
                    id: format!("{:064x}", m.mount_id),
                    name: Some(format!("c{}", m.mount_id)),
                    image: ImageInfo::default(),
                    mountpoint: m.mountpoint.clone(),
                    dev: m.dev,
                    runtime: "fake",
                    upperdir: m.upperdir.clone(),
                    layers: m
                        .lowerdirs
                        .iter()
                        .enumerate()
                        .map(|(i, d)| LayerInfo {
                            index: i + 1,
                            diff_id: Some(format!("sha256:{i}")),
                            dir: Some(d.clone()),
                            ..Default::default()
                        })
                        .collect(),
                    pod: None,
                    mount_id: m.mount_id,
                })
                .collect()
        }
    }

    fn mount(id: u32, minor: u32, mp: &str, lowers: &[&Path]) -> OverlayMount {
        OverlayMount {
            mount_id: id,
            parent_id: 1,
            dev: Dev::new(0, minor),
            mountpoint: mp.into(),
            upperdir: None,
            workdir: None,
            lowerdirs: lowers.iter().map(|p| p.to_path_buf()).collect(),
            datadirs: vec![],
            options: vec![],
        }
    }

    #[test]
    fn catalog_keeps_gone_mounts_and_resolves_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let (l1, l2) = (tmp.path().join("l1"), tmp.path().join("l2"));
        std::fs::create_dir_all(l1.join("etc")).unwrap();
        std::fs::create_dir_all(l2.join("etc")).unwrap();
        std::fs::write(l2.join("etc/passwd"), "").unwrap();
        let mut cat = Catalog::new(vec![Box::new(Fake)]);
        let a = mount(10, 40, "/c/a", &[&l1, &l2]);
        let plain = mount(11, 41, "/mnt/p", &[&l2, Path::new("rel/x")]);
        cat.apply(&[a.clone(), plain.clone()]);
        let inv = cat.inventory();
        assert_eq!(inv.containers.len(), 1);
        assert_eq!(inv.mounts, vec![plain.clone()]);
        let s = cat.source_layer(Dev::new(0, 40), b"etc/passwd").unwrap();
        assert_eq!(s.index, 2);
        assert_eq!(s.diff_id.as_deref(), Some("sha256:1"));
        // Plain mounts resolve indices too, without layer metadata.
        let s = cat.source_layer(Dev::new(0, 41), b"/etc/passwd").unwrap();
        assert_eq!((s.index, s.diff_id), (1, None));
        // The container goes away: its entry stays, marked gone.
        cat.apply(std::slice::from_ref(&plain));
        let e = cat.get(Dev::new(0, 40)).unwrap();
        assert!(e.gone);
        assert_eq!(e.container.as_ref().unwrap().name.as_deref(), Some("c10"));
        assert_eq!(cat.inventory().containers.len(), 0);
        // Device reused by another mount: replaced.
        let b = mount(12, 40, "/c/b", &[&l2]);
        cat.apply(&[b, plain]);
        let e = cat.get(Dev::new(0, 40)).unwrap();
        assert!(!e.gone);
        assert_eq!(e.container.as_ref().unwrap().name.as_deref(), Some("c12"));
        assert_eq!(cat.matching(&["c12".into()]).len(), 1);
        assert_eq!(cat.matching(&["000000".into()]).len(), 1);
        assert_eq!(cat.matching(&["c10".into()]).len(), 0);
    }

    #[test]
    fn unknown_device_rescans_rate_limited() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = tmp.path().join("mountinfo");
        std::fs::write(&mi, "").unwrap();
        let mut cat = Catalog::with_mountinfo(vec![Box::new(Fake)], mi.clone());
        cat.set_min_rescan(Duration::from_secs(3600));
        assert!(cat.lookup(Dev::new(0, 50)).is_none());
        std::fs::write(
            &mi,
            "50 1 0:50 / /c/x rw - overlay overlay rw,lowerdir=/l\n",
        )
        .unwrap();
        // Within the interval: no rescan.
        assert!(cat.lookup(Dev::new(0, 50)).is_none());
        cat.set_min_rescan(Duration::ZERO);
        assert!(cat.lookup(Dev::new(0, 50)).is_some());
    }

    /// Counts its scans, to see which refreshes reach the runtimes.
    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Resolver for Counting {
        fn runtime(&self) -> &'static str {
            "counting"
        }

        fn scan(&mut self, _: &[OverlayMount]) -> Vec<ContainerInfo> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Vec::new()
        }
    }

    #[test]
    fn unchanged_mount_table_skips_the_metadata_scan() {
        use std::sync::{atomic::Ordering, Arc};
        let tmp = tempfile::tempdir().unwrap();
        let mi = tmp.path().join("mountinfo");
        std::fs::write(
            &mi,
            "50 1 0:50 / /c/x rw - overlay overlay rw,lowerdir=/l\n",
        )
        .unwrap();
        let scans = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut cat = Catalog::with_mountinfo(vec![Box::new(Counting(scans.clone()))], mi.clone());
        cat.refresh().unwrap();
        cat.refresh().unwrap();
        assert_eq!(scans.load(Ordering::SeqCst), 1);
        std::fs::write(
            &mi,
            "50 1 0:50 / /c/x rw - overlay overlay rw,lowerdir=/l\n51 1 0:51 / /c/y rw - overlay overlay rw,lowerdir=/m\n",
        )
        .unwrap();
        cat.refresh().unwrap();
        assert_eq!(scans.load(Ordering::SeqCst), 2);
        assert!(cat.get(Dev::new(0, 51)).is_some());
    }

    /// One overlay mount as mountinfo shows it (mount id, device minor, mountpoint).
    fn parsed(id: u32, minor: u32, mp: &str) -> (String, OverlayMount) {
        let line = format!("{id} 1 0:{minor} / {mp} rw - overlay overlay rw,lowerdir=/l\n");
        let m = mounts::parse_mountinfo(line.as_bytes()).mounts.remove(0);
        (line, m)
    }

    fn name_of(cat: &Catalog, dev: Dev, instance: Option<u64>) -> Option<String> {
        instance
            .and_then(|i| cat.instance(dev, i))
            .and_then(|e| e.container.as_ref())
            .and_then(|c| c.name.clone())
    }

    #[test]
    fn events_go_to_the_mount_they_happened_on_when_devices_are_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = tmp.path().join("mountinfo");
        let dev = Dev::new(0, 40);
        let (_, a) = parsed(11, 40, "/c/a");
        let (b_line, b) = parsed(12, 40, "/c/b");
        std::fs::write(&mi, &b_line).unwrap();
        let mut cat = Catalog::with_mountinfo(vec![Box::new(Fake)], mi);
        cat.is_mounted = |_, _| false;
        // a is mounted, unmounted, then b gets its device.
        cat.apply_at(std::slice::from_ref(&a), 100);
        cat.apply_at(&[], 200);
        cat.apply_at(std::slice::from_ref(&b), 300);
        let on = |cat: &mut Catalog, t| {
            let i = cat.resolve_event(dev, t, 1);
            name_of(cat, dev, i)
        };
        assert_eq!(on(&mut cat, 100).as_deref(), Some("c11"));
        // Between scans: only a can have been mounted (before it was seen gone)...
        assert_eq!(on(&mut cat, 150).as_deref(), Some("c11"));
        // ...and only b after that.
        assert_eq!(on(&mut cat, 250).as_deref(), Some("c12"));
        // Newer than every scan: a rescan confirms b.
        assert_eq!(on(&mut cat, 1_000).as_deref(), Some("c12"));
        // Events on a replaced mount still find its layers.
        let i = cat.resolve_event(dev, 150, 1).unwrap();
        assert!(cat.instance(dev, i).unwrap().gone);
        assert_eq!(cat.get(dev).unwrap().mount.mountpoint, Path::new("/c/b"));
    }

    #[test]
    fn ambiguous_events_are_not_attributed_unless_the_cgroup_tells() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = tmp.path().join("mountinfo");
        let dev = Dev::new(0, 40);
        let (_, a) = parsed(11, 40, "/c/a");
        let (b_line, b) = parsed(12, 40, "/c/b");
        std::fs::write(&mi, &b_line).unwrap();
        let mut cat = Catalog::with_mountinfo(vec![Box::new(Fake)], mi);
        cat.is_mounted = |_, _| false;
        // b replaced a between two scans: at 200 either could have been mounted.
        cat.apply_at(std::slice::from_ref(&a), 100);
        cat.apply_at(std::slice::from_ref(&b), 300);
        assert_eq!(cat.resolve_event(dev, 200, 1), None);
        // With cgroup v2: a writer in b's cgroup is b's.
        let cgroups = tmp.path().join("cgroup");
        std::fs::create_dir(&cgroups).unwrap();
        cat.cgroup_root = Some(cgroups.clone());
        let b_id = cat.get(dev).unwrap().container.as_ref().unwrap().id.clone();
        cat.cgroups.owner.insert(77, b_id);
        let i = cat.resolve_event(dev, 200, 77);
        assert_eq!(name_of(&cat, dev, i).as_deref(), Some("c12"));
        // A cgroup that does not exist (a container that came and went
        // unseen): only what is certain.
        assert_eq!(cat.resolve_event(dev, 200, 99), None);
        let i = cat.resolve_event(dev, 100, 99);
        assert_eq!(name_of(&cat, dev, i).as_deref(), Some("c11"));
        // A living cgroup of no container (the runtime, a host shell) after
        // b was seen: b.
        use std::os::unix::fs::MetadataExt;
        let host = std::fs::metadata(&cgroups).unwrap().ino();
        let i = cat.resolve_event(dev, 400, host);
        assert_eq!(name_of(&cat, dev, i).as_deref(), Some("c12"));
        assert_eq!(cat.resolve_event(dev, 200, host), None);
    }

    #[test]
    fn a_mount_newer_than_the_last_scan_is_always_looked_up() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = tmp.path().join("mountinfo");
        std::fs::write(&mi, "").unwrap();
        let mut cat = Catalog::with_mountinfo(vec![Box::new(Fake)], mi.clone());
        cat.is_mounted = |_, _| false;
        cat.set_min_rescan(Duration::from_secs(3600));
        cat.refresh().unwrap();
        // Another mount just changed the table (a scan ran), then the
        // container's overlay is mounted and written to at once.
        let (line, _) = parsed(11, 40, "/c/a");
        std::fs::write(&mi, line).unwrap();
        let dev = Dev::new(0, 40);
        let t = monotonic_ns();
        let i = cat.resolve_event(dev, t, 1);
        assert_eq!(name_of(&cat, dev, i).as_deref(), Some("c11"));
        // An older event on an unknown device does not force scans.
        let scans = cat.scan_ns;
        assert_eq!(cat.resolve_event(Dev::new(0, 41), t, 1), None);
        assert_eq!(cat.scan_ns, scans);
    }

    #[test]
    fn no_guessing_across_a_stretch_without_scans() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = tmp.path().join("mountinfo");
        std::fs::write(&mi, "").unwrap();
        let dev = Dev::new(0, 40);
        let (_, a) = parsed(11, 40, "/c/a");
        let mut cat = Catalog::with_mountinfo(vec![Box::new(Fake)], mi);
        cat.is_mounted = |_, _| false;
        let s = 1_000_000_000;
        cat.apply_at(std::slice::from_ref(&a), s);
        // The tracer was stopped for a minute; a is gone when it resumes.
        cat.apply_at(&[], 61 * s);
        // Containers may have used the device meanwhile: not a's for sure.
        assert_eq!(cat.resolve_event(dev, 30 * s, 1), None);
        // What was certain stays certain.
        let i = cat.resolve_event(dev, s, 1);
        assert_eq!(name_of(&cat, dev, i).as_deref(), Some("c11"));
    }

    #[test]
    fn container_filters() {
        let c = ContainerInfo {
            id: "c80a5fd00c1b48972e13472e224d6158744edf581227782ff6ccaf1db5934d61".into(),
            name: Some("web-1".into()),
            image: ImageInfo::default(),
            mountpoint: "/m".into(),
            dev: Dev::new(0, 1),
            runtime: "docker",
            upperdir: None,
            layers: vec![],
            pod: None,
            mount_id: 1,
        };
        assert!(c.matches("web-1"));
        assert!(c.matches("/web-1"));
        assert!(c.matches("c80a5f"));
        assert!(!c.matches("web"));
        assert!(!c.matches(""));
        assert_eq!(c.short_id(), "c80a5fd00c1b");
    }
}
