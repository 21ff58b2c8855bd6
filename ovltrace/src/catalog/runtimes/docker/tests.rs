use super::*;
use crate::catalog::oci::{chain_ids, sha256_hex};
use crate::sys::mounts::Dev;
use std::{fs, os::unix::fs::symlink};

/// A Docker root with one 3-layer image and one running container.
struct Fx {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    cid: String,
    image_id: String,
    rw: String,
    /// Image layers, base first.
    caches: Vec<String>,
    shorts: Vec<String>,
    diffs: Vec<String>,
    chains: Vec<String>,
    init_short: String,
}

fn hex(seed: &str) -> String {
    sha256_hex(seed.as_bytes())
}

fn write(p: &Path, data: impl AsRef<[u8]>) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

impl Fx {
    fn new(root_rel: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join(root_rel);
        let o2 = root.join("overlay2");
        fs::create_dir_all(o2.join("l")).unwrap();
        let mut fx = Fx {
            _tmp: tmp,
            base,
            root: root.clone(),
            cid: hex("container"),
            image_id: String::new(),
            rw: hex("rw"),
            caches: vec![],
            shorts: vec![],
            diffs: vec![],
            chains: vec![],
            init_short: "INITSHORT0000000000000000Z".into(),
        };
        let sizes = [1000u64, 20, 3_000_000];
        for i in 0..3 {
            let cache = hex(&format!("cache{i}"));
            let short = format!("SHORT{i:021}");
            fx.add_cache_dir(&cache, &short);
            fx.caches.push(cache);
            fx.shorts.push(short);
            fx.diffs
                .push(format!("sha256:{}", hex(&format!("diff{i}"))));
        }
        fx.chains = chain_ids(&fx.diffs);
        for (i, size) in sizes.iter().enumerate() {
            let chain = fx.chains[i].trim_start_matches("sha256:");
            let d = root.join(LAYERDB).join("sha256").join(chain);
            write(&d.join("cache-id"), &fx.caches[i]);
            write(&d.join("diff"), &fx.diffs[i]);
            write(&d.join("size"), size.to_string());
            if i > 0 {
                write(&d.join("parent"), &fx.chains[i - 1]);
            }
        }
        let config = serde_json::json!({
            "architecture": "amd64",
            "rootfs": {"type": "layers", "diff_ids": fx.diffs},
            "history": [
                {"created_by": "", "comment": "imported base"},
                {"created_by": "/bin/sh -c #(nop)  ENV A=1", "empty_layer": true},
                {"created_by": "/bin/sh -c echo hi >/f"},
                {"created_by": "/bin/sh -c #(nop) COPY file:y in /big "},
                {"created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]", "empty_layer": true}
            ]
        });
        let bytes = serde_json::to_vec(&config).unwrap();
        let id = sha256_hex(&bytes);
        write(&root.join(IMAGEDB).join(&id), &bytes);
        fx.image_id = format!("sha256:{id}");
        write(
            &root.join(REPOSITORIES),
            serde_json::to_vec(&serde_json::json!({"Repositories": {
                "shop/api": {
                    "shop/api:2.3": fx.image_id,
                    "shop/api:latest": fx.image_id,
                    "shop/api@sha256:0000000000000000000000000000000000000000000000000000000000000000": fx.image_id
                },
                "other": {"other:1": "sha256:1111111111111111111111111111111111111111111111111111111111111111"}
            }}))
            .unwrap(),
        );
        // The container: RW layer, init layer, metadata.
        let init = format!("{}-init", fx.rw);
        fx.add_cache_dir(&fx.rw.clone(), "RWSHORT000000000000000000Z");
        fx.add_cache_dir(&init, &fx.init_short.clone());
        let m = root.join(LAYERDB).join("mounts").join(&fx.cid);
        write(&m.join("mount-id"), &fx.rw);
        write(&m.join("init-id"), &init);
        write(&m.join("parent"), &fx.chains[2]);
        write(
            &root.join("containers").join(&fx.cid).join("config.v2.json"),
            serde_json::to_vec(&serde_json::json!({
                "ID": fx.cid, "Name": "/web-1", "Image": fx.image_id, "Driver": "overlay2"
            }))
            .unwrap(),
        );
        // Another container's layerdb entry whose mount is not mounted.
        let other = root.join(LAYERDB).join("mounts").join(hex("stopped"));
        write(&other.join("mount-id"), hex("stopped-rw"));
        fx
    }

    fn add_cache_dir(&self, cache: &str, short: &str) {
        let d = self.root.join("overlay2").join(cache);
        fs::create_dir_all(d.join("diff")).unwrap();
        write(&d.join("link"), short);
        symlink(
            format!("../{cache}/diff"),
            self.root.join("overlay2/l").join(short),
        )
        .unwrap();
    }

