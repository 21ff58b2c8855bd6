//! Which container a cgroup (v2) belongs to.
//!
//! Copy-up events carry the writer's cgroup id (`bpf_get_current_cgroup_id`),
//! which on cgroup v2 is the inode number of the cgroup's directory. Container
//! runtimes name a container's cgroup after its id (`docker/<id>`,
//! `system.slice/docker-<id>.scope`, `cri-containerd-<id>.scope`), so walking the
//! hierarchy maps cgroup ids to container ids. Unlike overlay device numbers,
//! which the kernel hands out again as soon as a container's overlay is
//! unmounted, cgroup ids are not reused soon, so they tell containers that used
//! the same device apart.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Directories visited at most per walk (a large host has a few thousand).
const MAX_DIRS: usize = 100_000;
/// Deepest nesting walked below the root.
const MAX_DEPTH: usize = 8;

/// What one walk of the cgroup v2 hierarchy found.
#[derive(Debug, Default, Clone)]
pub struct CgroupSnapshot {
    /// Every cgroup that exists (ids).
    pub alive: HashSet<u64>,
    /// cgroup id -> container id, for the containers asked about.
    pub owner: HashMap<u64, String>,
}

/// Where the cgroup v2 hierarchy is mounted, from mountinfo text.
pub fn cgroup2_root(mountinfo: &[u8]) -> Option<PathBuf> {
    let text = String::from_utf8_lossy(mountinfo);
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mountpoint = left.split_whitespace().nth(4)?;
        // mountinfo escapes space, tab, newline and backslash as \ooo.
        (!mountpoint.contains('\\')).then(|| PathBuf::from(mountpoint))
    })
}

/// The 64-hex-digit container id inside a cgroup directory name, if any.
pub fn container_id_in(name: &str) -> Option<&str> {
    let bytes = name.as_bytes();
    let mut start = None;
    for i in 0..=bytes.len() {
        let hex = i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'a'..=b'f');
        match (hex, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s == 64 {
                    return name.get(s..i);
                }
                start = None;
            }
            _ => {}
        }
    }
    None
}

/// Walks the hierarchy under `root` (never following symlinks) and records
/// every cgroup, and which of them are named after one of `containers`.
pub fn walk(root: &Path, containers: &HashSet<String>) -> std::io::Result<CgroupSnapshot> {
    let mut snap = CgroupSnapshot::default();
    let meta = std::fs::symlink_metadata(root)?;
    snap.alive.insert(meta.ino());
    let mut stack: Vec<(PathBuf, usize)> = vec![(root.to_path_buf(), 0)];
    let mut visited = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // removed meanwhile
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            visited += 1;
            if visited > MAX_DIRS {
                log::debug!("cgroup walk stopped after {MAX_DIRS} directories");
                return Ok(snap);
            }
            let id = meta.ino();
            snap.alive.insert(id);
            let name = entry.file_name();
            if let Some(cid) = name.to_str().and_then(container_id_in) {
                if containers.contains(cid) {
                    snap.owner.insert(id, cid.to_string());
                }
            }
            if depth + 1 < MAX_DEPTH {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "c80a5fd00c1b48972e13472e224d6158744edf581227782ff6ccaf1db5934d61";

    #[test]
    fn finds_the_cgroup2_mount() {
        let mi = b"22 1 0:20 / /sys rw - sysfs sysfs rw\n\
            30 22 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
            31 22 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_root(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_root(b"31 22 0:27 / /c rw - cgroup cgroup rw\n"),
            None
        );
        assert_eq!(cgroup2_root(b"garbage\n"), None);
    }

    #[test]
    fn container_ids_in_names() {
        assert_eq!(container_id_in(ID), Some(ID));
        assert_eq!(container_id_in(&format!("docker-{ID}.scope")), Some(ID));
        assert_eq!(
            container_id_in(&format!("cri-containerd-{ID}.scope")),
            Some(ID)
        );
        assert_eq!(container_id_in(&format!("{ID}0")), None);
        assert_eq!(container_id_in("system.slice"), None);
        assert_eq!(container_id_in(""), None);
    }

    #[test]
    fn walks_and_maps_container_cgroups() {
        let tmp = tempfile::tempdir().unwrap();
        let scope = tmp.path().join(format!("system.slice/docker-{ID}.scope"));
        std::fs::create_dir_all(&scope).unwrap();
        let other = "0".repeat(64);
        std::fs::create_dir_all(tmp.path().join("docker").join(&other)).unwrap();
        std::fs::write(tmp.path().join("cgroup.procs"), "").unwrap();
        let known: HashSet<String> = [ID.to_string()].into();
        let snap = walk(tmp.path(), &known).unwrap();
        // root, system.slice, the scope, docker, docker/<other>
        assert_eq!(snap.alive.len(), 5);
        let ino = std::fs::metadata(&scope).unwrap().ino();
        assert_eq!(snap.owner.len(), 1);
        assert_eq!(snap.owner[&ino], ID);
    }
}
