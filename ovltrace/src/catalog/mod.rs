//! Mount -> container/image/layer resolution, one resolver per runtime.
//!
//! A [`Resolver`] claims the overlay mounts that are its containers' root file systems
//! and describes them as [`ContainerInfo`]. [`Catalog`] is what the tracer holds: it
//! maps overlay instances (the kernel's [`OverlayKey`]) to what is known about them,
//! rescans when it meets an unknown one, and keeps entries of mounts that have gone
//! away. Which lower layer a file came from is not worked out here: the kernel
//! reads it from overlay's own lower stack and puts it on the event.
//!
//! What is known about mounts, one name each:
//! - [`OverlayMount`] (`sys::mounts`): an overlay mount as mountinfo lists it.
//! - [`ContainerInfo`], [`ImageInfo`], [`LayerInfo`]: what a runtime's metadata
//!   says of the container whose root file system a mount is.
//! - [`Inventory`]: one scan's answer: the containers, and the overlay mounts
//!   no runtime claimed (what `ovltrace layers` shows).
//! - [`Catalog`] and its [`MountEntry`]s: the live view a trace keeps, one
//!   entry per overlay instance, current or gone.
//! - [`KnownMount`] and [`KnownContainer`]: the record a trace keeps of every
//!   mount and container it met, still there after the catalog has forgotten
//!   them; the report is built from it. `attribute::Tracker` keeps this
//!   record beside the catalog, and `trace::Session` is the running trace
//!   that owns both.
//!
//! Per runtime, [`runtimes`] holds each resolver's own part on one shared
//! skeleton, and [`oci`] is the one reading of image configs.

pub mod bolt;
pub mod instruction;
pub mod oci;
pub mod runtimes;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::{
    bpf::event::OverlayKey,
    sys::mounts::{self, serialize_opt_path, serialize_path, Dev, OverlayMount},
};

/// The trace's record of one overlay mount (kept after the catalog forgets
/// it), in the report's terms.
#[derive(Debug, Clone, Default)]
pub struct KnownMount {
    /// Container id whose root file system this mount is.
    pub container: Option<String>,
    pub mountpoint: Option<String>,
    pub upperdir: Option<String>,
    pub lowerdirs: Vec<String>,
}

/// The trace's record of one container: what was last known of it, and
/// whether it had gone by then.
#[derive(Debug, Clone)]
pub struct KnownContainer {
    pub info: ContainerInfo,
    pub gone: bool,
}

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

    /// 12-character id, as `docker ps` shows it ([`short_id`]).
    pub fn short_id(&self) -> &str {
        short_id(&self.id)
    }

    /// What people call the container ([`display_name`]).
    pub fn display_name(&self) -> &str {
        display_name(self.name.as_deref(), &self.id)
    }

    /// Matches a `--container` filter: the exact name, or a prefix of the id.
    pub fn matches(&self, filter: &str) -> bool {
        !filter.is_empty()
            && (self.name.as_deref() == Some(filter.trim_start_matches('/'))
                || self.id.starts_with(filter))
    }
}

/// The first 12 characters of an id, as `docker ps` shows it.
pub fn short_id(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(i, _)| &id[..i])
}

/// The first 12 hex digits of a digest, without its `sha256:`.
pub fn short_digest(digest: &str) -> &str {
    short_id(digest.trim_start_matches("sha256:"))
}

