//! Why each copy-up happened, on real Debian kernels: one plain overlay per
//! probe mode (`--probe fentry`, `--probe kprobe`), and per file the exact
//! cause the kernel side reported: an append (open for writing), a
//! truncating open, chown, chmod and touch (metadata changes), a hard link,
//! a rename, and a deep file whose missing parent directories are copied
//! up first (cause parent).
//!
//! Then the same with `ovl_copy_up_flags` out of reach (its name changed in a
//! bind-mounted copy of the overlay module's BTF for fentry, left out of a
//! bind-mounted /proc/kallsyms for kprobes): the copy-up clock starts at
//! `ovl_copy_up_one` entry instead, every copy-up is still reported with its
//! latency, only links and renames keep their cause, and the report says
//! why the others are unknown.

use std::collections::BTreeMap;

use ovltrace_tests::{require_or_skip, vm};
use serde_json::{json, Value};

const SCRIPT: &str = r#"
set -e
scenario() {
    name=$1; probe=$2; base=/tmp/$name
    mkdir -p $base/l1 $base/up $base/work $base/merged
    cd $base/l1
    for f in append trunc owned moded touched linked moved; do
        head -c 4096 /dev/zero > $f
    done
    mkdir -p d1/d2/d3
    echo deep > d1/d2/d3/deep
    cd /
    mount -t overlay overlay -o lowerdir=$base/l1,upperdir=$base/up,workdir=$base/work $base/merged

    ovl_trace /tmp/$name.txt /tmp/$name.err --probe $probe --top 50 --json /tmp/$name.json
    cd $base/merged
    echo x >> append
    : > trunc
    chown 1:1 owned
    chmod 600 moded
    touch -c touched
    ln linked hard
    mv moved renamed
    echo x >> d1/d2/d3/deep
    cd /
    kill -INT $pid
    wait $pid
    ovl_section report-$name /tmp/$name.txt
    ovl_section err-$name /tmp/$name.err
    ovl_section json-$name /tmp/$name.json
}
scenario fentry fentry
scenario kprobe kprobe

cp /sys/kernel/btf/overlay /tmp/overlay.btf
off=$(strings -t d -n 17 /tmp/overlay.btf | awk '$2 == "ovl_copy_up_flags" { print $1 }')
if [ -z "$off" ]; then echo "ovl_copy_up_flags is not in the overlay BTF" >&2; exit 4; fi
printf z | dd of=/tmp/overlay.btf bs=1 seek=$((off + 16)) conv=notrunc 2>/dev/null
mount --bind /tmp/overlay.btf /sys/kernel/btf/overlay
grep -v ' ovl_copy_up_flags' /proc/kallsyms > /tmp/kallsyms
mount --bind /tmp/kallsyms /proc/kallsyms
echo "hidden: $(grep -c ovl_copy_up_flagz /sys/kernel/btf/overlay) $(grep -c ' ovl_copy_up_flags' /proc/kallsyms)" | ovl_section hidden
scenario noflags-fentry fentry
scenario noflags-kprobe kprobe
"#;

/// (path, cause) of every copy-up the script triggers.
const EXPECTED: [(&str, &str); 11] = [
    ("append", "write"),
    ("d1", "parent"),
    ("d1/d2", "parent"),
    ("d1/d2/d3", "parent"),
    ("d1/d2/d3/deep", "write"),
    ("linked", "link"),
    ("moded", "metadata"),
    ("moved", "rename"),
    ("owned", "metadata"),
    ("touched", "metadata"),
    ("trunc", "truncate"),
];

