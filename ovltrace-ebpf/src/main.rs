//! Kernel-side programs: overlayfs copy-up and lookup, as kprobes or fentry.
//!
//! Each hook is a thin wrapper around a shared helper, so the kprobe and the
//! fentry flavours of one hook cannot drift apart:
//! - `ovl_copy_up_flags` entry: a copy-up request starts (the clock, the
//!   target and the open flags, which give the cause);
//! - `ovl_copy_up_one` exit: one `CopyUpEvent` per copied-up dentry, read
//!   from the dentry there (with kprobes, whose return probe does not see
//!   the arguments, an entry probe keeps the dentry);
//! - the data-copy function (`ovl_copy_up_file`, or `ovl_copy_up_data` on
//!   kernels without it) entry/exit: time and length of the data copy, folded
//!   into the copy-up in flight on the same thread;
//! - `ovl_lookup` entry/exit: aggregated in-kernel per overlay instance;
//! - `ovl_link`/`ovl_rename` entry/exit: the cause of the copy-ups inside.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_comm as bpf_get_current_comm_raw, bpf_get_current_task,
            bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_kernel_str,
        },
    },
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext,
};
use aya_log_ebpf::{debug, warn};
use ovltrace_ebpf::{
    path_slot, Config, CopyUpEvent, EventHeader, LookupStats, Offsets, OverlayKey, Stat,
    CAUSE_LINK, CAUSE_METADATA, CAUSE_PARENT, CAUSE_RENAME, CAUSE_TRUNCATE, CAUSE_UNKNOWN,
    CAUSE_WRITE, COMM_LEN, EVENT_COPY_UP, FLAG_DATA_COPY, FLAG_PATH_FAULT, FLAG_PATH_TRUNCATED,
    HIST_SLOTS, INLINE_NAME, LAYOUT_DENTRY, LAYOUT_INODE, MAX_COMPONENTS, NAME_READ_MAX, NO_LAYER,
    OP_LINK, OP_NONE, OP_RENAME, PATH_SOFT_LIMIT, STAT_COUNT,
};

/// Struct offsets for the running kernel, written by user space before load.
#[no_mangle]
static OFFSETS: Offsets = Offsets {
    dentry_d_parent: 0,
    dentry_d_name: 0,
    dentry_d_inode: 0,
    dentry_d_sb: 0,
    qstr_name: 0,
    sb_s_dev: 0,
    inode_i_mode: 0,
    inode_i_size: 0,
    inode_i_ino: 0,
    dentry_d_fsdata: 0,
    sb_s_fs_info: 0,
    vfsmount_mnt_root: 0,
    vfsmount_mnt_sb: 0,
    ovl_fs_layers: 0,
    ovl_layer_mnt: 0,
    ovl_layer_idx: 0,
    ovl_layer_fsid: 0,
    ovl_entry_numlower: 0,
    ovl_entry_lowerstack: 0,
    ovl_path_layer: 0,
    ovl_path_size: 0,
    ovl_inode_vfs_inode: 0,
    ovl_inode_oe: 0,
    lower_layout: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    dentry_d_iname: 0,
};

#[no_mangle]
static CONFIG: Config = Config {
    tracer_tgid: 0,
    filter_overlays: 0,
    wakeup_bytes: 0,
    _pad: 0,
};

/// Copy-up events; user space resizes it (`--ring-buffer-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

// Calls in flight, per thread: arrays indexed by the low bits of the thread
// id, each slot tagged with the thread id that owns it. An array lookup is
// inlined by the verifier (a few instructions); a hash update, lookup and
// delete per call cost about a thousand instructions under TCG. Two threads
// whose ids share the low bits and that are in the same kind of call at once
// collide: one of the two calls is not timed and is counted
// (`InflightFull`), never attributed to the other thread.

/// Slots of the per-thread arrays (a power of two).
const SLOTS: u32 = 16384;

#[inline(always)]
fn slot_of(tid: u32) -> u32 {
    tid & (SLOTS - 1)
}

/// The copy-up request each thread is in, per thread slot (see [`Copying`]).
#[map]
static COPYING: Array<Copying> = Array::with_max_entries(SLOTS, 0);

/// `[0] == 1` once the `ovl_copy_up_flags` entry hook is attached: the clock
/// of a copy-up then starts there (see [`Copying::start_ns`]); otherwise at
/// `ovl_copy_up_one` entry.
#[map]
static CLOCK_AT_FLAGS: Array<u32> = Array::with_max_entries(1, 0);

/// Lookup in flight, per thread slot (`start_ns == 0`: free).
#[map]
static LOOKUP_START: Array<LookupStart> = Array::with_max_entries(SLOTS, 0);

