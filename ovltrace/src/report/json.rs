//! The saved report: JSON written atomically and never through a symlink,
//! and read back with its schema version checked first.

use std::{
    fs,
    io::{Read as _, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::{merge, Report, OLDEST_SCHEMA_READ, SCHEMA_VERSION};

pub fn to_string(report: &Report) -> Result<String> {
    serde_json::to_string_pretty(report).context("serialising the report")
}

/// Refuses a target that is a symbolic link or a directory.
fn check_not_link(target: &Path) -> Result<()> {
    if let Ok(meta) = fs::symlink_metadata(target) {
        if meta.file_type().is_symlink() {
            bail!(
                "refusing to write {}: it is a symbolic link",
                target.display()
            );
        }
        if meta.is_dir() {
            bail!("cannot write {}: it is a directory", target.display());
        }
    }
    Ok(())
}

fn dir_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks, before a trace starts, what can be known early about writing
/// `target` later: it is not a symlink or a directory, and its directory
/// exists. [`write_atomic`] checks again (things change during a trace).
pub fn check_target(target: &Path) -> Result<()> {
    check_not_link(target)?;
    let dir = dir_of(target);
    if !dir.is_dir() {
        bail!(
            "cannot write {}: {} is not a directory",
            target.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Writes `data` to `target` via a new temporary file in the same directory
/// and a rename, so readers never see a partial file. An existing symlink at
/// `target` is refused rather than replaced or followed.
pub fn write_atomic(target: &Path, data: &[u8]) -> Result<()> {
    check_not_link(target)?;
    let dir = dir_of(target);
    let name = target
        .file_name()
        .with_context(|| format!("{} has no file name", target.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| -> Result<()> {
        // O_EXCL|O_NOFOLLOW: never reuse or follow whatever is at the temp name.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("flushing {}", tmp.display()))?;
        fs::rename(&tmp, target)
            .with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Larger than any report ovltrace writes by far; a bigger file is refused
/// before it is read into memory.
const MAX_REPORT_BYTES: u64 = 512 << 20;

/// Reads and parses one report. Every failure is one line naming the file.
pub fn load(path: &Path) -> Result<Report> {
    let name = crate::text::terminal(&path.display().to_string());
    let fail = |what: String| anyhow!("{name}: {what}");
    let file = fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_REPORT_BYTES {
        return Err(fail(format!(
            "larger than {} MiB: not an ovltrace report",
            MAX_REPORT_BYTES >> 20
        )));
    }
    parse(&bytes).map_err(|e| fail(format!("{e:#}")))
}

/// Parses a report, checking its schema version before its fields (a newer
/// schema would otherwise fail on some field with a misleading message).
pub fn parse(bytes: &[u8]) -> Result<Report> {
    #[derive(Deserialize)]
    struct Version {
        schema_version: Option<serde_json::Value>,
    }
    let v: Version =
        serde_json::from_slice(bytes).map_err(|e| anyhow!("not an ovltrace JSON report: {e}"))?;
    let readable = OLDEST_SCHEMA_READ..=SCHEMA_VERSION;
    match v.schema_version {
        None => bail!("not an ovltrace JSON report: no schema_version"),
        Some(serde_json::Value::Number(n))
            if n.as_u64()
                .is_some_and(|n| u32::try_from(n).is_ok_and(|n| readable.contains(&n))) => {}
        Some(other) => {
            bail!(
                "unsupported schema_version {other} (this ovltrace reads {})",
                merge::schemas_read()
            )
        }
    }
    let mut r: Report =
        serde_json::from_slice(bytes).map_err(|e| anyhow!("not an ovltrace JSON report: {e}"))?;
    merge::upgrade(&mut r);
    merge::check_schema(&r)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.json");
        write_atomic(&target, b"{\"a\":1}").unwrap();
        write_atomic(&target, b"{\"a\":2}").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"{\"a\":2}");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_symlink_target() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("out.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = write_atomic(&link, b"x").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn checks_targets_before_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        check_target(&dir.path().join("new.json")).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        let err = check_target(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        let err = check_target(dir.path()).unwrap_err().to_string();
        assert!(err.contains("directory"), "{err}");
        let err = check_target(Path::new("/nonexistent-dir/x.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent-dir is not a directory"), "{err}");
        check_target(Path::new("relative.json")).unwrap();
    }

    #[test]
    fn reports_missing_directory() {
        let err = write_atomic(Path::new("/nonexistent-dir/x.json"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent-dir"), "{err:#}");
    }
}
