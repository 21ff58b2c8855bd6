//! A writer for the cpio "newc" format, the one the kernel unpacks as an
//! initramfs. Several archives can be concatenated into one initrd; the kernel
//! unpacks them in order, later files replacing earlier ones.
//!
//! Guest paths are normalised to Debian's merged-/usr layout: `bin/x` is
//! stored as `usr/bin/x` (and likewise sbin, lib, lib64), because the base
//! archive makes `/bin` etc. symlinks into /usr, as on the host.

use std::{
    collections::HashSet,
    fs::{self, File},
    io::{self, Read, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
};

use anyhow::{bail, Context, Result};

/// The top-level symlinks of a merged-/usr system.
pub const MERGED_USR: [(&str, &str); 4] = [
    ("bin", "usr/bin"),
    ("sbin", "usr/sbin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
];

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    seen: HashSet<String>,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
            seen: HashSet::new(),
        }
    }

    /// Adds a directory (and any missing parents).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.dir_raw(&path, mode)
    }

    /// Adds a regular file with the given contents.
    pub fn file_bytes(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        if !self.seen.insert(path.clone()) {
            return Ok(());
        }
        self.header(&path, S_IFREG | (mode & 0o7777), data.len() as u64)?;
        self.put(data)?;
        self.pad()
    }

    /// Adds a regular file copied from the host, keeping its permission bits.
    pub fn file_from_host(&mut self, path: &str, host: &Path) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        if !self.seen.insert(path.clone()) {
            return Ok(());
        }
        let mut f = File::open(host).with_context(|| format!("opening {}", host.display()))?;
        let meta = f
            .metadata()
            .with_context(|| format!("stat {}", host.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", host.display());
        }
        let len = meta.len();
        self.header(&path, S_IFREG | (meta.permissions().mode() & 0o7777), len)?;
        let copied = io::copy(&mut (&mut f).take(len), &mut CountingWriter(self))
            .with_context(|| format!("copying {}", host.display()))?;
        if copied != len {
            bail!("{} changed size while being archived", host.display());
        }
        self.pad()
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.symlink_raw(&path, target)
    }

    /// Adds a character device node (e.g. /dev/console, which the kernel
    /// opens for init before devtmpfs is mounted).
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        if !self.seen.insert(path.clone()) {
            return Ok(());
        }
        self.header_dev(&path, S_IFCHR | (mode & 0o7777), 0, (major, minor))?;
        self.pad()
    }

    /// Adds a symbolic link at exactly `path`, without /usr normalisation
    /// (used for the merged-/usr links themselves).
    pub fn symlink_raw(&mut self, path: &str, target: &str) -> Result<()> {
        if !self.seen.insert(path.to_string()) {
            return Ok(());
        }
        self.header(path, S_IFLNK | 0o777, target.len() as u64)?;
        self.put(target.as_bytes())?;
        self.pad()
    }

    /// Copies a host file, directory tree or symlink to `guest`.
    pub fn tree_from_host(&mut self, guest: &str, host: &Path) -> Result<()> {
        let meta =
            fs::symlink_metadata(host).with_context(|| format!("stat {}", host.display()))?;
        if meta.file_type().is_symlink() {
            let target =
                fs::read_link(host).with_context(|| format!("readlink {}", host.display()))?;
            let target = target
                .to_str()
                .with_context(|| format!("non-UTF-8 link target in {}", host.display()))?;
            self.symlink(guest, target)
        } else if meta.is_dir() {
            self.dir(guest, meta.mode())?;
            let mut entries = fs::read_dir(host)
                .with_context(|| format!("listing {}", host.display()))?
                .collect::<io::Result<Vec<_>>>()
                .with_context(|| format!("listing {}", host.display()))?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name();
                let name = name
                    .to_str()
                    .with_context(|| format!("non-UTF-8 name in {}", host.display()))?;
                self.tree_from_host(&format!("{guest}/{name}"), &entry.path())?;
            }
            Ok(())
        } else if meta.is_file() {
            self.file_from_host(guest, host)
        } else {
            bail!(
                "{}: only files, directories and symlinks can be included",
                host.display()
            )
        }
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> Result<W> {
        self.header("TRAILER!!!", 0, 0)?;
        self.pad()?;
        self.out.flush().context("flushing cpio archive")?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            let parent = &path[..end];
            if !self.seen.contains(parent) {
                self.dir_raw(parent, 0o755)?;
            }
            end += 1;
        }
        Ok(())
    }

    fn dir_raw(&mut self, path: &str, mode: u32) -> Result<()> {
        if !self.seen.insert(path.to_string()) {
            return Ok(());
        }
        self.header(path, S_IFDIR | (mode & 0o7777), 0)?;
        self.pad()
    }

    fn header(&mut self, name: &str, mode: u32, size: u64) -> Result<()> {
        self.header_dev(name, mode, size, (0, 0))
    }

    fn header_dev(&mut self, name: &str, mode: u32, size: u64, rdev: (u32, u32)) -> Result<()> {
        let size = u32::try_from(size)
            .with_context(|| format!("{name}: files over 4 GiB do not fit in a cpio archive"))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & 0o170000 == S_IFDIR { 2 } else { 1 };
        let namesize = name.len() + 1;
        let header = format!(
            "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
             {maj:08x}{min:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
            uid = 0,
            gid = 0,
            mtime = 0,
            maj = 0,
            min = 0,
            rmaj = rdev.0,
            rmin = rdev.1,
            check = 0,
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.out.write_all(data).context("writing cpio archive")?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0; 3][..n])
    }
}

