//! Docker with the overlay2 graph driver: containers, images and layers from
//! Docker's on-disk metadata.
//!
//! Layout under the Docker root (see shared/RESEARCH.md):
//! - `overlay2/<cache-id>/{diff,link,lower}`, `overlay2/l/<short> -> ../<cache-id>/diff`;
//! - `image/overlay2/layerdb/sha256/<chain>/{cache-id,diff,size}`;
//! - `image/overlay2/layerdb/mounts/<container>/{mount-id,init-id}`;
//! - `image/overlay2/imagedb/content/sha256/<image>` (image config), `repositories.json`;
//! - `containers/<id>/config.v2.json`.
//!
//! Everything below the root is read through [`SafeRoot`]: no symlink is followed.

use std::{
    collections::{HashMap, HashSet},
    path::{Component, Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use serde::Deserialize;

use super::{
    layer_dir, lower_path, parse_link_target, read_verified, rw_layer_id, LowerPath, Runtime,
    Warned,
};
use crate::catalog::{
    oci::{self, ConfigCache, ImageMeta},
    ContainerInfo, Deferred, ImageInfo, LayerInfo, Resolver,
};
use crate::sys::mounts::{bytes_display, path_display, OverlayMount};
use crate::sys::safe_fs::{is_hex64, is_safe_name, SafeFsError, SafeRoot, MAX_JSON};

pub const DEFAULT_ROOT: &str = "/var/lib/docker";
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";

const LAYERDB: &str = "image/overlay2/layerdb";
const IMAGEDB: &str = "image/overlay2/imagedb/content/sha256";
const REPOSITORIES: &str = "image/overlay2/repositories.json";

/// Where the Docker root came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    Flag,
    DaemonJson,
    Mountinfo,
    Default,
}

/// A scan reads only what attribution needs: which container owns which
/// overlay mount (layerdb/mounts, config.v2.json, repositories.json) and each
/// lowerdir's layer (its `l/` link and directory). A layer's diff-id,
/// chain-id, size and instruction (the layer store and the image config) are
/// [`Deferred`] until a report or an event needs them, then read once.
#[derive(Debug)]
pub struct DockerResolver {
    explicit_root: Option<PathBuf>,
    daemon_json: PathBuf,
    default_root: PathBuf,
    last_root: Option<(PathBuf, RootSource)>,
    /// Shared with the deferred layer metadata of the containers it returned.
    lazy: Arc<Mutex<Lazy>>,
}

/// What deferred layer metadata is read through: the latest scan's root, what
/// has been read of the layer store in this scan, and the caches kept across
/// scans.
#[derive(Debug)]
struct Lazy {
    /// The latest scan's Docker root; `None` when it could not be opened.
    root: Option<LazyRoot>,
    /// The layer store's listing (chain ids, hex), read once a scan on first
    /// need: entries no longer listed are dropped from `chains`.
    listed: Option<HashSet<String>>,
    /// Entries whose cache-id could not be read in this scan (warned once).
    unreadable: HashSet<String>,
    /// Every listed entry's cache-id has been read in this scan.
    all_read: bool,
    /// Layer-store entries of `chains_root`, by chain id (hex).
    chains: HashMap<String, ChainMeta>,
    /// cache-id -> chain id of the entries in `chains`.
    by_cache: HashMap<String, String>,
    chains_root: Option<PathBuf>,
    /// Image configs, parsed once.
    images: ConfigCache,
    /// Warnings already printed (rescans must not repeat them).
    warned: Warned,
}

#[derive(Debug)]
struct LazyRoot {
    path: PathBuf,
    root: SafeRoot,
    /// `layerdb/sha256`, opened once (when it is a real directory).
    chain_dir: Option<SafeRoot>,
}

/// The container a deferred layer belongs to, as its scan found it.
struct Owner {
    cid: String,
    image_id: Option<String>,
    /// The Docker root of the scan (canonical).
    root: PathBuf,
    /// Non-init layers mounted.
    image_layers: usize,
    /// The image's layer count was compared to `image_layers` (warned once).
    checked: AtomicBool,
}

/// What was read of a layer-store entry (`layerdb/sha256/<chain>`). The entry is
/// content-addressed and written once, so this is kept across scans while the
/// entry is listed; only values read without error are kept, so a broken file is
/// read (and warned about) again on every scan.
#[derive(Debug, Clone, Default)]
struct ChainMeta {
    cache_id: String,
    diff: Option<String>,
    size: Option<u64>,
}

#[derive(Deserialize)]
struct ContainerConfig {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Image")]
    image: Option<String>,
}

#[derive(Deserialize)]
struct Repositories {
    #[serde(rename = "Repositories", default)]
    repositories: HashMap<String, HashMap<String, String>>,
}

#[derive(Deserialize)]
struct DaemonJson {
    #[serde(rename = "data-root")]
    data_root: Option<String>,
    /// Pre-17.05 name of data-root.
    graph: Option<String>,
}

/// A container's layer mounts (layerdb/mounts/<id>).
#[derive(Clone)]
pub(crate) struct RwLayer {
    container_id: String,
    init_id: Option<String>,
}

/// Per-scan state: the opened root and the tables read once per scan.
pub(crate) struct Scan<'a> {
    root: SafeRoot,
    overlay2: PathBuf,
    /// `overlay2` and `overlay2/l` opened once (when they are real
    /// directories; otherwise reads go through `root` and fail as before).
    o2_dir: Option<SafeRoot>,
    l_dir: Option<SafeRoot>,
    warnings: &'a mut Vec<String>,
    /// Lowerdir -> (cache-id, short id) and cache-id -> checked directory, with
    /// the warnings each gave: containers sharing layers read them once a scan.
    lowers: HashMap<PathBuf, Memo<LowerIds>>,
    dirs: HashMap<String, Memo<Option<PathBuf>>>,
    /// RW-layer id -> container, from layerdb/mounts.
    rw_layers: HashMap<String, RwLayer>,
    /// Image id -> `repo:tag` names, read on the first claim.
    tags: Option<HashMap<String, Vec<String>>>,
    /// Containers claimed so far (a container's mount is claimed once).
    claimed: HashSet<String>,
}

