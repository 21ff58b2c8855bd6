//! Types shared by the kernel-side programs and user space.
//!
//! Everything here is `#[repr(C)]` and plain data: the kernel writes it, user space
//! reads the same bytes. Sizes are pinned by compile-time checks below, so a change
//! on one side that the other does not see fails the build instead of corrupting
//! events.
#![no_std]

/// Bytes of the path buffer in a copy-up event.
///
/// Components are stored leaf first, each ended by a NUL; each starts at a
/// multiple of 8 bytes (see [`path_slot`]), so that a short name can be copied
/// as aligned words. The bytes between a NUL and the next component are
/// left as they were (the rest of the copied words). A component is only
/// started while fewer than
/// [`PATH_SOFT_LIMIT`] bytes are used, and a component is at most
/// [`NAME_READ_MAX`] bytes, so the buffer cannot overflow (and the verifier can
/// see that from a mask).
pub const PATH_BUF: usize = PATH_SOFT_LIMIT + NAME_READ_MAX;
/// Offset below which another path component may be started.
pub const PATH_SOFT_LIMIT: usize = 512;
/// Largest component read: NAME_MAX (255) plus its NUL.
pub const NAME_READ_MAX: usize = 256;
/// Bytes a path component of `len` bytes takes in a copy-up event's path:
/// itself and its NUL, rounded up to a multiple of 8.
pub const fn path_slot(len: usize) -> usize {
    (len + 8) & !7
}

/// Bytes of a dentry's inline name (`d_iname`) read as words: every kernel's
/// array holds at least this many (32, 40 from 6.8 on 64-bit).
pub const INLINE_NAME: usize = 32;
/// Deepest path walked before the path is flagged as truncated.
pub const MAX_COMPONENTS: u32 = 32;
/// Log2 latency slots of the in-kernel lookup histogram (slot i counts
/// latencies in [2^i, 2^(i+1)) ns; slot 0 also counts 0 ns).
pub const HIST_SLOTS: usize = 40;
pub const COMM_LEN: usize = 16;

/// Event kinds carried by the ring buffer (first field of every event).
pub const EVENT_COPY_UP: u32 = 1;

/// `CopyUpEvent::flags` bits.
pub const FLAG_PATH_TRUNCATED: u32 = 1 << 0;
/// The data-copy function ran during this copy-up (`data_ns`/`data_len` valid).
pub const FLAG_DATA_COPY: u32 = 1 << 1;
/// A component name could not be read; the path holds what was read before it.
pub const FLAG_PATH_FAULT: u32 = 1 << 2;

/// `CopyUpEvent::cause`: why the copy-up happened. Decided at the entry of
/// `ovl_copy_up_one` from what the same thread recorded at the entry of
/// `ovl_copy_up_flags` (the target dentry and the open flags) and of
/// `ovl_link`/`ovl_rename`.
/// Not known (the hooks that tell were not attached).
pub const CAUSE_UNKNOWN: u16 = 0;
/// An open for writing (O_WRONLY/O_RDWR without O_TRUNC): the data is copied.
pub const CAUSE_WRITE: u16 = 1;
/// An open for writing with O_TRUNC: no data is copied.
pub const CAUSE_TRUNCATE: u16 = 2;
/// A metadata change (chown, chmod, utimes, truncate(2), xattr): flags 0.
pub const CAUSE_METADATA: u16 = 3;
/// A hard link (`ovl_link`).
pub const CAUSE_LINK: u16 = 4;
/// A rename (`ovl_rename`).
pub const CAUSE_RENAME: u16 = 5;
/// A directory copied up because a child below it is copied up.
pub const CAUSE_PARENT: u16 = 6;
/// Number of causes (one past the largest).
pub const CAUSE_COUNT: usize = 7;

/// `CopyUpCause::op` values: the overlay entry point the thread is in.
pub const OP_NONE: u32 = 0;
pub const OP_LINK: u32 = 1;
pub const OP_RENAME: u32 = 2;

