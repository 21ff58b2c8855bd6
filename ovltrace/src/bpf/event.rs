//! Decoding ring-buffer records into events, with length checks: a record
//! that does not match the layout this binary was built with is an error, not
//! a misread.

pub use ovltrace_ebpf::OverlayKey;
use ovltrace_ebpf::{
    path_slot, CopyUpEvent, EventHeader, CAUSE_COUNT, CAUSE_LINK, CAUSE_METADATA, CAUSE_PARENT,
    CAUSE_RENAME, CAUSE_TRUNCATE, CAUSE_WRITE, COMM_LEN, EVENT_COPY_UP, FLAG_DATA_COPY,
    FLAG_PATH_FAULT, FLAG_PATH_TRUNCATED, NO_LAYER, PATH_BUF,
};
use serde::Serialize;
use smallvec::SmallVec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Regular,
    Dir,
    Symlink,
    Other,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> Self {
        match mode & 0o170000 {
            0o100000 => FileKind::Regular,
            0o040000 => FileKind::Dir,
            0o120000 => FileKind::Symlink,
            _ => FileKind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Regular => "regular",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
    }

    /// The kind [`FileKind::as_str`] names; anything else is `Other`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "regular" => FileKind::Regular,
            "dir" => FileKind::Dir,
            "symlink" => FileKind::Symlink,
            _ => FileKind::Other,
        }
    }
}

/// Why a copy-up happened, as the kernel saw it (see `CAUSE_*` in the
/// shared types).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, PartialOrd, Ord, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// An open for writing: the data is copied.
    Write,
    /// An open with O_TRUNC: nothing to copy.
    Truncate,
    /// chown, chmod, utimes, truncate(2), xattr.
    Metadata,
    /// A hard link to a lower file.
    Link,
    /// A rename of a lower file or directory.
    Rename,
    /// A directory copied up for a file below it.
    Parent,
    /// The hooks that tell were not attached.
    #[default]
    Unknown,
}

impl Cause {
    /// Every cause, in the order of the kernel's numbering (Unknown last).
    pub const ALL: [Cause; CAUSE_COUNT] = [
        Cause::Write,
        Cause::Truncate,
        Cause::Metadata,
        Cause::Link,
        Cause::Rename,
        Cause::Parent,
        Cause::Unknown,
    ];

    pub fn from_raw(raw: u16) -> Self {
        match raw {
            CAUSE_WRITE => Cause::Write,
            CAUSE_TRUNCATE => Cause::Truncate,
            CAUSE_METADATA => Cause::Metadata,
            CAUSE_LINK => Cause::Link,
            CAUSE_RENAME => Cause::Rename,
            CAUSE_PARENT => Cause::Parent,
            _ => Cause::Unknown,
        }
    }

    /// Short name: JSON value and Prometheus `cause` label (a bounded set).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Write => "write",
            Cause::Truncate => "truncate",
            Cause::Metadata => "metadata",
            Cause::Link => "link",
            Cause::Rename => "rename",
            Cause::Parent => "parent",
            Cause::Unknown => "unknown",
        }
    }

    /// What a reader is told.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::Write => "open for writing",
            Cause::Truncate => "open for writing with truncation (no data copied)",
            Cause::Metadata => "metadata change (chown, chmod, utimes, truncate, xattr)",
            Cause::Link => "hard link",
            Cause::Rename => "rename",
            Cause::Parent => "parent directory copied up for a child",
            Cause::Unknown => "unknown",
        }
    }

    /// Index into per-cause count arrays ([`Cause::ALL`] order).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Copy-up counts by cause, indexed by [`Cause::index`].
pub type CauseCounts = [u64; CAUSE_COUNT];

