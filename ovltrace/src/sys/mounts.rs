//! Overlay mounts from /proc/self/mountinfo.
//!
//! Line layout (proc(5)):
//! `id parent maj:min root mountpoint opts [optional...] - fstype source superopts`.
//! The kernel writes space, tab, newline and backslash in paths (and also commas in
//! mount options) as `\ooo` octal escapes. Everything is handled as bytes: paths can be
//! any byte string.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::Context;
use serde::{Serialize, Serializer};

/// A device number as mountinfo and `stat` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dev {
    pub major: u32,
    pub minor: u32,
}

impl Dev {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// From the kernel-internal `dev_t` (`sb->s_dev`, what eBPF programs read):
    /// 12 bits of major above 20 bits of minor.
    pub const fn from_kernel(v: u32) -> Self {
        Self {
            major: v >> 20,
            minor: v & 0xfffff,
        }
    }

    /// The kernel-internal `dev_t`. Bits that do not fit (major >= 4096,
    /// minor >= 2^20) are dropped, as the kernel's MKDEV does.
    pub const fn to_kernel(self) -> u32 {
        ((self.major & 0xfff) << 20) | (self.minor & 0xfffff)
    }
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device number {0:?}: expected MAJOR:MINOR")]
pub struct ParseDevError(String);

impl FromStr for Dev {
    type Err = ParseDevError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDevError(s.to_string());
        let (maj, min) = s.split_once(':').ok_or_else(err)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(maj) || !digits(min) {
            return Err(err());
        }
        Ok(Dev {
            major: maj.parse().map_err(|_| err())?,
            minor: min.parse().map_err(|_| err())?,
        })
    }
}

impl Serialize for Dev {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Dev {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One overlay mount. Paths are exactly what the kernel shows, decoded; they may be
/// relative (Docker switches to `l/<id>` entries when its options exceed a page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverlayMount {
    /// Mount id (mountinfo field 1).
    pub mount_id: u32,
    pub parent_id: u32,
    /// The overlay superblock's device: joins with `dentry->d_sb->s_dev`.
    pub dev: Dev,
    #[serde(serialize_with = "serialize_path")]
    pub mountpoint: PathBuf,
    #[serde(serialize_with = "serialize_opt_path")]
    pub upperdir: Option<PathBuf>,
    #[serde(serialize_with = "serialize_opt_path")]
    pub workdir: Option<PathBuf>,
    /// Uppermost first: `lowerdirs[i]` is overlay layer index `i + 1`.
    #[serde(serialize_with = "serialize_paths")]
    pub lowerdirs: Vec<PathBuf>,
    /// Data-only lower layers (`datadir+=` or after `::`), below all `lowerdirs`.
    #[serde(serialize_with = "serialize_paths")]
    pub datadirs: Vec<PathBuf>,
    /// The remaining super options (`rw`, `xino=off`, `metacopy=on`, ...), decoded.
    #[serde(serialize_with = "serialize_os_strings")]
    pub options: Vec<OsString>,
}

impl OverlayMount {
    /// Overlay layer index of lowerdir `i` (0-based): the kernel's `ovl_layer.idx`.
    pub fn lower_index(i: usize) -> usize {
        i + 1
    }
}

/// A line that was skipped, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineWarning {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for LineWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mountinfo line {}: {}", self.line, self.reason)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Parsed {
    pub mounts: Vec<OverlayMount>,
    pub warnings: Vec<LineWarning>,
}

pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Reads the overlay mounts of this process's mount namespace; skipped lines are
/// logged as warnings.
pub fn read_overlay_mounts() -> anyhow::Result<Vec<OverlayMount>> {
    read_overlay_mounts_from(Path::new(MOUNTINFO))
}

pub fn read_overlay_mounts_from(path: &Path) -> anyhow::Result<Vec<OverlayMount>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = parse_mountinfo(&data);
    for w in &parsed.warnings {
        log::warn!("{}: {w}", path.display());
    }
    Ok(parsed.mounts)
}

