//! Fixture trees of a containers/storage root.

use super::*;
use crate::sys::mounts::Dev;
use std::{fs, os::unix::fs::symlink};

fn put(p: &Path, data: impl AsRef<[u8]>) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn hex(seed: &str) -> String {
    oci::sha256_hex(seed.as_bytes())
}

/// A storage root with an image of `n` layers and one container `web-1`.
struct Fx {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    /// Image layers, base first.
    ids: Vec<String>,
    shorts: Vec<String>,
    diffs: Vec<String>,
    image: String,
    cid: String,
    rw: String,
}

impl Fx {
    fn new() -> Self {
        Self::layers(3, None)
    }

    fn layers(n: usize, metadata: Option<serde_json::Value>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join("var/lib/containers/storage");
        let o = root.join("overlay");
        fs::create_dir_all(o.join("l")).unwrap();
        let mut ids: Vec<String> = Vec::new();
        let mut shorts = Vec::new();
        let mut diffs = Vec::new();
        let mut layers = Vec::new();
        for i in 0..n {
            let id = hex(&format!("layer{i}"));
            let short = format!("S{i:025}");
            fs::create_dir_all(o.join(&id).join("diff")).unwrap();
            put(&o.join(&id).join("link"), &short);
            symlink(format!("../{id}/diff"), o.join("l").join(&short)).unwrap();
            let diff = format!("sha256:{}", hex(&format!("diff{i}")));
            let mut rec = serde_json::json!({
                "id": id, "diff-digest": diff, "diff-size": 1000 + i,
                "compressed-diff-digest": diff, "created": "2026-01-01T00:00:00Z"
            });
            if i > 0 {
                rec["parent"] = ids[i - 1].clone().into();
            }
            layers.push(rec);
            ids.push(id);
            shorts.push(short);
            diffs.push(diff);
        }
        let mut history = vec![serde_json::json!({"created_by": "", "comment": "imported"})];
        for i in 1..n {
            history.push(serde_json::json!({"created_by": format!("RUN step {i}")}));
            history.push(serde_json::json!({"created_by": "ENV X=1", "empty_layer": true}));
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "rootfs": {"type": "layers", "diff_ids": diffs},
            "history": history
        }))
        .unwrap();
        let image = oci::sha256_hex(&config);
        put(
            &root
                .join("overlay-images")
                .join(&image)
                .join(big_data_name(&format!("sha256:{image}"))),
            &config,
        );
        put(
            &root.join("overlay-images/images.json"),
            serde_json::to_vec(&serde_json::json!([
                {"id": image, "names": ["localhost/shop/api:2.3", "localhost/shop/api:latest"],
                 "layer": ids[n - 1], "big-data-names": [format!("sha256:{image}")]},
                {"id": hex("other"), "names": ["x:1"], "layer": ids[0]}
            ]))
            .unwrap(),
        );
        // The container layer.
        let rw = hex("rw");
        fs::create_dir_all(o.join(&rw).join("diff")).unwrap();
        let lower: Vec<String> = shorts.iter().rev().map(|s| format!("l/{s}")).collect();
        put(&o.join(&rw).join("lower"), lower.join(":"));
        layers.push(serde_json::json!({"id": rw, "parent": ids[n - 1]}));
        put(
            &root.join("overlay-layers/layers.json"),
            serde_json::to_vec(&layers).unwrap(),
        );
        let cid = hex("container");
        let metadata = metadata.unwrap_or_else(
            || serde_json::json!({"image-name": "localhost/shop/api:2.3", "name": "web-1"}),
        );
        put(
            &root.join("overlay-containers/containers.json"),
            serde_json::to_vec(&serde_json::json!([
                {"id": cid, "names": ["web-1"], "image": image, "layer": rw,
                 "metadata": metadata.to_string()},
                {"id": hex("stopped"), "names": ["old"], "image": image, "layer": hex("gone")}
            ]))
            .unwrap(),
        );
        Fx {
            _tmp: tmp,
            base,
            root,
            ids,
            shorts,
            diffs,
            image,
            cid,
            rw,
        }
    }

    fn o(&self) -> PathBuf {
        self.root.join("overlay")
    }

    fn mount(&self) -> OverlayMount {
        OverlayMount {
            mount_id: 300,
            parent_id: 1,
            dev: Dev::new(0, 88),
            mountpoint: self.o().join(&self.rw).join("merged"),
            upperdir: Some(self.o().join(&self.rw).join("diff")),
            workdir: None,
            lowerdirs: self
                .shorts
                .iter()
                .rev()
                .map(|s| self.o().join("l").join(s))
                .collect(),
            datadirs: vec![],
            options: vec![],
        }
    }

    fn resolver(&self) -> PodmanResolver {
        PodmanResolver::with_paths(None, self.base.join("none.conf"), self.base.join("none"))
    }

    fn scan(&self, m: &OverlayMount) -> (ContainerInfo, Vec<String>) {
        let (mut cs, w) = self.resolver().scan_collect(std::slice::from_ref(m));
        assert_eq!(cs.len(), 1, "warnings: {w:?}");
        (cs.remove(0), w)
    }
}

