//! Fixture trees of a containerd root, with bolt databases written by
//! `bolt::testing`.

use super::*;
use crate::{catalog::bolt::testing::B, sys::mounts::Dev};
use std::{fs, os::unix::fs::symlink};

fn put(p: &Path, data: impl AsRef<[u8]>) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn uv(mut x: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
    out
}

fn zz(x: i64) -> Vec<u8> {
    uv(((x << 1) ^ (x >> 63)) as u64)
}

/// A containerd root with one 3-layer image and a running container `web`.
struct Fx {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    diffs: Vec<String>,
    chains: Vec<String>,
    /// Snapshot numbers of the image layers (base first) and the container.
    ids: Vec<u64>,
    rw: u64,
    target: String,
    config: String,
    sizes: Vec<i64>,
}

const IMAGE: &str = "docker.io/shop/api:2.3";

impl Fx {
    fn new() -> Self {
        Self::build(false, None)
    }

    /// `index`: the image is a multi-platform index. `docker`: Docker's
    /// containerd store (namespace moby, mount under `<docker>/rootfs/overlayfs`).
    fn build(index: bool, docker: Option<&str>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join("var/lib/containerd");
        let diffs: Vec<String> = (0..3)
            .map(|i| format!("sha256:{}", oci::sha256_hex(format!("diff{i}").as_bytes())))
            .collect();
        let chains = oci::chain_ids(&diffs);
        let ns = if docker.is_some() { MOBY } else { "k8s.io" };
        let blobs = root.join(BLOBS);
        let blob = |data: &[u8]| -> String {
            let hex = oci::sha256_hex(data);
            put(&blobs.join(&hex), data);
            format!("sha256:{hex}")
        };
        let config = serde_json::json!({
            "architecture": "amd64",
            "rootfs": {"type": "layers", "diff_ids": diffs},
            "history": [
                {"created_by": "", "comment": "imported"},
                {"created_by": "/bin/sh -c #(nop)  ENV A=1", "empty_layer": true},
                {"created_by": "RUN /bin/sh -c echo hi > /f # buildkit"},
                {"created_by": "COPY big /data/ # buildkit"}
            ]
        });
        let config = blob(&serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": config, "size": 1},
            "layers": []
        });
        let mut target = blob(&serde_json::to_vec(&manifest).unwrap());
        if index {
            // Another platform's manifest is listed but not pulled.
            let absent = format!("sha256:{}", "e".repeat(64));
            let idx = serde_json::json!({
                "schemaVersion": 2,
                "manifests": [
                    {"digest": absent, "platform": {"architecture": "arm64", "os": "linux"}},
                    {"digest": target, "platform": {"architecture": "amd64", "os": "linux"}}
                ]
            });
            target = blob(&serde_json::to_vec(&idx).unwrap());
        }
        let sizes = vec![1000i64, 20, 3_000_000];
        let ids = vec![3u64, 7, 12];
        let rw = 20u64;
        let cid = match docker {
            Some(_) => oci::sha256_hex(b"docker-container"),
            None => oci::sha256_hex(b"k8s-container"),
        };
        // The snapshotter's database.
        let mut snaps = B::new().split(2);
        let mut meta_snaps = B::new();
        for i in 0..3 {
            let backend = format!("{ns}/{}/{}", 100 + i, chains[i]);
            let mut s = B::new()
                .v("id", uv(ids[i]))
                .v("kind", [3u8])
                .v("size", zz(sizes[i]))
                .v("inodes", zz(5));
            if i > 0 {
                s = s.v("parent", format!("{ns}/{}/{}", 99 + i, chains[i - 1]));
            }
            snaps = snaps.b(&backend, s);
            meta_snaps = meta_snaps.b(&chains[i], B::new().v("name", &backend).inline());
            fs::create_dir_all(
                root.join(SNAPSHOTTER)
                    .join(format!("snapshots/{}/fs", ids[i])),
            )
            .unwrap();
        }
        let rw_backend = format!("{ns}/200/{cid}");
        snaps = snaps.b(
            &rw_backend,
            B::new()
                .v("id", uv(rw))
                .v("kind", [2u8])
                .v("parent", format!("{ns}/102/{}", chains[2])),
        );
        meta_snaps = meta_snaps.b(&cid, B::new().v("name", &rw_backend));
        fs::create_dir_all(root.join(SNAPSHOTTER).join(format!("snapshots/{rw}/fs"))).unwrap();
        let sdb = bolt::testing::write(&B::new().b("v1", B::new().b("snapshots", snaps)));
        put(&root.join(SNAPSHOTTER_DB), sdb);
        // meta.db.
        let mut labels = B::new().v("io.kubernetes.container.name", "api");
        if docker.is_none() {
            labels = labels
                .v(LABEL_POD_NAME, "api-7d9f")
                .v(LABEL_POD_NAMESPACE, "shop");
        }
        let ctr = B::new()
            .v("image", if docker.is_some() { "" } else { IMAGE })
            .v("snapshotKey", &cid)
            .v("snapshotter", "overlayfs")
            .b("labels", labels)
            .b("runtime", B::new().v("name", "io.containerd.runc.v2"));
        let img = |t: &str| B::new().b("target", B::new().v("digest", t).v("mediatype", "x"));
        let nsb = B::new()
            .b("containers", B::new().b(&cid, ctr))
            .b(
                "images",
                B::new()
                    .b(IMAGE, img(&target))
                    .b("docker.io/shop/api:latest", img(&target))
                    .b("other:1", img(&format!("sha256:{}", "1".repeat(64)))),
            )
            .b("snapshots", B::new().b("overlayfs", meta_snaps));
        let mdb = bolt::testing::write(&B::new().b("v1", B::new().b(ns, nsb).v("version", [3u8])));
        put(&root.join(META_DB), mdb);
        if let Some(d) = docker {
            put(
                &base
                    .join(d)
                    .join(format!("containers/{cid}/config.v2.json")),
                serde_json::to_vec(&serde_json::json!({
                    "ID": cid, "Name": "/web-1", "Image": target,
                    "Config": {"Image": IMAGE}
                }))
                .unwrap(),
            );
        }
        Fx {
            _tmp: tmp,
            base,
            root,
            diffs,
            chains,
            ids,
            rw,
            target,
            config,
            sizes,
        }
    }

    fn snap_dir(&self, id: u64) -> PathBuf {
        self.root
            .join(SNAPSHOTTER)
            .join(format!("snapshots/{id}/fs"))
    }

    fn cid(&self) -> String {
        let f = self.root.join(META_DB);
        let _ = f;
        String::new()
    }

    fn mount(&self, mountpoint: PathBuf) -> OverlayMount {
        OverlayMount {
            mount_id: 300,
            parent_id: 1,
            dev: Dev::new(0, 77),
            mountpoint,
            upperdir: Some(self.snap_dir(self.rw)),
            workdir: None,
            lowerdirs: self.ids.iter().rev().map(|&i| self.snap_dir(i)).collect(),
            datadirs: vec![],
            options: vec![],
        }
    }

    fn k8s_mount(&self) -> OverlayMount {
        self.mount(self.base.join(format!(
            "run/containerd/io.containerd.runtime.v2.task/k8s.io/{}/rootfs",
            oci::sha256_hex(b"k8s-container")
        )))
    }

    fn scan(&self, m: &OverlayMount) -> (ContainerInfo, Vec<String>) {
        let (mut cs, w) = ContainerdResolver::new().scan_collect(std::slice::from_ref(m));
        assert_eq!(cs.len(), 1, "warnings: {w:?}");
        (cs.remove(0), w)
    }
}

