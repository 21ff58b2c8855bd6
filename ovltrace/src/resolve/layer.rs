//! Which lower layer a path of an overlay mount comes from.
//!
//! Mirrors overlayfs's lookup over the lower layers only (the upper layer is the
//! one being copied up into): component by component, a directory merges the layers
//! below it until one of them is opaque, holds a whiteout (char device 0/0, or a 6.7+
//! "xwhiteout" file) or a non-directory at that name. Nothing here follows a
//! symlink: a symlink used as an intermediate component is a non-directory, and
//! directories are opened component by component with O_NOFOLLOW.
//! Not modelled: redirect_dir redirects and metacopy data layers (Docker uses neither).
//!
//! Lower layers never change while mounted, so everything is cached: each layer
//! directory is listed once (names and kinds), each merged directory's list of
//! contributing layers is computed once, and answers are kept per path. A copy-up
//! storm of 20,000 files in 200 directories reads 200 directories per layer,
//! not 20,000 paths.

use std::{
    collections::HashMap,
    ffi::OsStr,
    os::{fd::OwnedFd, unix::ffi::OsStrExt},
    path::PathBuf,
    rc::Rc,
};

use rustix::fs::{fgetxattr, openat, statat, AtFlags, Dir, FileType, Mode, OFlags, CWD};

/// Default bound on cached lookups per stack (each generation).
pub const DEFAULT_CACHE_ENTRIES: usize = 32 * 1024;
/// Names kept from directory listings per stack before the caches restart.
const MAX_LISTED_NAMES: usize = 512 * 1024;

const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];
const WHITEOUT_XATTRS: [&str; 2] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];

/// What a name is in one layer's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Whiteout,
    Other,
}

/// One layer's directory, read once.
#[derive(Debug)]
struct Listing {
    names: HashMap<Box<[u8]>, Kind>,
    /// `overlay.opaque` = "y": layers below do not contribute to this directory.
    opaque: bool,
}

/// (layer index, directory relative path): one layer's view of a directory.
type ListingKey = (usize, Box<[u8]>);

/// The lower layers of one overlay mount, uppermost first (`layers[0]` is overlay
/// index 1). `None` marks a layer whose directory is unknown; it is treated as empty.
#[derive(Debug)]
pub struct LayerStack {
    layers: Vec<Option<PathBuf>>,
    cache: BoundedCache,
    /// (layer index, directory relative path) -> its listing; None: absent there.
    listings: HashMap<ListingKey, Option<Rc<Listing>>>,
    /// Merged directory -> the layers contributing to it, uppermost first;
    /// None: no such directory in the merged view.
    merged: HashMap<Box<[u8]>, Option<Rc<Vec<usize>>>>,
    listed_names: usize,
}

impl LayerStack {
    pub fn new(layers: Vec<Option<PathBuf>>) -> Self {
        Self::with_cache_entries(layers, DEFAULT_CACHE_ENTRIES)
    }

    pub fn with_cache_entries(layers: Vec<Option<PathBuf>>, entries: usize) -> Self {
        Self {
            layers,
            cache: BoundedCache::new(entries.max(1)),
            listings: HashMap::new(),
            merged: HashMap::new(),
            listed_names: 0,
        }
    }

    pub fn layers(&self) -> &[Option<PathBuf>] {
        &self.layers
    }

    /// Overlay index (1 = first lowerdir) of the topmost lower layer that holds `rel`,
    /// a path relative to the overlay root (raw bytes, leading slashes ignored).
    pub fn source_index(&mut self, rel: &[u8]) -> Option<usize> {
        if let Some(hit) = self.cache.get(rel) {
            return hit;
        }
        if self.listed_names > MAX_LISTED_NAMES {
            self.listings.clear();
            self.merged.clear();
            self.listed_names = 0;
        }
        let r = self.lookup(rel);
        self.cache.insert(rel.to_vec(), r);
        r
    }

