//! Checks of a traced workload on the attribution image for runtimes whose
//! containers have no init layer (containerd, Podman): overlay index 1 is the
//! image's top layer. The workload (see [`WORKLOAD_1`], [`WORKLOAD_2`]) runs
//! in two containers, `web-1` and `web-2`; the report of `ovltrace run
//! --json` must name each copy-up's container, source layer (index, diff-id,
//! instruction) and bytes exactly as the image describes them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::{
    images::{sizes, TestImage},
    vm::VmOutput,
};

/// What `web-1` runs: appends to files of four different layers, re-creates a
/// file a later layer deleted (no copy-up).
pub const WORKLOAD_1: &str = "echo x >> /data/big.bin; echo y >> /app/cache.db; \
     echo z >> /etc/base.txt; echo w >> /etc/shadowed.conf; \
     [ ! -e /etc/doomed.txt ] && echo reborn > /etc/doomed.txt";
/// What `web-2` runs.
pub const WORKLOAD_2: &str = "echo x >> /data/big.bin; echo w >> /etc/shadowed.conf";

/// The shell lines that start `ovltrace run --json /tmp/r.json` in the
/// background (`$pid`) and wait until it traces.
pub const START_TRACING: &str = r#"
ovl_trace /tmp/r.txt /tmp/r.err --top 200 --json /tmp/r.json
"#;

/// Stops the tracer and prints its outputs as sections.
pub const STOP_TRACING: &str = r#"
kill -INT $pid
wait $pid
echo $? | ovl_section rc
ovl_section report /tmp/r.txt
ovl_section stderr /tmp/r.err
ovl_section json /tmp/r.json
"#;

/// (container, path, instruction of the source layer (None: the base), bytes).
const EXPECTED: [(&str, &str, Option<&str>, u64); 6] = [
    ("web-1", "data/big.bin", Some("COPY file:"), sizes::BIG_BIN),
    (
        "web-1",
        "app/cache.db",
        Some("of=/app/cache.db"),
        sizes::CACHE_DB,
    ),
    ("web-1", "etc/base.txt", None, sizes::BASE_TXT),
    (
        "web-1",
        "etc/shadowed.conf",
        Some("of=/etc/shadowed.conf"),
        sizes::SHADOWED,
    ),
    ("web-2", "data/big.bin", Some("COPY file:"), sizes::BIG_BIN),
    (
        "web-2",
        "etc/shadowed.conf",
        Some("of=/etc/shadowed.conf"),
        sizes::SHADOWED,
    ),
];

/// Directories copied up on the way, with the instruction of their topmost
/// layer: `etc` is in the top layer (`RUN rm /etc/doomed.txt` left a
/// whiteout in it). The runtime may copy up `etc` itself first (Podman
/// does, for /etc/hosts ..., right after mounting: attributed too).
const EXPECTED_DIRS: [(&str, &str, Option<&str>); 5] = [
    ("web-1", "data", Some("COPY file:")),
    ("web-1", "app", Some("of=/app/cache.db")),
    ("web-1", "etc", Some("rm /etc/doomed.txt")),
    ("web-2", "data", Some("COPY file:")),
    ("web-2", "etc", Some("rm /etc/doomed.txt")),
];

/// The runtime under test, as the report must describe it.
pub struct Runtime<'a> {
    /// `runtime` of each container.
    pub name: &'a str,
    /// Container name -> id, as the runtime reported them in the VM.
    pub ids: BTreeMap<String, String>,
    /// The image id the runtime reports.
    pub image_id: String,
    /// The image's names in this runtime.
    pub tags: Vec<String>,
    /// `pod` expected of web-1 (name, namespace), if any.
    pub pod: Option<(&'a str, &'a str)>,
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// Overlay index (no init layer) of the layer whose instruction contains
/// `needle`, or of the base.
fn index_of(img: &TestImage, needle: Option<&str>) -> usize {
    let docker_index = match needle {
        Some(n) => img.index_of(n).unwrap_or_else(|e| panic!("{e}")),
        None => img.base_index(),
    };
    docker_index - 1
}

/// The JSON report of a traced run (sections `rc`, `json`, `stderr`), and
/// its text, after the checks every run must pass: ovltrace exited 0,
/// warned of nothing and dropped nothing.
pub fn clean_report(out: &VmOutput) -> (Value, String) {
    let dump = || out.dump();
    assert_eq!(
        out.section("rc").as_deref().map(str::trim),
        Some("0"),
        "ovltrace run failed\n{}",
        dump()
    );
    let json = out
        .section("json")
        .unwrap_or_else(|| panic!("no JSON report\n{}", dump()));
    let r: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON ({e}): {json}"));
    let stderr = out.section("stderr").unwrap_or_default();
    assert!(
        !stderr.contains("WARN"),
        "ovltrace warned:\n{stderr}\n{json}"
    );
    assert_eq!(r["drops"]["total"], 0, "{json}");
    (r, json)
}

