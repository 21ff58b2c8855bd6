//! containers/storage with the overlay driver: Podman, Buildah and CRI-O.
//!
//! Layout under the storage root (rootful default /var/lib/containers/storage):
//! - `overlay/<layer-id>/{diff,link,lower,work,merged}`, `overlay/l/<short> ->
//!   ../<layer-id>/diff`; `lower` is `l/<short>:l/<short>...`, uppermost first,
//!   up to 500 entries;
//! - `overlay-layers/layers.json` (and `volatile-layers.json` for layers kept
//!   off disk syncs): `[{id, parent, diff-digest, diff-size,
//!   compressed-diff-digest, ...}]`;
//! - `overlay-images/images.json`: `[{id, names, layer (top), ...}]`; the
//!   image config is the big-data item `sha256:<id>`, stored as
//!   `overlay-images/<id>/=<base64 of the key>`;
//! - `overlay-containers/containers.json`: `[{id, names, image, layer,
//!   metadata}]`; CRI-O's `metadata` (a JSON string) names the pod.
//!
//! A container's mount has its own layer as upperdir
//! (`overlay/<layer>/diff`) and its image's layers as lowerdirs. Everything
//! below the root is read through [`SafeRoot`]: no symlink is followed.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use base64::Engine as _;
use serde::Deserialize;

use super::{
    layer_dir, lower_path, parse_link_target, read_verified, rw_layer_id, LowerPath, Runtime,
    Warned,
};
use crate::catalog::{
    oci::{self, ConfigCache, ImageMeta},
    ContainerInfo, ImageInfo, LayerInfo, PodInfo, Resolver,
};
use crate::sys::mounts::{bytes_display, path_display, OverlayMount};
use crate::sys::safe_fs::{is_hex64, is_safe_name, SafeRoot};

pub const DEFAULT_ROOT: &str = "/var/lib/containers/storage";
pub const STORAGE_CONF: &str = "/etc/containers/storage.conf";
/// Largest of layers.json, images.json, containers.json read.
const MAX_STORE_JSON: u64 = 64 << 20;
/// Largest image config read.
const MAX_CONFIG: u64 = 16 << 20;
/// containers/storage's deepest layer stack.
pub const MAX_DEPTH: usize = 500;

#[derive(Debug)]
pub struct PodmanResolver {
    explicit_root: Option<PathBuf>,
    storage_conf: PathBuf,
    default_root: PathBuf,
    configs: ConfigCache,
    warned: Warned,
    last_roots: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
struct LayerRec {
    id: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default, rename = "diff-digest")]
    diff_digest: Option<String>,
    #[serde(default, rename = "diff-size")]
    diff_size: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
struct ImageRec {
    id: String,
    #[serde(default)]
    names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ContainerRec {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: Option<String>,
    layer: String,
    #[serde(default)]
    metadata: Option<String>,
}

/// CRI-O's (and Podman's) container metadata.
#[derive(Debug, Default, Deserialize)]
struct CtrMetadata {
    #[serde(default, rename = "pod-name")]
    pod_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default, rename = "metadata-name")]
    metadata_name: Option<String>,
}

/// Per-root scan state.
pub(crate) struct Scan<'a> {
    root: SafeRoot,
    overlay: PathBuf,
    warnings: &'a mut Vec<String>,
    /// containers.json's containers, by their layer.
    by_layer: HashMap<String, ContainerRec>,
    /// layers.json and images.json, read when a first container is described.
    store: Option<Store>,
}

/// The layer and image stores of a root.
struct Store {
    layers: HashMap<String, LayerRec>,
    images: Vec<ImageRec>,
}

impl PodmanResolver {
    pub fn new(explicit_root: Option<PathBuf>) -> Self {
        Self::with_paths(
            explicit_root,
            PathBuf::from(STORAGE_CONF),
            PathBuf::from(DEFAULT_ROOT),
        )
    }

    pub fn with_paths(
        explicit_root: Option<PathBuf>,
        storage_conf: PathBuf,
        default_root: PathBuf,
    ) -> Self {
        Self {
            explicit_root,
            storage_conf,
            default_root,
            configs: ConfigCache::default(),
            warned: Warned::new("podman"),
            last_roots: Vec::new(),
        }
    }