    fn o2(&self) -> PathBuf {
        self.root.join("overlay2")
    }

    /// The container's overlay mount; `relative`: Docker's long-options form.
    fn mount(&self, relative: bool) -> OverlayMount {
        let shorts = std::iter::once(&self.init_short).chain(self.shorts.iter().rev());
        let (lowerdirs, upper) = if relative {
            (
                shorts.map(|s| PathBuf::from(format!("l/{s}"))).collect(),
                PathBuf::from(format!("{}/diff", self.rw)),
            )
        } else {
            (
                shorts.map(|s| self.o2().join("l").join(s)).collect(),
                self.o2().join(&self.rw).join("diff"),
            )
        };
        OverlayMount {
            mount_id: 300,
            parent_id: 1,
            dev: Dev::new(0, 77),
            mountpoint: self.o2().join(&self.rw).join("merged"),
            upperdir: Some(upper),
            workdir: None,
            lowerdirs,
            datadirs: vec![],
            options: vec![],
        }
    }

    fn resolver(&self) -> DockerResolver {
        DockerResolver::with_paths(
            Some(self.root.clone()),
            self.base.join("no-daemon.json"),
            self.base.join("no-default"),
        )
    }

    fn scan(&self, m: &OverlayMount) -> (ContainerInfo, Vec<String>) {
        let (mut cs, w) = self.resolver().scan_collect(std::slice::from_ref(m));
        assert_eq!(cs.len(), 1, "warnings: {w:?}");
        (cs.remove(0), w)
    }

    /// Another running container of the image (its own RW and init layers).
    fn add_container(&self, name: &str, minor: u32) -> OverlayMount {
        let (cid, rw) = (hex(name), hex(&format!("{name}-rw")));
        let init = format!("{rw}-init");
        let init_short = format!("I{minor:025}");
        self.add_cache_dir(&rw, &format!("R{minor:025}"));
        self.add_cache_dir(&init, &init_short);
        let m = self.root.join(LAYERDB).join("mounts").join(&cid);
        write(&m.join("mount-id"), &rw);
        write(&m.join("init-id"), &init);
        write(
            &self
                .root
                .join("containers")
                .join(&cid)
                .join("config.v2.json"),
            serde_json::to_vec(&serde_json::json!({
                "ID": cid, "Name": format!("/{name}"), "Image": self.image_id
            }))
            .unwrap(),
        );
        let mut mount = self.mount(false);
        mount.mount_id = 300 + minor;
        mount.dev = Dev::new(0, minor);
        mount.mountpoint = self.o2().join(&rw).join("merged");
        mount.upperdir = Some(self.o2().join(&rw).join("diff"));
        mount.lowerdirs[0] = self.o2().join("l").join(init_short);
        mount
    }

    fn chain_dir(&self, i: usize) -> PathBuf {
        self.root
            .join(LAYERDB)
            .join("sha256")
            .join(self.chains[i].trim_start_matches("sha256:"))
    }
}

fn assert_complete(fx: &Fx, c: &ContainerInfo) {
    assert_eq!(c.id, fx.cid);
    assert_eq!(c.name.as_deref(), Some("web-1"));
    assert_eq!(c.image.id.as_deref(), Some(fx.image_id.as_str()));
    assert_eq!(c.image.tags, ["shop/api:2.3", "shop/api:latest"]);
    assert_eq!(c.dev, Dev::new(0, 77));
    assert_eq!(c.runtime, "docker");
    assert_eq!(c.upperdir, Some(fx.o2().join(&fx.rw).join("diff")));
    assert_eq!(c.layers.len(), 4);
    let init = &c.layers[0];
    assert!(init.init);
    assert_eq!(init.index, 1);
    assert_eq!(init.cache_id, Some(format!("{}-init", fx.rw)));
    assert_eq!(init.short_id.as_deref(), Some(fx.init_short.as_str()));
    assert_eq!((init.diff_id.as_ref(), init.position), (None, None));
    let expect_by = [
        "",
        "/bin/sh -c echo hi >/f",
        "/bin/sh -c #(nop) COPY file:y in /big ",
    ];
    let sizes = [1000, 20, 3_000_000];
    for (k, l) in c.layers[1..].iter().enumerate() {
        let pos = 3 - k; // index 2 is the top layer
        let i = pos - 1;
        assert_eq!(l.index, k + 2);
        assert!(!l.init);
        assert_eq!(l.position, Some(pos));
        assert_eq!(l.cache_id.as_deref(), Some(fx.caches[i].as_str()));
        assert_eq!(l.short_id.as_deref(), Some(fx.shorts[i].as_str()));
        assert_eq!(l.diff_id.as_deref(), Some(fx.diffs[i].as_str()));
        assert_eq!(l.chain_id.as_deref(), Some(fx.chains[i].as_str()));
        assert_eq!(l.size, Some(sizes[i]));
        assert_eq!(l.created_by.as_deref(), Some(expect_by[i]));
        assert_eq!(l.dir, Some(fx.o2().join(&fx.caches[i]).join("diff")));
    }
    assert_eq!(c.layers[3].comment.as_deref(), Some("imported base"));
}