fn assert_layers(fx: &Fx, c: &ContainerInfo) {
    let by = [
        "",
        "RUN /bin/sh -c echo hi > /f # buildkit",
        "COPY big /data/ # buildkit",
    ];
    assert_eq!(c.layers.len(), 3);
    for (k, l) in c.layers.iter().enumerate() {
        let pos = 3 - k;
        let i = pos - 1;
        assert_eq!(l.index, k + 1);
        assert!(!l.init);
        assert_eq!(l.position, Some(pos));
        assert_eq!(l.diff_id.as_deref(), Some(fx.diffs[i].as_str()));
        assert_eq!(l.chain_id.as_deref(), Some(fx.chains[i].as_str()));
        assert_eq!(l.cache_id, Some(fx.ids[i].to_string()));
        assert_eq!(l.size, Some(fx.sizes[i] as u64));
        assert_eq!(l.created_by.as_deref(), Some(by[i]));
        assert_eq!(l.dir, Some(fx.snap_dir(fx.ids[i])));
    }
    assert_eq!(c.layers[2].comment.as_deref(), Some("imported"));
}

#[test]
fn resolves_a_kubernetes_container() {
    let fx = Fx::new();
    let _ = fx.cid();
    let (c, w) = fx.scan(&fx.k8s_mount());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.id, oci::sha256_hex(b"k8s-container"));
    assert_eq!(c.name.as_deref(), Some("api"));
    assert_eq!(c.runtime, "containerd");
    assert_eq!(
        c.pod,
        Some(PodInfo {
            name: "api-7d9f".into(),
            namespace: Some("shop".into())
        })
    );
    assert_eq!(c.image.id.as_deref(), Some(fx.target.as_str()));
    assert_eq!(
        c.image.tags,
        ["docker.io/shop/api:2.3", "docker.io/shop/api:latest"]
    );
    assert_eq!(c.upperdir, Some(fx.snap_dir(fx.rw)));
    assert_layers(&fx, &c);
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["pod"]["namespace"], "shop");
    assert_eq!(json["runtime"], "containerd");
}

