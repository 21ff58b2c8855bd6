//! containerd with its overlayfs snapshotter (plain containerd, Kubernetes
//! through CRI, nerdctl, and Docker 29's containerd image store).
//!
//! Layout under a containerd root (default /var/lib/containerd):
//! - `io.containerd.snapshotter.v1.overlayfs/snapshots/<N>/{fs,work}`: snapshot
//!   number N's directories; `.../metadata.db` (bolt): `v1/snapshots/<backend
//!   key>/{id, kind, parent, size}`, the backend key being `<ns>/<seq>/<key>`;
//! - `io.containerd.metadata.v1.bolt/meta.db` (bolt): per namespace
//!   `v1/<ns>/snapshots/overlayfs/<key>/name` (the backend key),
//!   `v1/<ns>/containers/<id>/{image, snapshotKey, snapshotter, labels/}`,
//!   `v1/<ns>/images/<name>/target/{digest, mediatype}`;
//! - `io.containerd.content.v1.content/blobs/sha256/<hex>`: manifests, indexes
//!   and image configs.
//!
//! Image layers are committed snapshots keyed by their chain-id, so a mount's
//! lowerdirs name their layers' chain-ids; the image config adds diff-ids and
//! instructions. A container's read-write layer is the active snapshot its
//! record names (`snapshotKey`).
//!
//! containerd keeps both databases locked while it runs. They are read as
//! copies: the file is read into memory (no lock, never blocking containerd)
//! twice, and used only when both reads saw the same transaction, so that no
//! commit could have changed pages under the first read. Everything below the
//! root is read through [`SafeRoot`]: no symlink is followed.
//!
//! Docker 29 with the containerd store mounts a container's root file system
//! at `<docker-root>/rootfs/overlayfs/<container-id>`, on containerd
//! snapshots of namespace `moby`; its name comes from Docker's
//! `containers/<id>/config.v2.json`.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsStr,
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;

use super::{layer_dir, read_verified, Runtime, Warned};
use crate::catalog::{
    bolt::{self, Bucket},
    oci::{self, ConfigCache, ImageMeta, Manifest},
    ContainerInfo, ImageInfo, LayerInfo, PodInfo, Resolver,
};
use crate::sys::mounts::{path_display, OverlayMount};
use crate::sys::safe_fs::{is_hex64, is_safe_name, SafeRoot, MAX_JSON};

pub const SNAPSHOTTER: &str = "io.containerd.snapshotter.v1.overlayfs";
const SNAPSHOTTER_DB: &str = "io.containerd.snapshotter.v1.overlayfs/metadata.db";
const META_DB: &str = "io.containerd.metadata.v1.bolt/meta.db";
const BLOBS: &str = "io.containerd.content.v1.content/blobs/sha256";
/// Largest database read.
pub const MAX_DB: u64 = 512 << 20;
/// Most entries visited in one bucket of a database.
const MAX_ENTRIES: u64 = 4_000_000;
/// Child manifests of an index looked at.
const MAX_INDEX: usize = 64;
/// Reads of a database before giving up on getting a stable copy.
const DB_TRIES: usize = 5;
/// Docker's namespace in containerd.
const MOBY: &str = "moby";

const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const LABEL_K8S_CONTAINER: &str = "io.kubernetes.container.name";
const LABEL_NERDCTL_NAME: &str = "nerdctl/name";

/// Finds containerd roots in the mount table itself: the snapshot directories
/// a mount uses name their root, so no configuration is needed and several
/// containerd instances (the system's, Docker's own) are all seen.
#[derive(Debug)]
pub struct ContainerdResolver {
    /// Image configs, parsed once.
    configs: ConfigCache,
    warned: Warned,
    last_roots: Vec<PathBuf>,
}

impl Default for ContainerdResolver {
    fn default() -> Self {
        Self {
            configs: ConfigCache::default(),
            warned: Warned::new("containerd"),
            last_roots: Vec::new(),
        }
    }
}

/// One snapshot of the snapshotter's database.
#[derive(Debug, Clone)]
struct Snap {
    /// Backend key, `<ns>/<seq>/<key>`.
    key: String,
    /// Bytes used (committed snapshots).
    size: Option<u64>,
}

