//! Layer attribution with a real dockerd, on Debian's 6.1 and 6.12 kernels.
//!
//! The attribution image (tests/src/images.rs, built offline on the host and
//! cached) has files of known sizes made by different Dockerfile instructions:
//! a file of the imported base layer, `COPY big.bin /data/`, `RUN ... dd ...
//! of=/app/cache.db`, a base-layer file rewritten by a later `RUN` (the top
//! copy must win) and one deleted by a later `RUN rm` (re-creating it is no
//! copy-up). In the VM two named containers append to those files one after
//! the other while `ovltrace run --json` traces. Every copy-up must name its
//! container and the source layer's index, diff-id and instruction exactly as
//! `docker image inspect` and `docker history` on the host describe the image,
//! with the exact byte count. What dockerd copies up while it creates a
//! container (on its short-lived mount of the container's init layer) is the
//! container's too, marked `outside`: nothing is left unattributed.

use std::collections::{BTreeMap, BTreeSet};

use ovltrace_tests::{
    attribution,
    images::{self, sizes, TestImage},
    require, require_or_skip, vm,
};
use serde_json::Value;

const SCRIPT: &str = r#"
IMG=ovltrace-test/attrib:1
ovl_trace /tmp/r.txt /tmp/r.err --top 200 --json /tmp/r.json
docker run --network none --name web-1 $IMG sh -c '
    echo x >> /data/big.bin
    echo y >> /app/cache.db
    echo z >> /etc/base.txt
    echo w >> /etc/shadowed.conf
    [ ! -e /etc/doomed.txt ] && echo reborn > /etc/doomed.txt' || exit 4
docker run --network none --name web-2 $IMG sh -c '
    echo x >> /data/big.bin
    echo w >> /etc/shadowed.conf' || exit 5
docker inspect --format '{{.Id}} {{.Name}} {{.Image}}' web-1 web-2 | ovl_section containers
kill -INT $pid
wait $pid
echo $? | ovl_section rc
ovl_section report /tmp/r.txt
ovl_section stderr /tmp/r.err
ovl_section json /tmp/r.json

# --container: only keep-1 is traced; keep-2's work is skipped in the kernel.
docker run -d --network none --name keep-1 $IMG sleep 600 > /dev/null || exit 6
docker run -d --network none --name keep-2 $IMG sleep 600 > /dev/null || exit 7
# A name no container has is waited for (noted on stderr), not refused.
ovltrace run -d 1s --container nosuch > /dev/null 2> /tmp/n.err
echo $? | ovl_section unknown-rc
grep '^ovltrace: waiting' /tmp/n.err | ovl_section unknown-container
ovl_trace /tmp/f.txt /tmp/f.err --container keep-1 --top 200 --json /tmp/f.json
docker exec keep-2 sh -c 'echo x >> /data/big.bin; echo y >> /app/cache.db' || exit 9
docker exec keep-1 sh -c 'echo x >> /data/big.bin' || exit 10
docker inspect --format '{{.Id}} {{.Name}}' keep-1 keep-2 | ovl_section keep
kill -INT $pid
wait $pid
echo $? | ovl_section filter-rc
ovl_section filter-json /tmp/f.json
"#;

/// A regular-file copy-up the workload must cause, and nothing else.
struct Expected {
    container: &'static str,
    path: &'static str,
    /// Finds the source layer among the image's instructions.
    instruction: Option<&'static str>,
    bytes: u64,
}

const EXPECTED: [Expected; 6] = [
    Expected {
        container: "web-1",
        path: "data/big.bin",
        instruction: Some("COPY file:"),
        bytes: sizes::BIG_BIN,
    },
    Expected {
        container: "web-1",
        path: "app/cache.db",
        instruction: Some("of=/app/cache.db"),
        bytes: sizes::CACHE_DB,
    },
    Expected {
        container: "web-1",
        path: "etc/base.txt",
        instruction: None, // the imported base layer
        bytes: sizes::BASE_TXT,
    },
    Expected {
        container: "web-1",
        path: "etc/shadowed.conf",
        instruction: Some("of=/etc/shadowed.conf"),
        bytes: sizes::SHADOWED,
    },
    Expected {
        container: "web-2",
        path: "data/big.bin",
        instruction: Some("COPY file:"),
        bytes: sizes::BIG_BIN,
    },
    Expected {
        container: "web-2",
        path: "etc/shadowed.conf",
        instruction: Some("of=/etc/shadowed.conf"),
        bytes: sizes::SHADOWED,
    },
];

