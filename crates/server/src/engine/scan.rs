//! SCAN over every master with one cursor: the index of the master being walked
//! in the low bits, that master's own cursor above them. A walk covers the
//! masters in address order, one after the other; like any SCAN it guarantees
//! every key present for the whole walk is returned, as long as the set of
//! masters does not change meanwhile (a slot moved mid-walk may be seen twice or
//! missed, as with a cluster client walking each master itself).

/// Low bits that hold the master's index: up to 1024 masters.
const MASTER_BITS: u32 = 10;
const MASTER_MASK: u64 = (1 << MASTER_BITS) - 1;

/// (master index, that master's cursor) of a client's cursor.
pub fn split(cursor: u64) -> (usize, u64) {
    ((cursor & MASTER_MASK) as usize, cursor >> MASTER_BITS)
}

/// The client's cursor for `master_cursor` on master `index`; `None` if the
/// master's cursor is too large to carry (Redis's cursors stay far below).
pub fn join(index: usize, master_cursor: u64) -> Option<u64> {
    (index as u64 <= MASTER_MASK && master_cursor <= u64::MAX >> MASTER_BITS)
        .then_some(master_cursor << MASTER_BITS | index as u64)
}

/// The cursor to give back after master `index` of `masters` answered `next`:
/// its next page, the next master's first page, or 0 when the walk is over.
pub fn next_cursor(index: usize, masters: usize, next: u64) -> Option<u64> {
    match next {
        0 if index + 1 < masters => join(index + 1, 0),
        0 => Some(0),
        n => join(index, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_walk_the_masters_in_turn() {
        assert_eq!(split(0), (0, 0));
        let c = join(2, 12345).unwrap();
        assert_eq!(split(c), (2, 12345));
        assert_eq!(join(1024, 1), None);
        assert_eq!(join(0, u64::MAX), None);
        assert_eq!(next_cursor(0, 3, 0), Some(1));
        assert_eq!(next_cursor(2, 3, 0), Some(0));
        assert_eq!(split(next_cursor(1, 3, 77).unwrap()), (1, 77));
    }
}
