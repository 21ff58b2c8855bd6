//! Reading files under a directory tree that untrusted parties can write into,
//! without ever following a symlink (or `..`) out of it.
//!
//! The root path itself is trusted (it comes from the administrator or the mount
//! table). Below it, every component is opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, or where the kernel or a seccomp filter refuses openat2,
//! by a component-wise walk with `O_NOFOLLOW` that checks each step is a directory.

use std::{
    ffi::OsString,
    io::{self, Read},
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStringExt,
    },
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicU8, Ordering},
};

use rustix::fs::{openat, openat2, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, CWD};

/// Largest metadata file read (config.v2.json, image configs, repositories.json).
pub const MAX_JSON: u64 = 16 << 20;
/// Largest one-line file read (cache-id, diff, size, link...).
pub const MAX_SMALL: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: refusing to follow a symlink or leave {root}")]
    Escape { path: PathBuf, root: PathBuf },
    #[error("{path}: not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path}: larger than {max} bytes, not read")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path}: not a valid relative path below the root")]
    BadPath { path: PathBuf },
}

impl SafeFsError {
    /// True when the file simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SafeFsError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

type Result<T> = std::result::Result<T, SafeFsError>;

const OPENAT2_UNKNOWN: u8 = 0;
const OPENAT2_YES: u8 = 1;
const OPENAT2_NO: u8 = 2;
static OPENAT2: AtomicU8 = AtomicU8::new(OPENAT2_UNKNOWN);

/// An open directory that reads never leave.
#[derive(Debug)]
pub struct SafeRoot {
    fd: OwnedFd,
    path: PathBuf,
    /// The root named in escape errors: a [`SafeRoot::subdir`] reports its parent's.
    limit: PathBuf,
}

impl SafeRoot {
    pub fn open(path: &Path) -> Result<Self> {
        let fd = openat(
            CWD,
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SafeFsError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            limit: path.to_path_buf(),
        })
    }