/// A container record of meta.db.
#[derive(Debug, Clone, Default)]
pub(crate) struct CtrRec {
    ns: String,
    id: String,
    image: Option<String>,
    snapshot_key: Option<String>,
    snapshotter: Option<String>,
    labels: BTreeMap<String, String>,
}

/// What meta.db tells.
#[derive(Debug, Default)]
struct Meta {
    /// Backend key -> (namespace, client key).
    backend: HashMap<String, (String, String)>,
    containers: Vec<CtrRec>,
    /// (namespace, image name) -> target digest.
    images: BTreeMap<(String, String), String>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Image")]
    image: Option<String>,
    #[serde(rename = "Config")]
    config: Option<DockerConfigConfig>,
}

#[derive(Deserialize)]
struct DockerConfigConfig {
    #[serde(rename = "Image")]
    image: Option<String>,
}

/// A mount claimed as a container's root file system.
pub(crate) struct Claim {
    /// The container's namespace and id.
    ns: String,
    id: String,
    /// Its record in meta.db (or one made of `ns` and `id` when it has none).
    rec: CtrRec,
    /// `(Docker root, container id)` of a mount Docker made.
    docker: Option<(PathBuf, String)>,
    /// Each lowerdir's snapshot number and client key, uppermost first.
    lowers: Vec<(Option<u64>, Option<String>)>,
}

/// Per-root scan state.
pub(crate) struct Scan<'a> {
    root: SafeRoot,
    snapshots_dir: PathBuf,
    warnings: &'a mut Vec<String>,
    snaps: HashMap<u64, Snap>,
    meta: Meta,
}

