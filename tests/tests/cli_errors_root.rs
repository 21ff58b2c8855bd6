//! CLI errors that need root, since `run` checks root before anything else:
//! unknown `--container` names (which list the running containers), and
//! `--json` onto a symbolic link or into no directory, both refused before
//! tracing. No probes are needed: `run` checks root, then the container
//! filters and the output file, then loads probes. The listing case also
//! mounts an overlay over a small Docker root fixture.
//!
//! Without root they print `SKIPPED` (and fail with OVLTRACE_TEST_STRICT=1).
//! The hermetic cases (bad flags, durations, sizes) are in
//! ovltrace/tests/cli_errors.rs.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use ovltrace_tests::{bin, cli::one_error_line, require_or_skip, require_or_skip_with};

fn ovltrace(args: &[&str]) -> Output {
    let bin = bin::ovltrace();
    Command::new(bin)
        .args(args)
        // Warnings of the tool itself would be extra lines; keep the default.
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The error of a `run` that got past its flags on this host: loading or
/// attaching the probes fails here (no kprobes, or a build without them).
/// Returns stderr's lines before that error (whose explanation follows it).
fn notes_before_the_probe_error(o: &Output) -> Vec<String> {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let lines: Vec<String> = err.lines().map(str::to_string).collect();
    let errors = lines.iter().filter(|l| l.contains("error:")).count();
    assert_eq!(errors, 1, "one error line:\n{err}");
    lines
        .into_iter()
        .take_while(|l| !l.contains("error:"))
        .collect()
}

/// The containers are looked at once the kernel's BTF is read, which a
/// build without eBPF programs never gets to.
fn has_programs(o: &Output) -> bool {
    let built = if stderr(o).contains("AYA_BUILD_SKIP") {
        Err("the binary was built without eBPF programs (AYA_BUILD_SKIP)".to_string())
    } else {
        Ok(())
    };
    require_or_skip_with("a binary with eBPF programs", built)
}

#[test]
fn unknown_container_is_waited_for_without_docker() {
    if !require_or_skip("root") {
        return;
    }
    let empty = tempfile::tempdir().unwrap();
    let root = empty.path().to_str().unwrap();
    let others = other_runtimes_containers(root);
    let o = ovltrace(&["run", "--docker-root", root, "--container", "nope"]);
    if !has_programs(&o) {
        return;
    }
    let listed = if others.is_empty() {
        "none".to_string()
    } else {
        others.join(", ")
    };
    assert_eq!(
        notes_before_the_probe_error(&o),
        vec![format!(
            "ovltrace: waiting for container \"nope\": no running container has this name or \
             id prefix yet (running: {listed})"
        )]
    );
}

/// Containers of the host's other runtimes (containerd, Podman) that a
/// Docker root of `root` does not hide, as the error lists them: "name
/// (short id)". A host running such containers lists them too.
fn other_runtimes_containers(root: &str) -> Vec<String> {
    let o = ovltrace(&["layers", "--json", "--docker-root", root]);
    assert!(o.status.success(), "ovltrace layers: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("layers JSON");
    v["containers"]
        .as_array()
        .expect("containers[]")
        .iter()
        .filter(|c| c["runtime"] != "docker")
        .map(|c| {
            let id = c["id"].as_str().expect("id");
            let short: String = id.chars().take(12).collect();
            let name = c["name"].as_str().map_or(short.clone(), str::to_string);
            format!("{name} ({short})")
        })
        .collect()
}

/// A Docker root with one container (`web-1`, one image layer) whose overlay
/// is really mounted; unmounted on drop.
struct MountedContainer {
    dir: tempfile::TempDir,
    merged: PathBuf,
}

impl Drop for MountedContainer {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.merged).status();
    }
}

const CID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const CHAIN: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn write(p: &Path, data: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn mounted_container() -> Result<MountedContainer, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path();
    let o2 = root.join("overlay2");
    let lower = o2.join("layer1/diff");
    fs::create_dir_all(lower.join("etc")).unwrap();
    write(&o2.join("layer1/link"), "SHORTLOWER1");
    let rw = o2.join("rwlayer");
    for d in ["diff", "work", "merged"] {
        fs::create_dir_all(rw.join(d)).unwrap();
    }
    let layerdb = root.join("image/overlay2/layerdb");
    write(
        &layerdb.join("sha256").join(CHAIN).join("cache-id"),
        "layer1",
    );
    write(
        &layerdb.join("sha256").join(CHAIN).join("diff"),
        &format!("sha256:{CHAIN}"),
    );
    write(&layerdb.join("sha256").join(CHAIN).join("size"), "0");
    write(
        &layerdb.join("mounts").join(CID).join("mount-id"),
        "rwlayer",
    );
    write(
        &root.join("containers").join(CID).join("config.v2.json"),
        &format!("{{\"ID\": \"{CID}\", \"Name\": \"/web-1\"}}"),
    );
    let merged = rw.join("merged");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        rw.join("diff").display(),
        rw.join("work").display()
    );
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .output()
        .map_err(|e| format!("mount: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mount -t overlay failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(MountedContainer { dir, merged })
}

#[test]
fn unknown_container_note_lists_the_running_ones() {
    if !require_or_skip("root") {
        return;
    }
    let Some(fx) = ovltrace_tests::require("an overlay mount", mounted_container()) else {
        return;
    };
    let root = fx.dir.path().to_str().unwrap();
    let mut running = other_runtimes_containers(root);
    running.push("web-1 (c0ffee00c0ff)".into());
    running.sort();
    let o = ovltrace(&["run", "--docker-root", root, "--container", "web-2"]);
    if !has_programs(&o) {
        return;
    }
    assert_eq!(
        notes_before_the_probe_error(&o),
        vec![format!(
            "ovltrace: waiting for container \"web-2\": no running container has this name or \
             id prefix yet (running: {})",
            running.join(", ")
        )]
    );
    // A name that matches is not waited for.
    let o = ovltrace(&[
        "run",
        "-d",
        "1s",
        "--docker-root",
        root,
        "--container",
        "web-1",
    ]);
    assert!(
        notes_before_the_probe_error(&o).is_empty(),
        "{}",
        stderr(&o)
    );
}

#[test]
fn json_onto_a_symlink_is_refused_before_tracing() {
    if !require_or_skip("root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    let link = dir.path().join("out.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let o = ovltrace(&["run", "--json", link.to_str().unwrap()]);
    let line = one_error_line(&o, 1);
    assert_eq!(
        line,
        format!(
            "ovltrace: error: refusing to write {}: it is a symbolic link",
            link.display()
        )
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        2,
        "nothing else written"
    );

    let o = ovltrace(&["run", "--json", "/nonexistent-ovltrace-dir/r.json"]);
    let line = one_error_line(&o, 1);
    assert!(
        line.ends_with("/nonexistent-ovltrace-dir is not a directory"),
        "{line}"
    );
}