    /// The storage roots the latest scan used.
    pub fn roots(&self) -> &[PathBuf] {
        &self.last_roots
    }

    /// [`Resolver::scan`] that returns its warnings instead of logging them.
    pub fn scan_collect(&mut self, mounts: &[OverlayMount]) -> (Vec<ContainerInfo>, Vec<String>) {
        super::scan_collect(self, mounts)
    }

    /// Candidate roots: the flag, storage.conf's graphroot, the default, and
    /// every `<root>/overlay` the mounts point into that has containers/storage
    /// metadata beside it.
    fn candidate_roots(&self, mounts: &[OverlayMount], warnings: &mut Vec<String>) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = Vec::new();
        let mut add = |p: PathBuf| {
            if !roots.contains(&p) {
                roots.push(p);
            }
        };
        if let Some(p) = &self.explicit_root {
            add(p.clone());
        }
        if let Some(p) = graphroot(&self.storage_conf, warnings) {
            add(p);
        }
        add(self.default_root.clone());
        for m in mounts {
            for p in std::iter::once(&m.mountpoint).chain(m.upperdir.iter()) {
                if let Some(r) = root_of(p) {
                    if r.join("overlay-containers").is_dir() {
                        add(r);
                    }
                }
            }
        }
        roots
    }

    fn container(&mut self, scan: &mut Scan, m: &OverlayMount, c: &ContainerRec) -> ContainerInfo {
        let meta: CtrMetadata = c
            .metadata
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        let pod = meta.pod_name.clone().map(|name| PodInfo {
            name,
            namespace: meta.namespace.clone(),
        });
        let name = meta
            .metadata_name
            .clone()
            .filter(|_| pod.is_some())
            .or_else(|| c.names.first().cloned());
        let image_rec = c
            .image
            .as_deref()
            .and_then(|id| scan.store().images.iter().find(|i| i.id == id))
            .cloned();
        let image_id = image_rec
            .as_ref()
            .map(|i| i.id.clone())
            .filter(|id| is_hex64(id));
        let image_meta = image_id.as_deref().and_then(|id| self.config(scan, id));
        let mut tags = image_rec.map(|i| i.names).unwrap_or_default();
        tags.sort();
        tags.dedup();

        let layers = Self::layers(scan, m, c, image_meta.as_deref());
        let n = layers.len();
        if let Some(w) = image_meta
            .as_ref()
            .and_then(|img| img.layer_count_warning(&c.id, n))
        {
            scan.warn(w);
        }
        ContainerInfo {
            id: c.id.clone(),
            name,
            image: ImageInfo {
                id: image_id.map(|id| format!("sha256:{id}")),
                tags,
            },
            mountpoint: m.mountpoint.clone(),
            dev: m.dev,
            runtime: if pod.is_some() { "cri-o" } else { "podman" },
            upperdir: Some(scan.overlay.join(&c.layer).join("diff")),
            layers,
            pod,
            mount_id: m.mount_id,
        }
    }

    /// Each lowerdir's layer: its id in the layer store, and what the image
    /// says of it.
    fn layers(
        scan: &mut Scan,
        m: &OverlayMount,
        c: &ContainerRec,
        image: Option<&ImageMeta>,
    ) -> Vec<LayerInfo> {
        // The layer chain the container's layer sits on, top first.
        let chain = scan.parents(&c.layer);
        let lowers = scan.lower_layer_ids(m, &c.layer);
        let n = lowers.len();
        let mut layers = Vec::with_capacity(n);
        for (i, (id, short)) in lowers.into_iter().enumerate() {
            let mut l = LayerInfo {
                index: i + 1,
                short_id: short,
                position: Some(n - i),
                ..Default::default()
            };
            if let Some(id) = &id {
                if chain.get(i) != Some(id) {
                    scan.warn(format!(
                        "container {}: lower layer {} is {id}, but its layer chain has {} there",
                        c.id,
                        i + 1,
                        chain.get(i).map(String::as_str).unwrap_or("nothing")
                    ));
                }
                l.dir = scan.layer_dir(id);
                if let Some(rec) = scan.store().layers.get(id) {
                    l.diff_id = rec.diff_digest.clone().filter(|d| oci::is_digest(d));
                    l.size = rec.diff_size.and_then(|s| u64::try_from(s).ok());
                } else {
                    scan.warn(format!("layer {id} is not in layers.json"));
                }
            }
            if let Some(img) = image {
                if !oci::describe_layer(img, n - i, &mut l) {
                    scan.warn(format!(
                        "container {}: layer {} ({}) does not match its image at position {}; instruction unknown",
                        c.id,
                        i + 1,
                        l.diff_id.as_deref().unwrap_or("no diff-id"),
                        n - i
                    ));
                }
            }
            l.cache_id = id;
            layers.push(l);
        }
        layers
    }

    /// The image config (`overlay-images/<id>/=<base64("sha256:<id>")>`),
    /// checked against the image id (its digest).
    fn config(&mut self, scan: &mut Scan, id: &str) -> Option<Arc<ImageMeta>> {
        let root = &scan.root;
        self.configs
            .get(id, &format!("image {id}"), scan.warnings, |w| {
                let file = big_data_name(&format!("sha256:{id}"));
                let rel = PathBuf::from(format!("overlay-images/{id}/{file}"));
                read_verified(root, &rel, id, MAX_CONFIG, true, w)
            })
    }
}

