//! The VM's initramfs, built as several cpio archives that the kernel unpacks
//! in order from one concatenated initrd:
//!
//! 1. `base` (cached per kernel): busybox and its applet links, /init,
//!    overlay.ko, /etc basics;
//! 2. optional tool parts (cached): docker (dockerd, containerd, runc, ...),
//!    bpftrace, each with the libraries `ldd` lists;
//! 3. the per-run part (never cached): the freshly built ovltrace and its
//!    libraries, the command to run, `--include`d files and Docker images.
//!
//! Cached parts are keyed by a hash of their recipe, which includes the size
//! and mtime of every host file they copy, so an upgraded package or a new
//! init script rebuilds them.

use std::{
    fs::{self, File},
    io::{self, BufWriter, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};

use crate::{cpio::CpioWriter, kernels::Kernel, util};

/// Bump to invalidate every cached part after a format change.
const RECIPE_VERSION: &str = "1";

/// The guest's /init.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// Where per-run settings live in the guest (read by /init).
pub const VM_ETC: &str = "/etc/ovltrace-vm";

/// One thing to put into an archive.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        guest: String,
        mode: u32,
    },
    CharDevice {
        guest: String,
        major: u32,
        minor: u32,
    },
    Symlink {
        guest: String,
        target: String,
    },
    /// A symlink at exactly this archive path (no /usr normalisation).
    RawSymlink {
        path: String,
        target: String,
    },
    Bytes {
        guest: String,
        mode: u32,
        data: Vec<u8>,
    },
    /// A host file (followed if it is a symlink).
    HostFile {
        guest: String,
        host: PathBuf,
    },
    /// A host file, directory tree or symlink, copied as it is.
    HostTree {
        guest: String,
        host: PathBuf,
    },
}

/// A list of entries with a name; cached parts are stored as
/// `<cache>/initramfs/<name>-<hash>.cpio`.
#[derive(Debug, Default)]
pub struct Recipe {
    pub name: String,
    pub entries: Vec<Entry>,
}

impl Recipe {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            entries: Vec::new(),
        }
    }

    pub fn push(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    pub fn bytes(&mut self, guest: &str, mode: u32, data: impl Into<Vec<u8>>) {
        self.push(Entry::Bytes {
            guest: guest.into(),
            mode,
            data: data.into(),
        });
    }

    /// Adds a host executable at the same path in the guest, plus every
    /// library `ldd` lists for it (with the symlinks leading to them).
    pub fn binary_with_libs(&mut self, host: &Path) -> Result<()> {
        let guest = guest_path_of(host)?;
        self.binary_with_libs_at(&guest, host)
    }

    /// Adds a host executable at `guest`, plus its libraries.
    pub fn binary_with_libs_at(&mut self, guest: &str, host: &Path) -> Result<()> {
        self.push(Entry::HostFile {
            guest: guest.into(),
            host: host.into(),
        });
        for lib in ldd(host)? {
            self.host_path_with_links(&lib, 0)?;
        }
        Ok(())
    }

    /// Adds a host file at its own path, reproducing the symlinks that lead
    /// to it (`libfoo.so.1 -> libfoo.so.1.2.3`), after resolving directory
    /// symlinks.
    fn host_path_with_links(&mut self, path: &Path, depth: usize) -> Result<()> {
        if depth > 16 {
            bail!("too many levels of symlinks at {}", path.display());
        }
        let real = canonical_parent(path)?;
        let meta =
            fs::symlink_metadata(&real).with_context(|| format!("stat {}", real.display()))?;
        let guest = path_str(&real)?.to_string();
        if meta.file_type().is_symlink() {
            let target =
                fs::read_link(&real).with_context(|| format!("readlink {}", real.display()))?;
            self.push(Entry::Symlink {
                guest,
                target: path_str(&target)?.to_string(),
            });
            let next = real.parent().unwrap_or(Path::new("/")).join(&target);
            self.host_path_with_links(&next, depth + 1)
        } else {
            self.push(Entry::HostFile { guest, host: real });
            Ok(())
        }
    }

    /// The cache key: the recipe itself plus size and mtime of host files.
    fn key(&self) -> Result<String> {
        let mut h = util::Fnv::default();
        h.update(RECIPE_VERSION.as_bytes());
        h.update(self.name.as_bytes());
        for entry in &self.entries {
            h.update(format!("{entry:?}").as_bytes());
            if let Entry::HostFile { host, .. } | Entry::HostTree { host, .. } = entry {
                let meta =
                    fs::metadata(host).with_context(|| format!("stat {}", host.display()))?;
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                h.update(format!("{} {} {}", meta.len(), mtime, meta.ino()).as_bytes());
            }
        }
        Ok(h.hex())
    }

    /// Writes the archive to `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = CpioWriter::new(BufWriter::with_capacity(1 << 20, file));
        for entry in &self.entries {
            add(&mut w, entry)?;
        }
        w.finish()?
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", out.display()))?;
        Ok(())
    }

    /// Returns the cached archive for this recipe, building it if needed.
    pub fn cached(&self) -> Result<PathBuf> {
        let dir = util::cache_dir()?.join("initramfs");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}-{}.cpio", self.name, self.key()?));
        if path.is_file() {
            // Mark as recently used, so that pruning by others spares it.
            if let Ok(f) = File::options().append(true).open(&path) {
                let _ = f.set_modified(SystemTime::now());
            }
            return Ok(path);
        }
        let tmp = util::tmp_sibling(&path);
        self.write(&tmp)?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        prune_others(&dir, &self.name, &path);
        Ok(path)
    }
}

