//! Host tests with real containerd and Podman daemons (no kernel probes
//! needed): `ovltrace layers --json` must agree with each runtime's own view.
//!
//! Both run isolated in a temporary directory (their own roots, state and
//! sockets), so nothing of the host's daemons is touched. The image is a
//! two-layer `docker save`-format archive written here (busybox-static base,
//! a COPY-like layer), imported with `ctr images import` / `podman load`.
//!
//! - containerd: a container started with `ctr run` carrying Kubernetes pod
//!   labels; ovltrace's layers must be the snapshot chain `ctr snapshots
//!   info` walks from the container's snapshot key (chain-ids), with the
//!   image's diff-ids and instructions, the image digest of `ctr images ls`,
//!   and the pod from the labels.
//! - Podman: a container from `podman run`; layers must be `podman inspect`'s
//!   LowerDir (as layer directories), `podman image inspect`'s RootFS.Layers
//!   (diff-ids) and `podman history`'s instructions; id, name, image id and
//!   tags as Podman reports them.
//!
//! Needs root, containerd/ctr, podman, runc and busybox-static; the skip
//! policy of `ovltrace_tests::require` applies (`SKIPPED:`, or a failure
//! with OVLTRACE_TEST_STRICT=1 as in CI).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ovltrace_tests::{bin, require_or_skip, require_or_skip_with};
use serde_json::Value;

const TAG: &str = "ovltrace-test/rt:1";
const BASE_BY: &str = "ovltrace runtimes base (busybox-static)";
const COPY_BY: &str = "COPY big.bin /data/ # ovltrace test";

fn sha256(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The test image: a `docker save` archive, its diff-ids (base first).
struct Image {
    tar: PathBuf,
    diff_ids: Vec<String>,
}

fn tar_dir(dir: &Path, out: &Path) {
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "--sort=name"])
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg("."))
    .unwrap();
}

fn build_image(work: &Path) -> Image {
    let arch = work.join("archive");
    fs::create_dir_all(&arch).unwrap();
    // Layer 1: busybox-static with sh, and /etc/base.txt.
    let l1 = work.join("l1");
    fs::create_dir_all(l1.join("bin")).unwrap();
    fs::create_dir_all(l1.join("etc")).unwrap();
    fs::create_dir_all(l1.join("tmp")).unwrap();
    fs::copy("/usr/bin/busybox", l1.join("bin/busybox")).unwrap();
    for a in ["sh", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", l1.join("bin").join(a)).unwrap();
    }
    fs::write(l1.join("etc/base.txt"), vec![b'b'; 5000]).unwrap();
    // Layer 2: /data/big.bin.
    let l2 = work.join("l2");
    fs::create_dir_all(l2.join("data")).unwrap();
    fs::write(l2.join("data/big.bin"), vec![b'B'; 200_000]).unwrap();
    let mut diff_ids = Vec::new();
    let mut layer_names = Vec::new();
    for (i, dir) in [&l1, &l2].into_iter().enumerate() {
        let t = work.join(format!("layer{i}.tar"));
        tar_dir(dir, &t);
        let hex = sha256(&fs::read(&t).unwrap());
        fs::create_dir_all(arch.join(&hex)).unwrap();
        fs::rename(&t, arch.join(&hex).join("layer.tar")).unwrap();
        layer_names.push(format!("{hex}/layer.tar"));
        diff_ids.push(format!("sha256:{hex}"));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2020-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2020-01-01T00:00:00Z", "created_by": "", "comment": BASE_BY},
            {"created": "2020-01-01T00:00:00Z", "created_by": "ENV PATH=/bin", "empty_layer": true},
            {"created": "2020-01-01T00:00:00Z", "created_by": COPY_BY}
        ]
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", sha256(&config));
    fs::write(arch.join(&config_name), &config).unwrap();
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": [TAG], "Layers": layer_names
    }]);
    fs::write(
        arch.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let tar = work.join("image.tar");
    tar_dir(&arch, &tar);
    Image { tar, diff_ids }
}

fn chain_ids(diffs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diffs {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => format!("sha256:{}", sha256(format!("{p} {d}").as_bytes())),
        };
        out.push(next);
    }
    out
}

fn ovltrace_layers(extra: &[&str]) -> Value {
    let out = Command::new(bin::ovltrace())
        .arg("layers")
        .arg("--json")
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running ovltrace layers");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ovltrace layers failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["schema_version"], 2);
    v
}

fn find<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["containers"]
        .as_array()
        .expect("containers[]")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("container {id} not in {report:#}"))
}

