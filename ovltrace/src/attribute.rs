//! Attribution: which overlay mount, container and image layer a decoded
//! copy-up belongs to. The kernel names the overlay instance and the lower
//! layer on the event; this looks up what they are in the [`Catalog`].
//!
//! One overlay is never in a mount scan: Docker mounts a new container's init
//! layer alone (upperdir `<mount-id>-init/diff`, lowerdirs the image's
//! layers) for a few milliseconds while it creates the container, and writes
//! `/etc/hosts`, `/dev/pts`, ... into it. Such copy-ups are parked until the
//! container's own overlay is known: the kernel's key of the init mount holds
//! the identity (device, inode) of its upper directory, which is the
//! container's init layer directory (its overlay index 1). A match is exact;
//! what no container claims is given up as not attributed.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::sys::safe_fs::SafeRoot;
use crate::{
    bpf::event::{CopyUp, FileKind, OverlayKey},
    catalog::{Catalog, ContainerInfo, KnownContainer, KnownMount, MountEntry, SourceLayer},
    sys::mounts::{self, Dev},
};

/// Where an event came from, as far as it could be resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    /// Container id (shared: one allocation per container, not per event).
    pub container: Option<std::sync::Arc<str>>,
    /// Overlay index of the lower layer the file came from (1 = first lowerdir).
    pub layer: Option<usize>,
    /// The writer was outside the container: in the tracer's (the host's)
    /// mount namespace, as a runtime is while it sets a container up.
    pub outside: bool,
}

/// Most copy-ups parked at once; more are counted as not attributed at once.
/// (A copy-up storm on a new mount is parked whole for its first second.)
pub const MAX_PENDING: usize = 65_536;
/// How long a parked copy-up waits for a container to claim its overlay
/// (`docker create`, then `docker start` this much later: not attributed).
pub const PENDING_FOR: Duration = Duration::from_secs(60);

/// What [`Tracker::attribute`] made of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributed<'a> {
    /// The container (if any) and source layer, final. The source layer is
    /// borrowed from the catalog (built once per layer).
    Now(Attribution, Option<Cow<'a, SourceLayer>>),
    /// Parked: its overlay may be a runtime's short-lived mount of a container's
    /// init layer. A later [`Tracker::refresh`] or [`Tracker::finish`] returns
    /// it, attributed or given up, exactly once.
    Pending,
}

/// A parked copy-up, attributed (or given up) by a refresh.
#[derive(Debug, Clone)]
pub struct Settled {
    pub ev: CopyUp,
    pub attr: Attribution,
    pub source: Option<SourceLayer>,
}

/// A container's init layer, as the upper directory of a runtime's mount of it.
#[derive(Debug, Clone)]
struct InitLayer {
    container: String,
    /// The container's own overlay (whose index 1 the init layer is).
    key: OverlayKey,
    dir: PathBuf,
    /// The container's lowerdirs below the init layer: the image's layers,
    /// which are the init mount's lowerdirs.
    lowerdirs: Vec<PathBuf>,
}

#[derive(Debug)]
struct Parked {
    ev: CopyUp,
    since: Instant,
}

/// Attribution state of a trace: the catalog of mounts/containers, plus
/// everything seen so far, kept after containers go away so late events and
/// the final report still name them.
pub struct Tracker {
    catalog: Catalog,
    /// The tracer's own mount namespace (inode number; 0 unknown).
    host_mnt_ns: u32,
    /// Overlays already in `mounts`/`containers` (checked once per event).
    recorded: hashbrown::HashSet<OverlayKey, foldhash::fast::RandomState>,
    mounts: HashMap<OverlayKey, KnownMount>,
    containers: HashMap<String, KnownContainer>,
    /// Copy-ups of overlays no container was known for yet, oldest first.
    pending: VecDeque<Parked>,
    max_pending: usize,
    pending_for: Duration,
    /// Containers whose init layer directory was looked at (once each).
    init_checked: HashSet<String>,
    /// Init layer directories by identity: (device, kernel encoding; inode).
    init_dirs: HashMap<(u32, u64), InitLayer>,
    /// Overlays found to be a container's init mount -> the container.
    init_mounts: HashMap<OverlayKey, String>,
    overflow_warned: bool,
    /// Attributions made through a container's own overlay, by what decided
    /// them; valid while the catalog and the init layers known stay as they
    /// were. In a copy-up storm nearly every event is a
    /// hit: one small hash lookup instead of the catalog's.
    hot: Remembered,
}

/// Attributions by what decided them, and the ones found last by source
/// layer: a storm asks for the same few over and over, one per layer its
/// files come from (a single "last" missed whenever the layer changed).
#[derive(Default)]
struct Remembered {
    index: hashbrown::HashMap<HotKey, usize, foldhash::fast::RandomState>,
    values: Vec<Hot>,
    last: [Option<(HotKey, usize)>; LAST_BY_LAYER],
    /// The catalog generation the entries were made under.
    generation: u64,
}

