//! Debian cloud kernels for the VMs: resolved through apt at run time (the
//! package names move with point releases), downloaded and unpacked once into
//! the cache, keyed by package name and version.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use crate::{say, util};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Series {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
}

impl Series {
    pub fn name(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    /// The Debian metapackage that depends on the current kernel of the series.
    fn metapackage(self) -> &'static str {
        match self {
            Series::V6_1 => "linux-image-cloud-amd64",
            Series::V6_12 => "linux-image-6.12-cloud-amd64",
        }
    }

    fn matches_release(self, release: &str) -> bool {
        release.starts_with(&format!("{}.", self.name()))
    }
}

/// An unpacked kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// e.g. `linux-image-6.12.117+deb12-cloud-amd64`
    pub package: String,
    /// e.g. `6.12.117-1~deb12u1`
    pub version: String,
    /// `uname -r` of the kernel, e.g. `6.12.117+deb12-cloud-amd64`
    pub release: String,
    pub vmlinuz: PathBuf,
    /// overlay.ko, decompressed (busybox insmod cannot read .xz).
    pub overlay_ko: PathBuf,
}

const COMPLETE: &str = "kernel.complete";

/// Finds the current kernel of `series`, downloading and unpacking it if it is
/// not cached yet. Falls back to the newest cached kernel of the series when
/// apt cannot resolve or download.
pub fn resolve(series: Series) -> Result<Kernel> {
    let dir = util::cache_dir()?.join("kernels");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = util::FileLock::acquire(&dir.join(".lock"))?;
    match resolve_via_apt(series, &dir) {
        Ok(k) => Ok(k),
        Err(err) => match newest_cached(series, &dir)? {
            Some(k) => {
                say!(
                    "kernel {}: apt failed ({err:#}); using cached {} {}",
                    series.name(),
                    k.package,
                    k.version
                );
                Ok(k)
            }
            None => Err(err.context(format!(
                "no {} kernel could be downloaded and none is cached in {}",
                series.name(),
                dir.display()
            ))),
        },
    }
}

fn resolve_via_apt(series: Series, dir: &Path) -> Result<Kernel> {
    let (package, version) = current_package(series, dir)?;
    let unpacked = dir.join(format!("{package}_{version}"));
    if unpacked.join(COMPLETE).is_file() {
        return load(&unpacked);
    }
    say!("kernel {}: fetching {package} {version}", series.name());
    let deb = download(dir, &package, &version)?;
    unpack(series, &deb, &unpacked, &package, &version)
}

/// The kernel package and version the series' metapackage depends on.
/// apt-cache takes most of a second here (no binary package cache), so the
/// answer is remembered until the apt lists change.
fn current_package(series: Series, dir: &Path) -> Result<(String, String)> {
    let lists_stamp = fs::metadata("/var/lib/apt/lists")
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().to_string());
    let memo = dir.join(format!("resolved-{}", series.name()));
    if let (Some(stamp), Ok(text)) = (&lists_stamp, fs::read_to_string(&memo)) {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if let [s, package, version] = fields[..] {
            if s == stamp {
                return Ok((package.to_string(), version.to_string()));
            }
        }
    }
    let meta = series.metapackage();
    let out = util::output(Command::new("apt-cache").args(["show", "--no-all-versions", meta]))?;
    let depends = out
        .lines()
        .find_map(|l| l.strip_prefix("Depends:"))
        .with_context(|| format!("`apt-cache show {meta}` has no Depends"))?;
    let (package, version) = parse_depends(depends)
        .with_context(|| format!("`apt-cache show {meta}` depends on no linux-image package"))?;
    let version = match version {
        Some(v) => v,
        None => candidate_version(&package)?,
    };
    if let Some(stamp) = lists_stamp {
        let _ = fs::write(&memo, format!("{stamp} {package} {version}\n"));
    }
    Ok((package, version))
}

/// From `linux-image-X (= V), other` takes `linux-image-X` and `V`.
fn parse_depends(depends: &str) -> Option<(String, Option<String>)> {
    depends.split(',').map(str::trim).find_map(|dep| {
        let dep = dep.split('|').next()?.trim();
        let (name, rest) = dep.split_once(' ').unwrap_or((dep, ""));
        if !name.starts_with("linux-image-") {
            return None;
        }
        let version = rest
            .trim()
            .strip_prefix("(=")
            .and_then(|v| v.strip_suffix(')'))
            .map(|v| v.trim().to_string());
        Some((name.to_string(), version))
    })
}

fn candidate_version(package: &str) -> Result<String> {
    let out = util::output(Command::new("apt-cache").args(["show", "--no-all-versions", package]))?;
    out.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("`apt-cache show {package}` gives no version"))
}