impl Runtime for PodmanResolver {
    type Root<'w> = Scan<'w>;
    type Claim = ContainerRec;

    fn roots(&mut self, mounts: &[OverlayMount], warnings: &mut Vec<String>) -> Vec<PathBuf> {
        self.last_roots.clear();
        self.candidate_roots(mounts, warnings)
    }

    /// A root with containers/storage metadata, and its containers.
    fn open<'w>(&mut self, root: PathBuf, warnings: &'w mut Vec<String>) -> Option<Scan<'w>> {
        let explicit = self.explicit_root.as_ref() == Some(&root);
        if !root.join("overlay-containers").is_dir() {
            if explicit {
                warnings.push(format!(
                    "{}: no containers/storage metadata (overlay-containers/)",
                    root.display()
                ));
            }
            return None;
        }
        let safe = match SafeRoot::open(&root) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("opening the storage root: {e}"));
                return None;
            }
        };
        self.last_roots.push(root.clone());
        let mut scan = Scan {
            overlay: root.join("overlay"),
            root: safe,
            warnings,
            by_layer: HashMap::new(),
            store: None,
        };
        // Absent until the first container is created.
        let containers: Vec<ContainerRec> =
            scan.store_json_opt("overlay-containers/containers.json");
        scan.by_layer = containers
            .into_iter()
            .filter(|c| is_safe_name(&c.layer))
            .map(|c| (c.layer.clone(), c))
            .collect();
        Some(scan)
    }

    /// A mount whose upper layer is a container's layer.
    fn claim(&mut self, scan: &mut Scan, m: &OverlayMount) -> Option<ContainerRec> {
        let layer = rw_layer_id(&scan.overlay, m, false)?;
        scan.by_layer.get(&layer).cloned()
    }

    fn describe(&mut self, scan: &mut Scan, m: &OverlayMount, c: ContainerRec) -> ContainerInfo {
        self.container(scan, m, &c)
    }
}

impl Resolver for PodmanResolver {
    fn runtime(&self) -> &'static str {
        "podman"
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

    /// layers.json (and volatile-layers.json) and images.json, read on
    /// first need.
    fn store(&mut self) -> &Store {
        let store = match self.store.take() {
            Some(s) => s,
            None => self.read_store(),
        };
        self.store.insert(store)
    }

    fn read_store(&mut self) -> Store {
        let mut layers: Vec<LayerRec> = self.store_json("overlay-layers/layers.json");
        layers.extend(self.store_json_opt::<LayerRec>("overlay-layers/volatile-layers.json"));
        let layers = layers
            .into_iter()
            .filter(|l| is_safe_name(&l.id))
            .map(|l| (l.id.clone(), l))
            .collect();
        let images = self.store_json("overlay-images/images.json");
        Store { layers, images }
    }

    fn store_json<T: for<'de> Deserialize<'de>>(&mut self, rel: &str) -> Vec<T> {
        match self.root.read(Path::new(rel), MAX_STORE_JSON) {
            Ok(d) => self.parse_list(rel, &d),
            Err(e) => {
                self.warn(e.to_string());
                Vec::new()
            }
        }
    }