/// Results remembered as "found last", one per source layer index modulo
/// this (here and in the aggregator).
pub(crate) const LAST_BY_LAYER: usize = 8;

impl Remembered {
    fn clear(&mut self) {
        self.index.clear();
        self.values.clear();
        self.last = Default::default();
    }

    fn find(&mut self, key: &HotKey) -> Option<usize> {
        let slot = key.source.map_or(0, |(index, _)| index % LAST_BY_LAYER);
        match self.last[slot] {
            Some((k, i)) if k == *key => Some(i),
            _ => {
                let i = *self.index.get(key)?;
                self.last[slot] = Some((*key, i));
                Some(i)
            }
        }
    }

    fn insert(&mut self, key: HotKey, hot: Hot) {
        if self.values.len() >= MAX_HOT {
            self.clear();
        }
        self.index.insert(key, self.values.len());
        self.values.push(hot);
    }
}

/// What an attribution through [`Tracker::attribute_mount`] depends on,
/// besides the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct HotKey {
    overlay: OverlayKey,
    source: Option<(usize, Option<usize>)>,
    outside: bool,
}

#[derive(Debug)]
struct Hot {
    attr: Attribution,
    source: Option<SourceLayer>,
}

/// Most attributions cached (mounts x layers seen); past it the cache
/// starts again.
const MAX_HOT: usize = 1 << 16;

impl Tracker {
    pub fn new(catalog: Catalog) -> Self {
        use std::os::unix::fs::MetadataExt;
        let host_mnt_ns = std::fs::metadata("/proc/self/ns/mnt").map_or(0, |m| m.ino() as u32);
        Self {
            catalog,
            host_mnt_ns,
            recorded: Default::default(),
            mounts: HashMap::new(),
            containers: HashMap::new(),
            pending: VecDeque::new(),
            max_pending: MAX_PENDING,
            pending_for: PENDING_FOR,
            init_checked: HashSet::new(),
            init_dirs: HashMap::new(),
            init_mounts: HashMap::new(),
            overflow_warned: false,
            hot: Remembered::default(),
        }
    }

    /// Every overlay mount known during the trace.
    pub fn mounts(&self) -> &HashMap<OverlayKey, KnownMount> {
        &self.mounts
    }

    /// Every container known during the trace.
    pub fn containers(&self) -> impl Iterator<Item = &KnownContainer> {
        self.containers.values()
    }

    /// Copy-ups parked now (not in any aggregate yet).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Rescans mounts and containers; returns the parked copy-ups that are now
    /// attributed to a container's init layer, or that waited too long.
    #[must_use = "settled copy-ups are aggregated by the caller"]
    pub fn refresh(&mut self) -> Vec<Settled> {
        self.rescan();
        self.settle(false)
    }

    /// The last refresh of a trace: every parked copy-up is returned,
    /// attributed or not.
    #[must_use = "settled copy-ups are aggregated by the caller"]
    pub fn finish(&mut self) -> Vec<Settled> {
        self.rescan();
        self.settle(true)
    }

    fn rescan(&mut self) {
        if let Err(e) = self.catalog.refresh() {
            log::warn!("scanning overlay mounts: {e:#}");
        }
        for c in self.containers.values_mut() {
            c.gone = true;
        }
        for e in self.catalog.entries().filter(|e| !e.gone) {
            remember(&mut self.mounts, &mut self.containers, e);
            self.recorded.insert(e.key);
        }
        self.learn_init_layers();
        // A still-mounted init mount's entry is re-remembered as a plain one.
        for (key, id) in &self.init_mounts {
            if let Some(m) = self.mounts.get_mut(key) {
                m.container = Some(id.clone());
            }
        }
    }

    /// Looks at the init layer directory of every container not looked at yet.
    fn learn_init_layers(&mut self) {
        for e in self.catalog.entries() {
            let Some(c) = &e.container else { continue };
            if self.init_checked.contains(&c.id) {
                continue;
            }
            self.init_checked.insert(c.id.clone());
            if let Some((ident, dir)) = init_identity(c) {
                // An overlay attributed as no container's may be this init mount.
                self.hot.clear();
                let lowerdirs = e.mount.lowerdirs.iter().skip(1).cloned().collect();
                self.init_dirs.insert(
                    ident,
                    InitLayer {
                        container: c.id.clone(),
                        key: e.key,
                        dir,
                        lowerdirs,
                    },
                );
            }
        }
    }