#[test]
fn multi_platform_index_picks_the_pulled_manifest() {
    let fx = Fx::build(true, None);
    let (c, w) = fx.scan(&fx.k8s_mount());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.image.id.as_deref(), Some(fx.target.as_str()));
    assert_layers(&fx, &c);
}

#[test]
fn docker_containerd_store_mounts_are_named_by_docker() {
    let fx = Fx::build(false, Some("var/lib/docker"));
    let cid = oci::sha256_hex(b"docker-container");
    let m = fx.mount(
        fx.base
            .join(format!("var/lib/docker/rootfs/overlayfs/{cid}")),
    );
    let (c, w) = fx.scan(&m);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.id, cid);
    assert_eq!(c.name.as_deref(), Some("web-1"));
    assert_eq!(c.runtime, "docker");
    assert_eq!(c.pod, None);
    // The container record has no image: Docker's config names it.
    assert_eq!(c.image.id.as_deref(), Some(fx.target.as_str()));
    assert_eq!(c.image.tags.len(), 2);
    assert_layers(&fx, &c);
}

#[test]
fn an_init_layer_is_marked() {
    // Docker's containerd store puts a committed `<id>-init` snapshot between
    // the image and the container layer.
    let fx = Fx::new();
    let _ = fx.config.clone();
    let mut m = fx.k8s_mount();
    // Rewrite the snapshotter DB with an init snapshot 30.
    let sdb = fs::read(fx.root.join(SNAPSHOTTER_DB)).unwrap();
    let db = bolt::Db::parse(sdb).unwrap();
    let v1 = db.root().bucket(b"v1").unwrap().unwrap();
    let snaps = v1.bucket(b"snapshots").unwrap().unwrap();
    let mut nb = B::new();
    for (k, item) in snaps.entries(100).unwrap() {
        let b = item.bucket().unwrap();
        let mut s = B::new();
        for (kk, v) in b.entries(100).unwrap() {
            s = s.v(kk, v.value().unwrap());
        }
        nb = nb.b(k, s);
    }
    nb = nb.b(
        "k8s.io/150/xyz-init",
        B::new().v("id", uv(30)).v("kind", [3u8]),
    );
    put(
        &fx.root.join(SNAPSHOTTER_DB),
        bolt::testing::write(&B::new().b("v1", B::new().b("snapshots", nb))),
    );
    fs::create_dir_all(fx.snap_dir(30)).unwrap();
    m.lowerdirs.insert(0, fx.snap_dir(30));
    let (c, w) = fx.scan(&m);
    assert!(w.is_empty(), "{w:?}");
    assert!(c.layers[0].init);
    assert_eq!(c.layers[0].position, None);
    assert_eq!(c.layers[1].position, Some(3));
    assert_eq!(c.layers[1].diff_id.as_deref(), Some(fx.diffs[2].as_str()));
}