/// Parses mountinfo text, keeping fstype `overlay` lines. Never panics.
pub fn parse_mountinfo(data: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(line) {
            Ok(Some(m)) => out.mounts.push(m),
            Ok(None) => {}
            Err(reason) => out.warnings.push(LineWarning {
                line: i + 1,
                reason,
            }),
        }
    }
    out
}

/// `Ok(None)` for well-formed lines of other filesystems.
fn parse_line(line: &[u8]) -> Result<Option<OverlayMount>, String> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    // The separator is the first "-" after the 6 fixed fields.
    let sep = fields
        .iter()
        .skip(6)
        .position(|f| *f == b"-")
        .map(|p| p + 6)
        .ok_or_else(|| {
            if fields.len() < 6 {
                format!("{} fields, expected at least 10", fields.len())
            } else {
                "no ' - ' separator after the optional fields".to_string()
            }
        })?;
    if fields.len() < sep + 4 {
        return Err(format!(
            "{} fields after the separator, expected 3 (fstype source superopts)",
            fields.len() - sep - 1
        ));
    }
    let fstype = fields[sep + 1];
    if fstype != b"overlay" {
        return Ok(None);
    }
    let num = |f: &[u8], what: &str| -> Result<u32, String> {
        std::str::from_utf8(f)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad {what} {:?}", String::from_utf8_lossy(f)))
    };
    let mount_id = num(fields[0], "mount id")?;
    let parent_id = num(fields[1], "parent id")?;
    let dev: Dev = std::str::from_utf8(fields[2])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "bad device {:?}: expected MAJOR:MINOR",
                String::from_utf8_lossy(fields[2])
            )
        })?;
    let mountpoint = decode_octal(fields[4]);
    if mountpoint.is_empty() {
        return Err("empty mount point".into());
    }
    // Anything past superopts would be a space inside an option: the kernel escapes
    // those, so such a line is not what we think it is.
    if fields.len() > sep + 4 {
        return Err("unexpected fields after the super options".into());
    }
    let mut m = OverlayMount {
        mount_id,
        parent_id,
        dev,
        mountpoint: bytes_to_path(mountpoint),
        upperdir: None,
        workdir: None,
        lowerdirs: Vec::new(),
        datadirs: Vec::new(),
        options: Vec::new(),
    };
    // Options are separated by raw commas; commas inside values are written `\054`.
    for opt in fields[sep + 3].split(|&b| b == b',') {
        if opt.is_empty() {
            continue;
        }
        let (key, value) = match opt.iter().position(|&b| b == b'=') {
            Some(p) => (&opt[..p], Some(decode_octal(&opt[p + 1..]))),
            None => (opt, None),
        };
        match (key, value) {
            (b"lowerdir", Some(v)) => {
                let (lower, data) = split_lowerdir(&v);
                m.lowerdirs.extend(lower.into_iter().map(bytes_to_path));
                m.datadirs.extend(data.into_iter().map(bytes_to_path));
            }
            // New mount API: one path per option, taken literally.
            (b"lowerdir+", Some(v)) => m.lowerdirs.push(bytes_to_path(v)),
            (b"datadir+", Some(v)) => m.datadirs.push(bytes_to_path(v)),
            (b"upperdir", Some(v)) => m.upperdir = Some(bytes_to_path(unescape_backslash(&v))),
            (b"workdir", Some(v)) => m.workdir = Some(bytes_to_path(unescape_backslash(&v))),
            (b"lowerdir" | b"lowerdir+" | b"datadir+" | b"upperdir" | b"workdir", None) => {
                return Err(format!(
                    "option {} without a value",
                    String::from_utf8_lossy(key)
                ));
            }
            _ => m.options.push(OsString::from_vec(decode_octal(opt))),
        }
    }
    if m.lowerdirs.is_empty() {
        return Err("overlay mount without lowerdir".into());
    }
    Ok(Some(m))
}