    fn settle(&mut self, all: bool) -> Vec<Settled> {
        let now = Instant::now();
        let mut out = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            // A mount a runtime has claimed since (its metadata was written
            // after it wrote into the mount) settles at once.
            let claimed = self
                .catalog
                .get(&p.ev.overlay)
                .is_some_and(|e| e.container.is_some());
            // A live mount past its claim window stays a plain overlay.
            let plain = self.catalog.get(&p.ev.overlay).is_some_and(|e| {
                !e.gone && !e.young() && !named_as_init(e.mount.upperdir.as_deref())
            });
            let (attr, source) = if let Some(init) = self.init_of(&p.ev.overlay) {
                self.attribute_init(&p.ev, &init)
            } else if claimed || plain || all || now.duration_since(p.since) >= self.pending_for {
                self.attribute_mount(&p.ev)
            } else {
                self.pending.push_back(p);
                continue;
            };
            out.push(Settled {
                ev: p.ev,
                attr,
                source,
            });
        }
        out
    }

    /// The container whose init layer directory is `key`'s upper directory.
    /// Checked again on every match: a removed container's directory may
    /// have left its inode number to a new container's.
    fn init_of(&mut self, key: &OverlayKey) -> Option<InitLayer> {
        if key.upper_ino == 0 {
            return None;
        }
        let ident = (key.upper_dev, key.upper_ino);
        let init = self.init_dirs.get(&ident)?;
        if dir_identity(&init.dir) == Some(ident) {
            return Some(init.clone());
        }
        self.init_dirs.remove(&ident);
        None
    }

    /// The container and source layer of one copy-up: the kernel names the
    /// overlay instance and the layer; this looks up what they are.
    ///
    /// A copy-up on an overlay of no known container that may be a runtime's
    /// short-lived mount of a container's init layer (unmounted, or never
    /// seen; or a live one whose upper directory Docker named
    /// `<id>-init/diff`) is parked: [`Attributed::Pending`].
    ///
    /// A live mount no runtime has claimed yet in its first seconds (a
    /// runtime writes /etc into a new container's root before its own
    /// metadata names the container) is parked too, until a refresh finds
    /// its container.
    pub fn attribute(&mut self, ev: &CopyUp) -> Attributed<'_> {
        let key = HotKey {
            overlay: ev.overlay,
            source: source_of(ev, 0),
            outside: self.outside(ev),
        };
        if self.hot.generation != self.catalog.generation() {
            self.hot.clear();
            self.hot.generation = self.catalog.generation();
        }
        if let Some(i) = self.hot.find(&key) {
            let hot = &self.hot.values[i];
            return Attributed::Now(hot.attr.clone(), hot.source.as_ref().map(Cow::Borrowed));
        }
        let has_container = self
            .catalog
            .resolve(&ev.overlay)
            .is_some_and(|e| e.container.is_some());
        if !has_container {
            if let Some(init) = self.init_of(&ev.overlay) {
                let (attr, source) = self.attribute_init(ev, &init);
                return Attributed::Now(attr, source.map(Cow::Owned));
            }
            let maybe_init = self
                .catalog
                .get(&ev.overlay)
                .is_none_or(|e| e.gone || named_as_init(e.mount.upperdir.as_deref()) || e.young());
            // Without the upper directory's identity nothing could match.
            if maybe_init && ev.overlay.upper_ino != 0 {
                if self.pending.len() < self.max_pending {
                    self.pending.push_back(Parked {
                        ev: ev.clone(),
                        since: Instant::now(),
                    });
                    return Attributed::Pending;
                }
                if !self.overflow_warned {
                    self.overflow_warned = true;
                    log::warn!(
                        "{} copy-ups wait for their overlay to be identified; \
                         more are counted as not attributed",
                        self.max_pending
                    );
                }
                let (attr, source) = self.attribute_mount(ev);
                return Attributed::Now(attr, source.map(Cow::Owned));
            }
        }
        let (attr, source) = self.attribute_mount(ev);
        // A rescan made on the way (an unknown overlay) may have changed
        // what other cached entries say: keep this one only if none ran.
        if self.hot.generation == self.catalog.generation() {
            self.hot.insert(
                key,
                Hot {
                    attr: attr.clone(),
                    source: source.clone(),
                },
            );
        }
        Attributed::Now(attr, source.map(Cow::Owned))
    }

    /// Attribution through the catalog entry of the event's own overlay.
    fn attribute_mount(&mut self, ev: &CopyUp) -> (Attribution, Option<SourceLayer>) {
        let outside = self.outside(ev);
        let mut new_container = false;
        if let Some(e) = self.catalog.get(&ev.overlay) {
            // Periodic refreshes keep known entries current; only new ones
            // are recorded here (the hot path: one set lookup).
            if !self.recorded.contains(&e.key) {
                remember(&mut self.mounts, &mut self.containers, e);
                self.recorded.insert(e.key);
                new_container = e.container.is_some();
            }
        }
        if new_container {
            // Before a short-lived container's init layer is removed.
            self.learn_init_layers();
        }
        let entry = self.catalog.get_mut(&ev.overlay);
        let container = entry.as_deref().and_then(|e| e.container_id.clone());
        let source = match (source_of(ev, 0), entry) {
            (Some((index, data_index)), Some(e)) => Some(e.source_layer(index, data_index)),
            (Some((index, data_index)), None) => Some(SourceLayer {
                index,
                diff_id: None,
                created_by: None,
                data_index,
            }),
            (None, _) => None,
        };
        let attr = Attribution {
            container,
            layer: source.as_ref().map(|s| s.index),
            outside,
        };
        (attr, source)
    }

    /// Attribution of a copy-up on the init mount of `init`'s container.
    ///
    /// The init mount's lowerdirs are the container's below its init layer
    /// (moby's overlay2 driver writes the init layer's `lower` file from the
    /// image's layers, and the container layer's as the init layer's link
    /// followed by that file), so the kernel's lower index `i` on the init
    /// mount is the container's overlay index `i + 1`.
    fn attribute_init(
        &mut self,
        ev: &CopyUp,
        init: &InitLayer,
    ) -> (Attribution, Option<SourceLayer>) {
        let source = source_layer(ev, 1, self.catalog.get_mut(&init.key));
        let seen = self.init_mounts.insert(ev.overlay, init.container.clone());
        let scanned = seen.is_none() && self.mounts.contains_key(&ev.overlay);
        if !scanned && seen.as_ref() != Some(&init.container) {
            self.mounts.insert(
                ev.overlay,
                KnownMount {
                    container: None,
                    // Unmounted before any scan saw it.
                    mountpoint: None,
                    upperdir: Some(mounts::path_display(&init.dir)),
                    lowerdirs: init
                        .lowerdirs
                        .iter()
                        .map(|p| mounts::path_display(p))
                        .collect(),
                },
            );
        }
        if let Some(m) = self.mounts.get_mut(&ev.overlay) {
            m.container = Some(init.container.clone());
        }
        let attr = Attribution {
            container: Some(init.container.as_str().into()),
            layer: source.as_ref().map(|s| s.index),
            outside: self.outside(ev),
        };
        (attr, source)
    }

    fn outside(&self, ev: &CopyUp) -> bool {
        self.host_mnt_ns != 0 && ev.mnt_ns == self.host_mnt_ns
    }

    /// The containers mounted now.
    pub fn running(&self) -> impl Iterator<Item = &ContainerInfo> {
        self.catalog
            .entries()
            .filter(|e| !e.gone)
            .filter_map(|e| e.container.as_ref())
    }

    /// A container known during the trace, by id.
    pub fn container(&self, id: &str) -> Option<&KnownContainer> {
        self.containers.get(id)
    }

    /// The overlays of the running containers `filters` match, with the
    /// containers' names.
    pub fn filter_keys(&self, filters: &[String]) -> Vec<(OverlayKey, String)> {
        self.catalog
            .matching(filters)
            .into_iter()
            .map(|e| {
                let name = e.container.as_ref().map_or("?", |c| c.display_name());
                (e.key, name.to_string())
            })
            .collect()
    }
}

