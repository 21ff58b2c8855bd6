//! A read-only reader of bbolt database files (the key/value store containerd
//! keeps its metadata in), working on an in-memory copy of the file.
//!
//! containerd holds its databases open with an exclusive `flock`, so they are
//! never opened as databases here: the file is read into memory (which takes
//! no lock and cannot block containerd) and parsed. The on-disk format:
//!
//! - every page starts with a 16-byte header: `id: u64, flags: u16, count: u16,
//!   overflow: u32` (flags: 0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist;
//!   a page spans `overflow + 1` pages);
//! - pages 0 and 1 are meta pages: `magic 0xED0CDAED, version 2, page_size,
//!   flags, root bucket {root pgid, sequence}, freelist, pgid, txid, checksum`
//!   (FNV-1a 64 of the 56 bytes before the checksum); the valid one with the
//!   higher txid is current;
//! - branch elements: `pos: u32, ksize: u32, pgid: u64`; leaf elements:
//!   `flags: u32, pos: u32, ksize: u32, vsize: u32` with the key at the
//!   element's own offset plus `pos`, and the value right after the key;
//! - a leaf element with flag 0x01 is a nested bucket whose value starts with
//!   `{root pgid, sequence}`; root 0 means an inline bucket whose page follows.
//!
//! Everything is bounds-checked: a corrupt, truncated or hostile file gives an
//! error, never a panic, and traversal is bounded in depth and work.

use std::fmt;

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEM: usize = 16;
const BUCKET_HEADER: usize = 16;
const META_CHECKED: usize = 56;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_FLAG: u32 = 0x01;
/// Deepest tree (pages within pages) walked; real trees are a few levels deep.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoltError {
    #[error("not a bolt database (no valid meta page)")]
    NoMeta,
    #[error("page {0} is outside the file")]
    PageOutOfRange(u64),
    #[error("page {page}: {what}")]
    BadPage { page: u64, what: &'static str },
    #[error("tree deeper than {MAX_DEPTH} levels (a cycle?)")]
    TooDeep,
    #[error("more than {0} elements visited")]
    TooMuchWork(u64),
}

type Result<T> = std::result::Result<T, BoltError>;

/// A parsed database (a private copy of the file).
pub struct Db {
    data: Vec<u8>,
    page_size: usize,
    root: u64,
    txid: u64,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("len", &self.data.len())
            .field("page_size", &self.page_size)
            .field("txid", &self.txid)
            .finish()
    }
}

/// FNV-1a, 64 bit.
fn fnv64a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

struct Meta {
    page_size: usize,
    root: u64,
    txid: u64,
}

/// The meta stored at `off` (the start of page 0 or 1), if it is valid.
fn meta_at(data: &[u8], off: usize) -> Option<Meta> {
    let m = off.checked_add(PAGE_HEADER)?;
    let checked = data.get(m..m.checked_add(META_CHECKED)?)?;
    if u32_at(checked, 0)? != MAGIC || u32_at(checked, 4)? != VERSION {
        return None;
    }
    if fnv64a(checked) != u64_at(data, m + META_CHECKED)? {
        return None;
    }
    let page_size = u32_at(checked, 8)? as usize;
    if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    Some(Meta {
        page_size,
        root: u64_at(checked, 16)?,
        txid: u64_at(checked, 48)?,
    })
}