impl ContainerdResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// The roots the latest scan used (canonical).
    pub fn roots(&self) -> &[PathBuf] {
        &self.last_roots
    }

    /// [`Resolver::scan`] that returns its warnings instead of logging them.
    pub fn scan_collect(&mut self, mounts: &[OverlayMount]) -> (Vec<ContainerInfo>, Vec<String>) {
        super::scan_collect(self, mounts)
    }

    /// Who a claimed mount belongs to: the container record whose active
    /// snapshot is the upper layer, else the task or Docker mount point's.
    fn owner(
        scan: &Scan,
        upper_key: Option<&(String, String)>,
        task: Option<&(String, String)>,
        docker: Option<&(PathBuf, String)>,
    ) -> Option<(String, String, CtrRec)> {
        let rec: Option<CtrRec> = upper_key
            .and_then(|(ns, key)| {
                scan.meta.containers.iter().find(|c| {
                    &c.ns == ns
                        && c.snapshot_key.as_deref() == Some(key.as_str())
                        && c.snapshotter.as_deref().is_none_or(|s| s == "overlayfs")
                })
            })
            .or_else(|| {
                let (ns, id) = task?;
                scan.meta
                    .containers
                    .iter()
                    .find(|c| &c.ns == ns && &c.id == id)
            })
            .cloned();
        let (ns, id) = match (&rec, task, docker, upper_key) {
            (Some(r), _, _, _) => (r.ns.clone(), r.id.clone()),
            (None, Some((ns, id)), _, _) => (ns.clone(), id.clone()),
            (None, None, Some((_, id)), _) => (MOBY.to_string(), id.clone()),
            // Docker names a container's active snapshot after the container.
            (None, None, None, Some((ns, key))) if ns == MOBY && is_hex64(key) => {
                (ns.clone(), key.clone())
            }
            _ => return None,
        };
        let rec = rec.unwrap_or_else(|| CtrRec {
            ns: ns.clone(),
            id: id.clone(),
            ..Default::default()
        });
        Some((ns, id, rec))
    }

    /// The container's name and pod: Docker's name, else nerdctl's or
    /// Kubernetes' label, else its id when that is not a bare hex id.
    fn naming(
        rec: &CtrRec,
        id: &str,
        docker_cfg: Option<&DockerConfig>,
    ) -> (Option<String>, Option<PodInfo>) {
        let mut name = rec
            .labels
            .get(LABEL_NERDCTL_NAME)
            .or_else(|| rec.labels.get(LABEL_K8S_CONTAINER))
            .cloned();
        if let Some(n) = docker_cfg.and_then(|cfg| cfg.name.as_ref()) {
            name = Some(n.trim_start_matches('/').to_string());
        }
        if name.is_none() && !is_hex64(id) {
            name = Some(id.to_string());
        }
        let pod = rec.labels.get(LABEL_POD_NAME).map(|p| PodInfo {
            name: p.clone(),
            namespace: rec.labels.get(LABEL_POD_NAMESPACE).cloned(),
        });
        (name, pod)
    }

    /// The image's target digest: by name from the container record (or
    /// Docker's config), else by Docker's image id (the target digest).
    fn image_target(
        scan: &mut Scan,
        claim: &Claim,
        docker_cfg: Option<&DockerConfig>,
    ) -> Option<String> {
        let ns = &claim.ns;
        let by_name = |n: &String| scan.meta.images.get(&(ns.clone(), n.clone())).cloned();
        let target = claim.rec.image.as_ref().and_then(by_name).or_else(|| {
            let cfg = docker_cfg?;
            cfg.config
                .as_ref()
                .and_then(|c| c.image.as_ref())
                .and_then(by_name)
                .or_else(|| cfg.image.clone().filter(|d| oci::is_digest(d)))
        });
        if target.is_none() {
            if let Some(n) = &claim.rec.image {
                scan.warn(format!(
                    "container {}: image {n:?} is not in namespace {ns:?}",
                    claim.id
                ));
            }
        }
        target
    }

    /// The names in the container's namespace pointing at `target`.
    fn tags(scan: &Scan, ns: &str, target: Option<&String>) -> Vec<String> {
        let Some(t) = target else {
            return Vec::new();
        };
        scan.meta
            .images
            .iter()
            .filter(|((n, _), d)| n == ns && *d == t)
            .map(|((_, name), _)| name.clone())
            .collect()
    }

    /// Each lowerdir's layer: its snapshot, and what the image says of it.
    fn layers(scan: &mut Scan, claim: &Claim, image: Option<&ImageMeta>) -> Vec<LayerInfo> {
        let n = claim.lowers.len();
        let mut layers = Vec::with_capacity(n);
        for (i, (sid, key)) in claim.lowers.iter().enumerate() {
            let mut l = LayerInfo {
                index: i + 1,
                ..Default::default()
            };
            if let Some(sid) = sid {
                l.cache_id = Some(sid.to_string());
                l.size = scan.snaps.get(sid).and_then(|s| s.size);
                l.dir = scan.layer_dir(*sid);
            }
            let key = key.as_deref();
            if key.is_some_and(|k| k.ends_with("-init") && !oci::is_digest(k)) {
                l.init = true;
                layers.push(l);
                continue;
            }
            l.position = Some(n - i);
            l.chain_id = key.filter(|k| oci::is_digest(k)).map(str::to_string);
            if let Some(img) = image {
                match key.and_then(|k| img.position_of_chain(k)) {
                    Some(pos) => {
                        l.position = Some(pos);
                        oci::describe_layer(img, pos, &mut l);
                    }
                    None => scan.warn(format!(
                        "container {}: layer {} (snapshot {}) is not a layer of its image",
                        claim.id,
                        i + 1,
                        key.unwrap_or("?")
                    )),
                }
            }
            layers.push(l);
        }
        layers
    }

    /// The config of the image whose manifest (or index) has digest `target`;
    /// of an index, the child whose layers hold `top_chain` (else the first).
    fn image_for(
        &mut self,
        scan: &mut Scan,
        target: &str,
        top_chain: Option<&str>,
    ) -> Option<Arc<ImageMeta>> {
        let data = scan.blob(target, true)?;
        let manifests = match oci::parse_manifest(&data) {
            Ok(Manifest::Image { config }) => return self.config(scan, &config),
            Ok(Manifest::Index { manifests }) => manifests,
            Err(e) => {
                scan.warn(format!("blob {target}: {e}"));
                return None;
            }
        };
        let mut first = None;
        for d in manifests.iter().take(MAX_INDEX) {
            // Only the platforms pulled are in the content store.
            let Some(data) = scan.blob(d, false) else {
                continue;
            };
            let config = match oci::parse_manifest(&data) {
                Ok(Manifest::Image { config }) => config,
                _ => continue,
            };
            let Some(meta) = self.config(scan, &config) else {
                continue;
            };
            if top_chain.is_some_and(|c| meta.chain_ids.iter().any(|x| x == c)) {
                return Some(meta);
            }
            first.get_or_insert(meta);
        }
        first
    }

    fn config(&mut self, scan: &mut Scan, digest: &str) -> Option<Arc<ImageMeta>> {
        let what = format!("image config {digest}");
        let hex = digest.strip_prefix("sha256:").filter(|h| is_hex64(h));
        let root = &scan.root;
        self.configs.get(digest, &what, scan.warnings, |w| {
            let hex = hex?;
            let rel = PathBuf::from(format!("{BLOBS}/{hex}"));
            read_verified(root, &rel, hex, MAX_JSON, true, w)
        })
    }
}