#[test]
fn resolves_a_container() {
    let fx = Fx::new("var/lib/docker");
    let (c, w) = fx.scan(&fx.mount(false));
    assert!(w.is_empty(), "{w:?}");
    assert_complete(&fx, &c);
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["dev"], "0:77");
    assert_eq!(json["layers"][0]["diff_id"], serde_json::Value::Null);
    assert_eq!(json["layers"][3]["size"], 1000);
}

#[test]
fn relative_lowerdirs() {
    let fx = Fx::new("docker");
    let m = fx.mount(true);
    assert!(m.lowerdirs.iter().all(|p| p.is_relative()));
    let (c, w) = fx.scan(&m);
    assert!(w.is_empty(), "{w:?}");
    assert_complete(&fx, &c);
}

#[test]
fn moved_data_root() {
    let fx = Fx::new("data/docker-root");
    let m = fx.mount(false);
    let default = fx.base.join("no-default");
    // From daemon.json.
    let dj = fx.base.join("daemon.json");
    write(
        &dj,
        format!(
            r#"{{"data-root": "{}", "log-driver": "json-file"}}"#,
            fx.root.display()
        ),
    );
    let mut r = DockerResolver::with_paths(None, dj.clone(), default.clone());
    let (cs, w) = r.scan_collect(std::slice::from_ref(&m));
    assert!(w.is_empty(), "{w:?}");
    assert_complete(&fx, &cs[0]);
    assert_eq!(r.root(), Some((fx.root.as_path(), RootSource::DaemonJson)));
    // From the mount table, with no daemon.json.
    let mut r = DockerResolver::with_paths(None, fx.base.join("none.json"), default.clone());
    let (cs, _) = r.scan_collect(std::slice::from_ref(&m));
    assert_complete(&fx, &cs[0]);
    assert_eq!(r.root(), Some((fx.root.as_path(), RootSource::Mountinfo)));
    // Relative lowerdirs still show the root through the mount point.
    let mut r = DockerResolver::with_paths(None, fx.base.join("none.json"), default.clone());
    let (cs, _) = r.scan_collect(&[fx.mount(true)]);
    assert_complete(&fx, &cs[0]);
    // A malformed daemon.json is ignored with a warning.
    write(&dj, "{not json");
    let mut r = DockerResolver::with_paths(None, dj.clone(), default.clone());
    let (cs, w) = r.scan_collect(std::slice::from_ref(&m));
    assert_eq!(cs.len(), 1);
    assert!(w.iter().any(|w| w.contains("invalid JSON")), "{w:?}");
    // The flag wins over daemon.json, and a symlinked root is canonicalized.
    write(&dj, r#"{"data-root": "/nonexistent"}"#);
    let link = fx.base.join("root-link");
    symlink(&fx.root, &link).unwrap();
    let mut r = DockerResolver::with_paths(Some(link), dj, default);
    let (cs, w) = r.scan_collect(std::slice::from_ref(&m));
    assert!(w.is_empty(), "{w:?}");
    assert_complete(&fx, &cs[0]);
    assert_eq!(r.root().map(|r| r.1), Some(RootSource::Flag));
}

#[test]
fn rescans_reuse_the_layer_store_and_notice_changes() {
    let fx = Fx::new("docker");
    let mut r = fx.resolver();
    let (cs, w) = r.scan_collect(&[fx.mount(false)]);
    assert!(w.is_empty(), "{w:?}");
    assert_complete(&fx, &cs[0]);
    // A container started since is picked up, and the rescan gives what a
    // new resolver gives.
    let mounts = [fx.mount(false), fx.add_container("second", 78)];
    let again = r.scan_collect(&mounts);
    assert_eq!(again.0.len(), 2);
    assert_eq!(again.0[1].name.as_deref(), Some("second"));
    assert_eq!(again, fx.resolver().scan_collect(&mounts));
    assert_eq!(again.0[0].layers[1..], again.0[1].layers[1..]);

    // Layer-store entries are read once (Docker never rewrites them).
    write(&fx.chain_dir(0).join("size"), "5");
    let (cs, _) = r.scan_collect(&mounts);
    assert_eq!(cs[0].layers[3].size, Some(1000));
    let (fresh, _) = fx.resolver().scan_collect(&mounts);
    assert_eq!(fresh[0].layers[3].size, Some(5));
    write(&fx.chain_dir(0).join("size"), "1000");

    // A removed layer-store entry or layer directory is noticed; warnings
    // are given per container, as without the caches.
    fs::remove_dir_all(fx.chain_dir(1)).unwrap();
    fs::remove_dir(fx.o2().join(&fx.caches[0]).join("diff")).unwrap();
    let (cs, w) = r.scan_collect(&mounts);
    assert_eq!((cs.clone(), w.clone()), fx.resolver().scan_collect(&mounts));
    assert_eq!(
        (cs[1].layers[2].size, cs[1].layers[3].dir.as_ref()),
        (None, None)
    );
    let count = |s: &str| w.iter().filter(|w| w.contains(s)).count();
    assert_eq!(
        (count("no layerdb entry"), count("not a directory")),
        (2, 2),
        "{w:?}"
    );
    // A broken entry is read again: repaired, it counts again.
    fs::create_dir(fx.o2().join(&fx.caches[0]).join("diff")).unwrap();
    let (cs, w) = r.scan_collect(&mounts);
    assert!(cs[1].layers[3].dir.is_some());
    assert_eq!(w.len(), 2, "{w:?}");
}

#[test]
fn default_root_and_no_docker() {
    let fx = Fx::new("x");
    let mut r = DockerResolver::with_paths(None, fx.base.join("none.json"), fx.base.join("nope"));
    let (cs, w) = r.scan_collect(&[]);
    assert!(cs.is_empty());
    // No Docker at the default root is not worth a warning.
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(r.root(), None);
    // A named root that does not exist is.
    let mut r = DockerResolver::with_paths(
        Some(fx.base.join("nope")),
        fx.base.join("n"),
        fx.base.join("n"),
    );
    let (_, w) = r.scan_collect(&[]);
    assert_eq!(w.len(), 1, "{w:?}");
}

/// What attribution needs is there after a scan; the rest is not.
fn assert_deferred(fx: &Fx, c: &ContainerInfo) {
    assert_eq!(c.name.as_deref(), Some("web-1"));
    assert_eq!(c.image.tags, ["shop/api:2.3", "shop/api:latest"]);
    assert!(c.layers[0].init && c.layers[0].deferred.is_none());
    for (k, l) in c.layers[1..].iter().enumerate() {
        let i = 2 - k;
        assert_eq!(l.position, Some(i + 1));
        assert_eq!(l.cache_id.as_deref(), Some(fx.caches[i].as_str()));
        assert_eq!(l.short_id.as_deref(), Some(fx.shorts[i].as_str()));
        assert_eq!(l.dir, Some(fx.o2().join(&fx.caches[i]).join("diff")));
        assert!(l.deferred.is_some());
        assert_eq!(
            (&l.diff_id, &l.chain_id, l.size, &l.created_by),
            (&None, &None, None, &None)
        );
    }
}

#[test]
fn scans_defer_layer_metadata_until_needed() {
    let fx = Fx::new("docker");
    let mut r = fx.resolver();
    // The layer store and the image config are not read by the scan:
    // broken now, repaired before anything asks, nothing shows.
    let size = fx.chain_dir(0).join("size");
    let img = fx
        .root
        .join(IMAGEDB)
        .join(fx.image_id.trim_start_matches("sha256:"));
    let config = fs::read(&img).unwrap();
    write(&size, "lots");
    fs::write(&img, "{").unwrap();
    let mut cs = r.scan(&[fx.mount(false)]);
    assert_eq!(cs.len(), 1);
    assert_deferred(&fx, &cs[0]);
    assert!(r.lazy().warned.is_empty(), "{:?}", r.lazy().warned);
    write(&size, "1000");
    fs::write(&img, &config).unwrap();

    // One layer, as an event needs it.
    let mut c = cs.remove(0);
    let pending = c.clone();
    c.layers[2].complete();
    assert_eq!(c.layers[2].diff_id.as_deref(), Some(fx.diffs[1].as_str()));
    assert_eq!(
        c.layers[2].created_by.as_deref(),
        Some("/bin/sh -c echo hi >/f")
    );
    assert!(c.layers[2].deferred.is_none() && c.layers[1].deferred.is_some());
    // All of it, as a report needs it: what an eager scan gives.
    c.complete();
    assert_complete(&fx, &c);
    assert_eq!(c, fx.scan(&fx.mount(false)).0);
    // Read once: a copy completed later gets what was read then.
    write(&size, "5");
    let mut copy = pending.clone();
    copy.complete();
    assert_eq!(copy, c);
    // A rescan describes the layers it knows as they were completed,
    // so the catalog sees the same container.
    let again = r.scan(&[fx.mount(false)]);
    assert_eq!(again[0], c);
    assert!(again[0].layers.iter().all(|l| l.deferred.is_none()));
    assert!(r.lazy().warned.is_empty(), "{:?}", r.lazy().warned);
}

#[test]
fn deferred_reads_warn_and_degrade_fields() {
    let fx = Fx::new("docker");
    let mut r = fx.resolver();
    let mut cs = r.scan(&[fx.mount(false)]);
    assert_deferred(&fx, &cs[0]);
    fs::remove_dir_all(fx.chain_dir(1)).unwrap();
    let size = fx.chain_dir(0).join("size");
    fs::remove_file(&size).unwrap();
    symlink(fx.base.join("outside"), &size).unwrap();
    cs[0].complete();
    let c = &cs[0];
    assert_eq!((c.layers[2].size, c.layers[3].size), (None, None));
    assert_eq!(c.layers[2].diff_id.as_deref(), Some(fx.diffs[1].as_str()));
    assert_eq!(c.layers[3].diff_id.as_deref(), Some(fx.diffs[0].as_str()));
    assert_eq!(c.layers[1].size, Some(3_000_000));
    let warned = &r.lazy().warned;
    assert!(
        warned.iter().any(|w| w.contains("no layerdb entry")),
        "{warned:?}"
    );
    assert!(
        warned.iter().any(|w| w.contains("refusing to follow")),
        "{warned:?}"
    );
    // The same, at once.
    let (eager, w) = fx.scan(&fx.mount(false));
    assert_eq!(&eager, c);
    assert_eq!(w.len(), 2, "{w:?}");
}

#[test]
fn events_read_the_metadata_of_their_layer() {
    use crate::catalog::Catalog;
    let fx = Fx::new("docker");
    fs::write(fx.o2().join(&fx.caches[1]).join("diff/f"), "x").unwrap();
    let m = fx.mount(false);
    let lower: Vec<String> = m
        .lowerdirs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mi = fx.base.join("mountinfo");
    write(
        &mi,
        format!(
            "300 1 0:77 / {} rw - overlay overlay rw,lowerdir={},upperdir={}\n",
            m.mountpoint.display(),
            lower.join(":"),
            m.upperdir.as_ref().unwrap().display()
        ),
    );
    let mut cat = Catalog::with_mountinfo(vec![Box::new(fx.resolver())], mi);
    cat.refresh().unwrap();
    let key = cat.entries().next().unwrap().key;
    let pending = |cat: &Catalog| -> Vec<bool> {
        let c = cat.get(&key).unwrap().container.as_ref().unwrap();
        c.layers.iter().map(|l| l.deferred.is_some()).collect()
    };
    assert_eq!(pending(&cat), [false, true, true, true]);
    // The kernel reports that `f` came from overlay index 3.
    let s = cat.resolve(&key).unwrap().source_layer(3, None);
    assert_eq!(s.index, 3);
    assert_eq!(s.diff_id.as_deref(), Some(fx.diffs[1].as_str()));
    assert_eq!(s.created_by.as_deref(), Some("/bin/sh -c echo hi >/f"));
    // Only that layer was read; a full rescan keeps it so.
    assert_eq!(pending(&cat), [false, true, false, true]);
    let parsed = cat.get(&key).map(|e| e.mount.clone()).unwrap();
    cat.apply(&[parsed]);
    assert!(!cat.get(&key).unwrap().gone);
    assert_eq!(pending(&cat), [false, true, false, true]);
    // The inventory shows everything.
    let inv = cat.inventory();
    assert_complete(&fx, &inv.containers[0]);
}

#[test]
fn missing_layerdb_entry_degrades_only_size() {
    let fx = Fx::new("docker");
    fs::remove_dir_all(fx.chain_dir(1)).unwrap();
    let (c, w) = fx.scan(&fx.mount(false));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("no layerdb entry"), "{w:?}");
    let l = &c.layers[2]; // position 2
    assert_eq!(l.position, Some(2));
    assert_eq!(l.size, None);
    assert_eq!(l.cache_id.as_deref(), Some(fx.caches[1].as_str()));
    assert_eq!(l.diff_id.as_deref(), Some(fx.diffs[1].as_str()));
    assert_eq!(l.chain_id.as_deref(), Some(fx.chains[1].as_str()));
    assert_eq!(l.created_by.as_deref(), Some("/bin/sh -c echo hi >/f"));
    // Everything else is intact.
    assert_eq!(c.layers[1].size, Some(3_000_000));
    assert_eq!(c.layers[3].size, Some(1000));
    assert_eq!(c.name.as_deref(), Some("web-1"));
    // A missing single file only nulls its field.
    fs::remove_file(fx.chain_dir(0).join("size")).unwrap();
    let (c, _) = fx.scan(&fx.mount(false));
    assert_eq!(c.layers[3].size, None);
    assert_eq!(c.layers[3].diff_id.as_deref(), Some(fx.diffs[0].as_str()));
}