/// Removes cached archives of the same recipe name that were not used for a
/// day. (Checkouts of other versions may share the cache and use another.)
fn prune_others(dir: &Path, name: &str, keep: &Path) {
    let prefix = format!("{name}-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        // `name-<16 hex>.cpio` only: "base-6.1" must not prune "base-6.12-...".
        let is_same_recipe = n
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".cpio"))
            .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        let unused = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(24 * 3600));
        if is_same_recipe && unused && path != keep {
            let _ = fs::remove_file(&path);
        }
    }
}

fn add<W: Write>(w: &mut CpioWriter<W>, entry: &Entry) -> Result<()> {
    match entry {
        Entry::Dir { guest, mode } => w.dir(guest, *mode),
        Entry::CharDevice {
            guest,
            major,
            minor,
        } => w.char_device(guest, 0o600, *major, *minor),
        Entry::Symlink { guest, target } => w.symlink(guest, target),
        Entry::RawSymlink { path, target } => w.symlink_raw(path, target),
        Entry::Bytes { guest, mode, data } => w.file_bytes(guest, *mode, data),
        Entry::HostFile { guest, host } => w.file_from_host(guest, host),
        Entry::HostTree { guest, host } => w.tree_from_host(guest, host),
    }
}

/// Concatenates archives into one initrd.
pub fn concatenate(parts: &[PathBuf], out: &Path) -> Result<()> {
    let mut dest = BufWriter::with_capacity(
        1 << 20,
        File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    for part in parts {
        let mut src = File::open(part).with_context(|| format!("opening {}", part.display()))?;
        io::copy(&mut src, &mut dest).with_context(|| format!("copying {}", part.display()))?;
    }
    dest.flush()
        .with_context(|| format!("writing {}", out.display()))
}

/// The base part: busybox, /init, overlay.ko and the directory skeleton.
pub fn base(kernel: &Kernel) -> Result<Recipe> {
    let mut r = Recipe::new(format!("base-{}", kernel.release));
    for (link, target) in crate::cpio::MERGED_USR {
        r.push(Entry::Dir {
            guest: target.into(),
            mode: 0o755,
        });
        r.push(Entry::RawSymlink {
            path: link.into(),
            target: target.into(),
        });
    }
    for dir in [
        "dev", "proc", "sys", "tmp", "run", "root", "mnt", "var/lib", "var/log", "etc",
    ] {
        r.push(Entry::Dir {
            guest: dir.into(),
            mode: if dir == "tmp" { 0o1777 } else { 0o755 },
        });
    }
    r.push(Entry::CharDevice {
        guest: "dev/console".into(),
        major: 5,
        minor: 1,
    });
    r.push(Entry::CharDevice {
        guest: "dev/null".into(),
        major: 1,
        minor: 3,
    });

    let busybox = Path::new("/usr/bin/busybox");
    if !busybox.is_file() {
        bail!("{} is missing (package busybox-static)", busybox.display());
    }
    r.push(Entry::HostFile {
        guest: "usr/bin/busybox".into(),
        host: busybox.into(),
    });
    let applets = util::output(Command::new(busybox).arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if crate::cpio::normalize(applet)? != "usr/bin/busybox" {
            r.push(Entry::Symlink {
                guest: applet.into(),
                target: "/usr/bin/busybox".into(),
            });
        }
    }

    r.push(Entry::HostFile {
        guest: format!(
            "lib/modules/{}/kernel/fs/overlayfs/overlay.ko",
            kernel.release
        ),
        host: kernel.overlay_ko.clone(),
    });
    r.bytes("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n");
    r.bytes("etc/group", 0o644, "root:x:0:\ndocker:x:999:\n");
    r.bytes("etc/hostname", 0o644, "ovltrace-vm\n");
    r.bytes("init", 0o755, INIT_SCRIPT);
    Ok(r)
}

/// Docker's daemons and CLI from Debian's docker.io (and the containerd, runc
/// and tini packages it pulls in). Host paths under /usr/local are ignored so
/// that a differently installed client cannot sneak in.
pub fn docker() -> Result<Recipe> {
    let mut r = Recipe::new("docker");
    for name in [
        "dockerd",
        "docker",
        "docker-init",
        "containerd",
        "containerd-shim-runc-v2",
        "runc",
    ] {
        let host = find_system_binary(name).with_context(|| {
            format!("{name} not found in /usr/sbin or /usr/bin (package docker.io)")
        })?;
        r.binary_with_libs(&host)?;
    }
    Ok(r)
}

/// Standalone containerd from Debian's containerd package: the daemon, its
/// runc shim, runc and ctr.
pub fn containerd() -> Result<Recipe> {
    let mut r = Recipe::new("containerd");
    for name in ["containerd", "containerd-shim-runc-v2", "runc", "ctr"] {
        let host = find_system_binary(name).with_context(|| {
            format!("{name} not found in /usr/sbin or /usr/bin (package containerd)")
        })?;
        r.binary_with_libs(&host)?;
    }
    Ok(r)
}

/// Podman from Debian's podman package: podman, conmon, runc, and
/// containers-common's policy.json, containers.conf and seccomp.json.
pub fn podman() -> Result<Recipe> {
    let mut r = Recipe::new("podman");
    for name in ["podman", "conmon", "runc"] {
        let host = find_system_binary(name).with_context(|| {
            format!("{name} not found in /usr/sbin or /usr/bin (package podman)")
        })?;
        r.binary_with_libs(&host)?;
    }
    for file in [
        "/etc/containers/policy.json",
        "/usr/share/containers/containers.conf",
        "/usr/share/containers/seccomp.json",
    ] {
        let host = Path::new(file);
        if !host.is_file() {
            bail!("{file} is missing (package golang-github-containers-common)");
        }
        r.push(Entry::HostFile {
            guest: file.trim_start_matches('/').into(),
            host: host.into(),
        });
    }
    Ok(r)
}

/// bpftrace and its libraries.
pub fn bpftrace() -> Result<Recipe> {
    let mut r = Recipe::new("bpftrace");
    let host = find_system_binary("bpftrace")
        .context("bpftrace not found in /usr/sbin or /usr/bin (package bpftrace)")?;
    r.binary_with_libs(&host)?;
    Ok(r)
}

fn find_system_binary(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The absolute paths of the libraries (and dynamic loader) `ldd` lists.
pub fn ldd(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = util::raw_output(Command::new("ldd").arg(binary))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Static binaries: "not a dynamic executable" (exit 1).
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", binary.display(), stderr.trim());
    }
    parse_ldd(&stdout).with_context(|| format!("ldd {}", binary.display()))
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("statically linked") || line.is_empty() {
            continue;
        }
        if line.contains("not found") {
            bail!("missing library: {line}");
        }
        let candidate = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = candidate.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// `path` with its parent directory canonicalised (the file itself may be a
/// symlink and stays one).
fn canonical_parent(path: &Path) -> Result<PathBuf> {
    let parent = path.parent().context("path without parent")?;
    let name = path.file_name().context("path without file name")?;
    let parent =
        fs::canonicalize(parent).with_context(|| format!("resolving {}", parent.display()))?;
    Ok(parent.join(name))
}

fn guest_path_of(host: &Path) -> Result<String> {
    Ok(path_str(&canonical_parent(host)?)?.to_string())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("non-UTF-8 path {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }

    #[test]
    fn library_symlinks_are_reproduced() {
        let mut r = Recipe::new("t");
        // On merged-/usr hosts /lib64 is a symlink; the loader is a symlink too.
        r.host_path_with_links(Path::new("/lib64/ld-linux-x86-64.so.2"), 0)
            .unwrap();
        assert!(r
            .entries
            .iter()
            .any(|e| matches!(e, Entry::HostFile { .. })));
    }
}
