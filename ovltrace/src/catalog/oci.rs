//! OCI / Docker image metadata, the one reading of it for every runtime's
//! resolver: image configs (diff-ids, chain-ids, history), which history entry
//! describes which layer, manifests and indexes, digests.

use std::{collections::HashMap, sync::Arc};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::sys::safe_fs::is_hex64;

/// What an image config says about its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    /// Base layer first.
    pub diff_ids: Vec<String>,
    /// Chain ids computed from `diff_ids`, same positions.
    pub chain_ids: Vec<String>,
    /// Non-empty-layer history entries, base first: `(created_by, comment)`.
    pub history: Vec<(String, Option<String>)>,
}

impl ImageMeta {
    /// Position (1 = base) of the layer with this chain id.
    pub fn position_of_chain(&self, chain: &str) -> Option<usize> {
        self.chain_ids
            .iter()
            .position(|c| c == chain)
            .map(|k| k + 1)
    }

    /// A warning when a container mounts another number of image layers
    /// than the image has.
    pub fn layer_count_warning(&self, container: &str, mounted: usize) -> Option<String> {
        (self.diff_ids.len() != mounted).then(|| {
            format!(
                "container {container}: {mounted} image layers mounted but the image has {}",
                self.diff_ids.len()
            )
        })
    }
}

/// Parsed image configs by digest: content-addressed, so parsed once.
#[derive(Debug, Default)]
pub struct ConfigCache(HashMap<String, Arc<ImageMeta>>);

impl ConfigCache {
    /// The config with this digest: cached, else `read` and parsed (`what`
    /// names it in warnings). `None` when it cannot be read or parsed.
    pub fn get(
        &mut self,
        digest: &str,
        what: &str,
        warnings: &mut Vec<String>,
        read: impl FnOnce(&mut Vec<String>) -> Option<Vec<u8>>,
    ) -> Option<Arc<ImageMeta>> {
        if let Some(m) = self.0.get(digest) {
            return Some(m.clone());
        }
        let data = read(warnings)?;
        match parse_image_config(what, &data, warnings) {
            Ok(m) => {
                let m = Arc::new(m);
                self.0.insert(digest.to_string(), m.clone());
                Some(m)
            }
            Err(e) => {
                warnings.push(e);
                None
            }
        }
    }

    /// Whether the config with this digest has been parsed.
    pub fn contains(&self, digest: &str) -> bool {
        self.0.contains_key(digest)
    }
}

#[derive(Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
    #[serde(default)]
    history: Vec<HistoryEntry>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct HistoryEntry {
    #[serde(default)]
    created_by: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    empty_layer: bool,
}

/// Parses an image config; a mismatch of history and layers is a warning.
pub fn parse_image_config(
    what: &str,
    data: &[u8],
    warnings: &mut Vec<String>,
) -> Result<ImageMeta, String> {
    let cfg: ImageConfig =
        serde_json::from_slice(data).map_err(|e| format!("{what}: invalid image config: {e}"))?;
    if let Some(bad) = cfg.rootfs.diff_ids.iter().find(|d| !is_digest(d)) {
        return Err(format!("{what}: invalid diff-id {bad:?}"));
    }
    let history: Vec<(String, Option<String>)> = cfg
        .history
        .into_iter()
        .filter(|h| !h.empty_layer)
        .map(|h| (h.created_by.unwrap_or_default(), h.comment))
        .collect();
    if !history.is_empty() && history.len() != cfg.rootfs.diff_ids.len() {
        warnings.push(format!(
            "{what}: {} non-empty history entries for {} layers; instructions matched from the base up",
            history.len(),
            cfg.rootfs.diff_ids.len()
        ));
    }
    Ok(ImageMeta {
        chain_ids: chain_ids(&cfg.rootfs.diff_ids),
        diff_ids: cfg.rootfs.diff_ids,
        history,
    })
}

/// A manifest or an index (manifest list), as far as resolving needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// The config blob's digest.
    Image { config: String },
    /// Child manifests' digests.
    Index { manifests: Vec<String> },
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

/// Parses a manifest or index; digests are checked to be `sha256:<hex>`.
pub fn parse_manifest(data: &[u8]) -> Result<Manifest, String> {
    let m: RawManifest =
        serde_json::from_slice(data).map_err(|e| format!("invalid manifest: {e}"))?;
    if let Some(list) = m.manifests {
        let manifests: Vec<String> = list
            .into_iter()
            .map(|d| d.digest)
            .filter(|d| is_digest(d))
            .collect();
        return Ok(Manifest::Index { manifests });
    }
    match m.config {
        Some(c) if is_digest(&c.digest) => Ok(Manifest::Image { config: c.digest }),
        Some(c) => Err(format!("invalid config digest {:?}", c.digest)),
        None => Err("neither a manifest nor an index".into()),
    }
}

/// `sha256:<64 lowercase hex>`.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_hex64)
}