#[test]
fn planted_symlinks_are_not_followed() {
    let fx = Fx::new("docker");
    let outside = fx.base.join("outside");
    fs::create_dir_all(outside.join("diff")).unwrap();
    write(
        &outside.join("config.v2.json"),
        r#"{"ID":"x","Name":"/evil","Image":"sha256:0"}"#,
    );
    write(&outside.join("size"), "987654321");
    // l/<short> of the top layer pointing out of the root.
    let l_top = fx.o2().join("l").join(&fx.shorts[2]);
    fs::remove_file(&l_top).unwrap();
    symlink(&outside, &l_top).unwrap();
    // A layer's diff dir replaced by a symlink to outside.
    let diff_mid = fx.o2().join(&fx.caches[1]).join("diff");
    fs::remove_dir(&diff_mid).unwrap();
    symlink(outside.join("diff"), &diff_mid).unwrap();
    // layerdb size file of the base layer is a symlink.
    let size = fx.chain_dir(0).join("size");
    fs::remove_file(&size).unwrap();
    symlink(outside.join("size"), &size).unwrap();
    // The container's config is a symlink.
    let cfg = fx
        .root
        .join("containers")
        .join(&fx.cid)
        .join("config.v2.json");
    fs::remove_file(&cfg).unwrap();
    symlink(outside.join("config.v2.json"), &cfg).unwrap();

    let (c, w) = fx.scan(&fx.mount(false));
    let top = &c.layers[1];
    assert_eq!((top.cache_id.as_ref(), top.dir.as_ref()), (None, None));
    assert_eq!(top.short_id.as_deref(), Some(fx.shorts[2].as_str()));
    assert!(w.iter().any(|w| w.contains("not followed")), "{w:?}");
    let mid = &c.layers[2];
    assert_eq!(mid.cache_id.as_deref(), Some(fx.caches[1].as_str()));
    assert_eq!(mid.dir, None);
    assert_eq!(mid.size, Some(20));
    assert_eq!(c.layers[3].size, None);
    assert!(w.iter().any(|w| w.contains("refusing to follow")), "{w:?}");
    assert_eq!(c.name, None);
    assert_eq!(c.image.id, None);
    // Never anything from outside.
    let json = serde_json::to_string(&c).unwrap();
    assert!(
        !json.contains("evil") && !json.contains("987654321") && !json.contains("outside"),
        "{json}"
    );

    // A symlinked directory in the middle of a metadata path.
    let fx = Fx::new("docker");
    let mounts_dir = fx.root.join(LAYERDB).join("mounts").join(&fx.cid);
    let moved = fx.base.join("moved-mounts");
    fs::rename(&mounts_dir, &moved).unwrap();
    symlink(&moved, &mounts_dir).unwrap();
    let (cs, w) = fx.resolver().scan_collect(&[fx.mount(false)]);
    assert!(cs.is_empty(), "{cs:?}");
    assert!(w.iter().any(|w| w.contains("refusing to follow")), "{w:?}");

    // A link that stays inside the root but is not ../<cache-id>/diff.
    let fx = Fx::new("docker");
    let l = fx.o2().join("l").join(&fx.shorts[0]);
    fs::remove_file(&l).unwrap();
    symlink("../../image", &l).unwrap();
    let (c, w) = fx.scan(&fx.mount(false));
    assert_eq!(c.layers[3].cache_id, None);
    assert!(
        w.iter().any(|w| w.contains("expected ../<cache-id>/diff")),
        "{w:?}"
    );
}

