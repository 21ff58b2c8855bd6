//! Histograms as they appear in reports: the standard percentiles, log2
//! buckets for display, and the HDR histogram itself (V2 format, DEFLATE,
//! base64) so that reports from many hosts merge without loss.

use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use hdrhistogram::{
    serialization::{Deserializer, Serializer, V2DeflateSerializer},
    Histogram,
};
use serde::{Deserialize, Serialize};

use super::Bucket;
use crate::aggregate::new_histogram;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Hist {
    pub count: u64,
    pub min: u64,
    pub mean: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    /// Non-empty log2 buckets: `count` values were below `le_ns` and at least
    /// half of it.
    pub buckets: Vec<Bucket>,
    /// The HDR histogram (3 significant digits), V2 + DEFLATE, base64.
    pub hdr: String,
}

impl Hist {
    pub fn from_hdr(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Hist::default();
        }
        let mut bytes = Vec::new();
        let hdr = match V2DeflateSerializer::new().serialize(h, &mut bytes) {
            Ok(_) => base64::engine::general_purpose::STANDARD.encode(&bytes),
            Err(e) => {
                log::warn!("serialising a histogram: {e:?}");
                String::new()
            }
        };
        Hist {
            count: h.len(),
            min: h.min(),
            mean: h.mean().round() as u64,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            buckets: log2_buckets(h),
            hdr,
        }
    }

    /// The histogram back from `hdr` (empty when there is none).
    pub fn to_hdr(&self) -> Result<Histogram<u64>> {
        if self.hdr.is_empty() {
            return Ok(new_histogram());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.hdr)
            .context("histogram is not valid base64")?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow!("histogram does not decode: {e:?}"))?;
        let mut out = new_histogram();
        out.add(&h)
            .map_err(|e| anyhow!("histogram out of range: {e:?}"))?;
        Ok(out)
    }
}

/// Counts per power-of-two range, like bcc's log2 histograms.
pub fn log2_buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    let mut counts = [0u64; 65];
    for v in h.iter_recorded() {
        let x = v.value_iterated_to();
        let slot = (64 - x.leading_zeros()) as usize; // x in [2^(slot-1), 2^slot)
        counts[slot] += v.count_at_value();
    }
    counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(slot, &count)| Bucket {
            le_ns: if slot >= 64 { u64::MAX } else { 1u64 << slot },
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::record;

    #[test]
    fn round_trips_losslessly() {
        let mut h = new_histogram();
        for v in [1u64, 10, 1000, 1000, 123_456_789, 5_000_000_000] {
            record(&mut h, v);
        }
        let j = Hist::from_hdr(&h);
        assert_eq!(j.count, 6);
        assert_eq!(j.min, 1);
        assert!(h.equivalent(j.max, 5_000_000_000));
        let back = j.to_hdr().unwrap();
        assert_eq!(back, h);
        // The encoding may differ (array sizing); the contents may not.
        let again = Hist::from_hdr(&back);
        assert_eq!(again.to_hdr().unwrap(), h);
        let no_hdr = |h: Hist| Hist {
            hdr: String::new(),
            ..h
        };
        assert_eq!(no_hdr(again), no_hdr(j));
    }

    #[test]
    fn log2_buckets_count_everything() {
        let mut h = new_histogram();
        for v in [1u64, 2, 3, 1024, 1500, 2047] {
            record(&mut h, v);
        }
        let b = log2_buckets(&h);
        assert_eq!(
            b,
            vec![
                Bucket { le_ns: 2, count: 1 },
                Bucket { le_ns: 4, count: 2 },
                Bucket {
                    le_ns: 2048,
                    count: 3
                }
            ]
        );
    }

    #[test]
    fn empty_and_corrupt() {
        let e = Hist::from_hdr(&new_histogram());
        assert_eq!(e, Hist::default());
        assert!(e.to_hdr().unwrap().is_empty());
        let bad = Hist {
            hdr: "not base64!".into(),
            ..Default::default()
        };
        assert!(bad.to_hdr().is_err());
        let bad = Hist {
            hdr: base64::engine::general_purpose::STANDARD.encode(b"garbage"),
            ..Default::default()
        };
        assert!(bad.to_hdr().is_err());
    }
}