    fn lookup(&mut self, rel: &[u8]) -> Option<usize> {
        let mut comps: Vec<&[u8]> = Vec::new();
        for c in rel.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                // Paths built from d_parent walks never hold "..": refuse rather than guess.
                b".." => return None,
                c => comps.push(c),
            }
        }
        let Some((last, dirs)) = comps.split_last() else {
            // The root directory is in every layer.
            return self.merged_dir(&[])?.first().copied();
        };
        let contributing = self.merged_dir(dirs)?;
        let dir = join(dirs);
        for &idx in contributing.iter() {
            let Some(listing) = self.listing(idx, &dir) else {
                continue;
            };
            match listing.names.get(*last) {
                None => continue,
                Some(Kind::Whiteout) => return None,
                Some(_) => return Some(idx),
            }
        }
        None
    }

    /// The layers contributing to the merged directory `comps`, uppermost first.
    fn merged_dir(&mut self, comps: &[&[u8]]) -> Option<Rc<Vec<usize>>> {
        let key = join(comps);
        if let Some(hit) = self.merged.get(&key) {
            return hit.clone();
        }
        let result = match comps.split_last() {
            None => {
                let present: Vec<usize> = (1..=self.layers.len())
                    .filter(|&idx| self.listing(idx, b"").is_some())
                    .collect();
                Some(Rc::new(present))
            }
            Some((name, parents)) => self.merge_child(parents, name, &key),
        };
        self.merged.insert(key, result.clone());
        result
    }

    fn merge_child(
        &mut self,
        parents: &[&[u8]],
        name: &[u8],
        key: &[u8],
    ) -> Option<Rc<Vec<usize>>> {
        let parent_layers = self.merged_dir(parents)?;
        let parent = join(parents);
        let mut next = Vec::new();
        for &idx in parent_layers.iter() {
            let Some(listing) = self.listing(idx, &parent) else {
                continue;
            };
            match listing.names.get(name) {
                None => continue,
                Some(Kind::Whiteout) => break,
                // A non-directory on top hides everything below; under a
                // directory it only ends the merge.
                Some(Kind::Other) => {
                    if next.is_empty() {
                        return None;
                    }
                    break;
                }
                Some(Kind::Dir) => {
                    next.push(idx);
                    if self.listing(idx, key).is_some_and(|l| l.opaque) {
                        break;
                    }
                }
            }
        }
        (!next.is_empty()).then(|| Rc::new(next))
    }

    /// Layer `idx`'s directory `dir` (relative), listed once.
    fn listing(&mut self, idx: usize, dir: &[u8]) -> Option<Rc<Listing>> {
        let key = (idx, Box::<[u8]>::from(dir));
        if let Some(hit) = self.listings.get(&key) {
            return hit.clone();
        }
        let root = self.layers.get(idx.checked_sub(1)?).cloned().flatten();
        let listing = root.and_then(|root| read_listing(&root, dir)).map(Rc::new);
        if let Some(l) = &listing {
            self.listed_names += l.names.len();
        }
        self.listings.insert(key, listing.clone());
        listing
    }
}

fn join(comps: &[&[u8]]) -> Box<[u8]> {
    comps.join(&b'/').into_boxed_slice()
}

/// Uncached [`LayerStack::source_index`].
pub fn find_source(layers: &[Option<PathBuf>], rel: &[u8]) -> Option<usize> {
    LayerStack::new(layers.to_vec()).source_index(rel)
}

/// Opens `root`/`dir` one component at a time without following symlinks
/// (a symlink as a component fails with ELOOP/ENOTDIR: not a directory here),
/// then reads its names and kinds.
fn read_listing(root: &std::path::Path, dir: &[u8]) -> Option<Listing> {
    let mut fd = openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| log::debug!("layer {}: {e}", root.display()))
    .ok()?;
    for c in dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        fd = openat(
            &fd,
            OsStr::from_bytes(c),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
    }
    let mut opaque = false;
    let mut xwh = false;
    for x in OPAQUE_XATTRS {
        match xattr_value(&fd, x).as_deref() {
            Some(b"y") => opaque = true,
            // 6.7+: "x" marks a merge directory that may hold xwhiteouts.
            Some(b"x") => xwh = true,
            _ => {}
        }
    }
    let mut names = HashMap::new();
    let entries = Dir::read_from(&fd)
        .map_err(|e| log::debug!("listing {}: {e}", root.display()))
        .ok()?;
    for entry in entries {
        let Ok(entry) = entry else {
            break;
        };
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name);
        let mut ft = entry.file_type();
        let mut rdev = u64::MAX;
        // d_type is enough except for character devices (whiteouts are 0/0)
        // and file systems that do not fill it in.
        if ft == FileType::Unknown || ft == FileType::CharacterDevice {
            match lstat_type(&fd, name) {
                Some((t, r)) => (ft, rdev) = (t, r),
                None => continue,
            }
        }
        let kind = if ft == FileType::Directory {
            Kind::Dir
        } else if is_whiteout(&fd, name, ft, rdev, xwh) {
            Kind::Whiteout
        } else {
            Kind::Other
        };
        names.insert(Box::<[u8]>::from(name.as_bytes()), kind);
    }
    Some(Listing { names, opaque })
}

fn lstat_type(dirfd: &OwnedFd, name: &OsStr) -> Option<(FileType, u64)> {
    match statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Some((FileType::from_raw_mode(st.st_mode), st.st_rdev)),
        Err(e) => {
            if e != rustix::io::Errno::NOENT {
                log::debug!("lstat {:?}: {e}", name);
            }
            None
        }
    }
}

