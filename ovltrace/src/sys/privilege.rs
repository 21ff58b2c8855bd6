//! Least privilege for `ovltrace run`.
//!
//! Loading and attaching eBPF programs needs root (CAP_BPF, CAP_PERFMON,
//! CAP_SYS_ADMIN, ...). Once the programs are attached and every map is open,
//! almost none of that is needed any more: the maps are used through file
//! descriptors already held, the ring buffer is memory-mapped, and the
//! probes are detached by closing descriptors. [`drop_privileges`] then keeps
//! only what the rest of the trace needs and drops every other capability
//! from the effective, permitted, inheritable, ambient and bounding sets, and
//! sets `no_new_privs`.
//!
//! What is kept, and why ([`Keep`] carries the reason, `ovltrace doctor`
//! shows it):
//! - `CAP_DAC_READ_SEARCH`, always: Docker's metadata is readable by root
//!   only, and image layers hold files and directories with owners and modes
//!   chosen by image authors; the periodic rescans and the source-layer
//!   lookup must read and traverse them whatever their permissions. It grants
//!   reading and searching, never writing.
//! - `CAP_DAC_OVERRIDE`, only when an output file (`--json`) goes to a
//!   directory that uid 0 cannot write without it (a directory of another
//!   user). Otherwise outputs are written as uid 0 into directories it owns
//!   or that anyone can write.
//! - `CAP_BPF` (`CAP_SYS_ADMIN` on kernels before 5.8), only when the kernel
//!   refuses `bpf()` map operations on already-open maps without it (kernels
//!   before 5.19 with `kernel.unprivileged_bpf_disabled` set). This is tested,
//!   not guessed: the maps are read with only the kept capabilities effective
//!   before anything is dropped for good.
//!
//! The process stays uid 0, so the files it writes are owned by root as
//! before; without capabilities, uid 0 can no longer bypass permission checks
//! (other users' files, ptrace, signals to other users, mounts, module
//! loading, raw I/O, new eBPF programs...). `no_new_privs` and the emptied
//! bounding set mean nothing executed later can regain capabilities.
//!
//! Capabilities are per thread; this must run while the process has one
//! thread (threads started later inherit the reduced sets).

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context, Result};
use caps::{CapSet, Capability};

/// A capability `run` keeps after attaching, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    pub cap: Capability,
    pub why: String,
}

/// Why CAP_DAC_READ_SEARCH stays.
pub const WHY_READ_SEARCH: &str =
    "reading the runtimes' metadata (root-only files) and stat-ing upper directories during rescans";

/// The capabilities kept for reading, plus CAP_DAC_OVERRIDE when an output
/// directory needs it. `outputs` are the files `run` will write.
pub fn base_keep(outputs: &[&Path]) -> Vec<Keep> {
    let mut keep = vec![Keep {
        cap: Capability::CAP_DAC_READ_SEARCH,
        why: WHY_READ_SEARCH.into(),
    }];
    let blocked: Vec<String> = outputs
        .iter()
        .filter(|p| !root_can_create_in(&output_dir(p)))
        .map(|p| p.display().to_string())
        .collect();
    if !blocked.is_empty() {
        keep.push(Keep {
            cap: Capability::CAP_DAC_OVERRIDE,
            why: format!(
                "writing {}: its directory is not writable by uid 0 without it",
                blocked.join(", ")
            ),
        });
    }
    keep
}

/// The directory an output file is created in.
fn output_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether uid 0 without CAP_DAC_OVERRIDE may create files in `dir`
/// (owner, group or other write and search bits; ACLs are not consulted).
/// A directory that does not exist yet counts as writable: writing will fail
/// either way and say so.
fn root_can_create_in(dir: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(dir) else {
        return true;
    };
    let mode = meta.mode();
    let wx = |shift: u32| (mode >> shift) & 0o3 == 0o3;
    // SAFETY: getegid has no preconditions.
    let egid = unsafe { libc::getegid() };
    (meta.uid() == 0 && wx(6)) || (meta.gid() == egid && wx(3)) || wx(0)
}

/// What [`drop_privileges`] did.
#[derive(Debug, Clone)]
pub struct Dropped {
    /// The capabilities left (effective = permitted = bounding).
    pub kept: Vec<Keep>,
    /// Threads of the process at the time (capabilities are per thread).
    pub threads: usize,
}

impl Dropped {
    /// One line for the log: `CAP_DAC_READ_SEARCH, CAP_BPF` or `none`.
    pub fn names(&self) -> String {
        names(&self.kept)
    }
}

