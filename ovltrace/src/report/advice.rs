//! Advice backed by numbers, keyed to why the copy-ups happened.
//!
//! - **build** (metadata): chown, chmod or touch over image files at run
//!   time copies each of them up; doing it when the image is built (`COPY
//!   --chown`, or `RUN chown` in the layer that creates the files) saves
//!   that time in every container. Named: the directory, the layer and its
//!   instruction, the files, bytes and time.
//! - **volume** (large write): a large file copied up whole because it was
//!   opened for writing (an append, a read-write open of a database) is
//!   named with its size and time: a volume for that path.
//! - **build** (package managers and build tools, known by comm: dpkg, apt,
//!   pip, npm, ...): writing into image layers at run time; move that step
//!   into the image build.
//! - **layer**: many files of one layer copied up by every container of an
//!   image: restructure or flatten that layer.
//! - **volume**: a directory under which many files are copied up for
//!   writing (or for reasons unknown), or many bytes, pays the copy-up on
//!   every new container. The deepest such directory is named, with its file
//!   count, bytes and time. So is a single path copied up in several
//!   containers.
//!
//! No advice is given for truncating opens: they copy no data.
//! - **flatten**: a mount with many lower layers and slow lookups (a lookup
//!   that misses searches every layer) is named with its layer count and
//!   lookup latency.

use std::collections::{BTreeMap, HashMap};

use crate::{
    aggregate::{Aggregator, FileAgg, FileKey},
    bpf::event::Cause,
    catalog::instruction,
    report::{dev_string, Advice, Report},
    units::{fmt_bytes, fmt_ns},
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
/// A metadata storm: at least this many files of one layer copied up for a
/// metadata change in one container.
pub const METADATA_MIN_FILES: u64 = 20;
/// A file copied up for writing is large from this size.
pub const LARGE_WRITE_MIN_BYTES: u64 = 4 << 20;
/// A layer qualifies for restructuring when every container of an image (at
/// least this many)...
pub const LAYER_MIN_CONTAINERS: usize = 2;
/// ...copied up at least this many of its files, each.
pub const LAYER_MIN_FILES: u64 = 20;
/// Process names of package managers and build tools.
pub const BUILD_TOOLS: [&str; 22] = [
    "dpkg", "apt", "apt-get", "aptitude", "pip", "pip3", "npm", "yarn", "pnpm", "gem", "bundle",
    "apk", "dnf", "yum", "rpm", "composer", "cargo", "go", "make", "mvn", "gradle", "conda",
];
/// Width of an instruction quoted in a message.
const INSTRUCTION_WIDTH: usize = 60;
/// At most this many volume suggestions per container.
const MAX_VOLUME_ADVICE: usize = 5;

#[derive(Default, Clone, Copy)]
struct DirCost {
    files: u64,
    bytes: u64,
    total_ns: u64,
}

pub fn advise(agg: &Aggregator, report: &Report) -> Vec<Advice> {
    let mut out = metadata_storms(agg, report);
    out.extend(large_writes(agg, report));
    out.extend(build_tools(agg, report));
    out.extend(layers(agg, report));
    out.extend(volumes(agg, report));
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
        // Metadata changes, truncating opens, links, renames and parents
        // are not helped by a volume; large writes have their own advice.
        let has = |c: Cause| f.cause_bits & (1 << c.index()) != 0;
        if !(has(Cause::Write) || has(Cause::Unknown)) || large_write(f) {
            continue;
        }
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
                ..Default::default()
            });
        }
    }
    out
}

/// The same path copied up in several containers (of one image, typically).
fn repeated(agg: &Aggregator, report: &Report) -> Vec<Advice> {
    let mut by_path: BTreeMap<&[u8], (Vec<&str>, u64, u64)> = BTreeMap::new();
    // Files the containers' own processes copied up: not directories (copied
    // up on the way to a file), not what a runtime wrote while setting the
    // container up (`outside`).
    let own = agg
        .files
        .iter()
        .filter(|(_, f)| f.kind != crate::bpf::event::FileKind::Dir && !f.outside);
    for (key, f) in own {
        if let Some(c) = f.attribution.container.as_deref() {
            let e = by_path.entry(&key.path).or_default();
            // One container can hold a path twice (its init layer's mount).
            if !e.0.contains(&c) {
                e.0.push(c);
            }
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
                ..Default::default()
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
                ..Default::default()
            }
        })
        .collect()
}