/// `(cache-id, short id)` of a lowerdir.
type LowerIds = (Option<String>, Option<String>);

struct Memo<T> {
    value: T,
    warnings: Vec<String>,
}

impl DockerResolver {
    /// `root`: the data root the user named, if any.
    pub fn new(root: Option<PathBuf>) -> Self {
        Self::with_paths(
            root,
            PathBuf::from(DAEMON_JSON),
            PathBuf::from(DEFAULT_ROOT),
        )
    }

    /// For tests and unusual hosts: every path discovery looks at.
    pub fn with_paths(
        explicit_root: Option<PathBuf>,
        daemon_json: PathBuf,
        default_root: PathBuf,
    ) -> Self {
        Self {
            explicit_root,
            daemon_json,
            default_root,
            last_root: None,
            lazy: Arc::new(Mutex::new(Lazy::new())),
        }
    }

    fn lazy(&self) -> MutexGuard<'_, Lazy> {
        lock(&self.lazy)
    }

    /// The root used by the latest scan (canonical), and where it came from.
    pub fn root(&self) -> Option<(&Path, RootSource)> {
        self.last_root.as_ref().map(|(p, s)| (p.as_path(), *s))
    }

    /// Finds the Docker root: `--docker-root`, then `data-root` in daemon.json, then
    /// the root the overlay mounts show, then /var/lib/docker.
    pub fn discover_root(
        &self,
        mounts: &[OverlayMount],
        warnings: &mut Vec<String>,
    ) -> (PathBuf, RootSource) {
        if let Some(p) = &self.explicit_root {
            return (p.clone(), RootSource::Flag);
        }
        if let Some(p) = self.daemon_json_root(warnings) {
            return (p, RootSource::DaemonJson);
        }
        if let Some(p) = root_from_mounts(mounts) {
            return (p, RootSource::Mountinfo);
        }
        (self.default_root.clone(), RootSource::Default)
    }

    fn daemon_json_root(&self, warnings: &mut Vec<String>) -> Option<PathBuf> {
        let path = &self.daemon_json;
        let data = match read_capped(path, 1 << 20) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warnings.push(format!("{}: {e}; ignoring it", path.display()));
                return None;
            }
        };
        parse_daemon_json(path, &data, warnings)
    }

    /// Every container of the Docker root, each with what its deferred
    /// layer metadata is read for.
    fn scan_owned(
        &mut self,
        mounts: &[OverlayMount],
        warnings: &mut Vec<String>,
    ) -> Vec<(ContainerInfo, Arc<Owner>)> {
        let found = super::scan(self, mounts, warnings);
        let Some((root, _)) = &self.last_root else {
            return Vec::new();
        };
        found
            .into_iter()
            .map(|c| {
                let owner = Arc::new(Owner {
                    cid: c.id.clone(),
                    image_id: c.image.id.clone(),
                    root: root.clone(),
                    image_layers: c.layers.iter().filter(|l| !l.init).count(),
                    checked: AtomicBool::new(false),
                });
                (c, owner)
            })
            .collect()
    }

    /// The Docker root's SafeRoot for deferred metadata, which outlives the
    /// scan.
    fn open_lazy_root(&self, root: &Path, warnings: &mut Vec<String>) {
        match SafeRoot::open(root) {
            Ok(r) => self.lazy().new_scan(Some(LazyRoot {
                path: root.to_path_buf(),
                chain_dir: r.subdir(Path::new(&format!("{LAYERDB}/sha256"))).ok(),
                root: r,
            })),
            Err(e) => warnings.push(format!("opening the Docker root: {e}")),
        }
    }

    /// A container's name and image, from its config.v2.json.
    fn container_config(&self, scan: &mut Scan, cid: &str) -> (Option<String>, Option<String>) {
        let cfg_path = PathBuf::from(format!("containers/{cid}/config.v2.json"));
        let cfg = scan.json::<ContainerConfig>(&cfg_path);
        if let Some(cfg) = &cfg {
            if cfg.id.as_deref().is_some_and(|id| id != cid) {
                scan.warn(format!(
                    "{}: ID {:?} does not match its directory",
                    path_display(&cfg_path),
                    cfg.id.as_deref().unwrap_or_default()
                ));
            }
        }
        let name = cfg
            .as_ref()
            .and_then(|c| c.name.as_deref())
            .map(|n| n.trim_start_matches('/').to_string());
        let image_id = cfg.as_ref().and_then(|c| c.image.clone()).filter(|id| {
            let ok = oci::is_digest(id);
            if !ok {
                scan.warn(format!(
                    "container {cid}: image id {id:?} is not sha256:<hex>"
                ));
            }
            ok
        });
        (name, image_id)
    }

    /// The layers' identities: what attribution needs. The rest is deferred
    /// ([`Lazy::complete`]).
    fn layers(&self, scan: &mut Scan, m: &OverlayMount, rw: &RwLayer) -> Vec<LayerInfo> {
        let n = m.lowerdirs.len();
        let mut layers: Vec<LayerInfo> = Vec::with_capacity(n);
        for (i, lower) in m.lowerdirs.iter().enumerate() {
            let mut l = LayerInfo {
                index: i + 1,
                ..Default::default()
            };
            let (cache_id, short_id) = scan.lowerdir(lower);
            l.dir = cache_id.as_ref().and_then(|c| scan.layer_dir(c));
            l.init = match (&cache_id, &rw.init_id) {
                (Some(c), Some(init)) => c == init,
                (Some(c), None) => c.ends_with("-init"),
                (None, _) => i == 0 && rw.init_id.is_some(),
            };
            l.short_id = short_id;
            if !l.init {
                l.position = Some(n - i);
            }
            l.cache_id = cache_id;
            layers.push(l);
        }
        layers
    }
}