/// Downloads `package=version` into `dir` unless the .deb is already there.
fn download(dir: &Path, package: &str, version: &str) -> Result<PathBuf> {
    // apt-get download names files <package>_<version with ':' as %3a>_<arch>.deb
    let deb = dir.join(format!(
        "{package}_{}_amd64.deb",
        version.replace(':', "%3a")
    ));
    if deb.is_file() {
        return Ok(deb);
    }
    let fetch = || {
        util::output(
            Command::new("apt-get")
                .args(["download", &format!("{package}={version}")])
                .current_dir(dir),
        )
    };
    if let Err(first) = fetch() {
        // The lists may be stale (the point release left the mirror).
        say!("apt-get download failed ({first:#}); running apt-get update");
        util::output(Command::new("apt-get").arg("update"))?;
        fetch()?;
    }
    if !deb.is_file() {
        bail!("apt-get download did not produce {}", deb.display());
    }
    Ok(deb)
}

fn unpack(series: Series, deb: &Path, dest: &Path, package: &str, version: &str) -> Result<Kernel> {
    let tmp = util::tmp_sibling(dest);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let root = tmp.join("root");
    util::output(Command::new("dpkg").arg("-x").arg(deb).arg(&root))?;

    let boot = root.join("boot");
    let vmlinuz = fs::read_dir(&boot)
        .with_context(|| format!("listing {}", boot.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{} holds no vmlinuz", deb.display()))?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("odd vmlinuz name")?
        .to_string();
    if !series.matches_release(&release) {
        bail!(
            "{package} is kernel {release}, not of the {} series",
            series.name()
        );
    }

    let modules = root.join("lib/modules").join(&release);
    let ko = find_overlay_module(&modules)?;
    let overlay_ko = tmp.join("overlay.ko");
    decompress_module(&ko, &overlay_ko)?;

    let meta = format!("package={package}\nversion={version}\nrelease={release}\n");
    fs::write(tmp.join("kernel.meta"), meta).context("writing kernel.meta")?;
    fs::write(tmp.join(COMPLETE), b"").context("writing completion marker")?;
    let _ = fs::remove_dir_all(dest);
    fs::rename(&tmp, dest).with_context(|| format!("renaming to {}", dest.display()))?;
    load(dest)
}

fn find_overlay_module(modules: &Path) -> Result<PathBuf> {
    let dir = modules.join("kernel/fs/overlayfs");
    [
        "overlay.ko",
        "overlay.ko.xz",
        "overlay.ko.zst",
        "overlay.ko.gz",
    ]
    .iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
    .with_context(|| format!("no overlay module in {}", dir.display()))
}

fn decompress_module(src: &Path, dest: &Path) -> Result<()> {
    let tool = match src.extension().and_then(|e| e.to_str()) {
        Some("ko") => {
            fs::copy(src, dest).with_context(|| format!("copying {}", src.display()))?;
            return Ok(());
        }
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("unknown module compression: {}", src.display()),
    };
    let out = fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let status = Command::new(tool)
        .arg("-dc")
        .arg(src)
        .stdout(out)
        .status()
        .with_context(|| format!("running {tool}"))?;
    if !status.success() {
        bail!("{tool} -dc {} failed: {status}", src.display());
    }
    Ok(())
}

fn load(dir: &Path) -> Result<Kernel> {
    let meta_path = dir.join("kernel.meta");
    let meta = fs::read_to_string(&meta_path)
        .with_context(|| format!("reading {}", meta_path.display()))?;
    let field = |key: &str| {
        meta.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .map(str::to_string)
            .with_context(|| format!("{} lacks {key}", meta_path.display()))
    };
    let release = field("release")?;
    Ok(Kernel {
        package: field("package")?,
        version: field("version")?,
        vmlinuz: dir.join("root/boot").join(format!("vmlinuz-{release}")),
        overlay_ko: dir.join("overlay.ko"),
        release,
    })
}

fn newest_cached(series: Series, dir: &Path) -> Result<Option<Kernel>> {
    let mut best: Option<(SystemTime, Kernel)> = None;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let Ok(marker) = fs::metadata(path.join(COMPLETE)) else {
            continue;
        };
        let Ok(kernel) = load(&path) else { continue };
        if !series.matches_release(&kernel.release) {
            continue;
        }
        let when = marker.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _)| when > *t) {
            best = Some((when, kernel));
        }
    }
    Ok(best.map(|(_, k)| k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metapackage_depends() {
        assert_eq!(
            parse_depends(" linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"),
            Some((
                "linux-image-6.1.0-56-cloud-amd64".into(),
                Some("6.1.192-2".into())
            ))
        );
        assert_eq!(
            parse_depends("foo, linux-image-6.12.1-cloud-amd64"),
            Some(("linux-image-6.12.1-cloud-amd64".into(), None))
        );
        assert_eq!(parse_depends("foo (>= 1)"), None);
    }
}
