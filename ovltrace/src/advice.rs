//! Advice backed by numbers: where a volume would avoid copy-ups, and where
//! a layer stack is deep enough to slow lookups down.
//!
//! - **volume**: a directory under which many files are copied up, or many
//!   bytes, pays the copy-up on every new container. The deepest such
//!   directory is named, with its file count, bytes and time. So is a single
//!   path copied up in several containers.
//! - **flatten**: a mount with many lower layers and slow lookups (a lookup
//!   that misses searches every layer) is named with its layer count and
//!   lookup latency.

use std::collections::{BTreeMap, HashMap};

use crate::{
    aggregate::Aggregator,
    report::{
        dev_string,
        terminal::{fmt_bytes, fmt_ns},
        Advice, Report,
    },
};

/// A directory qualifies for a volume with this many copied-up files under it...
pub const VOLUME_MIN_FILES: u64 = 20;
/// ...or this many bytes copied up under it.
pub const VOLUME_MIN_BYTES: u64 = 64 << 20;
/// A path copied up in this many containers qualifies too.
pub const REPEAT_MIN_CONTAINERS: usize = 3;
/// A mount qualifies for flattening with at least this many lower layers...
pub const FLATTEN_MIN_LAYERS: usize = 20;
/// ...at least this many lookups measured...
pub const FLATTEN_MIN_LOOKUPS: u64 = 100;
/// ...and a mean lookup latency of at least this.
pub const FLATTEN_MIN_MEAN_NS: u64 = 50_000;
/// At most this many volume suggestions per container.
const MAX_VOLUME_ADVICE: usize = 5;

#[derive(Default, Clone, Copy)]
struct DirCost {
    files: u64,
    bytes: u64,
    total_ns: u64,
}

pub fn advise(agg: &Aggregator, report: &Report) -> Vec<Advice> {
    let mut out = volumes(agg, report);
    out.extend(repeated(agg, report));
    out.extend(flatten(report));
    out
}

/// How a mount is named in advice: its container, else "overlay <mountpoint>".
fn owner_label(report: &Report, container: Option<&str>, dev: u32) -> String {
    container_label(report, container).unwrap_or_else(|| {
        let dev = dev_string(dev);
        let mp = report
            .mounts
            .iter()
            .find(|m| m.dev == dev)
            .and_then(|m| m.mountpoint.clone())
            .unwrap_or(dev);
        format!("overlay {mp}")
    })
}

/// Whose files: a container id (or none) and the overlay device.
type Owner = (Option<std::sync::Arc<str>>, u32);

fn volumes(agg: &Aggregator, report: &Report) -> Vec<Advice> {
    // (owner key) -> directory -> cost of everything copied up below it.
    let mut dirs: HashMap<Owner, BTreeMap<Vec<u8>, DirCost>> = HashMap::new();
    for (key, f) in &agg.files {
        let owner_key = (f.attribution.container.clone(), key.overlay.dev);
        let tree = dirs.entry(owner_key).or_default();
        // Every ancestor directory of the path (not the overlay root itself).
        let path = &key.path;
        for (i, _) in path.iter().enumerate().filter(|(_, &b)| b == b'/') {
            let c = tree.entry(path[..i].to_vec()).or_default();
            c.files += 1;
            c.bytes += f.bytes;
            c.total_ns += f.total_ns;
        }
    }
    let mut out = Vec::new();
    let mut owners: Vec<_> = dirs.into_iter().collect();
    owners.sort_by(|a, b| a.0.cmp(&b.0));
    for ((container, dev), tree) in owners {
        let qualifies = |c: &DirCost| c.files >= VOLUME_MIN_FILES || c.bytes >= VOLUME_MIN_BYTES;
        // The deepest qualifying directories: none of their subdirectories qualify.
        let mut picked: Vec<(&Vec<u8>, &DirCost)> = tree
            .iter()
            .filter(|(d, c)| {
                qualifies(c)
                    && !tree.iter().any(|(sub, sc)| {
                        sub.len() > d.len()
                            && sub.starts_with(d)
                            && sub[d.len()] == b'/'
                            && qualifies(sc)
                    })
            })
            .collect();
        picked.sort_by(|a, b| b.1.total_ns.cmp(&a.1.total_ns).then_with(|| a.0.cmp(b.0)));
        for (dir, c) in picked.into_iter().take(MAX_VOLUME_ADVICE) {
            let target = format!("/{}", String::from_utf8_lossy(dir));
            let who = owner_label(report, container.as_deref(), dev);
            let container = container.as_deref().map(str::to_string);
            out.push(Advice {
                kind: "volume".into(),
                container,
                message: format!(
                    "{} files under {target} in {who} were copied up ({}, {} in total): \
                     mount a volume at {target} so writes skip the copy-up",
                    c.files,
                    fmt_bytes(c.bytes),
                    fmt_ns(c.total_ns)
                ),
                target,
                numbers: BTreeMap::from([
                    ("files".into(), c.files),
                    ("bytes".into(), c.bytes),
                    ("total_ns".into(), c.total_ns),
                ]),
            });
        }
    }
    out
}