impl Db {
    /// Parses a copy of a database file.
    pub fn parse(data: Vec<u8>) -> Result<Self> {
        let m0 = meta_at(&data, 0);
        // Page 1 is at the page size page 0 names; if page 0 is torn, try the
        // usual sizes.
        let sizes: Vec<usize> = match &m0 {
            Some(m) => vec![m.page_size],
            None => (12..=16).map(|s| 1usize << s).collect(),
        };
        let m1 = sizes
            .iter()
            .filter_map(|&s| meta_at(&data, s))
            .find(|m| m0.as_ref().is_none_or(|m0| m0.page_size == m.page_size));
        let meta = match (m0, m1) {
            (Some(a), Some(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return Err(BoltError::NoMeta),
        };
        Ok(Self {
            data,
            page_size: meta.page_size,
            root: meta.root,
            txid: meta.txid,
        })
    }

    /// The transaction id of the meta page in use.
    pub fn txid(&self) -> u64 {
        self.txid
    }

    /// The root bucket (whose entries are the top-level buckets).
    pub fn root(&self) -> Bucket<'_> {
        Bucket {
            db: self,
            node: Node::Page(self.root),
        }
    }

    /// A whole page (with its overflow pages), header included.
    fn page(&self, id: u64) -> Result<&[u8]> {
        let start = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .ok_or(BoltError::PageOutOfRange(id))?;
        let head = self
            .data
            .get(start..start.saturating_add(PAGE_HEADER))
            .filter(|h| h.len() == PAGE_HEADER)
            .ok_or(BoltError::PageOutOfRange(id))?;
        let overflow = u32_at(head, 12).ok_or(BoltError::PageOutOfRange(id))? as usize;
        let len = overflow
            .checked_add(1)
            .and_then(|n| n.checked_mul(self.page_size))
            .ok_or(BoltError::PageOutOfRange(id))?;
        self.data
            .get(
                start
                    ..start
                        .checked_add(len)
                        .ok_or(BoltError::PageOutOfRange(id))?,
            )
            .ok_or(BoltError::PageOutOfRange(id))
    }
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Page(u64),
    /// An inline bucket's page (header and elements).
    Inline(&'a [u8]),
}

/// One bucket of the database.
#[derive(Clone, Copy)]
pub struct Bucket<'a> {
    db: &'a Db,
    node: Node<'a>,
}

impl fmt::Debug for Bucket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Node::Page(p) => write!(f, "Bucket(page {p})"),
            Node::Inline(b) => write!(f, "Bucket(inline, {} bytes)", b.len()),
        }
    }
}

/// A bucket entry's value.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    Value(&'a [u8]),
    Bucket(Bucket<'a>),
}

impl<'a> Item<'a> {
    pub fn value(self) -> Option<&'a [u8]> {
        match self {
            Item::Value(v) => Some(v),
            Item::Bucket(_) => None,
        }
    }

    pub fn bucket(self) -> Option<Bucket<'a>> {
        match self {
            Item::Bucket(b) => Some(b),
            Item::Value(_) => None,
        }
    }
}

/// A parsed page: its elements' bytes and where they are.
struct PageView<'a> {
    bytes: &'a [u8],
    flags: u16,
    count: usize,
    id: u64,
}

impl<'a> PageView<'a> {
    fn new(bytes: &'a [u8], id: u64) -> Result<Self> {
        let bad = |what| BoltError::BadPage { page: id, what };
        let flags = u16_at(bytes, 8).ok_or_else(|| bad("truncated header"))?;
        let count = u16_at(bytes, 10).ok_or_else(|| bad("truncated header"))? as usize;
        if flags != BRANCH && flags != LEAF {
            return Err(bad("neither a branch nor a leaf page"));
        }
        if PAGE_HEADER + count * ELEM > bytes.len() {
            return Err(bad("elements beyond the page"));
        }
        Ok(Self {
            bytes,
            flags,
            count,
            id,
        })
    }

    fn bad(&self, what: &'static str) -> BoltError {
        BoltError::BadPage {
            page: self.id,
            what,
        }
    }