fn remember(
    mounts: &mut HashMap<OverlayKey, KnownMount>,
    containers: &mut HashMap<String, KnownContainer>,
    e: &MountEntry,
) {
    if !mounts.contains_key(&e.key) || !e.gone {
        mounts.insert(
            e.key,
            KnownMount {
                container: e.container.as_ref().map(|c| c.id.clone()),
                mountpoint: Some(mounts::path_display(&e.mount.mountpoint)),
                upperdir: e.mount.upperdir.as_deref().map(mounts::path_display),
                lowerdirs: e
                    .mount
                    .lowerdirs
                    .iter()
                    .map(|p| mounts::path_display(p))
                    .collect(),
            },
        );
    }
    if let Some(c) = &e.container {
        containers.insert(
            c.id.clone(),
            KnownContainer {
                info: c.clone(),
                gone: e.gone,
            },
        );
    }
}

/// `(index, data_index)` of `ev`'s source layer, the kernel's lower indices
/// shifted by `shift` into the overlay indices of the container's overlay.
fn source_of(ev: &CopyUp, shift: usize) -> Option<(usize, Option<usize>)> {
    let s = ev.source?;
    let index = usize::from(s.layer) + shift;
    // Only a regular file has data elsewhere (metacopy); a merged
    // directory's deeper entries are not its source.
    let data_index = s
        .data_layer
        .filter(|&d| ev.kind == FileKind::Regular && d != s.layer)
        .map(|d| usize::from(d) + shift);
    Some((index, data_index))
}