struct CountingWriter<'a, W: Write>(&'a mut CpioWriter<W>);

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.out.write(buf)?;
        self.0.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.out.flush()
    }
}

/// Turns a guest path into the archive's form: relative, no `.`/`..`, no
/// empty components, merged-/usr prefixes rewritten.
pub fn normalize(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!("guest path {path:?} must not contain `..`"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        bail!("guest path {path:?} names the root directory");
    }
    let joined = parts.join("/");
    for (link, target) in MERGED_USR {
        if joined == link {
            return Ok(target.to_string());
        }
        if let Some(rest) = joined.strip_prefix(link).and_then(|r| r.strip_prefix('/')) {
            return Ok(format!("{target}/{rest}"));
        }
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("/bin/sh").unwrap(), "usr/bin/sh");
        assert_eq!(normalize("lib64/ld.so").unwrap(), "usr/lib64/ld.so");
        assert_eq!(normalize("/library/x").unwrap(), "library/x");
        assert_eq!(normalize("//usr/./bin/").unwrap(), "usr/bin");
        assert!(normalize("/a/../b").is_err());
        assert!(normalize("/").is_err());
    }

    #[test]
    fn writes_newc_with_parents_and_padding() {
        let mut w = CpioWriter::new(Vec::new());
        w.file_bytes("/etc/x/hello", 0o644, b"hi\n").unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        // Parents come before children, each exactly once.
        let etc = text.find("etc\0").unwrap();
        let etcx = text.find("etc/x\0").unwrap();
        let hello = text.find("etc/x/hello\0").unwrap();
        assert!(etc < etcx && etcx < hello);
        assert!(text.contains("usr/bin/sh\0"));
        assert!(text.contains("TRAILER!!!\0"));
        assert_eq!(&out[..6], b"070701");
        // Mode of the first entry (the `etc` directory).
        assert_eq!(&out[14..22], b"000041ed");
    }

    #[test]
    fn round_trips_through_cpio_tool() {
        if crate::util::on_path("cpio").is_none() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("xtask-cpio-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut w = CpioWriter::new(Vec::new());
        w.file_bytes("a/b/c.txt", 0o600, b"12345").unwrap();
        w.symlink("a/link", "b/c.txt").unwrap();
        let archive = w.finish().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-id", "--quiet"])
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(fs::read(dir.join("a/link")).unwrap(), b"12345");
        let mode = fs::metadata(dir.join("a/b/c.txt")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }
}