fn has_cause(f: &FileAgg, c: Cause) -> bool {
    f.cause_bits & (1 << c.index()) != 0
}

/// A large file copied up whole for writing.
fn large_write(f: &FileAgg) -> bool {
    has_cause(f, Cause::Write) && f.bytes >= LARGE_WRITE_MIN_BYTES
}

/// The source layer of a file: a label (diff-id, else "lower N of
/// MOUNT") and its instruction (`created_by`).
fn layer_of(
    report: &Report,
    container: Option<&str>,
    dev: u32,
    index: Option<usize>,
) -> (Option<String>, Option<String>) {
    let Some(index) = index else {
        return (None, None);
    };
    let info = container
        .and_then(|id| report.containers.iter().find(|c| c.id == id))
        .and_then(|c| c.layers.iter().find(|l| l.index == index));
    match info {
        Some(l) => (
            Some(
                l.diff_id
                    .clone()
                    .unwrap_or_else(|| format!("lower {index}")),
            ),
            l.created_by.clone(),
        ),
        None => {
            let dev = dev_string(dev);
            let dir = report
                .mounts
                .iter()
                .find(|m| m.dev == dev)
                .and_then(|m| m.lowerdirs.get(index.wrapping_sub(1)).cloned());
            (Some(dir.unwrap_or_else(|| format!("lower {index}"))), None)
        }
    }
}

/// "layer 1/2 ab12cd34ef56 (`COPY … in /srv/static/`)", for a message.
/// An image layer is named as the hot spots name it ("1/2 ab12cd34ef56").
fn layer_phrase(report: &Report, layer: &Option<String>, created_by: &Option<String>) -> String {
    let Some(l) = layer else {
        return "an unknown layer".into();
    };
    let numbered = report.containers.iter().find_map(|c| {
        let info = c
            .layers
            .iter()
            .find(|i| i.number.is_some() && i.diff_id.as_ref() == Some(l))?;
        Some(crate::report::view::layer_label(c, info))
    });
    let short = numbered.unwrap_or_else(|| {
        l.strip_prefix("sha256:")
            .map_or(l.clone(), |d| crate::catalog::short_id(d).to_string())
    });
    match created_by {
        Some(_) => format!(
            "layer {short} (`{}`)",
            instruction::display(created_by.as_deref(), INSTRUCTION_WIDTH)
        ),
        None => format!("layer {short}"),
    }
}

