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
    fmt::Write as _,
    path::{Component, Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::catalog::{ContainerInfo, Deferred, ImageInfo, LayerInfo, Resolver};
use crate::sys::mounts::{bytes_display, path_display, OverlayMount};
use crate::sys::safe_fs::{
    is_hex64, is_safe_name, is_safe_name_bytes, SafeFsError, SafeRoot, MAX_JSON,
};

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
#[derive(Debug, Default)]
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
    /// Image configs are content-addressed, so never change: parsed once.
    images: HashMap<String, Arc<ImageMeta>>,
    /// Warnings already printed (rescans must not repeat them).
    warned: HashSet<String>,
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

#[derive(Debug)]
struct ImageMeta {
    diff_ids: Vec<String>,
    /// Chain ids computed from `diff_ids`, same positions.
    chain_ids: Vec<String>,
    /// Non-empty-layer history entries, base first: `(created_by, comment)`.
    history: Vec<(String, Option<String>)>,
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
struct ImageConfig {
    rootfs: RootFs,
    #[serde(default)]
    history: Vec<HistoryEntry>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct HistoryEntry {
    #[serde(default)]
    created_by: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    empty_layer: bool,
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
struct RwLayer {
    container_id: String,
    init_id: Option<String>,
}

/// Per-scan state: the opened root and the tables read once per scan.
struct Scan<'a> {
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
            lazy: Arc::default(),
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

    fn scan_inner(
        &mut self,
        mounts: &[OverlayMount],
        warnings: &mut Vec<String>,
    ) -> Vec<(ContainerInfo, Arc<Owner>)> {
        self.last_root = None;
        // A new scan: the layer store is listed again on first need.
        self.lazy().new_scan(None);
        let (root, source) = self.discover_root(mounts, warnings);
        let root = match std::fs::canonicalize(&root) {
            Ok(r) => r,
            Err(e) => {
                // No Docker on this host is normal; a root someone named is not.
                if source == RootSource::Default && e.kind() == std::io::ErrorKind::NotFound {
                    log::debug!("docker: {}: {e}", root.display());
                } else {
                    warnings.push(format!("Docker root {}: {e}", root.display()));
                }
                return Vec::new();
            }
        };
        self.last_root = Some((root.clone(), source));
        let safe = match SafeRoot::open(&root) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("opening the Docker root: {e}"));
                return Vec::new();
            }
        };
        // Deferred metadata is read through a root of its own (handles
        // outlive the scan).
        match SafeRoot::open(&root) {
            Ok(r) => self.lazy().new_scan(Some(LazyRoot {
                path: root.clone(),
                chain_dir: r.subdir(Path::new(&format!("{LAYERDB}/sha256"))).ok(),
                root: r,
            })),
            Err(e) => warnings.push(format!("opening the Docker root: {e}")),
        }
        let sub = |p: &str| safe.subdir(Path::new(p)).ok();
        let mut scan = Scan {
            o2_dir: sub("overlay2"),
            l_dir: sub("overlay2/l"),
            root: safe,
            overlay2: root.join("overlay2"),
            warnings,
            lowers: HashMap::new(),
            dirs: HashMap::new(),
        };
        self.containers(&mut scan, &root, mounts)
    }

    fn containers(
        &mut self,
        scan: &mut Scan,
        root: &Path,
        mounts: &[OverlayMount],
    ) -> Vec<(ContainerInfo, Arc<Owner>)> {
        let rw_layers = scan.rw_layers();
        if rw_layers.is_empty() {
            return Vec::new();
        }
        let mut tags: Option<HashMap<String, Vec<String>>> = None;
        let mut out: Vec<(ContainerInfo, Arc<Owner>)> = Vec::new();
        for m in mounts {
            let Some(rw_id) = rw_layer_id(&scan.overlay2, m) else {
                continue;
            };
            let Some(rw) = rw_layers.get(&rw_id) else {
                continue;
            };
            if out.iter().any(|(c, _)| c.id == rw.container_id) {
                continue;
            }
            let tags = tags.get_or_insert_with(|| scan.repositories());
            let c = self.container(scan, m, &rw_id, rw, tags);
            let owner = Arc::new(Owner {
                cid: c.id.clone(),
                image_id: c.image.id.clone(),
                root: root.to_path_buf(),
                image_layers: c.layers.iter().filter(|l| !l.init).count(),
                checked: AtomicBool::new(false),
            });
            out.push((c, owner));
        }
        out
    }

    fn container(
        &mut self,
        scan: &mut Scan,
        m: &OverlayMount,
        rw_id: &str,
        rw: &RwLayer,
        tags: &HashMap<String, Vec<String>>,
    ) -> ContainerInfo {
        let cid = &rw.container_id;
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
            let ok = id.strip_prefix("sha256:").is_some_and(is_hex64);
            if !ok {
                scan.warn(format!(
                    "container {cid}: image id {id:?} is not sha256:<hex>"
                ));
            }
            ok
        });
        let upperdir = Some(scan.overlay2.join(rw_id).join("diff"));
        let layers = self.layers(scan, m, rw);
        ContainerInfo {
            id: cid.clone(),
            name,
            image: ImageInfo {
                tags: image_id
                    .as_ref()
                    .and_then(|id| tags.get(id).cloned())
                    .unwrap_or_default(),
                id: image_id,
            },
            mountpoint: m.mountpoint.clone(),
            dev: m.dev,
            runtime: "docker",
            upperdir,
            layers,
            pod: None,
            mount_id: m.mount_id,
        }
    }

    /// The layers' identities: what attribution needs. The rest is deferred
    /// ([`Lazy::complete`]).
    fn layers(&mut self, scan: &mut Scan, m: &OverlayMount, rw: &RwLayer) -> Vec<LayerInfo> {
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
        for w in warnings {
            if self.warned.len() < 10_000 && self.warned.insert(w.clone()) {
                log::warn!("docker: {w}");
            }
        }
    }

    /// Whether [`Self::complete`] can fill `l` from the caches alone (and the
    /// layer store's listing): rescans then describe a layer that was read
    /// before as they did.
    fn cached(&self, owner: &Owner, l: &LayerInfo) -> bool {
        let image = owner
            .image_id
            .as_ref()
            .is_none_or(|id| self.images.contains_key(id));
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
            if img.diff_ids.len() != owner.image_layers
                && !owner.checked.swap(true, Ordering::Relaxed)
            {
                w.push(format!(
                    "container {}: {} image layers mounted but the image has {}",
                    owner.cid,
                    owner.image_layers,
                    img.diff_ids.len()
                ));
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
        if let Some(m) = self.images.get(id) {
            return Some(m.clone());
        }
        let hex = id.strip_prefix("sha256:")?;
        let rel = PathBuf::from(format!("{IMAGEDB}/{hex}"));
        let root = &self.root()?.root;
        let data = match root.read(&rel, MAX_JSON) {
            Ok(d) => d,
            Err(e) => {
                w.push(e.to_string());
                return None;
            }
        };
        if sha256_hex(&data) != hex {
            w.push(format!(
                "{}: content does not match its digest; image metadata ignored",
                path_display(&root.path().join(&rel))
            ));
            return None;
        }
        let meta = match parse_image_config(id, &rel, &data, w) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                w.push(e);
                return None;
            }
        };
        self.images.insert(id.to_string(), meta.clone());
        Some(meta)
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
                Ok(d) if is_digest(&d) => Some(d),
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
    let k = position - 1;
    let Some(image_chain) = img.chain_ids.get(k) else {
        return;
    };
    if from_layerdb {
        if l.chain_id.as_deref() != Some(image_chain.as_str()) {
            w.push(format!(
                "container {cid}: layer {} has chain-id {} but the image expects {image_chain} there; instruction unknown",
                l.index,
                l.chain_id.as_deref().unwrap_or("null")
            ));
            return;
        }
    } else {
        l.diff_id = img.diff_ids.get(k).cloned();
        l.chain_id = Some(image_chain.clone());
    }
    // No history entry for the layer (an image squashed or written by a
    // tool that keeps none): known to have no instruction, which the human
    // outputs say, unlike an unknown one (None).
    let (created_by, comment) = img.history.get(k).cloned().unwrap_or_default();
    l.created_by = Some(created_by);
    l.comment = comment;
}