fn check(out: &vm::VmOutput, name: &str) -> BTreeMap<String, String> {
    let (r, files) = files_of(out, name);
    let json = r.to_string();
    let mountpoint = format!("/tmp/{name}/merged");
    assert_eq!(r["probe"]["strategy"], name, "{json}");
    assert_eq!(r["drops"]["total"], 0, "{json}");
    // Every cause hook attached: no degraded cause.
    let warnings = r["warnings"].to_string();
    assert!(
        !warnings.contains("reported as") && !warnings.contains("causes are unknown"),
        "{name}: {warnings}"
    );

    let seen: BTreeMap<String, String> = files
        .iter()
        .map(|(p, f)| (p.clone(), f["causes"].to_string()))
        .collect();
    let want: BTreeMap<String, String> = EXPECTED
        .iter()
        .map(|(p, c)| (p.to_string(), json!([c]).to_string()))
        .collect();
    assert_eq!(seen, want, "{name}: {json}");
    // The truncating open copied no data; the append copied the whole file.
    assert_eq!(files["trunc"]["bytes"], 0, "{json}");
    assert_eq!(files["append"]["bytes"], 4096, "{json}");

    let mount = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountpoint"] == mountpoint.as_str())
        .unwrap_or_else(|| panic!("{mountpoint} not in mounts: {json}"));
    assert_eq!(
        mount["copy_up"]["by_cause"],
        json!({"write": 2, "truncate": 1, "metadata": 3, "link": 1, "rename": 1, "parent": 3}),
        "{json}"
    );
    // The terminal report says why, per file.
    let text = out.section(&format!("report-{name}")).unwrap_or_default();
    for needle in ["truncate", "metadata", "rename", "parent"] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    seen
}

/// The copy-ups of `name`'s mount (path -> file), with the report.
fn files_of(out: &vm::VmOutput, name: &str) -> (Value, BTreeMap<String, Value>) {
    let json = out
        .section(&format!("json-{name}"))
        .unwrap_or_else(|| panic!("no JSON report for {name}\n{}", out.dump()));
    let r: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON ({e}): {json}"));
    let mountpoint = format!("/tmp/{name}/merged");
    let files = r["copy_ups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["mountpoint"] == mountpoint.as_str())
        .map(|f| (f["path"].as_str().unwrap().to_string(), f.clone()))
        .collect();
    (r, files)
}

/// Without the `ovl_copy_up_flags` hook: the same copy-ups, timed from
/// `ovl_copy_up_one` entry; links and renames keep their cause.
fn check_without_flags_hook(out: &vm::VmOutput, probe: &str) {
    let name = format!("noflags-{probe}");
    let (r, files) = files_of(out, &name);
    assert_eq!(r["probe"]["strategy"], probe, "{r}");
    assert_eq!(r["drops"]["total"], 0, "{r}");
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("copy-up causes are unknown (except hard links and renames)"),
        "{name}: {warnings}"
    );
    let seen: BTreeMap<&str, String> = files
        .iter()
        .map(|(p, f)| (p.as_str(), f["causes"].to_string()))
        .collect();
    let want: BTreeMap<&str, String> = EXPECTED
        .iter()
        .map(|&(p, c)| {
            let c = if c == "link" || c == "rename" {
                c
            } else {
                "unknown"
            };
            (p, json!([c]).to_string())
        })
        .collect();
    assert_eq!(seen, want, "{name}: {r}");
    for (p, f) in &files {
        let ns = f["latency_ns"]["max"].as_u64().unwrap_or(0);
        assert!(ns > 0, "{name}: {p} has no latency: {f}");
    }
    assert_eq!(files["append"]["bytes"], 4096, "{name}: {r}");
}

fn causes(kernel: &str) {
    if !require_or_skip("vm") {
        return;
    }
    let out = vm::run(kernel, &vm::VmOpts::default(), SCRIPT);
    out.assert_exit(0);
    for name in ["fentry", "kprobe"] {
        let seen = check(&out, name);
        eprintln!("{kernel} {name}: {seen:?}");
    }
    // The hook is really out of reach: renamed in the BTF, gone from kallsyms.
    assert_eq!(
        out.section("hidden").as_deref().map(str::trim),
        Some("hidden: 1 0"),
        "{}",
        out.dump()
    );
    for probe in ["fentry", "kprobe"] {
        check_without_flags_hook(&out, probe);
    }
}

#[test]
fn causes_6_1() {
    causes("6.1");
}

#[test]
fn causes_6_12() {
    causes("6.12");
}
