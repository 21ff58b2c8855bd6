//! `ovltrace run -- CMD` on a real Debian kernel: the trace is CMD's run,
//! not more. Copy-ups made before ovltrace starts and after CMD exits (by a
//! loop CMD leaves behind) are not counted; CMD's own are, exactly; CMD's
//! exit status is ovltrace's (3 for `exit 3`, 143 for SIGTERM, 127 for a
//! command that does not exist). `--comm` and `--min-latency` keep only
//! what they name, and the report says which filters were active.

use std::collections::BTreeMap;

use ovltrace_tests::{require_or_skip, vm};
use serde_json::Value;

const SCRIPT: &str = r#"
set -e
b=/tmp/w
mkdir -p $b/l/d $b/up $b/work $b/merged
for i in 1 2 3 4 5 6 7 8; do echo $i > $b/l/f$i; done
for i in $(seq 1 200); do echo $i > $b/l/late$i; done
mount -t overlay overlay -o lowerdir=$b/l,upperdir=$b/up,workdir=$b/work $b/merged
cd $b/merged
# Before ovltrace: not counted.
echo x >> f1
set +e
# CMD copies up f2, f3, f4 (metadata) and d (a new file in it), then leaves
# a loop behind that copies up 200 files once CMD has exited (and ovltrace
# has reaped it).
ovltrace run --top 50 --json /tmp/r.json -- sh -c '
    cd /tmp/w/merged
    echo x >> f2; echo x >> f3; touch f4; echo new > d/new
    (while kill -0 $$ 2>/dev/null; do :; done
     for i in $(seq 1 200); do echo x >> late$i; done; touch /tmp/late-done) &
    exit 3' > /tmp/r.txt 2> /tmp/r.err
echo $? | ovl_section rc
i=0
until [ -e /tmp/late-done ]; do i=$((i+1)); [ $i -lt 600 ] || break; sleep 0.1; done
ls $b/up | grep -c '^late' | ovl_section late-copied-up
ovl_section json /tmp/r.json
ovl_section report /tmp/r.txt
ovl_section stderr /tmp/r.err

# A signal: 128 + 15.
ovltrace run -- sh -c 'kill -TERM $$' > /dev/null 2>&1
echo $? | ovl_section rc-signal
# A command that does not exist.
ovltrace run -- /nonexistent/cmd > /dev/null 2> /tmp/nx.err
echo $? | ovl_section rc-missing
ovl_section missing-err /tmp/nx.err

# --comm: only touch's copy-up (f6); sh's (f5) is dropped in user space.
ovltrace run --comm touch --json /tmp/c.json -- sh -c 'cd /tmp/w/merged; echo x >> f5; touch f6' > /tmp/c.txt 2>&1
echo $? | ovl_section rc-comm
ovl_section comm-json /tmp/c.json
ovl_section comm-report /tmp/c.txt
# --min-latency 1h: nothing is that slow.
ovltrace run --min-latency 1h --json /tmp/m.json -- sh -c 'echo x >> /tmp/w/merged/f7' > /dev/null 2>&1
echo $? | ovl_section rc-latency
ovl_section latency-json /tmp/m.json
"#;