/// Lookup aggregates per overlay instance.
#[map]
static LOOKUPS: PerCpuHashMap<OverlayKey, LookupStats> = PerCpuHashMap::with_max_entries(4096, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Overlay identities by superblock address. Reading one takes ten probe
/// reads (sb, ovl_fs, its upper mount, ...); with this, an event on a known
/// overlay takes one hash lookup. An entry is removed when its superblock is
/// shut down (`generic_shutdown_super`), before the memory can be reused by
/// the next overlay, so a stale identity is never returned.
#[map]
static OVERLAYS: HashMap<u64, OverlayKey> = HashMap::with_max_entries(4096, 0);

/// `[0] == 1` once the shutdown hook is attached: only then is `OVERLAYS` used.
#[map]
static CACHE_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Overlays to trace when `CONFIG.filter_overlays` is set (`--container`).
#[map]
static FILTER: HashMap<OverlayKey, u8> = HashMap::with_max_entries(4096, 0);

/// Per-CPU copy of the last overlay identity found, valid while
/// `SB_GEN[0]` still has the value it was filled under: an identity then
/// costs two inlined array lookups instead of a hash lookup.
#[map]
static OVL_CACHE: PerCpuArray<OvlCache> = PerCpuArray::with_max_entries(1, 0);

/// Bumped by every superblock shutdown: invalidates all `OVL_CACHE` copies.
#[map]
static SB_GEN: Array<u64> = Array::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct OvlCache {
    sb: u64,
    gen: u64,
    key: OverlayKey,
}

/// What a thread is copying up and why. Written at the entry of
/// `ovl_copy_up_flags` (clock, target, open flags), of `ovl_link` /
/// `ovl_rename` (op), by the data-copy probes, and (kprobes) at
/// `ovl_copy_up_one` entry (its dentry); read and reset at `ovl_copy_up_one`
/// exit. fexit sees the arguments, so with fentry nothing runs at
/// `ovl_copy_up_one` entry.
#[repr(C)]
#[derive(Clone, Copy)]
struct Copying {
    /// Thread id owning the slot.
    tid: u32,
    /// `OP_*`: inside `ovl_link` or `ovl_rename`.
    op: u32,
    /// The dentry `ovl_copy_up_flags` was asked to copy up (0: not seen).
    target: u64,
    /// Its `flags` argument: the open flags, 0 from `ovl_copy_up`.
    flags: u32,
    /// `FLAG_DATA_COPY` once the data-copy function returned.
    event_flags: u32,
    /// Start of the thread's next `ovl_copy_up_one` (0: none): the entry of
    /// `ovl_copy_up_flags`, then the exit of the previous `ovl_copy_up_one`,
    /// since that function's loop copies the missing ancestors one by one
    /// before the target (it is overlay's only caller of
    /// `ovl_copy_up_one`, on every kernel so far).
    start_ns: u64,
    /// kprobes: the dentry of the `ovl_copy_up_one` in flight (0: none).
    dentry: u64,
    data_start_ns: u64,
    data_ns: u64,
    data_len: u64,
}

/// Starts a request in slot `p`. Written field by field with volatile
/// stores, like every run of zero stores on a hot path: LLVM merges such runs
/// into a call to the BPF target's memset, which stores a byte at a time
/// (about five instructions per byte).
///
/// # Safety
/// `p` must point to a `COPYING` value.
#[inline(always)]
unsafe fn begin(p: *mut Copying, tid: u32, op: u32, target: u64, flags: u32, start_ns: u64) {
    // SAFETY: caller guarantees `p`.
    unsafe {
        write_volatile(&mut (*p).tid, tid);
        write_volatile(&mut (*p).op, op);
        write_volatile(&mut (*p).target, target);
        write_volatile(&mut (*p).flags, flags);
        write_volatile(&mut (*p).start_ns, start_ns);
        clear_copy(p);
    }
}

/// Forgets the copy-up in flight in slot `p` (not the request).
///
/// # Safety
/// As for [`begin`].
#[inline(always)]
unsafe fn clear_copy(p: *mut Copying) {
    // SAFETY: caller guarantees `p`.
    unsafe {
        write_volatile(&mut (*p).event_flags, 0);
        write_volatile(&mut (*p).dentry, 0);
        write_volatile(&mut (*p).data_start_ns, 0);
        write_volatile(&mut (*p).data_ns, 0);
        write_volatile(&mut (*p).data_len, 0);
    }
}

/// x86-64 and arm64 values (asm-generic).
const O_ACCMODE: u32 = 0o3;
const O_TRUNC: u32 = 0o1000;

/// Where a copied-up dentry comes from, read from overlay's lower stack.
#[repr(C)]
#[derive(Clone, Copy)]
struct Lower {
    idx: u16,
    data_idx: u16,
    fsid: u16,
    numlower: u16,
}

const NO_LOWER: Lower = Lower {
    idx: NO_LAYER,
    data_idx: NO_LAYER,
    fsid: 0,
    numlower: 0,
};

#[repr(C)]
#[derive(Clone, Copy)]
struct LookupStart {
    tid: u32,
    _pad: u32,
    /// Entry time; 0: the slot is free.
    start_ns: u64,
    dentry: u64,
    overlay: OverlayKey,
}

#[inline(always)]
fn config() -> Config {
    // SAFETY: plain read of a global; volatile keeps the loader's value from
    // being constant-folded to the compile-time default.
    unsafe { read_volatile(&CONFIG) }
}

/// One field of `OFFSETS`. Read one at a time where needed (copying the
/// whole struct to the stack costs a load and a store per field per call).
/// The global is a frozen read-only map, so the verifier knows each value
/// and drops the branches a kernel's layout cannot take.
macro_rules! off {
    ($f:ident) => {
        // SAFETY: plain read of a global; volatile keeps the loader's value
        // from being constant-folded to the compile-time default.
        unsafe { read_volatile(&OFFSETS.$f) }
    };
}

#[inline(always)]
fn count(stat: Stat) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Reads a `T` of kernel memory at `addr` (one helper call).
#[inline(always)]
fn read<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; bad reads return Err.
    unsafe { bpf_probe_read_kernel(addr as *const T).ok() }
}

/// Reads a kernel pointer-sized field at `base + off`.
#[inline(always)]
fn read_u64(base: u64, off: u32) -> Option<u64> {
    read(base + off as u64)
}

#[inline(always)]
fn read_u32(base: u64, off: u32) -> Option<u32> {
    read(base + off as u64)
}

#[inline(always)]
fn read_u16(base: u64, off: u32) -> Option<u16> {
    read(base + off as u64)
}

