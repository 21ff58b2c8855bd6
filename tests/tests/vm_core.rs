//! The core tracer on real Debian kernels: copy-ups of files of known sizes,
//! kinds and depths in a 3-lower-layer overlay, plus lookups of existing and
//! missing names, traced with `--probe fentry`, `--probe kprobe` and `--probe
//! auto` (each on a fresh overlay, since a file is copied up only once), with
//! the same exact assertions for each. overlay is a module on these kernels:
//! fentry goes through the module's BTF, and auto must pick it.

use std::collections::BTreeMap;

use ovltrace_tests::{require_or_skip, vm};
use serde_json::Value;

const SCRIPT: &str = r#"
set -e
scenario() {
    name=$1; probe=$2; base=/tmp/$name
    mkdir -p $base/l1 $base/l2 $base/l3 $base/up $base/work $base/merged
    # l1 is the top lower layer, l3 the bottom one.
    mkdir -p $base/l3/a/b/c/d $base/l2/dir $base/l1/x
    : > $base/l3/empty
    head -c 4096 /dev/zero > $base/l2/four_k
    head -c 3145728 /dev/zero > $base/l1/three_m
    echo deep > $base/l3/a/b/c/d/deep.txt
    echo hi > $base/l2/dir/f
    # Names around the 32 bytes the fentry programs copy as words, and the
    # longest one (read with the string helper).
    mkdir $base/l2/ddddddddddddddddddddddddddddddd
    echo hi > $base/l2/ddddddddddddddddddddddddddddddd/ffffffffffffffffffffffffffffffff
    echo hi > $base/l2/ggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg
    ln -s /etc/passwd $base/l2/link
    # A file shadowed by an upper layer: only the top copy is copied up.
    head -c 100 /dev/zero > $base/l3/shadowed
    head -c 200 /dev/zero > $base/l1/shadowed
    mount -t overlay overlay -o lowerdir=$base/l1:$base/l2:$base/l3,upperdir=$base/up,workdir=$base/work $base/merged
    grep " $base/merged " /proc/self/mountinfo | cut -d' ' -f3 | ovl_section dev-$name

    ovl_trace /tmp/$name.txt /tmp/$name.err --probe $probe --top 50 --json /tmp/$name.json
    cd $base/merged
    echo x >> empty
    echo x >> four_k
    echo x >> three_m
    echo x >> shadowed
    echo x >> a/b/c/d/deep.txt
    echo x >> ddddddddddddddddddddddddddddddd/ffffffffffffffffffffffffffffffff
    echo x >> ggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg
    touch dir
    chown -h 1:1 link
    for n in missing1 missing2 missing3; do [ ! -e $n ]; done
    stat x > /dev/null
    cd /
    kill -INT $pid
    wait $pid
    ovl_section report-$name /tmp/$name.txt
    ovl_section json-$name /tmp/$name.json
}
ovltrace doctor > /tmp/doctor.txt 2>&1 || true
ovl_section doctor /tmp/doctor.txt
scenario fentry fentry
scenario kprobe kprobe
scenario auto auto
"#;

/// (path, kind, bytes) of every copy-up the script triggers.
const EXPECTED: [(&str, &str, u64); 14] = [
    ("a", "dir", 0),
    ("a/b", "dir", 0),
    ("a/b/c", "dir", 0),
    ("a/b/c/d", "dir", 0),
    ("a/b/c/d/deep.txt", "regular", 5),
    ("ddddddddddddddddddddddddddddddd", "dir", 0),
    ("ddddddddddddddddddddddddddddddd/ffffffffffffffffffffffffffffffff", "regular", 3),
    ("dir", "dir", 0),
    ("empty", "regular", 0),
    ("four_k", "regular", 4096),
    ("ggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg", "regular", 3),
    ("link", "symlink", 11),
    ("shadowed", "regular", 200),
    ("three_m", "regular", 3 << 20),
];

