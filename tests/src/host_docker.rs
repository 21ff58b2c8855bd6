//! Docker on the host, for making images that VM tests load with
//! `VmOpts::docker_image`. Uses Debian's docker.io (`/usr/bin/docker`), not
//! whatever other client PATH may find first.
//!
//! No registry can be reached, so images are built offline: `docker import`
//! of a tarball made from busybox-static, then `docker save`.

use std::{
    fs,
    os::unix::{fs::symlink, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Debian's docker CLI.
pub const DOCKER: &str = "/usr/bin/docker";

/// Makes sure a Docker daemon answers on the host, starting `dockerd` with
/// the overlay2 storage driver (in its own session, logging to
/// /tmp/ovltrace-dockerd.log) if none does. It stays up for later tests.
pub fn ensure_daemon() -> Result<(), String> {
    if daemon_answers() {
        return Ok(());
    }
    let log = fs::File::create("/tmp/ovltrace-dockerd.log")
        .map_err(|e| format!("creating /tmp/ovltrace-dockerd.log: {e}"))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("duplicating log file: {e}"))?;
    let mut cmd = Command::new("dockerd");
    cmd.arg("--storage-driver=overlay2")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: setsid is async-signal-safe. The daemon outlives the test on
    // purpose (later tests reuse it), so it gets its own session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("starting dockerd: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if daemon_answers() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(500));
    }
    Err("dockerd did not answer within 60 s (see /tmp/ovltrace-dockerd.log)".into())
}

fn daemon_answers() -> bool {
    Command::new(DOCKER)
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the docker CLI; Err with its stderr on failure.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new(DOCKER)
        .args(args)
        .output()
        .map_err(|e| format!("running docker {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `docker save` tarball of a one-layer busybox image tagged `tag`, whose
/// rootfs also holds the files in `files` (path relative to /, contents).
/// Written to `dir/<tag with ':' and '/' as '_'>.tar`.
pub fn busybox_image(tag: &str, files: &[(&str, &[u8])], dir: &Path) -> Result<PathBuf, String> {
    ensure_daemon()?;
    let safe = tag.replace([':', '/'], "_");
    let work = dir.join(format!("{safe}.rootfs"));
    let _ = fs::remove_dir_all(&work);
    let bin = work.join("bin");
    fs::create_dir_all(&bin).map_err(|e| format!("creating {}: {e}", bin.display()))?;
    fs::copy("/usr/bin/busybox", bin.join("busybox"))
        .map_err(|e| format!("copying busybox (package busybox-static): {e}"))?;
    for applet in [
        "sh", "ls", "cat", "echo", "dd", "chmod", "chown", "mkdir", "rm", "mv", "sleep", "stat",
    ] {
        symlink("busybox", bin.join(applet)).map_err(|e| format!("linking {applet}: {e}"))?;
    }
    for (path, data) in files {
        let dest = work.join(path.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        fs::write(&dest, data).map_err(|e| format!("writing {}: {e}", dest.display()))?;
    }
    let rootfs_tar = dir.join(format!("{safe}.rootfs.tar"));
    let status = Command::new("tar")
        .arg("-C")
        .arg(&work)
        .arg("-cf")
        .arg(&rootfs_tar)
        .arg(".")
        .status()
        .map_err(|e| format!("running tar: {e}"))?;
    if !status.success() {
        return Err(format!("tar of {} failed: {status}", work.display()));
    }
    let rootfs = rootfs_tar
        .to_str()
        .ok_or_else(|| format!("non-UTF-8 path {}", rootfs_tar.display()))?;
    docker(&["import", rootfs, tag])?;
    let image_tar = dir.join(format!("{safe}.tar"));
    let image = image_tar
        .to_str()
        .ok_or_else(|| format!("non-UTF-8 path {}", image_tar.display()))?;
    docker(&["save", "-o", image, tag])?;
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_file(&rootfs_tar);
    Ok(image_tar)
}