/// Decodes `\ooo` octal escapes (three digits, value <= 0o377); other backslashes stay.
pub fn decode_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() {
            let d = &s[i + 1..i + 4];
            if d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3' {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Splits a legacy `lowerdir=` value the way overlayfs does: a backslash escapes the
/// next byte (so `\:` is a literal colon), `:` separates layers, and `::` starts the
/// data-only layers (5 .. 6.x kernels with data-only lower layers).
fn split_lowerdir(v: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut lower = Vec::new();
    let mut data = Vec::new();
    let mut in_data = false;
    let mut cur = Vec::new();
    let mut i = 0;
    let mut push = |cur: &mut Vec<u8>, in_data: &mut bool| {
        if cur.is_empty() {
            // An empty entry is the second colon of `::`.
            *in_data = true;
        } else if *in_data {
            data.push(std::mem::take(cur));
        } else {
            lower.push(std::mem::take(cur));
        }
    };
    while i < v.len() {
        match v[i] {
            b'\\' if i + 1 < v.len() => {
                cur.push(v[i + 1]);
                i += 2;
            }
            b':' => {
                push(&mut cur, &mut in_data);
                i += 1;
            }
            b => {
                cur.push(b);
                i += 1;
            }
        }
    }
    if !cur.is_empty() {
        push(&mut cur, &mut in_data);
    }
    (lower, data)
}

/// overlayfs's `ovl_unescape` for upperdir/workdir: a backslash escapes the next byte.
fn unescape_backslash(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' && i + 1 < v.len() {
            i += 1;
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn bytes_to_path(b: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(b))
}

/// Text for a path that came from the kernel or disk: UTF-8 as is, other bytes as `\xNN`.
pub fn path_display(p: &Path) -> String {
    bytes_display(p.as_os_str().as_bytes())
}

/// Valid UTF-8 as is, each invalid byte as `\xNN`.
pub fn bytes_display(mut b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    loop {
        match std::str::from_utf8(b) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (good, rest) = b.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len()).max(1).min(rest.len());
                for byte in &rest[..bad] {
                    out.push_str(&format!("\\x{byte:02x}"));
                }
                b = &rest[bad..];
            }
        }
    }
}

pub fn serialize_path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path_display(p))
}

pub fn serialize_opt_path<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_str(&path_display(p)),
        None => s.serialize_none(),
    }
}

pub fn serialize_paths<S: Serializer>(ps: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ps.iter().map(|p| path_display(p)))
}

