//! Container churn (6.12 kernel, real dockerd in the VM): containers start
//! and stop continuously while `ovltrace run` traces. Each appends to a
//! lower-layer file, so each causes exactly one regular-file copy-up, and
//! overlay device numbers pass from one container to the next.
//!
//! Three phases:
//! 1. short-lived `docker run --rm` containers one after the other;
//! 2. several at once;
//! 3. the tracer stopped (SIGSTOP) while containers come and go, so that
//!    their overlays (and cgroups) have vanished before their events are
//!    processed (SIGCONT).
//!
//! The daemon must survive (exit 0, report written, no drops). Every copy-up
//! must be counted: attributed to the container it happened in, or counted
//! in `counters.unattributed` when that cannot be told, never given to
//! another container. Containers of phases 1 and 2 linger for a second
//! after their write, so the tracer can see them: they must be attributed.
//! Phase 3's containers were never seen: their copy-ups are unattributed.

use std::collections::{BTreeMap, BTreeSet};

use ovltrace_tests::{
    images::{self, sizes},
    require, require_or_skip, vm,
};
use serde_json::Value;

/// Containers per phase.
const SEQUENTIAL: usize = 6;
const CONCURRENT: usize = 4;
const UNSEEN: usize = 4;

const SCRIPT: &str = r#"
IMG=ovltrace-test/attrib:1
write='echo churn >> /etc/shadowed.conf'
ovl_trace /tmp/r.txt /tmp/r.err --top 1000 --json /tmp/r.json
churn() {
    docker run --rm --network none --name churn-$1 $IMG sh -c "$2"
}
# 1. One after the other.
for n in $(seq 1 SEQUENTIAL); do
    churn $n "$write; sleep 1" || exit 4
done
# 2. Several at once.
pids=
for n in $(seq FIRST_CONCURRENT LAST_CONCURRENT); do
    churn $n "sleep 1; $write; sleep 1" &
    pids="$pids $!"
done
for p in $pids; do wait $p || exit 5; done
# 3. Overlays gone before the tracer sees their events.
sleep 2
kill -STOP $pid
for n in $(seq FIRST_UNSEEN LAST_UNSEEN); do
    churn $n "$write" || exit 6
done
kill -CONT $pid
sleep 3
kill -0 $pid || { echo "ovltrace died"; cat /tmp/r.err >&2; exit 7; }
kill -INT $pid
wait $pid
echo $? | ovl_section rc
ovl_section stderr /tmp/r.err
ovl_section json /tmp/r.json
"#;

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

#[test]
fn container_churn_6_12() {
    if !require_or_skip("vm") || !require_or_skip("docker") {
        return;
    }
    let Some(img) = require(
        "the attribution image (built on the host)",
        images::attribution_image(),
    ) else {
        return;
    };
    let script = SCRIPT
        .replace("SEQUENTIAL", &SEQUENTIAL.to_string())
        .replace("FIRST_CONCURRENT", &(SEQUENTIAL + 1).to_string())
        .replace("LAST_CONCURRENT", &(SEQUENTIAL + CONCURRENT).to_string())
        .replace("FIRST_UNSEEN", &(SEQUENTIAL + CONCURRENT + 1).to_string())
        .replace(
            "LAST_UNSEEN",
            &(SEQUENTIAL + CONCURRENT + UNSEEN).to_string(),
        );
    let out = vm::run(
        "6.12",
        &vm::VmOpts::default().docker_image(&img.tar).timeout(900),
        &script,
    );
    out.assert_exit(0);
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
    let total = SEQUENTIAL + CONCURRENT + UNSEEN;

    // Nothing lost.
    assert_eq!(r["drops"]["total"], 0, "{json}");
    let counters = &r["counters"];
    let events = u(&counters["events_received"]);
    assert_eq!(events, u(&counters["copy_up_exits"]), "{json}");
    assert_eq!(counters["evicted_files"], 0, "{json}");

    // Every copy-up is a container's or counted as unattributed.
    let containers = r["containers"].as_array().expect("containers[]");
    let attributed: u64 = containers.iter().map(|c| u(&c["copy_up"]["count"])).sum();
    let unattributed = u(&counters["unattributed"]);
    assert_eq!(attributed + unattributed, events, "{json}");

    // The hot-spot table lists every file (--top is large): it adds up too.
    let files = r["copy_ups"].as_array().expect("copy_ups[]");
    let listed: u64 = files.iter().map(|f| u(&f["count"])).sum();
    assert_eq!(listed, events, "{json}");
    let listed_unattributed: u64 = files
        .iter()
        .filter(|f| f["container"].is_null())
        .map(|f| u(&f["count"]))
        .sum();
    assert_eq!(listed_unattributed, unattributed, "{json}");

    // One regular-file copy-up of the churned file per container.
    let churned: Vec<&Value> = files
        .iter()
        .filter(|f| f["path"] == "etc/shadowed.conf")
        .collect();
    assert!(churned.iter().all(|f| f["kind"] == "regular"), "{json}");
    let churned_total: u64 = churned.iter().map(|f| u(&f["count"])).sum();
    assert_eq!(churned_total, total as u64, "{json}");
    for f in &churned {
        assert_eq!(u(&f["bytes"]), u(&f["count"]) * sizes::SHADOWED, "{f}");
        assert_eq!(f["errors"], 0, "{f}");
    }

    // Attributed ones: exactly one each, to a container that ran it, from
    // the layer that wrote the file.
    let names: BTreeMap<&str, &str> = containers
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id"),
                c["name"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    let index = img
        .index_of("of=/etc/shadowed.conf")
        .unwrap_or_else(|e| panic!("{e}"));
    let layer = img.layer_at_index(index).expect("layer");
    let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for f in churned.iter().filter(|f| !f["container"].is_null()) {
        let id = f["container"].as_str().expect("container id");
        let name = names
            .get(id)
            .unwrap_or_else(|| panic!("attributed to {id}, not in containers[]: {json}"));
        assert!(name.starts_with("churn-"), "{f}");
        *by_name.entry(name).or_default() += u(&f["count"]);
        assert_eq!(f["layer"]["index"], index, "{f}");
        assert_eq!(f["layer"]["diff_id"], layer.diff_id.as_str(), "{f}");
        assert_eq!(f["layer"]["created_by"], layer.created_by.as_str(), "{f}");
    }
    assert!(
        by_name.values().all(|&n| n == 1),
        "a container got another one's copy-up: {by_name:?}\n{json}"
    );
    // Phases 1 and 2: seen, so attributed, each by its name.
    let seen: BTreeSet<String> = (1..=SEQUENTIAL + CONCURRENT)
        .map(|i| format!("churn-{i}"))
        .collect();
    let got: BTreeSet<String> = by_name.keys().map(|s| s.to_string()).collect();
    assert_eq!(got, seen, "{json}");
    // Phase 3: never seen, counted as unattributed.
    let unseen: u64 = churned
        .iter()
        .filter(|f| f["container"].is_null())
        .map(|f| u(&f["count"]))
        .sum();
    assert_eq!(unseen, UNSEEN as u64, "{json}");
    // Per-container totals: the file plus directories (its own /etc, and
    // what dockerd copied up while starting it), all without data.
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        assert!(
            seen.iter().any(|s| s == name),
            "unexpected container {name}"
        );
        assert_eq!(c["copy_up"]["bytes"], sizes::SHADOWED, "{name}: {json}");
        assert_eq!(c["copy_up"]["errors"], 0);
    }
}