fn check(out: &vm::VmOutput, name: &str, strategy: &str) {
    let json = out
        .section(&format!("json-{name}"))
        .unwrap_or_else(|| panic!("no JSON report for {name}\n{}", out.dump()));
    let r: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON ({e}): {json}"));
    let mountpoint = format!("/tmp/{name}/merged");
    let dev = out.section(&format!("dev-{name}")).unwrap_or_default();
    let dev = dev.trim();

    assert_eq!(r["schema_version"], 3);
    assert_eq!(r["probe"]["strategy"], strategy, "{name}: {json}");
    assert_eq!(r["drops"]["total"], 0, "{json}");

    // The mount, joined by the device that mountinfo shows.
    let mount = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountpoint"] == mountpoint.as_str())
        .unwrap_or_else(|| panic!("{mountpoint} not in mounts: {json}"));
    assert_eq!(mount["dev"], dev);
    assert_eq!(
        mount["lowerdirs"],
        serde_json::json!([
            format!("/tmp/{name}/l1"),
            format!("/tmp/{name}/l2"),
            format!("/tmp/{name}/l3")
        ])
    );
    assert_eq!(mount["upperdir"], format!("/tmp/{name}/up").as_str());
    let total_bytes: u64 = EXPECTED.iter().map(|e| e.2).sum();
    assert_eq!(mount["copy_up"]["count"], EXPECTED.len() as u64, "{json}");
    assert_eq!(mount["copy_up"]["bytes"], total_bytes, "{json}");
    assert_eq!(mount["copy_up"]["errors"], 0);

    // Exactly the expected files, each once, with kind and size.
    let files: BTreeMap<String, &Value> = r["copy_ups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["mountpoint"] == mountpoint.as_str())
        .map(|f| (f["path"].as_str().unwrap().to_string(), f))
        .collect();
    let paths: Vec<&str> = files.keys().map(|s| s.as_str()).collect();
    let expected_paths: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    assert_eq!(paths, expected_paths, "{json}");
    for (path, kind, bytes) in EXPECTED {
        let f = files[path];
        assert_eq!(f["kind"], kind, "{path}");
        assert_eq!(f["bytes"], bytes, "{path}");
        assert_eq!(f["count"], 1, "{path}");
        assert_eq!(f["dev"], dev, "{path}");
        assert_eq!(f["path_truncated"], false, "{path}");
        let lat = &f["latency_ns"];
        assert!(lat["min"].as_u64().unwrap() > 0, "{path}: zero latency");
        assert!(lat["max"].as_u64() >= lat["min"].as_u64(), "{path}");
    }
    // Who did it: the appends come from the shell, the others from their tools.
    assert_eq!(files["dir"]["comms"], serde_json::json!(["touch"]));
    assert_eq!(files["link"]["comms"], serde_json::json!(["chown"]));
    // The 3 MiB copy is the most expensive file.
    assert_eq!(r["copy_ups"][0]["path"], "three_m", "{json}");
    // Data-copy time was measured (ovl_copy_up_file on both kernels), with
    // fentry/fexit on the module as well as with kprobes.
    assert_eq!(r["probe"]["data_copy"], "ovl_copy_up_file", "{name}");
    assert!(mount["copy_up"]["data_copy_ns"]["max"].as_u64().unwrap() > 0);

    // Lookups: 3 missing names and at least the existing `x`.
    let lookups = r["lookups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["dev"] == dev)
        .unwrap_or_else(|| panic!("no lookups for {dev}: {json}"));
    assert!(lookups["not_found"].as_u64().unwrap() >= 3, "{json}");
    assert!(lookups["found"].as_u64().unwrap() >= 1, "{json}");
    let hist_total: u64 = lookups["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(hist_total, lookups["count"].as_u64().unwrap());

    // The terminal report names the hot file with its size.
    let text = out.section(&format!("report-{name}")).unwrap_or_default();
    assert!(text.contains(&format!("{mountpoint}/three_m")), "{text}");
    assert!(text.contains("3.0 MiB"), "{text}");
}

fn core(kernel: &str) {
    if !require_or_skip("vm") {
        return;
    }
    let out = vm::run(kernel, &vm::VmOpts::default(), SCRIPT);
    out.assert_exit(0);
    // doctor shows the plan and why: fentry through the module's BTF first.
    let doctor = out.section("doctor").unwrap_or_default();
    assert!(
        doctor.contains("[info] attach plan            fentry then kprobe"),
        "{doctor}"
    );
    assert!(
        doctor.contains(
            "overlay is a module with BTF (/sys/kernel/btf/overlay): fentry on the module, \
             kprobe fallback"
        ),
        "{doctor}"
    );
    assert!(
        doctor.contains("[ok  ] attach test            fentry probes attached"),
        "{doctor}"
    );
    check(&out, "fentry", "fentry");
    check(&out, "kprobe", "kprobe");
    // auto prefers fentry, which works on the module.
    check(&out, "auto", "fentry");
}

#[test]
fn core_6_1() {
    core("6.1");
}

#[test]
fn core_6_12() {
    core("6.12");
}