fn lock(lazy: &Mutex<Lazy>) -> MutexGuard<'_, Lazy> {
    // Nothing panics while holding it; were it poisoned, the caches are
    // still consistent maps.
    lazy.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lazy {
    fn new() -> Self {
        Self {
            root: None,
            listed: None,
            unreadable: HashSet::new(),
            all_read: false,
            chains: HashMap::new(),
            by_cache: HashMap::new(),
            chains_root: None,
            images: ConfigCache::default(),
            warned: Warned::new("docker"),
        }
    }

    /// A new scan, of `root` (`None`: no root could be opened).
    fn new_scan(&mut self, root: Option<LazyRoot>) {
        if let Some(r) = &root {
            if self.chains_root.as_ref() != Some(&r.path) {
                self.chains.clear();
                self.by_cache.clear();
                self.chains_root = Some(r.path.clone());
            }
        }
        self.root = root;
        self.listed = None;
        self.unreadable.clear();
        self.all_read = false;
    }

    fn emit(&mut self, warnings: Vec<String>) {
        self.warned.emit(warnings);
    }

    /// Whether [`Self::complete`] can fill `l` from the caches alone (and the
    /// layer store's listing): rescans then describe a layer that was read
    /// before as they did.
    fn cached(&self, owner: &Owner, l: &LayerInfo) -> bool {
        let image = owner
            .image_id
            .as_ref()
            .is_none_or(|id| self.images.contains(id));
        let chain = l.cache_id.as_ref().is_none_or(|c| {
            self.known_chain(c)
                .and_then(|chain| self.chains.get(&chain))
                .is_some_and(|m| m.diff.is_some() && m.size.is_some())
        });
        image && chain
    }

    /// Reads a non-init layer's diff-id, chain-id and size (the layer store)
    /// and its instruction (the image config).
    fn complete(&mut self, owner: &Owner, l: &mut LayerInfo, w: &mut Vec<String>) {
        let Some(position) = l.position.filter(|_| !l.init) else {
            return;
        };
        if self.root.as_ref().map(|r| &r.path) != Some(&owner.root) {
            w.push(format!(
                "container {}: the Docker root is no longer {}; metadata of its layer {} not read",
                owner.cid,
                owner.root.display(),
                l.index
            ));
            return;
        }
        let image = owner.image_id.as_deref().and_then(|id| self.image(id, w));
        if let Some(img) = &image {
            if !owner.checked.swap(true, Ordering::Relaxed) {
                w.extend(img.layer_count_warning(&owner.cid, owner.image_layers));
            }
        }
        let cid = &owner.cid;
        // The image says which entry the layer should be: most often one
        // read tells, instead of every entry's cache-id.
        let expected = image
            .as_ref()
            .and_then(|img| img.chain_ids.get(position - 1))
            .and_then(|c| c.strip_prefix("sha256:"));
        let chain = l
            .cache_id
            .as_deref()
            .and_then(|c| self.chain_of(c, expected, w));
        if let Some(chain) = &chain {
            l.chain_id = Some(format!("sha256:{chain}"));
            (l.diff_id, l.size) = self.diff_and_size(chain, w);
        } else if let Some(c) = &l.cache_id {
            w.push(format!(
                "container {cid}: no layerdb entry has cache-id {c}; its size is unknown"
            ));
        }
        link_image(w, cid, l, chain.is_some(), image.as_deref(), position);
    }

    fn root(&self) -> Option<&LazyRoot> {
        self.root.as_ref()
    }

    fn image(&mut self, id: &str, w: &mut Vec<String>) -> Option<Arc<ImageMeta>> {
        let hex = id.strip_prefix("sha256:")?;
        let root = self.root.as_ref().map(|r| &r.root);
        self.images.get(id, &format!("image {id}"), w, |w| {
            let rel = PathBuf::from(format!("{IMAGEDB}/{hex}"));
            read_verified(root?, &rel, hex, MAX_JSON, true, w)
        })
    }

    /// The layer store's listing of this scan; entries no longer listed are
    /// dropped from the caches.
    fn listed(&mut self, w: &mut Vec<String>) -> &HashSet<String> {
        if self.listed.is_none() {
            let dir = PathBuf::from(format!("{LAYERDB}/sha256"));
            let names = match self.root().map(|r| r.root.read_dir(&dir)) {
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    w.push(e.to_string());
                    Vec::new()
                }
                None => Vec::new(),
            };
            let listed: HashSet<String> = names
                .into_iter()
                .filter_map(|n| n.into_string().ok().filter(|s| is_hex64(s)))
                .collect();
            self.chains.retain(|chain, _| listed.contains(chain));
            let chains = &self.chains;
            self.by_cache
                .retain(|_, chain| chains.contains_key(chain.as_str()));
            self.listed = Some(listed);
        }
        self.listed.get_or_insert_with(HashSet::new)
    }

    /// The chain id (hex) of the listed layerdb entry whose cache-id is
    /// `cache_id`. `expected` (the image's chain id there) is looked at
    /// first; the other entries only if it is not that layer.
    fn chain_of(
        &mut self,
        cache_id: &str,
        expected: Option<&str>,
        w: &mut Vec<String>,
    ) -> Option<String> {
        self.listed(w);
        if let Some(chain) = self.known_chain(cache_id) {
            return Some(chain);
        }
        if let Some(e) = expected {
            if !self.chains.contains_key(e) && self.listed(w).contains(e) {
                self.read_cache_id(e, w);
                if let Some(chain) = self.known_chain(cache_id) {
                    return Some(chain);
                }
            }
        }
        if !self.all_read {
            self.all_read = true;
            self.listed(w);
            let unread: Vec<String> = self
                .listed
                .iter()
                .flatten()
                .filter(|c| !self.chains.contains_key(c.as_str()))
                .cloned()
                .collect();
            for chain in unread {
                self.read_cache_id(&chain, w);
            }
        }
        self.known_chain(cache_id)
    }

    /// The cached entry with this cache-id.
    fn known_chain(&self, cache_id: &str) -> Option<String> {
        let chain = self.by_cache.get(cache_id)?;
        let meta = self.chains.get(chain)?;
        (meta.cache_id == cache_id).then(|| chain.clone())
    }

    /// Reads a listed entry's cache-id into the caches (once a scan).
    fn read_cache_id(&mut self, chain: &str, w: &mut Vec<String>) {
        if self.unreadable.contains(chain) {
            return;
        }
        match self.chain_line(chain, "cache-id") {
            Ok(c) if is_safe_name(&c) => {
                self.by_cache.insert(c.clone(), chain.to_string());
                let meta = ChainMeta {
                    cache_id: c,
                    ..Default::default()
                };
                self.chains.insert(chain.to_string(), meta);
                return;
            }
            Ok(c) => w.push(format!("layer {chain}: invalid cache-id {c:?}")),
            // Layers being created or removed lack it for a moment.
            Err(e) if e.is_not_found() => {}
            Err(e) => w.push(e.to_string()),
        }
        self.unreadable.insert(chain.to_string());
    }

    /// `layerdb/sha256/<chain>/<file>`, one line.
    fn chain_line(&self, chain: &str, file: &str) -> Result<String, SafeFsError> {
        let Some(r) = self.root() else {
            return Err(SafeFsError::BadPath {
                path: PathBuf::from(format!("{LAYERDB}/sha256/{chain}/{file}")),
            });
        };
        match &r.chain_dir {
            Some(d) => d.read_line(&Path::new(chain).join(file)),
            None => r
                .root
                .read_line(&PathBuf::from(format!("{LAYERDB}/sha256/{chain}/{file}"))),
        }
    }

    /// The layer store's diff-id and size of a chain listed by [`Self::chain_of`].
    fn diff_and_size(&mut self, chain: &str, w: &mut Vec<String>) -> (Option<String>, Option<u64>) {
        let cached = self.chains.get(chain).cloned().unwrap_or_default();
        let dir = || PathBuf::from(format!("{LAYERDB}/sha256/{chain}"));
        let diff = cached
            .diff
            .or_else(|| match self.chain_line(chain, "diff") {
                Ok(d) if oci::is_digest(&d) => Some(d),
                Ok(d) => {
                    w.push(format!("{}: invalid diff-id {d:?}", path_display(&dir())));
                    None
                }
                Err(e) => {
                    w.push(e.to_string());
                    None
                }
            });
        let size = cached
            .size
            .or_else(|| match self.chain_line(chain, "size") {
                Ok(s) => match s.parse() {
                    Ok(v) => Some(v),
                    Err(_) => {
                        w.push(format!(
                            "{}/size: not a number: {s:?}",
                            path_display(&dir())
                        ));
                        None
                    }
                },
                Err(e) => {
                    w.push(e.to_string());
                    None
                }
            });
        if let Some(meta) = self.chains.get_mut(chain) {
            meta.diff.clone_from(&diff);
            meta.size = size;
        }
        (diff, size)
    }
}

