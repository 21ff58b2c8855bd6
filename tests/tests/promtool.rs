//! `promtool check metrics` (Debian's `prometheus` package) on the Prometheus
//! output of synthetic reports: a busy one with hostile container names and
//! image tags, overlays of no container, layers and lookups; and an empty one.
//!
//! Needs Debian's promtool; the skip policy of `ovltrace_tests::require`
//! applies (`SKIPPED:`, or a failure with OVLTRACE_TEST_STRICT=1 as in CI).

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use ovltrace::{
    aggregate::Aggregator,
    attribute::Attribution,
    bpf::event::CopyUp,
    catalog::{ContainerInfo, ImageInfo, LayerInfo, SourceLayer},
    render::prometheus,
    report::{self, Counters, Drops, KnownContainer, KnownMount, ProbeInfo, Report},
    sys::mounts::Dev,
};
use ovltrace_ebpf::{LookupStats, OverlayKey};
use ovltrace_tests::reports;

/// The promtool binary, or None (after the skip policy) when missing.
fn promtool() -> Option<PathBuf> {
    ovltrace_tests::require("promtool", ovltrace_tests::promtool())
}

/// Runs `promtool check metrics` on `text`: (success, its output).
fn check_metrics(promtool: &Path, text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    // promtool stops reading at the first error it finds: a broken pipe is
    // its rejection, which its exit status then tells.
    let written = child.stdin.take().unwrap().write_all(text.as_bytes());
    if let Err(e) = &written {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing to promtool: {e}"
        );
    }
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.trim().is_empty(), said)
}

/// A copy-up on overlay `dev` (kernel encoding); one in seven fails (ENOSPC).
fn ev(dev: u32, path: &str, latency_ns: u64, bytes: u64) -> CopyUp {
    CopyUp {
        ret: if latency_ns.is_multiple_of(7) { -28 } else { 0 },
        ..reports::event(Dev::from_kernel(dev), path.as_bytes(), latency_ns, bytes)
    }
}

const HOSTILE: [&str; 6] = [
    "we\"b",
    "back\\slash\\",
    "new\nline\n",
    "brace{le=\"0.1\"} 9\n# TYPE x counter",
    "ünïcødé 🐳 \r\u{1b}[31m\t",
    "",
];