/// How the programs read the fields of the traced function's own arguments
/// (the dentry, and what hangs directly off it: its inode, superblock,
/// parent and name). fentry/fexit programs get these as typed (BTF)
/// pointers, which the verifier lets them dereference directly: a load
/// guarded by the exception table (a fault reads 0) instead of a helper
/// call. kprobes get plain numbers and read through
/// `bpf_probe_read_kernel`. Everything further away (overlay's own
/// structures) is read with the helper in both flavours.
trait Mem {
    /// The u64 at `base + off`, `base` being a typed pointer under `Btf`.
    fn u64_at(base: u64, off: u32) -> Option<u64>;
    fn u16_at(base: u64, off: u32) -> Option<u16>;
    fn u32_at(base: u64, off: u32) -> Option<u32>;
    /// `d_parent` and `d_name.name` of a dentry.
    fn parent_and_name(d: u64, parent_off: u32, name_off: u32) -> Option<(u64, u64)>;
    /// The name of dentry `d` as words, with its length, when the dentry
    /// keeps it inline (`name` points into `d_iname`) and this flavour reads
    /// it cheaply; `None`: read it with the string helper.
    fn inline_name(d: u64, name: u64) -> Option<([u64; INLINE_NAME / 8], usize)>;
    /// The current task, as a pointer this flavour can read fields through.
    fn current_task() -> u64;
}

/// kprobe flavour: `bpf_probe_read_kernel`.
struct Probe;
/// fentry/fexit flavour: direct loads through BTF pointers.
struct Btf;

impl Mem for Probe {
    #[inline(always)]
    fn u64_at(base: u64, off: u32) -> Option<u64> {
        read_u64(base, off)
    }
    #[inline(always)]
    fn u16_at(base: u64, off: u32) -> Option<u16> {
        read_u16(base, off)
    }
    #[inline(always)]
    fn u32_at(base: u64, off: u32) -> Option<u32> {
        read_u32(base, off)
    }
    #[inline(always)]
    fn parent_and_name(d: u64, parent_off: u32, name_off: u32) -> Option<(u64, u64)> {
        // `d_parent` is followed by `d_name` (hash_len, then name) on every
        // kernel so far: one read gets both.
        if name_off == parent_off + 16 {
            read::<[u64; 3]>(d + parent_off as u64).map(|w| (w[0], w[2]))
        } else {
            Some((read_u64(d, parent_off)?, read_u64(d, name_off)?))
        }
    }
    #[inline(always)]
    fn current_task() -> u64 {
        // SAFETY: helper without arguments.
        unsafe { bpf_get_current_task() }
    }
    #[inline(always)]
    fn inline_name(_d: u64, _name: u64) -> Option<([u64; INLINE_NAME / 8], usize)> {
        None
    }
}

impl Mem for Btf {
    #[inline(always)]
    fn u64_at(base: u64, off: u32) -> Option<u64> {
        // SAFETY: `base` is a BTF pointer (the verifier checks the field at
        // this offset against the kernel's types and guards the load).
        Some(unsafe { read_volatile((base + off as u64) as *const u64) })
    }
    #[inline(always)]
    fn u16_at(base: u64, off: u32) -> Option<u16> {
        // SAFETY: as above.
        Some(unsafe { read_volatile((base + off as u64) as *const u16) })
    }
    #[inline(always)]
    fn u32_at(base: u64, off: u32) -> Option<u32> {
        // SAFETY: as above.
        Some(unsafe { read_volatile((base + off as u64) as *const u32) })
    }
    #[inline(always)]
    fn parent_and_name(d: u64, parent_off: u32, name_off: u32) -> Option<(u64, u64)> {
        Some((Self::u64_at(d, parent_off)?, Self::u64_at(d, name_off)?))
    }
    #[inline(always)]
    fn current_task() -> u64 {
        // SAFETY: helper without arguments; a BTF pointer.
        unsafe { bpf_get_current_task_btf() as u64 }
    }
    #[inline(always)]
    fn inline_name(d: u64, name: u64) -> Option<([u64; INLINE_NAME / 8], usize)> {
        let at = off!(dentry_d_iname);
        if at == 0 || name != d + at as u64 {
            return None;
        }
        // qstr's `len` follows the u32 `hash` (little-endian; 6.1's verifier
        // refuses a u64 load of `hash_len`, a union with them).
        let len = Self::u32_at(d, off!(dentry_d_name) + 4)? as usize;
        if len >= INLINE_NAME {
            return None;
        }
        // Loads inside the dentry's own array, which the verifier allows,
        // through an opaque copy of `d`: knowing it equal, LLVM would
        // otherwise load through `name`, a plain number to the verifier.
        // SAFETY: a read of a local.
        let d = unsafe { read_volatile(&d) };
        Some((
            [
                Self::u64_at(d, at)?,
                Self::u64_at(d, at + 8)?,
                Self::u64_at(d, at + 16)?,
                Self::u64_at(d, at + 24)?,
            ],
            len,
        ))
    }
}