/// What dockerd copies up while it creates a container: its init layer's
/// `etc` (it replaces /etc/hosts, ...), on its mount of the init layer alone.
/// Above that layer is the image's top layer, which has `etc` (the whiteout of
/// `RUN rm /etc/doomed.txt`): the container's index 2. dockerd may copy up
/// more directories there; they are the container's too.
const SETUP_DIRS: [(&str, &str, &str); 2] = [
    ("web-1", "etc", "rm /etc/doomed.txt"),
    ("web-2", "etc", "rm /etc/doomed.txt"),
];

/// Parent directories copied up on the way: (container, path, where from).
/// `etc` is in the init layer (index 1: Docker puts /etc/hosts etc. there).
/// dockerd may copy up more directories of a starting container (it creates
/// mount points such as /dev/...); those are allowed, attributed too.
const EXPECTED_DIRS: [(&str, &str, Option<&str>); 5] = [
    ("web-1", "data", Some("COPY file:")),
    ("web-1", "app", Some("of=/app/cache.db")),
    ("web-1", "etc", None),
    ("web-2", "data", Some("COPY file:")),
    ("web-2", "etc", None),
];

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn check(out: &vm::VmOutput, img: &TestImage) {
    let dump = || out.dump();
    let (r, json) = attribution::clean_report(out);
    // Everything is attributed, dockerd's writes into a container's init
    // layer too (it mounts that layer alone for a moment to add /etc/hosts,
    // /dev/pts, ...).
    let files = r["copy_ups"].as_array().expect("copy_ups[]");
    assert_eq!(r["counters"]["unattributed"], 0, "{json}");
    assert!(
        files.iter().all(|f| !f["container"].is_null()),
        "unattributed copy-ups: {json}"
    );
    let text = out.section("report").unwrap_or_default();
    assert!(!text.contains("NOT ATTRIBUTED"), "{text}");

    // The containers, as docker in the VM names them.
    let mut ids: BTreeMap<String, String> = BTreeMap::new(); // name -> id
    for line in out.section("containers").unwrap_or_default().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 3, "docker inspect line {line:?}");
        assert_eq!(f[2], img.id, "container {} runs another image", f[1]);
        ids.insert(f[1].trim_start_matches('/').to_string(), f[0].to_string());
    }
    assert_eq!(ids.len(), 2, "{}", dump());

    // containers[]: identity, image and the whole layer stack.
    let containers = r["containers"].as_array().expect("containers[]");
    let mut by_id: BTreeMap<&str, &Value> = BTreeMap::new();
    for (name, id) in &ids {
        let c = containers
            .iter()
            .find(|c| c["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{name} ({id}) not in containers[]: {json}"));
        assert_eq!(c["name"], name.as_str(), "{json}");
        assert_eq!(c["runtime"], "docker");
        assert_eq!(c["image"]["id"], img.id.as_str(), "{name}: image id");
        let tags: Vec<&str> = c["image"]["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(s)
            .collect();
        assert_eq!(tags, img.repo_tags, "{name}: image tags");
        let layers = c["layers"].as_array().expect("layers[]");
        assert_eq!(layers.len(), img.layers.len() + 1, "{name}: {json}");
        assert_eq!(layers[0]["index"], 1);
        assert_eq!(layers[0]["init"], true, "{name}: index 1 is the init layer");
        for (i, l) in layers.iter().enumerate().skip(1) {
            let index = i + 1;
            let want = img.layer_at_index(index).expect("image layer");
            assert_eq!(l["index"], index);
            assert_eq!(l["init"], false);
            assert_eq!(l["diff_id"], want.diff_id.as_str(), "{name}: index {index}");
            assert_eq!(
                l["created_by"],
                want.created_by.as_str(),
                "{name}: instruction of index {index}"
            );
            assert_eq!(l["position"], img.layers.len() + 2 - index);
        }
        by_id.insert(id.as_str(), c);
    }

    let index_of = |instruction: Option<&str>| match instruction {
        Some(needle) => img.index_of(needle).unwrap_or_else(|e| panic!("{e}")),
        None => img.base_index(),
    };

    // copy_ups[]: exactly the expected regular files, each with container,
    // source layer and bytes; directories only the expected parents.
    let mut regular: BTreeMap<(String, String), &Value> = BTreeMap::new();
    let mut dirs: BTreeMap<(String, String), &Value> = BTreeMap::new();
    // On dockerd's mount of a container's init layer.
    let mut setup: BTreeMap<(String, String), &Value> = BTreeMap::new();
    let mounts = r["mounts"].as_array().expect("mounts[]");
    let name_of: BTreeMap<&str, &str> = ids.iter().map(|(n, i)| (i.as_str(), n.as_str())).collect();
    for f in files.iter().filter(|f| !f["container"].is_null()) {
        let cid = f["container"].as_str().expect("container id");
        let name = name_of
            .get(cid)
            .unwrap_or_else(|| panic!("copy-up attributed to unknown container {cid}: {f}"));
        let c = by_id[cid];
        assert_eq!(f["mountpoint"], c["mountpoint"], "{f}");
        let key = (name.to_string(), s(&f["path"]).to_string());
        if f["outside"] == true {
            // Runtime setup, on dockerd's mount of the init layer: an overlay
            // of its own (its device number freed at its unmount, often the
            // container's next), whose upper directory is the container's
            // init layer (index 1).
            let m = mounts
                .iter()
                .find(|m| m["container"] == cid && m["upperdir"] == c["layers"][0]["dir"])
                .unwrap_or_else(|| panic!("{f}: no init layer mount: {json}"));
            assert!(
                m["mountpoint"].is_null() || s(&m["mountpoint"]).ends_with("-init/merged"),
                "{m}"
            );
            assert_eq!(f["comms"], serde_json::json!(["dockerd"]), "{f}");
            assert_eq!(f["outside"], true, "{f}");
            assert_eq!(f["kind"], "dir", "{f}");
            assert_eq!(f["bytes"], 0, "{f}");
            // Index i of the init mount is index i + 1 of the container's:
            // an image layer, described as the image describes it.
            let index = f["layer"]["index"].as_u64().expect("layer index") as usize;
            let layer = img
                .layer_at_index(index)
                .unwrap_or_else(|| panic!("{f}: not an image layer"));
            assert_eq!(f["layer"]["diff_id"], layer.diff_id.as_str(), "{f}");
            assert_eq!(f["layer"]["created_by"], layer.created_by.as_str(), "{f}");
            assert!(
                setup.insert(key.clone(), f).is_none(),
                "{key:?} listed twice: {json}"
            );
            continue;
        }
        assert_eq!(f["dev"], c["dev"], "{f}");
        let table = match s(&f["kind"]) {
            "regular" => &mut regular,
            "dir" => &mut dirs,
            other => panic!("unexpected {other} copy-up: {f}"),
        };
        assert!(
            table.insert(key.clone(), f).is_none(),
            "{key:?} listed twice: {json}"
        );
    }
    let want_regular: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|e| (e.container.to_string(), e.path.to_string()))
        .collect();
    let got_regular: BTreeSet<(String, String)> = regular.keys().cloned().collect();
    assert_eq!(got_regular, want_regular, "regular copy-ups: {json}");
    for e in &EXPECTED {
        let f = regular[&(e.container.to_string(), e.path.to_string())];
        let what = format!("{} {}", e.container, e.path);
        let index = index_of(e.instruction);
        let layer = img.layer_at_index(index).expect("layer");
        assert_eq!(f["count"], 1, "{what}");
        assert_eq!(f["errors"], 0, "{what}");
        assert_eq!(f["bytes"], e.bytes, "{what}: bytes");
        assert_eq!(f["layer"]["index"], index, "{what}: layer index\n{f}");
        assert_eq!(
            f["layer"]["diff_id"],
            layer.diff_id.as_str(),
            "{what}: diff-id"
        );
        assert_eq!(
            f["layer"]["created_by"],
            layer.created_by.as_str(),
            "{what}: instruction"
        );
        assert_eq!(f["comms"], serde_json::json!(["sh"]), "{what}");
        assert_eq!(f["outside"], false, "{what}: the container's own write");
    }
    for (c, p, instruction) in SETUP_DIRS {
        let f = setup
            .get(&(c.to_string(), p.to_string()))
            .unwrap_or_else(|| panic!("no setup copy-up of {p} in {c}: {json}"));
        assert_eq!(
            f["layer"]["index"],
            index_of(Some(instruction)),
            "{c} {p}: {f}"
        );
    }
    // The topmost copy wins: the 300-byte rewrite, not the base's 100 bytes.
    assert_ne!(sizes::SHADOWED, sizes::SHADOWED_IN_BASE);
    // Deleted by `RUN rm`, re-created by the container: a new file, no copy-up.
    assert!(
        !files.iter().any(|f| f["path"] == "etc/doomed.txt"),
        "{json}"
    );

    for (c, p, instruction) in EXPECTED_DIRS {
        let f = dirs
            .get(&(c.to_string(), p.to_string()))
            .unwrap_or_else(|| panic!("no copy-up of directory {p} in {c}: {json}"));
        let index = match instruction {
            Some(_) => index_of(instruction),
            None => 1,
        };
        assert_eq!(f["layer"]["index"], index, "{c} {p}: {f}");
        assert_eq!(f["bytes"], 0);
        assert_eq!(f["outside"], false, "{c} {p}: the container's own write");
    }
    for ((c, p), f) in &dirs {
        let expected = EXPECTED_DIRS.iter().any(|e| e.0 == c && e.1 == p);
        assert!(
            expected
                || !f["comms"]
                    .as_array()
                    .expect("comms")
                    .iter()
                    .any(|x| x == "sh"),
            "unexpected directory copy-up {p} in {c} by the workload: {f}"
        );
    }

    // Per-container totals agree with the files; the init layer's mount
    // holds exactly the setup copy-ups.
    for (name, id) in &ids {
        let c = by_id[id.as_str()];
        let on_init: u64 = mounts
            .iter()
            .filter(|m| m["container"] == id.as_str() && m["upperdir"] == c["layers"][0]["dir"])
            .map(|m| m["copy_up"]["count"].as_u64().expect("count"))
            .sum();
        let setup_count: u64 = setup
            .iter()
            .filter(|(k, _)| &k.0 == name)
            .map(|(_, f)| f["count"].as_u64().expect("count"))
            .sum();
        assert_eq!(on_init, setup_count, "{name}: {json}");
        let n: u64 = [&regular, &dirs, &setup]
            .iter()
            .flat_map(|t| t.iter())
            .filter(|(k, _)| &k.0 == name)
            .map(|(_, f)| f["count"].as_u64().expect("count"))
            .sum();
        let bytes: u64 = EXPECTED
            .iter()
            .filter(|e| e.container == name)
            .map(|e| e.bytes)
            .sum();
        assert_eq!(c["copy_up"]["count"], n, "{name}: {json}");
        assert_eq!(c["copy_up"]["bytes"], bytes, "{name}: {json}");
        assert_eq!(c["copy_up"]["errors"], 0);
    }

    // The terminal report names container, file and instruction, and tells
    // dockerd's setup apart.
    for needle in [
        "web-1",
        "web-2",
        "data/big.bin",
        "app/cache.db",
        "dockerd (outside)",
    ] {
        assert!(text.contains(needle), "{needle} not in the report:\n{text}");
    }
    assert!(text.contains("COPY"), "{text}");
}

