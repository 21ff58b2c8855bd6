//! Host test with a real dockerd: `ovltrace layers --json` must agree exactly with
//! `docker inspect` (GraphDriver.Data), `docker image inspect` (RootFS.Layers, RepoTags)
//! and `docker history --no-trunc` for every running container, and the source-layer
//! lookup must agree with what the containers themselves see.
//!
//! Starts dockerd when none answers (`host_docker::ensure_daemon`: it stays up for the
//! later tests). Needs root, Debian's docker.io and busybox-static; the skip policy of
//! `ovltrace_tests::require` applies (`SKIPPED:`, or a failure with
//! OVLTRACE_TEST_STRICT=1 as in CI).

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

use ovltrace_tests::{bin, host_docker, require_or_skip, require_or_skip_with};
use serde_json::Value;
use sha2::{Digest, Sha256};

const BASE: &str = "ovltrace-test/base:1";
const APP: &str = "ovltrace-test/app:1";
const MANY: &str = "ovltrace-test/many:1";
/// Size of /data/blob.bin in APP (see tests/fixtures/build-images.sh).
const BLOB_SIZE: u64 = 1048699;

fn docker(args: &[&str]) -> Result<String, String> {
    host_docker::docker(args)
}

fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

fn docker_json(args: &[&str]) -> Value {
    let s = docker_ok(args);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("docker {args:?}: bad JSON {e}: {s}"))
}

/// Containers this test started; removed on drop, pass or fail.
#[derive(Default)]
struct Containers(Vec<String>);

impl Containers {
    fn run(&mut self, args: &[&str]) -> String {
        let mut full = vec!["run", "-d", "--network", "none"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["sleep", "3600"]);
        let id = docker_ok(&full).trim().to_string();
        assert!(id.len() == 64, "docker run printed {id:?}");
        self.0.push(id.clone());
        id
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(self.0.iter().map(String::as_str));
            if let Err(e) = docker(&args) {
                eprintln!("docker_layers: cleanup: {e}");
            }
        }
    }
}

