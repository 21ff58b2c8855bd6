//! One resolver per container runtime, each claiming its own containers'
//! overlay mounts, all driven by one skeleton ([`scan`]).
//!
//! The skeleton: find the runtime's roots, open each, offer it every mount
//! no root has claimed yet, and describe each mount it claims as a
//! [`ContainerInfo`] (container, image, layers). What differs per runtime
//! (where its roots are, which mounts are its own, how its metadata names
//! containers and layers) is its [`Runtime`] part. Image configs are read
//! through [`crate::catalog::oci`] by every runtime; warnings are logged
//! once each through [`Warned`].

pub mod containerd;
pub mod docker;
pub mod podman;

use std::{
    collections::HashSet,
    path::{Component, Path, PathBuf},
};

use crate::catalog::ContainerInfo;
use crate::sys::mounts::{path_display, OverlayMount};
use crate::sys::safe_fs::{is_safe_name, is_safe_name_bytes, SafeRoot};

/// The part of a resolver that differs per runtime.
pub(crate) trait Runtime {
    /// One opened root and what is read of it once a scan.
    type Root<'w>;
    /// What claiming a mount found out about its container.
    type Claim;

    /// The roots to scan this time, in order.
    fn roots(&mut self, mounts: &[OverlayMount], warnings: &mut Vec<String>) -> Vec<PathBuf>;
    /// Opens a root; `None` when it holds nothing to claim.
    fn open<'w>(&mut self, root: PathBuf, warnings: &'w mut Vec<String>) -> Option<Self::Root<'w>>;
    /// Whether `m` is the root file system of one of this root's containers.
    fn claim(&mut self, root: &mut Self::Root<'_>, m: &OverlayMount) -> Option<Self::Claim>;
    /// The container, its image and its layers.
    fn describe(
        &mut self,
        root: &mut Self::Root<'_>,
        m: &OverlayMount,
        claim: Self::Claim,
    ) -> ContainerInfo;
}

/// The resolver skeleton: every root of `rt`, every mount not yet claimed
/// (a device claimed once is not offered again).
pub(crate) fn scan<R: Runtime>(
    rt: &mut R,
    mounts: &[OverlayMount],
    warnings: &mut Vec<String>,
) -> Vec<ContainerInfo> {
    let mut out: Vec<ContainerInfo> = Vec::new();
    for path in rt.roots(mounts, warnings) {
        let Some(mut root) = rt.open(path, warnings) else {
            continue;
        };
        for m in mounts {
            if out.iter().any(|c| c.dev == m.dev) {
                continue;
            }
            if let Some(claim) = rt.claim(&mut root, m) {
                let c = rt.describe(&mut root, m, claim);
                out.push(c);
            }
        }
    }
    out
}

/// Warnings already logged: rescans must not repeat them.
#[derive(Debug)]
pub(crate) struct Warned {
    runtime: &'static str,
    seen: HashSet<String>,
}

impl Warned {
    /// Most distinct warnings remembered (then they are no longer logged).
    const MAX: usize = 10_000;

    pub(crate) fn new(runtime: &'static str) -> Self {
        Self {
            runtime,
            seen: HashSet::new(),
        }
    }

    /// Logs the warnings not logged before.
    pub(crate) fn emit(&mut self, warnings: Vec<String>) {
        for w in warnings {
            if self.seen.len() < Self::MAX && self.seen.insert(w.clone()) {
                log::warn!("{}: {w}", self.runtime);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &String> {
        self.seen.iter()
    }
}

/// A content-addressed file below `root` (an image config, a manifest), read
/// and checked against its digest `hex`. A missing file is warned about when
/// `warn_missing`.
pub(crate) fn read_verified(
    root: &SafeRoot,
    rel: &Path,
    hex: &str,
    max: u64,
    warn_missing: bool,
    warnings: &mut Vec<String>,
) -> Option<Vec<u8>> {
    let data = match root.read(rel, max) {
        Ok(d) => d,
        Err(e) => {
            if warn_missing || !e.is_not_found() {
                warnings.push(e.to_string());
            }
            return None;
        }
    };
    if crate::catalog::oci::sha256_hex(&data) != hex {
        warnings.push(format!(
            "{}: content does not match its digest; ignored",
            path_display(&root.path().join(rel))
        ));
        return None;
    }
    Some(data)
}

/// `rel` below `root` as a layer's directory, when `is_dir` (a real directory,
/// no symlink): the source-layer lookup later opens it.
pub(crate) fn layer_dir(
    root: &SafeRoot,
    rel: &Path,
    is_dir: bool,
    warnings: &mut Vec<String>,
) -> Option<PathBuf> {
    let path = root.path().join(rel);
    if is_dir {
        Some(path)
    } else {
        warnings.push(format!(
            "{}: not a directory (or a symlink); layer not inspected",
            path_display(&path)
        ));
        None
    }
}

/// A lowerdir of a graph driver that keeps `<dir>/<id>/diff` layer
/// directories and `<dir>/l/<short>` links to them (Docker's overlay2,
/// containers/storage's overlay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LowerPath {
    /// `<dir>/l/<short>`.
    Link(String),
    /// `<dir>/<id>/diff`.
    Layer(String),
    /// Below `<dir>`, but neither.
    Other,
    /// Absolute and not below `<dir>`.
    Outside,
}

/// What `lower` (absolute, or relative to `dir`) names.
pub(crate) fn lower_path(dir: &Path, lower: &Path) -> LowerPath {
    let rel = if lower.is_absolute() {
        match lower.strip_prefix(dir) {
            Ok(r) => r,
            Err(_) => return LowerPath::Outside,
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
    let name = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match comps.as_slice() {
        [b"l", short] if is_safe_name_bytes(short) => LowerPath::Link(name(short)),
        [id, b"diff"] if is_safe_name_bytes(id) && *id != b"l" => LowerPath::Layer(name(id)),
        _ => LowerPath::Other,
    }
}

/// A `l/<short>` link's target `../<id>/diff` -> id.
pub(crate) fn parse_link_target(t: &[u8]) -> Option<String> {
    let rest = t.strip_prefix(b"../")?;
    let id = rest.strip_suffix(b"/diff")?;
    (is_safe_name_bytes(id) && id != b"l").then(|| String::from_utf8_lossy(id).into_owned())
}

/// The layer directory id of a mount's read-write layer below `dir`: from
/// `upperdir` (`<dir>/<id>/diff`, or `<id>/diff` relative when the mount point
/// is `<dir>/<id>/merged`); with `or_mountpoint`, from the mount point alone
/// when the upper directory does not tell.
pub(crate) fn rw_layer_id(dir: &Path, m: &OverlayMount, or_mountpoint: bool) -> Option<String> {
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
        .strip_prefix(dir)
        .ok()
        .and_then(|r| two(r, "merged"));
    let from_upper = match &m.upperdir {
        Some(u) if u.is_absolute() => u.strip_prefix(dir).ok().and_then(|r| two(r, "diff")),
        // Relative paths only mean something for a mount under `dir`.
        Some(u) => from_mountpoint.as_ref().and_then(|_| two(u, "diff")),
        None => None,
    };
    from_upper.or(from_mountpoint.filter(|_| or_mountpoint))
}

/// [`scan`], returning its warnings instead of logging them.
pub(crate) fn scan_collect<R: Runtime>(
    rt: &mut R,
    mounts: &[OverlayMount],
) -> (Vec<ContainerInfo>, Vec<String>) {
    let mut warnings = Vec::new();
    let out = scan(rt, mounts, &mut warnings);
    (out, warnings)
}