    fn store_json_opt<T: for<'de> Deserialize<'de>>(&mut self, rel: &str) -> Vec<T> {
        match self.root.read(Path::new(rel), MAX_STORE_JSON) {
            Ok(d) => self.parse_list(rel, &d),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => {
                self.warn(e.to_string());
                Vec::new()
            }
        }
    }

    /// A JSON array; entries that do not parse are skipped with a warning.
    fn parse_list<T: for<'de> Deserialize<'de>>(&mut self, rel: &str, data: &[u8]) -> Vec<T> {
        let p = path_display(&self.root.path().join(rel));
        let items: Vec<serde_json::Value> = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => {
                self.warn(format!("{p}: invalid JSON: {e}"));
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        let mut bad = 0usize;
        for v in items {
            match serde_json::from_value(v) {
                Ok(t) => out.push(t),
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            self.warn(format!("{p}: {bad} malformed entries skipped"));
        }
        out
    }

    /// The layers below `layer`, nearest first (at most [`MAX_DEPTH`]; a
    /// cycle ends the walk).
    fn parents(&mut self, layer: &str) -> Vec<String> {
        let layers = &self.store().layers;
        let mut out: Vec<String> = Vec::new();
        let mut cur = layers.get(layer).and_then(|l| l.parent.clone());
        let mut broken = false;
        while let Some(p) = cur.filter(|p| !p.is_empty()) {
            if out.len() >= MAX_DEPTH || out.contains(&p) {
                broken = true;
                break;
            }
            cur = layers.get(&p).and_then(|l| l.parent.clone());
            out.push(p);
        }
        if broken {
            self.warn(format!("layer {layer}: parent chain too deep or cyclic"));
        }
        out
    }

    /// Each lowerdir's (layer id, short link id). When a lowerdir cannot be
    /// read (e.g. a relative path after a chdir), the container layer's
    /// `lower` file fills it in, if it lists as many layers as are mounted.
    fn lower_layer_ids(
        &mut self,
        m: &OverlayMount,
        rw: &str,
    ) -> Vec<(Option<String>, Option<String>)> {
        let mut out: Vec<(Option<String>, Option<String>)> =
            m.lowerdirs.iter().map(|l| self.lowerdir(l)).collect();
        if out.iter().any(|(id, _)| id.is_none()) {
            if let Some(lower) = self.lower_file(rw) {
                if lower.len() == out.len() {
                    for (slot, short) in out.iter_mut().zip(lower) {
                        if slot.0.is_none() {
                            *slot = self.short_link(&short);
                        }
                    }
                } else {
                    self.warn(format!(
                        "layer {rw}: its lower file lists {} layers, {} are mounted",
                        lower.len(),
                        out.len()
                    ));
                }
            }
        }
        out
    }

    /// `overlay/<rw>/lower`: the short ids, uppermost first.
    fn lower_file(&mut self, rw: &str) -> Option<Vec<String>> {
        let rel = PathBuf::from(format!("overlay/{rw}/lower"));
        let text = match self.root.read(&rel, 64 * 1024) {
            Ok(d) => String::from_utf8_lossy(&d).into_owned(),
            Err(e) => {
                if !e.is_not_found() {
                    self.warn(e.to_string());
                }
                return None;
            }
        };
        let mut shorts = Vec::new();
        for entry in text.trim().split(':').filter(|s| !s.is_empty()) {
            match entry.strip_prefix("l/").filter(|s| is_safe_name(s)) {
                Some(s) if shorts.len() < MAX_DEPTH => shorts.push(s.to_string()),
                Some(_) => {
                    self.warn(format!("layer {rw}: lower file longer than {MAX_DEPTH}"));
                    return None;
                }
                None => {
                    self.warn(format!("layer {rw}: bad lower entry {entry:?}"));
                    return None;
                }
            }
        }
        Some(shorts)
    }

    /// `l/<short>` -> (layer id, short).
    fn short_link(&mut self, short: &str) -> (Option<String>, Option<String>) {
        let link = PathBuf::from(format!("overlay/l/{short}"));
        let target = match self.root.read_link(&link) {
            Ok(t) => t,
            Err(e) => {
                self.warn(e.to_string());
                return (None, Some(short.to_string()));
            }
        };
        match parse_link_target(&target) {
            Some(id) => (Some(id), Some(short.to_string())),
            None => {
                self.warn(format!(
                    "{}: points to {:?}, expected ../<layer-id>/diff; not followed",
                    path_display(&self.root.path().join(&link)),
                    bytes_display(&target)
                ));
                (None, Some(short.to_string()))
            }
        }
    }

    /// (layer id, short) of a lowerdir `<root>/overlay/l/<short>`,
    /// `<root>/overlay/<id>/diff`, or either relative to `<root>/overlay`.
    fn lowerdir(&mut self, lower: &Path) -> (Option<String>, Option<String>) {
        match lower_path(&self.overlay, lower) {
            LowerPath::Link(short) => self.short_link(&short),
            LowerPath::Layer(id) => {
                let short = self
                    .root
                    .read_line(&PathBuf::from(format!("overlay/{id}/link")))
                    .ok()
                    .filter(|s| is_safe_name(s));
                (Some(id), short)
            }
            LowerPath::Other | LowerPath::Outside => (None, None),
        }
    }

    fn layer_dir(&mut self, id: &str) -> Option<PathBuf> {
        let rel = PathBuf::from(format!("overlay/{id}/diff"));
        let is_dir = self.root.is_dir(&rel);
        layer_dir(&self.root, &rel, is_dir, self.warnings)
    }
}

/// containers/storage's file name for a big-data key: the key itself when it
/// is only `[0-9a-z.]`, else `=` and its base64.
pub fn big_data_name(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b == b'.' || b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        key.to_string()
    } else {
        format!("={}", base64::engine::general_purpose::STANDARD.encode(key))
    }
}

/// `graphroot` of storage.conf's `[storage]` table, if set and absolute.
fn graphroot(conf: &Path, warnings: &mut Vec<String>) -> Option<PathBuf> {
    use std::io::Read;
    let f = match std::fs::File::open(conf) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warnings.push(format!("{}: {e}", conf.display()));
            return None;
        }
    };
    let mut text = String::new();
    if f.take(1 << 20).read_to_string(&mut text).is_err() {
        warnings.push(format!("{}: not UTF-8 text; ignored", conf.display()));
        return None;
    }
    parse_graphroot(&text)
}