/// The overlay instance `dentry` belongs to. Without overlay's BTF only the
/// device is known.
#[inline(always)]
fn overlay_of<M: Mem>(dentry: u64) -> OverlayKey {
    let Some(sb) = M::u64_at(dentry, off!(dentry_d_sb)).filter(|&sb| sb != 0) else {
        return OverlayKey::default();
    };
    if !CACHE_ON.get(0).is_some_and(|&on| on == 1) {
        return read_overlay_key(sb);
    }
    // The generation is read before the hash: a shutdown removes the hash
    // entry first and bumps the generation after, so a copy filled from an
    // entry that is going away carries the old generation.
    let gen = SB_GEN.get(0).copied().unwrap_or(0);
    let cached = OVL_CACHE.get_ptr_mut(0);
    if let Some(c) = cached {
        // SAFETY: per-CPU value, only this CPU touches it.
        unsafe {
            if (*c).sb == sb && (*c).gen == gen {
                return (*c).key;
            }
        }
    }
    // SAFETY: the value is copied out at once.
    let key = match unsafe { OVERLAYS.get(&sb) } {
        Some(key) => *key,
        None => {
            let key = read_overlay_key(sb);
            if key.upper_ino != 0 {
                // Full: the next event reads the identity again.
                let _ = OVERLAYS.insert(&sb, &key, 0);
            }
            key
        }
    };
    if key.upper_ino != 0 {
        if let Some(c) = cached {
            // SAFETY: as above.
            unsafe {
                *c = OvlCache { sb, gen, key };
            }
        }
    }
    key
}

#[inline(always)]
fn read_overlay_key(sb: u64) -> OverlayKey {
    let mut key = OverlayKey {
        dev: read_u32(sb, off!(sb_s_dev)).unwrap_or(0),
        ..OverlayKey::default()
    };
    if off!(lower_layout) == 0 {
        return key;
    }
    // sb->s_fs_info is the ovl_fs; layers[0].mnt the private clone of the
    // upper directory's mount (NULL without upper), whose root is upperdir.
    let Some(mnt) = read_u64(sb, off!(sb_s_fs_info))
        .and_then(|ofs| read_u64(ofs, off!(ovl_fs_layers)))
        .and_then(|layers| read_u64(layers, off!(ovl_layer_mnt)))
        .filter(|&m| m != 0)
    else {
        return key;
    };
    if let Some(ino) = read_u64(mnt, off!(vfsmount_mnt_root))
        .and_then(|root| read_u64(root, off!(dentry_d_inode)))
        .and_then(|inode| read_u64(inode, off!(inode_i_ino)))
    {
        key.upper_ino = ino;
    }
    if let Some(dev) =
        read_u64(mnt, off!(vfsmount_mnt_sb)).and_then(|usb| read_u32(usb, off!(sb_s_dev)))
    {
        key.upper_dev = dev;
    }
    key
}

/// Deepest lower stack read (overlay's own limit, OVL_MAX_STACK, is 500).
const MAX_STACK: u32 = 500;

/// The lower stack of a dentry being copied up: its first entry is the layer
/// the kernel copies from; for a regular file the last entry holds the data
/// (a metacopy lower file has its data further down).
#[inline(always)]
fn lower_of(dentry: u64, inode: u64) -> Lower {
    let oe = match off!(lower_layout) {
        LAYOUT_DENTRY => read_u64(dentry, off!(dentry_d_fsdata)),
        // OVL_I(inode)->oe: the ovl_inode embeds the VFS inode.
        LAYOUT_INODE if inode != 0 => read_u64(
            inode.wrapping_sub(off!(ovl_inode_vfs_inode) as u64),
            off!(ovl_inode_oe),
        ),
        _ => None,
    };
    let Some(oe) = oe.filter(|&p| p != 0) else {
        return NO_LOWER;
    };
    let numlower_off = off!(ovl_entry_numlower);
    let stack_off = off!(ovl_entry_lowerstack);
    let path_layer = off!(ovl_path_layer);
    // On every layout so far the count is followed by the stack, whose first
    // `struct ovl_path` starts with its layer: one read gets both.
    let (numlower, first) = if stack_off + path_layer == numlower_off + 8 {
        match read::<[u64; 2]>(oe + numlower_off as u64) {
            // Little-endian: the u32 count is the low half of the word.
            Some(w) => (w[0] as u32, w[1]),
            None => return NO_LOWER,
        }
    } else {
        (
            read_u32(oe, numlower_off).unwrap_or(0),
            read_u64(oe, stack_off + path_layer).unwrap_or(0),
        )
    };
    if numlower == 0 || numlower > MAX_STACK {
        return NO_LOWER;
    }
    let Some((idx, fsid)) = layer_at(first) else {
        return NO_LOWER;
    };
    let data_idx = if numlower == 1 {
        idx
    } else {
        let last = oe + stack_off as u64 + (numlower as u64 - 1) * off!(ovl_path_size) as u64;
        read_u64(last, path_layer)
            .and_then(layer_at)
            .map_or(NO_LAYER, |(i, _)| i)
    };
    Lower {
        idx,
        data_idx,
        fsid,
        numlower: numlower as u16,
    }
}

/// `(idx, fsid)` of the `struct ovl_layer` at `layer`.
#[inline(always)]
fn layer_at(layer: u64) -> Option<(u16, u16)> {
    if layer == 0 {
        return None;
    }
    let idx_off = off!(ovl_layer_idx);
    let fsid_off = off!(ovl_layer_fsid);
    let (idx, fsid) = if fsid_off == idx_off + 4 {
        // Adjacent ints (every layout so far): one read.
        let w: u64 = read(layer + idx_off as u64)?;
        (w as u32, (w >> 32) as u32)
    } else {
        (
            read_u32(layer, idx_off)?,
            read_u32(layer, fsid_off).unwrap_or(0),
        )
    };
    Some((idx.min(NO_LAYER as u32 - 1) as u16, fsid as u16))
}

/// The tracer's own threads and (with `--container`) other overlays are skipped.
#[inline(always)]
fn wanted(cfg: &Config, overlay: &OverlayKey) -> bool {
    if cfg.filter_overlays != 0 {
        // SAFETY: read-only lookup.
        if unsafe { FILTER.get(overlay) }.is_none() {
            count(Stat::Filtered);
            return false;
        }
    }
    true
}

