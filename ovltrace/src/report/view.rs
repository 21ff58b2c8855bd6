//! What the human outputs (terminal, live view, HTML) show of a report,
//! derived from the model in one place so that they agree: sums over the
//! report, layer labels, kinds and drops in plain words.
//!
//! Nothing here escapes: the strings may hold untrusted text, and each
//! renderer passes them through its own policy in `crate::text`.

use std::collections::BTreeMap;

use super::{Container, CopyUpFile, Drops, LayerInfo, Lookups, Mount, Report};

/// Sums over the whole report (saturating: a report read back from a file
/// may hold anything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub copy_ups: u64,
    pub bytes: u64,
    pub total_ns: u64,
    /// Copy-ups by kind (`regular`, `dir`, ...).
    pub by_kind: BTreeMap<String, u64>,
    pub lookups: u64,
    pub not_found: u64,
    /// The largest p99 copy-up latency of any mount.
    pub max_p99_ns: u64,
}

impl Summary {
    pub fn of(r: &Report) -> Self {
        let mut s = Summary::default();
        for m in &r.mounts {
            let t = &m.copy_up;
            s.copy_ups = s.copy_ups.saturating_add(t.count);
            s.bytes = s.bytes.saturating_add(t.bytes);
            s.total_ns = s.total_ns.saturating_add(t.total_ns);
            s.max_p99_ns = s.max_p99_ns.max(t.latency_ns.p99);
            for (k, &n) in &t.by_kind {
                let v = s.by_kind.entry(k.clone()).or_default();
                *v = v.saturating_add(n);
            }
        }
        for l in &r.lookups {
            s.lookups = s.lookups.saturating_add(l.count);
            s.not_found = s.not_found.saturating_add(l.not_found);
        }
        s
    }
}

/// A file kind as a reader says it: `regular` is a "file".
pub fn kind_word(kind: &str) -> &str {
    match kind {
        "regular" => "file",
        k => k,
    }
}

/// "2 files, 1 directory": copy-ups by kind, files first, directories
/// apart (empty when the kinds are not known: reports before schema 3).
pub fn kinds_text(by_kind: &BTreeMap<String, u64>) -> String {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut parts = Vec::new();
    for (kind, one, many) in [
        ("regular", "file", "files"),
        ("dir", "directory", "directories"),
        ("symlink", "symlink", "symlinks"),
        ("other", "other", "others"),
    ] {
        // Files and directories always (once kinds are known), the others
        // when seen.
        let always = !by_kind.is_empty() && (kind == "regular" || kind == "dir");
        match by_kind.get(kind).copied().unwrap_or(0) {
            0 if !always => {}
            n => parts.push(plural(n, one, many)),
        }
    }
    parts.join(", ")
}

/// The first 12 hex digits of a digest, as `docker` shows ids.
pub fn short_digest(d: &str) -> String {
    crate::catalog::short_digest(d).to_string()
}

/// How many image layers a container has (its init layer is not one).
pub fn image_layers(c: &Container) -> usize {
    c.layers.iter().filter(|l| !l.init).count()
}

/// A container's layer as every output names it: "init layer", or its
/// number in `docker history` order of the image's layers and its short
/// diff-id ("2/5 ab12cd34ef56": the second layer from the top of five).
pub fn layer_label(c: &Container, l: &LayerInfo) -> String {
    if l.init {
        return "init layer".into();
    }
    let n = l.number.map_or("?".to_string(), |n| n.to_string());
    let diff = l.diff_id.as_deref().map_or("?".to_string(), short_digest);
    format!("{n}/{} {diff}", image_layers(c))
}

/// The source layer of a hot spot: [`layer_label`] in a container, "lower
/// N" (its N-th lower directory) in an overlay of no container, "-" when
/// unknown.
pub fn file_layer_label(r: &Report, f: &CopyUpFile) -> String {
    let Some(src) = &f.layer else {
        return "-".into();
    };
    let container = f
        .container
        .as_deref()
        .and_then(|id| r.containers.iter().find(|c| c.id == id));
    match container.and_then(|c| Some((c, c.layers.iter().find(|l| l.index == src.index)?))) {
        Some((c, l)) => layer_label(c, l),
        None => format!("lower {}", src.index),
    }
}

