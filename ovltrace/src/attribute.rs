//! Attribution: which overlay mount, container and image layer a decoded
//! copy-up belongs to. The kernel names the overlay instance and the lower
//! layer on the event; this looks up what they are in the [`Catalog`].

use std::{borrow::Cow, collections::HashMap};

use crate::{
    aggregate::Attribution,
    event::{CopyUp, FileKind, OverlayKey},
    mounts,
    report::{KnownContainer, MountMeta},
    resolve::{Catalog, MountEntry, SourceLayer},
};

/// Attribution state of a trace: the catalog of mounts/containers, plus
/// everything seen so far, kept after containers go away so late events and
/// the final report still name them.
pub struct Tracker {
    catalog: Catalog,
    /// The tracer's own mount namespace (inode number; 0 unknown).
    host_mnt_ns: u32,
    /// Overlays already in `mounts`/`containers` (checked once per event).
    recorded: hashbrown::HashSet<OverlayKey, foldhash::fast::RandomState>,
    mounts: HashMap<OverlayKey, MountMeta>,
    containers: HashMap<String, KnownContainer>,
}

impl Tracker {
    pub fn new(catalog: Catalog) -> Self {
        use std::os::unix::fs::MetadataExt;
        let host_mnt_ns = std::fs::metadata("/proc/self/ns/mnt").map_or(0, |m| m.ino() as u32);
        Self {
            catalog,
            host_mnt_ns,
            mounts: HashMap::new(),
            containers: HashMap::new(),
            recorded: Default::default(),
        }
    }

    /// Every overlay mount known during the trace.
    pub fn mounts(&self) -> &HashMap<OverlayKey, MountMeta> {
        &self.mounts
    }

    /// Every container known during the trace.
    pub fn containers(&self) -> impl Iterator<Item = &KnownContainer> {
        self.containers.values()
    }

    /// Rescans mounts and containers.
    pub fn refresh(&mut self) {
        if let Err(e) = self.catalog.refresh() {
            log::warn!("scanning overlay mounts: {e:#}");
        }
        for c in self.containers.values_mut() {
            c.gone = true;
        }
        for e in self.catalog.entries().filter(|e| !e.gone) {
            remember(&mut self.mounts, &mut self.containers, e);
            self.recorded.insert(e.key);
        }
    }

    /// The container and source layer of one copy-up: the kernel names the
    /// overlay instance and the layer; this looks up what they are. The
    /// source layer is borrowed from the catalog (built once per layer).
    pub fn attribute(&mut self, ev: &CopyUp) -> (Attribution, Option<Cow<'_, SourceLayer>>) {
        let Self {
            catalog,
            mounts,
            containers,
            host_mnt_ns,
            recorded,
        } = self;
        let entry = catalog.resolve(&ev.overlay);
        if let Some(e) = entry.as_deref() {
            // Periodic refreshes keep known entries current; only new ones
            // are recorded here (the hot path).
            if !recorded.contains(&e.key) {
                remember(mounts, containers, e);
                recorded.insert(e.key);
            }
        }
        let container = entry.as_deref().and_then(|e| e.container_id.clone());
        let source = ev.source.map(|s| {
            let index = usize::from(s.layer);
            // Only a regular file has data elsewhere (metacopy); a merged
            // directory's deeper entries are not its source.
            let data_index = s
                .data_layer
                .filter(|&d| ev.kind == FileKind::Regular && d != s.layer)
                .map(usize::from);
            (index, data_index)
        });
        let source = match (source, entry) {
            (Some((index, data_index)), Some(e)) => Some(e.source(index, data_index)),
            (Some((index, data_index)), None) => Some(Cow::Owned(SourceLayer {
                index,
                diff_id: None,
                created_by: None,
                data_index,
            })),
            (None, _) => None,
        };
        let attr = Attribution {
            container,
            layer: source.as_ref().map(|s| s.index),
            outside: *host_mnt_ns != 0 && ev.mnt_ns == *host_mnt_ns,
        };
        (attr, source)
    }

    /// Every `--container` must match a running container.
    pub fn check_filters(&self, filters: &[String]) -> anyhow::Result<()> {
        let mut known: Vec<String> = self
            .catalog
            .entries()
            .filter(|e| !e.gone)
            .filter_map(|e| e.container.as_ref())
            .map(|c| format!("{} ({})", c.display_name(), c.short_id()))
            .collect();
        known.sort();
        for f in filters {
            if self.catalog.matching(std::slice::from_ref(f)).is_empty() {
                let list = if known.is_empty() {
                    "no containers are running".to_string()
                } else {
                    format!("running containers: {}", known.join(", "))
                };
                anyhow::bail!("--container {f:?} matches no running container; {list}");
            }
        }
        Ok(())
    }

    /// The overlays of the running containers `filters` match, with the
    /// containers' names.
    pub fn filter_keys(&self, filters: &[String]) -> Vec<(OverlayKey, String)> {
        self.catalog
            .matching(filters)
            .into_iter()
            .map(|e| {
                let name = e.container.as_ref().map_or("?", |c| c.display_name());
                (e.key, name.to_string())
            })
            .collect()
    }
}

fn remember(
    mounts: &mut HashMap<OverlayKey, MountMeta>,
    containers: &mut HashMap<String, KnownContainer>,
    e: &MountEntry,
) {
    if !mounts.contains_key(&e.key) || !e.gone {
        mounts.insert(
            e.key,
            MountMeta {
                container: e.container.as_ref().map(|c| c.id.clone()),
                mountpoint: Some(mounts::path_display(&e.mount.mountpoint)),
                upperdir: e.mount.upperdir.as_deref().map(mounts::path_display),
                lowerdirs: e
                    .mount
                    .lowerdirs
                    .iter()
                    .map(|p| mounts::path_display(p))
                    .collect(),
            },
        );
    }
    if let Some(c) = &e.container {
        containers.insert(
            c.id.clone(),
            KnownContainer {
                info: c.clone(),
                gone: e.gone,
            },
        );
    }
}