fn assert_complete(fx: &Fx, c: &ContainerInfo) {
    let n = fx.ids.len();
    assert_eq!(c.id, fx.cid);
    assert_eq!(c.name.as_deref(), Some("web-1"));
    assert_eq!(c.image.id, Some(format!("sha256:{}", fx.image)));
    assert_eq!(
        c.image.tags,
        ["localhost/shop/api:2.3", "localhost/shop/api:latest"]
    );
    assert_eq!(c.upperdir, Some(fx.o().join(&fx.rw).join("diff")));
    assert_eq!(c.layers.len(), n);
    let chains = oci::chain_ids(&fx.diffs);
    for (k, l) in c.layers.iter().enumerate() {
        let pos = n - k;
        let i = pos - 1;
        assert_eq!(l.index, k + 1);
        assert!(!l.init);
        assert_eq!(l.position, Some(pos));
        assert_eq!(l.cache_id.as_deref(), Some(fx.ids[i].as_str()));
        assert_eq!(l.short_id.as_deref(), Some(fx.shorts[i].as_str()));
        assert_eq!(l.diff_id.as_deref(), Some(fx.diffs[i].as_str()));
        assert_eq!(l.chain_id.as_deref(), Some(chains[i].as_str()));
        assert_eq!(l.size, Some(1000 + i as u64));
        let by = if i == 0 {
            String::new()
        } else {
            format!("RUN step {i}")
        };
        assert_eq!(l.created_by.as_deref(), Some(by.as_str()));
        assert_eq!(l.dir, Some(fx.o().join(&fx.ids[i]).join("diff")));
    }
}

#[test]
fn resolves_a_podman_container() {
    let fx = Fx::new();
    let (c, w) = fx.scan(&fx.mount());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.runtime, "podman");
    assert_eq!(c.pod, None);
    assert_complete(&fx, &c);
}

#[test]
fn cri_o_containers_name_their_pod() {
    let fx = Fx::layers(
        3,
        Some(serde_json::json!({
            "pod-name": "api-7d9f", "pod-id": "p", "namespace": "shop",
            "name": "k8s_api_api-7d9f_shop_uid_0", "metadata-name": "web-1"
        })),
    );
    let (c, w) = fx.scan(&fx.mount());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.runtime, "cri-o");
    assert_eq!(
        c.pod,
        Some(PodInfo {
            name: "api-7d9f".into(),
            namespace: Some("shop".into())
        })
    );
    assert_complete(&fx, &c);
}

#[test]
fn five_hundred_layers() {
    let fx = Fx::layers(MAX_DEPTH, None);
    let (c, w) = fx.scan(&fx.mount());
    assert!(w.is_empty(), "{:?}", &w[..w.len().min(3)]);
    assert_complete(&fx, &c);
    // Relative lowerdirs that cannot be read (a mount made after a chdir
    // elsewhere): the container layer's 500-entry lower file fills them in.
    let mut m = fx.mount();
    m.lowerdirs = (0..MAX_DEPTH)
        .map(|i| PathBuf::from(format!("x/{i}")))
        .collect();
    let (c, w) = fx.scan(&m);
    assert!(w.is_empty(), "{:?}", &w[..w.len().min(3)]);
    assert_complete(&fx, &c);
}