impl Runtime for ContainerdResolver {
    type Root<'w> = Scan<'w>;
    type Claim = Claim;

    /// The roots the mounts' snapshot directories point into.
    fn roots(&mut self, mounts: &[OverlayMount], _: &mut Vec<String>) -> Vec<PathBuf> {
        self.last_roots.clear();
        let mut roots: Vec<PathBuf> = Vec::new();
        for m in mounts {
            for p in std::iter::once(&m.upperdir)
                .flatten()
                .chain(m.lowerdirs.iter())
            {
                if let Some((root, _)) = split_snapshot_path(p) {
                    if !roots.contains(&root) {
                        roots.push(root);
                    }
                }
            }
        }
        roots
    }

    /// The root and copies of its two databases.
    fn open<'w>(&mut self, root: PathBuf, warnings: &'w mut Vec<String>) -> Option<Scan<'w>> {
        let canon = match std::fs::canonicalize(&root) {
            Ok(c) => c,
            Err(e) => {
                warnings.push(format!("containerd root {}: {e}", root.display()));
                return None;
            }
        };
        self.last_roots.push(canon);
        let safe = match SafeRoot::open(&root) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("opening the containerd root: {e}"));
                return None;
            }
        };
        let mut scan = Scan {
            snapshots_dir: root.join(SNAPSHOTTER).join("snapshots"),
            root: safe,
            warnings,
            snaps: HashMap::new(),
            meta: Meta::default(),
        };
        scan.snaps = scan.snapshotter_db();
        scan.meta = scan.meta_db();
        Some(scan)
    }

    /// A mount of this root (its upper layer, or all its layers, are
    /// snapshots) that a container record, a task or Docker owns.
    fn claim(&mut self, scan: &mut Scan, m: &OverlayMount) -> Option<Claim> {
        let upper = m
            .upperdir
            .as_deref()
            .and_then(|u| scan.snapshot_id(u, false));
        let lowers: Vec<Option<u64>> = m
            .lowerdirs
            .iter()
            .map(|l| scan.snapshot_id(l, upper.is_some()))
            .collect();
        let ours = match &m.upperdir {
            Some(_) => upper.is_some(),
            None => !lowers.is_empty() && lowers.iter().all(Option::is_some),
        };
        if !ours {
            return None;
        }
        let upper_key = upper.and_then(|id| scan.client_key(id));
        let docker = docker_mount(&m.mountpoint);
        let task = task_mount(&m.mountpoint);
        let (ns, id, rec) = Self::owner(scan, upper_key.as_ref(), task.as_ref(), docker.as_ref())?;
        let lowers = lowers
            .into_iter()
            .map(|l| (l, l.and_then(|id| scan.client_key(id)).map(|(_, k)| k)))
            .collect();
        Some(Claim {
            ns,
            id,
            rec,
            docker,
            lowers,
        })
    }

    fn describe(&mut self, scan: &mut Scan, m: &OverlayMount, claim: Claim) -> ContainerInfo {
        // Docker's own view of its containers.
        let docker_cfg = claim
            .docker
            .as_ref()
            .filter(|(_, did)| *did == claim.id)
            .and_then(|(root, _)| read_docker_config(root, &claim.id, scan.warnings));
        let is_docker = docker_cfg.is_some() || claim.ns == MOBY;
        let (name, pod) = Self::naming(&claim.rec, &claim.id, docker_cfg.as_ref());
        let target = Self::image_target(scan, &claim, docker_cfg.as_ref());
        let top_chain = claim
            .lowers
            .iter()
            .filter_map(|(_, k)| k.as_ref())
            .find(|k| oci::is_digest(k))
            .cloned();
        let image_meta = target
            .as_deref()
            .and_then(|t| self.image_for(scan, t, top_chain.as_deref()));
        let tags = Self::tags(scan, &claim.ns, target.as_ref());
        let layers = Self::layers(scan, &claim, image_meta.as_deref());
        ContainerInfo {
            id: claim.id,
            name,
            image: ImageInfo { id: target, tags },
            mountpoint: m.mountpoint.clone(),
            dev: m.dev,
            runtime: if is_docker { "docker" } else { "containerd" },
            upperdir: m.upperdir.clone(),
            layers,
            pod,
            mount_id: m.mount_id,
        }
    }
}