/// The `graphroot = "..."` line of the `[storage]` table (a minimal TOML
/// reading: basic strings, comments).
fn parse_graphroot(text: &str) -> Option<PathBuf> {
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            table = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            continue;
        }
        if table != "storage" {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() != "graphroot" {
            continue;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.split_once('"'))
            .map(|(s, _)| s)
            .or_else(|| {
                v.strip_prefix('\'')
                    .and_then(|v| v.split_once('\''))
                    .map(|(s, _)| s)
            })?;
        let p = PathBuf::from(v);
        return (p.is_absolute() && !v.contains('\\')).then_some(p);
    }
    None
}

/// `<root>/overlay/<id>/{merged,diff}` -> root.
fn root_of(p: &Path) -> Option<PathBuf> {
    let last = p.file_name()?;
    if last != "merged" && last != "diff" {
        return None;
    }
    let overlay = p.parent()?.parent()?;
    (overlay.file_name()? == "overlay").then(|| overlay.parent().map(Path::to_path_buf))?
}

/// Runs the parsers on anything (fuzzing).
#[doc(hidden)]
pub fn fuzz_parsers(data: &[u8]) {
    let _ = parse_link_target(data);
    let _ = serde_json::from_slice::<Vec<LayerRec>>(data);
    let _ = serde_json::from_slice::<Vec<ImageRec>>(data);
    let _ = serde_json::from_slice::<Vec<ContainerRec>>(data);
    let _ = serde_json::from_slice::<CtrMetadata>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = (parse_graphroot(s), big_data_name(s), root_of(Path::new(s)));
    }
    let overlay = Path::new("/var/lib/containers/storage/overlay");
    for m in &crate::sys::mounts::parse_mountinfo(data).mounts {
        let _ = rw_layer_id(overlay, m, false);
    }
}

#[cfg(test)]
mod tests;