/// Counters in the `STATS` per-CPU array. User space sums them over CPUs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    CopyUpEnter = 0,
    CopyUpExit = 1,
    /// Ring buffer full: the event was lost (counted as a drop).
    RingbufFull = 2,
    /// The thread's in-flight slot was held by another thread's call (a
    /// thread id with the same low bits, in flight or never returned) at
    /// entry: that operation is not timed.
    InflightFull = 3,
    /// A copy-up's return was never seen (kretprobe instances exhausted):
    /// noticed when the same thread starts its next copy-up.
    LostReturn = 4,
    LookupEnter = 5,
    LookupExit = 6,
    DataCopyEnter = 7,
    /// Operations skipped because their device is not in the filter set.
    Filtered = 8,
}
pub const STAT_COUNT: u32 = 9;

/// Where overlay keeps a dentry's lower stack (`Offsets::lower_layout`).
/// <= 6.4: `dentry->d_fsdata` is the `struct ovl_entry`.
pub const LAYOUT_DENTRY: u32 = 1;
/// 6.5+: `OVL_I(inode)->oe` is the `struct ovl_entry`.
pub const LAYOUT_INODE: u32 = 2;

/// Kernel struct field offsets, read from the running kernel's BTF by user space
/// and written into the read-only global `OFFSETS` before load (Rust eBPF has no
/// CO-RE relocations). The `ovl_*` ones come from the overlay module's BTF; they
/// are 0 with `lower_layout == 0` when it has none (layers then read as unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    pub dentry_d_inode: u32,
    pub dentry_d_sb: u32,
    /// `struct qstr::name` (inside the dentry's `d_name`).
    pub qstr_name: u32,
    pub sb_s_dev: u32,
    pub inode_i_mode: u32,
    pub inode_i_size: u32,
    pub inode_i_ino: u32,
    pub dentry_d_fsdata: u32,
    pub sb_s_fs_info: u32,
    pub vfsmount_mnt_root: u32,
    pub vfsmount_mnt_sb: u32,
    /// `struct ovl_fs::layers` (array; `layers[0]` is the upper layer).
    pub ovl_fs_layers: u32,
    pub ovl_layer_mnt: u32,
    pub ovl_layer_idx: u32,
    pub ovl_layer_fsid: u32,
    /// `numlower` (<= 6.4) or `__numlower` (6.5+).
    pub ovl_entry_numlower: u32,
    /// `lowerstack` (<= 6.4) or `__lowerstack` (6.5+).
    pub ovl_entry_lowerstack: u32,
    pub ovl_path_layer: u32,
    /// `sizeof(struct ovl_path)`.
    pub ovl_path_size: u32,
    /// `struct ovl_inode::vfs_inode` (6.5+ layout).
    pub ovl_inode_vfs_inode: u32,
    /// `struct ovl_inode::oe` (6.5+ layout).
    pub ovl_inode_oe: u32,
    /// [`LAYOUT_DENTRY`], [`LAYOUT_INODE`], or 0: lower stack unknown.
    pub lower_layout: u32,
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    /// `struct mnt_namespace::ns` plus `struct ns_common::inum`.
    pub mnt_ns_inum: u32,
    /// `struct dentry::d_iname` (`d_shortname` from 6.14), or 0: names are
    /// then always read with the string helper.
    pub dentry_d_iname: u32,
}

/// Which overlay instance an event belongs to, unique while it is mounted
/// and matched by user space to a mount without guessing: the overlay's own
/// device (reused by the next overlay as soon as this one is unmounted) plus
/// its upper directory's device and inode (what `stat upperdir` shows).
/// An overlay without an upper layer has `upper_dev == 0 && upper_ino == 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OverlayKey {
    pub upper_ino: u64,
    /// Overlay superblock `s_dev` (kernel encoding: major << 20 | minor).
    pub dev: u32,
    /// Upper directory's file-system `s_dev` (kernel encoding).
    pub upper_dev: u32,
}

impl OverlayKey {
    /// The key of an overlay known by its device alone (no upper layer, or a
    /// kernel whose overlay types are unknown).
    pub const fn dev_only(dev: u32) -> Self {
        OverlayKey {
            upper_ino: 0,
            dev,
            upper_dev: 0,
        }
    }
}