pub fn names(keep: &[Keep]) -> String {
    if keep.is_empty() {
        return "none".into();
    }
    keep.iter()
        .map(|k| k.cap.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The capability that gates `bpf()` map operations on this kernel when
/// unprivileged BPF is disabled: CAP_BPF where it exists (5.8+), else
/// CAP_SYS_ADMIN.
fn bpf_cap() -> Capability {
    if caps::runtime::thread_all_supported().contains(&Capability::CAP_BPF) {
        Capability::CAP_BPF
    } else {
        Capability::CAP_SYS_ADMIN
    }
}

fn set_of(keep: &[Keep]) -> HashSet<Capability> {
    keep.iter().map(|k| k.cap).collect()
}

/// Whether the maps work with only `keep` effective: makes exactly those
/// effective (the permitted set is untouched, so this is reversible), calls
/// `maps_work`, and restores the previous effective set.
pub fn maps_work_with(keep: &[Keep], maps_work: &mut dyn FnMut() -> bool) -> Result<bool> {
    let before = caps::read(None, CapSet::Effective).map_err(|e| anyhow!("{e}"))?;
    caps::set(None, CapSet::Effective, &set_of(keep)).map_err(|e| anyhow!("{e}"))?;
    let ok = maps_work();
    caps::set(None, CapSet::Effective, &before).map_err(|e| anyhow!("{e}"))?;
    Ok(ok)
}

/// Adds the BPF capability to `keep` when the maps do not work without it
/// (see the module documentation).
pub fn keep_for_maps(
    mut keep: Vec<Keep>,
    maps_work: &mut dyn FnMut() -> bool,
) -> Result<Vec<Keep>> {
    if maps_work_with(&keep, maps_work)? {
        return Ok(keep);
    }
    let cap = bpf_cap();
    keep.push(Keep {
        cap,
        why: "this kernel refuses bpf() on open maps without it (kernel.unprivileged_bpf_disabled)"
            .into(),
    });
    if !maps_work_with(&keep, maps_work)? {
        anyhow::bail!(
            "the BPF maps cannot be read with only {} effective",
            names(&keep)
        );
    }
    Ok(keep)
}

/// Drops every capability but those in `base` (plus the BPF capability when
/// `maps_work` shows the kernel needs it for the open maps), from every
/// set, and sets `no_new_privs`. On error nothing has been dropped for good
/// unless the error says otherwise; the caller may carry on with the
/// privileges it has.
pub fn drop_privileges(base: Vec<Keep>, maps_work: &mut dyn FnMut() -> bool) -> Result<Dropped> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1);
    let keep = keep_for_maps(base, maps_work).context("checking map access")?;
    let wanted = set_of(&keep);

    // Dropping from the bounding set needs CAP_SETPCAP in the effective set:
    // make everything permitted effective for that step.
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| anyhow!("{e}"))?;
    caps::set(None, CapSet::Effective, &permitted).map_err(|e| anyhow!("{e}"))?;
    for cap in caps::runtime::thread_all_supported() {
        if !wanted.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| anyhow!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| anyhow!("clearing the ambient set: {e}"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| anyhow!("clearing the inheritable set: {e}"))?;
    // Effective first: it must stay a subset of the permitted set.
    let kept_now: HashSet<Capability> = wanted.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Effective, &kept_now)
        .map_err(|e| anyhow!("setting the effective set: {e}"))?;
    caps::set(None, CapSet::Permitted, &kept_now)
        .map_err(|e| anyhow!("setting the permitted set: {e}"))?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(anyhow!(
            "setting no_new_privs: {}",
            std::io::Error::last_os_error()
        ));
    }
    let effective = caps::read(None, CapSet::Effective).map_err(|e| anyhow!("{e}"))?;
    if effective != kept_now {
        anyhow::bail!("capabilities left after dropping: {effective:?}, expected {kept_now:?}");
    }
    // Capabilities are per thread: a thread started before this one dropped
    // them would still have them.
    let mask: u64 = kept_now.iter().map(|c| c.bitmask()).sum();
    for (tid, prm) in permitted_by_thread() {
        if prm & !mask != 0 {
            anyhow::bail!(
                "thread {tid} still has capabilities {prm:016x} (it started before they were dropped)"
            );
        }
    }
    Ok(Dropped {
        kept: keep
            .into_iter()
            .filter(|k| kept_now.contains(&k.cap))
            .collect(),
        threads,
    })
}

/// `CapPrm` of every thread of this process, from /proc/self/task/*/status.
fn permitted_by_thread() -> Vec<(String, u64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            let hex = status
                .lines()
                .find_map(|l| l.strip_prefix("CapPrm:"))?
                .trim();
            Some((
                t.file_name().to_string_lossy().into_owned(),
                u64::from_str_radix(hex, 16).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn read_search_is_always_kept() {
        let keep = base_keep(&[]);
        assert_eq!(keep.len(), 1);
        assert_eq!(keep[0].cap, Capability::CAP_DAC_READ_SEARCH);
        assert_eq!(names(&keep), "CAP_DAC_READ_SEARCH");
        assert_eq!(names(&[]), "none");
    }

    #[test]
    fn dac_override_only_for_directories_root_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own");
        std::fs::create_dir(&own).unwrap();
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
        // SAFETY: chown of a path we created; fails harmlessly when not root.
        let chowned = {
            let c = std::ffi::CString::new(theirs.as_os_str().as_encoded_bytes()).unwrap();
            unsafe { libc::chown(c.as_ptr(), 1000, 1000) == 0 }
        };
        let own_uid = std::fs::metadata(&own).unwrap().uid();
        if own_uid == 0 {
            assert!(root_can_create_in(&own));
            assert_eq!(base_keep(&[&own.join("x.json")]).len(), 1);
        }
        if chowned {
            assert!(!root_can_create_in(&theirs));
            let keep = base_keep(&[&theirs.join("x.json")]);
            assert_eq!(keep[1].cap, Capability::CAP_DAC_OVERRIDE);
            assert!(keep[1].why.contains("x.json"), "{keep:?}");
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o1777)).unwrap();
            assert!(root_can_create_in(&theirs));
        }
        // Relative names are created in the current directory; missing
        // directories are left to the write to report.
        assert_eq!(output_dir(Path::new("x.json")), PathBuf::from("."));
        assert!(root_can_create_in(Path::new("/nonexistent-ovltrace-dir")));
    }

    #[test]
    fn reads_every_thread() {
        let here = caps::read(None, CapSet::Permitted).unwrap();
        let mask: u64 = here.iter().map(|c| c.bitmask()).sum();
        let threads = permitted_by_thread();
        assert!(!threads.is_empty());
        // The test harness runs this on its own thread: it is listed.
        assert!(threads.iter().any(|(_, prm)| *prm == mask), "{threads:?}");
    }
}
