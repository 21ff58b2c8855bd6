//! Multi-layer test images built offline on the host, cached as `docker save`
//! tarballs, and described as Docker itself sees them (`docker image inspect`,
//! `docker history`) so that tests can compare ovltrace's attribution with it.
//!
//! The image is built by `tests/fixtures/attribution-image.sh` (see
//! there for its layers and file sizes) with the host's dockerd. The tarball
//! is cached under `$OVLTRACE_CACHE/images` (default `~/.cache/ovltrace`),
//! keyed by a hash of the script, the tag and the busybox binary, so only the
//! first run builds it. Every run makes sure the host daemon holds the very
//! image in the tarball (loading it if not), since that is what the VM runs.

use std::{
    fs::{self, File},
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
};

use crate::host_docker::{self, docker};

/// Tag of the attribution test image.
pub const ATTRIBUTION_TAG: &str = "ovltrace-test/attrib:1";

/// Sizes of the files in the attribution image (see the fixture script).
pub mod sizes {
    /// /etc/base.txt, from the imported base layer.
    pub const BASE_TXT: u64 = 5000;
    /// /etc/shadowed.conf as the base layer has it (hidden by layer 4).
    pub const SHADOWED_IN_BASE: u64 = 100;
    /// /etc/shadowed.conf as layer 4 (`RUN dd ...`) rewrote it.
    pub const SHADOWED: u64 = 300;
    /// /data/big.bin (`COPY big.bin /data/`).
    pub const BIG_BIN: u64 = 2_097_275;
    /// /app/cache.db (`RUN ... dd ... of=/app/cache.db`).
    pub const CACHE_DB: u64 = 786_432;
}

/// One layer of an image, as Docker describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayer {
    /// `RootFS.Layers[i]` of `docker image inspect`.
    pub diff_id: String,
    /// The `CreatedBy` of the `docker history` entry that made this layer.
    pub created_by: String,
}

/// A test image: its `docker save` tarball and Docker's description of it.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub tag: String,
    pub tar: PathBuf,
    /// `sha256:<hex>`, as `docker image inspect` shows it.
    pub id: String,
    pub repo_tags: Vec<String>,
    /// Base layer first (the order of `RootFS.Layers`).
    pub layers: Vec<ImageLayer>,
}

impl TestImage {
    /// The image layer at overlay index `index` of a container's stack
    /// (1 is the init layer, 2 the top image layer, ...; `None` for 1).
    pub fn layer_at_index(&self, index: usize) -> Option<&ImageLayer> {
        let from_top = index.checked_sub(2)?;
        let pos = self.layers.len().checked_sub(1 + from_top)?;
        self.layers.get(pos)
    }

    /// Overlay index of the layer whose instruction contains `needle`
    /// (exactly one must).
    pub fn index_of(&self, needle: &str) -> Result<usize, String> {
        let hits: Vec<usize> = self
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.created_by.contains(needle))
            .map(|(pos, _)| self.layers.len() - pos + 1)
            .collect();
        match hits.as_slice() {
            [i] => Ok(*i),
            _ => Err(format!(
                "{} layers of {} have an instruction containing {needle:?}",
                hits.len(),
                self.tag
            )),
        }
    }

    /// Overlay index of the imported base layer.
    pub fn base_index(&self) -> usize {
        self.layers.len() + 1
    }
}

/// Where cached images live.
pub fn cache_dir() -> PathBuf {
    crate::cache_dir().join("images")
}