/// The same path copied up in several containers (of one image, typically).
fn repeated(agg: &Aggregator, report: &Report) -> Vec<Advice> {
    let mut by_path: BTreeMap<&[u8], (Vec<&str>, u64, u64)> = BTreeMap::new();
    for (key, f) in &agg.files {
        if let Some(c) = f.attribution.container.as_deref() {
            let e = by_path.entry(&key.path).or_default();
            e.0.push(c);
            e.1 += f.bytes;
            e.2 += f.total_ns;
        }
    }
    by_path
        .into_iter()
        .filter(|(_, (cs, _, _))| cs.len() >= REPEAT_MIN_CONTAINERS)
        .map(|(path, (cs, bytes, total_ns))| {
            let target = format!("/{}", String::from_utf8_lossy(path));
            let image = cs
                .first()
                .and_then(|c| report.containers.iter().find(|x| x.id == *c))
                .and_then(|c| c.image.tags.first().cloned());
            Advice {
                kind: "volume".into(),
                container: None,
                message: format!(
                    "{target} was copied up in {} containers{} ({}, {} in total): \
                     every new container pays for it; use a volume or create it at run time",
                    cs.len(),
                    image.map(|i| format!(" of {i}")).unwrap_or_default(),
                    fmt_bytes(bytes),
                    fmt_ns(total_ns)
                ),
                target,
                numbers: BTreeMap::from([
                    ("containers".into(), cs.len() as u64),
                    ("bytes".into(), bytes),
                    ("total_ns".into(), total_ns),
                ]),
            }
        })
        .collect()
}

fn flatten(report: &Report) -> Vec<Advice> {
    report
        .lookups
        .iter()
        .filter(|l| {
            l.layers >= FLATTEN_MIN_LAYERS
                && l.count >= FLATTEN_MIN_LOOKUPS
                && l.latency_ns.mean >= FLATTEN_MIN_MEAN_NS
        })
        .map(|l| {
            let who = container_label(report, l.container.as_deref())
                .unwrap_or_else(|| l.mountpoint.clone().unwrap_or_else(|| l.dev.clone()));
            let image = l
                .container
                .as_deref()
                .and_then(|id| report.containers.iter().find(|c| c.id == id))
                .and_then(|c| c.image.tags.first().cloned())
                .unwrap_or_else(|| who.clone());
            Advice {
                kind: "flatten".into(),
                container: l.container.clone(),
                message: format!(
                    "{who} stacks {} lower layers and its {} lookups took {} on average \
                     ({} not found, each searching every layer): flatten {image} (multi-stage \
                     build, fewer RUN/COPY steps)",
                    l.layers,
                    l.count,
                    fmt_ns(l.latency_ns.mean),
                    l.not_found
                ),
                target: image,
                numbers: BTreeMap::from([
                    ("layers".into(), l.layers as u64),
                    ("lookups".into(), l.count),
                    ("not_found".into(), l.not_found),
                    ("mean_ns".into(), l.latency_ns.mean),
                    ("p99_ns".into(), l.latency_ns.p99),
                ]),
            }
        })
        .collect()
}