impl Resolver for ContainerdResolver {
    fn runtime(&self) -> &'static str {
        "containerd"
    }

    fn scan(&mut self, mounts: &[OverlayMount]) -> Vec<ContainerInfo> {
        let (out, warnings) = self.scan_collect(mounts);
        self.warned.emit(warnings);
        out
    }
}

impl Scan<'_> {
    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    /// A snapshot's `(namespace, client key)`.
    fn client_key(&self, id: u64) -> Option<(String, String)> {
        let snap = self.snaps.get(&id)?;
        self.meta
            .backend
            .get(&snap.key)
            .cloned()
            .or_else(|| split_backend_key(&snap.key))
    }

    /// A stable in-memory copy of a bolt database below the root.
    fn db(&mut self, rel: &str) -> Option<bolt::Db> {
        let rel = Path::new(rel);
        let mut last_err = None;
        for _ in 0..DB_TRIES {
            let first = match self.root.read(rel, MAX_DB) {
                Ok(d) => d,
                Err(e) => {
                    if !e.is_not_found() {
                        self.warn(e.to_string());
                    }
                    return None;
                }
            };
            let db = match bolt::Db::parse(first) {
                Ok(db) => db,
                Err(e) => {
                    last_err = Some(e.to_string());
                    continue;
                }
            };
            // Unchanged meanwhile: no commit could have reused its pages.
            match self.root.read(rel, MAX_DB).map(bolt::Db::parse) {
                Ok(Ok(again)) if again.txid() == db.txid() => return Some(db),
                _ => continue,
            }
        }
        let p = path_display(&self.root.path().join(rel));
        self.warn(format!(
            "{p}: no stable copy after {DB_TRIES} reads{}",
            last_err.map(|e| format!(" ({e})")).unwrap_or_default()
        ));
        None
    }

    /// Snapshot number -> snapshot, from the snapshotter's database.
    fn snapshotter_db(&mut self) -> HashMap<u64, Snap> {
        let Some(db) = self.db(SNAPSHOTTER_DB) else {
            return HashMap::new();
        };
        let mut out = HashMap::new();
        let r = (|| -> Result<(), bolt::BoltError> {
            let Some(snaps) = db
                .root()
                .bucket(b"v1")?
                .map(|v1| v1.bucket(b"snapshots"))
                .transpose()?
                .flatten()
            else {
                return Ok(());
            };
            for (key, item) in snaps.entries(MAX_ENTRIES)? {
                let (Some(b), Ok(key)) = (item.bucket(), std::str::from_utf8(key)) else {
                    continue;
                };
                let Some(id) = b.value(b"id")?.and_then(uvarint) else {
                    continue;
                };
                let size = b
                    .value(b"size")?
                    .and_then(varint)
                    .and_then(|s| u64::try_from(s).ok());
                out.insert(
                    id,
                    Snap {
                        key: key.to_string(),
                        size,
                    },
                );
            }
            Ok(())
        })();
        if let Err(e) = r {
            let p = path_display(&self.root.path().join(SNAPSHOTTER_DB));
            self.warn(format!("{p}: {e}"));
        }
        out
    }

    fn meta_db(&mut self) -> Meta {
        let Some(db) = self.db(META_DB) else {
            return Meta::default();
        };
        let mut meta = Meta::default();
        let r = read_meta(&db, &mut meta);
        if let Err(e) = r {
            let p = path_display(&self.root.path().join(META_DB));
            self.warn(format!("{p}: {e}"));
        }
        meta
    }

    /// The snapshot number of `<root>/<snapshotter>/snapshots/<N>/fs` (or,
    /// when `relative_ok`, of `<N>/fs` as containerd writes lowerdirs relative
    /// to the snapshots directory when the options are long).
    fn snapshot_id(&self, p: &Path, relative_ok: bool) -> Option<u64> {
        let rest = if p.is_absolute() {
            p.strip_prefix(&self.snapshots_dir).ok()?
        } else if relative_ok {
            p
        } else {
            return None;
        };
        let mut c = rest.components();
        match (c.next(), c.next(), c.next()) {
            (Some(Component::Normal(n)), Some(Component::Normal(fs)), None) if fs == "fs" => {
                parse_snapshot_number(n)
            }
            _ => None,
        }
    }

    fn layer_dir(&mut self, id: u64) -> Option<PathBuf> {
        let rel = PathBuf::from(format!("{SNAPSHOTTER}/snapshots/{id}/fs"));
        let is_dir = self.root.is_dir(&rel);
        layer_dir(&self.root, &rel, is_dir, self.warnings)
    }

    /// A content blob, checked against its digest.
    fn blob(&mut self, digest: &str, warn_missing: bool) -> Option<Vec<u8>> {
        let hex = digest.strip_prefix("sha256:").filter(|h| is_hex64(h))?;
        let rel = PathBuf::from(format!("{BLOBS}/{hex}"));
        read_verified(&self.root, &rel, hex, MAX_JSON, warn_missing, self.warnings)
    }
}