fn json(out: &vm::VmOutput, name: &str) -> Value {
    let text = out
        .section(name)
        .unwrap_or_else(|| panic!("no section {name}\n{}", out.dump()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: bad JSON ({e}): {text}"))
}

fn section(out: &vm::VmOutput, name: &str) -> String {
    out.section(name)
        .unwrap_or_else(|| panic!("no section {name}\n{}", out.dump()))
        .trim()
        .to_string()
}

/// The copy-ups of the test's overlay: path -> count.
fn files(r: &Value) -> BTreeMap<String, u64> {
    r["copy_ups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["mountpoint"] == "/tmp/w/merged")
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn mount_count(r: &Value) -> u64 {
    r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountpoint"] == "/tmp/w/merged")
        .map_or(0, |m| m["copy_up"]["count"].as_u64().unwrap())
}

#[test]
fn run_cmd_traces_the_commands_window_6_12() {
    if !require_or_skip("vm") {
        return;
    }
    let out = vm::run("6.12", &vm::VmOpts::default(), SCRIPT);
    out.assert_exit(0);
    let dump = || out.dump();

    // CMD's exit status is ovltrace's.
    assert_eq!(section(&out, "rc"), "3", "{}", dump());
    // The loop CMD left behind did copy up its 200 files...
    assert_eq!(section(&out, "late-copied-up"), "200", "{}", dump());
    let r = json(&out, "json");
    // ...but only CMD's window is counted: f2, f3, f4 and d, once each;
    // not f1 (before), not late* (after CMD exited).
    let expected: BTreeMap<String, u64> = ["d", "f2", "f3", "f4"]
        .iter()
        .map(|p| (p.to_string(), 1))
        .collect();
    assert_eq!(files(&r), expected, "{r:#}");
    assert_eq!(mount_count(&r), 4, "{r:#}");
    assert_eq!(r["drops"]["total"], 0, "{r:#}");
    assert_eq!(
        r["filters"]["command"],
        "sh -c '\n    cd /tmp/w/merged\n    echo x >> f2; echo x >> f3; touch f4; echo new > d/new\n    \
         (while kill -0 $$ 2>/dev/null; do :; done\n     \
         for i in $(seq 1 200); do echo x >> late$i; done; touch /tmp/late-done) &\n    exit 3'",
        "{r:#}"
    );
    // How many of the loop's copy-ups reached the tracer before it stopped
    // depends on timing; they are counted as filtered, never as copy-ups.
    eprintln!(
        "copy-ups after CMD's exit dropped by the window: {}",
        r["counters"]["filtered_user"]
    );
    let report = section(&out, "report");
    assert!(
        report.contains("Filters: only while `sh -c '"),
        "the report says what it covers: {report}"
    );
    let stderr = section(&out, "stderr");
    assert!(
        stderr.starts_with("Tracing overlayfs copy-ups and lookups ("),
        "{stderr}"
    );

    assert_eq!(section(&out, "rc-signal"), "143", "{}", dump());
    assert_eq!(section(&out, "rc-missing"), "127", "{}", dump());
    let missing = section(&out, "missing-err");
    assert!(
        missing.ends_with(
            "ovltrace: error: cannot start /nonexistent/cmd: No such file or directory (os error 2)"
        ),
        "{missing}"
    );

    // --comm touch: f6 only; f5 (sh) dropped in user space.
    assert_eq!(section(&out, "rc-comm"), "0", "{}", dump());
    let c = json(&out, "comm-json");
    let only_f6: BTreeMap<String, u64> = [("f6".to_string(), 1)].into();
    assert_eq!(files(&c), only_f6, "{c:#}");
    assert_eq!(mount_count(&c), 1, "{c:#}");
    assert_eq!(c["counters"]["filtered_user"], 1, "{c:#}");
    assert_eq!(c["filters"]["comms"], serde_json::json!(["touch"]), "{c:#}");
    let comm_report = section(&out, "comm-report");
    assert!(
        comm_report.contains("Filters: only comm touch, while `sh -c "),
        "{comm_report}"
    );
    assert!(
        comm_report.contains("(1 dropped by the filters)"),
        "{comm_report}"
    );

    // --min-latency 1h: nothing counted, the one copy-up filtered.
    assert_eq!(section(&out, "rc-latency"), "0", "{}", dump());
    let m = json(&out, "latency-json");
    assert_eq!(mount_count(&m), 0, "{m:#}");
    assert_eq!(m["counters"]["filtered_user"], 1, "{m:#}");
    assert_eq!(
        m["filters"]["min_latency_ns"], 3_600_000_000_000u64,
        "{m:#}"
    );
}