impl Resolver for DockerResolver {
    fn runtime(&self) -> &'static str {
        "docker"
    }

    /// Layer metadata is deferred, except where what an earlier scan read
    /// tells it.
    fn scan(&mut self, mounts: &[OverlayMount]) -> Vec<ContainerInfo> {
        let mut warnings = Vec::new();
        let found = self.scan_inner(mounts, &mut warnings);
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
        let found = self.scan_inner(mounts, &mut warnings);
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
        let rel = if lower.is_absolute() {
            match lower.strip_prefix(&self.overlay2) {
                Ok(r) => r,
                Err(_) => {
                    self.warn(format!(
                        "lowerdir {} is outside {}",
                        path_display(lower),
                        self.overlay2.display()
                    ));
                    return (None, None);
                }
            }
        } else {
            lower
        };
        let comps: Vec<&[u8]> = rel
            .components()
            .map(|c| match c {
                Component::Normal(n) => std::os::unix::ffi::OsStrExt::as_bytes(n),
                _ => b"/".as_slice(), // never a valid name below
            })
            .collect();
        match comps.as_slice() {
            [b"l", short] if is_safe_name_bytes(short) => {
                let short = String::from_utf8_lossy(short).into_owned();
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
            [cache, b"diff"] if is_safe_name_bytes(cache) && *cache != b"l" => {
                let cache = String::from_utf8_lossy(cache).into_owned();
                let short = match &self.o2_dir {
                    Some(o2) => o2.read_line(&Path::new(&cache).join("link")),
                    None => self
                        .root
                        .read_line(&PathBuf::from(format!("overlay2/{cache}/link"))),
                };
                let short = match short {
                    Ok(s) if is_safe_name(&s) => Some(s),
                    _ => None,
                };
                (Some(cache), short)
            }
            _ => {
                self.warn(format!(
                    "lowerdir {} is not an overlay2 layer path",
                    path_display(lower)
                ));
                (None, None)
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
        if is_dir {
            Some(self.root.path().join(rel))
        } else {
            self.warn(format!(
                "{}: not a directory (or a symlink); layer not inspected",
                path_display(&self.root.path().join(rel))
            ));
            None
        }
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

/// An image config (`imagedb/content/sha256/<hex>`, already checked against its
/// digest): its diff-ids, their chain-ids and the instructions of its layers.
fn parse_image_config(
    id: &str,
    rel: &Path,
    data: &[u8],
    warnings: &mut Vec<String>,
) -> Result<ImageMeta, String> {
    let cfg: ImageConfig = serde_json::from_slice(data)
        .map_err(|e| format!("{}: invalid image config: {e}", path_display(rel)))?;
    if let Some(bad) = cfg.rootfs.diff_ids.iter().find(|d| !is_digest(d)) {
        return Err(format!("image {id}: invalid diff-id {bad:?}"));
    }
    let history: Vec<(String, Option<String>)> = cfg
        .history
        .into_iter()
        .filter(|h| !h.empty_layer)
        .map(|h| (h.created_by.unwrap_or_default(), h.comment))
        .collect();
    if history.len() != cfg.rootfs.diff_ids.len() {
        warnings.push(format!(
            "image {id}: {} non-empty history entries for {} layers; instructions matched from the base up",
            history.len(),
            cfg.rootfs.diff_ids.len()
        ));
    }
    Ok(ImageMeta {
        chain_ids: chain_ids(&cfg.rootfs.diff_ids),
        diff_ids: cfg.rootfs.diff_ids,
        history,
    })
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
        let _ = (
            c.id,
            c.image
                .map(|i| i.strip_prefix("sha256:").is_some_and(is_hex64)),
        );
    }
    let _ = parse_image_config("sha256:fuzz", Path::new("config"), data, &mut warnings);
    let _ = parse_repositories(data);
    let _ = parse_link_target(data);
    if let Ok(line) = std::str::from_utf8(data) {
        let line = line.trim();
        let _ = (is_safe_name(line), is_digest(line), line.parse::<u64>());
        let ids: Vec<String> = line.split(',').map(str::to_string).collect();
        let _ = chain_ids(&ids);
    }
    let overlay2 = Path::new("/var/lib/docker/overlay2");
    let mounts = crate::sys::mounts::parse_mountinfo(data).mounts;
    for m in &mounts {
        let _ = rw_layer_id(overlay2, m);
    }
}

/// `../<cache-id>/diff` -> cache-id.
fn parse_link_target(t: &[u8]) -> Option<String> {
    let rest = t.strip_prefix(b"../")?;
    let cache = rest.strip_suffix(b"/diff")?;
    (is_safe_name_bytes(cache) && cache != b"l")
        .then(|| String::from_utf8_lossy(cache).into_owned())
}

/// The overlay2 directory of a mount's read-write layer: from `upperdir`
/// (`<overlay2>/<id>/diff`, or `<id>/diff` relative) or the mount point
/// (`<overlay2>/<id>/merged`).
fn rw_layer_id(overlay2: &Path, m: &OverlayMount) -> Option<String> {
    let two = |p: &Path, last: &str| -> Option<String> {
        let mut it = p.components();
        let (Some(Component::Normal(id)), Some(Component::Normal(l)), None) =
            (it.next(), it.next(), it.next())
        else {
            return None;
        };
        (l == last)
            .then(|| id.to_str())
            .flatten()
            .filter(|s| is_safe_name(s) && *s != "l")
            .map(str::to_string)
    };
    let from_mountpoint = m
        .mountpoint
        .strip_prefix(overlay2)
        .ok()
        .and_then(|r| two(r, "merged"));
    match &m.upperdir {
        Some(u) if u.is_absolute() => u.strip_prefix(overlay2).ok().and_then(|r| two(r, "diff")),
        // Relative paths only mean something for a mount under the overlay2 dir.
        Some(u) => from_mountpoint.as_ref().and_then(|_| two(u, "diff")),
        None => None,
    }
    .or(from_mountpoint)
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

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_hex64)
}

fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// ChainID(L1) = DiffID(L1); ChainID(Ln) = sha256("<ChainID(Ln-1)> <DiffID(Ln)>").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!("sha256:{}", sha256_hex(format!("{parent} {d}").as_bytes())),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mounts::Dev;
    use std::{fs, os::unix::fs::symlink};

    /// A Docker root with one 3-layer image and one running container.
    struct Fx {
        _tmp: tempfile::TempDir,
        base: PathBuf,
        root: PathBuf,
        cid: String,
        image_id: String,
        rw: String,
        /// Image layers, base first.
        caches: Vec<String>,
        shorts: Vec<String>,
        diffs: Vec<String>,
        chains: Vec<String>,
        init_short: String,
    }

    fn hex(seed: &str) -> String {
        sha256_hex(seed.as_bytes())
    }

    fn write(p: &Path, data: impl AsRef<[u8]>) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    impl Fx {
        fn new(root_rel: &str) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let base = tmp.path().canonicalize().unwrap();
            let root = base.join(root_rel);
            let o2 = root.join("overlay2");
            fs::create_dir_all(o2.join("l")).unwrap();
            let mut fx = Fx {
                _tmp: tmp,
                base,
                root: root.clone(),
                cid: hex("container"),
                image_id: String::new(),
                rw: hex("rw"),
                caches: vec![],
                shorts: vec![],
                diffs: vec![],
                chains: vec![],
                init_short: "INITSHORT0000000000000000Z".into(),
            };
            let sizes = [1000u64, 20, 3_000_000];
            for i in 0..3 {
                let cache = hex(&format!("cache{i}"));
                let short = format!("SHORT{i:021}");
                fx.add_cache_dir(&cache, &short);
                fx.caches.push(cache);
                fx.shorts.push(short);
                fx.diffs
                    .push(format!("sha256:{}", hex(&format!("diff{i}"))));
            }
            fx.chains = chain_ids(&fx.diffs);
            for (i, size) in sizes.iter().enumerate() {
                let chain = fx.chains[i].trim_start_matches("sha256:");
                let d = root.join(LAYERDB).join("sha256").join(chain);
                write(&d.join("cache-id"), &fx.caches[i]);
                write(&d.join("diff"), &fx.diffs[i]);
                write(&d.join("size"), size.to_string());
                if i > 0 {
                    write(&d.join("parent"), &fx.chains[i - 1]);
                }
            }
            let config = serde_json::json!({
                "architecture": "amd64",
                "rootfs": {"type": "layers", "diff_ids": fx.diffs},
                "history": [
                    {"created_by": "", "comment": "imported base"},
                    {"created_by": "/bin/sh -c #(nop)  ENV A=1", "empty_layer": true},
                    {"created_by": "/bin/sh -c echo hi >/f"},
                    {"created_by": "/bin/sh -c #(nop) COPY file:y in /big "},
                    {"created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]", "empty_layer": true}
                ]
            });
            let bytes = serde_json::to_vec(&config).unwrap();
            let id = sha256_hex(&bytes);
            write(&root.join(IMAGEDB).join(&id), &bytes);
            fx.image_id = format!("sha256:{id}");
            write(
                &root.join(REPOSITORIES),
                serde_json::to_vec(&serde_json::json!({"Repositories": {
                    "shop/api": {
                        "shop/api:2.3": fx.image_id,
                        "shop/api:latest": fx.image_id,
                        "shop/api@sha256:0000000000000000000000000000000000000000000000000000000000000000": fx.image_id
                    },
                    "other": {"other:1": "sha256:1111111111111111111111111111111111111111111111111111111111111111"}
                }}))
                .unwrap(),
            );
            // The container: RW layer, init layer, metadata.
            let init = format!("{}-init", fx.rw);
            fx.add_cache_dir(&fx.rw.clone(), "RWSHORT000000000000000000Z");
            fx.add_cache_dir(&init, &fx.init_short.clone());
            let m = root.join(LAYERDB).join("mounts").join(&fx.cid);
            write(&m.join("mount-id"), &fx.rw);
            write(&m.join("init-id"), &init);
            write(&m.join("parent"), &fx.chains[2]);
            write(
                &root.join("containers").join(&fx.cid).join("config.v2.json"),
                serde_json::to_vec(&serde_json::json!({
                    "ID": fx.cid, "Name": "/web-1", "Image": fx.image_id, "Driver": "overlay2"
                }))
                .unwrap(),
            );
            // Another container's layerdb entry whose mount is not mounted.
            let other = root.join(LAYERDB).join("mounts").join(hex("stopped"));
            write(&other.join("mount-id"), hex("stopped-rw"));
            fx
        }

        fn add_cache_dir(&self, cache: &str, short: &str) {
            let d = self.root.join("overlay2").join(cache);
            fs::create_dir_all(d.join("diff")).unwrap();
            write(&d.join("link"), short);
            symlink(
                format!("../{cache}/diff"),
                self.root.join("overlay2/l").join(short),
            )
            .unwrap();
        }

        fn o2(&self) -> PathBuf {
            self.root.join("overlay2")
        }

        /// The container's overlay mount; `relative`: Docker's long-options form.
        fn mount(&self, relative: bool) -> OverlayMount {
            let shorts = std::iter::once(&self.init_short).chain(self.shorts.iter().rev());
            let (lowerdirs, upper) = if relative {
                (
                    shorts.map(|s| PathBuf::from(format!("l/{s}"))).collect(),
                    PathBuf::from(format!("{}/diff", self.rw)),
                )
            } else {
                (
                    shorts.map(|s| self.o2().join("l").join(s)).collect(),
                    self.o2().join(&self.rw).join("diff"),
                )
            };
            OverlayMount {
                mount_id: 300,
                parent_id: 1,
                dev: Dev::new(0, 77),
                mountpoint: self.o2().join(&self.rw).join("merged"),
                upperdir: Some(upper),
                workdir: None,
                lowerdirs,
                datadirs: vec![],
                options: vec![],
            }
        }

        fn resolver(&self) -> DockerResolver {
            DockerResolver::with_paths(
                Some(self.root.clone()),
                self.base.join("no-daemon.json"),
                self.base.join("no-default"),
            )
        }

        fn scan(&self, m: &OverlayMount) -> (ContainerInfo, Vec<String>) {
            let (mut cs, w) = self.resolver().scan_collect(std::slice::from_ref(m));
            assert_eq!(cs.len(), 1, "warnings: {w:?}");
            (cs.remove(0), w)
        }

        /// Another running container of the image (its own RW and init layers).
        fn add_container(&self, name: &str, minor: u32) -> OverlayMount {
            let (cid, rw) = (hex(name), hex(&format!("{name}-rw")));
            let init = format!("{rw}-init");
            let init_short = format!("I{minor:025}");
            self.add_cache_dir(&rw, &format!("R{minor:025}"));
            self.add_cache_dir(&init, &init_short);
            let m = self.root.join(LAYERDB).join("mounts").join(&cid);
            write(&m.join("mount-id"), &rw);
            write(&m.join("init-id"), &init);
            write(
                &self
                    .root
                    .join("containers")
                    .join(&cid)
                    .join("config.v2.json"),
                serde_json::to_vec(&serde_json::json!({
                    "ID": cid, "Name": format!("/{name}"), "Image": self.image_id
                }))
                .unwrap(),
            );
            let mut mount = self.mount(false);
            mount.mount_id = 300 + minor;
            mount.dev = Dev::new(0, minor);
            mount.mountpoint = self.o2().join(&rw).join("merged");
            mount.upperdir = Some(self.o2().join(&rw).join("diff"));
            mount.lowerdirs[0] = self.o2().join("l").join(init_short);
            mount
        }

        fn chain_dir(&self, i: usize) -> PathBuf {
            self.root
                .join(LAYERDB)
                .join("sha256")
                .join(self.chains[i].trim_start_matches("sha256:"))
        }
    }

    fn assert_complete(fx: &Fx, c: &ContainerInfo) {
        assert_eq!(c.id, fx.cid);
        assert_eq!(c.name.as_deref(), Some("web-1"));
        assert_eq!(c.image.id.as_deref(), Some(fx.image_id.as_str()));
        assert_eq!(c.image.tags, ["shop/api:2.3", "shop/api:latest"]);
        assert_eq!(c.dev, Dev::new(0, 77));
        assert_eq!(c.runtime, "docker");
        assert_eq!(c.upperdir, Some(fx.o2().join(&fx.rw).join("diff")));
        assert_eq!(c.layers.len(), 4);
        let init = &c.layers[0];
        assert!(init.init);
        assert_eq!(init.index, 1);
        assert_eq!(init.cache_id, Some(format!("{}-init", fx.rw)));
        assert_eq!(init.short_id.as_deref(), Some(fx.init_short.as_str()));
        assert_eq!((init.diff_id.as_ref(), init.position), (None, None));
        let expect_by = [
            "",
            "/bin/sh -c echo hi >/f",
            "/bin/sh -c #(nop) COPY file:y in /big ",
        ];
        let sizes = [1000, 20, 3_000_000];
        for (k, l) in c.layers[1..].iter().enumerate() {
            let pos = 3 - k; // index 2 is the top layer
            let i = pos - 1;
            assert_eq!(l.index, k + 2);
            assert!(!l.init);
            assert_eq!(l.position, Some(pos));
            assert_eq!(l.cache_id.as_deref(), Some(fx.caches[i].as_str()));
            assert_eq!(l.short_id.as_deref(), Some(fx.shorts[i].as_str()));
            assert_eq!(l.diff_id.as_deref(), Some(fx.diffs[i].as_str()));
            assert_eq!(l.chain_id.as_deref(), Some(fx.chains[i].as_str()));
            assert_eq!(l.size, Some(sizes[i]));
            assert_eq!(l.created_by.as_deref(), Some(expect_by[i]));
            assert_eq!(l.dir, Some(fx.o2().join(&fx.caches[i]).join("diff")));
        }
        assert_eq!(c.layers[3].comment.as_deref(), Some("imported base"));
    }

    #[test]
    fn resolves_a_container() {
        let fx = Fx::new("var/lib/docker");
        let (c, w) = fx.scan(&fx.mount(false));
        assert!(w.is_empty(), "{w:?}");
        assert_complete(&fx, &c);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["dev"], "0:77");
        assert_eq!(json["layers"][0]["diff_id"], serde_json::Value::Null);
        assert_eq!(json["layers"][3]["size"], 1000);
    }

    #[test]
    fn relative_lowerdirs() {
        let fx = Fx::new("docker");
        let m = fx.mount(true);
        assert!(m.lowerdirs.iter().all(|p| p.is_relative()));
        let (c, w) = fx.scan(&m);
        assert!(w.is_empty(), "{w:?}");
        assert_complete(&fx, &c);
    }

    #[test]
    fn moved_data_root() {
        let fx = Fx::new("data/docker-root");
        let m = fx.mount(false);
        let default = fx.base.join("no-default");
        // From daemon.json.
        let dj = fx.base.join("daemon.json");
        write(
            &dj,
            format!(
                r#"{{"data-root": "{}", "log-driver": "json-file"}}"#,
                fx.root.display()
            ),
        );
        let mut r = DockerResolver::with_paths(None, dj.clone(), default.clone());
        let (cs, w) = r.scan_collect(std::slice::from_ref(&m));
        assert!(w.is_empty(), "{w:?}");
        assert_complete(&fx, &cs[0]);
        assert_eq!(r.root(), Some((fx.root.as_path(), RootSource::DaemonJson)));
        // From the mount table, with no daemon.json.
        let mut r = DockerResolver::with_paths(None, fx.base.join("none.json"), default.clone());
        let (cs, _) = r.scan_collect(std::slice::from_ref(&m));
        assert_complete(&fx, &cs[0]);
        assert_eq!(r.root(), Some((fx.root.as_path(), RootSource::Mountinfo)));
        // Relative lowerdirs still show the root through the mount point.
        let mut r = DockerResolver::with_paths(None, fx.base.join("none.json"), default.clone());
        let (cs, _) = r.scan_collect(&[fx.mount(true)]);
        assert_complete(&fx, &cs[0]);
        // A malformed daemon.json is ignored with a warning.
        write(&dj, "{not json");
        let mut r = DockerResolver::with_paths(None, dj.clone(), default.clone());
        let (cs, w) = r.scan_collect(std::slice::from_ref(&m));
        assert_eq!(cs.len(), 1);
        assert!(w.iter().any(|w| w.contains("invalid JSON")), "{w:?}");
        // The flag wins over daemon.json, and a symlinked root is canonicalized.
        write(&dj, r#"{"data-root": "/nonexistent"}"#);
        let link = fx.base.join("root-link");
        symlink(&fx.root, &link).unwrap();
        let mut r = DockerResolver::with_paths(Some(link), dj, default);
        let (cs, w) = r.scan_collect(std::slice::from_ref(&m));
        assert!(w.is_empty(), "{w:?}");
        assert_complete(&fx, &cs[0]);
        assert_eq!(r.root().map(|r| r.1), Some(RootSource::Flag));
    }

    #[test]
    fn rescans_reuse_the_layer_store_and_notice_changes() {
        let fx = Fx::new("docker");
        let mut r = fx.resolver();
        let (cs, w) = r.scan_collect(&[fx.mount(false)]);
        assert!(w.is_empty(), "{w:?}");
        assert_complete(&fx, &cs[0]);
        // A container started since is picked up, and the rescan gives what a
        // new resolver gives.
        let mounts = [fx.mount(false), fx.add_container("second", 78)];
        let again = r.scan_collect(&mounts);
        assert_eq!(again.0.len(), 2);
        assert_eq!(again.0[1].name.as_deref(), Some("second"));
        assert_eq!(again, fx.resolver().scan_collect(&mounts));
        assert_eq!(again.0[0].layers[1..], again.0[1].layers[1..]);

        // Layer-store entries are read once (Docker never rewrites them).
        write(&fx.chain_dir(0).join("size"), "5");
        let (cs, _) = r.scan_collect(&mounts);
        assert_eq!(cs[0].layers[3].size, Some(1000));
        let (fresh, _) = fx.resolver().scan_collect(&mounts);
        assert_eq!(fresh[0].layers[3].size, Some(5));
        write(&fx.chain_dir(0).join("size"), "1000");

        // A removed layer-store entry or layer directory is noticed; warnings
        // are given per container, as without the caches.
        fs::remove_dir_all(fx.chain_dir(1)).unwrap();
        fs::remove_dir(fx.o2().join(&fx.caches[0]).join("diff")).unwrap();
        let (cs, w) = r.scan_collect(&mounts);
        assert_eq!((cs.clone(), w.clone()), fx.resolver().scan_collect(&mounts));
        assert_eq!(
            (cs[1].layers[2].size, cs[1].layers[3].dir.as_ref()),
            (None, None)
        );
        let count = |s: &str| w.iter().filter(|w| w.contains(s)).count();
        assert_eq!(
            (count("no layerdb entry"), count("not a directory")),
            (2, 2),
            "{w:?}"
        );
        // A broken entry is read again: repaired, it counts again.
        fs::create_dir(fx.o2().join(&fx.caches[0]).join("diff")).unwrap();
        let (cs, w) = r.scan_collect(&mounts);
        assert!(cs[1].layers[3].dir.is_some());
        assert_eq!(w.len(), 2, "{w:?}");
    }

    #[test]
    fn default_root_and_no_docker() {
        let fx = Fx::new("x");
        let mut r =
            DockerResolver::with_paths(None, fx.base.join("none.json"), fx.base.join("nope"));
        let (cs, w) = r.scan_collect(&[]);
        assert!(cs.is_empty());
        // No Docker at the default root is not worth a warning.
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(r.root(), None);
        // A named root that does not exist is.
        let mut r = DockerResolver::with_paths(
            Some(fx.base.join("nope")),
            fx.base.join("n"),
            fx.base.join("n"),
        );
        let (_, w) = r.scan_collect(&[]);
        assert_eq!(w.len(), 1, "{w:?}");
    }

    /// What attribution needs is there after a scan; the rest is not.
    fn assert_deferred(fx: &Fx, c: &ContainerInfo) {
        assert_eq!(c.name.as_deref(), Some("web-1"));
        assert_eq!(c.image.tags, ["shop/api:2.3", "shop/api:latest"]);
        assert!(c.layers[0].init && c.layers[0].deferred.is_none());
        for (k, l) in c.layers[1..].iter().enumerate() {
            let i = 2 - k;
            assert_eq!(l.position, Some(i + 1));
            assert_eq!(l.cache_id.as_deref(), Some(fx.caches[i].as_str()));
            assert_eq!(l.short_id.as_deref(), Some(fx.shorts[i].as_str()));
            assert_eq!(l.dir, Some(fx.o2().join(&fx.caches[i]).join("diff")));
            assert!(l.deferred.is_some());
            assert_eq!(
                (&l.diff_id, &l.chain_id, l.size, &l.created_by),
                (&None, &None, None, &None)
            );
        }
    }

    #[test]
    fn scans_defer_layer_metadata_until_needed() {
        let fx = Fx::new("docker");
        let mut r = fx.resolver();
        // The layer store and the image config are not read by the scan:
        // broken now, repaired before anything asks, nothing shows.
        let size = fx.chain_dir(0).join("size");
        let img = fx
            .root
            .join(IMAGEDB)
            .join(fx.image_id.trim_start_matches("sha256:"));
        let config = fs::read(&img).unwrap();
        write(&size, "lots");
        fs::write(&img, "{").unwrap();
        let mut cs = r.scan(&[fx.mount(false)]);
        assert_eq!(cs.len(), 1);
        assert_deferred(&fx, &cs[0]);
        assert!(r.lazy().warned.is_empty(), "{:?}", r.lazy().warned);
        write(&size, "1000");
        fs::write(&img, &config).unwrap();

        // One layer, as an event needs it.
        let mut c = cs.remove(0);
        let pending = c.clone();
        c.layers[2].complete();
        assert_eq!(c.layers[2].diff_id.as_deref(), Some(fx.diffs[1].as_str()));
        assert_eq!(
            c.layers[2].created_by.as_deref(),
            Some("/bin/sh -c echo hi >/f")
        );
        assert!(c.layers[2].deferred.is_none() && c.layers[1].deferred.is_some());
        // All of it, as a report needs it: what an eager scan gives.
        c.complete();
        assert_complete(&fx, &c);
        assert_eq!(c, fx.scan(&fx.mount(false)).0);
        // Read once: a copy completed later gets what was read then.
        write(&size, "5");
        let mut copy = pending.clone();
        copy.complete();
        assert_eq!(copy, c);
        // A rescan describes the layers it knows as they were completed,
        // so the catalog sees the same container.
        let again = r.scan(&[fx.mount(false)]);
        assert_eq!(again[0], c);
        assert!(again[0].layers.iter().all(|l| l.deferred.is_none()));
        assert!(r.lazy().warned.is_empty(), "{:?}", r.lazy().warned);
    }

    #[test]
    fn deferred_reads_warn_and_degrade_fields() {
        let fx = Fx::new("docker");
        let mut r = fx.resolver();
        let mut cs = r.scan(&[fx.mount(false)]);
        assert_deferred(&fx, &cs[0]);
        fs::remove_dir_all(fx.chain_dir(1)).unwrap();
        let size = fx.chain_dir(0).join("size");
        fs::remove_file(&size).unwrap();
        symlink(fx.base.join("outside"), &size).unwrap();
        cs[0].complete();
        let c = &cs[0];
        assert_eq!((c.layers[2].size, c.layers[3].size), (None, None));
        assert_eq!(c.layers[2].diff_id.as_deref(), Some(fx.diffs[1].as_str()));
        assert_eq!(c.layers[3].diff_id.as_deref(), Some(fx.diffs[0].as_str()));
        assert_eq!(c.layers[1].size, Some(3_000_000));
        let warned = &r.lazy().warned;
        assert!(
            warned.iter().any(|w| w.contains("no layerdb entry")),
            "{warned:?}"
        );
        assert!(
            warned.iter().any(|w| w.contains("refusing to follow")),
            "{warned:?}"
        );
        // The same, at once.
        let (eager, w) = fx.scan(&fx.mount(false));
        assert_eq!(&eager, c);
        assert_eq!(w.len(), 2, "{w:?}");
    }

    #[test]
    fn events_read_the_metadata_of_their_layer() {
        use crate::catalog::Catalog;
        let fx = Fx::new("docker");
        fs::write(fx.o2().join(&fx.caches[1]).join("diff/f"), "x").unwrap();
        let m = fx.mount(false);
        let lower: Vec<String> = m
            .lowerdirs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mi = fx.base.join("mountinfo");
        write(
            &mi,
            format!(
                "300 1 0:77 / {} rw - overlay overlay rw,lowerdir={},upperdir={}\n",
                m.mountpoint.display(),
                lower.join(":"),
                m.upperdir.as_ref().unwrap().display()
            ),
        );
        let mut cat = Catalog::with_mountinfo(vec![Box::new(fx.resolver())], mi);
        cat.refresh().unwrap();
        let key = cat.entries().next().unwrap().key;
        let pending = |cat: &Catalog| -> Vec<bool> {
            let c = cat.get(&key).unwrap().container.as_ref().unwrap();
            c.layers.iter().map(|l| l.deferred.is_some()).collect()
        };
        assert_eq!(pending(&cat), [false, true, true, true]);
        // The kernel reports that `f` came from overlay index 3.
        let s = cat.resolve(&key).unwrap().source_layer(3, None);
        assert_eq!(s.index, 3);
        assert_eq!(s.diff_id.as_deref(), Some(fx.diffs[1].as_str()));
        assert_eq!(s.created_by.as_deref(), Some("/bin/sh -c echo hi >/f"));
        // Only that layer was read; a full rescan keeps it so.
        assert_eq!(pending(&cat), [false, true, false, true]);
        let parsed = cat.get(&key).map(|e| e.mount.clone()).unwrap();
        cat.apply(&[parsed]);
        assert!(!cat.get(&key).unwrap().gone);
        assert_eq!(pending(&cat), [false, true, false, true]);
        // The inventory shows everything.
        let inv = cat.inventory();
        assert_complete(&fx, &inv.containers[0]);
    }

    #[test]
    fn missing_layerdb_entry_degrades_only_size() {
        let fx = Fx::new("docker");
        fs::remove_dir_all(fx.chain_dir(1)).unwrap();
        let (c, w) = fx.scan(&fx.mount(false));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("no layerdb entry"), "{w:?}");
        let l = &c.layers[2]; // position 2
        assert_eq!(l.position, Some(2));
        assert_eq!(l.size, None);
        assert_eq!(l.cache_id.as_deref(), Some(fx.caches[1].as_str()));
        assert_eq!(l.diff_id.as_deref(), Some(fx.diffs[1].as_str()));
        assert_eq!(l.chain_id.as_deref(), Some(fx.chains[1].as_str()));
        assert_eq!(l.created_by.as_deref(), Some("/bin/sh -c echo hi >/f"));
        // Everything else is intact.
        assert_eq!(c.layers[1].size, Some(3_000_000));
        assert_eq!(c.layers[3].size, Some(1000));
        assert_eq!(c.name.as_deref(), Some("web-1"));
        // A missing single file only nulls its field.
        fs::remove_file(fx.chain_dir(0).join("size")).unwrap();
        let (c, _) = fx.scan(&fx.mount(false));
        assert_eq!(c.layers[3].size, None);
        assert_eq!(c.layers[3].diff_id.as_deref(), Some(fx.diffs[0].as_str()));
    }

    #[test]
    fn planted_symlinks_are_not_followed() {
        let fx = Fx::new("docker");
        let outside = fx.base.join("outside");
        fs::create_dir_all(outside.join("diff")).unwrap();
        write(
            &outside.join("config.v2.json"),
            r#"{"ID":"x","Name":"/evil","Image":"sha256:0"}"#,
        );
        write(&outside.join("size"), "987654321");
        // l/<short> of the top layer pointing out of the root.
        let l_top = fx.o2().join("l").join(&fx.shorts[2]);
        fs::remove_file(&l_top).unwrap();
        symlink(&outside, &l_top).unwrap();
        // A layer's diff dir replaced by a symlink to outside.
        let diff_mid = fx.o2().join(&fx.caches[1]).join("diff");
        fs::remove_dir(&diff_mid).unwrap();
        symlink(outside.join("diff"), &diff_mid).unwrap();
        // layerdb size file of the base layer is a symlink.
        let size = fx.chain_dir(0).join("size");
        fs::remove_file(&size).unwrap();
        symlink(outside.join("size"), &size).unwrap();
        // The container's config is a symlink.
        let cfg = fx
            .root
            .join("containers")
            .join(&fx.cid)
            .join("config.v2.json");
        fs::remove_file(&cfg).unwrap();
        symlink(outside.join("config.v2.json"), &cfg).unwrap();

        let (c, w) = fx.scan(&fx.mount(false));
        let top = &c.layers[1];
        assert_eq!((top.cache_id.as_ref(), top.dir.as_ref()), (None, None));
        assert_eq!(top.short_id.as_deref(), Some(fx.shorts[2].as_str()));
        assert!(w.iter().any(|w| w.contains("not followed")), "{w:?}");
        let mid = &c.layers[2];
        assert_eq!(mid.cache_id.as_deref(), Some(fx.caches[1].as_str()));
        assert_eq!(mid.dir, None);
        assert_eq!(mid.size, Some(20));
        assert_eq!(c.layers[3].size, None);
        assert!(w.iter().any(|w| w.contains("refusing to follow")), "{w:?}");
        assert_eq!(c.name, None);
        assert_eq!(c.image.id, None);
        // Never anything from outside.
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            !json.contains("evil") && !json.contains("987654321") && !json.contains("outside"),
            "{json}"
        );

        // A symlinked directory in the middle of a metadata path.
        let fx = Fx::new("docker");
        let mounts_dir = fx.root.join(LAYERDB).join("mounts").join(&fx.cid);
        let moved = fx.base.join("moved-mounts");
        fs::rename(&mounts_dir, &moved).unwrap();
        symlink(&moved, &mounts_dir).unwrap();
        let (cs, w) = fx.resolver().scan_collect(&[fx.mount(false)]);
        assert!(cs.is_empty(), "{cs:?}");
        assert!(w.iter().any(|w| w.contains("refusing to follow")), "{w:?}");

        // A link that stays inside the root but is not ../<cache-id>/diff.
        let fx = Fx::new("docker");
        let l = fx.o2().join("l").join(&fx.shorts[0]);
        fs::remove_file(&l).unwrap();
        symlink("../../image", &l).unwrap();
        let (c, w) = fx.scan(&fx.mount(false));
        assert_eq!(c.layers[3].cache_id, None);
        assert!(
            w.iter().any(|w| w.contains("expected ../<cache-id>/diff")),
            "{w:?}"
        );
    }

    #[test]
    fn corrupt_metadata_degrades_fields() {
        // Container config.
        let fx = Fx::new("docker");
        write(
            &fx.root
                .join("containers")
                .join(&fx.cid)
                .join("config.v2.json"),
            "{\"ID\": 12",
        );
        let (c, w) = fx.scan(&fx.mount(false));
        assert!(w.iter().any(|w| w.contains("invalid JSON")), "{w:?}");
        assert_eq!((c.name.as_ref(), c.image.id.as_ref()), (None, None));
        // Layers still come from the layer store; instructions need the image.
        assert_eq!(c.layers[3].diff_id.as_deref(), Some(fx.diffs[0].as_str()));
        assert_eq!(c.layers[3].size, Some(1000));
        assert_eq!(c.layers[3].created_by, None);

        // Image config that does not match its digest.
        let fx = Fx::new("docker");
        let img = fx
            .root
            .join(IMAGEDB)
            .join(fx.image_id.trim_start_matches("sha256:"));
        let mut data = fs::read(&img).unwrap();
        data.push(b' ');
        fs::write(&img, data).unwrap();
        let (c, w) = fx.scan(&fx.mount(false));
        assert!(
            w.iter().any(|w| w.contains("does not match its digest")),
            "{w:?}"
        );
        assert_eq!(c.name.as_deref(), Some("web-1"));
        assert_eq!(c.image.id.as_deref(), Some(fx.image_id.as_str()));
        assert!(c.layers.iter().all(|l| l.created_by.is_none()));
        assert_eq!(c.layers[1].diff_id.as_deref(), Some(fx.diffs[2].as_str()));

        // Oversized repositories.json (sparse: cheap).
        let fx = Fx::new("docker");
        let f = fs::File::create(fx.root.join(REPOSITORIES)).unwrap();
        f.set_len(MAX_JSON + 1).unwrap();
        let (c, w) = fx.scan(&fx.mount(false));
        assert!(w.iter().any(|w| w.contains("larger than")), "{w:?}");
        assert!(c.image.tags.is_empty());
        assert_eq!(c.layers[1].created_by.as_deref(), Some(fx_top_by()));

        // Garbage in small files.
        let fx = Fx::new("docker");
        write(&fx.chain_dir(2).join("size"), "lots");
        write(&fx.chain_dir(2).join("diff"), "sha256:../../etc");
        write(
            &fx.root
                .join(LAYERDB)
                .join("mounts")
                .join(&fx.cid)
                .join("init-id"),
            "../x",
        );
        let (c, w) = fx.scan(&fx.mount(false));
        assert_eq!(c.layers[1].size, None);
        assert_eq!(c.layers[1].diff_id, None);
        assert!(c.layers[0].init, "falls back to the -init suffix");
        assert_eq!(w.len(), 3, "{w:?}");
    }

    /// A sparse file of `len` bytes (cheap however large).
    fn huge(p: &Path, len: u64) {
        let _ = fs::remove_file(p);
        fs::File::create(p).unwrap().set_len(len).unwrap();
    }

    #[test]
    fn huge_and_special_files_degrade_fields() {
        use crate::sys::safe_fs::MAX_SMALL;
        // config.v2.json larger than the cap: no name or image, layers intact.
        let fx = Fx::new("docker");
        let cfg = fx
            .root
            .join("containers")
            .join(&fx.cid)
            .join("config.v2.json");
        huge(&cfg, MAX_JSON + 1);
        let (c, w) = fx.scan(&fx.mount(false));
        assert!(
            w.iter()
                .any(|w| w.contains("config.v2.json") && w.contains("larger than")),
            "{w:?}"
        );
        assert_eq!((c.name.as_ref(), c.image.id.as_ref()), (None, None));
        assert_eq!(c.layers[3].diff_id.as_deref(), Some(fx.diffs[0].as_str()));

        // A FIFO in its place is not read (and does not block the scan).
        fs::remove_file(&cfg).unwrap();
        let c_path = std::ffi::CString::new(cfg.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let (c, w) = fx.scan(&fx.mount(false));
        assert!(w.iter().any(|w| w.contains("not a regular file")), "{w:?}");
        assert_eq!(c.name, None);

        // A huge image config: no instructions, the layer store still answers.
        let fx = Fx::new("docker");
        let img = fx
            .root
            .join(IMAGEDB)
            .join(fx.image_id.trim_start_matches("sha256:"));
        huge(&img, MAX_JSON + 1);
        let (c, w) = fx.scan(&fx.mount(false));
        assert!(w.iter().any(|w| w.contains("larger than")), "{w:?}");
        assert_eq!(c.name.as_deref(), Some("web-1"));
        assert!(c.layers.iter().all(|l| l.created_by.is_none()));
        assert_eq!(c.layers[1].size, Some(3_000_000));

        // Oversized one-line files: that layer's chain (cache-id) or that
        // field (size) is unknown, the rest resolves.
        let fx = Fx::new("docker");
        huge(&fx.chain_dir(1).join("cache-id"), MAX_SMALL + 1);
        huge(&fx.chain_dir(2).join("size"), 1 << 40);
        let (c, w) = fx.scan(&fx.mount(false));
        assert!(
            w.iter().filter(|w| w.contains("larger than")).count() >= 2,
            "{w:?}"
        );
        assert_eq!(c.layers[1].size, None);
        assert_eq!(
            c.layers[2].chain_id,
            Some(fx.chains[1].clone()),
            "from the image"
        );
        assert_eq!(c.layers[3].size, Some(1000));

        // A huge mount-id: the container cannot be matched, and says why.
        let fx = Fx::new("docker");
        huge(
            &fx.root
                .join(LAYERDB)
                .join("mounts")
                .join(&fx.cid)
                .join("mount-id"),
            MAX_SMALL + 1,
        );
        let (cs, w) = fx.resolver().scan_collect(&[fx.mount(false)]);
        assert!(cs.is_empty());
        assert!(
            w.iter()
                .any(|w| w.contains("mount-id") && w.contains("larger than")),
            "{w:?}"
        );

        // A huge daemon.json is ignored with a warning, and the scan goes on.
        let fx = Fx::new("docker");
        let daemon = fx.base.join("daemon.json");
        huge(&daemon, 2 << 20);
        let mut r = DockerResolver::with_paths(None, daemon, fx.root.clone());
        let (cs, w) = r.scan_collect(&[fx.mount(false)]);
        assert!(
            w.iter()
                .any(|w| w.contains("daemon.json") && w.contains("larger than")),
            "{w:?}"
        );
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn fuzz_entry_point_takes_anything() {
        for data in [
            &b""[..],
            b"{",
            b"{\"rootfs\": {\"diff_ids\": [\"sha256:x\"]}}",
            b"{\"Repositories\": {\"a\": {\"a:1\": \"x\", \"a@sha256:1\": \"y\"}}}",
            b"../x/diff",
            b"\xff\xfe",
            b"1 2 0:5 / /m rw - overlay o rw,lowerdir=/var/lib/docker/overlay2/l/A,upperdir=/var/lib/docker/overlay2/x/diff",
        ] {
            fuzz_parsers(data);
        }
    }

    fn fx_top_by() -> &'static str {
        "/bin/sh -c #(nop) COPY file:y in /big "
    }

    #[test]
    fn mismatched_chain_is_not_given_an_instruction() {
        let fx = Fx::new("docker");
        // The mounted top layer's layerdb entry says another diff/chain.
        let chain = fx.chain_dir(2);
        let bogus = fx.root.join(LAYERDB).join("sha256").join(hex("bogus"));
        fs::rename(&chain, &bogus).unwrap();
        let (c, w) = fx.scan(&fx.mount(false));
        assert_eq!(
            c.layers[1].chain_id,
            Some(format!("sha256:{}", hex("bogus")))
        );
        assert_eq!(c.layers[1].created_by, None);
        assert!(w.iter().any(|w| w.contains("image expects")), "{w:?}");
        assert_eq!(
            c.layers[2].created_by.as_deref(),
            Some("/bin/sh -c echo hi >/f")
        );
    }

    #[test]
    fn non_docker_mounts_are_not_claimed() {
        let fx = Fx::new("docker");
        let plain = OverlayMount {
            mount_id: 9,
            parent_id: 1,
            dev: Dev::new(0, 90),
            mountpoint: "/mnt/x".into(),
            upperdir: Some("abc/diff".into()),
            workdir: None,
            lowerdirs: vec!["l/AAA".into()],
            datadirs: vec![],
            options: vec![],
        };
        let mut r = fx.resolver();
        let (cs, w) = r.scan_collect(&[plain.clone(), fx.mount(false)]);
        assert_eq!(cs.len(), 1);
        assert!(w.is_empty(), "{w:?}");
        let inv = crate::catalog::inventory(
            [&mut r as &mut dyn Resolver],
            &[plain.clone(), fx.mount(false)],
        );
        assert_eq!(inv.mounts, vec![plain]);
    }

    #[test]
    fn chain_id_formula() {
        // Values from a real Docker 20.10 layer store.
        let d = [
            "sha256:a3a563b680271ef238fd5179160ed86977b4fe60d5394d4b61806da680e0b8d2".to_string(),
            "sha256:fb06e46a9e4cd90d7be4477da65e4ea0afa8aabdd1ed0602ac87d44265665080".to_string(),
        ];
        assert_eq!(
            chain_ids(&d),
            [
                d[0].clone(),
                "sha256:02ec8731688b0f6c51434cc0daf46e8ef87e92fa750b8b04e0c9d1fd4b5c3284"
                    .to_string()
            ]
        );
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn link_targets() {
        assert_eq!(parse_link_target(b"../abc/diff").as_deref(), Some("abc"));
        for bad in [
            &b"../../etc/diff"[..],
            b"/abc/diff",
            b"../abc/diff/",
            b"../l/diff",
            b"abc/diff",
            b"../.x/diff",
            b"../a/b/diff",
        ] {
            assert_eq!(
                parse_link_target(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
