//! Histograms as they appear in reports: the standard percentiles, log2
//! buckets for display, and the HDR histogram itself (V2 format, DEFLATE,
//! base64) so that reports from many hosts merge without loss.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use hdrhistogram::{
    serialization::{Deserializer, Serializer, V2DeflateSerializer},
    Histogram,
};
use serde::{Deserialize, Serialize};

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

    /// The histogram back from `hdr` (empty when there is none). `hdr` may
    /// come from a file anyone wrote: sizes are checked before anything is
    /// allocated for them, and malformed data is an error, never a panic.
    pub fn to_hdr(&self) -> Result<Histogram<u64>> {
        if self.hdr.is_empty() {
            return Ok(new_histogram());
        }
        if self.hdr.len() > MAX_HDR_BASE64 {
            bail!(
                "histogram of {} base64 characters is larger than any ovltrace writes ({MAX_HDR_BASE64})",
                self.hdr.len()
            );
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.hdr)
            .context("histogram is not valid base64")?;
        let plain = inflate_v2(&bytes)?;
        // The decoder negates a zig-zag number without checking; catch that
        // (and anything else it might trip over) rather than abort.
        let decoded = std::panic::catch_unwind(|| {
            Deserializer::new().deserialize::<u64, _>(&mut plain.as_slice())
        });
        let h: Histogram<u64> = match decoded {
            Ok(r) => r.map_err(|e| anyhow!("histogram does not decode: {e:?}"))?,
            Err(_) => bail!("histogram does not decode"),
        };
        let mut out = new_histogram();
        out.add(&h)
            .map_err(|e| anyhow!("histogram out of range: {e:?}"))?;
        Ok(out)
    }
}

/// Largest `hdr` accepted: a 3-digit histogram spanning all of u64 has about
/// 100,000 counters, which compress to far less than this.
const MAX_HDR_BASE64: usize = 4 << 20;
/// Largest uncompressed V2 payload accepted.
const MAX_HDR_PLAIN: usize = 16 << 20;
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9314;
/// V2 header: cookie, payload length, normalizing offset, digits, lowest,
/// highest, integer-to-double ratio.
const V2_HEADER: usize = 40;

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Unpacks a V2+DEFLATE histogram into plain V2, checking the lengths its
/// headers claim against the bytes really there, and that no varint in the
/// payload decodes to a value the decoder cannot negate.
fn inflate_v2(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read as _;
    if be_u32(bytes, 0) != Some(V2_DEFLATE_COOKIE) {
        bail!("histogram is not in the V2+DEFLATE format");
    }
    let len = be_u32(bytes, 4).context("histogram header is truncated")? as usize;
    let body = bytes
        .get(8..8usize.saturating_add(len))
        .context("histogram is shorter than its header says")?;
    let mut plain = Vec::new();
    flate2::read::ZlibDecoder::new(body)
        .take(MAX_HDR_PLAIN as u64 + 1)
        .read_to_end(&mut plain)
        .context("histogram does not inflate")?;
    if plain.len() > MAX_HDR_PLAIN {
        bail!("histogram inflates to more than {MAX_HDR_PLAIN} bytes");
    }
    if be_u32(&plain, 0) != Some(V2_COOKIE) {
        bail!("histogram payload is not V2");
    }
    let payload_len = be_u32(&plain, 4).context("histogram header is truncated")? as usize;
    let payload = plain
        .get(V2_HEADER..)
        .and_then(|p| p.get(..payload_len))
        .context("histogram payload is shorter than its header says")?;
    // LEB128 varints of at most 9 bytes (the 9th is taken whole), zig-zag.
    let mut i = 0;
    while i < payload.len() {
        let mut v: u64 = 0;
        let mut n = 0;
        while let Some(&b) = payload.get(i + n) {
            if n == 8 {
                v |= u64::from(b) << 56;
                n += 1;
                break;
            }
            v |= u64::from(b & 0x7f) << (7 * n);
            n += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if v == u64::MAX {
            bail!("histogram payload holds an impossible run length");
        }
        i += n.max(1);
    }
    Ok(plain)
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

/// Significant figures kept by every latency histogram.
pub const SIGFIG: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    // Auto-resizing, so memory follows the largest value seen rather than a
    // preset range. SIGFIG is a valid constant, so this cannot fail.
    let mut h = Histogram::new(SIGFIG).unwrap_or_else(|_| std::process::abort());
    h.auto(true);
    h
}

/// Records `v`, growing the histogram as needed (never clamps).
pub fn record(h: &mut Histogram<u64>, v: u64) {
    if h.record(v).is_err() {
        // Only on allocation failure past u64 range; clamp as a last resort.
        h.saturating_record(v);
    }
}

/// Adds `src`'s counts to `dst` (both auto-resizing, so this cannot run out
/// of range; value by value, saturating, if it ever did).
pub fn add_histogram(dst: &mut Histogram<u64>, src: &Histogram<u64>) {
    if dst.add(src).is_err() {
        for v in src.iter_recorded() {
            dst.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// One log2 bucket: how many values were at most `le_ns`.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Bucket {
    pub le_ns: u64,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::record;
    use super::*;

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