fn utf8(b: Option<&[u8]>) -> Option<String> {
    b.and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_string)
}

/// Namespaces, snapshots, containers and images of meta.db.
fn read_meta(db: &bolt::Db, meta: &mut Meta) -> Result<(), bolt::BoltError> {
    let Some(v1) = db.root().bucket(b"v1")? else {
        return Ok(());
    };
    for (ns, item) in v1.entries(MAX_ENTRIES)? {
        let (Some(nsb), Ok(ns)) = (item.bucket(), std::str::from_utf8(ns)) else {
            continue;
        };
        if let Some(snaps) = sub(nsb, &[b"snapshots", b"overlayfs"])? {
            for (key, item) in snaps.entries(MAX_ENTRIES)? {
                let (Some(b), Ok(key)) = (item.bucket(), std::str::from_utf8(key)) else {
                    continue;
                };
                if let Some(name) = utf8(b.value(b"name")?) {
                    meta.backend.insert(name, (ns.to_string(), key.to_string()));
                }
            }
        }
        if let Some(ctrs) = nsb.bucket(b"containers")? {
            for (id, item) in ctrs.entries(MAX_ENTRIES)? {
                let (Some(b), Ok(id)) = (item.bucket(), std::str::from_utf8(id)) else {
                    continue;
                };
                let mut labels = BTreeMap::new();
                if let Some(lb) = b.bucket(b"labels")? {
                    for (k, v) in lb.entries(MAX_ENTRIES)? {
                        if let (Ok(k), Some(v)) = (std::str::from_utf8(k), utf8(v.value())) {
                            labels.insert(k.to_string(), v);
                        }
                    }
                }
                meta.containers.push(CtrRec {
                    ns: ns.to_string(),
                    id: id.to_string(),
                    image: utf8(b.value(b"image")?).filter(|s| !s.is_empty()),
                    snapshot_key: utf8(b.value(b"snapshotKey")?).filter(|s| !s.is_empty()),
                    snapshotter: utf8(b.value(b"snapshotter")?).filter(|s| !s.is_empty()),
                    labels,
                });
            }
        }
        if let Some(imgs) = nsb.bucket(b"images")? {
            for (name, item) in imgs.entries(MAX_ENTRIES)? {
                let (Some(b), Ok(name)) = (item.bucket(), std::str::from_utf8(name)) else {
                    continue;
                };
                let digest = sub(b, &[b"target"])?
                    .map(|t| t.value(b"digest"))
                    .transpose()?
                    .flatten();
                if let Some(d) = utf8(digest).filter(|d| oci::is_digest(d)) {
                    meta.images.insert((ns.to_string(), name.to_string()), d);
                }
            }
        }
    }
    Ok(())
}

fn sub<'a>(b: Bucket<'a>, path: &[&[u8]]) -> Result<Option<Bucket<'a>>, bolt::BoltError> {
    let mut cur = b;
    for k in path {
        match cur.bucket(k)? {
            Some(n) => cur = n,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// Go's `binary.Uvarint`.
fn uvarint(b: &[u8]) -> Option<u64> {
    let mut x: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        let part = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return None;
        }
        x |= part << (7 * i);
        if byte < 0x80 {
            return Some(x);
        }
    }
    None
}