/// One copied-up dentry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyUp {
    pub start_ns: u64,
    pub latency_ns: u64,
    /// Time in the data-copy function, when it ran.
    pub data_ns: Option<u64>,
    pub data_len: Option<u64>,
    /// Size of the file (the overlay inode mirrors the lower one).
    pub size: u64,
    pub tgid: u32,
    pub tid: u32,
    /// The overlay instance, as the kernel identified it.
    pub overlay: OverlayKey,
    pub ret: i32,
    pub kind: FileKind,
    /// Relative to the overlay root, no leading slash; raw bytes (names are
    /// chosen by containers and need not be UTF-8).
    pub path: Vec<u8>,
    pub path_truncated: bool,
    pub comm: Comm,
    /// Mount namespace of the writer (inode number; 0 unknown).
    pub mnt_ns: u32,
    /// Where the kernel copied the file from, read from overlay's lower
    /// stack (`None`: this kernel's overlay types are unknown).
    pub source: Option<Source>,
    /// Why it was copied up.
    pub cause: Cause,
}

/// A task's command name as the kernel keeps it (at most 15 bytes, NUL
/// padded; not necessarily UTF-8), kept without an allocation per event.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Comm([u8; COMM_LEN]);

impl Comm {
    /// The name's bytes, up to the first NUL.
    pub fn bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.0[..end]
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.bytes()))
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// Truncates to what the kernel keeps (15 bytes).
impl From<&str> for Comm {
    fn from(s: &str) -> Self {
        let mut raw = [0u8; COMM_LEN];
        let n = s.len().min(COMM_LEN - 1);
        raw[..n].copy_from_slice(&s.as_bytes()[..n]);
        Comm(raw)
    }
}

impl From<String> for Comm {
    fn from(s: String) -> Self {
        Comm::from(s.as_str())
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.bytes() == other.as_bytes()
    }
}

/// The lower layers of a copied-up dentry, by overlay index (1 = the first
/// lowerdir, the topmost lower layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The layer the kernel copies up from (the topmost lower entry).
    pub layer: u16,
    /// The layer holding a regular file's data: lower than `layer` for a
    /// metacopy file.
    pub data_layer: Option<u16>,
    /// Entries in the lower stack (a merged directory spans several layers).
    pub depth: u16,
}

impl CopyUp {
    /// Bytes the copy-up had to copy: the data-copy length for regular files
    /// (nothing for a truncating open, which copies no data), the target
    /// length for symlinks, nothing for directories.
    pub fn bytes(&self) -> u64 {
        match self.kind {
            FileKind::Regular if self.cause == Cause::Truncate => 0,
            FileKind::Regular => self.data_len.unwrap_or(self.size),
            FileKind::Symlink => self.size,
            FileKind::Dir | FileKind::Other => 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error(
        "event says it has {claimed} bytes, this build expects {expected} (record {actual}, \
         its fixed fields alone take {FIXED})"
    )]
    SizeMismatch {
        claimed: u32,
        expected: usize,
        actual: usize,
    },
    #[error("path length {0} exceeds the path buffer or the record")]
    PathLength(u32),
}

/// Bytes of a copy-up record before its path buffer.
const FIXED: usize = std::mem::offset_of!(CopyUpEvent, path);

/// The part of a ring-buffer record that [`decode`] reads: its fixed fields
/// and the used part of its path buffer (the whole record if it does not
/// say, or says more than it holds).
pub fn used_part(record: &[u8]) -> &[u8] {
    let at = std::mem::offset_of!(CopyUpEvent, path_len);
    let used = record
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| FIXED + u32::from_le_bytes(b) as usize);
    match used {
        Some(n) if n <= record.len() => &record[..n],
        _ => record,
    }
}