/// Fills the image-derived fields of a non-init layer at `position` (1 = base):
/// diff-id and chain-id (when the layer store had none), and the instruction, which
/// is only attributed when the layer store agrees with the image on the chain-id.
fn link_image(
    w: &mut Vec<String>,
    cid: &str,
    l: &mut LayerInfo,
    from_layerdb: bool,
    image: Option<&ImageMeta>,
    position: usize,
) {
    let Some(img) = image else { return };
    let Some(image_chain) = img.chain_ids.get(position - 1) else {
        return;
    };
    // The layer store's diff-id stands, even unreadable.
    let diff = l.diff_id.clone();
    if !oci::describe_layer(img, position, l) {
        w.push(format!(
            "container {cid}: layer {} has chain-id {} but the image expects {image_chain} there; instruction unknown",
            l.index,
            l.chain_id.as_deref().unwrap_or("null")
        ));
        return;
    }
    if from_layerdb {
        l.diff_id = diff;
    }
}

impl Runtime for DockerResolver {
    type Root<'w> = Scan<'w>;
    /// The RW layer's id and its container.
    type Claim = (String, RwLayer);

    /// The one Docker root ([`Self::discover_root`]), canonical.
    fn roots(&mut self, mounts: &[OverlayMount], warnings: &mut Vec<String>) -> Vec<PathBuf> {
        self.last_root = None;
        // A new scan: the layer store is listed again on first need.
        self.lazy().new_scan(None);
        let (root, source) = self.discover_root(mounts, warnings);
        match std::fs::canonicalize(&root) {
            Ok(r) => {
                self.last_root = Some((r.clone(), source));
                vec![r]
            }
            Err(e) => {
                // No Docker on this host is normal; a root someone named is not.
                if source == RootSource::Default && e.kind() == std::io::ErrorKind::NotFound {
                    log::debug!("docker: {}: {e}", root.display());
                } else {
                    warnings.push(format!("Docker root {}: {e}", root.display()));
                }
                Vec::new()
            }
        }
    }