fn is_whiteout(dirfd: &OwnedFd, name: &OsStr, ft: FileType, rdev: u64, xwh: bool) -> bool {
    match ft {
        FileType::CharacterDevice => rdev == 0,
        FileType::RegularFile if xwh => {
            match openat(
                dirfd,
                name,
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => WHITEOUT_XATTRS.iter().any(|x| has_xattr(&fd, x)),
                Err(_) => false,
            }
        }
        _ => false,
    }
}

fn xattr_value(fd: &OwnedFd, name: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; 16];
    let n = fgetxattr(fd, name, &mut buf).ok()?;
    Some(buf[..n.min(buf.len())].to_vec())
}

fn has_xattr(fd: &OwnedFd, name: &str) -> bool {
    // A zero-length buffer asks for the value's size: success means it exists.
    fgetxattr(fd, name, &mut []).is_ok()
}

/// Two generations of a map: when the young one fills up, it becomes the old one and
/// the old one is dropped. Hits in the old generation are promoted. Bounded memory,
/// approximately least-recently-used eviction.
#[derive(Debug)]
struct BoundedCache {
    cap: usize,
    young: HashMap<Vec<u8>, Option<usize>>,
    old: HashMap<Vec<u8>, Option<usize>>,
}

impl BoundedCache {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            young: HashMap::new(),
            old: HashMap::new(),
        }
    }

    fn get(&mut self, k: &[u8]) -> Option<Option<usize>> {
        if let Some(v) = self.young.get(k) {
            return Some(*v);
        }
        let v = self.old.remove(k)?;
        self.insert(k.to_vec(), v);
        Some(v)
    }

    fn insert(&mut self, k: Vec<u8>, v: Option<usize>) {
        if self.young.len() >= self.cap {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(k, v);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{os::unix::fs::symlink, path::Path};

    fn whiteout(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        rustix::fs::mknodat(CWD, p, FileType::CharacterDevice, Mode::from_raw_mode(0), 0)
            .expect("mknod 0/0 (needs root)");
    }

    fn set_xattr(p: &Path, name: &str, v: &[u8]) -> bool {
        rustix::fs::setxattr(p, name, v, rustix::fs::XattrFlags::empty()).is_ok()
    }

    struct Layers {
        _tmp: tempfile::TempDir,
        dirs: Vec<PathBuf>,
    }

    impl Layers {
        fn new(n: usize) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let dirs = (1..=n)
                .map(|i| {
                    let d = tmp.path().join(format!("l{i}"));
                    std::fs::create_dir(&d).unwrap();
                    d
                })
                .collect();
            Self { _tmp: tmp, dirs }
        }
        /// Path in layer i (1-based overlay index).
        fn at(&self, i: usize, rel: &str) -> PathBuf {
            self.dirs[i - 1].join(rel)
        }
        fn file(&self, i: usize, rel: &str) {
            let p = self.at(i, rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, rel).unwrap();
        }
        fn dir(&self, i: usize, rel: &str) {
            std::fs::create_dir_all(self.at(i, rel)).unwrap();
        }
        fn stack(&self) -> Vec<Option<PathBuf>> {
            self.dirs.iter().cloned().map(Some).collect()
        }
        fn find(&self, rel: &str) -> Option<usize> {
            find_source(&self.stack(), rel.as_bytes())
        }
    }

    #[test]
    fn topmost_wins() {
        let l = Layers::new(3);
        l.file(3, "etc/a");
        l.file(2, "etc/a");
        l.file(3, "etc/b");
        l.file(1, "x/y/z/deep");
        assert_eq!(l.find("etc/a"), Some(2));
        assert_eq!(l.find("/etc/b"), Some(3));
        assert_eq!(l.find("etc//b"), Some(3));
        assert_eq!(l.find("etc"), Some(2));
        assert_eq!(l.find("x/y/z/deep"), Some(1));
        assert_eq!(l.find("etc/missing"), None);
        assert_eq!(l.find("nope/a"), None);
        assert_eq!(l.find(""), Some(1));
        assert_eq!(l.find("etc/../etc/a"), None);
    }

    #[test]
    fn whiteouts_hide_lower_layers() {
        let l = Layers::new(3);
        l.file(3, "etc/a");
        l.file(3, "etc/sub/f");
        l.file(3, "gone/f");
        l.dir(2, "etc");
        whiteout(&l.at(2, "etc/a"));
        whiteout(&l.at(2, "gone"));
        whiteout(&l.at(1, "etc/sub"));
        assert_eq!(l.find("etc/a"), None);
        // A whiteout on an ancestor hides the whole subtree below it.
        assert_eq!(l.find("gone/f"), None);
        assert_eq!(l.find("gone"), None);
        assert_eq!(l.find("etc/sub/f"), None);
        // Recreated above the whiteout: visible again, from the upper layer.
        l.file(1, "etc/a");
        assert_eq!(l.find("etc/a"), Some(1));
    }

    #[test]
    fn opaque_dirs_hide_deeper_layers() {
        let l = Layers::new(3);
        l.file(3, "opq/old");
        l.file(3, "opq/both");
        l.file(2, "opq/both");
        l.file(2, "opq/new");
        l.file(3, "plain/old");
        l.dir(2, "plain");
        if !set_xattr(&l.at(2, "opq"), "trusted.overlay.opaque", b"y") {
            eprintln!("SKIPPED: trusted.* xattrs not supported here (not root?)");
            return;
        }
        assert_eq!(l.find("opq/old"), None);
        assert_eq!(l.find("opq/both"), Some(2));
        assert_eq!(l.find("opq/new"), Some(2));
        assert_eq!(l.find("plain/old"), Some(3));
        // An opaque ancestor hides deeper layers for the whole subtree.
        l.file(3, "opq/d/e/f");
        assert_eq!(l.find("opq/d/e/f"), None);
        // The userxattr variant.
        l.file(3, "uopq/old");
        l.dir(1, "uopq");
        assert!(set_xattr(&l.at(1, "uopq"), "user.overlay.opaque", b"y"));
        assert_eq!(l.find("uopq/old"), None);
        // "x" is not opaque: it allows xwhiteouts inside.
        l.file(3, "xw/keep");
        l.file(3, "xw/drop");
        l.file(2, "xw/drop");
        assert!(set_xattr(&l.at(2, "xw"), "trusted.overlay.opaque", b"x"));
        std::fs::write(l.at(2, "xw/drop"), "").unwrap();
        assert_eq!(l.find("xw/drop"), Some(2));
        assert!(set_xattr(
            &l.at(2, "xw/drop"),
            "trusted.overlay.whiteout",
            b""
        ));
        assert_eq!(l.find("xw/keep"), Some(3));
        assert_eq!(l.find("xw/drop"), None);
    }

    #[test]
    fn non_directories_end_the_merge() {
        let l = Layers::new(3);
        l.file(3, "a/b/c");
        // A regular file named "a" on top: a/b/c does not exist.
        l.file(1, "a");
        assert_eq!(l.find("a/b/c"), None);
        assert_eq!(l.find("a"), Some(1));
        // A file under a merged dir only stops the merge for that name.
        let l = Layers::new(3);
        l.file(3, "d/x/f");
        l.dir(1, "d/x");
        l.file(2, "d/x");
        assert_eq!(l.find("d/x/f"), None);
    }

    #[test]
    fn symlinks_are_never_followed() {
        let l = Layers::new(2);
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("etc")).unwrap();
        std::fs::write(outside.path().join("etc/shadow"), "x").unwrap();
        // Layer 1 has `lnk -> outside`, layer 2 has a real lnk/etc/shadow.
        symlink(outside.path(), l.at(1, "lnk")).unwrap();
        l.file(2, "lnk/etc/shadow");
        // The symlink is a non-directory on top: nothing below it exists.
        assert_eq!(l.find("lnk/etc/shadow"), None);
        // The symlink itself is found (lstat), even dangling.
        assert_eq!(l.find("lnk"), Some(1));
        symlink("/nonexistent", l.at(2, "dangling")).unwrap();
        assert_eq!(l.find("dangling"), Some(2));
        // A symlink to a dir in layer 2, real dir in layer... not followed either.
        symlink(outside.path(), l.at(2, "only")).unwrap();
        assert_eq!(l.find("only/etc/shadow"), None);
    }

    #[test]
    fn unknown_or_missing_layers_are_empty() {
        let l = Layers::new(2);
        l.file(2, "f");
        let mut stack = l.stack();
        stack.insert(0, None);
        stack.insert(1, Some(PathBuf::from("/nonexistent/ovltrace/layer")));
        assert_eq!(find_source(&stack, b"f"), Some(4));
    }

    #[test]
    fn non_utf8_names() {
        let l = Layers::new(2);
        let name = OsStr::from_bytes(b"caf\xe9");
        std::fs::write(l.dirs[1].join(name), "").unwrap();
        assert_eq!(find_source(&l.stack(), b"caf\xe9"), Some(2));
    }

    #[test]
    fn cache_is_bounded_and_consistent() {
        let l = Layers::new(2);
        l.file(2, "f");
        let mut s = LayerStack::with_cache_entries(l.stack(), 4);
        for i in 0..100 {
            assert_eq!(s.source_index(format!("nope{i}").as_bytes()), None);
            assert_eq!(s.source_index(b"f"), Some(2));
        }
        assert!(s.cache.len() <= 8);
        // Cached: the answer survives the file going away (layers are immutable).
        std::fs::remove_file(l.at(2, "f")).unwrap();
        assert_eq!(s.source_index(b"f"), Some(2));
    }
}
