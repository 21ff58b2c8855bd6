//! Decoding ring-buffer records into events, with length checks: a record
//! that does not match the layout this binary was built with is an error, not
//! a misread.

pub use ovltrace_ebpf::OverlayKey;
use ovltrace_ebpf::{
    CopyUpEvent, EventHeader, EVENT_COPY_UP, FLAG_DATA_COPY, FLAG_PATH_FAULT, FLAG_PATH_TRUNCATED,
    NO_LAYER, PATH_BUF,
};
use serde::Serialize;

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
}

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
    pub cgroup_id: u64,
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
    pub comm: String,
    /// Mount namespace of the writer (inode number; 0 unknown).
    pub mnt_ns: u32,
    /// Where the kernel copied the file from, read from overlay's lower
    /// stack (`None`: this kernel's overlay types are unknown).
    pub source: Option<Source>,
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
    /// Bytes the copy-up had to copy: the data-copy length for regular files,
    /// the target length for symlinks, nothing for directories.
    pub fn bytes(&self) -> u64 {
        match self.kind {
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
    #[error("event says it has {claimed} bytes, this build expects {expected} (record {actual})")]
    SizeMismatch {
        claimed: u32,
        expected: usize,
        actual: usize,
    },
    #[error("path length {0} exceeds the path buffer")]
    PathLength(u32),
}

/// Decodes one ring-buffer record.
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
    if header.size as usize != expected || buf.len() < expected {
        return Err(DecodeError::SizeMismatch {
            claimed: header.size,
            expected,
            actual: buf.len(),
        });
    }
    // SAFETY: as above, for the whole event.
    let ev: CopyUpEvent = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    if ev.path_len as usize > PATH_BUF {
        return Err(DecodeError::PathLength(ev.path_len));
    }
    let data_copy = ev.flags & FLAG_DATA_COPY != 0;
    Ok(CopyUp {
        start_ns: ev.start_ns,
        latency_ns: ev.latency_ns,
        data_ns: data_copy.then_some(ev.data_ns),
        data_len: data_copy.then_some(ev.data_len),
        size: ev.size,
        cgroup_id: ev.cgroup_id,
        tgid: ev.tgid,
        tid: ev.tid,
        overlay: ev.overlay,
        ret: ev.ret,
        kind: FileKind::from_mode(ev.mode),
        path: join_components(&ev.path[..ev.path_len as usize]),
        path_truncated: ev.flags & (FLAG_PATH_TRUNCATED | FLAG_PATH_FAULT) != 0,
        comm: cstr_lossy(&ev.comm),
        mnt_ns: ev.mnt_ns,
        source: (ev.lower_idx != NO_LAYER).then(|| Source {
            layer: ev.lower_idx,
            data_layer: (ev.data_idx != NO_LAYER).then_some(ev.data_idx),
            depth: ev.numlower,
        }),
    })
}

/// Leaf-first NUL-terminated components -> `a/b/c`.
fn join_components(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for part in raw.rsplit(|&b| b == 0).filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    out
}

fn cstr_lossy(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
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
            cgroup_id: 77,
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
            comm: [0; COMM_LEN],
            path: [0; PATH_BUF],
        };
        ev.comm[..2].copy_from_slice(b"sh");
        let mut off = 0;
        for c in path.iter().rev() {
            ev.path[off..off + c.len()].copy_from_slice(c);
            off += c.len() + 1;
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