/// The deepest directory holding every path (the path itself for one).
fn common_dir<'a>(paths: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut common: Option<Vec<&[u8]>> = None;
    for p in paths {
        let parts: Vec<&[u8]> = p.split(|&b| b == b'/').collect();
        common = Some(match common {
            None => parts,
            Some(c) => c
                .iter()
                .zip(&parts)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    format!(
        "/{}",
        String::from_utf8_lossy(&common.unwrap_or_default().join(&b'/'))
    )
}

/// Files, bytes and time of a set of files.
fn cost<'a>(files: impl IntoIterator<Item = &'a FileAgg>) -> DirCost {
    let mut c = DirCost::default();
    for f in files {
        c.files += 1;
        c.bytes += f.bytes;
        c.total_ns += f.total_ns;
    }
    c
}

/// Distinct process names of some files, sorted.
fn comms_of<'a>(files: impl IntoIterator<Item = &'a FileAgg>) -> Vec<String> {
    let mut v: Vec<String> = files
        .into_iter()
        .flat_map(|f| f.comms.iter().map(|c| c.to_string()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Files of one owner (container or overlay) and one source layer.
type ByLayer<'a> = BTreeMap<(Owner, Option<usize>), Vec<(&'a FileKey, &'a FileAgg)>>;

/// Only the containers' own copy-ups are grouped: what a runtime copied up
/// while setting a container up (`outside`) is no Dockerfile's doing.
fn group_by_layer<'a>(agg: &'a Aggregator, keep: impl Fn(&FileAgg) -> bool) -> ByLayer<'a> {
    let mut m: ByLayer<'a> = BTreeMap::new();
    for (k, f) in &agg.files {
        if !f.outside && keep(f) {
            m.entry((
                (f.attribution.container.clone(), k.overlay.dev),
                f.attribution.layer,
            ))
            .or_default()
            .push((k, f));
        }
    }
    m
}

/// chown, chmod, touch over image files at run time: do it at build time.
fn metadata_storms(agg: &Aggregator, report: &Report) -> Vec<Advice> {
    let mut out = Vec::new();
    for (((container, dev), index), files) in group_by_layer(agg, |f| has_cause(f, Cause::Metadata))
    {
        let c = cost(files.iter().map(|(_, f)| *f));
        if c.files < METADATA_MIN_FILES {
            continue;
        }
        let dir = common_dir(files.iter().map(|(k, _)| k.path.as_slice()));
        let who = owner_label(report, container.as_deref(), dev);
        let (layer, created_by) = layer_of(report, container.as_deref(), dev, index);
        let comms = comms_of(files.iter().map(|(_, f)| *f));
        out.push(Advice {
            kind: "build".into(),
            container: container.as_deref().map(str::to_string),
            message: format!(
                "{who}: {} changed the owner, mode or times of {} files under {dir} at run time, \
                 copying them up ({}, {} in total) from {}: do it when the image is built \
                 (`COPY --chown`, or `RUN chown`/`chmod` in the layer that creates the files) \
                 to save {} and {} per container",
                if comms.is_empty() {
                    "a process".to_string()
                } else {
                    comms.join(", ")
                },
                c.files,
                fmt_bytes(c.bytes),
                fmt_ns(c.total_ns),
                layer_phrase(report, &layer, &created_by),
                fmt_ns(c.total_ns),
                fmt_bytes(c.bytes),
            ),
            target: dir,
            numbers: BTreeMap::from([
                ("files".into(), c.files),
                ("bytes".into(), c.bytes),
                ("total_ns".into(), c.total_ns),
            ]),
            cause: Some(Cause::Metadata),
            layer,
            instruction: created_by,
            containers: vec![],
        });
    }
    out
}

/// Large files copied up whole for a write: a volume for that path.
fn large_writes(agg: &Aggregator, report: &Report) -> Vec<Advice> {
    let mut big: Vec<(&FileKey, &FileAgg)> =
        agg.files.iter().filter(|(_, f)| large_write(f)).collect();
    big.sort_by(|a, b| b.1.total_ns.cmp(&a.1.total_ns).then_with(|| a.0.cmp(b.0)));
    big.into_iter()
        .take(MAX_VOLUME_ADVICE)
        .map(|(k, f)| {
            let path = format!("/{}", String::from_utf8_lossy(&k.path));
            let container = f.attribution.container.as_deref();
            let who = owner_label(report, container, k.overlay.dev);
            let (layer, created_by) =
                layer_of(report, container, k.overlay.dev, f.attribution.layer);
            Advice {
                kind: "volume".into(),
                container: container.map(str::to_string),
                message: format!(
                    "{who}: {path} ({}) was copied up whole from {} because {} opened it for \
                     writing ({} in total): put {path} on a volume (or its directory) so the \
                     write skips a {} copy-up",
                    fmt_bytes(f.bytes),
                    layer_phrase(report, &layer, &created_by),
                    f.comms
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    fmt_ns(f.total_ns),
                    fmt_bytes(f.bytes),
                ),
                target: path,
                numbers: BTreeMap::from([
                    ("files".into(), 1),
                    ("bytes".into(), f.bytes),
                    ("total_ns".into(), f.total_ns),
                ]),
                cause: Some(Cause::Write),
                layer,
                instruction: created_by,
                containers: vec![],
            }
        })
        .collect()
}

fn is_build_tool(f: &FileAgg) -> bool {
    f.comms.iter().any(|c| {
        let name = c.to_string();
        BUILD_TOOLS.contains(&name.as_str())
    })
}

/// Package managers and build tools writing into image layers at run time.
fn build_tools(agg: &Aggregator, report: &Report) -> Vec<Advice> {
    let mut out = Vec::new();
    for (((container, dev), index), files) in group_by_layer(agg, |f| {
        is_build_tool(f) && !(has_cause(f, Cause::Truncate) && f.cause_bits.count_ones() == 1)
    }) {
        let c = cost(files.iter().map(|(_, f)| *f));
        let dir = common_dir(files.iter().map(|(k, _)| k.path.as_slice()));
        let who = owner_label(report, container.as_deref(), dev);
        let (layer, created_by) = layer_of(report, container.as_deref(), dev, index);
        let tools: Vec<String> = comms_of(files.iter().map(|(_, f)| *f))
            .into_iter()
            .filter(|c| BUILD_TOOLS.contains(&c.as_str()))
            .collect();
        out.push(Advice {
            kind: "build".into(),
            container: container.as_deref().map(str::to_string),
            message: format!(
                "{who}: {} wrote into the image at run time, copying up {} files under {dir} \
                 ({}, {} in total) from {}: move that step into the image build",
                tools.join(", "),
                c.files,
                fmt_bytes(c.bytes),
                fmt_ns(c.total_ns),
                layer_phrase(report, &layer, &created_by),
            ),
            target: dir,
            numbers: BTreeMap::from([
                ("files".into(), c.files),
                ("bytes".into(), c.bytes),
                ("total_ns".into(), c.total_ns),
            ]),
            cause: None,
            layer,
            instruction: created_by,
            containers: vec![],
        });
    }
    out
}

/// Many files of one layer copied up by every container of an image.
fn layers(agg: &Aggregator, report: &Report) -> Vec<Advice> {
    // image -> its containers in this report.
    let mut images: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in &report.containers {
        if let Some(img) = c.image.id.as_deref() {
            images.entry(img).or_default().push(&c.id);
        }
    }
    // (image, diff_id) -> container -> files and cost.
    let mut per: BTreeMap<(&str, &str), BTreeMap<&str, DirCost>> = BTreeMap::new();
    let mut instr: HashMap<&str, Option<String>> = HashMap::new();
    for f in agg.files.values() {
        if has_cause(f, Cause::Truncate) && f.cause_bits.count_ones() == 1 {
            continue;
        }
        let (Some(id), Some(index)) = (f.attribution.container.as_deref(), f.attribution.layer)
        else {
            continue;
        };
        let Some(c) = report.containers.iter().find(|c| c.id == id) else {
            continue;
        };
        let (Some(img), Some(l)) = (
            c.image.id.as_deref(),
            c.layers.iter().find(|l| l.index == index && !l.init),
        ) else {
            continue;
        };
        let Some(diff) = l.diff_id.as_deref() else {
            continue;
        };
        instr.entry(diff).or_insert_with(|| l.created_by.clone());
        let e = per
            .entry((img, diff))
            .or_default()
            .entry(&c.id)
            .or_default();
        e.files += 1;
        e.bytes += f.bytes;
        e.total_ns += f.total_ns;
    }
    let mut out = Vec::new();
    for ((img, diff), by_container) in per {
        let all = &images[img];
        if all.len() < LAYER_MIN_CONTAINERS
            || by_container.len() < all.len()
            || by_container.values().any(|c| c.files < LAYER_MIN_FILES)
        {
            continue;
        }
        let total = by_container
            .values()
            .fold(DirCost::default(), |a, c| DirCost {
                files: a.files + c.files,
                bytes: a.bytes + c.bytes,
                total_ns: a.total_ns + c.total_ns,
            });
        let n = by_container.len() as u64;
        let names: Vec<String> = by_container
            .keys()
            .map(|id| {
                container_label(report, Some(id))
                    .map(|l| l.trim_start_matches("container ").to_string())
                    .unwrap_or_else(|| crate::catalog::short_id(id).to_string())
            })
            .collect();
        let tag = report
            .containers
            .iter()
            .find(|c| c.image.id.as_deref() == Some(img))
            .and_then(|c| c.image.tags.first().cloned())
            .unwrap_or_else(|| crate::catalog::short_digest(img).to_string());
        let layer = Some(diff.to_string());
        let created_by = instr.get(diff).cloned().flatten();
        out.push(Advice {
            kind: "layer".into(),
            container: None,
            message: format!(
                "every container of {tag} ({}) copied up files of {}: {} copy-ups ({}, {} in \
                 total, {} files and {} per container): restructure that layer (keep the files \
                 that change at run time out of it, in a volume or a layer of their own) or \
                 flatten it",
                names.join(", "),
                layer_phrase(report, &layer, &created_by),
                total.files,
                fmt_bytes(total.bytes),
                fmt_ns(total.total_ns),
                total.files / n,
                fmt_ns(total.total_ns / n),
            ),
            target: tag,
            numbers: BTreeMap::from([
                ("containers".into(), n),
                ("files".into(), total.files),
                ("bytes".into(), total.bytes),
                ("total_ns".into(), total.total_ns),
            ]),
            cause: None,
            layer,
            instruction: created_by,
            containers: names,
        });
    }
    out
}

fn container_label(report: &Report, id: Option<&str>) -> Option<String> {
    let id = id?;
    let c = report.containers.iter().find(|c| c.id == id)?;
    Some(format!("container {}", c.display_name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::event::OverlayKey;
    use crate::{
        attribute::Attribution,
        bpf::event::{Cause, CopyUp, FileKind},
        report::{fixtures::empty_report, LookupLatency, Lookups},
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

    /// What a runtime copies up while setting containers up (outside them,
    /// often directories, once on the init layer's mount and once on the
    /// container's own) is no container's doing: no advice.
    #[test]
    fn runtime_setup_and_directories_are_not_repeated_advice() {
        let mut agg = Aggregator::new(100);
        for (c, dev) in [("a", 1), ("a", 2), ("b", 3), ("c", 4)] {
            let mut dir = ev("etc", 0, 100);
            dir.kind = FileKind::Dir;
            dir.overlay = OverlayKey::dev_only(dev);
            agg.add(&dir, &attr(c), None);
            let mut hosts = ev("etc/hosts", 10, 100);
            hosts.overlay = OverlayKey::dev_only(dev);
            let outside = Attribution {
                outside: true,
                ..attr(c)
            };
            agg.add(&hosts, &outside, None);
        }
        // The same container twice (two of its overlays) counts once.
        for (c, dev) in [("a", 1), ("a", 2), ("b", 3), ("c", 4)] {
            let mut e = ev("app/state.json", 5, 100);
            e.overlay = OverlayKey::dev_only(dev);
            agg.add(&e, &attr(c), None);
        }
        let a = advise(&agg, &empty_report());
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].target, "/app/state.json");
        assert_eq!(a[0].numbers["containers"], 3);
    }

    /// A runtime's metadata copy-up from the same layer as a container's
    /// chown storm (dockerd's `etc`) stays out of the storm's advice.
    #[test]
    fn runtime_setup_is_not_part_of_a_metadata_storm() {
        let mut agg = Aggregator::new(100);
        let own = in_layer("a", 4);
        for i in 0..METADATA_MIN_FILES {
            let mut e = ev(&format!("srv/static/f{i}"), 10, 2);
            e.cause = Cause::Metadata;
            agg.add(&e, &own, None);
        }
        let mut etc = ev("etc", 10, 0);
        etc.cause = Cause::Metadata;
        agg.add(
            &etc,
            &Attribution {
                outside: true,
                ..own.clone()
            },
            None,
        );
        let a = advise(&agg, &empty_report());
        let storm = a
            .iter()
            .find(|a| a.kind == "build")
            .expect("a storm's advice");
        assert_eq!(storm.target, "/srv/static");
        assert_eq!(storm.numbers["files"], METADATA_MIN_FILES);
    }

    /// A report with container web-1 (layer 2: `COPY file:… in
    /// /var/lib/app/`) and, for `twins`, a second container of its image.
    fn web_report(twins: bool) -> (Report, String, String) {
        let mut r = crate::report::fixtures::golden_report();
        r.advice.clear();
        let web = r.containers[0].id.clone();
        let mut other = r.containers[0].clone();
        other.id = "9".repeat(64);
        other.name = Some("web-2".into());
        if twins {
            r.containers.push(other.clone());
        }
        (r, web, other.id)
    }

    fn in_layer(c: &str, layer: usize) -> Attribution {
        Attribution {
            container: Some(c.into()),
            layer: Some(layer),
            outside: false,
        }
    }

    fn with(cause: Cause, comm: &str, e: CopyUp) -> CopyUp {
        CopyUp {
            cause,
            comm: comm.into(),
            ..e
        }
    }

    #[test]
    fn metadata_storm_advises_build_time_not_a_volume() {
        let (r, web, _) = web_report(false);
        let mut agg = Aggregator::new(10_000);
        agg.add(
            &with(Cause::Parent, "chown", ev("srv", 0, 500)),
            &in_layer(&web, 2),
            None,
        );
        for i in 0..METADATA_MIN_FILES + 10 {
            agg.add(
                &with(
                    Cause::Metadata,
                    "chown",
                    ev(&format!("srv/static/f{i}"), 1000, 2000),
                ),
                &in_layer(&web, 2),
                None,
            );
        }
        let a = advise(&agg, &r);
        assert_eq!(a.len(), 1, "{a:#?}");
        let a = &a[0];
        assert_eq!(a.kind, "build");
        assert_eq!(a.cause, Some(Cause::Metadata));
        assert_eq!(a.target, "/srv/static");
        assert_eq!(a.numbers["files"], 30);
        assert_eq!(a.numbers["bytes"], 30_000);
        assert_eq!(a.numbers["total_ns"], 60_000);
        assert_eq!(a.layer.as_deref(), Some("sha256:ab12cd34ef56aa"));
        assert!(a.instruction.as_deref().unwrap().contains("COPY file:"));
        for needle in [
            "container web-1",
            "chown",
            "30 files under /srv/static",
            "COPY --chown",
            "layer 1/2 ab12cd34ef56 (`COPY file:01344f2ea10c… in /var/lib/app/`)",
            "to save 60.0µs and 29.3 KiB per container",
        ] {
            assert!(a.message.contains(needle), "{needle}: {}", a.message);
        }
        // Below the threshold: nothing.
        let mut small = Aggregator::new(100);
        for i in 0..METADATA_MIN_FILES - 1 {
            small.add(
                &with(Cause::Metadata, "chmod", ev(&format!("d/f{i}"), 1, 1)),
                &in_layer(&web, 2),
                None,
            );
        }
        assert!(advise(&small, &r).is_empty());
    }

    #[test]
    fn large_file_opened_for_writing_advises_a_volume_for_it() {
        let (r, web, _) = web_report(false);
        let mut agg = Aggregator::new(100);
        agg.add(
            &with(
                Cause::Write,
                "app",
                ev("var/lib/app/catalog.db", 16 << 20, 896_000_000),
            ),
            &in_layer(&web, 2),
            None,
        );
        // A truncating open of a large file copies nothing: no advice.
        agg.add(
            &with(Cause::Truncate, "app", ev("var/lib/app/big.log", 0, 1000)),
            &in_layer(&web, 2),
            None,
        );
        // Small writes: no advice.
        agg.add(
            &with(Cause::Write, "app", ev("var/lib/app/small", 10, 1000)),
            &in_layer(&web, 2),
            None,
        );
        let a = advise(&agg, &r);
        assert_eq!(a.len(), 1, "{a:#?}");
        let a = &a[0];
        assert_eq!((a.kind.as_str(), a.cause), ("volume", Some(Cause::Write)));
        assert_eq!(a.target, "/var/lib/app/catalog.db");
        assert_eq!(a.numbers["bytes"], 16 << 20);
        assert_eq!(a.numbers["total_ns"], 896_000_000);
        assert_eq!(a.container.as_deref(), Some(web.as_str()));
        for needle in [
            "16.0 MiB",
            "896.00ms",
            "COPY file:01344f2ea10c…",
            "on a volume",
        ] {
            assert!(a.message.contains(needle), "{needle}: {}", a.message);
        }
    }

    #[test]
    fn truncating_opens_get_no_advice() {
        let (r, web, _) = web_report(false);
        let mut agg = Aggregator::new(10_000);
        for i in 0..VOLUME_MIN_FILES * 2 {
            agg.add(
                &with(Cause::Truncate, "sh", ev(&format!("var/log/f{i}"), 0, 1000)),
                &in_layer(&web, 2),
                None,
            );
        }
        assert!(advise(&agg, &r).is_empty());
    }

    #[test]
    fn package_managers_at_run_time_advise_the_image_build() {
        let (r, web, _) = web_report(false);
        let mut agg = Aggregator::new(100);
        for (p, comm) in [
            ("var/lib/dpkg/status", "dpkg"),
            ("var/lib/dpkg/available", "dpkg"),
            ("etc/passwd", "useradd"),
        ] {
            agg.add(
                &with(Cause::Write, comm, ev(p, 5000, 7000)),
                &in_layer(&web, 3),
                None,
            );
        }
        let a = advise(&agg, &r);
        assert_eq!(a.len(), 1, "{a:#?}");
        let a = &a[0];
        assert_eq!(a.kind, "build");
        assert_eq!(a.target, "/var/lib/dpkg");
        assert_eq!(a.numbers["files"], 2);
        assert_eq!(a.numbers["total_ns"], 14_000);
        assert_eq!(a.layer.as_deref(), Some("sha256:0123456789ab"));
        for needle in [
            "dpkg wrote into the image",
            "2 files under /var/lib/dpkg",
            "move that step into the image build",
            "imported or squashed",
        ] {
            assert!(a.message.contains(needle), "{needle}: {}", a.message);
        }
    }

    #[test]
    fn a_layer_every_container_copies_up_from_advises_restructuring() {
        let (r, web, web2) = web_report(true);
        let mut agg = Aggregator::new(10_000);
        for (i, c) in [&web, &web2].into_iter().enumerate() {
            for f in 0..LAYER_MIN_FILES {
                let mut e = with(
                    Cause::Write,
                    "app",
                    ev(&format!("var/lib/app/f{f}"), 100, 1000),
                );
                e.overlay = OverlayKey::dev_only(50 + i as u32);
                agg.add(&e, &in_layer(c, 2), None);
            }
        }
        let a = advise(&agg, &r);
        let layer: Vec<&Advice> = a.iter().filter(|a| a.kind == "layer").collect();
        assert_eq!(layer.len(), 1, "{a:#?}");
        let l = layer[0];
        assert_eq!(l.target, "shop/api:2.3");
        assert_eq!(l.containers, vec!["web-1", "web-2"]);
        assert_eq!(l.numbers["containers"], 2);
        assert_eq!(l.numbers["files"], 2 * LAYER_MIN_FILES);
        assert_eq!(l.layer.as_deref(), Some("sha256:ab12cd34ef56aa"));
        for needle in [
            "every container of shop/api:2.3 (web-1, web-2)",
            "20 files and 20.0µs per container",
            "restructure that layer",
        ] {
            assert!(l.message.contains(needle), "{needle}: {}", l.message);
        }
        // One container of the image did not copy up from it: no advice.
        let (r1, _, _) = web_report(true);
        let mut one = Aggregator::new(10_000);
        for f in 0..LAYER_MIN_FILES {
            one.add(
                &with(Cause::Write, "app", ev(&format!("x/f{f}"), 1, 1)),
                &in_layer(&web, 2),
                None,
            );
        }
        assert!(advise(&one, &r1).iter().all(|a| a.kind != "layer"));
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
