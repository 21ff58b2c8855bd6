//! Reports for tests: a fixed trace, and a report of nothing.

use super::*;

/// The inputs of a trace that saw nothing, for tests that fill in what
/// they need.
pub(crate) fn empty_inputs() -> Inputs<'static> {
    static MOUNTS: std::sync::OnceLock<HashMap<OverlayKey, KnownMount>> =
        std::sync::OnceLock::new();
    static AGG: std::sync::OnceLock<Aggregator> = std::sync::OnceLock::new();
    Inputs {
        agg: AGG.get_or_init(|| Aggregator::new(10)),
        lookups: &[],
        mounts: MOUNTS.get_or_init(HashMap::new),
        containers: &[],
        probe: ProbeInfo {
            strategy: "kprobe".into(),
            data_copy: None,
        },
        host: "test".into(),
        kernel: "6.12".into(),
        started_unix_ms: 0,
        duration_ms: 1000,
        drops: Drops::default(),
        counters: Counters::default(),
        warnings: vec![],
        top: 10,
    }
}

/// A report of nothing, for tests that fill in what they need.
pub(crate) fn empty_report() -> Report {
    build(empty_inputs())
}

/// A fixed trace: one container with three layers, a plain overlay,
/// lookups, and a hostile file name.
pub(crate) fn golden_report() -> Report {
    use std::collections::HashMap;

    use crate::{
        aggregate::Aggregator,
        attribute::Attribution,
        bpf::event::{Cause, CopyUp, FileKind},
        catalog::{ContainerInfo, ImageInfo, LayerInfo, SourceLayer},
        report::{build, Counters, Drops, Inputs, KnownContainer, KnownMount, ProbeInfo},
        sys::mounts::Dev,
    };
    let layer = |index: usize, position: Option<usize>, diff: &str, by: &str| LayerInfo {
        index,
        cache_id: Some(format!("cache{index}")),
        short_id: None,
        diff_id: Some(format!("sha256:{diff}")),
        chain_id: None,
        size: Some(1000 * index as u64),
        created_by: Some(by.into()),
        comment: None,
        init: position.is_none(),
        position,
        number: None,
        dir: None,
        deferred: None,
    };
    let web = ContainerInfo {
        id: "3f2a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8".into(),
        name: Some("web-1".into()),
        image: ImageInfo {
            id: Some("sha256:feedface".into()),
            tags: vec!["shop/api:2.3".into()],
        },
        mountpoint: "/var/lib/docker/overlay2/abc/merged".into(),
        dev: Dev::new(0, 50),
        runtime: "docker",
        upperdir: None,
        layers: vec![
            layer(1, None, "init00000000", ""),
            layer(
                2,
                Some(2),
                "ab12cd34ef56aa",
                "/bin/sh -c #(nop) COPY file:01344f2ea10c2be8c3f5a2e2b1f1f1e0d7c7b5a0e3c1d9f8a7b6c5d4e3f2a1b0 in /var/lib/app/ ",
            ),
            layer(3, Some(1), "0123456789ab", ""),
        ],
        pod: None,
        mount_id: 1,
    };
    let ev = |dev: u32, path: &[u8], ns: u64, bytes: u64, comm: &str| CopyUp {
        start_ns: 0,
        latency_ns: ns,
        data_ns: Some(ns / 2),
        data_len: Some(bytes),
        size: bytes,
        tgid: 42,
        tid: 42,
        overlay: OverlayKey::dev_only(dev),
        ret: 0,
        kind: FileKind::Regular,
        path: path.to_vec(),
        path_truncated: false,
        comm: comm.into(),
        mnt_ns: 0,
        source: None,
        cause: Default::default(),
    };
    let mut agg = Aggregator::new(100);
    let in_web = |layer: usize| Attribution {
        container: Some(web.id.as_str().into()),
        layer: Some(layer),
        outside: false,
    };
    let app_layer = SourceLayer {
        index: 2,
        diff_id: Some("sha256:ab12cd34ef56aa".into()),
        created_by: web.layers[1].created_by.clone(),
        data_index: None,
    };
    let why = |cause: Cause, e: CopyUp| CopyUp { cause, ..e };
    agg.add(
        &why(
            Cause::Write,
            ev(
                50,
                b"var/lib/app/catalog.db",
                1_800_000_000,
                412 << 20,
                "app",
            ),
        ),
        &in_web(2),
        Some(&app_layer),
    );
    agg.add(
        &why(
            Cause::Truncate,
            ev(50, b"var/lib/app/small.json", 2_500_000, 4096, "app"),
        ),
        &in_web(2),
        Some(&app_layer),
    );
    agg.add(
        &why(
            Cause::Metadata,
            ev(50, b"etc/\x1b[31mevil\nname", 90_000, 10, "sh"),
        ),
        &in_web(3),
        None,
    );
    // A directory copied up because a file below it was: no bytes.
    agg.add(
        &why(
            Cause::Parent,
            CopyUp {
                kind: FileKind::Dir,
                ..ev(50, b"var/lib/app", 40_000, 0, "app")
            },
        ),
        &in_web(2),
        Some(&app_layer),
    );
    agg.add(
        &why(Cause::Write, ev(27, b"three_m", 34_000_000, 3 << 20, "sh")),
        &Attribution::default(),
        None,
    );
    let mut mounts = HashMap::new();
    mounts.insert(
        OverlayKey::dev_only(Dev::new(0, 27).to_kernel()),
        KnownMount {
            container: None,
            mountpoint: Some("/tmp/o/merged".into()),
            upperdir: Some("/tmp/o/up".into()),
            lowerdirs: vec!["/tmp/o/l1".into(), "/tmp/o/l2".into()],
        },
    );
    mounts.insert(
        OverlayKey::dev_only(Dev::new(0, 50).to_kernel()),
        KnownMount {
            container: Some(web.id.as_str().into()),
            mountpoint: Some("/var/lib/docker/overlay2/abc/merged".into()),
            upperdir: None,
            lowerdirs: vec!["a".into(), "b".into(), "c".into()],
        },
    );
    let mut lookups = ovltrace_ebpf::LookupStats::ZERO;
    lookups.found = 90;
    lookups.not_found = 10;
    lookups.total_ns = 100 * 3000;
    lookups.hist[11] = 99;
    lookups.hist[16] = 1;
    build(Inputs {
        agg: &agg,
        lookups: &[(OverlayKey::dev_only(Dev::new(0, 50).to_kernel()), lookups)],
        mounts: &mounts,
        containers: &[KnownContainer {
            info: web,
            gone: false,
        }],
        probe: ProbeInfo {
            strategy: "kprobe".into(),
            data_copy: Some("ovl_copy_up_file".into()),
        },
        host: "golden".into(),
        kernel: "6.12.0".into(),
        started_unix_ms: 0,
        duration_ms: 12_000,
        drops: Drops {
            ringbuf_full: 2,
            ..Default::default()
        },
        counters: Counters::default(),
        warnings: vec![],
        top: 10,
    })
}