fn serialize_os_strings<S: Serializer>(v: &[OsString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|o| bytes_display(OsStr::as_bytes(o))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse1(line: &str) -> OverlayMount {
        let p = parse_mountinfo(line.as_bytes());
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.mounts.len(), 1);
        p.mounts.into_iter().next().unwrap()
    }

    fn pb(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn dev_roundtrip() {
        let d = Dev::from_kernel((254 << 20) | 3);
        assert_eq!(d, Dev::new(254, 3));
        assert_eq!(d.to_kernel(), (254 << 20) | 3);
        assert_eq!(d.to_string(), "254:3");
        assert_eq!("0:41".parse::<Dev>().unwrap(), Dev::new(0, 41));
        assert_eq!(
            Dev::from_kernel(Dev::new(0, 1 << 19).to_kernel()).minor,
            1 << 19
        );
        for bad in [
            "",
            "0",
            "0:",
            ":1",
            "a:b",
            "1:2:3",
            "-1:2",
            "+1:2",
            "99999999999:1",
        ] {
            assert!(bad.parse::<Dev>().is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"254:3\"");
        assert_eq!(
            serde_json::from_str::<Dev>("\"0:41\"").unwrap(),
            Dev::new(0, 41)
        );
    }

    #[test]
    fn docker_absolute() {
        let m = parse1(
            "50 42 0:39 / /var/lib/docker/overlay2/41f0/merged rw,relatime shared:2 - overlay overlay \
             rw,lowerdir=/var/lib/docker/overlay2/l/SUJM:/var/lib/docker/overlay2/l/VSNM,\
             upperdir=/var/lib/docker/overlay2/41f0/diff,workdir=/var/lib/docker/overlay2/41f0/work\n",
        );
        assert_eq!(m.mount_id, 50);
        assert_eq!(m.parent_id, 42);
        assert_eq!(m.dev, Dev::new(0, 39));
        assert_eq!(m.mountpoint, pb("/var/lib/docker/overlay2/41f0/merged"));
        assert_eq!(
            m.lowerdirs,
            vec![
                pb("/var/lib/docker/overlay2/l/SUJM"),
                pb("/var/lib/docker/overlay2/l/VSNM")
            ]
        );
        assert_eq!(m.upperdir, Some(pb("/var/lib/docker/overlay2/41f0/diff")));
        assert_eq!(m.workdir, Some(pb("/var/lib/docker/overlay2/41f0/work")));
        assert!(m.datadirs.is_empty());
        assert_eq!(m.options, vec![OsString::from("rw")]);
    }

    #[test]
    fn relative_lowerdirs_kept_relative() {
        let m = parse1(
            "61 30 0:52 / /data/docker/overlay2/abc/merged rw - overlay overlay \
             rw,lowerdir=l/AAA:l/BBB:l/CCC,upperdir=abc/diff,workdir=abc/work",
        );
        assert_eq!(m.lowerdirs, vec![pb("l/AAA"), pb("l/BBB"), pb("l/CCC")]);
        assert_eq!(m.upperdir, Some(pb("abc/diff")));
        assert!(m.lowerdirs.iter().all(|p| p.is_relative()));
    }

    #[test]
    fn new_mount_api_form() {
        let m = parse1(
            "70 1 0:60 / /mnt/o rw,relatime - overlay none \
             rw,lowerdir+=/l1,lowerdir+=/l\\0542,datadir+=/d1,datadir+=/d2,upperdir=/u,workdir=/w,uuid=on",
        );
        assert_eq!(m.lowerdirs, vec![pb("/l1"), pb("/l,2")]);
        assert_eq!(m.datadirs, vec![pb("/d1"), pb("/d2")]);
        assert_eq!(
            m.options,
            vec![OsString::from("rw"), OsString::from("uuid=on")]
        );
    }

    #[test]
    fn lowerdir_plus_is_literal() {
        // No colon splitting and no backslash unescaping for lowerdir+=.
        let m = parse1("1 1 0:1 / /m rw - overlay none rw,lowerdir+=/a:b\\134:c");
        assert_eq!(m.lowerdirs, vec![pb("/a:b\\:c")]);
    }

    #[test]
    fn legacy_data_only_layers() {
        let m = parse1("1 1 0:1 / /m rw - overlay overlay rw,lowerdir=/l1:/l2::/d1::/d2");
        assert_eq!(m.lowerdirs, vec![pb("/l1"), pb("/l2")]);
        assert_eq!(m.datadirs, vec![pb("/d1"), pb("/d2")]);
    }

    #[test]
    fn escapes() {
        let m = parse1(
            "1 1 0:1 / /mnt/with\\040space\\011tab\\012nl\\134bs rw - overlay overlay \
             rw,lowerdir=/a\\054comma:/b\\040sp:/c\\134:colon:/d,upperdir=/u\\040p,workdir=/w",
        );
        assert_eq!(m.mountpoint, pb("/mnt/with space\ttab\nnl\\bs"));
        assert_eq!(
            m.lowerdirs,
            vec![pb("/a,comma"), pb("/b sp"), pb("/c:colon"), pb("/d")]
        );
        assert_eq!(m.upperdir, Some(pb("/u p")));
    }

    #[test]
    fn escaped_backslash_before_colon() {
        // User string `/a\\:/b` (literal backslash, then separator), shown with `\134`.
        let m = parse1("1 1 0:1 / /m rw - overlay overlay rw,lowerdir=/a\\134\\134:/b");
        assert_eq!(m.lowerdirs, vec![pb("/a\\"), pb("/b")]);
    }

    #[test]
    fn non_octal_backslash_kept() {
        assert_eq!(decode_octal(b"a\\x\\4\\477\\"), b"a\\x\\4\\477\\".to_vec());
        assert_eq!(decode_octal(b"\\101\\0"), b"A\\0".to_vec());
    }

    #[test]
    fn extra_options_and_optional_fields() {
        let m = parse1(
            "88 27 0:77 / /o rw,nosuid shared:5 master:3 propagate_from:1 unbindable - overlay overlay \
             rw,lowerdir=/l,upperdir=/u,workdir=/w,index=on,xino=auto,redirect_dir=on,metacopy=on,\
             volatile,uuid=null,nfs_export=off,userxattr",
        );
        assert_eq!(m.lowerdirs, vec![pb("/l")]);
        let opts: Vec<_> = m.options.iter().map(|o| o.to_str().unwrap()).collect();
        assert_eq!(
            opts,
            [
                "rw",
                "index=on",
                "xino=auto",
                "redirect_dir=on",
                "metacopy=on",
                "volatile",
                "uuid=null",
                "nfs_export=off",
                "userxattr"
            ]
        );
    }

    #[test]
    fn dash_as_optional_field_position() {
        // No optional fields: the separator is the 7th field.
        let m = parse1("5 4 0:9 / /m rw - overlay overlay rw,lowerdir=/l");
        assert_eq!(m.mount_id, 5);
        // A mount point literally named "-" is still field 5, not the separator.
        let m = parse1("5 4 0:9 / - rw - overlay overlay rw,lowerdir=/l");
        assert_eq!(m.mountpoint, pb("-"));
    }

    #[test]
    fn other_filesystems_ignored() {
        let text = "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
                    23 22 0:21 / /proc rw - proc proc rw\n\
                    24 22 0:30 / /x rw - fuse.fuse-overlayfs fuse-overlayfs rw,lowerdir=/a\n";
        let p = parse_mountinfo(text.as_bytes());
        assert!(p.mounts.is_empty());
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn non_utf8_bytes() {
        let mut line =
            b"1 1 0:5 / /mnt/\xff\xfe rw - overlay overlay rw,lowerdir=/l\x80:/m,upperdir=/u"
                .to_vec();
        line.push(b'\n');
        let p = parse_mountinfo(&line);
        assert!(p.warnings.is_empty());
        let m = &p.mounts[0];
        assert_eq!(m.mountpoint.as_os_str().as_bytes(), b"/mnt/\xff\xfe");
        assert_eq!(m.lowerdirs[0].as_os_str().as_bytes(), b"/l\x80");
        assert_eq!(path_display(&m.mountpoint), "/mnt/\\xff\\xfe");
        let json = serde_json::to_value(m).unwrap();
        assert_eq!(json["lowerdirs"][0], "/l\\x80");
        assert_eq!(json["dev"], "0:5");
    }

    #[test]
    fn malformed_lines_warn_and_skip() {
        let text = b"garbage\n\
            1 1 0:5 / /m rw overlay overlay rw,lowerdir=/l\n\
            x 1 0:5 / /m rw - overlay overlay rw,lowerdir=/l\n\
            1 1 05 / /m rw - overlay overlay rw,lowerdir=/l\n\
            1 1 0:5 / /m rw - overlay overlay\n\
            1 1 0:5 / /m rw - overlay overlay rw,upperdir=/u\n\
            1 1 0:5 / /m rw - overlay overlay rw,lowerdir\n\
            1 1 0:5 / /m rw - overlay overlay rw,lowerdir=/l extra\n\
            \n\
            7 1 0:6 / /good rw - overlay overlay rw,lowerdir=/l\n";
        let p = parse_mountinfo(text);
        assert_eq!(p.mounts.len(), 1);
        assert_eq!(p.mounts[0].mountpoint, pb("/good"));
        let lines: Vec<usize> = p.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(p.warnings[3].to_string().contains("bad device"));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // Cheap deterministic fuzz: every truncation and byte flip of a valid line.
        let base = b"50 42 0:39 / /m\\040x rw shared:2 - overlay overlay rw,lowerdir=/a\\134::b:l/c,upperdir=u\\";
        for n in 0..=base.len() {
            parse_mountinfo(&base[..n]);
        }
        let mut seed: u32 = 1;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let mut v = base.to_vec();
            let pos = (seed >> 8) as usize % v.len();
            v[pos] = (seed >> 3) as u8;
            parse_mountinfo(&v);
        }
        for s in ["\\", "\\1", "\\12", ":", "::", "\\:"] {
            split_lowerdir(s.as_bytes());
            decode_octal(s.as_bytes());
            unescape_backslash(s.as_bytes());
        }
    }
}