#[test]
fn corrupt_metadata_degrades_fields() {
    // Container config.
    let fx = Fx::new("docker");
    write(
        &fx.root
            .join("containers")
            .join(&fx.cid)
            .join("config.v2.json"),
        "{\"ID\": 12",
    );
    let (c, w) = fx.scan(&fx.mount(false));
    assert!(w.iter().any(|w| w.contains("invalid JSON")), "{w:?}");
    assert_eq!((c.name.as_ref(), c.image.id.as_ref()), (None, None));
    // Layers still come from the layer store; instructions need the image.
    assert_eq!(c.layers[3].diff_id.as_deref(), Some(fx.diffs[0].as_str()));
    assert_eq!(c.layers[3].size, Some(1000));
    assert_eq!(c.layers[3].created_by, None);

    // Image config that does not match its digest.
    let fx = Fx::new("docker");
    let img = fx
        .root
        .join(IMAGEDB)
        .join(fx.image_id.trim_start_matches("sha256:"));
    let mut data = fs::read(&img).unwrap();
    data.push(b' ');
    fs::write(&img, data).unwrap();
    let (c, w) = fx.scan(&fx.mount(false));
    assert!(
        w.iter().any(|w| w.contains("does not match its digest")),
        "{w:?}"
    );
    assert_eq!(c.name.as_deref(), Some("web-1"));
    assert_eq!(c.image.id.as_deref(), Some(fx.image_id.as_str()));
    assert!(c.layers.iter().all(|l| l.created_by.is_none()));
    assert_eq!(c.layers[1].diff_id.as_deref(), Some(fx.diffs[2].as_str()));

    // Oversized repositories.json (sparse: cheap).
    let fx = Fx::new("docker");
    let f = fs::File::create(fx.root.join(REPOSITORIES)).unwrap();
    f.set_len(MAX_JSON + 1).unwrap();
    let (c, w) = fx.scan(&fx.mount(false));
    assert!(w.iter().any(|w| w.contains("larger than")), "{w:?}");
    assert!(c.image.tags.is_empty());
    assert_eq!(c.layers[1].created_by.as_deref(), Some(fx_top_by()));

    // Garbage in small files.
    let fx = Fx::new("docker");
    write(&fx.chain_dir(2).join("size"), "lots");
    write(&fx.chain_dir(2).join("diff"), "sha256:../../etc");
    write(
        &fx.root
            .join(LAYERDB)
            .join("mounts")
            .join(&fx.cid)
            .join("init-id"),
        "../x",
    );
    let (c, w) = fx.scan(&fx.mount(false));
    assert_eq!(c.layers[1].size, None);
    assert_eq!(c.layers[1].diff_id, None);
    assert!(c.layers[0].init, "falls back to the -init suffix");
    assert_eq!(w.len(), 3, "{w:?}");
}