#[inline(always)]
fn current_ids(cfg: &Config) -> Option<(u32, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.tracer_tgid {
        return None;
    }
    Some((tgid, pid_tgid as u32))
}

// ---------------------------------------------------------------- copy-up --

// Logging (aya-log, shown with RUST_LOG=debug/warn) only on rare failure
// paths: the hot paths count into STATS instead.

#[inline(always)]
fn clock_at_flags() -> bool {
    CLOCK_AT_FLAGS.get(0).is_some_and(|&on| on == 1)
}

/// `ovl_copy_up_one` entry. With fentry it runs only where the
/// `ovl_copy_up_flags` hook is missing (to start the clock); with kprobes it
/// also keeps the dentry for the return probe.
fn copy_up_enter<C: EbpfContext>(ctx: &C, dentry: u64) {
    let cfg = config();
    let Some((_, tid)) = current_ids(&cfg) else {
        return;
    };
    let Some(p) = COPYING.get_ptr_mut(slot_of(tid)) else {
        return;
    };
    // SAFETY: a map value; see COPYING for what a collision costs.
    unsafe {
        let mine = (*p).tid == tid;
        if mine && (*p).dentry != 0 {
            // The previous copy-up on this thread never reported its return
            // (kretprobe maxactive exhausted): that event is lost.
            count(Stat::LostReturn);
            warn!(ctx, "copy-up return lost on thread {}", tid);
        }
        if !mine {
            begin(p, tid, OP_NONE, 0, 0, now());
        } else if (*p).start_ns == 0 || !clock_at_flags() {
            begin(p, tid, (*p).op, (*p).target, (*p).flags, now());
        }
        (*p).dentry = dentry;
    }
}

/// `ovl_copy_up_one` exit. `dentry`: the argument where the program sees it
/// (fexit; a BTF pointer), else the one kept at entry.
fn copy_up_exit<M: Mem, C: EbpfContext>(ctx: &C, ret: i64, dentry: Option<u64>) {
    let cfg = config();
    let Some((tgid, tid)) = current_ids(&cfg) else {
        return;
    };
    let end = now();
    let Some(p) = COPYING.get_ptr_mut(slot_of(tid)) else {
        return;
    };
    // SAFETY: the slot is this thread's (checked); copied out, then reset for
    // the next copy-up of the same request.
    let c = unsafe {
        if (*p).tid != tid {
            if dentry.is_some() {
                // fexit runs for every call: this one's start was lost to a
                // colliding thread. (A kretprobe without its entry is a call
                // that began before the probes were attached.)
                count(Stat::InflightFull);
            }
            return;
        }
        let c = *p;
        (*p).start_ns = if clock_at_flags() { end } else { 0 };
        clear_copy(p);
        c
    };
    let Some(dentry) = dentry.or(Some(c.dentry)).filter(|&d| d != 0) else {
        return;
    };
    if c.start_ns == 0 {
        // Started before the hooks were attached.
        return;
    }
    let overlay = overlay_of::<M>(dentry);
    if !wanted(&cfg, &overlay) {
        return;
    }
    count(Stat::CopyUpEnter);
    count(Stat::CopyUpExit);
    let inode = M::u64_at(dentry, off!(dentry_d_inode)).unwrap_or(0);
    let lower = lower_of(dentry, inode);
    let (mode, size) = if inode != 0 {
        (
            M::u16_at(inode, off!(inode_i_mode)).unwrap_or(0) as u32,
            M::u64_at(inode, off!(inode_i_size)).unwrap_or(0),
        )
    } else {
        (0, 0)
    };

    let Some(mut slot) = EVENTS.reserve::<CopyUpEvent>(0) else {
        count(Stat::RingbufFull);
        return;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points to reserved ring-buffer memory of the right size;
    // every field is written through raw pointers before submit.
    let path_flags = unsafe {
        (*ev).header = EventHeader {
            kind: EVENT_COPY_UP,
            size: core::mem::size_of::<CopyUpEvent>() as u32,
        };
        (*ev).start_ns = c.start_ns;
        (*ev).latency_ns = end.saturating_sub(c.start_ns);
        (*ev).data_ns = c.data_ns;
        (*ev).data_len = c.data_len;
        (*ev).size = size;
        (*ev).overlay = overlay;
        (*ev).tgid = tgid;
        (*ev).tid = tid;
        (*ev).ret = ret as i32;
        (*ev).mnt_ns = writer_mnt_ns::<M>();
        (*ev).lower_idx = lower.idx;
        (*ev).data_idx = lower.data_idx;
        (*ev).lower_fsid = lower.fsid;
        (*ev).numlower = lower.numlower;
        (*ev).mode = mode;
        (*ev).cause = cause_of(&c, dentry);
        for i in 0..3 {
            write_volatile(&mut (*ev)._pad[i], 0);
        }
        // Straight into the event (the helper zeroes it on failure).
        bpf_get_current_comm_raw((*ev).comm.as_mut_ptr().cast(), COMM_LEN as u32);
        let (path_len, components, path_flags) = write_path::<M>(dentry, ev);
        (*ev).path_len = path_len;
        (*ev).components = components;
        (*ev).flags = c.event_flags | path_flags;
        path_flags
    };
    // One wake-up per event would make the reader run once per copy-up in a
    // storm; it polls while events arrive instead, and is woken once a
    // backlog builds up.
    let wakeup = if cfg.wakeup_bytes == 0 {
        0
    } else if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= u64::from(cfg.wakeup_bytes) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    };
    slot.submit(wakeup);
    if path_flags & FLAG_PATH_FAULT != 0 {
        debug!(
            ctx,
            "copy-up path on dev {} could not be read whole", overlay.dev
        );
    }
}