#[test]
fn relative_paths_and_storage_conf() {
    let fx = Fx::new();
    let mut m = fx.mount();
    m.lowerdirs = fx
        .shorts
        .iter()
        .rev()
        .map(|s| PathBuf::from(format!("l/{s}")))
        .collect();
    m.upperdir = Some(PathBuf::from(format!("{}/diff", fx.rw)));
    let (c, w) = fx.scan(&m);
    assert!(w.is_empty(), "{w:?}");
    assert_complete(&fx, &c);
    // A root elsewhere, named only by storage.conf: mounts outside it are
    // found through the mount table too, so move the mount into a second root.
    let conf = fx.base.join("storage.conf");
    put(
        &conf,
        format!(
            "[storage]\ndriver = \"overlay\"\n# graphroot = \"/nope\"\ngraphroot = \"{}\"\n[storage.options]\ngraphroot = \"/x\"\n",
            fx.root.display()
        ),
    );
    assert_eq!(
        parse_graphroot(&fs::read_to_string(&conf).unwrap()),
        Some(fx.root.clone())
    );
    let mut r = PodmanResolver::with_paths(None, conf, fx.base.join("none"));
    let (cs, w) = r.scan_collect(&[fx.mount()]);
    assert_eq!(cs.len(), 1, "{w:?}");
    assert_eq!(r.roots(), std::slice::from_ref(&fx.root));
    assert_eq!(parse_graphroot("[storage]\ngraphroot = 'rel/x'\n"), None);
}

#[test]
fn non_podman_mounts_are_not_claimed() {
    let fx = Fx::new();
    let plain = OverlayMount {
        mount_id: 9,
        parent_id: 1,
        dev: Dev::new(0, 90),
        mountpoint: fx.o().join(hex("unknown")).join("merged"),
        upperdir: Some(fx.o().join(hex("unknown")).join("diff")),
        workdir: None,
        lowerdirs: vec![fx.o().join("l").join(&fx.shorts[0])],
        datadirs: vec![],
        options: vec![],
    };
    let mut r = fx.resolver();
    let (cs, w) = r.scan_collect(&[plain.clone(), fx.mount()]);
    assert_eq!(cs.len(), 1);
    assert!(w.is_empty(), "{w:?}");
    let inv =
        crate::catalog::inventory([&mut r as &mut dyn Resolver], std::slice::from_ref(&plain));
    assert_eq!(inv.mounts, vec![plain]);
}

#[test]
fn planted_symlinks_are_not_followed() {
    let fx = Fx::new();
    let outside = fx.base.join("outside");
    fs::create_dir_all(outside.join("diff")).unwrap();
    // l/<short> of the top layer pointing out of the root.
    let l_top = fx.o().join("l").join(&fx.shorts[2]);
    fs::remove_file(&l_top).unwrap();
    symlink(outside.join("diff"), &l_top).unwrap();
    // A layer's diff dir replaced by a symlink.
    let diff_mid = fx.o().join(&fx.ids[1]).join("diff");
    fs::remove_dir(&diff_mid).unwrap();
    symlink(outside.join("diff"), &diff_mid).unwrap();
    // The image config directory is a symlink to a forged config.
    let img_dir = fx.root.join("overlay-images").join(&fx.image);
    fs::rename(&img_dir, outside.join("img")).unwrap();
    symlink(outside.join("img"), &img_dir).unwrap();
    let (c, w) = fx.scan(&fx.mount());
    assert!(w.iter().any(|w| w.contains("not followed")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("refusing to follow")), "{w:?}");
    assert_eq!(c.layers[0].cache_id, None);
    assert_eq!(c.layers[0].dir, None);
    assert_eq!(c.layers[1].dir, None);
    assert!(c.layers.iter().all(|l| l.created_by.is_none()));
    assert_eq!(c.layers[1].diff_id.as_deref(), Some(fx.diffs[1].as_str()));
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("outside"), "{json}");

    // containers.json itself a symlink: nothing is claimed.
    let fx = Fx::new();
    let cj = fx.root.join("overlay-containers/containers.json");
    fs::rename(&cj, outside.join("c.json")).unwrap_or_else(|_| {
        fs::copy(&cj, outside.join("c.json")).unwrap();
        fs::remove_file(&cj).unwrap();
    });
    symlink(outside.join("c.json"), &cj).unwrap();
    let (cs, w) = fx.resolver().scan_collect(&[fx.mount()]);
    assert!(cs.is_empty());
    assert!(w.iter().any(|w| w.contains("refusing to follow")), "{w:?}");
}