    fn open<'w>(&mut self, root: PathBuf, warnings: &'w mut Vec<String>) -> Option<Scan<'w>> {
        let safe = match SafeRoot::open(&root) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("opening the Docker root: {e}"));
                return None;
            }
        };
        self.open_lazy_root(&root, warnings);
        let sub = |p: &str| safe.subdir(Path::new(p)).ok();
        let mut scan = Scan {
            o2_dir: sub("overlay2"),
            l_dir: sub("overlay2/l"),
            root: safe,
            overlay2: root.join("overlay2"),
            warnings,
            lowers: HashMap::new(),
            dirs: HashMap::new(),
            rw_layers: HashMap::new(),
            tags: None,
            claimed: HashSet::new(),
        };
        scan.rw_layers = scan.rw_layers();
        (!scan.rw_layers.is_empty()).then_some(scan)
    }

    fn claim(&mut self, scan: &mut Scan, m: &OverlayMount) -> Option<(String, RwLayer)> {
        let rw_id = rw_layer_id(&scan.overlay2, m, true)?;
        let rw = scan.rw_layers.get(&rw_id)?.clone();
        scan.claimed
            .insert(rw.container_id.clone())
            .then_some((rw_id, rw))
    }

    fn describe(
        &mut self,
        scan: &mut Scan,
        m: &OverlayMount,
        (rw_id, rw): (String, RwLayer),
    ) -> ContainerInfo {
        if scan.tags.is_none() {
            scan.tags = Some(scan.repositories());
        }
        let cid = &rw.container_id;
        let (name, image_id) = self.container_config(scan, cid);
        let tags = image_id
            .as_ref()
            .and_then(|id| scan.tags.as_ref()?.get(id).cloned())
            .unwrap_or_default();
        ContainerInfo {
            id: cid.clone(),
            name,
            image: ImageInfo { tags, id: image_id },
            mountpoint: m.mountpoint.clone(),
            dev: m.dev,
            runtime: "docker",
            upperdir: Some(scan.overlay2.join(&rw_id).join("diff")),
            layers: self.layers(scan, m, &rw),
            pod: None,
            mount_id: m.mount_id,
        }
    }
}