/// Go's `binary.Varint` (zig-zag).
fn varint(b: &[u8]) -> Option<i64> {
    let u = uvarint(b)?;
    let x = (u >> 1) as i64;
    Some(if u & 1 != 0 { !x } else { x })
}

fn parse_snapshot_number(n: &OsStr) -> Option<u64> {
    let s = n.to_str()?;
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0')
    {
        return None;
    }
    s.parse().ok()
}

/// `<root>/io.containerd.snapshotter.v1.overlayfs/snapshots/<N>/fs` ->
/// (root, N).
pub fn split_snapshot_path(p: &Path) -> Option<(PathBuf, u64)> {
    if !p.is_absolute() {
        return None;
    }
    let comps: Vec<Component> = p.components().collect();
    let k = comps.len();
    if k < 5 {
        return None;
    }
    let [Component::Normal(snapshotter), Component::Normal(snapshots), Component::Normal(n), Component::Normal(fs)] =
        comps[k - 4..]
    else {
        return None;
    };
    if snapshotter != SNAPSHOTTER || snapshots != "snapshots" || fs != "fs" {
        return None;
    }
    let id = parse_snapshot_number(n)?;
    if comps[..k - 4]
        .iter()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return None;
    }
    Some((comps[..k - 4].iter().collect(), id))
}

/// `<ns>/<seq>/<key>` -> (ns, key).
fn split_backend_key(k: &str) -> Option<(String, String)> {
    let mut it = k.splitn(3, '/');
    let (ns, seq, key) = (it.next()?, it.next()?, it.next()?);
    (!ns.is_empty() && !key.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
        .then(|| (ns.to_string(), key.to_string()))
}

/// `.../io.containerd.runtime.v2.task/<ns>/<id>/rootfs` -> (ns, id).
fn task_mount(mp: &Path) -> Option<(String, String)> {
    let comps: Vec<&OsStr> = mp
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let k = comps.len();
    if k < 4 || comps[k - 1] != "rootfs" {
        return None;
    }
    let task = comps[k - 4].to_str()?;
    if !task.starts_with("io.containerd.runtime.") || !task.ends_with(".task") {
        return None;
    }
    let ns = comps[k - 3].to_str().filter(|s| is_safe_name(s))?;
    let id = comps[k - 2].to_str().filter(|s| is_safe_name(s))?;
    Some((ns.to_string(), id.to_string()))
}

/// `<docker-root>/rootfs/overlayfs/<id>` -> (docker root, id).
fn docker_mount(mp: &Path) -> Option<(PathBuf, String)> {
    let id = mp.file_name()?.to_str().filter(|s| is_hex64(s))?;
    let overlayfs = mp.parent()?;
    let rootfs = overlayfs.parent()?;
    if overlayfs.file_name()? != "overlayfs" || rootfs.file_name()? != "rootfs" {
        return None;
    }
    Some((rootfs.parent()?.to_path_buf(), id.to_string()))
}

fn read_docker_config(root: &Path, id: &str, warnings: &mut Vec<String>) -> Option<DockerConfig> {
    let safe = SafeRoot::open(root).ok()?;
    let rel = PathBuf::from(format!("containers/{id}/config.v2.json"));
    let data = match safe.read(&rel, MAX_JSON) {
        Ok(d) => d,
        Err(e) => {
            if !e.is_not_found() {
                warnings.push(e.to_string());
            }
            return None;
        }
    };
    match serde_json::from_slice(&data) {
        Ok(c) => Some(c),
        Err(e) => {
            warnings.push(format!(
                "{}: invalid JSON: {e}",
                path_display(&root.join(rel))
            ));
            None
        }
    }
}

/// Runs the parsers on anything (fuzzing): as a bolt database laid out as
/// meta.db and as the snapshotter's, and as the small encodings.
#[doc(hidden)]
pub fn fuzz_parsers(data: &[u8]) {
    let _ = (uvarint(data), varint(data));
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = split_backend_key(s);
        let p = Path::new(s);
        let _ = (split_snapshot_path(p), task_mount(p), docker_mount(p));
    }
    if let Ok(db) = bolt::Db::parse(data.to_vec()) {
        let mut meta = Meta::default();
        let _ = read_meta(&db, &mut meta);
    }
}

#[cfg(test)]
mod tests;