    /// The directory `rel` below the root, as a root of its own (reads from it walk
    /// fewer components). Errors name the same paths and root as reads through `self`.
    pub fn subdir(&self, rel: &Path) -> Result<Self> {
        let fd = self.open_beneath(rel, OFlags::PATH | OFlags::DIRECTORY)?;
        Ok(Self {
            fd,
            path: self.full(rel),
            limit: self.limit.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    fn io_err(&self, rel: &Path, e: impl Into<io::Error>) -> SafeFsError {
        let e: io::Error = e.into();
        // ELOOP from O_NOFOLLOW/RESOLVE_NO_SYMLINKS, EXDEV from RESOLVE_BENEATH.
        if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::EXDEV) {
            SafeFsError::Escape {
                path: self.full(rel),
                root: self.limit.clone(),
            }
        } else {
            SafeFsError::Io {
                path: self.full(rel),
                source: e,
            }
        }
    }

    /// Opens `rel` (relative, only normal components) below the root.
    fn open_beneath(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd> {
        let comps: Vec<&std::ffi::OsStr> = rel
            .components()
            .map(|c| match c {
                Component::Normal(n) => Ok(n),
                _ => Err(SafeFsError::BadPath {
                    path: self.full(rel),
                }),
            })
            .collect::<Result<_>>()?;
        if comps.is_empty() {
            return Err(SafeFsError::BadPath {
                path: self.full(rel),
            });
        }
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if OPENAT2.load(Ordering::Relaxed) != OPENAT2_NO {
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match openat2(&self.fd, rel, flags, Mode::empty(), how) {
                Ok(fd) => {
                    OPENAT2.store(OPENAT2_YES, Ordering::Relaxed);
                    return Ok(fd);
                }
                // Not implemented, or hidden by a seccomp filter: walk by hand from now on.
                Err(e)
                    if OPENAT2.load(Ordering::Relaxed) == OPENAT2_UNKNOWN
                        && (e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM) =>
                {
                    OPENAT2.store(OPENAT2_NO, Ordering::Relaxed);
                }
                Err(e) => return Err(self.io_err(rel, e)),
            }
        }
        self.walk(rel, &comps, flags)
    }

    fn walk(&self, rel: &Path, comps: &[&std::ffi::OsStr], flags: OFlags) -> Result<OwnedFd> {
        let mut cur: Option<OwnedFd> = None;
        let (last, dirs) = comps.split_last().ok_or_else(|| SafeFsError::BadPath {
            path: self.full(rel),
        })?;
        for comp in dirs {
            let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(self.fd.as_fd());
            let fd = openat(
                base,
                *comp,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                // ENOTDIR is what O_DIRECTORY|O_NOFOLLOW gives for a symlink.
                let link = rustix::fs::statat(base, *comp, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                if link {
                    SafeFsError::Escape {
                        path: self.full(rel),
                        root: self.limit.clone(),
                    }
                } else {
                    self.io_err(rel, e)
                }
            })?;
            // O_PATH|O_NOFOLLOW can hand back the symlink itself: insist on a directory.
            let st = rustix::fs::fstat(&fd).map_err(|e| self.io_err(rel, e))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Err(SafeFsError::Escape {
                    path: self.full(rel),
                    root: self.limit.clone(),
                });
            }
            cur = Some(fd);
        }
        let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(self.fd.as_fd());
        let fd = openat(base, *last, flags, Mode::empty()).map_err(|e| self.io_err(rel, e))?;
        if flags.contains(OFlags::PATH) {
            let st = rustix::fs::fstat(&fd).map_err(|e| self.io_err(rel, e))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                return Err(SafeFsError::Escape {
                    path: self.full(rel),
                    root: self.limit.clone(),
                });
            }
        }
        Ok(fd)
    }

    /// Reads a regular file of at most `max` bytes.
    pub fn read(&self, rel: &Path, max: u64) -> Result<Vec<u8>> {
        // O_NONBLOCK: a FIFO planted in place of a file must not hang us.
        let fd = self.open_beneath(rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.io_err(rel, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(SafeFsError::NotRegular {
                path: self.full(rel),
            });
        }
        let size = st.st_size.max(0) as u64;
        if size > max {
            return Err(SafeFsError::TooLarge {
                path: self.full(rel),
                max,
            });
        }
        // One byte more than fstat's size: a read that then returns exactly `size`
        // bytes has met the end of the file, so no further read is needed.
        let cap = max.saturating_add(1);
        let mut buf = vec![0u8; (size + 1) as usize];
        let mut file = std::fs::File::from(fd);
        let mut n = 0;
        loop {
            if n == buf.len() {
                if n as u64 >= cap {
                    return Err(SafeFsError::TooLarge {
                        path: self.full(rel),
                        max,
                    });
                }
                // The file grew since fstat.
                let grown = (n as u64).saturating_mul(2).clamp(64, cap);
                buf.resize(grown as usize, 0);
            }
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    if n as u64 == size && n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(rel, e)),
            }
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// A small text file, trimmed of surrounding whitespace; must be UTF-8.
    pub fn read_line(&self, rel: &Path) -> Result<String> {
        let b = self.read(rel, MAX_SMALL)?;
        String::from_utf8(b)
            .map(|s| s.trim().to_string())
            .map_err(|_| SafeFsError::Io {
                path: self.full(rel),
                source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"),
            })
    }

    /// Names in a directory (without `.` and `..`).
    pub fn read_dir(&self, rel: &Path) -> Result<Vec<OsString>> {
        let fd = self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let dir = Dir::read_from(&fd).map_err(|e| self.io_err(rel, e))?;
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| self.io_err(rel, e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        Ok(names)
    }

    /// The target of the symlink `rel` (read, never followed).
    pub fn read_link(&self, rel: &Path) -> Result<Vec<u8>> {
        let parent = rel.parent().filter(|p| !p.as_os_str().is_empty());
        let name = rel.file_name().ok_or_else(|| SafeFsError::BadPath {
            path: self.full(rel),
        })?;
        let dirfd;
        let base = match parent {
            Some(p) => {
                dirfd = self.open_beneath(p, OFlags::PATH | OFlags::DIRECTORY)?;
                dirfd.as_fd()
            }
            None => self.fd.as_fd(),
        };
        // EINVAL: it exists but is not a symlink.
        match rustix::fs::readlinkat(base, name, Vec::new()) {
            Ok(target) => Ok(target.into_bytes()),
            Err(rustix::io::Errno::INVAL) => Err(SafeFsError::Io {
                path: self.full(rel),
                source: io::Error::new(io::ErrorKind::InvalidData, "not a symlink"),
            }),
            Err(e) => Err(self.io_err(rel, e)),
        }
    }

    /// The device (`st_dev`) and inode of the directory `rel` below the root,
    /// reached without following any symlink (`rel` itself included).
    pub fn dir_identity(&self, rel: &Path) -> Result<(u64, u64)> {
        let fd = self.open_beneath(rel, OFlags::PATH | OFlags::DIRECTORY)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.io_err(rel, e))?;
        // The field types differ between architectures.
        #[allow(clippy::unnecessary_cast)]
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// Whether `rel` is a directory (not a symlink to one) below the root.
    pub fn is_dir(&self, rel: &Path) -> bool {
        self.open_beneath(rel, OFlags::PATH | OFlags::DIRECTORY)
            .is_ok()
    }
}

/// A name safe to use as one path component of Docker metadata: non-empty, at most
/// 128 bytes of `[A-Za-z0-9_.-]`, not starting with a dot.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// `is_safe_name` for raw bytes.
pub fn is_safe_name_bytes(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok_and(is_safe_name)
}

/// 64 lowercase hex digits.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "secret").unwrap();
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        std::fs::write(root.path().join("a/b/f"), "hello\n").unwrap();
        symlink(outside.path(), root.path().join("a/out")).unwrap();
        symlink(outside.path().join("secret"), root.path().join("a/b/link")).unwrap();
        symlink("../../a/b/f", root.path().join("a/b/rel")).unwrap();
        (root, outside)
    }

    fn both_modes(f: impl Fn()) {
        f();
        // Force the component-wise walk too.
        let prev = OPENAT2.swap(OPENAT2_NO, Ordering::Relaxed);
        f();
        OPENAT2.store(prev, Ordering::Relaxed);
    }

    #[test]
    fn reads_inside() {
        let (root, _o) = tree();
        let r = SafeRoot::open(root.path()).unwrap();
        both_modes(|| {
            assert_eq!(r.read(Path::new("a/b/f"), 100).unwrap(), b"hello\n");
            assert_eq!(r.read_line(Path::new("a/b/f")).unwrap(), "hello");
            let mut names = r.read_dir(Path::new("a")).unwrap();
            names.sort();
            assert_eq!(names, ["b", "out"]);
            assert!(r.is_dir(Path::new("a/b")));
            assert!(!r.is_dir(Path::new("a/out")));
        });
    }

    #[test]
    fn never_follows_symlinks() {
        let (root, _o) = tree();
        let r = SafeRoot::open(root.path()).unwrap();
        both_modes(|| {
            for p in ["a/out/secret", "a/b/link", "a/b/rel", "a/out"] {
                let e = r.read(Path::new(p), 100).unwrap_err();
                assert!(matches!(e, SafeFsError::Escape { .. }), "{p}: {e}");
            }
            assert!(r.read_dir(Path::new("a/out")).is_err());
            for p in ["../x", "/etc/passwd", "a/../a/b/f", "", "."] {
                let e = r.read(Path::new(p), 100).unwrap_err();
                assert!(matches!(e, SafeFsError::BadPath { .. }), "{p}: {e}");
            }
        });
        assert_eq!(r.read_link(Path::new("a/b/rel")).unwrap(), b"../../a/b/f");
        assert!(r.read_link(Path::new("a/out/secret")).is_err());
        assert!(r.read_link(Path::new("a/b/f")).is_err());
    }

    #[test]
    fn subdirs_read_like_their_parent() {
        let (root, _o) = tree();
        let r = SafeRoot::open(root.path()).unwrap();
        both_modes(|| {
            let a = r.subdir(Path::new("a")).unwrap();
            assert_eq!(a.read(Path::new("b/f"), 100).unwrap(), b"hello\n");
            assert_eq!(a.read_link(Path::new("b/rel")).unwrap(), b"../../a/b/f");
            for p in ["out/secret", "b/link", "b/missing", "b"] {
                let e = a.read(Path::new(p), 100).unwrap_err().to_string();
                let parent = r.read(&Path::new("a").join(p), 100).unwrap_err();
                assert_eq!(e, parent.to_string());
            }
            assert!(r.subdir(Path::new("a/out")).is_err());
        });
    }

    #[test]
    fn size_cap_and_special_files() {
        let (root, _o) = tree();
        std::fs::write(root.path().join("big"), vec![b'x'; 101]).unwrap();
        rustix::fs::mknodat(
            CWD,
            root.path().join("fifo").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let r = SafeRoot::open(root.path()).unwrap();
        assert!(matches!(
            r.read(Path::new("big"), 100),
            Err(SafeFsError::TooLarge { .. })
        ));
        assert_eq!(r.read(Path::new("big"), 101).unwrap().len(), 101);
        assert!(matches!(
            r.read(Path::new("fifo"), 100),
            Err(SafeFsError::NotRegular { .. })
        ));
        assert!(matches!(
            r.read(Path::new("a"), 100),
            Err(SafeFsError::NotRegular { .. })
        ));
        assert!(r
            .read(Path::new("missing"), 100)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn names() {
        assert!(is_safe_name("41f0d23fe624-init"));
        assert!(is_safe_name("SUJM5JP2T5HNOYW47D3FKVFTVF"));
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é"] {
            assert!(!is_safe_name(bad), "{bad}");
        }
        assert!(is_hex64(&"a".repeat(64)));
        assert!(!is_hex64(&"A".repeat(64)));
        assert!(!is_hex64("abc"));
    }
}