impl Resolver for DockerResolver {
    fn runtime(&self) -> &'static str {
        "docker"
    }

    /// Layer metadata is deferred, except where what an earlier scan read
    /// tells it.
    fn scan(&mut self, mounts: &[OverlayMount]) -> Vec<ContainerInfo> {
        let mut warnings = Vec::new();
        let found = self.scan_owned(mounts, &mut warnings);
        let mut lazy = self.lazy();
        let out = found
            .into_iter()
            .map(|(mut c, owner)| {
                let mut deferred: Option<Deferred> = None;
                for l in c.layers.iter_mut().filter(|l| !l.init) {
                    if lazy.cached(&owner, l) {
                        lazy.complete(&owner, l, &mut warnings);
                        continue;
                    }
                    let d = deferred.get_or_insert_with(|| {
                        let (shared, owner) = (self.lazy.clone(), owner.clone());
                        Deferred::new(move |l| {
                            let mut w = Vec::new();
                            let mut lazy = lock(&shared);
                            lazy.complete(&owner, l, &mut w);
                            lazy.emit(w);
                        })
                    });
                    l.deferred = Some(d.clone());
                }
                c
            })
            .collect();
        lazy.emit(warnings);
        out
    }
}

impl DockerResolver {
    /// [`Resolver::scan`] that reads every layer's metadata at once (nothing
    /// deferred) and returns its warnings instead of logging them.
    pub fn scan_collect(&mut self, mounts: &[OverlayMount]) -> (Vec<ContainerInfo>, Vec<String>) {
        let mut warnings = Vec::new();
        let found = self.scan_owned(mounts, &mut warnings);
        let mut lazy = self.lazy();
        let out = found
            .into_iter()
            .map(|(mut c, owner)| {
                for l in &mut c.layers {
                    lazy.complete(&owner, l, &mut warnings);
                }
                c
            })
            .collect();
        (out, warnings)
    }
}