/// Decodes one ring-buffer record, whole or cut to its [`used_part`].
pub fn decode(buf: &[u8]) -> Result<CopyUp, DecodeError> {
    if buf.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short(buf.len()));
    }
    // SAFETY: length checked; read_unaligned copes with any alignment and
    // every bit pattern is a valid EventHeader.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    if header.kind != EVENT_COPY_UP {
        return Err(DecodeError::UnknownKind(header.kind));
    }
    let expected = size_of::<CopyUpEvent>();
    if header.size as usize != expected || buf.len() < FIXED {
        return Err(DecodeError::SizeMismatch {
            claimed: header.size,
            expected,
            actual: buf.len(),
        });
    }
    // Fields are read where they lie (copying the whole event, with its
    // 768-byte path buffer, was a tenth of the ingest time).
    let base = buf.as_ptr();
    macro_rules! field {
        ($f:ident) => {
            // SAFETY: `buf` holds every field before the path (checked
            // above), so the field lies inside it; read_unaligned copes with
            // any alignment, and every bit pattern is a valid value of these
            // plain types.
            unsafe {
                std::ptr::read_unaligned(base.add(std::mem::offset_of!(CopyUpEvent, $f)).cast())
            }
        };
    }
    let path_len: u32 = field!(path_len);
    let path = buf
        .get(FIXED..FIXED + path_len as usize)
        .filter(|_| path_len as usize <= PATH_BUF)
        .ok_or(DecodeError::PathLength(path_len))?;
    let flags: u32 = field!(flags);
    let mode: u32 = field!(mode);
    let comm: [u8; COMM_LEN] = field!(comm);
    let (lower_idx, data_idx, numlower): (u16, u16, u16) =
        (field!(lower_idx), field!(data_idx), field!(numlower));
    let data_copy = flags & FLAG_DATA_COPY != 0;
    Ok(CopyUp {
        start_ns: field!(start_ns),
        latency_ns: field!(latency_ns),
        data_ns: data_copy.then(|| field!(data_ns)),
        data_len: data_copy.then(|| field!(data_len)),
        size: field!(size),
        tgid: field!(tgid),
        tid: field!(tid),
        overlay: field!(overlay),
        ret: field!(ret),
        kind: FileKind::from_mode(mode),
        path: join_components(path),
        path_truncated: flags & (FLAG_PATH_TRUNCATED | FLAG_PATH_FAULT) != 0,
        comm: Comm(comm),
        mnt_ns: field!(mnt_ns),
        source: (lower_idx != NO_LAYER).then(|| Source {
            layer: lower_idx,
            data_layer: (data_idx != NO_LAYER).then_some(data_idx),
            depth: numlower,
        }),
        cause: Cause::from_raw(field!(cause)),
    })
}

/// The kernel's leaf-first components (each ended by a NUL, each starting
/// at a multiple of 8 bytes: see `path_slot`) -> `a/b/c`.
fn join_components(raw: &[u8]) -> Vec<u8> {
    // Runs once per copy-up: component bounds on the stack, one allocation.
    let mut parts: SmallVec<[(usize, usize); 16]> = SmallVec::new();
    let mut len = 0;
    let mut start = 0;
    while start < raw.len() {
        let end = nul_from(raw, start);
        if end > start {
            parts.push((start, end));
            len += end - start + 1;
        }
        start += path_slot(end - start);
    }
    let mut out = Vec::with_capacity(len.saturating_sub(1));
    for &(s, e) in parts.iter().rev() {
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(&raw[s..e]);
    }
    out
}