fn container_label(report: &Report, id: Option<&str>) -> Option<String> {
    let id = id?;
    let c = report.containers.iter().find(|c| c.id == id)?;
    Some(format!(
        "container {}",
        c.name
            .clone()
            .unwrap_or_else(|| id.chars().take(12).collect())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::OverlayKey;
    use crate::{
        aggregate::Attribution,
        event::{CopyUp, FileKind},
        report::{tests::empty_report, LookupLatency, Lookups},
    };

    fn ev(path: &str, bytes: u64, ns: u64) -> CopyUp {
        CopyUp {
            start_ns: 0,
            latency_ns: ns,
            data_ns: None,
            data_len: Some(bytes),
            size: bytes,
            tgid: 1,
            tid: 1,
            overlay: OverlayKey::dev_only(7),
            ret: 0,
            kind: FileKind::Regular,
            path: path.as_bytes().to_vec(),
            path_truncated: false,
            comm: "x".into(),
            mnt_ns: 0,
            source: None,
            cause: Default::default(),
        }
    }

    fn attr(c: &str) -> Attribution {
        Attribution {
            container: Some(c.into()),
            layer: Some(2),
            outside: false,
        }
    }

    #[test]
    fn many_files_in_one_directory_suggest_a_volume() {
        let mut agg = Aggregator::new(10_000);
        for i in 0..VOLUME_MIN_FILES {
            agg.add(
                &ev(&format!("var/lib/app/cache/f{i}"), 10, 1000),
                &attr("c1"),
                None,
            );
        }
        // Below the threshold elsewhere.
        for i in 0..VOLUME_MIN_FILES - 1 {
            agg.add(&ev(&format!("etc/f{i}"), 10, 1000), &attr("c1"), None);
        }
        let a = advise(&agg, &empty_report());
        let vols: Vec<&Advice> = a.iter().filter(|a| a.kind == "volume").collect();
        assert_eq!(vols.len(), 1, "{a:?}");
        assert_eq!(vols[0].target, "/var/lib/app/cache");
        assert_eq!(vols[0].numbers["files"], VOLUME_MIN_FILES);
        assert_eq!(vols[0].numbers["bytes"], 10 * VOLUME_MIN_FILES);
        assert_eq!(vols[0].container.as_deref(), Some("c1"));
        assert!(vols[0].message.contains("/var/lib/app/cache"));
    }

    #[test]
    fn one_big_file_suggests_its_directory() {
        let mut agg = Aggregator::new(100);
        agg.add(
            &ev("data/db/catalog.db", VOLUME_MIN_BYTES, 9_000_000),
            &attr("c1"),
            None,
        );
        agg.add(
            &ev("data/small", VOLUME_MIN_BYTES - 1, 1),
            &attr("c2"),
            None,
        );
        let a = advise(&agg, &empty_report());
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].target, "/data/db");
        assert_eq!(a[0].numbers["total_ns"], 9_000_000);
    }

    #[test]
    fn same_path_in_several_containers() {
        let mut agg = Aggregator::new(100);
        for c in ["a", "b", "c"] {
            // Different devices: one overlay per container.
            let mut e = ev("app/state.json", 5, 100);
            e.overlay = OverlayKey::dev_only(c.as_bytes()[0] as u32);
            agg.add(&e, &attr(c), None);
        }
        let mut e = ev("app/other", 5, 100);
        e.overlay = OverlayKey::dev_only(1);
        agg.add(&e, &attr("a"), None);
        let a = advise(&agg, &empty_report());
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].target, "/app/state.json");
        assert_eq!(a[0].numbers["containers"], 3);
    }

    #[test]
    fn deep_stacks_with_slow_lookups_suggest_flattening() {
        let lookups = |layers: usize, count: u64, mean: u64| Lookups {
            host: None,
            mountpoint: Some("/m".into()),
            dev: "0:9".into(),
            container: None,
            layers,
            count,
            found: count,
            not_found: 0,
            errors: 0,
            total_ns: count * mean,
            latency_ns: LookupLatency {
                mean,
                ..Default::default()
            },
            histogram: vec![],
        };
        let mut r = empty_report();
        r.lookups = vec![
            lookups(FLATTEN_MIN_LAYERS, FLATTEN_MIN_LOOKUPS, FLATTEN_MIN_MEAN_NS),
            lookups(FLATTEN_MIN_LAYERS - 1, 10_000, 10 * FLATTEN_MIN_MEAN_NS),
            lookups(90, FLATTEN_MIN_LOOKUPS - 1, 10 * FLATTEN_MIN_MEAN_NS),
            lookups(90, 10_000, FLATTEN_MIN_MEAN_NS - 1),
        ];
        let a = advise(&Aggregator::new(10), &r);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].kind, "flatten");
        assert_eq!(a[0].numbers["layers"], FLATTEN_MIN_LAYERS as u64);
        assert_eq!(a[0].numbers["mean_ns"], FLATTEN_MIN_MEAN_NS);
    }
}