#[test]
fn missing_and_corrupt_files_degrade() {
    // layers.json corrupt: no diff-ids from the store, but the image config
    // still gives them by position; the mismatch check cannot object.
    let fx = Fx::new();
    put(
        &fx.root.join("overlay-layers/layers.json"),
        "[{\"id\": 1}, ",
    );
    let (c, w) = fx.scan(&fx.mount());
    assert!(w.iter().any(|w| w.contains("invalid JSON")), "{w:?}");
    assert_eq!(c.layers[0].diff_id.as_deref(), Some(fx.diffs[2].as_str()));
    assert_eq!(c.layers[0].size, None);

    // One malformed entry: skipped, the rest is used.
    let fx = Fx::new();
    let p = fx.root.join("overlay-layers/layers.json");
    let mut v: Vec<serde_json::Value> = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    v.push(serde_json::json!({"id": 5}));
    put(&p, serde_json::to_vec(&v).unwrap());
    let (c, w) = fx.scan(&fx.mount());
    assert!(w.iter().any(|w| w.contains("1 malformed")), "{w:?}");
    assert_complete(&fx, &c);

    // images.json missing: no image, layers from the layer store.
    let fx = Fx::new();
    fs::remove_file(fx.root.join("overlay-images/images.json")).unwrap();
    let (c, _) = fx.scan(&fx.mount());
    assert_eq!(c.image.id, None);
    assert_eq!(c.layers[2].diff_id.as_deref(), Some(fx.diffs[0].as_str()));
    assert_eq!(c.layers[2].created_by, None);

    // The config does not match the image id: no instructions.
    let fx = Fx::new();
    let cfg = fx
        .root
        .join("overlay-images")
        .join(&fx.image)
        .join(big_data_name(&format!("sha256:{}", fx.image)));
    let mut data = fs::read(&cfg).unwrap();
    data.push(b'\n');
    fs::write(&cfg, data).unwrap();
    let (c, w) = fx.scan(&fx.mount());
    assert!(w.iter().any(|w| w.contains("does not match")), "{w:?}");
    assert!(c.layers.iter().all(|l| l.created_by.is_none()));

    // A layer store that disagrees with the image: no instruction for it.
    let fx = Fx::new();
    let p = fx.root.join("overlay-layers/layers.json");
    let mut v: Vec<serde_json::Value> = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    v[1]["diff-digest"] = format!("sha256:{}", hex("bogus")).into();
    put(&p, serde_json::to_vec(&v).unwrap());
    let (c, w) = fx.scan(&fx.mount());
    assert!(
        w.iter().any(|w| w.contains("does not match its image")),
        "{w:?}"
    );
    assert_eq!(c.layers[1].created_by, None);
    assert_eq!(c.layers[0].created_by.as_deref(), Some("RUN step 2"));

    // A lower file that is too long or garbage is refused.
    let fx = Fx::new();
    put(
        &fx.o().join(&fx.rw).join("lower"),
        vec!["l/AAAA"; MAX_DEPTH + 1].join(":"),
    );
    let mut m = fx.mount();
    m.lowerdirs[0] = PathBuf::from("x/0");
    let (c, w) = fx.scan(&m);
    assert!(w.iter().any(|w| w.contains("longer than")), "{w:?}");
    assert_eq!(c.layers[0].cache_id, None);
    put(&fx.o().join(&fx.rw).join("lower"), "l/../../etc:l/A");
    let (_, w) = fx.scan(&m);
    assert!(w.iter().any(|w| w.contains("bad lower entry")), "{w:?}");

    // A parent cycle in layers.json ends the walk.
    let fx = Fx::new();
    let p = fx.root.join("overlay-layers/layers.json");
    let mut v: Vec<serde_json::Value> = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    v[0]["parent"] = fx.ids[2].clone().into();
    put(&p, serde_json::to_vec(&v).unwrap());
    let (c, w) = fx.scan(&fx.mount());
    assert!(w.iter().any(|w| w.contains("cyclic")), "{w:?}");
    assert_eq!(c.layers.len(), 3);
}

#[test]
fn big_data_names() {
    assert_eq!(big_data_name("manifest"), "manifest");
    assert_eq!(
        big_data_name("sha256:30de0b039385f8b06b1cea178ae841f47ee753a8164723c52126d2c7c5a4cb19"),
        "=c2hhMjU2OjMwZGUwYjAzOTM4NWY4YjA2YjFjZWExNzhhZTg0MWY0N2VlNzUzYTgxNjQ3MjNjNTIxMjZkMmM3YzVhNGNiMTk="
    );
    assert_eq!(parse_link_target(b"../abc/diff").as_deref(), Some("abc"));
    assert_eq!(parse_link_target(b"../../x/diff"), None);
    fuzz_parsers(b"[{\"id\": \"x\", \"layer\": \"y\"}]");
}