/// What a mount's lookups walk through: "2 image layers and the init
/// layer" for a container, "3 lower layers" for an overlay of no container.
pub fn lookup_depth(r: &Report, l: &Lookups) -> String {
    let container = l
        .container
        .as_deref()
        .and_then(|id| r.containers.iter().find(|c| c.id == id));
    let layers =
        |n: usize, what: &str| format!("{n} {what} layer{}", if n == 1 { "" } else { "s" });
    match container {
        Some(c) => {
            let image = layers(image_layers(c), "image");
            if c.layers.iter().any(|l| l.init) {
                format!("{image} and the init layer")
            } else {
                image
            }
        }
        None => layers(l.layers, "lower"),
    }
}

/// The events lost, in plain words, each with its count (only those that
/// happened).
pub fn drop_reasons(d: &Drops) -> Vec<(u64, &'static str)> {
    [
        (
            d.ringbuf_full,
            "copy-ups not recorded: the buffer between kernel and ovltrace was full \
             (a larger --ring-buffer-size helps)",
        ),
        (
            d.lost_returns,
            "copy-ups whose end the kernel did not report (too many at once for kretprobes)",
        ),
        (
            d.inflight_full,
            "operations not timed: too many were running at once",
        ),
        (d.decode_errors, "events ovltrace could not read"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .collect()
}

/// What the LAYER column's "N/M id" means, for a legend.
pub const LAYER_LEGEND: &str = "LAYER N/M ID: the N-th of the image's M layers from the top, as \
     `docker history` lists them, and the start of its diff-id (`docker image inspect`, RootFS.Layers)";

/// The containers a report has something to say about: copy-ups or lookups.
pub fn active_containers(r: &Report) -> impl Iterator<Item = &Container> {
    r.containers.iter().filter(|c| {
        c.copy_up.count > 0
            || r.lookups
                .iter()
                .any(|l| l.container.as_deref() == Some(&c.id))
    })
}

/// A container's root file system mounted here (same device, host and
/// mount point).
fn is_containers_root(r: &Report, m: &Mount) -> bool {
    r.containers
        .iter()
        .any(|c| c.dev == m.dev && c.host == m.host && Some(&c.mountpoint) == m.mountpoint.as_ref())
}

/// The overlays of no container with copy-ups or lookups (a container's
/// root, or its init layer's mount, whose copy-ups are the container's, are
/// not among them).
pub fn plain_overlays(r: &Report) -> Vec<&Mount> {
    r.mounts
        .iter()
        .filter(|m| {
            let owned = m.container.is_some() || is_containers_root(r, m);
            !owned
                && (m.copy_up.count > 0
                    || r.lookups
                        .iter()
                        .any(|l| l.dev == m.dev && l.host == m.host && l.container.is_none()))
        })
        .collect()
}

/// Copy-ups of no container that no overlay section (`plain`) shows: how
/// many, and those of them the report lists.
pub fn unattributed<'a>(r: &'a Report, plain: &[&Mount]) -> (u64, Vec<&'a CopyUpFile>) {
    let shown = plain
        .iter()
        .fold(0u64, |a, m| a.saturating_add(m.copy_up.count));
    let hidden = r.counters.unattributed.saturating_sub(shown);
    let files = r
        .copy_ups
        .iter()
        .filter(|f| {
            f.container.is_none() && !plain.iter().any(|m| m.dev == f.dev && m.host == f.host)
        })
        .collect();
    (hidden, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_counted_apart() {
        let m = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        assert_eq!(
            kinds_text(&m(&[("regular", 3), ("dir", 1)])),
            "3 files, 1 directory"
        );
        assert_eq!(kinds_text(&m(&[("dir", 2)])), "0 files, 2 directories");
        assert_eq!(
            kinds_text(&m(&[("regular", 1), ("symlink", 2)])),
            "1 file, 0 directories, 2 symlinks"
        );
        assert_eq!(kinds_text(&BTreeMap::new()), "");
        assert_eq!(kind_word("regular"), "file");
        assert_eq!(kind_word("dir"), "dir");
    }

    #[test]
    fn drops_in_plain_words() {
        let d = Drops {
            ringbuf_full: 2,
            decode_errors: 1,
            ..Default::default()
        };
        let words: Vec<String> = drop_reasons(&d)
            .into_iter()
            .map(|(n, w)| format!("{n} {w}"))
            .collect();
        assert_eq!(
            words,
            [
                "2 copy-ups not recorded: the buffer between kernel and ovltrace was full \
                 (a larger --ring-buffer-size helps)",
                "1 events ovltrace could not read"
            ]
        );
        assert!(drop_reasons(&Drops::default()).is_empty());
    }
}