/// Why `dentry` is being copied up, from what its thread recorded.
#[inline(always)]
fn cause_of(c: &Copying, dentry: u64) -> u16 {
    if c.target != 0 && c.target != dentry {
        // ovl_copy_up_flags copies the missing ancestors first.
        return CAUSE_PARENT;
    }
    match c.op {
        OP_LINK => return CAUSE_LINK,
        OP_RENAME => return CAUSE_RENAME,
        _ => {}
    }
    if c.target == 0 {
        CAUSE_UNKNOWN
    } else if c.flags & O_TRUNC != 0 {
        CAUSE_TRUNCATE
    } else if c.flags & O_ACCMODE != 0 {
        CAUSE_WRITE
    } else {
        CAUSE_METADATA
    }
}

/// `ovl_copy_up_flags(dentry, flags)` entry: a copy-up request starts (it
/// may find nothing to copy). Keeps the op of an `ovl_link`/`ovl_rename`
/// the thread is in.
#[inline(always)]
fn copy_up_flags_enter(dentry: u64, flags: u32) {
    let cfg = config();
    let Some((_, tid)) = current_ids(&cfg) else {
        return;
    };
    let Some(p) = COPYING.get_ptr_mut(slot_of(tid)) else {
        return;
    };
    // SAFETY: a map value; a slot of another thread is taken over.
    unsafe {
        let op = if (*p).tid == tid { (*p).op } else { OP_NONE };
        begin(p, tid, op, dentry, flags, now());
    }
}

/// `ovl_link`/`ovl_rename` entry (`op`) and exit (`OP_NONE`).
#[inline(always)]
fn set_op(op: u32) {
    let cfg = config();
    let Some((_, tid)) = current_ids(&cfg) else {
        return;
    };
    let Some(p) = COPYING.get_ptr_mut(slot_of(tid)) else {
        return;
    };
    // SAFETY: as in copy_up_flags_enter.
    unsafe {
        if op == OP_NONE {
            // Forget everything the thread recorded (another thread's slot
            // is left alone).
            if (*p).tid == tid {
                begin(p, 0, OP_NONE, 0, 0, 0);
            }
            return;
        }
        begin(p, tid, op, 0, 0, 0);
    }
}

/// The mount namespace of the current task (0 if unreadable).
#[inline(always)]
fn writer_mnt_ns<M: Mem>() -> u32 {
    // task->nsproxy->mnt_ns->ns.inum: typed pointers all the way under Btf.
    M::u64_at(M::current_task(), off!(task_nsproxy))
        .filter(|&p| p != 0)
        .and_then(|nsproxy| M::u64_at(nsproxy, off!(nsproxy_mnt_ns)))
        .filter(|&p| p != 0)
        .and_then(|ns| M::u32_at(ns, off!(mnt_ns_inum)))
        .unwrap_or(0)
}

/// Writes the path of `dentry` relative to its overlay root into `ev.path`,
/// leaf first, each component NUL-terminated, starting 8-byte aligned.
///
/// # Safety
/// `ev` must point to writable memory for a whole `CopyUpEvent`, whose `path`
/// starts 8-byte aligned.
#[inline(always)]
unsafe fn write_path<M: Mem>(dentry: u64, ev: *mut CopyUpEvent) -> (u32, u32, u32) {
    // SAFETY: caller guarantees `ev`; offsets stay below PATH_BUF (see lib.rs).
    let base = unsafe { (*ev).path.as_mut_ptr() };
    let parent_off = off!(dentry_d_parent);
    let name_off = off!(dentry_d_name) + off!(qstr_name);
    // The offset reached is kept in the event, not in a local: read back
    // from ring-buffer memory it is a number the verifier knows nothing
    // about, so the two ways of copying a name leave the same state, and
    // 6.1's verifier prunes instead of walking both ways at every level
    // (2^32 paths; it gave up at a million instructions).
    // SAFETY: caller guarantees `ev`.
    unsafe { write_volatile(&mut (*ev).path_len, 0) };
    let mut components: u32 = 0;
    let mut flags = FLAG_PATH_TRUNCATED;
    let mut d = dentry;
    for _ in 0..MAX_COMPONENTS {
        let Some((parent, name)) = M::parent_and_name(d, parent_off, name_off) else {
            flags = FLAG_PATH_FAULT;
            break;
        };
        if parent == d || parent == 0 {
            flags = 0;
            break;
        }
        // SAFETY: as above.
        let off = unsafe { read_volatile(&(*ev).path_len) } as usize;
        if off >= PATH_SOFT_LIMIT {
            break;
        }
        // The mask is a no-op given the check above; it lets the verifier
        // bound the destination.
        let bounded = off & (PATH_SOFT_LIMIT - 8);
        // SAFETY: dst..dst+NAME_READ_MAX lies inside `path` (PATH_BUF bytes)
        // and is 8-byte aligned (`off` only grows by multiples of 8).
        let dst = unsafe { base.add(bounded) };
        let len = match M::inline_name(d, name) {
            // Most names: four loads and stores instead of a helper call
            // that copies a byte at a time.
            Some((words, len)) => {
                // SAFETY: as above; INLINE_NAME <= NAME_READ_MAX.
                unsafe {
                    for (i, w) in words.into_iter().enumerate() {
                        write_volatile(dst.add(i * 8).cast::<u64>(), w);
                    }
                    // The array holds it, but a rename may be rewriting it.
                    write_volatile(dst.add(len & (INLINE_NAME - 1)), 0);
                }
                len
            }
            None => {
                // SAFETY: as above.
                let n = unsafe {
                    bpf_probe_read_kernel_str(dst.cast(), NAME_READ_MAX as u32, name as *const _)
                };
                if n <= 0 {
                    flags = FLAG_PATH_FAULT;
                    break;
                }
                n as usize - 1
            }
        };
        // SAFETY: as above.
        unsafe { write_volatile(&mut (*ev).path_len, (bounded + path_slot(len)) as u32) };
        components += 1;
        d = parent;
    }
    // SAFETY: as above.
    (unsafe { read_volatile(&(*ev).path_len) }, components, flags)
}