/// A sparse file of `len` bytes (cheap however large).
fn huge(p: &Path, len: u64) {
    let _ = fs::remove_file(p);
    fs::File::create(p).unwrap().set_len(len).unwrap();
}

#[test]
fn huge_and_special_files_degrade_fields() {
    use crate::sys::safe_fs::MAX_SMALL;
    // config.v2.json larger than the cap: no name or image, layers intact.
    let fx = Fx::new("docker");
    let cfg = fx
        .root
        .join("containers")
        .join(&fx.cid)
        .join("config.v2.json");
    huge(&cfg, MAX_JSON + 1);
    let (c, w) = fx.scan(&fx.mount(false));
    assert!(
        w.iter()
            .any(|w| w.contains("config.v2.json") && w.contains("larger than")),
        "{w:?}"
    );
    assert_eq!((c.name.as_ref(), c.image.id.as_ref()), (None, None));
    assert_eq!(c.layers[3].diff_id.as_deref(), Some(fx.diffs[0].as_str()));

    // A FIFO in its place is not read (and does not block the scan).
    fs::remove_file(&cfg).unwrap();
    let c_path = std::ffi::CString::new(cfg.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let (c, w) = fx.scan(&fx.mount(false));
    assert!(w.iter().any(|w| w.contains("not a regular file")), "{w:?}");
    assert_eq!(c.name, None);

    // A huge image config: no instructions, the layer store still answers.
    let fx = Fx::new("docker");
    let img = fx
        .root
        .join(IMAGEDB)
        .join(fx.image_id.trim_start_matches("sha256:"));
    huge(&img, MAX_JSON + 1);
    let (c, w) = fx.scan(&fx.mount(false));
    assert!(w.iter().any(|w| w.contains("larger than")), "{w:?}");
    assert_eq!(c.name.as_deref(), Some("web-1"));
    assert!(c.layers.iter().all(|l| l.created_by.is_none()));
    assert_eq!(c.layers[1].size, Some(3_000_000));

    // Oversized one-line files: that layer's chain (cache-id) or that
    // field (size) is unknown, the rest resolves.
    let fx = Fx::new("docker");
    huge(&fx.chain_dir(1).join("cache-id"), MAX_SMALL + 1);
    huge(&fx.chain_dir(2).join("size"), 1 << 40);
    let (c, w) = fx.scan(&fx.mount(false));
    assert!(
        w.iter().filter(|w| w.contains("larger than")).count() >= 2,
        "{w:?}"
    );
    assert_eq!(c.layers[1].size, None);
    assert_eq!(
        c.layers[2].chain_id,
        Some(fx.chains[1].clone()),
        "from the image"
    );
    assert_eq!(c.layers[3].size, Some(1000));

    // A huge mount-id: the container cannot be matched, and says why.
    let fx = Fx::new("docker");
    huge(
        &fx.root
            .join(LAYERDB)
            .join("mounts")
            .join(&fx.cid)
            .join("mount-id"),
        MAX_SMALL + 1,
    );
    let (cs, w) = fx.resolver().scan_collect(&[fx.mount(false)]);
    assert!(cs.is_empty());
    assert!(
        w.iter()
            .any(|w| w.contains("mount-id") && w.contains("larger than")),
        "{w:?}"
    );

    // A huge daemon.json is ignored with a warning, and the scan goes on.
    let fx = Fx::new("docker");
    let daemon = fx.base.join("daemon.json");
    huge(&daemon, 2 << 20);
    let mut r = DockerResolver::with_paths(None, daemon, fx.root.clone());
    let (cs, w) = r.scan_collect(&[fx.mount(false)]);
    assert!(
        w.iter()
            .any(|w| w.contains("daemon.json") && w.contains("larger than")),
        "{w:?}"
    );
    assert_eq!(cs.len(), 1);
}

#[test]
fn fuzz_entry_point_takes_anything() {
    for data in [
        &b""[..],
        b"{",
        b"{\"rootfs\": {\"diff_ids\": [\"sha256:x\"]}}",
        b"{\"Repositories\": {\"a\": {\"a:1\": \"x\", \"a@sha256:1\": \"y\"}}}",
        b"../x/diff",
        b"\xff\xfe",
        b"1 2 0:5 / /m rw - overlay o rw,lowerdir=/var/lib/docker/overlay2/l/A,upperdir=/var/lib/docker/overlay2/x/diff",
    ] {
        fuzz_parsers(data);
    }
}

fn fx_top_by() -> &'static str {
    "/bin/sh -c #(nop) COPY file:y in /big "
}