/// Index of the first NUL at or after `start` (`raw.len()` if none), read a
/// word at a time (components start word-aligned and are short).
fn nul_from(raw: &[u8], start: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let mut i = start;
    while let Some(Ok(word)) = raw.get(i..i + 8).map(<[u8; 8]>::try_from) {
        let w = u64::from_le_bytes(word);
        // The lowest byte flagged is the first zero byte.
        let zeros = w.wrapping_sub(ONES) & !w & HIGHS;
        if zeros != 0 {
            return i + (zeros.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    raw.get(i..)
        .and_then(|tail| tail.iter().position(|&b| b == 0))
        .map_or(raw.len(), |p| i + p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ovltrace_ebpf::COMM_LEN;

    /// Builds the bytes the kernel would write for `path` (given root-first).
    pub fn raw_event(path: &[&[u8]], mode: u32, flags: u32) -> Vec<u8> {
        let mut ev = CopyUpEvent {
            header: EventHeader {
                kind: EVENT_COPY_UP,
                size: size_of::<CopyUpEvent>() as u32,
            },
            start_ns: 1,
            latency_ns: 2500,
            data_ns: 1000,
            data_len: 4096,
            size: 4096,
            overlay: OverlayKey {
                dev: 42,
                upper_dev: 8 << 20 | 1,
                upper_ino: 1234,
            },
            tgid: 10,
            tid: 11,
            ret: 0,
            mode,
            flags,
            path_len: 0,
            components: 0,
            mnt_ns: 4026531841,
            lower_idx: 2,
            data_idx: 3,
            lower_fsid: 0,
            numlower: 2,
            cause: CAUSE_METADATA,
            _pad: [0; 3],
            comm: [0; COMM_LEN],
            path: [0; PATH_BUF],
        };
        ev.comm[..2].copy_from_slice(b"sh");
        let mut off = 0;
        for c in path.iter().rev() {
            ev.path[off..off + c.len()].copy_from_slice(c);
            off += path_slot(c.len());
            ev.components += 1;
        }
        ev.path_len = off as u32;
        // SAFETY: plain-old-data struct viewed as bytes.
        unsafe {
            std::slice::from_raw_parts(
                (&ev as *const CopyUpEvent).cast::<u8>(),
                size_of::<CopyUpEvent>(),
            )
        }
        .to_vec()
    }

    /// Components as the kernel lays them out (leaf first, 8-byte aligned,
    /// the rest of each slot holding whatever the copied words held).
    fn laid_out(root_first: &[&[u8]]) -> Vec<u8> {
        let mut raw = Vec::new();
        for c in root_first.iter().rev() {
            let start = raw.len();
            raw.extend_from_slice(c);
            raw.push(0);
            raw.resize(start + path_slot(c.len()), b'#');
        }
        raw
    }

    #[test]
    fn joins_components_leaf_last() {
        for path in [
            &[][..],
            &[&b"f"[..]],
            &[b"etc", b"app", b"conf.d", b"x.conf"],
            &[b"1234567", b"12345678", b"123456789abcdef0"],
            &[b"d", &[b'n'; 255]],
        ] {
            assert_eq!(
                join_components(&laid_out(path)),
                path.join(&b'/'),
                "{path:?}"
            );
        }
        // What a fault can leave: no final NUL, or only NULs.
        assert_eq!(join_components(b"ab"), b"ab");
        assert_eq!(join_components(b"leaf\0###dir"), b"dir/leaf");
        assert_eq!(join_components(b"\0\0\0"), b"");
        assert_eq!(join_components(b""), b"");
    }

    #[test]
    fn decodes_a_copy_up() {
        let raw = raw_event(
            &[b"etc", b"app", b"conf.d", b"x.conf"],
            0o100644,
            FLAG_DATA_COPY,
        );
        let ev = decode(&raw).unwrap();
        assert_eq!(ev.path, b"etc/app/conf.d/x.conf");
        assert_eq!(ev.kind, FileKind::Regular);
        assert_eq!(ev.data_len, Some(4096));
        assert_eq!(ev.bytes(), 4096);
        assert_eq!(ev.comm, "sh");
        assert_eq!(ev.latency_ns, 2500);
        assert!(!ev.path_truncated);
        assert_eq!(ev.overlay.upper_ino, 1234);
        assert_eq!(
            ev.source,
            Some(Source {
                layer: 2,
                data_layer: Some(3),
                depth: 2
            })
        );
    }

    #[test]
    fn decodes_every_cause() {
        use ovltrace_ebpf::CAUSE_UNKNOWN;
        let off = std::mem::offset_of!(CopyUpEvent, cause);
        for (raw_cause, want) in [
            (CAUSE_UNKNOWN, Cause::Unknown),
            (CAUSE_WRITE, Cause::Write),
            (CAUSE_TRUNCATE, Cause::Truncate),
            (CAUSE_METADATA, Cause::Metadata),
            (CAUSE_LINK, Cause::Link),
            (CAUSE_RENAME, Cause::Rename),
            (CAUSE_PARENT, Cause::Parent),
            (99, Cause::Unknown),
        ] {
            let mut raw = raw_event(&[b"a"], 0o100644, 0);
            raw[off..off + 2].copy_from_slice(&raw_cause.to_le_bytes());
            assert_eq!(decode(&raw).unwrap().cause, want, "raw {raw_cause}");
        }
        assert_eq!(
            decode(&raw_event(&[b"a"], 0o100644, 0)).unwrap().cause,
            Cause::Metadata
        );
        for (i, c) in Cause::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        assert_eq!(Cause::Parent.as_str(), "parent");
        // A truncating open copies no data, whatever the file's size.
        let mut raw = raw_event(&[b"a"], 0o100644, 0);
        raw[off..off + 2].copy_from_slice(&CAUSE_TRUNCATE.to_le_bytes());
        let ev = decode(&raw).unwrap();
        assert_eq!((ev.size, ev.bytes()), (4096, 0));
    }

    #[test]
    fn unknown_layer_is_none() {
        let mut raw = raw_event(&[b"a"], 0o100644, 0);
        let off = std::mem::offset_of!(CopyUpEvent, lower_idx);
        raw[off..off + 2].copy_from_slice(&NO_LAYER.to_le_bytes());
        assert_eq!(decode(&raw).unwrap().source, None);
    }

    #[test]
    fn kinds_and_bytes() {
        let dir = decode(&raw_event(&[b"d"], 0o040755, 0)).unwrap();
        assert_eq!((dir.kind, dir.bytes()), (FileKind::Dir, 0));
        let link = decode(&raw_event(&[b"l"], 0o120777, 0)).unwrap();
        assert_eq!((link.kind, link.bytes()), (FileKind::Symlink, 4096));
        let no_data = decode(&raw_event(&[b"f"], 0o100644, 0)).unwrap();
        assert_eq!(no_data.data_len, None);
        let fifo = decode(&raw_event(&[b"p"], 0o010644, 0)).unwrap();
        assert_eq!(fifo.kind, FileKind::Other);
    }

    #[test]
    fn non_utf8_and_truncation_flag() {
        let ev = decode(&raw_event(
            &[b"\xff\xfe", b"x"],
            0o100644,
            FLAG_PATH_TRUNCATED,
        ))
        .unwrap();
        assert_eq!(ev.path, b"\xff\xfe/x");
        assert!(ev.path_truncated);
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short(3)));
        let mut raw = raw_event(&[b"a"], 0o100644, 0);
        raw[0] = 9;
        assert_eq!(decode(&raw), Err(DecodeError::UnknownKind(9)));
        let raw = raw_event(&[b"a"], 0o100644, 0);
        assert!(matches!(
            decode(&raw[..100]),
            Err(DecodeError::SizeMismatch { .. })
        ));
        let mut raw = raw_event(&[b"a"], 0o100644, 0);
        let off = std::mem::offset_of!(CopyUpEvent, path_len);
        raw[off..off + 4].copy_from_slice(&(PATH_BUF as u32 + 1).to_le_bytes());
        assert_eq!(
            decode(&raw),
            Err(DecodeError::PathLength(PATH_BUF as u32 + 1))
        );
        // A record cut inside the path it claims.
        let raw = raw_event(&[b"abc", b"defgh"], 0o100644, 0);
        let used = used_part(&raw).len();
        assert_eq!(
            decode(&raw[..used - 1]),
            Err(DecodeError::PathLength((used - FIXED) as u32))
        );
    }

    #[test]
    fn used_part_decodes_as_the_whole_record() {
        let raw = raw_event(&[b"usr", b"a-name-of-31-bytes-for-the-test"], 0o100644, 0);
        let used = used_part(&raw);
        assert!(used.len() < raw.len(), "{} of {}", used.len(), raw.len());
        assert_eq!(used.len(), FIXED + path_slot(3) + path_slot(31));
        assert_eq!(decode(used), decode(&raw));
        assert_eq!(
            decode(used).unwrap().path,
            b"usr/a-name-of-31-bytes-for-the-test"
        );
        // What does not say its length, or claims more than it holds, stays whole.
        assert_eq!(used_part(&raw[..10]).len(), 10);
        let mut long = raw.clone();
        let off = std::mem::offset_of!(CopyUpEvent, path_len);
        long[off..off + 4].copy_from_slice(&(PATH_BUF as u32 + 1).to_le_bytes());
        assert_eq!(used_part(&long).len(), long.len());
    }

    #[test]
    fn decode_never_panics_on_garbage() {
        let mut seed = 0x1234_5678_u64;
        for len in [
            0usize,
            7,
            8,
            64,
            size_of::<CopyUpEvent>(),
            size_of::<CopyUpEvent>() + 3,
        ] {
            for _ in 0..50 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        (seed >> 33) as u8
                    })
                    .collect();
                let _ = decode(&buf);
            }
        }
    }
}