/// The attribution image (built on the first call, then cached), loaded in
/// the host's dockerd and described by it.
pub fn attribution_image() -> Result<TestImage, String> {
    host_docker::ensure_daemon()?;
    let script = crate::workspace_root().join("tests/fixtures/attribution-image.sh");
    let busybox = Path::new("/bin/busybox");
    let dir = cache_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let _lock = lock(&dir.join(".lock"))?;
    let key = hash(&[&script, busybox], ATTRIBUTION_TAG)?;
    let tar = dir.join(format!("attrib-{}.tar", &key[..16]));
    if !tar.is_file() {
        let tmp = dir.join(format!("attrib-{}.tmp", std::process::id()));
        let out = Command::new("sh")
            .arg(&script)
            .arg(ATTRIBUTION_TAG)
            .arg(&tmp)
            .env("DOCKER", host_docker::DOCKER)
            .env("BUSYBOX", busybox)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            let _ = fs::remove_file(&tmp);
            return Err(format!(
                "{} failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        fs::rename(&tmp, &tar).map_err(|e| format!("renaming to {}: {e}", tar.display()))?;
    }
    describe(ATTRIBUTION_TAG, &tar)
}

/// Makes the host daemon hold the image of `tar` under `tag` and describes it.
fn describe(tag: &str, tar: &Path) -> Result<TestImage, String> {
    let manifest: serde_json::Value = serde_json::from_str(&tar_member(tar, "manifest.json")?)
        .map_err(|e| format!("{}: manifest.json: {e}", tar.display()))?;
    let config_name = manifest[0]["Config"]
        .as_str()
        .ok_or_else(|| format!("{}: manifest.json has no Config", tar.display()))?
        .to_string();
    let id = format!("sha256:{}", config_name.trim_end_matches(".json"));
    let config: serde_json::Value = serde_json::from_str(&tar_member(tar, &config_name)?)
        .map_err(|e| format!("{}: {config_name}: {e}", tar.display()))?;

    let host_id = docker(&["image", "inspect", "--format", "{{.Id}}", tag]).unwrap_or_default();
    if host_id.trim() != id {
        let path = tar
            .to_str()
            .ok_or_else(|| format!("non-UTF-8 path {}", tar.display()))?;
        docker(&["load", "-q", "-i", path])?;
    }

    let inspect: serde_json::Value = serde_json::from_str(&docker(&["image", "inspect", tag])?)
        .map_err(|e| format!("docker image inspect {tag}: {e}"))?;
    let inspect = &inspect[0];
    if inspect["Id"].as_str() != Some(id.as_str()) {
        return Err(format!(
            "docker image inspect {tag} says {}, the tarball holds {id}",
            inspect["Id"]
        ));
    }
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let diff_ids = strings(&inspect["RootFS"]["Layers"]);
    let mut repo_tags = strings(&inspect["RepoTags"]);
    repo_tags.sort();

    // `docker history` lists every instruction, newest first, but cannot tell
    // an empty-layer instruction (ENV) from a layer without content (RUN rm):
    // the image config's `empty_layer` flags can.
    let history: Vec<String> = docker(&[
        "history",
        "--no-trunc",
        "--format",
        "{{json .CreatedBy}}",
        tag,
    ])?
    .lines()
    .map(|l| serde_json::from_str::<String>(l).map_err(|e| format!("docker history: {e}: {l}")))
    .rev()
    .collect::<Result<_, _>>()?;
    let config_history = config["history"]
        .as_array()
        .ok_or_else(|| format!("{}: config has no history", tar.display()))?;
    let config_created: Vec<String> = config_history
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    if config_created != history {
        return Err(format!(
            "docker history of {tag} disagrees with its config:\n{history:#?}\n{config_created:#?}"
        ));
    }
    let layer_instructions: Vec<String> = config_history
        .iter()
        .zip(history)
        .filter(|(h, _)| h["empty_layer"].as_bool() != Some(true))
        .map(|(_, created_by)| created_by)
        .collect();
    if layer_instructions.len() != diff_ids.len() {
        return Err(format!(
            "{tag}: {} layers but {} non-empty history entries",
            diff_ids.len(),
            layer_instructions.len()
        ));
    }
    let layers = diff_ids
        .into_iter()
        .zip(layer_instructions)
        .map(|(diff_id, created_by)| ImageLayer {
            diff_id,
            created_by,
        })
        .collect();
    Ok(TestImage {
        tag: tag.to_string(),
        tar: tar.to_path_buf(),
        id,
        repo_tags,
        layers,
    })
}

/// One member of a tar archive, as text.
fn tar_member(tar: &Path, member: &str) -> Result<String, String> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg(member)
        .output()
        .map_err(|e| format!("running tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tar -xOf {} {member}: {}",
            tar.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{member}: {e}"))
}

/// sha256 (hex) over the contents of `files` and `extra`.
fn hash(files: &[&Path], extra: &str) -> Result<String, String> {
    let out = Command::new("sha256sum")
        .args(files)
        .output()
        .map_err(|e| format!("running sha256sum: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "sha256sum: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut sums: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect::<Vec<_>>()
        .join(" ");
    sums.push(' ');
    sums.push_str(extra);
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running sha256sum: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        io::Write::write_all(&mut stdin, sums.as_bytes())
            .map_err(|e| format!("writing to sha256sum: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or("");
    if hex.len() != 64 {
        return Err(format!("sha256sum printed {text:?}"));
    }
    Ok(hex.to_string())
}

/// An exclusive lock, held until the file is dropped.
fn lock(path: &Path) -> Result<File, String> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    // SAFETY: flock on a valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "locking {}: {}",
            path.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_index_to_image_layer() {
        let layer = |n: &str| ImageLayer {
            diff_id: format!("sha256:{n}"),
            created_by: format!("RUN {n}"),
        };
        let img = TestImage {
            tag: "t".into(),
            tar: PathBuf::new(),
            id: String::new(),
            repo_tags: vec![],
            layers: vec![layer("base"), layer("mid"), layer("top")],
        };
        assert_eq!(img.layer_at_index(1), None);
        assert_eq!(img.layer_at_index(2), Some(&layer("top")));
        assert_eq!(img.layer_at_index(4), Some(&layer("base")));
        assert_eq!(img.layer_at_index(5), None);
        assert_eq!(img.index_of("mid"), Ok(3));
        assert_eq!(img.base_index(), 4);
        assert!(img.index_of("RUN").is_err());
    }
}