fn busy_report() -> Report {
    let mut agg = Aggregator::new(1000);
    let mut mounts = HashMap::new();
    let mut containers = Vec::new();
    let mut lookups = Vec::new();
    for (i, name) in HOSTILE.iter().enumerate() {
        let id = format!("{:064x}", 0xc0ffee + i);
        let dev = 40 + i as u32;
        let diff_id = format!("sha256:{}\"\n{i}", "ab".repeat(8));
        let info = ContainerInfo {
            id: id.clone(),
            // The empty name falls back on the id.
            name: Some(name.to_string()),
            image: ImageInfo {
                id: Some(format!("sha256:{:064x}", 0xbeef + i)),
                tags: if i % 2 == 0 {
                    vec![format!("repo/{name}:{i}\\\"")]
                } else {
                    vec![]
                },
            },
            mountpoint: format!("/var/lib/docker/overlay2/{id}/merged").into(),
            dev: Dev::from_kernel(dev),
            runtime: "docker",
            upperdir: None,
            layers: vec![LayerInfo {
                index: 1,
                diff_id: Some(diff_id.clone()),
                ..Default::default()
            }],
            pod: None,
            mount_id: 0,
        };
        mounts.insert(
            OverlayKey::dev_only(dev),
            KnownMount {
                container: Some(id.as_str().into()),
                mountpoint: Some(info.mountpoint.display().to_string()),
                ..Default::default()
            },
        );
        containers.push(KnownContainer { info, gone: i == 3 });
        let attr = Attribution {
            container: Some(id.as_str().into()),
            layer: Some(1),
            outside: false,
        };
        let source = SourceLayer {
            index: 1,
            diff_id: Some(diff_id),
            created_by: Some("RUN \"evil\"\n".into()),
            data_index: None,
        };
        for k in 0..(20 * (i as u64 + 1)) {
            let latency = 1_000 + k * k * 997 * (i as u64 + 1);
            agg.add(
                &ev(dev, &format!("d/f{k}"), latency, k * 4096),
                &attr,
                Some(&source),
            );
        }
        let mut s = LookupStats::ZERO;
        s.found = 100 + i as u64;
        s.not_found = 10;
        s.errors = i as u64;
        s.hist[9 + i] = 60;
        s.hist[14] = 50 + 2 * i as u64;
        s.hist[ovltrace_ebpf::HIST_SLOTS - 1] = 0;
        s.total_ns = 123_456_789;
        lookups.push((OverlayKey::dev_only(dev), s));
    }
    // An overlay of no container.
    mounts.insert(
        OverlayKey::dev_only(99),
        KnownMount {
            mountpoint: Some("/mnt/\"plain\"\n".into()),
            ..Default::default()
        },
    );
    for k in 0..5 {
        agg.add(
            &ev(99, &format!("x{k}"), 20_000_000_000 + k, 1),
            &Attribution::default(),
            None,
        );
    }
    let mut s = LookupStats::ZERO;
    s.not_found = 3;
    s.hist[ovltrace_ebpf::HIST_SLOTS - 1] = 3;
    s.total_ns = 3 << 40;
    lookups.push((OverlayKey::dev_only(99), s));
    report::build(report::Inputs {
        agg: &agg,
        lookups: &lookups,
        mounts: &mounts,
        containers: &containers,
        probe: ProbeInfo {
            strategy: "kprobe".into(),
            data_copy: Some("ovl_copy_up_file".into()),
        },
        host: "host".into(),
        kernel: "6.12.0-31-cloud-amd64 \"\\\n".into(),
        started_unix_ms: 1_764_000_000_001,
        duration_ms: 12_345,
        drops: Drops {
            ringbuf_full: 1,
            lost_returns: 2,
            inflight_full: 3,
            decode_errors: 4,
            ..Default::default()
        },
        counters: Counters {
            copy_up_entries: 500,
            copy_up_exits: 499,
            data_copies: 400,
            lookup_entries: 1000,
            lookup_exits: 999,
            filtered: 7,
            ..Default::default()
        },
        warnings: vec![],
        top: 10,
    })
}

fn empty_report() -> Report {
    report::build(report::Inputs {
        agg: &Aggregator::new(16),
        lookups: &[],
        mounts: &HashMap::new(),
        containers: &[],
        probe: ProbeInfo {
            strategy: "fentry".into(),
            data_copy: None,
        },
        host: "host".into(),
        kernel: "6.1.0".into(),
        started_unix_ms: 0,
        duration_ms: 0,
        drops: Drops::default(),
        counters: Counters::default(),
        warnings: vec![],
        top: 10,
    })
}

#[test]
fn promtool_accepts_the_metrics() {
    let Some(promtool) = promtool() else {
        return;
    };
    let busy = prometheus::render(&busy_report());
    // The report really is busy: every hostile container has its series.
    let containers = busy
        .lines()
        .filter(|l| l.starts_with("ovltrace_copy_ups_total{"))
        .count();
    assert_eq!(containers, HOSTILE.len() + 1, "{busy}");
    assert!(busy.contains("ovltrace_layer_copy_ups_total{diff_id="));
    for (what, text) in [
        ("busy", busy),
        ("empty", prometheus::render(&empty_report())),
    ] {
        let (ok, said) = check_metrics(&promtool, &text);
        assert!(
            ok,
            "promtool check metrics rejected the {what} report:\n{said}\n---- metrics:\n{text}"
        );
    }
}

/// The check above can fail: promtool does reject broken output.
#[test]
fn promtool_rejects_broken_metrics() {
    let Some(promtool) = promtool() else {
        return;
    };
    let text = prometheus::render(&busy_report());
    // An unescaped quote in a label value, and a counter without `_total`.
    let unescaped = text.replacen("we\\\"b", "we\"b", 1);
    assert_ne!(unescaped, text);
    assert!(!check_metrics(&promtool, &unescaped).0);
    let renamed = text.replace("ovltrace_events_total", "ovltrace_events");
    assert!(!check_metrics(&promtool, &renamed).0);
}