/// Err naming the first of `bins` not installed (in the system's bin
/// directories, not whatever PATH finds first).
fn have(bins: &[&str], how: &str) -> Result<(), String> {
    match bins.iter().find(|b| {
        !["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(b).is_file())
    }) {
        Some(b) => Err(format!("{b} missing ({how})")),
        None => Ok(()),
    }
}

/// A daemon child, killed (and reaped) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: a signal to our own unreaped child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Unmounts everything mounted below `dir` (deepest first).
fn unmount_below(dir: &Path) {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mps: Vec<String> = mi
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| Path::new(mp).starts_with(dir))
        .collect();
    mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mp in mps {
        let _ = Command::new("umount").arg("-l").arg(&mp).status();
    }
}

#[test]
fn containerd_layers_match_ctr() {
    if !require_or_skip("root")
        || !require_or_skip_with(
            "containerd",
            have(&["containerd", "ctr", "runc"], "apt-get install containerd"),
        )
        || !require_or_skip("busybox")
    {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("ovltrace-ctd")
        .tempdir_in("/var/tmp")
        .unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let img = build_image(&dir);
    let sock = dir.join("containerd.sock");
    let config = format!(
        "version = 2\nroot = \"{r}/root\"\nstate = \"{r}/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n",
        r = dir.display(),
        s = sock.display()
    );
    fs::write(dir.join("config.toml"), config).unwrap();
    let log = fs::File::create(dir.join("containerd.log")).unwrap();
    let daemon = Daemon(
        Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd"),
    );
    let ctr = |args: &[&str]| -> String {
        run(Command::new("ctr")
            .arg("-a")
            .arg(&sock)
            .args(["-n", "ovltrace-test"])
            .args(args))
        .unwrap_or_else(|e| {
            let log = fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
            panic!("{e}\ncontainerd log:\n{log}")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while run(Command::new("ctr").arg("-a").arg(&sock).arg("version")).is_err() {
        assert!(Instant::now() < deadline, "containerd did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tar = img.tar.to_str().unwrap();
    ctr(&["images", "import", tar]);
    let name = format!("docker.io/{TAG}");
    ctr(&[
        "run",
        "-d",
        "--label",
        "io.kubernetes.pod.name=api-7d9f",
        "--label",
        "io.kubernetes.pod.namespace=shop",
        &name,
        "ctd-1",
        "sleep",
        "600",
    ]);

    let report = ovltrace_layers(&[]);
    let result = std::panic::catch_unwind(|| {
        let c = find(&report, "ctd-1");
        assert_eq!(c["runtime"], "containerd");
        assert_eq!(c["name"], "ctd-1");
        assert_eq!(c["pod"]["name"], "api-7d9f");
        assert_eq!(c["pod"]["namespace"], "shop");
        // The image, as `ctr images ls` shows it.
        let ls = ctr(&["images", "ls"]);
        let line = ls
            .lines()
            .find(|l| l.starts_with(&name))
            .unwrap_or_else(|| panic!("{name} not in {ls}"));
        let digest = line.split_whitespace().nth(2).unwrap();
        assert_eq!(c["image"]["id"], digest, "{line}");
        assert_eq!(c["image"]["tags"], serde_json::json!([name]));
        // The snapshot chain ctr shows, from the container's snapshot key.
        let info: Value = serde_json::from_str(&ctr(&["containers", "info", "ctd-1"])).unwrap();
        assert_eq!(info["Snapshotter"], "overlayfs");
        let mut key = info["SnapshotKey"].as_str().unwrap().to_string();
        let mut chain = Vec::new();
        loop {
            let s: Value = serde_json::from_str(&ctr(&["snapshots", "info", &key])).unwrap();
            match s["Parent"].as_str() {
                Some(p) if !p.is_empty() => {
                    chain.push(p.to_string());
                    key = p.to_string();
                }
                _ => break,
            }
        }
        let want_chains = chain_ids(&img.diff_ids);
        let mut top_first = want_chains.clone();
        top_first.reverse();
        assert_eq!(chain, top_first, "ctr's chain is the image's");
        let layers = c["layers"].as_array().expect("layers[]");
        assert_eq!(layers.len(), chain.len());
        let by = [String::new(), COPY_BY.to_string()];
        for (i, l) in layers.iter().enumerate() {
            let pos = layers.len() - i;
            assert_eq!(l["index"], i + 1);
            assert_eq!(l["init"], false);
            assert_eq!(l["position"], pos);
            assert_eq!(l["chain_id"], chain[i].as_str());
            assert_eq!(l["diff_id"], img.diff_ids[pos - 1].as_str());
            assert_eq!(l["created_by"], by[pos - 1].as_str());
            let dir = l["dir"].as_str().expect("dir");
            assert!(Path::new(dir).is_dir(), "{dir}");
        }
        assert_eq!(layers[1]["comment"], BASE_BY);
        assert!(layers[0]["size"].as_u64().is_some_and(|s| s >= 200_000));
        let roots = report["runtimes"][1]["roots"].as_array().unwrap();
        assert!(
            roots
                .iter()
                .any(|r| r == dir.join("root").to_str().unwrap()),
            "{roots:?}"
        );
    });
    let _ = run(Command::new("ctr").arg("-a").arg(&sock).args([
        "-n",
        "ovltrace-test",
        "task",
        "kill",
        "-s",
        "KILL",
        "ctd-1",
    ]));
    std::thread::sleep(Duration::from_millis(300));
    let _ = run(Command::new("ctr").arg("-a").arg(&sock).args([
        "-n",
        "ovltrace-test",
        "task",
        "rm",
        "-f",
        "ctd-1",
    ]));
    drop(daemon);
    unmount_below(&dir);
    if let Err(e) = result {
        eprintln!("{report:#}");
        std::panic::resume_unwind(e);
    }
}

#[test]
fn podman_layers_match_podman_inspect() {
    if !require_or_skip("root")
        || !require_or_skip_with(
            "podman",
            have(&["podman", "runc"], "apt-get install podman"),
        )
        || !require_or_skip("busybox")
    {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("ovltrace-pm")
        .tempdir_in("/var/tmp")
        .unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let img = build_image(&dir);
    let root = dir.join("storage");
    let podman = |args: &[&str]| -> String {
        run(Command::new("podman")
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(dir.join("run"))
            // runc: the hosts' hybrid cgroup set-up defeats crun.
            .args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    podman(&["load", "-q", "-i", img.tar.to_str().unwrap()]);
    let id = podman(&[
        "run",
        "-d",
        "--network",
        "none",
        // Podman's default limits exceed what the test hosts allow.
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--name",
        "pm-1",
        &format!("localhost/{TAG}"),
        "sleep",
        "600",
    ])
    .trim()
    .to_string();

    let report = ovltrace_layers(&["--podman-root", root.to_str().unwrap()]);
    let result = std::panic::catch_unwind(|| {
        let c = find(&report, &id);
        assert_eq!(c["runtime"], "podman");
        let inspect: Value = serde_json::from_str(&podman(&["inspect", "pm-1"])).unwrap();
        let inspect = &inspect[0];
        assert_eq!(c["name"], inspect["Name"]);
        let image_id = inspect["Image"].as_str().unwrap();
        assert_eq!(c["image"]["id"], format!("sha256:{image_id}"));
        let gd = &inspect["GraphDriver"]["Data"];
        assert_eq!(c["upperdir"], gd["UpperDir"]);
        let lowers: Vec<&str> = gd["LowerDir"].as_str().unwrap().split(':').collect();
        let iimg: Value = serde_json::from_str(&podman(&["image", "inspect", image_id])).unwrap();
        let iimg = &iimg[0];
        let mut tags: Vec<String> = iimg["RepoTags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        tags.sort();
        assert_eq!(c["image"]["tags"], serde_json::json!(tags));
        let diffs: Vec<&str> = iimg["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert_eq!(diffs, img.diff_ids);
        // `podman history`: newest first, with empty layers.
        let hist: Value =
            serde_json::from_str(&podman(&["history", "--format", "json", image_id])).unwrap();
        let made: Vec<String> = hist
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["size"].as_u64().is_some_and(|s| s > 0))
            .map(|h| h["CreatedBy"].as_str().unwrap_or("").to_string())
            .collect();
        let layers = c["layers"].as_array().expect("layers[]");
        assert_eq!(layers.len(), lowers.len());
        assert_eq!(layers.len(), diffs.len());
        let chains = chain_ids(&img.diff_ids);
        for (i, l) in layers.iter().enumerate() {
            let pos = layers.len() - i;
            assert_eq!(l["index"], i + 1);
            assert_eq!(l["position"], pos);
            assert_eq!(l["diff_id"], diffs[pos - 1]);
            assert_eq!(l["chain_id"], chains[pos - 1].as_str());
            // LowerDir names each layer's diff directory (possibly via l/).
            let want = fs::canonicalize(lowers[i]).unwrap();
            let got = fs::canonicalize(l["dir"].as_str().expect("dir")).unwrap();
            assert_eq!(got, want, "index {}", i + 1);
            if let Some(h) = made.get(i) {
                assert_eq!(l["created_by"], h.as_str(), "index {}", i + 1);
            }
        }
        assert_eq!(layers[0]["created_by"], COPY_BY);
        assert_eq!(layers[1]["created_by"], "");
        assert_eq!(layers[1]["comment"], BASE_BY);
    });
    let _ = run(Command::new("podman")
        .arg("--root")
        .arg(&root)
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(["--events-backend", "file", "rm", "-f", "-t", "0", "pm-1"]));
    unmount_below(&dir);
    if let Err(e) = result {
        eprintln!("{report:#}");
        std::panic::resume_unwind(e);
    }
}
