//! Events read from the kernel's ring buffer and not yet attributed.
//!
//! During a burst of copy-ups the session only copies each record's used part
//! here (a few hundred bytes, into memory touched up front so that a storm
//! does not page-fault the tracer); decoding, attribution and aggregation run
//! once the burst is over, when the buffer is half full, or when anything
//! needs the aggregates. On a busy CPU that keeps the tracer's work out of the
//! storm it measures; every event is still counted.

use crate::bpf::event;

/// Size of the staging buffer (about 80,000 copy-ups of a short path).
pub const STAGING_BYTES: usize = 16 << 20;

/// Records, each a little-endian u32 length and that many bytes.
#[derive(Debug, Default)]
pub struct Staging {
    buf: Vec<u8>,
    /// Bytes in use.
    used: usize,
}

const LEN: usize = size_of::<u32>();

impl Staging {
    /// A buffer of `bytes`, every page written once now.
    pub fn new(bytes: usize) -> Self {
        // Every byte written now, and not zeros: zeroed memory comes from
        // calloc, whose pages are mapped at their first write (in a storm).
        let buf = vec![0xa5u8; bytes];
        Staging { buf, used: 0 }
    }

    /// Copies the part of `record` the decoder reads; `false` (nothing
    /// copied) when it does not fit.
    pub fn push(&mut self, record: &[u8]) -> bool {
        let part = event::used_part(record);
        let Ok(n) = u32::try_from(part.len()) else {
            return false;
        };
        let end = self.used + LEN + part.len();
        if end > self.buf.len() {
            return false;
        }
        self.buf[self.used..self.used + LEN].copy_from_slice(&n.to_le_bytes());
        self.buf[self.used + LEN..end].copy_from_slice(part);
        self.used = end;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// More than half the buffer is in use: time to attribute.
    pub fn over_half(&self) -> bool {
        self.used > self.buf.len() / 2
    }

    /// The records, oldest first.
    pub fn records(&self) -> Records<'_> {
        Records {
            rest: &self.buf[..self.used],
        }
    }

    /// Forgets every record (the memory stays).
    pub fn clear(&mut self) {
        self.used = 0;
    }
}

pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.rest.split_first_chunk::<LEN>()?;
        let n = u32::from_le_bytes(*len) as usize;
        let (record, rest) = rest.split_at_checked(n)?;
        self.rest = rest;
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::event::tests::raw_event;

    #[test]
    fn keeps_records_in_order_and_decodable() {
        let mut s = Staging::new(8192);
        let a = raw_event(&[b"etc", b"passwd"], 0o100644, 0);
        let b = raw_event(&[b"srv", b"static", b"asset-1.css"], 0o100644, 0);
        assert!(s.push(&a));
        assert!(s.push(&b));
        assert!(s.push(&[1, 2, 3]));
        assert_eq!(s.records().count(), 3);
        let got: Vec<&[u8]> = s.records().collect();
        assert_eq!(got.len(), 3);
        assert_eq!(event::decode(got[0]).unwrap().path, b"etc/passwd");
        assert_eq!(event::decode(got[0]), event::decode(&a));
        assert_eq!(
            event::decode(got[1]).unwrap().path,
            b"srv/static/asset-1.css"
        );
        // Garbage stays garbage: the decoder says what is wrong with it.
        assert_eq!(got[2], &[1, 2, 3]);
        assert!(event::decode(got[2]).is_err());
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.records().count(), 0);
    }

    #[test]
    fn refuses_what_does_not_fit_and_says_when_half_full() {
        let rec = raw_event(&[b"f"], 0o100644, 0);
        let one = LEN + event::used_part(&rec).len();
        let mut s = Staging::new(one * 4);
        assert!(s.push(&rec) && s.push(&rec));
        assert!(!s.over_half());
        assert!(s.push(&rec));
        assert!(s.over_half());
        assert!(s.push(&rec));
        assert!(!s.push(&rec), "a fifth record does not fit in four");
        assert_eq!(s.records().count(), 4);
        assert!(Staging::default().records().next().is_none());
        assert!(!Staging::default().push(&rec));
    }
}
