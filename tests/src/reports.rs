//! Synthetic reports, built with `report::build` from synthetic events (not
//! hand-written JSON), some with hostile names.
//!
//! Also compiled into the hermetic `ovltrace/tests/report_cli.rs` by
//! `#[path]` (ovltrace cannot dev-depend on this crate, which depends on it),
//! so this file uses only ovltrace, ovltrace-ebpf and std.

#![allow(dead_code)]

use std::collections::HashMap;

use ovltrace::{
    aggregate::Aggregator,
    attribute::Attribution,
    bpf::event::{CopyUp, FileKind},
    catalog::{ContainerInfo, ImageInfo, LayerInfo, SourceLayer},
    report::{build, Counters, Drops, Inputs, KnownContainer, KnownMount, ProbeInfo, Report},
    sys::mounts::Dev,
};
use ovltrace_ebpf::{LookupStats, OverlayKey};

/// One container of a synthetic trace.
pub struct Spec {
    pub name: String,
    pub image_tag: String,
    pub created_by: String,
    /// Paths copied up in it (raw bytes: need not be UTF-8).
    pub paths: Vec<Vec<u8>>,
}

/// A 64-hex-digit id, different per host and index (ids are globally unique).
pub fn container_id(host: &str, i: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes().chain([i as u8]) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}").repeat(4)
}

/// A report of `specs` on `host`: container `i` is overlay 0:(50+i), with a
/// three-layer image; every path is copied up `i + 2` times, from layer 2.
/// Plus an overlay of no container (0:27) with one file, and lookups.
pub fn report(host: &str, specs: &[Spec], warnings: Vec<String>) -> Report {
    let mut agg = Aggregator::new(1000);
    let mut mounts = HashMap::new();
    let mut known = Vec::new();
    let mut lookups = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let dev = Dev::new(0, 50 + i as u32);
        let layer = |index: usize, position: Option<usize>, diff: String, by: &str| LayerInfo {
            index,
            diff_id: Some(format!("sha256:{diff}")),
            created_by: Some(by.to_string()),
            init: position.is_none(),
            position,
            ..Default::default()
        };
        let info = ContainerInfo {
            id: container_id(host, i),
            name: Some(s.name.clone()),
            image: ImageInfo {
                id: Some(format!("sha256:{:064x}", i + 1)),
                tags: vec![s.image_tag.clone()],
            },
            mountpoint: format!("/var/lib/docker/overlay2/m{i}/merged").into(),
            dev,
            runtime: "docker",
            upperdir: None,
            layers: vec![
                layer(1, None, format!("{:064x}", 100 + i), ""),
                layer(2, Some(2), format!("{:064x}", 200 + i), &s.created_by),
                layer(3, Some(1), format!("{:064x}", 300), "ADD rootfs.tar /"),
            ],
            pod: None,
            mount_id: i as u32,
        };
        mounts.insert(
            OverlayKey::dev_only(dev.to_kernel()),
            KnownMount {
                container: Some(info.id.clone()),
                mountpoint: Some(info.mountpoint.display().to_string()),
                upperdir: None,
                lowerdirs: vec!["l1".into(), "l2".into(), "l3".into()],
            },
        );
        let src = SourceLayer {
            index: 2,
            diff_id: info.layers[1].diff_id.clone(),
            created_by: info.layers[1].created_by.clone(),
            data_index: None,
        };
        let attr = Attribution {
            container: Some(info.id.as_str().into()),
            layer: Some(2),
            outside: false,
        };
        for (j, path) in s.paths.iter().enumerate() {
            for k in 0..(i + 2) {
                let latency = 20_000 * (j as u64 + 1) * (k as u64 + 1) + 1000 * i as u64;
                agg.add(
                    &event(dev, path, latency, 4096 * (j as u64 + 1)),
                    &attr,
                    Some(&src),
                );
            }
        }
        let mut l = LookupStats::ZERO;
        l.found = 150;
        l.not_found = 50;
        l.total_ns = 200 * 3000;
        l.hist[10] = 120;
        l.hist[11] = 70;
        l.hist[14] = 10;
        lookups.push((OverlayKey::dev_only(dev.to_kernel()), l));
        known.push(KnownContainer { info, gone: false });
    }
    let plain = Dev::new(0, 27);
    mounts.insert(
        OverlayKey::dev_only(plain.to_kernel()),
        KnownMount {
            container: None,
            mountpoint: Some("/tmp/plain/merged".into()),
            upperdir: Some("/tmp/plain/upper".into()),
            lowerdirs: vec!["/tmp/plain/lower".into()],
        },
    );
    agg.add(
        &event(plain, b"data/table.bin", 3_000_000, 3 << 20),
        &Attribution {
            container: None,
            layer: Some(1),
            outside: false,
        },
        None,
    );
    let events = agg.events;
    build(Inputs {
        agg: &agg,
        lookups: &lookups,
        mounts: &mounts,
        containers: &known,
        probe: ProbeInfo {
            strategy: "kprobe".into(),
            data_copy: Some("ovl_copy_up_file".into()),
        },
        host: host.into(),
        kernel: "6.12.0-test".into(),
        started_unix_ms: 1_764_200_000_000,
        duration_ms: 12_500,
        drops: Drops {
            ringbuf_full: 2,
            ..Default::default()
        },
        counters: Counters {
            copy_up_entries: events,
            copy_up_exits: events,
            ..Default::default()
        },
        warnings,
        top: 50,
    })
}