/// The source layer of `ev` in `entry` (the container's overlay), shifted
/// as [`source_of`] says.
fn source_layer(ev: &CopyUp, shift: usize, entry: Option<&mut MountEntry>) -> Option<SourceLayer> {
    let (index, data_index) = source_of(ev, shift)?;
    Some(match entry {
        Some(e) => e.source_layer(index, data_index),
        None => SourceLayer {
            index,
            diff_id: None,
            created_by: None,
            data_index,
        },
    })
}

/// An upper directory named as Docker names a container's init layer's
/// (`<mount-id>-init/diff`). Only decides whether a copy-up waits for its
/// container; what it is attributed to is decided by identity alone.
fn named_as_init(upper: Option<&Path>) -> bool {
    upper.is_some_and(|u| {
        u.file_name().is_some_and(|n| n == "diff")
            && u.parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n.as_encoded_bytes().ends_with(b"-init"))
    })
}

/// The identity (device in kernel encoding, inode) of `c`'s init layer
/// directory, and the directory: the layer at overlay index 1 marked `init`
/// (Docker's). Reached without following symlinks below the runtime's
/// layer store (`<root>/overlay2`, which the resolver validated the
/// directory to lie in).
fn init_identity(c: &ContainerInfo) -> Option<((u32, u64), PathBuf)> {
    let l = c.layer(1).filter(|l| l.init)?;
    let dir = l.dir.as_deref()?;
    let Some(ident) = dir_identity(dir) else {
        log::debug!(
            "container {}: init layer {} not identified",
            c.short_id(),
            mounts::path_display(dir)
        );
        return None;
    };
    Some((ident, dir.to_path_buf()))
}