pub fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// ChainID(L1) = DiffID(L1); ChainID(Ln) = sha256("<ChainID(Ln-1)> <DiffID(Ln)>").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!("sha256:{}", sha256_hex(format!("{parent} {d}").as_bytes())),
        };
        out.push(next);
    }
    out
}

/// Fills the image-derived fields of a layer at `position` (1 = base): its
/// diff-id, chain-id and instruction, when the image agrees that this
/// position holds the layer (the layer's diff-id and chain-id, where the
/// runtime's own store gave them, are the image's there).
pub fn describe_layer(img: &ImageMeta, position: usize, l: &mut super::LayerInfo) -> bool {
    let Some(k) = position.checked_sub(1) else {
        return false;
    };
    let (Some(diff), Some(chain)) = (img.diff_ids.get(k), img.chain_ids.get(k)) else {
        return false;
    };
    if l.diff_id.as_deref().is_some_and(|d| d != diff)
        || l.chain_id.as_deref().is_some_and(|c| c != chain)
    {
        return false;
    }
    l.diff_id = Some(diff.clone());
    l.chain_id = Some(chain.clone());
    // No history entry for the layer (an image squashed or written by a
    // tool that keeps none): known to have no instruction, which the human
    // outputs say, unlike an unknown one (None).
    let (created_by, comment) = img.history.get(k).cloned().unwrap_or_default();
    l.created_by = Some(created_by);
    l.comment = comment;
    true
}

/// Runs the parsers on anything (fuzzing).
#[doc(hidden)]
pub fn fuzz_parsers(data: &[u8]) {
    let mut w = Vec::new();
    let _ = parse_image_config("fuzz", data, &mut w);
    let _ = parse_manifest(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_formula() {
        // Values from a real Docker 20.10 layer store.
        let d = [
            "sha256:a3a563b680271ef238fd5179160ed86977b4fe60d5394d4b61806da680e0b8d2".to_string(),
            "sha256:fb06e46a9e4cd90d7be4477da65e4ea0afa8aabdd1ed0602ac87d44265665080".to_string(),
        ];
        assert_eq!(
            chain_ids(&d),
            [
                d[0].clone(),
                "sha256:02ec8731688b0f6c51434cc0daf46e8ef87e92fa750b8b04e0c9d1fd4b5c3284"
                    .to_string()
            ]
        );
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn manifests_and_indexes() {
        let d = format!("sha256:{}", "a".repeat(64));
        let m = format!(r#"{{"schemaVersion":2,"config":{{"digest":"{d}"}},"layers":[]}}"#);
        assert_eq!(
            parse_manifest(m.as_bytes()),
            Ok(Manifest::Image { config: d.clone() })
        );
        let i = format!(r#"{{"manifests":[{{"digest":"{d}"}},{{"digest":"md5:x"}}]}}"#);
        assert_eq!(
            parse_manifest(i.as_bytes()),
            Ok(Manifest::Index { manifests: vec![d] })
        );
        assert!(parse_manifest(br#"{"config":{"digest":"../x"}}"#).is_err());
        assert!(parse_manifest(b"{}").is_err());
        assert!(parse_manifest(b"[").is_err());
    }

    #[test]
    fn configs() {
        let d0 = format!("sha256:{}", "0".repeat(64));
        let cfg = format!(
            r#"{{"rootfs":{{"diff_ids":["{d0}"]}},"history":[{{"created_by":"a"}},{{"created_by":"ENV","empty_layer":true}}]}}"#
        );
        let mut w = Vec::new();
        let m = parse_image_config("x", cfg.as_bytes(), &mut w).unwrap();
        assert!(w.is_empty());
        assert_eq!(m.history, vec![("a".to_string(), None)]);
        assert_eq!(m.position_of_chain(&d0), Some(1));
        assert!(parse_image_config("x", br#"{"rootfs":{"diff_ids":["x"]}}"#, &mut w).is_err());
        fuzz_parsers(b"\xff");
    }
    #[test]
    fn layers_of_an_image_without_history_are_known_to_have_none() {
        let d0 = format!("sha256:{}", "0".repeat(64));
        let d1 = format!("sha256:{}", "1".repeat(64));
        // A squashed image with no history at all, as some tools write them.
        let cfg = format!(r#"{{"rootfs":{{"diff_ids":["{d0}","{d1}"]}}}}"#);
        let mut w = Vec::new();
        let img = parse_image_config("x", cfg.as_bytes(), &mut w).unwrap();
        let mut l = super::super::LayerInfo::default();
        assert!(describe_layer(&img, 2, &mut l));
        assert_eq!(l.diff_id.as_deref(), Some(d1.as_str()));
        assert_eq!(l.created_by.as_deref(), Some(""));
        assert_eq!(
            crate::catalog::instruction::display(l.created_by.as_deref(), 60),
            crate::catalog::instruction::NO_HISTORY
        );
    }
}
