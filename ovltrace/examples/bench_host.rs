//! Host benchmarks of ovltrace's user space, run by `cargo xtask bench`
//! (release build, no kernel probes). Each run prints one JSON object on
//! stdout, with the peak RSS of the process (getrusage ru_maxrss).
//!
//! - `ingest --mode decode|aggregate|full`: the per-event path of `ovltrace
//!   run` (run.rs `Session::drain`) over a synthetic stream of copy-up
//!   records, built byte for byte as the kernel writes them
//!   (`ovltrace_ebpf::CopyUpEvent`). `decode` is `event::decode` alone;
//!   `aggregate` adds `Aggregator::add` (events left unattributed); `full`
//!   also attributes every event with `attribute::Tracker::attribute`, as
//!   `ovltrace run` does: the overlay key and source layer the kernel puts on
//!   the event are looked up in the catalog of a synthetic Docker root. One
//!   thread, pinned to one CPU.
//! - `resolver`: start-up of the resolver on a synthetic Docker root of
//!   CONTAINERS containers with LAYERS image layers each (plus the init
//!   layer): `Catalog::refresh` over a synthetic mountinfo, which parses it
//!   and runs `DockerResolver::scan` (the first scan of `ovltrace run`), with
//!   a new catalog each of REPEAT times (median). Also timed: a refresh when
//!   the mount table is unchanged (the periodic rescan's fast path) and a
//!   full rescan (`Catalog::apply`: container metadata read again, image
//!   configs already parsed).

use std::{
    fmt::Write as _,
    fs,
    hint::black_box,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use ovltrace::{
    aggregate::Aggregator,
    attribute::Attribution,
    attribute::{Attributed, Tracker},
    bpf::event::{self, OverlayKey},
    catalog::{oci::chain_ids, runtimes::docker::DockerResolver, Catalog},
    sys::mounts::{self, Dev},
};
use ovltrace_ebpf::{
    CopyUpEvent, EventHeader, COMM_LEN, EVENT_COPY_UP, FLAG_DATA_COPY, NO_LAYER, PATH_BUF,
};
use serde_json::json;
use sha2::{Digest, Sha256};

type Result<T> = std::result::Result<T, String>;

/// The file table bound `ovltrace run` uses (run.rs MAX_FILES).
const MAX_FILES: usize = 100_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_host: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Opts {
    mode: String,
    events: usize,
    containers: usize,
    layers: usize,
    images: Option<usize>,
    files: usize,
    max_files: usize,
    repeat: usize,
    tmp: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        mode: "full".into(),
        events: 1_000_000,
        containers: 0,
        layers: 0,
        images: None,
        files: 20_000,
        max_files: MAX_FILES,
        repeat: 3,
        tmp: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        let num = |s: &String| {
            s.parse::<usize>()
                .map_err(|_| format!("{a}: not a number: {s:?}"))
        };
        match a.as_str() {
            "--mode" => o.mode = val()?.clone(),
            "--events" => o.events = num(val()?)?,
            "--containers" => o.containers = num(val()?)?,
            "--layers" => o.layers = num(val()?)?,
            "--images" => o.images = Some(num(val()?)?),
            "--files" => o.files = num(val()?)?,
            "--max-files" => o.max_files = num(val()?)?,
            "--repeat" => o.repeat = num(val()?)?,
            "--tmp" => o.tmp = Some(PathBuf::from(val()?)),
            _ => return Err(format!("unknown option {a:?}")),
        }
    }
    Ok(o)
}

fn run(args: &[String]) -> Result<String> {
    let (cmd, rest) = args
        .split_first()
        .ok_or("usage: bench_host ingest|resolver [options]")?;
    let mut o = parse(rest)?;
    let tmp = match &o.tmp {
        Some(t) => tempfile::tempdir_in(t),
        None => tempfile::tempdir(),
    }
    .map_err(|e| format!("creating a temporary directory: {e}"))?;
    let out = match cmd.as_str() {
        "ingest" => {
            if o.containers == 0 {
                o.containers = 50;
            }
            if o.layers == 0 {
                o.layers = 20;
            }
            ingest(&o, tmp.path())?
        }
        "resolver" => {
            if o.containers == 0 {
                o.containers = 1000;
            }
            if o.layers == 0 {
                o.layers = 50;
            }
            resolver(&o, tmp.path())?
        }
        other => return Err(format!("unknown benchmark {other:?}")),
    };
    Ok(out.to_string())
}