/// Asserts everything about the traced run.
pub fn check(out: &VmOutput, img: &TestImage, rt: &Runtime) {
    let dump = || out.dump();
    let (r, json) = clean_report(out);
    assert_eq!(rt.ids.len(), 2, "{}", dump());

    let files = r["copy_ups"].as_array().expect("copy_ups[]");
    // Nothing goes unattributed: the runtimes write only into mounted
    // container overlays.
    assert_eq!(r["counters"]["unattributed"], 0, "{json}");
    assert!(
        files.iter().all(|f| !f["container"].is_null()),
        "unattributed copy-ups: {json}"
    );

    let n = img.layers.len();
    let containers = r["containers"].as_array().expect("containers[]");
    let mut by_id: BTreeMap<&str, &Value> = BTreeMap::new();
    for (name, id) in &rt.ids {
        let c = containers
            .iter()
            .find(|c| c["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{name} ({id}) not in containers[]: {json}"));
        assert_eq!(c["name"], name.as_str(), "{json}");
        assert_eq!(c["runtime"], rt.name, "{name}");
        assert_eq!(c["image"]["id"], rt.image_id.as_str(), "{name}: image id");
        assert_eq!(c["image"]["tags"], serde_json::json!(rt.tags), "{name}");
        match (name.as_str(), rt.pod) {
            ("web-1", Some((pod, ns))) => {
                assert_eq!(c["pod"]["name"], pod, "{name}");
                assert_eq!(c["pod"]["namespace"], ns, "{name}");
            }
            _ => assert!(c["pod"].is_null(), "{name}: {c}"),
        }
        let layers = c["layers"].as_array().expect("layers[]");
        assert_eq!(layers.len(), n, "{name}: {json}");
        for (i, l) in layers.iter().enumerate() {
            let index = i + 1;
            let want = &img.layers[n - index];
            assert_eq!(l["index"], index);
            assert_eq!(l["init"], false);
            assert_eq!(l["position"], n + 1 - index);
            assert_eq!(l["diff_id"], want.diff_id.as_str(), "{name}: index {index}");
            assert_eq!(
                l["created_by"],
                want.created_by.as_str(),
                "{name}: instruction of index {index}"
            );
        }
        by_id.insert(id.as_str(), c);
    }

    let name_of: BTreeMap<&str, &str> = rt
        .ids
        .iter()
        .map(|(n, i)| (i.as_str(), n.as_str()))
        .collect();
    let mut regular: BTreeMap<(String, String), &Value> = BTreeMap::new();
    let mut dirs: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for f in files.iter().filter(|f| !f["container"].is_null()) {
        let cid = s(&f["container"]);
        let name = name_of
            .get(cid)
            .unwrap_or_else(|| panic!("copy-up attributed to unknown container {cid}: {f}"));
        let c = by_id[cid];
        assert_eq!(f["dev"], c["dev"], "{f}");
        let key = (name.to_string(), s(&f["path"]).to_string());
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
    let want: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|e| (e.0.to_string(), e.1.to_string()))
        .collect();
    let got: BTreeSet<(String, String)> = regular.keys().cloned().collect();
    assert_eq!(got, want, "regular copy-ups: {json}");
    for (c, p, instruction, bytes) in EXPECTED {
        let f = regular[&(c.to_string(), p.to_string())];
        let what = format!("{c} {p}");
        let index = index_of(img, instruction);
        let layer = &img.layers[n - index];
        assert_eq!(f["count"], 1, "{what}");
        assert_eq!(f["errors"], 0, "{what}");
        assert_eq!(f["bytes"], bytes, "{what}: bytes");
        assert_eq!(f["layer"]["index"], index, "{what}: layer index\n{f}");
        assert_eq!(f["layer"]["diff_id"], layer.diff_id.as_str(), "{what}");
        assert_eq!(
            f["layer"]["created_by"],
            layer.created_by.as_str(),
            "{what}: instruction"
        );
        assert_eq!(f["comms"], serde_json::json!(["sh"]), "{what}");
    }
    assert!(
        !files.iter().any(|f| f["path"] == "etc/doomed.txt"),
        "{json}"
    );
    for (c, p, instruction) in EXPECTED_DIRS {
        let f = dirs
            .get(&(c.to_string(), p.to_string()))
            .unwrap_or_else(|| panic!("no copy-up of directory {p} in {c}: {json}"));
        assert_eq!(
            f["layer"]["index"],
            index_of(img, instruction),
            "{c} {p}: {f}"
        );
        assert_eq!(f["bytes"], 0);
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
    for (name, id) in &rt.ids {
        let c = by_id[id.as_str()];
        let bytes: u64 = EXPECTED.iter().filter(|e| e.0 == name).map(|e| e.3).sum();
        assert_eq!(c["copy_up"]["bytes"], bytes, "{name}: {json}");
        assert_eq!(c["copy_up"]["errors"], 0);
    }
    // The terminal report names the runtime, containers, files, instruction.
    let text = out.section("report").unwrap_or_default();
    for needle in [
        "web-1",
        "web-2",
        "data/big.bin",
        "app/cache.db",
        "COPY",
        rt.name,
    ] {
        assert!(text.contains(needle), "{needle} not in the report:\n{text}");
    }
}

/// `NAME ID` lines -> name -> id.
pub fn parse_ids(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (a, b) = (f.next()?, f.next()?);
            Some((a.trim_start_matches('/').to_string(), b.to_string()))
        })
        .collect()
}