impl Scan<'_> {
    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    fn read(&mut self, rel: &Path, max: u64) -> Option<Vec<u8>> {
        match self.root.read(rel, max) {
            Ok(d) => Some(d),
            Err(e) => {
                self.warn(e.to_string());
                None
            }
        }
    }

    fn json<T: for<'de> Deserialize<'de>>(&mut self, rel: &Path) -> Option<T> {
        let data = self.read(rel, MAX_JSON)?;
        match serde_json::from_slice(&data) {
            Ok(v) => Some(v),
            Err(e) => {
                let p = path_display(&self.root.path().join(rel));
                self.warn(format!("{p}: invalid JSON: {e}"));
                None
            }
        }
    }

    /// RW-layer id -> container, from layerdb/mounts.
    fn rw_layers(&mut self) -> HashMap<String, RwLayer> {
        let dir = PathBuf::from(format!("{LAYERDB}/mounts"));
        let names = match self.root.read_dir(&dir) {
            Ok(n) => n,
            Err(e) => {
                if !e.is_not_found() {
                    self.warn(e.to_string());
                }
                return HashMap::new();
            }
        };
        let mut out = HashMap::new();
        for name in names {
            let Some(cid) = name.to_str().filter(|s| is_hex64(s)) else {
                continue;
            };
            let mount_id = match self.root.read_line(&dir.join(cid).join("mount-id")) {
                Ok(s) => s,
                Err(e) => {
                    self.warn(e.to_string());
                    continue;
                }
            };
            if !is_safe_name(&mount_id) {
                self.warn(format!("container {cid}: invalid mount-id {mount_id:?}"));
                continue;
            }
            let init_id = match self.root.read_line(&dir.join(cid).join("init-id")) {
                Ok(s) if is_safe_name(&s) => Some(s),
                Ok(s) => {
                    self.warn(format!("container {cid}: invalid init-id {s:?}"));
                    None
                }
                Err(e) if e.is_not_found() => None,
                Err(e) => {
                    self.warn(e.to_string());
                    None
                }
            };
            out.insert(
                mount_id,
                RwLayer {
                    container_id: cid.to_string(),
                    init_id,
                },
            );
        }
        out
    }

    /// `f` run once per scan for each key of `table`; later calls repeat its
    /// warnings, so the warnings are those of an unmemoized scan.
    fn memoized<K, T: Clone>(
        &mut self,
        key: &K,
        table: fn(&mut Self) -> &mut HashMap<K, Memo<T>>,
        f: impl FnOnce(&mut Self) -> T,
    ) -> T
    where
        K: std::hash::Hash + Eq + Clone,
    {
        if let Some(m) = table(self).get(key) {
            let (value, warnings) = (m.value.clone(), m.warnings.clone());
            self.warnings.extend(warnings);
            return value;
        }
        let before = self.warnings.len();
        let value = f(self);
        let warnings = self.warnings[before..].to_vec();
        table(self).insert(
            key.clone(),
            Memo {
                value: value.clone(),
                warnings,
            },
        );
        value
    }

    /// `(cache-id, short id)` of a lowerdir entry, which is `<root>/overlay2/l/<short>`,
    /// `<root>/overlay2/<cache-id>/diff`, or either relative to `<root>/overlay2`.
    fn lowerdir(&mut self, lower: &Path) -> LowerIds {
        let key = lower.to_path_buf();
        self.memoized(&key, |s| &mut s.lowers, |s| s.lowerdir_uncached(&key))
    }

    fn lowerdir_uncached(&mut self, lower: &Path) -> LowerIds {
        match lower_path(&self.overlay2, lower) {
            LowerPath::Link(short) => self.short_link(short),
            LowerPath::Layer(cache) => {
                let short = match &self.o2_dir {
                    Some(o2) => o2.read_line(&Path::new(&cache).join("link")),
                    None => self
                        .root
                        .read_line(&PathBuf::from(format!("overlay2/{cache}/link"))),
                };
                (Some(cache), short.ok().filter(|s| is_safe_name(s)))
            }
            LowerPath::Outside => {
                self.warn(format!(
                    "lowerdir {} is outside {}",
                    path_display(lower),
                    self.overlay2.display()
                ));
                (None, None)
            }
            LowerPath::Other => {
                self.warn(format!(
                    "lowerdir {} is not an overlay2 layer path",
                    path_display(lower)
                ));
                (None, None)
            }
        }
    }

    /// `l/<short>` -> (cache-id, short).
    fn short_link(&mut self, short: String) -> LowerIds {
        let link = PathBuf::from(format!("overlay2/l/{short}"));
        let target = match &self.l_dir {
            Some(l) => l.read_link(Path::new(&short)),
            None => self.root.read_link(&link),
        };
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                self.warn(e.to_string());
                return (None, Some(short));
            }
        };
        match parse_link_target(&target) {
            Some(cache) => (Some(cache), Some(short)),
            None => {
                self.warn(format!(
                    "{}: points to {:?}, expected ../<cache-id>/diff; not followed",
                    path_display(&self.root.path().join(&link)),
                    bytes_display(&target)
                ));
                (None, Some(short))
            }
        }
    }

    /// `<root>/overlay2/<cache-id>/diff` if it is a real directory (no symlinks).
    /// Checked on every scan, not only the first: the layer's directory is what the
    /// source-layer lookup later opens.
    fn layer_dir(&mut self, cache_id: &str) -> Option<PathBuf> {
        let key = cache_id.to_string();
        self.memoized(&key, |s| &mut s.dirs, |s| s.layer_dir_uncached(&key))
    }

    fn layer_dir_uncached(&mut self, cache_id: &str) -> Option<PathBuf> {
        let rel = PathBuf::from(format!("overlay2/{cache_id}/diff"));
        let is_dir = match &self.o2_dir {
            Some(o2) => o2.is_dir(&Path::new(cache_id).join("diff")),
            None => self.root.is_dir(&rel),
        };
        layer_dir(&self.root, &rel, is_dir, self.warnings)
    }

    /// Image id -> sorted `repo:tag` names.
    fn repositories(&mut self) -> HashMap<String, Vec<String>> {
        let rel = Path::new(REPOSITORIES);
        let data = match self.root.read(rel, MAX_JSON) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return HashMap::new(),
            Err(e) => {
                self.warn(e.to_string());
                return HashMap::new();
            }
        };
        match parse_repositories(&data) {
            Ok(r) => r,
            Err(e) => {
                self.warn(format!("{REPOSITORIES}: invalid JSON: {e}"));
                HashMap::new()
            }
        }
    }
}