    /// Bytes `[elem + pos, elem + pos + len)`.
    fn slice(&self, elem: usize, pos: u32, len: u32) -> Result<&'a [u8]> {
        let start = elem
            .checked_add(pos as usize)
            .ok_or_else(|| self.bad("element out of range"))?;
        let end = start
            .checked_add(len as usize)
            .ok_or_else(|| self.bad("element out of range"))?;
        self.bytes
            .get(start..end)
            .ok_or_else(|| self.bad("element out of range"))
    }

    /// Branch element i: (key, child page).
    fn branch(&self, i: usize) -> Result<(&'a [u8], u64)> {
        let e = PAGE_HEADER + i * ELEM;
        let pos = u32_at(self.bytes, e).ok_or_else(|| self.bad("truncated"))?;
        let ksize = u32_at(self.bytes, e + 4).ok_or_else(|| self.bad("truncated"))?;
        let pgid = u64_at(self.bytes, e + 8).ok_or_else(|| self.bad("truncated"))?;
        Ok((self.slice(e, pos, ksize)?, pgid))
    }

    /// Leaf element i: (flags, key, value).
    fn leaf(&self, i: usize) -> Result<(u32, &'a [u8], &'a [u8])> {
        let e = PAGE_HEADER + i * ELEM;
        let flags = u32_at(self.bytes, e).ok_or_else(|| self.bad("truncated"))?;
        let pos = u32_at(self.bytes, e + 4).ok_or_else(|| self.bad("truncated"))?;
        let ksize = u32_at(self.bytes, e + 8).ok_or_else(|| self.bad("truncated"))?;
        let vsize = u32_at(self.bytes, e + 12).ok_or_else(|| self.bad("truncated"))?;
        let key = self.slice(e, pos, ksize)?;
        let value = self.slice(
            e,
            pos.checked_add(ksize)
                .ok_or_else(|| self.bad("element out of range"))?,
            vsize,
        )?;
        Ok((flags, key, value))
    }
}

impl<'a> Bucket<'a> {
    fn view(&self, node: Node<'a>) -> Result<PageView<'a>> {
        match node {
            Node::Page(id) => PageView::new(self.db.page(id)?, id),
            Node::Inline(b) => PageView::new(b, 0),
        }
    }

    fn item(&self, flags: u32, value: &'a [u8], page: u64) -> Result<Item<'a>> {
        if flags & BUCKET_FLAG == 0 {
            return Ok(Item::Value(value));
        }
        let root = u64_at(value, 0).ok_or(BoltError::BadPage {
            page,
            what: "bucket value shorter than its header",
        })?;
        let node = if root == 0 {
            Node::Inline(value.get(BUCKET_HEADER..).unwrap_or_default())
        } else {
            Node::Page(root)
        };
        Ok(Item::Bucket(Bucket { db: self.db, node }))
    }

    /// The entry with this key.
    pub fn get(&self, key: &[u8]) -> Result<Option<Item<'a>>> {
        let mut node = self.node;
        for _ in 0..MAX_DEPTH {
            let v = self.view(node)?;
            if v.flags == LEAF {
                for i in 0..v.count {
                    let (flags, k, value) = v.leaf(i)?;
                    if k == key {
                        return self.item(flags, value, v.id).map(Some);
                    }
                }
                return Ok(None);
            }
            // Branch: the last child whose first key is <= key.
            let mut child = None;
            for i in 0..v.count {
                let (k, pgid) = v.branch(i)?;
                if i == 0 || k <= key {
                    child = Some(pgid);
                } else {
                    break;
                }
            }
            match child {
                Some(p) => node = Node::Page(p),
                None => return Ok(None),
            }
        }
        Err(BoltError::TooDeep)
    }

    /// The nested bucket with this key (`None` if absent or a plain value).
    pub fn bucket(&self, key: &[u8]) -> Result<Option<Bucket<'a>>> {
        Ok(self.get(key)?.and_then(Item::bucket))
    }

    /// The plain value with this key.
    pub fn value(&self, key: &[u8]) -> Result<Option<&'a [u8]>> {
        Ok(self.get(key)?.and_then(Item::value))
    }

    /// Every entry, in key order. At most `max` entries are visited.
    pub fn entries(&self, max: u64) -> Result<Vec<(&'a [u8], Item<'a>)>> {
        let mut out = Vec::new();
        let mut budget = max;
        self.collect(self.node, 0, &mut out, &mut budget, max)?;
        Ok(out)
    }

    fn collect(
        &self,
        node: Node<'a>,
        depth: usize,
        out: &mut Vec<(&'a [u8], Item<'a>)>,
        budget: &mut u64,
        max: u64,
    ) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(BoltError::TooDeep);
        }
        let v = self.view(node)?;
        for i in 0..v.count {
            *budget = budget.checked_sub(1).ok_or(BoltError::TooMuchWork(max))?;
            if v.flags == LEAF {
                let (flags, k, value) = v.leaf(i)?;
                out.push((k, self.item(flags, value, v.id)?));
            } else {
                let (_, pgid) = v.branch(i)?;
                self.collect(Node::Page(pgid), depth + 1, out, budget, max)?;
            }
        }
        Ok(())
    }
}

