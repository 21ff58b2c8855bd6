//! The kernel programs from user space: choosing and attaching probes,
//! loading the object, reading its maps, decoding its events.

pub mod event;
pub mod probe;

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{MapData, PerCpuArray, PerCpuHashMap},
    Ebpf, EbpfLoader,
};
use ovltrace_ebpf::{Config, LookupStats, OverlayKey};

use crate::sys::btf::KernelBtf;
use probe::{Plan, ProbeMode};

/// Backlog (bytes waiting in the ring buffer) at which the kernel wakes the
/// reader: 1/16 of the buffer, far from full at the poll rate.
fn wakeup_bytes(ring_buffer_size: u32) -> u32 {
    (ring_buffer_size / 16).max(1)
}

/// The programs, built for bpfel by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ovltrace"));

/// Everything needed to load the programs on this kernel.
pub struct Prepared {
    pub ebpf: Ebpf,
    pub plan: Plan,
    /// The programs can read overlay's own types (source layers, overlay
    /// identities); without them events carry the device only.
    pub overlay_types: bool,
}

/// What this kernel offers the programs, found before they are loaded:
/// the struct offsets from BTF and the attach plan from kallsyms.
pub struct Inspected {
    offsets: ovltrace_ebpf::Offsets,
    pub plan: Plan,
    /// The programs can read overlay's own types (see [`Prepared::overlay_types`]).
    pub overlay_types: bool,
}

/// Reads BTF and kallsyms, and loads the object with this kernel's offsets.
pub fn prepare(mode: ProbeMode, ring_buffer_size: u32, filter_overlays: bool) -> Result<Prepared> {
    inspect(mode)?.load(ring_buffer_size, filter_overlays)
}

/// Reads BTF and kallsyms: what [`Inspected::load`] needs. Lets a caller
/// decide the load-time configuration (read-only once loaded) from what
/// the kernel offers.
pub fn inspect(mode: ProbeMode) -> Result<Inspected> {
    if EBPF_OBJECT.is_empty() {
        bail!("this ovltrace was built with AYA_BUILD_SKIP=1 and carries no eBPF programs");
    }
    let btf = KernelBtf::load().context("reading kernel BTF")?;
    let offsets = btf
        .offsets()
        .context("finding struct offsets in kernel BTF")?;
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    let plan = probe::plan(mode, Some(&btf), &kallsyms);
    Ok(Inspected {
        overlay_types: offsets.lower_layout != 0,
        offsets,
        plan,
    })
}

impl Inspected {
    /// Loads the object. `filter_overlays`: only overlays in the FILTER map
    /// are traced (fixed for the life of the programs).
    pub fn load(self, ring_buffer_size: u32, filter_overlays: bool) -> Result<Prepared> {
        let config = Config {
            tracer_tgid: std::process::id(),
            filter_overlays: filter_overlays as u32,
            wakeup_bytes: wakeup_bytes(ring_buffer_size),
            _pad: 0,
        };
        raise_memlock();
        let ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &self.offsets, true)
            .override_global("CONFIG", &config, true)
            // Kernel-side log statements below the user's level are skipped in the kernel.
            .override_global("AYA_LOG_LEVEL", &kernel_log_level(), false)
            .map_max_entries("EVENTS", ring_buffer_size)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object (maps)")?;
        Ok(Prepared {
            ebpf,
            plan: self.plan,
            overlay_types: self.overlay_types,
        })
    }
}

/// aya-log's level numbering (error = 1 ... trace = 5) for `log::max_level()`.
fn kernel_log_level() -> u8 {
    match log::max_level() {
        log::LevelFilter::Off => 0,
        log::LevelFilter::Error => 1,
        log::LevelFilter::Warn => 2,
        log::LevelFilter::Info => 3,
        log::LevelFilter::Debug => 4,
        log::LevelFilter::Trace => 5,
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a local rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

/// The kernel's counters ([`ovltrace_ebpf::Stat`]), summed over CPUs.
pub fn read_stats(ebpf: &Ebpf) -> Result<[u64; ovltrace_ebpf::STAT_COUNT as usize]> {
    let map = ebpf
        .map("STATS")
        .ok_or_else(|| anyhow!("STATS map missing"))?;
    let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
    let mut out = [0u64; ovltrace_ebpf::STAT_COUNT as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = arr.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(out)
}

/// The in-kernel lookup statistics of every overlay, summed over CPUs.
pub fn read_lookups(ebpf: &Ebpf) -> Result<Vec<(OverlayKey, LookupStats)>> {
    let map = ebpf
        .map("LOOKUPS")
        .ok_or_else(|| anyhow!("LOOKUPS map missing"))?;
    let m: PerCpuHashMap<&MapData, OverlayKey, LookupStats> = PerCpuHashMap::try_from(map)?;
    let mut out = Vec::new();
    for item in m.iter() {
        let (dev, per_cpu) = item?;
        let mut sum = LookupStats::ZERO;
        for v in per_cpu.iter() {
            sum.found += v.found;
            sum.not_found += v.not_found;
            sum.errors += v.errors;
            sum.total_ns += v.total_ns;
            for (a, b) in sum.hist.iter_mut().zip(v.hist.iter()) {
                *a += b;
            }
        }
        out.push((dev, sum));
    }
    out.sort_by_key(|(d, _)| *d);
    Ok(out)
}