/// One successful copy-up of `bytes` at `path` on overlay `dev`, by pid 4242
/// (`writer`), half its time spent copying data.
pub fn event(dev: Dev, path: &[u8], latency_ns: u64, bytes: u64) -> CopyUp {
    CopyUp {
        start_ns: 0,
        latency_ns,
        data_ns: Some(latency_ns / 2),
        data_len: Some(bytes),
        size: bytes,
        tgid: 4242,
        tid: 4242,
        overlay: OverlayKey::dev_only(dev.to_kernel()),
        ret: 0,
        kind: FileKind::Regular,
        path: path.to_vec(),
        path_truncated: false,
        comm: "writer".into(),
        mnt_ns: 0,
        source: None,
        cause: Default::default(),
    }
}

/// Two ordinary containers.
pub fn plain_specs(prefix: &str) -> Vec<Spec> {
    (0..2)
        .map(|i| Spec {
            name: format!("{prefix}-{i}"),
            image_tag: "shop/api:2.3".into(),
            created_by: "/bin/sh -c #(nop) COPY file:abc in /var/lib/app/ ".into(),
            paths: vec![
                format!("var/lib/app/db-{i}.sqlite").into_bytes(),
                b"etc/app.conf".to_vec(),
            ],
        })
        .collect()
}

/// The script every hostile string tries to run: it would change the title.
pub const PWNED: &str = "PWNED";

/// Containers whose names, image tags, instructions and file names try to
/// inject markup or script, or to confuse a terminal or a reader.
pub fn hostile_specs() -> Vec<Spec> {
    let script = format!("<script>document.title='{PWNED}'</script>");
    let img = format!("\"><img src=x onerror=\"document.title='{PWNED}'\">");
    let attr = format!("' onmouseover='document.title=\"{PWNED}\"' x='");
    vec![
        Spec {
            name: script.clone(),
            image_tag: format!("evil/{img}:latest"),
            created_by: format!("/bin/sh -c #(nop) COPY {script} /app"),
            paths: vec![
                format!("app/{script}.txt").into_bytes(),
                format!("app/{img}").into_bytes(),
            ],
        },
        Spec {
            name: img.clone(),
            image_tag: script.clone(),
            created_by: format!("/bin/sh -c echo {attr}"),
            paths: vec![
                b"app/line\nbreak\x1b[2J\x1b[31mred".to_vec(),
                b"app/not-utf8-\xff\xfe-<b>bold</b>.bin".to_vec(),
                format!("app/{attr}").into_bytes(),
            ],
        },
        Spec {
            name: "evil\nname\x1b[31m-red\x1b[0m & \u{202e}txt.exe".into(),
            image_tag: "plain:1".into(),
            created_by: "RUN true".into(),
            paths: vec![
                format!("app/{}", "n".repeat(255)).into_bytes(),
                "app/bidi-\u{202e}gnp.exe".as_bytes().to_vec(),
            ],
        },
    ]
}

pub fn hostile_warnings() -> Vec<String> {
    vec![format!("<script>document.title='{PWNED}'</script> warning")]
}