/// Writes bolt files for tests (of this reader and of what reads containerd's
/// databases): every bucket a leaf page of its own, or inline, or split over
/// leaves under a branch page.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// A bucket's contents, in any order (sorted when written).
    #[derive(Debug, Clone, Default)]
    pub struct B {
        pub entries: Vec<(Vec<u8>, E)>,
        /// Written inline into its parent (only if it has no sub-buckets).
        pub inline: bool,
        /// Split into leaves of this many entries under a branch page.
        pub split: Option<usize>,
    }

    #[derive(Debug, Clone)]
    pub enum E {
        V(Vec<u8>),
        B(B),
    }

    impl B {
        pub fn new() -> Self {
            Self::default()
        }
        pub fn v(mut self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) -> Self {
            self.entries
                .push((k.as_ref().to_vec(), E::V(v.as_ref().to_vec())));
            self
        }
        pub fn b(mut self, k: impl AsRef<[u8]>, b: B) -> Self {
            self.entries.push((k.as_ref().to_vec(), E::B(b)));
            self
        }
        pub fn inline(mut self) -> Self {
            self.inline = true;
            self
        }
        pub fn split(mut self, n: usize) -> Self {
            self.split = Some(n);
            self
        }
    }

    pub const PAGE: usize = 4096;

    struct W {
        pages: Vec<Vec<u8>>,
    }

    fn header(id: u64, flags: u16, count: usize, len: usize) -> Vec<u8> {
        let overflow = (len.div_ceil(PAGE)).saturating_sub(1) as u32;
        let mut p = Vec::with_capacity(len);
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&flags.to_le_bytes());
        p.extend_from_slice(&(count as u16).to_le_bytes());
        p.extend_from_slice(&overflow.to_le_bytes());
        p
    }

    /// A leaf page's bytes (header id 0 for inline pages).
    fn leaf_bytes(id: u64, items: &[(Vec<u8>, u32, Vec<u8>)]) -> Vec<u8> {
        let n = items.len();
        let mut data = Vec::new();
        let mut elems = Vec::new();
        for (i, (k, flags, v)) in items.iter().enumerate() {
            let elem_off = PAGE_HEADER + i * ELEM;
            let pos = PAGE_HEADER + n * ELEM + data.len() - elem_off;
            elems.extend_from_slice(&flags.to_le_bytes());
            elems.extend_from_slice(&(pos as u32).to_le_bytes());
            elems.extend_from_slice(&(k.len() as u32).to_le_bytes());
            elems.extend_from_slice(&(v.len() as u32).to_le_bytes());
            data.extend_from_slice(k);
            data.extend_from_slice(v);
        }
        let len = PAGE_HEADER + elems.len() + data.len();
        let mut p = header(id, LEAF, n, len);
        p.extend_from_slice(&elems);
        p.extend_from_slice(&data);
        p
    }

    impl W {
        /// Reserves a page id (a run of pages for `len` bytes).
        fn alloc(&mut self) -> u64 {
            self.pages.push(Vec::new());
            (self.pages.len() - 1) as u64
        }

        fn put(&mut self, id: u64, bytes: Vec<u8>) {
            self.pages[id as usize] = bytes;
        }

        /// Writes a bucket; returns its value in the parent (header [+ page]).
        fn bucket(&mut self, b: &B) -> Vec<u8> {
            let mut entries = b.entries.clone();
            entries.sort_by(|x, y| x.0.cmp(&y.0));
            let items: Vec<(Vec<u8>, u32, Vec<u8>)> = entries
                .iter()
                .map(|(k, e)| match e {
                    E::V(v) => (k.clone(), 0, v.clone()),
                    E::B(sub) => (k.clone(), BUCKET_FLAG, self.bucket(sub)),
                })
                .collect();
            let mut value = Vec::new();
            if b.inline {
                value.extend_from_slice(&0u64.to_le_bytes());
                value.extend_from_slice(&0u64.to_le_bytes());
                value.extend_from_slice(&leaf_bytes(0, &items));
                return value;
            }
            let root = self.tree(&items, b.split);
            value.extend_from_slice(&root.to_le_bytes());
            value.extend_from_slice(&0u64.to_le_bytes());
            value
        }

        fn tree(&mut self, items: &[(Vec<u8>, u32, Vec<u8>)], split: Option<usize>) -> u64 {
            match split {
                Some(n) if n > 0 && items.len() > n => {
                    let branch = self.alloc();
                    let mut children = Vec::new();
                    for chunk in items.chunks(n) {
                        let id = self.alloc();
                        self.put(id, leaf_bytes(id, chunk));
                        children.push((chunk[0].0.clone(), id));
                    }
                    let count = children.len();
                    let mut elems = Vec::new();
                    let mut data = Vec::new();
                    for (i, (k, id)) in children.iter().enumerate() {
                        let elem_off = PAGE_HEADER + i * ELEM;
                        let pos = PAGE_HEADER + count * ELEM + data.len() - elem_off;
                        elems.extend_from_slice(&(pos as u32).to_le_bytes());
                        elems.extend_from_slice(&(k.len() as u32).to_le_bytes());
                        elems.extend_from_slice(&id.to_le_bytes());
                        data.extend_from_slice(k);
                    }
                    let mut p = header(
                        branch,
                        BRANCH,
                        count,
                        PAGE_HEADER + elems.len() + data.len(),
                    );
                    p.extend_from_slice(&elems);
                    p.extend_from_slice(&data);
                    self.put(branch, p);
                    branch
                }
                _ => {
                    let id = self.alloc();
                    self.put(id, leaf_bytes(id, items));
                    id
                }
            }
        }
    }

    fn meta(id: u64, root: u64, txid: u64) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&MAGIC.to_le_bytes());
        m.extend_from_slice(&VERSION.to_le_bytes());
        m.extend_from_slice(&(PAGE as u32).to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&root.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes()); // sequence
        m.extend_from_slice(&2u64.to_le_bytes()); // freelist
        m.extend_from_slice(&0u64.to_le_bytes()); // high water mark (patched)
        m.extend_from_slice(&txid.to_le_bytes());
        let sum = fnv64a(&m);
        m.extend_from_slice(&sum.to_le_bytes());
        let mut p = header(id, 0x04, 0, PAGE_HEADER + m.len());
        p.extend_from_slice(&m);
        p
    }

    /// A database file whose root bucket is `root` (its entries must all be
    /// buckets, as in bolt).
    pub fn write(root: &B) -> Vec<u8> {
        let mut w = W {
            pages: vec![Vec::new(), Vec::new(), header(2, 0x10, 0, PAGE_HEADER)],
        };
        let value = w.bucket(&B {
            inline: false,
            ..root.clone()
        });
        let root_pg = u64_at(&value, 0).unwrap_or_default();
        w.pages[0] = meta(0, root_pg, 10);
        w.pages[1] = meta(1, root_pg, 9);
        let mut out = Vec::new();
        for p in &w.pages {
            let mut p = p.clone();
            let len = p.len().max(1).div_ceil(PAGE) * PAGE;
            p.resize(len, 0);
            out.extend_from_slice(&p);
        }
        // Overflowing pages take the ids after them: renumber by padding.
        // (The writer allocates one id per page, so every page must fit one.)
        assert!(
            w.pages.iter().all(|p| p.len() <= PAGE),
            "test database page overflow: use split()"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{write, B};
    use super::*;

    fn db(root: &B) -> Db {
        Db::parse(write(root)).unwrap()
    }

    fn sample() -> B {
        let mut many = B::new().split(7);
        for i in 0..100 {
            many = many.v(format!("k{i:03}"), format!("v{i}"));
        }
        B::new().b(
            "v1",
            B::new()
                .b("inl", B::new().v("a", "1").v("b", "2").inline())
                .b("many", many)
                .b("nested", B::new().b("deeper", B::new().v("x", "y")))
                .v("version", [3u8]),
        )
    }

    #[test]
    fn reads_buckets_values_inline_and_branches() {
        let db = db(&sample());
        let v1 = db.root().bucket(b"v1").unwrap().unwrap();
        assert_eq!(v1.value(b"version").unwrap(), Some(&[3u8][..]));
        let inl = v1.bucket(b"inl").unwrap().unwrap();
        assert_eq!(inl.value(b"b").unwrap(), Some(&b"2"[..]));
        let many = v1.bucket(b"many").unwrap().unwrap();
        let all = many.entries(1000).unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all[42].0, b"k042");
        for i in [0, 6, 7, 50, 99] {
            let k = format!("k{i:03}");
            assert_eq!(
                many.value(k.as_bytes()).unwrap(),
                Some(format!("v{i}").as_bytes()),
                "{k}"
            );
        }
        assert_eq!(many.value(b"k100").unwrap(), None);
        assert_eq!(many.value(b"a").unwrap(), None);
        assert!(many.entries(10).is_err(), "work is bounded");
        let deeper = v1
            .bucket(b"nested")
            .unwrap()
            .unwrap()
            .bucket(b"deeper")
            .unwrap()
            .unwrap();
        assert_eq!(deeper.value(b"x").unwrap(), Some(&b"y"[..]));
        // A value is not a bucket and vice versa.
        assert!(v1.bucket(b"version").unwrap().is_none());
        assert!(v1.value(b"inl").unwrap().is_none());
        assert_eq!(db.txid(), 10);
    }

    #[test]
    fn newest_valid_meta_wins_and_torn_metas_are_skipped() {
        let mut data = write(&sample());
        // Page 0 (txid 10) torn: page 1 (txid 9) is used.
        data[PAGE_HEADER + 20] ^= 0xff;
        let db = Db::parse(data.clone()).unwrap();
        assert_eq!(db.txid(), 9);
        assert!(db.root().bucket(b"v1").unwrap().is_some());
        // Both torn: not a database.
        data[testing::PAGE + PAGE_HEADER + 20] ^= 0xff;
        assert_eq!(Db::parse(data).unwrap_err(), BoltError::NoMeta);
        assert_eq!(Db::parse(Vec::new()).unwrap_err(), BoltError::NoMeta);
        assert_eq!(Db::parse(b"hello".to_vec()).unwrap_err(), BoltError::NoMeta);
    }

    #[test]
    fn corruption_is_an_error_not_a_panic() {
        let good = write(&sample());
        // Truncations anywhere.
        for len in (0..good.len()).step_by(509) {
            if let Ok(db) = Db::parse(good[..len].to_vec()) {
                let _ = walk(db.root(), 0);
            }
        }
        // Every byte of the data pages flipped in turn (bounded).
        for i in (2 * testing::PAGE..good.len()).step_by(61) {
            let mut bad = good.clone();
            bad[i] ^= 0xa5;
            let db = Db::parse(bad).unwrap();
            let _ = walk(db.root(), 0);
        }
        // A branch page pointing at itself.
        let mut cyc = good.clone();
        let db = Db::parse(good).unwrap();
        let root_pg = db.root;
        // Make the root page a branch with one element pointing to itself.
        let off = root_pg as usize * testing::PAGE;
        cyc[off + 8..off + 10].copy_from_slice(&BRANCH.to_le_bytes());
        cyc[off + 10..off + 12].copy_from_slice(&1u16.to_le_bytes());
        cyc[off + 16..off + 20].copy_from_slice(&16u32.to_le_bytes());
        cyc[off + 20..off + 24].copy_from_slice(&0u32.to_le_bytes());
        cyc[off + 24..off + 32].copy_from_slice(&root_pg.to_le_bytes());
        let db = Db::parse(cyc).unwrap();
        assert_eq!(db.root().entries(1 << 20).unwrap_err(), BoltError::TooDeep);
        assert_eq!(db.root().get(b"v1").unwrap_err(), BoltError::TooDeep);
    }

    /// Visits everything, ignoring errors.
    fn walk(b: Bucket<'_>, depth: usize) -> usize {
        let Ok(entries) = b.entries(100_000) else {
            return 0;
        };
        let mut n = entries.len();
        for (k, item) in entries {
            let _ = b.get(k);
            if let (Item::Bucket(sub), true) = (item, depth < 8) {
                n += walk(sub, depth + 1);
            }
        }
        n
    }

    #[test]
    fn fnv() {
        assert_eq!(fnv64a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