fn running_ids() -> BTreeSet<String> {
    docker_ok(&["ps", "-q", "--no-trunc"])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn ovltrace_layers(args: &[&str]) -> String {
    let out = Command::new(bin::ovltrace())
        .arg("layers")
        .args(args)
        .output()
        .expect("running ovltrace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ovltrace layers {args:?} failed: {stderr}"
    );
    assert!(
        !stderr.contains("WARN"),
        "ovltrace layers warned about a healthy Docker: {stderr}"
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn chain_ids(diffs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diffs {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => format!("sha256:{:x}", Sha256::digest(format!("{p} {d}").as_bytes())),
        };
        out.push(next);
    }
    out
}

/// Compares one container of `ovltrace layers --json` with what docker says.
/// Containers of others (`ours` false) may vanish meanwhile, and their images may
/// have content-free layers, which `docker history` cannot tell from empty ones.
fn check_container(report: &Value, id: &str, ours: bool) -> Option<Value> {
    let insp = match docker(&["inspect", id]) {
        Ok(s) => serde_json::from_str::<Value>(&s).expect("inspect JSON"),
        Err(e) if !ours => {
            eprintln!("docker_layers: not checking {id}: {e}");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let insp = &insp[0];
    let c = report["containers"]
        .as_array()
        .expect("containers[]")
        .iter()
        .find(|c| c["id"] == insp["Id"])
        .unwrap_or_else(|| panic!("container {id} missing from ovltrace layers"))
        .clone();
    let name = s(&insp["Name"]).trim_start_matches('/');
    assert_eq!(s(&c["name"]), name);
    assert_eq!(c["runtime"], "docker");
    assert_eq!(s(&insp["GraphDriver"]["Name"]), "overlay2");
    let gd = &insp["GraphDriver"]["Data"];
    assert_eq!(c["mountpoint"], gd["MergedDir"], "{name}: mountpoint");
    assert_eq!(c["upperdir"], gd["UpperDir"], "{name}: upperdir");

    // Overlay device, as stat shows it for the merged dir.
    let st = std::fs::metadata(s(&gd["MergedDir"])).expect("stat MergedDir");
    let dev = format!("{}:{}", libc::major(st.dev()), libc::minor(st.dev()));
    assert_eq!(s(&c["dev"]), dev, "{name}: dev");

    // Layer directories, index by index.
    let lower: Vec<&str> = s(&gd["LowerDir"]).split(':').collect();
    let layers = c["layers"].as_array().expect("layers[]");
    let dirs: Vec<&str> = layers.iter().map(|l| s(&l["dir"])).collect();
    assert_eq!(dirs, lower, "{name}: lowerdirs");
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["index"], i + 1);
        assert_eq!(l["init"], i == 0, "{name}: init flag of index {}", i + 1);
        let cache = s(&l["cache_id"]);
        assert!(
            lower[i].ends_with(&format!("/{cache}/diff")),
            "{name}: cache-id {cache}"
        );
        assert_eq!(s(&l["short_id"]).len(), 26, "{name}: short id");
    }
    assert!(lower[0].ends_with("-init/diff"));

    // Image id, tags, diff-ids, chain-ids.
    assert_eq!(c["image"]["id"], insp["Image"], "{name}: image id");
    let img = docker_json(&["image", "inspect", s(&insp["Image"])]);
    let img = &img[0];
    let mut tags: Vec<String> = img["RepoTags"]
        .as_array()
        .map(|a| a.iter().map(|t| s(t).to_string()).collect())
        .unwrap_or_default();
    tags.sort();
    let got_tags: Vec<String> = c["image"]["tags"]
        .as_array()
        .expect("tags[]")
        .iter()
        .map(|t| s(t).to_string())
        .collect();
    assert_eq!(got_tags, tags, "{name}: tags");
    let diffs: Vec<String> = img["RootFS"]["Layers"]
        .as_array()
        .expect("RootFS.Layers")
        .iter()
        .map(|d| s(d).to_string())
        .collect();
    let image_layers: Vec<&Value> = layers[1..].iter().rev().collect(); // base first
    assert_eq!(image_layers.len(), diffs.len(), "{name}: layer count");
    let got_diffs: Vec<&str> = image_layers.iter().map(|l| s(&l["diff_id"])).collect();
    assert_eq!(got_diffs, diffs, "{name}: diff-ids");
    let got_chains: Vec<&str> = image_layers.iter().map(|l| s(&l["chain_id"])).collect();
    assert_eq!(got_chains, chain_ids(&diffs), "{name}: chain-ids");
    for (k, l) in image_layers.iter().enumerate() {
        assert_eq!(l["position"], k + 1, "{name}: position");
        // The number every output shows: docker history order, top first;
        // RootFS.Layers[k] is number M - k.
        assert_eq!(l["number"], diffs.len() - k, "{name}: number");
    }
    assert!(
        layers[0].get("number").is_none(),
        "{name}: the init layer has no number"
    );

    // Instructions and sizes: docker history's non-empty layers, base first. Every
    // layer of these fixtures has content, so non-empty == size > 0.
    let history: Vec<Value> = docker_ok(&[
        "history",
        "--no-trunc",
        "--human=false",
        "--format",
        "{{json .}}",
        s(&insp["Image"]),
    ])
    .lines()
    .map(|l| serde_json::from_str(l).expect("history JSON"))
    .collect();
    let non_empty: Vec<&Value> = history
        .iter()
        .rev()
        .filter(|h| s(&h["Size"]) != "0")
        .collect();
    if !ours && non_empty.len() != diffs.len() {
        eprintln!("docker_layers: {name}: image has content-free layers; history not compared");
        return Some(c);
    }
    assert_eq!(non_empty.len(), diffs.len(), "{name}: history vs layers");
    for (k, (h, l)) in non_empty.iter().zip(&image_layers).enumerate() {
        assert_eq!(
            s(&l["created_by"]),
            s(&h["CreatedBy"]),
            "{name}: instruction of layer {}",
            k + 1
        );
        assert_eq!(
            l["size"].to_string(),
            s(&h["Size"]),
            "{name}: size of layer {}",
            k + 1
        );
    }
    Some(c)
}

fn layer_dirs(c: &Value) -> Vec<Option<PathBuf>> {
    c["layers"]
        .as_array()
        .expect("layers[]")
        .iter()
        .map(|l| l["dir"].as_str().map(PathBuf::from))
        .collect()
}

/// Whether `path` exists inside the running container (as the kernel's overlay sees it).
fn exists_in(id: &str, path: &str) -> bool {
    let p = format!("/{path}");
    docker(&[
        "exec",
        id,
        "sh",
        "-c",
        &format!("test -e '{p}' || test -L '{p}'"),
    ])
    .is_ok()
}

/// Overlay index (1 = first lowerdir) of the topmost layer directory that
/// holds `path`: the test's own reading of the layers `ovltrace layers`
/// lists, enough for this image (whiteouts and opaque directories; no
/// redirects or metacopy). `None` when a whiteout or an opaque directory
/// hides it, or no layer has it.
fn find_source(layers: &[Option<PathBuf>], path: &str) -> Option<usize> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let comps: Vec<&str> = path.split('/').collect();
    for (i, dir) in layers.iter().enumerate() {
        let dir = dir.as_ref()?;
        // An opaque directory on the way hides the layers below this one.
        let mut hides_below = false;
        for depth in 1..=comps.len() {
            let p = dir.join(comps[..depth].join("/"));
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                break;
            };
            if md.file_type().is_char_device() && md.rdev() == 0 {
                return None; // whiteout
            }
            if depth == comps.len() {
                return Some(i + 1);
            }
            hides_below |= opaque(&p);
        }
        if hides_below {
            return None;
        }
    }
    None
}