/// The copy-up request this thread is in, if any.
#[inline(always)]
fn my_copying(tid: u32) -> Option<*mut Copying> {
    let p = COPYING.get_ptr_mut(slot_of(tid))?;
    // SAFETY: read of the thread's own slot.
    unsafe { ((*p).start_ns != 0 && (*p).tid == tid).then_some(p) }
}

fn data_copy_enter(len: u64) {
    let cfg = config();
    let Some((_, tid)) = current_ids(&cfg) else {
        return;
    };
    if let Some(p) = my_copying(tid) {
        count(Stat::DataCopyEnter);
        // SAFETY: the slot is this thread's.
        unsafe {
            (*p).data_start_ns = now();
            (*p).data_len = len;
        }
    }
}

fn data_copy_exit() {
    let cfg = config();
    let Some((_, tid)) = current_ids(&cfg) else {
        return;
    };
    if let Some(p) = my_copying(tid) {
        // SAFETY: as above.
        unsafe {
            if (*p).data_start_ns != 0 {
                (*p).data_ns += now().saturating_sub((*p).data_start_ns);
                (*p).data_start_ns = 0;
                (*p).event_flags |= FLAG_DATA_COPY;
            }
        }
    }
}

// ----------------------------------------------------------------- lookup --

fn lookup_enter<M: Mem, C: EbpfContext>(ctx: &C, dentry: u64) {
    let cfg = config();
    let Some((_, tid)) = current_ids(&cfg) else {
        return;
    };
    let overlay = overlay_of::<M>(dentry);
    if !wanted(&cfg, &overlay) {
        return;
    }
    count(Stat::LookupEnter);
    let Some(p) = LOOKUP_START.get_ptr_mut(slot_of(tid)) else {
        return;
    };
    // SAFETY: a map value (see COPYING). A slot of this very thread still in flight
    // (a nested overlay's lookup, or a lost return) is overwritten.
    unsafe {
        if (*p).start_ns != 0 && (*p).tid != tid {
            count(Stat::InflightFull);
            warn!(
                ctx,
                "lookup in-flight slot of thread {} held by thread {}: not timed",
                tid,
                (*p).tid
            );
            return;
        }
        *p = LookupStart {
            tid,
            _pad: 0,
            start_ns: now(),
            dentry,
            overlay,
        };
    }
}

/// `dentry` as in `copy_up_exit`.
fn lookup_exit<M: Mem>(ret: u64, dentry: Option<u64>) {
    let cfg = config();
    let Some((_, tid)) = current_ids(&cfg) else {
        return;
    };
    let Some(p) = LOOKUP_START.get_ptr_mut(slot_of(tid)) else {
        return;
    };
    // SAFETY: the slot is this thread's (checked); copied out, then freed.
    let start = unsafe {
        if (*p).start_ns == 0 || (*p).tid != tid {
            return;
        }
        let v = *p;
        (*p).start_ns = 0;
        v
    };
    count(Stat::LookupExit);
    let lat = now().saturating_sub(start.start_ns);

    // ovl_lookup returns NULL (dentry instantiated or left negative), an alias
    // dentry, or an ERR_PTR.
    let err = ret >= (-4095i64) as u64;
    let found = !err
        && (ret != 0
            || M::u64_at(dentry.unwrap_or(start.dentry), off!(dentry_d_inode)).unwrap_or(0) != 0);

    let stats = match LOOKUPS.get_ptr_mut(&start.overlay) {
        Some(p) => p,
        None => {
            let _ = LOOKUPS.insert(&start.overlay, &LookupStats::ZERO, 0);
            match LOOKUPS.get_ptr_mut(&start.overlay) {
                Some(p) => p,
                None => return,
            }
        }
    };
    let slot = log2(lat) as usize;
    // SAFETY: per-CPU value, only this CPU writes it.
    unsafe {
        if err {
            (*stats).errors += 1;
        } else if found {
            (*stats).found += 1;
        } else {
            (*stats).not_found += 1;
        }
        (*stats).total_ns += lat;
        if slot < HIST_SLOTS {
            (*stats).hist[slot] += 1;
        } else {
            (*stats).hist[HIST_SLOTS - 1] += 1;
        }
    }
}