#[test]
fn relative_lowerdirs_are_snapshot_numbers() {
    let fx = Fx::new();
    let mut m = fx.k8s_mount();
    m.lowerdirs = fx
        .ids
        .iter()
        .rev()
        .map(|i| PathBuf::from(format!("{i}/fs")))
        .collect();
    let (c, w) = fx.scan(&m);
    assert!(w.is_empty(), "{w:?}");
    assert_layers(&fx, &c);
}

#[test]
fn other_mounts_are_not_claimed() {
    let fx = Fx::new();
    let plain = OverlayMount {
        mount_id: 9,
        parent_id: 1,
        dev: Dev::new(0, 90),
        mountpoint: "/mnt/x".into(),
        upperdir: Some("/tmp/u".into()),
        workdir: None,
        lowerdirs: vec![fx.snap_dir(3)],
        datadirs: vec![],
        options: vec![],
    };
    let mut r = ContainerdResolver::new();
    let (cs, w) = r.scan_collect(&[plain.clone(), fx.k8s_mount()]);
    assert_eq!(cs.len(), 1);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(r.roots(), std::slice::from_ref(&fx.root));
    let inv =
        crate::catalog::inventory([&mut r as &mut dyn Resolver], std::slice::from_ref(&plain));
    assert_eq!(inv.mounts, vec![plain]);
    // An active snapshot no container record names, outside a task dir.
    let mut m = fx.mount(fx.base.join("mnt/y"));
    let (cs, _) = ContainerdResolver::new().scan_collect(std::slice::from_ref(&m));
    assert_eq!(cs.len(), 1, "the record names the snapshot");
    m.upperdir = Some(fx.snap_dir(999));
    let (cs, _) = ContainerdResolver::new().scan_collect(&[m]);
    assert!(cs.is_empty());
}

#[test]
fn missing_or_corrupt_databases_degrade() {
    // meta.db missing: layers from the snapshotter DB (chain-ids from the
    // backend keys), container from the task directory.
    let fx = Fx::new();
    fs::remove_file(fx.root.join(META_DB)).unwrap();
    let (c, w) = fx.scan(&fx.k8s_mount());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.id, oci::sha256_hex(b"k8s-container"));
    assert_eq!((c.name.as_ref(), c.image.id.as_ref()), (None, None));
    assert_eq!(c.layers[0].chain_id.as_deref(), Some(fx.chains[2].as_str()));
    assert_eq!(c.layers[0].diff_id, None);
    assert_eq!(c.layers[0].size, Some(fx.sizes[2] as u64));

    // A corrupt meta.db: a warning, the same degraded result.
    let fx = Fx::new();
    put(&fx.root.join(META_DB), vec![0xa5u8; 8192]);
    let (c, w) = fx.scan(&fx.k8s_mount());
    assert!(w.iter().any(|w| w.contains("no stable copy")), "{w:?}");
    assert_eq!(c.layers[0].chain_id.as_deref(), Some(fx.chains[2].as_str()));

    // Damaged pages inside a valid file: errors, never panics.
    let fx = Fx::new();
    let good = fs::read(fx.root.join(META_DB)).unwrap();
    for i in (2 * 4096..good.len()).step_by(97) {
        let mut bad = good.clone();
        bad[i] ^= 0x5a;
        put(&fx.root.join(META_DB), bad);
        let _ = ContainerdResolver::new().scan_collect(&[fx.k8s_mount()]);
    }

    // Snapshotter DB missing: nothing identifies the layers' keys, the
    // container is still found by its task directory, layers have dirs only.
    let fx = Fx::new();
    fs::remove_file(fx.root.join(SNAPSHOTTER_DB)).unwrap();
    let (c, _) = fx.scan(&fx.k8s_mount());
    assert_eq!(c.name.as_deref(), Some("api"));
    assert_eq!(c.layers[0].diff_id, None);
    assert_eq!(c.layers[0].dir, Some(fx.snap_dir(fx.ids[2])));

    // An image config that does not match its digest: no instructions.
    let fx = Fx::new();
    let cfg = fx
        .root
        .join(BLOBS)
        .join(fx.config.trim_start_matches("sha256:"));
    let mut data = fs::read(&cfg).unwrap();
    data.push(b' ');
    fs::write(&cfg, data).unwrap();
    let (c, w) = fx.scan(&fx.k8s_mount());
    assert!(
        w.iter().any(|w| w.contains("does not match its digest")),
        "{w:?}"
    );
    assert!(c.layers.iter().all(|l| l.created_by.is_none()));
    assert_eq!(c.layers[0].chain_id.as_deref(), Some(fx.chains[2].as_str()));
}