// ------------------------------------------------------ synthetic Docker root --

fn hex(seed: &str) -> String {
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(seed.as_bytes()) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn write(p: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    }
    fs::write(p, data).map_err(|e| format!("writing {}: {e}", p.display()))
}

fn mkdir(p: &Path) -> Result<()> {
    fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

/// A Docker overlay2 root as Docker 20.10+ lays it out on disk.
struct Synth {
    root: PathBuf,
    mountinfo: PathBuf,
    /// The overlay key the kernel reports for each container, in order.
    keys: Vec<OverlayKey>,
    /// Files on disk (layers, metadata, links).
    entries: usize,
}

struct SynthSpec {
    images: usize,
    containers: usize,
    layers: usize,
}

impl Synth {
    fn build(base: &Path, spec: &SynthSpec) -> Result<Self> {
        let root = base.join("docker");
        let o2 = root.join("overlay2");
        let layerdb = root.join("image/overlay2/layerdb");
        let imagedb = root.join("image/overlay2/imagedb/content/sha256");
        mkdir(&o2.join("l"))?;
        let mut entries = 0usize;
        let mut short_n = 0usize;
        let mut new_layer_dir = |cache: &str, entries: &mut usize| -> Result<(String, PathBuf)> {
            short_n += 1;
            let short = format!("BENCH{short_n:021}");
            let dir = o2.join(cache);
            mkdir(&dir.join("diff"))?;
            write(&dir.join("link"), &short)?;
            let link = o2.join("l").join(&short);
            std::os::unix::fs::symlink(format!("../{cache}/diff"), &link)
                .map_err(|e| format!("symlink {}: {e}", link.display()))?;
            *entries += 4;
            Ok((short, dir.join("diff")))
        };
        let mut images = Vec::new();
        let mut repos = serde_json::Map::new();
        for i in 0..spec.images {
            let diffs: Vec<String> = (0..spec.layers)
                .map(|k| format!("sha256:{}", hex(&format!("diff-{i}-{k}"))))
                .collect();
            let chains = chain_ids(&diffs);
            let mut shorts = Vec::new();
            for (k, chain) in chains.iter().enumerate() {
                let cache = hex(&format!("cache-{i}-{k}"));
                let (short, _) = new_layer_dir(&cache, &mut entries)?;
                shorts.push(short);
                let d = layerdb
                    .join("sha256")
                    .join(chain.trim_start_matches("sha256:"));
                write(&d.join("cache-id"), &cache)?;
                write(&d.join("diff"), &diffs[k])?;
                write(&d.join("size"), (1000 * (k + 1)).to_string())?;
                if k > 0 {
                    write(&d.join("parent"), &chains[k - 1])?;
                }
                entries += 5;
            }
            let history: Vec<serde_json::Value> = (0..spec.layers)
                .map(|k| json!({"created_by": format!("/bin/sh -c #(nop) COPY file:{k} in /usr/pkg{k} ")}))
                .collect();
            let config = json!({
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": diffs},
                "history": history,
            });
            let bytes = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
            let id = hex_bytes(&bytes);
            write(&imagedb.join(&id), &bytes)?;
            entries += 1;
            let id = format!("sha256:{id}");
            repos.insert(
                format!("bench/img{i}"),
                json!({ format!("bench/img{i}:latest"): id }),
            );
            images.push((id, shorts));
        }
        write(
            &root.join("image/overlay2/repositories.json"),
            serde_json::to_vec(&json!({ "Repositories": repos })).map_err(|e| e.to_string())?,
        )?;
        let mut mountinfo = String::new();
        let mut keys = Vec::new();
        for c in 0..spec.containers {
            let (image_id, shorts) = &images[c % spec.images];
            let cid = hex(&format!("container-{c}"));
            let rw = hex(&format!("rw-{c}"));
            let init = format!("{rw}-init");
            let (_, upper) = new_layer_dir(&rw, &mut entries)?;
            let (init_short, _) = new_layer_dir(&init, &mut entries)?;
            let merged = o2.join(&rw).join("merged");
            mkdir(&merged)?;
            let m = layerdb.join("mounts").join(&cid);
            write(&m.join("mount-id"), &rw)?;
            write(&m.join("init-id"), &init)?;
            write(
                &root.join("containers").join(&cid).join("config.v2.json"),
                serde_json::to_vec(&json!({
                    "ID": cid, "Name": format!("/bench-{c}"), "Image": image_id, "Driver": "overlay2"
                }))
                .map_err(|e| e.to_string())?,
            )?;
            entries += 3;
            let mut lower = format!("{}/l/{init_short}", o2.display());
            for s in shorts.iter().rev() {
                let _ = write!(lower, ":{}/l/{s}", o2.display());
            }
            let dev = Dev::new(0, 1000 + c as u32);
            let _ = writeln!(
                mountinfo,
                "{} 1 {dev} / {}/{rw}/merged rw,relatime shared:{} - overlay overlay rw,lowerdir={lower},upperdir={},workdir={}/{rw}/work",
                5000 + c,
                o2.display(),
                c + 10,
                upper.display(),
                o2.display(),
            );
            keys.push(upper_key(dev, &upper)?);
        }
        let mi = base.join("mountinfo");
        write(&mi, mountinfo)?;
        Ok(Self {
            root,
            mountinfo: mi,
            keys,
            entries,
        })
    }

    fn catalog(&self) -> Catalog {
        let resolver = DockerResolver::with_paths(
            Some(self.root.clone()),
            self.root.join("no-daemon.json"),
            self.root.join("no-default-root"),
        );
        Catalog::with_mountinfo(vec![Box::new(resolver)], self.mountinfo.clone())
    }
}

/// The key the kernel reports for an overlay with upper directory `upper`.
fn upper_key(dev: Dev, upper: &Path) -> Result<OverlayKey> {
    use std::os::unix::fs::MetadataExt;
    let md = fs::metadata(upper).map_err(|e| format!("stat {}: {e}", upper.display()))?;
    Ok(OverlayKey {
        dev: dev.to_kernel(),
        upper_dev: Dev::new(libc::major(md.dev()), libc::minor(md.dev())).to_kernel(),
        upper_ino: md.ino(),
    })
}

fn write_key(dst: &mut [u8], key: &OverlayKey) {
    dst[..8].copy_from_slice(&key.upper_ino.to_ne_bytes());
    dst[8..12].copy_from_slice(&key.dev.to_ne_bytes());
    dst[12..16].copy_from_slice(&key.upper_dev.to_ne_bytes());
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn hex_bytes(data: &[u8]) -> String {
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(data) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

// ----------------------------------------------------------------- resources --

fn max_rss_kb() -> u64 {
    // SAFETY: zeroed rusage is a valid out-buffer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    ru.ru_maxrss as u64
}

fn cpu_seconds() -> f64 {
    // SAFETY: zeroed rusage is a valid out-buffer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Pins this thread to the CPU it is on: "events/s on one core".
fn pin_to_one_cpu() -> Option<i32> {
    // SAFETY: no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        return None;
    }
    // SAFETY: zeroed cpu_set_t is empty; CPU_SET on an index below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return None;
        }
    }
    Some(cpu)
}

// -------------------------------------------------------------------- ingest --

/// The bytes the kernel writes for one copy-up of `path` (root first).
fn raw_event(path: &[&str], size: u64, start_ns: u64) -> Vec<u8> {
    let mut ev = CopyUpEvent {
        header: EventHeader {
            kind: EVENT_COPY_UP,
            size: size_of::<CopyUpEvent>() as u32,
        },
        start_ns,
        latency_ns: 30_000,
        data_ns: 10_000,
        data_len: size,
        size,
        tgid: 700,
        tid: 700,
        overlay: OverlayKey::default(),
        ret: 0,
        mode: 0o100644,
        flags: FLAG_DATA_COPY,
        path_len: 0,
        components: 0,
        mnt_ns: 0,
        lower_idx: NO_LAYER,
        data_idx: NO_LAYER,
        lower_fsid: 0,
        numlower: 1,
        cause: ovltrace_ebpf::CAUSE_METADATA,
        _pad: [0; 3],
        comm: [0; COMM_LEN],
        path: [0; PATH_BUF],
    };
    ev.comm[..5].copy_from_slice(b"chown");
    let mut off = 0;
    for c in path.iter().rev() {
        ev.path[off..off + c.len()].copy_from_slice(c.as_bytes());
        off += ovltrace_ebpf::path_slot(c.len());
        ev.components += 1;
    }
    ev.path_len = off as u32;
    // SAFETY: plain-old-data struct viewed as bytes.
    unsafe {
        std::slice::from_raw_parts(
            (&ev as *const CopyUpEvent).cast::<u8>(),
            size_of::<CopyUpEvent>(),
        )
    }
    .to_vec()
}

/// Path of file `f` of an image with `layers` layers, and its layer (0 = base).
/// Every layer has `usr/`; layer k owns `usr/pkg<k>/`, 100 files a directory.
fn file_path(f: usize, layers: usize) -> (Vec<String>, usize) {
    let k = f % layers;
    let n = f / layers;
    (
        vec![
            "usr".into(),
            format!("pkg{k}"),
            format!("d{}", n / 100),
            format!("f{f}"),
        ],
        k,
    )
}

fn ingest(o: &Opts, tmp: &Path) -> Result<serde_json::Value> {
    let full = match o.mode.as_str() {
        "decode" | "aggregate" => false,
        "full" => true,
        m => return Err(format!("unknown mode {m:?}: decode, aggregate or full")),
    };
    let t_setup = Instant::now();
    // One image; every container runs it, so every (device, path) pair is
    // copied up once, as in a copy-up storm.
    let synth = if full {
        let s = Synth::build(
            tmp,
            &SynthSpec {
                images: 1,
                containers: o.containers,
                layers: o.layers,
            },
        )?;
        Some(s)
    } else {
        None
    };
    let keys: Vec<OverlayKey> = match &synth {
        Some(s) => s.keys.clone(),
        None => (0..o.containers as u32)
            .map(|c| OverlayKey::dev_only(Dev::new(0, 1000 + c).to_kernel()))
            .collect(),
    };
    let mut tracker = match &synth {
        Some(s) => {
            let mut t = Tracker::new(s.catalog());
            let _ = t.refresh();
            Some(t)
        }
        None => None,
    };
    let mut pool: Vec<Vec<u8>> = (0..o.files)
        .map(|f| {
            let (comps, k) = file_path(f, o.layers);
            let refs: Vec<&str> = comps.iter().map(String::as_str).collect();
            let mut raw = raw_event(&refs, 100 + (f as u64 % 4000), 1);
            // The kernel reads the source layer from overlay's lower stack:
            // layer k (0 = base) is overlay index layers - k + 1 (index 1 is
            // the init layer).
            let idx = (o.layers - k + 1) as u16;
            let off = std::mem::offset_of!(CopyUpEvent, lower_idx);
            raw[off..off + 2].copy_from_slice(&idx.to_ne_bytes());
            let off = std::mem::offset_of!(CopyUpEvent, data_idx);
            raw[off..off + 2].copy_from_slice(&idx.to_ne_bytes());
            raw
        })
        .collect();
    let key_off = std::mem::offset_of!(CopyUpEvent, overlay);
    let lat_off = std::mem::offset_of!(CopyUpEvent, latency_ns);
    let setup_s = t_setup.elapsed().as_secs_f64();

    let cpu = pin_to_one_cpu();
    let mut agg = Aggregator::new(o.max_files);
    let (mut attributed, mut with_layer, mut errors) = (0u64, 0u64, 0u64);
    let n_keys = keys.len().max(1);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for k in 0..o.events {
        let c = k % n_keys;
        let f = (k / n_keys) % o.files.max(1);
        let raw = &mut pool[f];
        // What the kernel would have written for this copy-up.
        write_key(&mut raw[key_off..key_off + 16], &keys[c]);
        let lat = 20_000 + (k as u64).wrapping_mul(7919) % 50_000;
        raw[lat_off..lat_off + 8].copy_from_slice(&lat.to_ne_bytes());
        let mut ev = match event::decode(raw) {
            Ok(ev) => ev,
            Err(_) => {
                errors += 1;
                continue;
            }
        };
        match o.mode.as_str() {
            "decode" => {
                black_box(&ev);
            }
            "aggregate" => agg.add_taking_path(&mut ev, &Attribution::default(), None),
            _ => {
                let Some(t) = tracker.as_mut() else {
                    return Err("no catalog".into());
                };
                let Attributed::Now(attr, source) = t.attribute(&ev) else {
                    // Parked (no container known for its overlay): not here.
                    continue;
                };
                attributed += u64::from(attr.container.is_some());
                with_layer += u64::from(source.as_ref().is_some_and(|s| s.diff_id.is_some()));
                agg.add_taking_path(&mut ev, &attr, source.as_deref());
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu0;
    black_box(&agg);
    Ok(json!({
        "bench": "ingest",
        "mode": o.mode,
        "events": o.events,
        "containers": o.containers,
        "layers": o.layers,
        "distinct_files": o.files,
        "max_files": o.max_files,
        "seconds": secs,
        "cpu_seconds": cpu_s,
        "events_per_s": o.events as f64 / secs,
        "ns_per_event": secs * 1e9 / o.events as f64,
        "pinned_cpu": cpu,
        "attributed_to_container": attributed,
        "attributed_to_layer": with_layer,
        "decode_errors": errors,
        "aggregated_events": agg.events,
        "setup_seconds": setup_s,
        "max_rss_kb": max_rss_kb(),
    }))
}

// ------------------------------------------------------------------ resolver --

fn resolver(o: &Opts, tmp: &Path) -> Result<serde_json::Value> {
    let images = o.images.unwrap_or(o.containers).max(1);
    let t_gen = Instant::now();
    let synth = Synth::build(
        tmp,
        &SynthSpec {
            images,
            containers: o.containers,
            layers: o.layers,
        },
    )?;
    let gen_s = t_gen.elapsed().as_secs_f64();
    let rss_before = max_rss_kb();

    let mut firsts = Vec::new();
    let mut firsts_cpu = Vec::new();
    let mut full_rescans = Vec::new();
    let mut full_rescans_cpu = Vec::new();
    let mut unchanged = Vec::new();
    let mut catalog = synth.catalog();
    for _ in 0..o.repeat.max(1) {
        // A new catalog and resolver each time: nothing cached in-process.
        catalog = synth.catalog();
        let (t0, c0) = (Instant::now(), cpu_seconds());
        catalog
            .refresh()
            .map_err(|e| format!("catalog refresh: {e:#}"))?;
        firsts.push(t0.elapsed().as_secs_f64());
        firsts_cpu.push(cpu_seconds() - c0);
        // The periodic rescan when the mount table is unchanged.
        let t1 = Instant::now();
        catalog
            .refresh()
            .map_err(|e| format!("catalog refresh: {e:#}"))?;
        unchanged.push(t1.elapsed().as_secs_f64());
        // A full rescan (the table changed, or once a minute): container
        // metadata read again, image configs already parsed.
        let data = fs::read(&synth.mountinfo).map_err(|e| format!("reading mountinfo: {e}"))?;
        let parsed = mounts::parse_mountinfo(&data);
        let (t2, c2) = (Instant::now(), cpu_seconds());
        catalog.apply(&parsed.mounts);
        full_rescans.push(t2.elapsed().as_secs_f64());
        full_rescans_cpu.push(cpu_seconds() - c2);
    }

    // Everything must have been resolved, or the figure means nothing.
    let inv = catalog.inventory();
    let complete = inv
        .containers
        .iter()
        .filter(|c| {
            c.layers.len() == o.layers + 1
                && c.layers
                    .iter()
                    .filter(|l| !l.init)
                    .all(|l| l.diff_id.is_some() && l.created_by.is_some() && l.dir.is_some())
        })
        .count();
    if complete != o.containers {
        return Err(format!(
            "only {complete} of {} containers were fully resolved ({} found)",
            o.containers,
            inv.containers.len()
        ));
    }
    Ok(json!({
        "bench": "resolver",
        "containers": o.containers,
        "layers_per_container": o.layers,
        "images": images,
        "distinct_layers": images * o.layers,
        "files_generated": synth.entries,
        "generate_seconds": gen_s,
        "first_refresh_seconds": median(&mut firsts),
        "first_refresh_runs": firsts,
        "first_refresh_cpu_seconds": median(&mut firsts_cpu),
        "full_rescan_seconds": median(&mut full_rescans),
        "full_rescan_cpu_seconds": median(&mut full_rescans_cpu),
        "unchanged_refresh_seconds": median(&mut unchanged),
        "containers_resolved": complete,
        "max_rss_kb_before_scan": rss_before,
        "max_rss_kb": max_rss_kb(),
    }))
}