/// Floor of log2(v), 0 for 0 (BPF has no count-leading-zeros instruction).
#[inline(always)]
fn log2(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// A superblock is going away: its address may soon be another overlay's.
/// Its identity leaves the hash, then the generation moves on, which
/// invalidates every per-CPU copy. The generation is a fresh timestamp (BPF
/// has no atomic increment here): each shutdown stores a value no copy was
/// filled under.
#[inline(always)]
fn sb_shutdown(sb: u64) {
    let _ = OVERLAYS.remove(&sb);
    if let Some(g) = SB_GEN.get_ptr_mut(0) {
        // SAFETY: an aligned u64 in a map value.
        unsafe { write_volatile(g, now()) };
    }
}

// ------------------------------------------------------ kprobe flavour ----
// ovl_copy_up_one(struct dentry *parent, struct dentry *dentry, int flags)
// ovl_lookup(struct inode *dir, struct dentry *dentry, unsigned int flags)

#[kprobe]
pub fn kp_copy_up_one(ctx: ProbeContext) -> u32 {
    copy_up_enter(&ctx, ctx.arg::<u64>(1).unwrap_or(0));
    0
}

#[kretprobe]
pub fn krp_copy_up_one(ctx: RetProbeContext) -> u32 {
    copy_up_exit::<Probe, _>(&ctx, ctx.ret::<i64>(), None);
    0
}

// The length argument's position differs between kernels; a run-time index
// would become a variable context offset, which the verifier rejects, so
// there is one program per position and user space picks.

/// `ovl_copy_up_file(ofs, dentry, new_file, len)`, 5.8+ `ovl_copy_up_data`.
#[kprobe]
pub fn kp_data_copy(ctx: ProbeContext) -> u32 {
    data_copy_enter(ctx.arg::<u64>(3).unwrap_or(0));
    0
}

/// 5.4-5.7 `ovl_copy_up_data(old, new, len)`.
#[kprobe]
pub fn kp_data_copy_len2(ctx: ProbeContext) -> u32 {
    data_copy_enter(ctx.arg::<u64>(2).unwrap_or(0));
    0
}

#[kretprobe]
pub fn krp_data_copy(_ctx: RetProbeContext) -> u32 {
    data_copy_exit();
    0
}

/// `generic_shutdown_super(struct super_block *sb)` (vmlinux).
#[kprobe]
pub fn kp_sb_shutdown(ctx: ProbeContext) -> u32 {
    sb_shutdown(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[kprobe]
pub fn kp_lookup(ctx: ProbeContext) -> u32 {
    lookup_enter::<Probe, _>(&ctx, ctx.arg::<u64>(1).unwrap_or(0));
    0
}

#[kretprobe]
pub fn krp_lookup(ctx: RetProbeContext) -> u32 {
    lookup_exit::<Probe>(ctx.ret::<u64>(), None);
    0
}

/// `ovl_copy_up_flags(struct dentry *dentry, int flags)`.
#[kprobe]
pub fn kp_copy_up_flags(ctx: ProbeContext) -> u32 {
    copy_up_flags_enter(
        ctx.arg::<u64>(0).unwrap_or(0),
        ctx.arg::<u64>(1).unwrap_or(0) as u32,
    );
    0
}

#[kprobe]
pub fn kp_link(_ctx: ProbeContext) -> u32 {
    set_op(OP_LINK);
    0
}

#[kprobe]
pub fn kp_rename(_ctx: ProbeContext) -> u32 {
    set_op(OP_RENAME);
    0
}

/// Exit of `ovl_link` and of `ovl_rename`.
#[kretprobe]
pub fn krp_op(_ctx: RetProbeContext) -> u32 {
    set_op(OP_NONE);
    0
}

// ------------------------------------------------------ fentry flavour ----
// fexit sees the arguments followed by the return value.

/// Only where `ovl_copy_up_flags` cannot be hooked (see `copy_up_enter`).
#[fentry(function = "ovl_copy_up_one")]
pub fn fe_copy_up_one(ctx: FEntryContext) -> i32 {
    copy_up_enter(&ctx, ctx.arg::<u64>(1));
    0
}

#[fexit(function = "ovl_copy_up_one")]
pub fn fx_copy_up_one(ctx: FExitContext) -> i32 {
    copy_up_exit::<Btf, _>(&ctx, ctx.arg::<i64>(3), Some(ctx.arg::<u64>(1)));
    0
}

/// `len` is argument 3 (see the kprobe flavour); user space does not use
/// this program where it is not.
#[fentry(function = "ovl_copy_up_file")]
pub fn fe_data_copy(ctx: FEntryContext) -> i32 {
    data_copy_enter(ctx.arg::<u64>(3));
    0
}

#[fexit(function = "ovl_copy_up_file")]
pub fn fx_data_copy(_ctx: FExitContext) -> i32 {
    data_copy_exit();
    0
}

#[fentry(function = "generic_shutdown_super")]
pub fn fe_sb_shutdown(ctx: FEntryContext) -> i32 {
    sb_shutdown(ctx.arg::<u64>(0));
    0
}

#[fentry(function = "ovl_lookup")]
pub fn fe_lookup(ctx: FEntryContext) -> i32 {
    lookup_enter::<Btf, _>(&ctx, ctx.arg::<u64>(1));
    0
}

#[fexit(function = "ovl_lookup")]
pub fn fx_lookup(ctx: FExitContext) -> i32 {
    lookup_exit::<Btf>(ctx.arg::<u64>(3), Some(ctx.arg::<u64>(1)));
    0
}

#[fentry(function = "ovl_copy_up_flags")]
pub fn fe_copy_up_flags(ctx: FEntryContext) -> i32 {
    copy_up_flags_enter(ctx.arg::<u64>(0), ctx.arg::<u64>(1) as u32);
    0
}

#[fentry(function = "ovl_link")]
pub fn fe_link(_ctx: FEntryContext) -> i32 {
    set_op(OP_LINK);
    0
}

#[fexit(function = "ovl_link")]
pub fn fx_link(_ctx: FExitContext) -> i32 {
    set_op(OP_NONE);
    0
}

#[fentry(function = "ovl_rename")]
pub fn fe_rename(_ctx: FEntryContext) -> i32 {
    set_op(OP_RENAME);
    0
}

#[fexit(function = "ovl_rename")]
pub fn fx_rename(_ctx: FExitContext) -> i32 {
    set_op(OP_NONE);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