fn attribution(kernel: &str) {
    if !require_or_skip("vm") || !require_or_skip("docker") {
        return;
    }
    let Some(img) = require(
        "the attribution image (built on the host)",
        images::attribution_image(),
    ) else {
        return;
    };
    let out = vm::run(
        kernel,
        &vm::VmOpts::default().docker_image(&img.tar).timeout(900),
        SCRIPT,
    );
    out.assert_exit(0);
    check(&out, &img);
    check_filter(&out);
}

/// `--container keep-1`: keep-1's copy-up is reported, keep-2's are not even
/// seen (the kernel skips its overlay device), and an unknown name lists the
/// running containers.
fn check_filter(out: &vm::VmOutput) {
    let dump = || out.dump();
    assert_eq!(
        out.section("unknown-rc").as_deref().map(str::trim),
        Some("0"),
        "{}",
        dump()
    );
    let unknown = out.section("unknown-container").unwrap_or_default();
    assert_eq!(unknown.lines().count(), 1, "one line: {unknown}");
    assert!(
        unknown.contains("waiting for container \"nosuch\": no running container has")
            && unknown.contains("keep-1")
            && unknown.contains("keep-2"),
        "{unknown}"
    );
    assert_eq!(
        out.section("filter-rc").as_deref().map(str::trim),
        Some("0"),
        "{}",
        dump()
    );
    let ids: BTreeMap<String, String> = out
        .section("keep")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, name)| (name.trim_start_matches('/').to_string(), id.to_string()))
        .collect();
    let json = out
        .section("filter-json")
        .unwrap_or_else(|| panic!("no JSON\n{}", dump()));
    let r: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON ({e}): {json}"));
    let files = r["copy_ups"].as_array().expect("copy_ups[]");
    assert!(!files.is_empty(), "{json}");
    for f in files {
        assert_eq!(
            f["container"],
            ids["keep-1"].as_str(),
            "only keep-1 is traced: {json}"
        );
    }
    let big: Vec<&Value> = files
        .iter()
        .filter(|f| f["path"] == "data/big.bin")
        .collect();
    assert_eq!(big.len(), 1, "{json}");
    assert_eq!(big[0]["bytes"], sizes::BIG_BIN);
    assert!(files.iter().all(|f| f["path"] != "app/cache.db"), "{json}");
    // keep-2's copy-ups and lookups reached the kernel filter and stopped there.
    assert!(
        r["counters"]["filtered"].as_u64().unwrap_or(0) >= 2,
        "{json}"
    );
    let keep2 = r["containers"]
        .as_array()
        .expect("containers[]")
        .iter()
        .find(|c| c["id"] == ids["keep-2"].as_str());
    if let Some(c) = keep2 {
        assert_eq!(c["copy_up"]["count"], 0, "{json}");
    }
}

#[test]
fn docker_attribution_6_1() {
    attribution("6.1");
}

#[test]
fn docker_attribution_6_12() {
    attribution("6.12");
}
