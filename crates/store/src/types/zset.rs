//! The zset type. (Skeleton: the collections work fills this in.)

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