#[test]
fn mismatched_chain_is_not_given_an_instruction() {
    let fx = Fx::new("docker");
    // The mounted top layer's layerdb entry says another diff/chain.
    let chain = fx.chain_dir(2);
    let bogus = fx.root.join(LAYERDB).join("sha256").join(hex("bogus"));
    fs::rename(&chain, &bogus).unwrap();
    let (c, w) = fx.scan(&fx.mount(false));
    assert_eq!(
        c.layers[1].chain_id,
        Some(format!("sha256:{}", hex("bogus")))
    );
    assert_eq!(c.layers[1].created_by, None);
    assert!(w.iter().any(|w| w.contains("image expects")), "{w:?}");
    assert_eq!(
        c.layers[2].created_by.as_deref(),
        Some("/bin/sh -c echo hi >/f")
    );
}

#[test]
fn non_docker_mounts_are_not_claimed() {
    let fx = Fx::new("docker");
    let plain = OverlayMount {
        mount_id: 9,
        parent_id: 1,
        dev: Dev::new(0, 90),
        mountpoint: "/mnt/x".into(),
        upperdir: Some("abc/diff".into()),
        workdir: None,
        lowerdirs: vec!["l/AAA".into()],
        datadirs: vec![],
        options: vec![],
    };
    let mut r = fx.resolver();
    let (cs, w) = r.scan_collect(&[plain.clone(), fx.mount(false)]);
    assert_eq!(cs.len(), 1);
    assert!(w.is_empty(), "{w:?}");
    let inv = crate::catalog::inventory(
        [&mut r as &mut dyn Resolver],
        &[plain.clone(), fx.mount(false)],
    );
    assert_eq!(inv.mounts, vec![plain]);
}

#[test]
fn link_targets() {
    assert_eq!(parse_link_target(b"../abc/diff").as_deref(), Some("abc"));
    for bad in [
        &b"../../etc/diff"[..],
        b"/abc/diff",
        b"../abc/diff/",
        b"../l/diff",
        b"abc/diff",
        b"../.x/diff",
        b"../a/b/diff",
    ] {
        assert_eq!(
            parse_link_target(bad),
            None,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}