/// What people call a container: its name (when not empty), else its
/// 12-character id. The one rule for every output (the report's containers
/// use it too).
pub fn display_name<'a>(name: Option<&'a str>, id: &'a str) -> &'a str {
    name.filter(|n| !n.is_empty())
        .unwrap_or_else(|| short_id(id))
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
    /// The layer's number in every output: its place among the image's
    /// layers in `docker history` order (1 = the topmost image layer);
    /// `None` for the init layer. Set by [`number_layers`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<usize>,
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

/// Numbers a container's layers (uppermost first) the one way every output
/// shows them: image layers in `docker history` order, 1 = the topmost,
/// from their position in the image when known (else from the stack); the
/// init layer gets no number (it is not an image layer).
pub fn number_layers(layers: &mut [LayerInfo]) {
    let image_layers = layers.iter().filter(|l| !l.init).count();
    let mut from_top = 0;
    for l in layers.iter_mut() {
        if l.init {
            l.number = None;
            continue;
        }
        from_top += 1;
        l.number = Some(match l.position {
            Some(p) if (1..=image_layers).contains(&p) => image_layers + 1 - p,
            _ => from_top,
        });
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
    /// The layer the kernel copied the file from.
    pub index: usize,
    pub diff_id: Option<String>,
    pub created_by: Option<String>,
    /// A metacopy file's data lives in this lower layer (absent: in `index`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_index: Option<usize>,
}

/// Every runtime's resolver, in the order they claim mounts: Docker
/// (overlay2), containerd (its overlayfs snapshotter, also Docker's
/// containerd store), containers/storage (Podman, CRI-O).
pub fn all_resolvers(roots: &RuntimeRoots) -> Vec<Box<dyn Resolver>> {
    vec![
        Box::new(runtimes::docker::DockerResolver::new(roots.docker.clone())),
        Box::new(runtimes::containerd::ContainerdResolver::new()),
        Box::new(runtimes::podman::PodmanResolver::new(roots.podman.clone())),
    ]
}

/// Data roots given by the user; `None` lets each resolver find its own.
#[derive(Debug, Clone, Default)]
pub struct RuntimeRoots {
    pub docker: Option<PathBuf>,
    pub podman: Option<PathBuf>,
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

/// What the catalog knows about one overlay mount.
#[derive(Debug)]
pub struct MountEntry {
    pub mount: OverlayMount,
    /// The identity the kernel reports on this overlay's events.
    pub key: OverlayKey,
    pub container: Option<ContainerInfo>,
    /// The mount was not in the latest scan; what was known is kept.
    pub gone: bool,
    /// Scan generation that last saw it (for keeping the newest gone ones).
    seen: u64,
    /// Until when no runtime claiming it is not yet final.
    claim_until: Instant,
    /// `container`'s id, shared with every event attributed to it.
    pub container_id: Option<Arc<str>>,
}

impl MountEntry {
    /// First seen by a scan so recently that a runtime may not have written
    /// the metadata that claims it yet ([`Catalog::set_claim_window`]).
    pub fn young(&self) -> bool {
        Instant::now() < self.claim_until
    }

    fn set_container(&mut self, container: Option<ContainerInfo>) {
        if self.container != container {
            self.container_id = container.as_ref().map(|c| Arc::from(c.id.as_str()));
            self.container = container;
        }
    }

    /// Reads the layer's deferred metadata the first time it is needed.
    pub fn source_layer(&mut self, index: usize, data_index: Option<usize>) -> SourceLayer {
        let layer = self
            .container
            .as_mut()
            .and_then(|c| index.checked_sub(1).and_then(|i| c.layers.get_mut(i)));
        if let Some(l) = layer {
            l.complete();
        }
        let layer = self.container.as_ref().and_then(|c| c.layer(index));
        SourceLayer {
            index,
            diff_id: layer.and_then(|l| l.diff_id.clone()),
            created_by: layer.and_then(|l| l.created_by.clone()),
            data_index,
        }
    }
}

/// The key the kernel gives events of overlay `m`: its device, and the device
/// and inode of its upper directory (`stat`). `None` when the upper directory
/// cannot be found from here (a relative path, another mount namespace).
pub fn overlay_key(m: &OverlayMount) -> Option<OverlayKey> {
    use std::os::unix::fs::MetadataExt;
    let mut key = OverlayKey {
        dev: m.dev.to_kernel(),
        ..Default::default()
    };
    if let Some(upper) = &m.upperdir {
        if !upper.is_absolute() {
            return None;
        }
        let md = std::fs::metadata(upper).ok()?;
        let d = md.dev();
        key.upper_dev = Dev::new(libc::major(d), libc::minor(d)).to_kernel();
        key.upper_ino = md.ino();
    }
    Some(key)
}

/// How long after a mount is first seen an event on it may re-read the
/// runtimes' metadata when no runtime claims the mount yet.
const CLAIM_WINDOW: Duration = Duration::from_secs(1);

/// Gone mounts kept for late events and the report (oldest dropped first).
const MAX_GONE: usize = 1024;
/// Distinct unknown overlays that may each trigger one rescan, before the
/// record of them is reset.
const MAX_TRIED: usize = 65_536;

/// Overlay instances -> mounts/containers, kept current for a running tracer.
///
/// Entries are keyed by the [`OverlayKey`] the kernel puts on every event, so
/// an event finds the mount it happened on without guessing, even when the
/// overlay's device number has since been given to another overlay.
pub struct Catalog {
    resolvers: Vec<Box<dyn Resolver>>,
    mountinfo: PathBuf,
    /// Looked up once per event: a fast hash (keys come from the kernel).
    entries: HashMap<OverlayKey, MountEntry, foldhash::fast::RandomState>,
    /// Scans so far.
    generation: u64,
    last_scan: Option<Instant>,
    min_rescan: Duration,
    /// The mount table of the last full scan, and when it ran.
    last_full: Option<(Vec<u8>, Instant)>,
    /// Unknown keys that already caused a rescan.
    tried: HashSet<OverlayKey>,
    /// Young unclaimed mounts whose first event re-read the metadata.
    claim_tried: HashSet<OverlayKey>,
    /// The kernel side cannot read overlay identities (no overlay BTF): keys
    /// hold the device only.
    dev_only: bool,
    /// Mounts whose upper directory could not be found, by device (warned once).
    unkeyed: HashSet<Dev>,
    key_of: fn(&OverlayMount) -> Option<OverlayKey>,
    claim_window: Duration,
}

impl Catalog {
    /// Default minimum time between rescans triggered by unknown overlays.
    pub const DEFAULT_MIN_RESCAN: Duration = Duration::from_millis(100);
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
            entries: HashMap::default(),
            generation: 0,
            last_scan: None,
            min_rescan: Self::DEFAULT_MIN_RESCAN,
            last_full: None,
            tried: HashSet::new(),
            claim_tried: HashSet::new(),
            dev_only: false,
            unkeyed: HashSet::new(),
            key_of: overlay_key,
            claim_window: CLAIM_WINDOW,
        }
    }

    /// Changes with every scan that could change what an event resolves to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn set_min_rescan(&mut self, d: Duration) {
        self.min_rescan = d;
    }

    /// How long after a scan first sees a mount no runtime claims it may still
    /// be claimed (a runtime writes into a new container's root before its
    /// own metadata names the container).
    pub fn set_claim_window(&mut self, d: Duration) {
        self.claim_window = d;
    }

    /// Keys are device numbers alone (the kernel side has no overlay BTF).
    pub fn set_dev_only(&mut self, dev_only: bool) {
        self.dev_only = dev_only;
    }

    pub fn mountinfo_path(&self) -> &Path {
        &self.mountinfo
    }

    /// Re-reads the mount table and rescans. Mounts that disappeared stay,
    /// marked `gone`.
    ///
    /// When the mount table is byte-for-byte what the last full scan saw
    /// (and that scan is recent), the runtimes' metadata is not read again:
    /// on a host with a thousand containers a scan is the expensive part.
    pub fn refresh(&mut self) -> anyhow::Result<()> {
        self.last_scan = Some(Instant::now());
        let data = std::fs::read(&self.mountinfo)
            .with_context(|| format!("reading {}", self.mountinfo.display()))?;
        let unchanged = self
            .last_full
            .as_ref()
            .is_some_and(|(prev, at)| *prev == data && at.elapsed() < Self::FULL_SCAN_EVERY);
        if !unchanged {
            let parsed = mounts::parse_mountinfo(&data);
            for w in &parsed.warnings {
                log::warn!("{}: {w}", self.mountinfo.display());
            }
            self.apply(&parsed.mounts);
            self.last_full = Some((data, Instant::now()));
        }
        Ok(())
    }

    /// [`refresh`](Self::refresh) with a given mount list.
    pub fn apply(&mut self, mounts: &[OverlayMount]) {
        self.generation += 1;
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
            let Some(key) = self.key(m) else {
                continue;
            };
            match self.entries.get_mut(&key) {
                Some(e) if e.mount == *m => {
                    e.set_container(container);
                    e.gone = false;
                    e.seen = self.generation;
                }
                _ => {
                    let mut fresh = MountEntry {
                        mount: m.clone(),
                        key,
                        container: None,
                        gone: false,
                        seen: self.generation,
                        claim_until: Instant::now() + self.claim_window,
                        container_id: None,
                    };
                    fresh.set_container(container);
                    self.entries.insert(key, fresh);
                }
            }
        }
        for e in self.entries.values_mut() {
            if e.seen != self.generation {
                e.gone = true;
            }
        }
        self.forget_oldest_gone();
    }

    fn key(&mut self, m: &OverlayMount) -> Option<OverlayKey> {
        if self.dev_only {
            return Some(OverlayKey {
                dev: m.dev.to_kernel(),
                ..Default::default()
            });
        }
        let key = (self.key_of)(m);
        if key.is_none() && self.unkeyed.insert(m.dev) {
            log::warn!(
                "overlay {} at {}: its upper directory {} cannot be found from here; \
                 its copy-ups will not be attributed",
                m.dev,
                mounts::path_display(&m.mountpoint),
                m.upperdir
                    .as_deref()
                    .map(mounts::path_display)
                    .unwrap_or_default()
            );
        }
        key
    }

    fn forget_oldest_gone(&mut self) {
        let gone = self.entries.values().filter(|e| e.gone).count();
        if gone <= MAX_GONE {
            return;
        }
        let mut by_age: Vec<(u64, OverlayKey)> = self
            .entries
            .values()
            .filter(|e| e.gone)
            .map(|e| (e.seen, e.key))
            .collect();
        by_age.sort_unstable();
        for (_, k) in by_age.into_iter().take(gone - MAX_GONE) {
            self.entries.remove(&k);
        }
    }

    /// The entry for `key`, if known. Does not rescan.
    pub fn get(&self, key: &OverlayKey) -> Option<&MountEntry> {
        self.entries.get(key)
    }

    /// [`get`](Self::get), for reading deferred layer metadata.
    pub fn get_mut(&mut self, key: &OverlayKey) -> Option<&mut MountEntry> {
        self.entries.get_mut(key)
    }

    /// The mount an event with `key` happened on. An unknown key (an overlay
    /// mounted since the latest scan) rescans, once per key and at most every
    /// `min_rescan`; `None` when it is still unknown then (it was unmounted
    /// before any scan saw it).
    ///
    /// A runtime mounts a container's root file system and writes into it
    /// (/etc) at once, sometimes before its own metadata names the container:
    /// the first event on a mount no runtime has claimed yet, in its claim
    /// window, re-reads the metadata (once per mount; later refreshes settle
    /// the rest, see `attribute::Tracker`).
    pub fn resolve(&mut self, key: &OverlayKey) -> Option<&mut MountEntry> {
        let unclaimed = self
            .entries
            .get(key)
            .is_some_and(|e| !e.gone && e.container.is_none() && e.young());
        if unclaimed && self.claim_tried.insert(*key) {
            if self.claim_tried.len() > MAX_TRIED {
                self.claim_tried.clear();
            }
            self.last_full = None;
            if let Err(e) = self.refresh() {
                log::warn!("rescanning overlay mounts: {e:#}");
            }
        }
        if !self.entries.contains_key(key) && self.rescan_allowed() {
            if self.tried.len() >= MAX_TRIED {
                self.tried.clear();
            }
            if self.tried.insert(*key) {
                if let Err(e) = self.refresh() {
                    log::warn!("rescanning overlay mounts: {e:#}");
                }
            }
        }
        self.entries.get_mut(key)
    }

    fn rescan_allowed(&self) -> bool {
        self.last_scan
            .is_none_or(|t| t.elapsed() >= self.min_rescan)
    }

    pub fn entries(&self) -> impl Iterator<Item = &MountEntry> {
        self.entries.values()
    }

    /// Containers whose name or id prefix matches any of `filters`.
    pub fn matching(&self, filters: &[String]) -> Vec<&MountEntry> {
        self.entries
            .values()
            .filter(|e| !e.gone)
            .filter(|e| {
                e.container
                    .as_ref()
                    .is_some_and(|c| filters.iter().any(|f| c.matches(f)))
            })
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

/// A resolver for tests of the catalog and attribution.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    /// Claims mounts below /c: container `c<mount id>`, one layer per
    /// lowerdir with diff-id `sha256:<i>`.
    pub(crate) struct Fake;

    /// [`Fake`] whose first lowerdir is the container's init layer (no
    /// diff-id), as Docker's.
    pub(crate) struct FakeWithInit;

    impl Resolver for Fake {
        fn runtime(&self) -> &'static str {
            "fake"
        }
        fn scan(&mut self, mounts: &[OverlayMount]) -> Vec<ContainerInfo> {
            claim(mounts, false)
        }
    }

    impl Resolver for FakeWithInit {
        fn runtime(&self) -> &'static str {
            "fake"
        }
        fn scan(&mut self, mounts: &[OverlayMount]) -> Vec<ContainerInfo> {
            claim(mounts, true)
        }
    }

    fn claim(mounts: &[OverlayMount], init_first: bool) -> Vec<ContainerInfo> {
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
                    .map(|(i, d)| {
                        let init = init_first && i == 0;
                        LayerInfo {
                            index: i + 1,
                            init,
                            diff_id: (!init).then(|| format!("sha256:{i}")),
                            dir: Some(d.clone()),
                            ..Default::default()
                        }
                    })
                    .collect(),
                pod: None,
                mount_id: m.mount_id,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fake::Fake;

    fn mount(id: u32, minor: u32, mp: &str, lowers: &[&Path]) -> OverlayMount {
        OverlayMount {
            mount_id: id,
            parent_id: 1,
            dev: Dev::new(0, minor),
            mountpoint: mp.into(),
            upperdir: Some(format!("/u{id}").into()),
            workdir: None,
            lowerdirs: lowers.iter().map(|p| p.to_path_buf()).collect(),
            datadirs: vec![],
            options: vec![],
        }
    }

    /// The key a kernel would report for `m` (upper inode = mount id).
    fn fake_key(m: &OverlayMount) -> Option<OverlayKey> {
        Some(OverlayKey {
            dev: m.dev.to_kernel(),
            upper_dev: 8 << 20,
            upper_ino: m.mount_id as u64,
        })
    }

    fn catalog(mountinfo: &Path) -> Catalog {
        let mut cat = Catalog::with_mountinfo(vec![Box::new(Fake)], mountinfo.to_path_buf());
        cat.key_of = fake_key;
        cat
    }

    fn name(e: Option<&MountEntry>) -> Option<String> {
        e.and_then(|e| e.container.as_ref())
            .and_then(|c| c.name.clone())
    }

    #[test]
    fn mounts_that_reuse_a_device_stay_apart() {
        let mut cat = catalog(Path::new("/nonexistent"));
        let a = mount(10, 40, "/c/a", &[Path::new("/l1"), Path::new("/l2")]);
        let plain = mount(11, 41, "/mnt/p", &[Path::new("/l2")]);
        cat.apply(&[a.clone(), plain.clone()]);
        let inv = cat.inventory();
        assert_eq!(inv.containers.len(), 1);
        assert_eq!(inv.mounts, vec![plain.clone()]);
        let ka = fake_key(&a).unwrap();
        let s = cat.resolve(&ka).unwrap().source_layer(2, None);
        assert_eq!((s.index, s.diff_id.as_deref()), (2, Some("sha256:1")));
        // Plain mounts have indices, without layer metadata.
        let s = cat
            .resolve(&fake_key(&plain).unwrap())
            .unwrap()
            .source_layer(1, None);
        assert_eq!((s.index, s.diff_id), (1, None));
        // The container goes away: its entry stays, marked gone.
        cat.apply(std::slice::from_ref(&plain));
        assert!(cat.get(&ka).unwrap().gone);
        assert_eq!(name(cat.get(&ka)).as_deref(), Some("c10"));
        assert_eq!(cat.inventory().containers.len(), 0);
        // Its device goes to another mount: both are known, each by its key.
        let b = mount(12, 40, "/c/b", &[Path::new("/l2")]);
        cat.apply(&[b.clone(), plain]);
        assert_eq!(name(cat.get(&ka)).as_deref(), Some("c10"));
        assert_eq!(
            name(cat.get(&fake_key(&b).unwrap())).as_deref(),
            Some("c12")
        );
        assert_eq!(cat.matching(&["c12".into()]).len(), 1);
        assert_eq!(cat.matching(&["000000".into()]).len(), 1);
        assert_eq!(cat.matching(&["c10".into()]).len(), 0, "gone");
    }

    #[test]
    fn unknown_overlay_rescans_once_per_key() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = tmp.path().join("mountinfo");
        std::fs::write(&mi, "").unwrap();
        let mut cat = catalog(&mi);
        cat.set_min_rescan(Duration::ZERO);
        let key = OverlayKey {
            dev: Dev::new(0, 50).to_kernel(),
            upper_dev: 8 << 20,
            upper_ino: 50,
        };
        assert!(cat.resolve(&key).is_none());
        std::fs::write(
            &mi,
            "50 1 0:50 / /c/x rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n",
        )
        .unwrap();
        // Already tried: no second scan for the same key...
        assert!(cat.resolve(&key).is_none());
        // ...but a new key is looked up at once (mounted, then written to).
        let other = OverlayKey {
            upper_ino: 51,
            ..key
        };
        assert!(cat.resolve(&other).is_none());
        assert_eq!(name(cat.resolve(&key).map(|e| &*e)).as_deref(), Some("c50"));
        // A different upper directory on the same device is another overlay.
        assert!(cat
            .get(&OverlayKey {
                upper_ino: 7,
                ..key
            })
            .is_none());
    }

    #[test]
    fn unkeyed_mounts_are_not_attributed() {
        let mut cat = catalog(Path::new("/nonexistent"));
        cat.key_of = |_| None;
        cat.apply(&[mount(10, 40, "/c/a", &[Path::new("/l1")])]);
        assert_eq!(cat.entries().count(), 0);
        // Without overlay BTF the kernel reports devices only.
        cat.set_dev_only(true);
        cat.apply(&[mount(10, 40, "/c/a", &[Path::new("/l1")])]);
        let key = OverlayKey {
            dev: Dev::new(0, 40).to_kernel(),
            ..Default::default()
        };
        assert_eq!(name(cat.get(&key)).as_deref(), Some("c10"));
    }

    #[test]
    fn real_upper_directories_are_stated() {
        let tmp = tempfile::tempdir().unwrap();
        let mut m = mount(10, 40, "/c/a", &[]);
        m.upperdir = Some(tmp.path().to_path_buf());
        let key = overlay_key(&m).unwrap();
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(tmp.path()).unwrap();
        assert_eq!(key.upper_ino, md.ino());
        assert_eq!(
            Dev::from_kernel(key.upper_dev),
            Dev::new(libc::major(md.dev()), libc::minor(md.dev()))
        );
        m.upperdir = Some("relative/up".into());
        assert_eq!(overlay_key(&m), None);
        m.upperdir = None;
        assert_eq!(overlay_key(&m).unwrap().upper_ino, 0);
    }

    /// Claims mounts only once its flag is set (metadata written late).
    struct Late(std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl Resolver for Late {
        fn runtime(&self) -> &'static str {
            "late"
        }

        fn scan(&mut self, mounts: &[OverlayMount]) -> Vec<ContainerInfo> {
            if self.0.load(std::sync::atomic::Ordering::SeqCst) {
                Fake.scan(mounts)
            } else {
                Vec::new()
            }
        }
    }

    #[test]
    fn a_young_unclaimed_mount_rereads_the_metadata() {
        use std::sync::{atomic::AtomicBool, atomic::Ordering, Arc};
        let tmp = tempfile::tempdir().unwrap();
        let mi = tmp.path().join("mountinfo");
        std::fs::write(
            &mi,
            "50 1 0:50 / /c/x rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n",
        )
        .unwrap();
        let ready = Arc::new(AtomicBool::new(false));
        let mut cat = Catalog::with_mountinfo(vec![Box::new(Late(ready.clone()))], mi);
        cat.key_of = fake_key;
        cat.set_min_rescan(Duration::ZERO);
        cat.set_claim_window(Duration::from_secs(3600));
        cat.refresh().unwrap();
        let key = cat.entries().next().unwrap().key;
        // The runtime writes its metadata; the mount table does not change.
        ready.store(true, Ordering::SeqCst);
        cat.refresh().unwrap();
        assert_eq!(
            name(cat.get(&key)),
            None,
            "unchanged table: no metadata scan"
        );
        // The first event on the young, unclaimed mount reads it again.
        assert_eq!(name(cat.resolve(&key).map(|e| &*e)).as_deref(), Some("c50"));
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
        assert_eq!(cat.entries().filter(|e| !e.gone).count(), 2);
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
        assert_eq!(c.display_name(), "web-1");
        assert_eq!(display_name(Some(""), &c.id), "c80a5fd00c1b");
        assert_eq!(short_id("é".repeat(13).as_str()), "é".repeat(12));
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
    }
}