/// The identity (device in kernel encoding, inode) of a layer directory
/// `<store>/<cache-id>/diff`, reached from `<store>` without following
/// symlinks.
fn dir_identity(dir: &Path) -> Option<(u32, u64)> {
    let store = dir.parent()?.parent()?;
    let rel = dir.strip_prefix(store).ok()?;
    let (dev, ino) = SafeRoot::open(store)
        .and_then(|r| r.dir_identity(rel))
        .ok()?;
    Some((
        Dev::new(libc::major(dev), libc::minor(dev)).to_kernel(),
        ino,
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    // Claims mounts below /c; their first lowerdir is the init layer.
    use crate::catalog::fake::FakeWithInit as Fake;
    use crate::{
        bpf::event::Source,
        catalog::{ImageInfo, LayerInfo},
    };

    /// A layer store in a temp dir: `overlay2/<id>/diff` for the container's
    /// upper layer, its init layer and two image layers.
    struct Fx {
        tmp: tempfile::TempDir,
        mountinfo: PathBuf,
    }

    impl Fx {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            for id in ["rw", "rw-init", "img1", "img2", "other-init", "plain"] {
                std::fs::create_dir_all(tmp.path().join("overlay2").join(id).join("diff")).unwrap();
            }
            let mountinfo = tmp.path().join("mountinfo");
            std::fs::write(&mountinfo, "").unwrap();
            Self { tmp, mountinfo }
        }

        fn dir(&self, id: &str) -> PathBuf {
            self.tmp.path().join("overlay2").join(id).join("diff")
        }

        /// The container's overlay: upper `rw`, lowers `rw-init`, `img1`, `img2`.
        fn mount_container(&self) {
            self.mount_line(&format!(
                "60 1 0:60 / /c/web rw - overlay overlay rw,lowerdir={}:{}:{},upperdir={},workdir=/w\n",
                self.dir("rw-init").display(),
                self.dir("img1").display(),
                self.dir("img2").display(),
                self.dir("rw").display(),
            ));
        }

        fn mount_line(&self, line: &str) {
            let mut s = std::fs::read_to_string(&self.mountinfo).unwrap();
            s.push_str(line);
            std::fs::write(&self.mountinfo, s).unwrap();
        }

        fn tracker(&self) -> Tracker {
            self.tracker_claiming(Duration::ZERO)
        }

        /// With `window` for runtimes to claim a new mount.
        fn tracker_claiming(&self, window: Duration) -> Tracker {
            let mut cat = Catalog::with_mountinfo(vec![Box::new(Fake)], self.mountinfo.clone());
            cat.set_min_rescan(Duration::ZERO);
            cat.set_claim_window(window);
            let mut t = Tracker::new(cat);
            assert!(t.refresh().is_empty());
            t
        }

        /// The key of an overlay on device 0:`minor` whose upper is `id`'s.
        fn key(&self, minor: u32, id: &str) -> OverlayKey {
            let md = std::fs::metadata(self.dir(id)).unwrap();
            OverlayKey {
                dev: Dev::new(0, minor).to_kernel(),
                upper_dev: Dev::new(libc::major(md.dev()), libc::minor(md.dev())).to_kernel(),
                upper_ino: md.ino(),
            }
        }
    }

    fn host_ns() -> u32 {
        std::fs::metadata("/proc/self/ns/mnt").map_or(0, |m| m.ino() as u32)
    }

    fn copy_up(overlay: OverlayKey, path: &str, kind: FileKind, layer: u16) -> CopyUp {
        CopyUp {
            start_ns: 1,
            latency_ns: 1000,
            data_ns: None,
            data_len: None,
            size: 0,
            tgid: 7,
            tid: 7,
            overlay,
            ret: 0,
            kind,
            path: path.as_bytes().to_vec(),
            path_truncated: false,
            comm: "dockerd".into(),
            mnt_ns: host_ns(),
            cause: Default::default(),
            source: Some(Source {
                layer,
                data_layer: Some(layer + 1),
                depth: 2,
            }),
        }
    }

    fn container_id() -> String {
        format!("{:064x}", 60)
    }

    #[test]
    fn init_mount_copy_ups_wait_for_their_container() {
        let fx = Fx::new();
        let mut t = fx.tracker();
        let init = fx.key(99, "rw-init");
        // dockerd's mount of the init layer, gone before any scan.
        let dir = copy_up(init, "etc", FileKind::Dir, 1);
        let mut file = copy_up(init, "etc/hosts", FileKind::Regular, 2);
        file.source = Some(Source {
            layer: 1,
            data_layer: Some(2),
            depth: 2,
        });
        assert_eq!(t.attribute(&dir), Attributed::Pending);
        assert_eq!(t.attribute(&file), Attributed::Pending);
        assert_eq!(t.pending(), 2);
        // No container yet: they keep waiting.
        assert!(t.refresh().is_empty());
        assert_eq!(t.pending(), 2);

        fx.mount_container();
        let settled = t.refresh();
        assert_eq!(t.pending(), 0);
        assert_eq!(settled.len(), 2);
        let id = container_id();
        for s in &settled {
            assert_eq!(s.attr.container.as_deref(), Some(id.as_str()));
            assert!(s.attr.outside, "dockerd writes from the host");
        }
        // The init mount's lower 1 is the container's index 2 (img1).
        let d = &settled[0];
        assert_eq!(d.ev.path, b"etc");
        assert_eq!(d.attr.layer, Some(2));
        let src = d.source.as_ref().unwrap();
        assert_eq!((src.index, src.diff_id.as_deref()), (2, Some("sha256:1")));
        assert_eq!(src.data_index, None, "a directory has no data layer");
        let f = settled[1].source.as_ref().unwrap();
        assert_eq!((f.index, f.data_index), (2, Some(3)));
        // Settled once: nothing is returned again.
        assert!(t.refresh().is_empty());
        assert!(t.finish().is_empty());

        // The init mount is the container's, described by its init layer.
        let m = &t.mounts()[&init];
        assert_eq!(m.container.as_deref(), Some(id.as_str()));
        assert_eq!(m.mountpoint, None);
        assert_eq!(m.upperdir, Some(mounts::path_display(&fx.dir("rw-init"))));
        let lowers: Vec<String> = ["img1", "img2"]
            .iter()
            .map(|d| mounts::path_display(&fx.dir(d)))
            .collect();
        assert_eq!(m.lowerdirs, lowers);

        // Later copy-ups on it (another mount of the same init layer) need
        // no waiting.
        let mut again = copy_up(fx.key(98, "rw-init"), "dev", FileKind::Dir, 2);
        again.mnt_ns = host_ns().wrapping_add(1);
        let Attributed::Now(attr, src) = t.attribute(&again) else {
            panic!("known init layer");
        };
        assert_eq!(attr.container.as_deref(), Some(id.as_str()));
        assert!(!attr.outside);
        assert_eq!(src.map(|s| s.index), Some(3));
    }

    #[test]
    fn unclaimed_copy_ups_are_given_up_once() {
        let fx = Fx::new();
        fx.mount_container();
        let mut t = fx.tracker();
        // Another container's init layer, never mounted as a container here.
        let ev = copy_up(fx.key(99, "other-init"), "etc", FileKind::Dir, 1);
        assert_eq!(t.attribute(&ev), Attributed::Pending);
        assert!(t.refresh().is_empty(), "waits for its container");
        let settled = t.finish();
        assert_eq!(settled.len(), 1);
        let s = &settled[0];
        assert_eq!(s.attr.container, None);
        // Unshifted: no container's indices apply.
        assert_eq!(s.attr.layer, Some(1));
        assert_eq!(s.source.as_ref().map(|s| s.index), Some(1));
        assert!(t.finish().is_empty());

        // Waiting longer than pending_for gives up at a refresh.
        t.pending_for = Duration::ZERO;
        assert_eq!(t.attribute(&ev), Attributed::Pending);
        let settled = t.refresh();
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].attr.container, None);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn a_full_queue_counts_copy_ups_as_not_attributed() {
        let fx = Fx::new();
        let mut t = fx.tracker();
        t.max_pending = 2;
        let ev = copy_up(fx.key(99, "rw-init"), "etc", FileKind::Dir, 1);
        assert_eq!(t.attribute(&ev), Attributed::Pending);
        assert_eq!(t.attribute(&ev), Attributed::Pending);
        let Attributed::Now(attr, source) = t.attribute(&ev) else {
            panic!("the queue is full");
        };
        assert_eq!(attr.container, None);
        assert_eq!(source.map(|s| s.index), Some(1));
        assert_eq!(t.pending(), 2);
        // The parked ones are still matched.
        fx.mount_container();
        let settled = t.refresh();
        assert_eq!(settled.len(), 2);
        assert!(settled.iter().all(|s| s.attr.container.is_some()));
    }

    /// A runtime wrote into a new container's root before its own metadata
    /// named the container (Podman, /etc): held, then the container's.
    #[test]
    fn a_young_mount_waits_for_its_runtime_to_claim_it() {
        let fx = Fx::new();
        let upper = fx.dir("plain");
        fx.mount_line(&format!(
            "75 1 0:75 / /mnt/young rw - overlay overlay rw,lowerdir={},upperdir={},workdir=/w\n",
            fx.dir("img1").display(),
            upper.display()
        ));
        let mut t = fx.tracker_claiming(Duration::from_secs(3600));
        let ev = copy_up(fx.key(75, "plain"), "etc", FileKind::Dir, 1);
        assert!(matches!(t.attribute(&ev), Attributed::Pending));
        assert!(t.refresh().is_empty(), "still unclaimed, still young");
        // The runtime's metadata now claims it (Fake claims /c/... mounts).
        let mi = std::fs::read_to_string(&fx.mountinfo).unwrap();
        std::fs::write(&fx.mountinfo, mi.replace("/mnt/young", "/c/young")).unwrap();
        let settled = t.refresh();
        assert_eq!(settled.len(), 1);
        assert!(settled[0].attr.container.is_some(), "{:?}", settled[0].attr);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn live_plain_overlays_are_not_held_back() {
        let fx = Fx::new();
        let plain = fx.dir("plain");
        fx.mount_line(&format!(
            "70 1 0:70 / /mnt/p rw - overlay overlay rw,lowerdir={},upperdir={},workdir=/w\n",
            fx.dir("img1").display(),
            plain.display()
        ));
        let mut t = fx.tracker();
        let ev = copy_up(fx.key(70, "plain"), "f", FileKind::Regular, 1);
        let Attributed::Now(attr, _) = t.attribute(&ev) else {
            panic!("a live plain overlay is counted at once");
        };
        assert_eq!(attr.container, None);
        // Without the upper directory's identity nothing could match.
        let dev_only = copy_up(OverlayKey::dev_only(99), "etc", FileKind::Dir, 1);
        assert!(matches!(t.attribute(&dev_only), Attributed::Now(..)));
        assert_eq!(t.pending(), 0);
    }

    /// Attributions are remembered per (overlay, layer, writer), and
    /// forgotten when a scan changes the catalog: a mount counted as no
    /// container's is its container's once a runtime claims it.
    #[test]
    fn remembered_attributions_follow_the_catalog() {
        let fx = Fx::new();
        fx.mount_line(&format!(
            "70 1 0:70 / /mnt/p rw - overlay overlay rw,lowerdir={}:{},upperdir={},workdir=/w\n",
            fx.dir("img1").display(),
            fx.dir("img2").display(),
            fx.dir("plain").display()
        ));
        let mut t = fx.tracker();
        let key = fx.key(70, "plain");
        let attr = |t: &mut Tracker, layer: u16| match t.attribute(&copy_up(
            key,
            "f",
            FileKind::Dir,
            layer,
        )) {
            Attributed::Now(a, s) => (a, s.map(|s| s.diff_id.clone())),
            Attributed::Pending => panic!("a live plain overlay is counted at once"),
        };
        assert_eq!(
            attr(&mut t, 1),
            (
                Attribution {
                    container: None,
                    layer: Some(1),
                    outside: true
                },
                Some(None)
            )
        );
        // Again, now from the remembered attribution; another layer is its own.
        assert_eq!(attr(&mut t, 1).0.container, None);
        assert_eq!(attr(&mut t, 2).0.layer, Some(2));
        // The runtime claims the mount (Fake claims /c/... mounts).
        let mi = std::fs::read_to_string(&fx.mountinfo).unwrap();
        std::fs::write(&fx.mountinfo, mi.replace("/mnt/p", "/c/p")).unwrap();
        assert!(t.refresh().is_empty());
        let (a, diff_id) = attr(&mut t, 2);
        assert_eq!(
            a.container.as_deref(),
            Some(format!("{:064x}", 70).as_str())
        );
        assert_eq!(diff_id, Some(Some("sha256:1".to_string())));
        assert!(attr(&mut t, 1).0.container.is_some());
    }

    #[test]
    fn live_init_named_overlays_wait() {
        let fx = Fx::new();
        // A scan caught dockerd's init mount while it was mounted.
        fx.mount_line(&format!(
            "80 1 0:80 / /var/lib/docker/overlay2/rw-init/merged rw - overlay overlay rw,lowerdir={}:{},upperdir={},workdir=/w\n",
            fx.dir("img1").display(),
            fx.dir("img2").display(),
            fx.dir("rw-init").display()
        ));
        let mut t = fx.tracker();
        let init = fx.key(80, "rw-init");
        assert!(t.mounts()[&init].container.is_none());
        let ev = copy_up(init, "etc", FileKind::Dir, 2);
        assert_eq!(t.attribute(&ev), Attributed::Pending);
        // It is unmounted, the container is mounted.
        std::fs::write(&fx.mountinfo, "").unwrap();
        fx.mount_container();
        let settled = t.refresh();
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].attr.layer, Some(3));
        let m = &t.mounts()[&init];
        assert_eq!(m.container, Some(container_id()));
        // What the scan saw stays.
        assert_eq!(
            m.mountpoint.as_deref(),
            Some("/var/lib/docker/overlay2/rw-init/merged")
        );
        assert!(named_as_init(Some(Path::new("/x/abc-init/diff"))));
        assert!(!named_as_init(Some(Path::new("/x/abc/diff"))));
        assert!(!named_as_init(Some(Path::new("/x/abc-init/up"))));
        assert!(!named_as_init(None));
    }

    #[test]
    fn a_removed_init_layer_is_no_match() {
        let fx = Fx::new();
        fx.mount_container();
        let mut t = fx.tracker();
        let init = fx.key(99, "rw-init");
        assert!(matches!(
            t.attribute(&copy_up(init, "etc", FileKind::Dir, 1)),
            Attributed::Now(
                Attribution {
                    container: Some(_),
                    ..
                },
                _
            )
        ));
        // The container is removed; whatever directory has that identity now
        // is not its init layer.
        std::fs::remove_dir(fx.dir("rw-init")).unwrap();
        let ev = copy_up(init, "dev", FileKind::Dir, 1);
        assert_eq!(t.attribute(&ev), Attributed::Pending);
        let settled = t.finish();
        assert_eq!(settled[0].attr.container, None);
    }

    #[test]
    fn init_layers_are_not_identified_through_symlinks() {
        let fx = Fx::new();
        // The init layer's diff is a symlink to another layer's directory.
        let init = fx.dir("rw-init");
        std::fs::remove_dir(&init).unwrap();
        std::os::unix::fs::symlink(fx.dir("other-init"), &init).unwrap();
        fx.mount_container();
        let mut t = fx.tracker();
        let ev = copy_up(fx.key(99, "other-init"), "etc", FileKind::Dir, 1);
        assert_eq!(t.attribute(&ev), Attributed::Pending);
        let settled = t.finish();
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].attr.container, None);
        // A symlinked layer store component below the store: the same.
        let c = ContainerInfo {
            id: "x".repeat(64),
            name: None,
            image: ImageInfo::default(),
            mountpoint: "/c/x".into(),
            dev: Dev::new(0, 1),
            runtime: "fake",
            upperdir: None,
            layers: vec![LayerInfo {
                index: 1,
                init: true,
                dir: Some(init.clone()),
                ..Default::default()
            }],
            pod: None,
            mount_id: 1,
        };
        assert!(init_identity(&c).is_none());
        let mut plain = c.clone();
        plain.layers[0].dir = Some(fx.dir("img1"));
        let (ident, dir) = init_identity(&plain).unwrap();
        assert_eq!(dir, fx.dir("img1"));
        let k = fx.key(1, "img1");
        assert_eq!(ident, (k.upper_dev, k.upper_ino));
        // Only an init layer at index 1 is one.
        plain.layers[0].init = false;
        assert!(init_identity(&plain).is_none());
    }
}