/// Overlay layer index of "no layer known" in [`CopyUpEvent`].
pub const NO_LAYER: u16 = u16::MAX;

/// Run-time configuration, a read-only global set by user space before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Process id (tgid) of the tracer itself: its own activity is not traced.
    pub tracer_tgid: u32,
    /// 1: only overlays present in the `FILTER` map are traced.
    pub filter_overlays: u32,
    /// Events are submitted without waking the reader (it polls while events
    /// arrive) until this many bytes wait in the ring buffer; 0: wake per event.
    pub wakeup_bytes: u32,
    pub _pad: u32,
}

/// Common first field of every ring-buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    /// Size of the whole event in bytes, as the kernel side knew it.
    pub size: u32,
}

/// One copied-up dentry: sent on return from `ovl_copy_up_one`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CopyUpEvent {
    pub header: EventHeader,
    /// `bpf_ktime_get_ns()` at entry.
    pub start_ns: u64,
    pub latency_ns: u64,
    /// Time spent inside the data-copy function (see `FLAG_DATA_COPY`).
    pub data_ns: u64,
    /// `len` passed to the data-copy function.
    pub data_len: u64,
    /// `i_size` of the overlay inode at entry (mirrors the lower inode, 5.19+).
    pub size: u64,
    pub overlay: OverlayKey,
    pub tgid: u32,
    pub tid: u32,
    pub ret: i32,
    /// `i_mode` of the overlay inode (S_IFMT bits give the kind).
    pub mode: u32,
    pub flags: u32,
    /// Bytes of `path` in use.
    pub path_len: u32,
    /// Number of components stored in `path`.
    pub components: u32,
    /// Mount namespace (inode number) of the writer: the host's for a
    /// runtime setting a container up, the container's own for its processes.
    pub mnt_ns: u32,
    /// Overlay layer index (1 = first lowerdir) of the topmost lower path of
    /// the dentry: the layer the kernel copies up from. [`NO_LAYER`] if unknown.
    pub lower_idx: u16,
    /// Layer holding the data of a regular file: differs from `lower_idx`
    /// for metacopy files (the last entry of the lower stack).
    pub data_idx: u16,
    /// `fsid` of the `lower_idx` layer (0: same file system as the upper).
    pub lower_fsid: u16,
    /// Entries in the dentry's lower stack.
    pub numlower: u16,
    /// Why the copy-up happened (`CAUSE_*`).
    pub cause: u16,
    pub _pad: [u16; 3],
    pub comm: [u8; COMM_LEN],
    /// Leaf-first, NUL-terminated components, relative to the overlay root.
    pub path: [u8; PATH_BUF],
}

/// Per-overlay lookup aggregate (value of the per-CPU `LOOKUPS` hash map, keyed
/// by [`OverlayKey`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LookupStats {
    pub found: u64,
    pub not_found: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub hist: [u64; HIST_SLOTS],
}

impl LookupStats {
    pub const ZERO: LookupStats = LookupStats {
        found: 0,
        not_found: 0,
        errors: 0,
        total_ns: 0,
        hist: [0; HIST_SLOTS],
    };
}

// Size checks: both sides compile these, so a layout change breaks the build.
const _: () = assert!(core::mem::size_of::<Offsets>() == 28 * 4);
const _: () = assert!(core::mem::size_of::<OverlayKey>() == 16);
const _: () = assert!(core::mem::size_of::<Config>() == 16);
const _: () = assert!(core::mem::size_of::<EventHeader>() == 8);
const _: () = assert!(
    core::mem::size_of::<CopyUpEvent>()
        == 8 + 5 * 8 + 16 + 8 * 4 + 4 * 2 + 4 * 2 + COMM_LEN + PATH_BUF
);
const _: () = assert!(core::mem::size_of::<LookupStats>() == 4 * 8 + HIST_SLOTS * 8);
const _: () = assert!(PATH_BUF.is_power_of_two() || PATH_SOFT_LIMIT.is_power_of_two());

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C) plain data without padding holes that
    // matter to the kernel; any bit pattern is a valid value.
    unsafe impl aya::Pod for Offsets {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for LookupStats {}
    unsafe impl aya::Pod for OverlayKey {}
}
