//! The zset type. (Skeleton. MERGE NOTE: take the sorted-set work's version of this
//! file whole; it has the `iter` added here for SORT, same signature.)

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ZSetValue {
    items: Vec<Bytes>,
}

impl ZSetValue {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Members with their scores in score order. (Stub with the same signature as
    /// the sorted-set work's, which replaces this file; SORT uses it.)
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, f64)> + '_ {
        self.items.iter().map(|m| (m, 0.0))
    }

    pub fn encoding(&self) -> &'static str {
        "listpack"
    }

    pub fn mem_usage(&self) -> usize {
        self.items.iter().map(|b| b.len() + 16).sum()
    }

    /// Commands that recreate this value under `key` (AOF rewrite, COPY-free replay).
    pub fn rewrite_commands(&self, _key: &Bytes) -> Vec<Vec<Bytes>> {
        Vec::new()
    }
}