/// `data-root` (or the older `graph`) of daemon.json, if set and absolute.
fn parse_daemon_json(path: &Path, data: &[u8], warnings: &mut Vec<String>) -> Option<PathBuf> {
    match serde_json::from_slice::<DaemonJson>(data) {
        Ok(d) => d
            .data_root
            .or(d.graph)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .filter(|p| {
                let abs = p.is_absolute();
                if !abs {
                    warnings.push(format!(
                        "{}: data-root {:?} is not absolute; ignoring it",
                        path.display(),
                        p
                    ));
                }
                abs
            }),
        Err(e) => {
            warnings.push(format!(
                "{}: invalid JSON ({e}); ignoring it",
                path.display()
            ));
            None
        }
    }
}

/// repositories.json: image id -> sorted `repo:tag` names.
fn parse_repositories(data: &[u8]) -> Result<HashMap<String, Vec<String>>, serde_json::Error> {
    let repos: Repositories = serde_json::from_slice(data)?;
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for refs in repos.repositories.into_values() {
        for (reference, id) in refs {
            // `repo@sha256:...` entries are digests, not tags.
            if !reference.contains('@') {
                out.entry(id).or_default().push(reference);
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    Ok(out)
}

/// Runs every parser of Docker metadata on `data`, as each of the files and
/// lines they read (daemon.json, config.v2.json, image configs,
/// repositories.json, layer link targets, one-line layerdb files) and as a
/// mountinfo whose overlays are matched to container layers. For the fuzz
/// targets in tests/fuzz: it must not panic, whatever `data` is.
#[doc(hidden)]
pub fn fuzz_parsers(data: &[u8]) {
    let mut warnings = Vec::new();
    let _ = parse_daemon_json(Path::new("daemon.json"), data, &mut warnings);
    if let Ok(c) = serde_json::from_slice::<ContainerConfig>(data) {
        let _ = c.name.as_deref().map(|n| n.trim_start_matches('/'));
        let _ = (c.id, c.image.map(|i| oci::is_digest(&i)));
    }
    let _ = oci::parse_image_config("image sha256:fuzz", data, &mut warnings);
    let _ = parse_repositories(data);
    let _ = parse_link_target(data);
    if let Ok(line) = std::str::from_utf8(data) {
        let line = line.trim();
        let _ = (
            is_safe_name(line),
            oci::is_digest(line),
            line.parse::<u64>(),
        );
        let ids: Vec<String> = line.split(',').map(str::to_string).collect();
        let _ = oci::chain_ids(&ids);
    }
    let overlay2 = Path::new("/var/lib/docker/overlay2");
    let mounts = crate::sys::mounts::parse_mountinfo(data).mounts;
    for m in &mounts {
        let _ = rw_layer_id(overlay2, m, true);
    }
}

/// The Docker root most overlay mounts point into (`<root>/overlay2/...`).
fn root_from_mounts(mounts: &[OverlayMount]) -> Option<PathBuf> {
    let mut counts: Vec<(PathBuf, usize)> = Vec::new();
    for m in mounts {
        let candidates = std::iter::once(&m.mountpoint)
            .chain(m.upperdir.iter())
            .chain(m.lowerdirs.iter());
        let mut seen_here: Option<PathBuf> = None;
        for p in candidates.filter(|p| p.is_absolute()) {
            let comps: Vec<Component> = p.components().collect();
            // <root>/overlay2/<id>/{merged,diff} or <root>/overlay2/l/<short>
            if comps.len() >= 4 && comps[comps.len() - 3].as_os_str() == "overlay2" {
                let root: PathBuf = comps[..comps.len() - 3].iter().collect();
                seen_here = Some(root);
                break;
            }
        }
        if let Some(r) = seen_here {
            match counts.iter_mut().find(|(p, _)| *p == r) {
                Some((_, n)) => *n += 1,
                None => counts.push((r, 1)),
            }
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
        .into_iter()
        .map(|(p, _)| p)
        .find(|p| p.join("image/overlay2").is_dir())
}

fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests;