fn opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = [0u8; 4];
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// The source layer's index for `path`, cross-checked with the container's own view.
fn source(c: &Value, id: &str, path: &str) -> Option<usize> {
    let got = find_source(&layer_dirs(c), path);
    assert_eq!(
        got.is_some(),
        exists_in(id, path),
        "{path}: source layer {got:?} but the container disagrees about existence"
    );
    got
}

fn created_by(c: &Value, index: usize) -> String {
    s(&c["layers"][index - 1]["created_by"]).to_string()
}

#[test]
fn layers_json_matches_docker() {
    // Root: Docker's metadata and dockerd.
    if !require_or_skip("root")
        || !require_or_skip("docker")
        || !require_or_skip_with("dockerd", host_docker::ensure_daemon())
    {
        return;
    }
    let script = ovltrace_tests::workspace_root().join("tests/fixtures/build-images.sh");
    let built = Command::new("sh")
        .arg(&script)
        .output()
        .expect("running build-images.sh");
    if !built.status.success() {
        let err = String::from_utf8_lossy(&built.stderr);
        if err.contains("busybox") && err.contains("not found") {
            require_or_skip_with("busybox-static", Err::<(), _>(err.trim().to_string()));
            return;
        }
        panic!("build-images.sh failed: {err}");
    }

    let tag = std::process::id();
    let mut cs = Containers::default();
    let web_name = format!("ovltrace-test-web-{tag}");
    let web = cs.run(&["--name", &web_name, APP]);
    let anon = cs.run(&[APP]);
    let base = cs.run(&["--name", &format!("ovltrace-test-base-{tag}"), BASE]);
    let many = cs.run(&["--name", &format!("ovltrace-test-many-{tag}"), MANY]);

    let before = running_ids();
    let report: Value = serde_json::from_str(&ovltrace_layers(&["--json"])).expect("JSON report");
    let after = running_ids();
    assert_eq!(report["schema_version"], 2);
    assert_eq!(report["runtimes"][0]["name"], "docker");

    // Every running container is there (others may start or stop meanwhile).
    // Other runtimes' containers on this host are not `docker ps`'s business.
    let got: BTreeSet<String> = report["containers"]
        .as_array()
        .expect("containers[]")
        .iter()
        .filter(|c| c["runtime"] == "docker")
        .map(|c| s(&c["id"]).to_string())
        .collect();
    let stable: BTreeSet<String> = before.intersection(&after).cloned().collect();
    let any: BTreeSet<String> = before.union(&after).cloned().collect();
    assert!(
        got.is_superset(&stable),
        "missing: {:?}",
        stable.difference(&got).collect::<Vec<_>>()
    );
    assert!(
        got.is_subset(&any),
        "not running: {:?}",
        got.difference(&any).collect::<Vec<_>>()
    );
    for id in &stable {
        check_container(&report, id, cs.0.contains(id));
    }
    // Our containers' mounts are not also listed as plain mounts.
    for m in report["mounts"].as_array().expect("mounts[]") {
        assert!(
            !s(&m["mountpoint"]).contains("/overlay2/"),
            "unclaimed Docker mount: {m}"
        );
    }

    let c = check_container(&report, &web, true).expect("ours");
    assert_eq!(s(&c["name"]), web_name);
    assert_eq!(
        c["layers"].as_array().map(Vec::len),
        Some(6),
        "init + 5 image layers"
    );
    let blob = source(&c, &web, "data/blob.bin").expect("blob.bin");
    assert!(
        created_by(&c, blob).contains("COPY") && created_by(&c, blob).contains("/data/blob.bin")
    );
    let blob_path = Path::new(s(&c["layers"][blob - 1]["dir"])).join("data/blob.bin");
    assert_eq!(std::fs::metadata(blob_path).expect("blob").len(), BLOB_SIZE);
    assert_eq!(c["layers"][blob - 1]["size"], BLOB_SIZE);
    let deep = source(&c, &web, "data/deep/a/b/c/file.txt").expect("deep file");
    assert!(created_by(&c, deep).contains("mkdir -p /data/deep"));
    // Whiteout (rm in a later layer) and opaque directory (rm -r + mkdir).
    assert_eq!(source(&c, &web, "data/hello.txt"), None);
    assert_eq!(source(&c, &web, "etc/conf.d/base.conf"), None);
    let conf = source(&c, &web, "etc/conf.d/app.conf").expect("app.conf");
    assert!(created_by(&c, conf).contains("rm /data/hello.txt"));
    assert_eq!(source(&c, &web, "bin/busybox"), Some(6), "base layer");
    assert_eq!(
        source(&c, &web, "bin/sh"),
        Some(6),
        "a symlink, found without following it"
    );
    assert_eq!(source(&c, &web, "etc/hostname"), Some(1), "init layer");
    assert_eq!(source(&c, &web, "no/such/file"), None);

    let c = check_container(&report, &anon, true).expect("ours");
    assert!(!s(&c["name"]).is_empty(), "docker's generated name");
    let c = check_container(&report, &base, true).expect("ours");
    assert_eq!(c["layers"].as_array().map(Vec::len), Some(2));
    assert_eq!(s(&c["layers"][1]["created_by"]), "");

    // The many-layer container: Docker wrote relative lowerdirs, and they resolve.
    let c = check_container(&report, &many, true).expect("ours");
    let dev = s(&c["dev"]).to_string();
    let mounts = ovltrace::sys::mounts::read_overlay_mounts().expect("mountinfo");
    let m = mounts
        .iter()
        .find(|m| m.dev.to_string() == dev)
        .expect("many-layer mount in mountinfo");
    assert!(
        m.lowerdirs.iter().all(|p| p.is_relative()),
        "expected Docker to use relative lowerdirs for {} layers",
        m.lowerdirs.len()
    );
    let f45 = source(&c, &many, "many/f45").expect("many/f45");
    assert_eq!(created_by(&c, f45), "ovltrace many-layer fixture: layer 45");
    assert_eq!(source(&c, &many, "many/f90"), None);

    // The table names the containers and instructions.
    let table = ovltrace_layers(&[]);
    assert!(
        table.contains(&format!("CONTAINER {web_name} (")),
        "{table}"
    );
    assert!(table.contains("COPY file:"), "{table}");
    assert!(table.contains("RUN mkdir -p /data/deep"), "{table}");
    eprintln!(
        "docker_layers: checked {} running containers ({} started here) against docker inspect/history",
        stable.len(),
        cs.0.len()
    );
}