#[test]
fn planted_symlinks_are_not_followed() {
    let fx = Fx::new();
    let outside = fx.base.join("outside");
    fs::create_dir_all(&outside).unwrap();
    // meta.db replaced by a symlink to a database outside the root.
    let evil = outside.join("meta.db");
    fs::rename(fx.root.join(META_DB), &evil).unwrap();
    symlink(&evil, fx.root.join(META_DB)).unwrap();
    // A layer directory replaced by a symlink.
    let d = fx.snap_dir(fx.ids[1]);
    fs::remove_dir(&d).unwrap();
    fs::create_dir_all(outside.join("fs")).unwrap();
    symlink(outside.join("fs"), &d).unwrap();
    // The content store directory is a symlink.
    let blobs = fx.root.join(BLOBS);
    fs::rename(&blobs, outside.join("blobs")).unwrap();
    symlink(outside.join("blobs"), &blobs).unwrap();
    let (c, w) = fx.scan(&fx.k8s_mount());
    assert!(w.iter().any(|w| w.contains("refusing to follow")), "{w:?}");
    assert_eq!(c.name, None, "nothing read from the planted meta.db");
    assert_eq!(c.layers[1].dir, None);
    assert!(c.layers.iter().all(|l| l.created_by.is_none()));
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("outside"), "{json}");
}

#[test]
fn encodings() {
    assert_eq!(uvarint(&uv(300)), Some(300));
    assert_eq!(uvarint(&[0x80]), None);
    assert_eq!(varint(&zz(-5)), Some(-5));
    assert_eq!(varint(&zz(3_000_000)), Some(3_000_000));
    assert_eq!(uvarint(&[0xff; 11]), None);
    assert_eq!(
        split_backend_key("default/12/sha256:abc"),
        Some(("default".into(), "sha256:abc".into()))
    );
    assert_eq!(split_backend_key("default/x/y"), None);
    assert_eq!(
        split_snapshot_path(Path::new(
            "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12/fs"
        )),
        Some((PathBuf::from("/var/lib/containerd"), 12))
    );
    for bad in [
        "/x/io.containerd.snapshotter.v1.overlayfs/snapshots/012/fs",
        "/x/io.containerd.snapshotter.v1.overlayfs/snapshots/a/fs",
        "/x/io.containerd.snapshotter.v1.overlayfs/snapshots/1/work",
        "x/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs",
    ] {
        assert_eq!(split_snapshot_path(Path::new(bad)), None, "{bad}");
    }
    assert_eq!(
        task_mount(Path::new(
            "/run/containerd/io.containerd.runtime.v2.task/default/c1/rootfs"
        )),
        Some(("default".into(), "c1".into()))
    );
    fuzz_parsers(b"/run/containerd/io.containerd.runtime.v2.task/default/c1/rootfs");
    fuzz_parsers(&[0u8; 100]);
}
