//! Mount -> container/image/layer resolution, one resolver per runtime.
//!
//! A [`Resolver`] claims the overlay mounts that are its containers' root file systems
//! and describes them as [`ContainerInfo`]. [`Catalog`] is what the tracer holds: it
//! maps overlay devices to what is known about them, rescans (rate-limited) when it
//! meets an unknown device, keeps entries of mounts that have gone away, and answers
//! which lower layer a copied-up path came from.

pub mod docker;
pub mod layer;
pub mod safe_fs;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
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
    /// `None`; a mount it cannot attribute is simply not returned.
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
    /// mountinfo id of the mount this was resolved from.
    #[serde(skip)]
    pub mount_id: u32,
}

impl ContainerInfo {
    /// The layer with this overlay index (1 = first lowerdir).
    pub fn layer(&self, index: usize) -> Option<&LayerInfo> {
        index.checked_sub(1).and_then(|i| self.layers.get(i))
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
}

/// The layer a copied-up file came from, as recorded on copy-up events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLayer {
    pub index: usize,
    pub diff_id: Option<String>,
    pub created_by: Option<String>,
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

/// What the catalog knows about one overlay device.
#[derive(Debug)]
pub struct MountEntry {
    pub mount: OverlayMount,
    pub container: Option<ContainerInfo>,
    /// The mount was not in the latest scan; what was known is kept.
    pub gone: bool,
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
            stack: LayerStack::new(dirs),
        }
    }
}

/// Overlay devices -> mounts/containers, kept current for a running tracer.
pub struct Catalog {
    resolvers: Vec<Box<dyn Resolver>>,
    mountinfo: PathBuf,
    entries: HashMap<Dev, MountEntry>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
    /// The mount table of the last full scan, and when it ran.
    last_full: Option<(Vec<u8>, Instant)>,
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
            last_scan: None,
            min_rescan: Self::DEFAULT_MIN_RESCAN,
            last_full: None,
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
        self.last_scan = Some(Instant::now());
        let data = std::fs::read(&self.mountinfo)
            .with_context(|| format!("reading {}", self.mountinfo.display()))?;
        if let Some((prev, at)) = &self.last_full {
            if *prev == data && at.elapsed() < Self::FULL_SCAN_EVERY {
                return Ok(());
            }
        }
        let parsed = mounts::parse_mountinfo(&data);
        for w in &parsed.warnings {
            log::warn!("{}: {w}", self.mountinfo.display());
        }
        self.apply(&parsed.mounts);
        self.last_full = Some((data, Instant::now()));
        Ok(())
    }

    /// [`refresh`](Self::refresh) with a given mount list.
    pub fn apply(&mut self, mounts: &[OverlayMount]) {
        let inv = inventory(self.resolvers.iter_mut().map(|r| r.as_mut()), mounts);
        for e in self.entries.values_mut() {
            e.gone = true;
        }
        let mut by_dev: HashMap<Dev, ContainerInfo> =
            inv.containers.into_iter().map(|c| (c.dev, c)).collect();
        let mut seen = std::collections::HashSet::new();
        for m in mounts {
            // First line per device wins (bind mounts of an overlay share its device).
            if !seen.insert(m.dev) {
                continue;
            }
            let container = by_dev.remove(&m.dev);
            match self.entries.get_mut(&m.dev) {
                Some(e) if e.mount == *m && e.container == container => e.gone = false,
                _ => {
                    self.entries
                        .insert(m.dev, MountEntry::new(m.clone(), container));
                }
            }
        }
    }

    /// The entry for `dev`, if known. Does not rescan.
    pub fn get(&self, dev: Dev) -> Option<&MountEntry> {
        self.entries.get(&dev)
    }

    /// The entry for `dev`; an unknown device triggers a rescan unless one ran
    /// within the minimum rescan interval.
    pub fn lookup(&mut self, dev: Dev) -> Option<&MountEntry> {
        if !self.entries.contains_key(&dev) && self.rescan_allowed() {
            if let Err(e) = self.refresh() {
                log::warn!("rescanning overlay mounts: {e:#}");
            }
        }
        self.entries.get(&dev)
    }

    fn rescan_allowed(&self) -> bool {
        self.last_scan
            .is_none_or(|t| t.elapsed() >= self.min_rescan)
    }

    /// The lower layer that `rel` (relative to the overlay root) comes from.
    /// `None` when the device is unknown or no lower layer holds the path.
    pub fn source_layer(&mut self, dev: Dev, rel: &[u8]) -> Option<SourceLayer> {
        self.lookup(dev)?;
        let e = self.entries.get_mut(&dev)?;
        let index = e.stack.source_index(rel)?;
        let layer = e.container.as_ref().and_then(|c| c.layer(index));
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
                Some(c) => inv.containers.push(c.clone()),
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
