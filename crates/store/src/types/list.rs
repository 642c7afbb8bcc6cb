//! The list type. (Skeleton. MERGE NOTE: take the list work's version of this file
//! whole; it has the `iter`/`push_back` added here for SORT, same signatures.)

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListValue {
    items: Vec<Bytes>,
}

impl ListValue {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Elements head to tail. (Same signature as the list work's, which replaces
    /// this stub; SORT uses it.)
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Bytes> + ExactSizeIterator + '_ {
        self.items.iter()
    }

    /// (Same signature as the list work's; SORT … STORE uses it.)
    pub fn push_back(&mut self, v: Bytes) {
        self.items.push(v);
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
