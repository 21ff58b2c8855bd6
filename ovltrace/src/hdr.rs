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

/// Records `n` values of `v` (as [`record`]).
pub fn record_n(h: &mut Histogram<u64>, v: u64, n: u64) {
    if h.record_n(v, n).is_err() {
        h.saturating_record_n(v, n);
    }
}

/// The counts of a [`new_histogram`] (same buckets: [`SIGFIG`] digits from
/// 1, growing as needed) and nothing else, for the per-event path: recording
/// one value is a few instructions instead of the histogram's ~60 (bounds,
/// min, max and total kept on every call). [`add_to`](Self::add_to) makes
/// them a histogram, the same in all it shows (counts, min, max,
/// percentiles, the serialised form) as one each value was recorded in.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// By the histogram's index, up to (not with) the last one.
    counts: Vec<u64>,
    /// Values of the last index: below u64::MAX, and u64::MAX itself, which
    /// a histogram tells apart (as its maximum).
    top: [u64; 2],
}

// The bucket layout of a histogram of SIGFIG = 3 digits from 1: 2048
// sub-buckets (the smallest power of two above 2 * 10^3), unit 1.
const SUB_BUCKET_MAGNITUDE: u32 = 11;
const HALF_MAGNITUDE: u32 = SUB_BUCKET_MAGNITUDE - 1;
const HALF: usize = 1 << HALF_MAGNITUDE;
const SUB_BUCKET_MASK: u64 = (1 << SUB_BUCKET_MAGNITUDE) - 1;

/// The index of the largest values.
const LAST: usize = Counts::index(u64::MAX);

impl Counts {
    /// The histogram's index of `v`: its bucket (how many powers of two it
    /// is above the first bucket), then its sub-bucket.
    const fn index(v: u64) -> usize {
        let bucket = (64 - SUB_BUCKET_MAGNITUDE) - (v | SUB_BUCKET_MASK).leading_zeros();
        ((bucket as usize + 1) << HALF_MAGNITUDE) + (v >> bucket) as usize - HALF
    }

    /// The lowest value of index `i`.
    fn value(i: usize) -> u64 {
        let bucket = (i >> HALF_MAGNITUDE) as u32;
        let sub = ((i & (HALF - 1)) + HALF) as u64;
        match bucket.checked_sub(1) {
            Some(b) => sub << b,
            None => sub - HALF as u64,
        }
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        let i = Self::index(v);
        match self.counts.get_mut(i) {
            Some(c) => *c = c.saturating_add(1),
            None => self.grow_record(i, v),
        }
    }

    #[cold]
    fn grow_record(&mut self, i: usize, v: u64) {
        if i >= LAST {
            let t = &mut self.top[usize::from(v == u64::MAX)];
            *t = t.saturating_add(1);
            return;
        }
        // Whole buckets, as the histogram grows.
        self.counts.resize(((i | (HALF - 1)) + 1).min(LAST), 0);
        if let Some(c) = self.counts.get_mut(i) {
            *c = 1;
        }
    }

    /// Adds the counts to `h` as adding the histogram of their values
    /// would (their own histogram is made first: a histogram grown by an
    /// addition records another highest trackable value than one grown by
    /// recording, and that value is serialised).
    pub fn add_to(&self, h: &mut Histogram<u64>) {
        let mut whole = new_histogram();
        self.record_into(&mut whole);
        add_histogram(h, &whole);
    }

    fn record_into(&self, h: &mut Histogram<u64>) {
        for (i, &n) in self.counts.iter().enumerate() {
            if n != 0 {
                record_n(h, Self::value(i), n);
            }
        }
        for (v, n) in [(Self::value(LAST), self.top[0]), (u64::MAX, self.top[1])] {
            if n != 0 {
                record_n(h, v, n);
            }
        }
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

    /// Counts make the histogram that recording each value makes, and add
    /// to another as it adds: equal, with the same summary and serialised
    /// form.
    #[test]
    fn counts_make_the_same_histogram() {
        let mut seed = 0x9e37_79b9_u64;
        let mut values: Vec<u64> = vec![
            0,
            1,
            2,
            1023,
            1024,
            2047,
            2048,
            2049,
            4095,
            4096,
            1 << 40,
            (1 << 40) + 12345,
            u64::MAX / 3,
            u64::MAX - 1,
            u64::MAX,
        ];
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Spread over every magnitude.
            values.push((seed >> 11) >> (seed % 53));
        }
        // Random values only; then with the edges (up to u64::MAX - 1,
        // then u64::MAX too).
        let sets = [
            &values[15..],
            &values[15..16],
            &values[..0],
            &values[..1],
            &values[..3],
            &values[..14],
            &values[..15],
            &values[..],
        ];
        let mut other = new_histogram();
        for v in [5u64, 7000, 1 << 20, 1 << 50] {
            record(&mut other, v);
        }
        for set in sets {
            let n = set.len();
            let mut direct = new_histogram();
            let mut counts = Counts::default();
            for &v in set {
                record(&mut direct, v);
                counts.record(v);
            }
            let mut made = new_histogram();
            counts.record_into(&mut made);
            assert_eq!(made, direct, "{n} values");
            assert_eq!(Hist::from_hdr(&made), Hist::from_hdr(&direct), "{n} values");
            assert_eq!(made.min(), direct.min());
            assert_eq!(made.len(), direct.len());
            // Into histograms that already hold values, too.
            for base in [&new_histogram(), &direct, &other] {
                let mut by_counts = base.clone();
                counts.add_to(&mut by_counts);
                let mut by_histogram = base.clone();
                add_histogram(&mut by_histogram, &direct);
                assert_eq!(
                    Hist::from_hdr(&by_counts),
                    Hist::from_hdr(&by_histogram),
                    "{n} values"
                );
            }
        }
        for v in [0u64, 1, 2047, 2048, 3000, 1 << 33, u64::MAX] {
            let h = new_histogram();
            assert_eq!(
                Counts::value(Counts::index(v)),
                h.lowest_equivalent(v),
                "{v}"
            );
        }
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
