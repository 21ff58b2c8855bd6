//! Narrowing a saved report to some containers (`ovltrace report
//! --container NAME`).

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use super::{Container, FileCounts, HotSpots, Report};

/// Matches a `--container` filter as `run` does: the exact name, or a
/// prefix of the id.
fn matches(c: &Container, filter: &str) -> bool {
    !filter.is_empty()
        && (c.name.as_deref() == Some(filter.trim_start_matches('/')) || c.id.starts_with(filter))
}

/// Keeps only what belongs to the containers `filters` name: their mounts,
/// files, lookups, advice, and the layers they copied up from (a layer
/// several containers share keeps its totals over all of them). Copy-ups of
/// no container are left out; the file counts become those of the files
/// listed for these containers. An error when a filter matches nothing.
pub fn keep_containers(r: &mut Report, filters: &[String]) -> Result<()> {
    if filters.is_empty() {
        return Ok(());
    }
    for f in filters {
        if !r.containers.iter().any(|c| matches(c, f)) {
            let known: Vec<String> = r
                .containers
                .iter()
                .map(|c| c.display_name().to_string())
                .collect();
            bail!(
                "no container {} in this report (it has: {})",
                crate::text::terminal(f),
                crate::text::terminal(&known.join(", "))
            );
        }
    }
    r.containers
        .retain(|c| filters.iter().any(|f| matches(c, f)));
    let ids: BTreeSet<&str> = r.containers.iter().map(|c| c.id.as_str()).collect();
    let mine = |id: &Option<String>| id.as_deref().is_some_and(|id| ids.contains(id));
    r.mounts.retain(|m| {
        mine(&m.container)
            || r.containers.iter().any(|c| {
                c.dev == m.dev && c.host == m.host && Some(&c.mountpoint) == m.mountpoint.as_ref()
            })
    });
    r.copy_ups.retain(|f| mine(&f.container));
    r.lookups.retain(|l| mine(&l.container));
    r.layers
        .retain(|l| l.containers.iter().any(|c| ids.contains(c.as_str())));
    r.advice.retain(|a| {
        mine(&a.container)
            || r.containers
                .iter()
                .any(|c| c.name.as_ref().is_some_and(|n| a.containers.contains(n)))
    });
    r.counters.unattributed = 0;
    // What the tracer saw of these containers alone is not recorded: their
    // listed files are what is known.
    let listed = r.copy_ups.len() as u64;
    r.files = FileCounts {
        seen: listed,
        kept: listed,
        listed,
        evicted: 0,
    };
    r.hot_spots = HotSpots::rank(&r.copy_ups, r.hot_spots.top);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::golden_report;

    #[test]
    fn keeps_one_containers_part() {
        let mut r = golden_report();
        let plain_files = r.copy_ups.iter().filter(|f| f.container.is_none()).count();
        assert!(plain_files > 0);
        keep_containers(&mut r, &["web-1".into()]).unwrap();
        assert_eq!(r.containers.len(), 1);
        assert!(r.copy_ups.iter().all(|f| f.container.is_some()));
        assert_eq!(r.mounts.len(), 1);
        assert_eq!(r.mounts[0].dev, "0:50");
        assert_eq!(r.hot_spots.by_time.len(), r.copy_ups.len());
        assert_eq!(r.copy_ups.len(), 4);
        assert_eq!(
            r.files,
            FileCounts {
                seen: 4,
                kept: 4,
                listed: 4,
                evicted: 0
            }
        );
        // By id prefix too.
        let mut r = golden_report();
        keep_containers(&mut r, &["3f2a".into()]).unwrap();
        assert_eq!(r.containers.len(), 1);
        let e = keep_containers(&mut golden_report(), &["db".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no container db in this report (it has: web-1)"
        );
    }
}
