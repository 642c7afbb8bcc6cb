//! Merging the replies of a keyspace-wide command sent to every master.

use tidewire_resp::Reply;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Merge {
    /// Counts add up (DBSIZE).
    Sum,
    /// Every master did the same thing (FLUSHALL, SCRIPT LOAD): the first reply.
    First,
    /// Arrays joined (KEYS).
    Concat,
    /// Any master's answer that is not nil (RANDOMKEY).
    AnyNonNull,
    /// Arrays of 0/1, 1 where every master answered 1 (SCRIPT EXISTS).
    AllTrue,
    /// The smallest integer (WAIT: replicas that acknowledged, on every master);
    /// for arrays, the smallest at each position (WAITAOF: `[local, replicas]`).
    Min,
}

/// One reply from the masters' replies; the first error wins over everything.
pub fn merge(how: Merge, replies: Vec<Reply>) -> Reply {
    if let Some(error) = replies.iter().find(|r| r.is_error()) {
        return error.clone();
    }
    match how {
        Merge::Sum => Reply::Int(
            replies
                .iter()
                .map(|r| match r {
                    Reply::Int(n) => *n,
                    _ => 0,
                })
                .sum(),
        ),
        Merge::First => replies.into_iter().next().unwrap_or(Reply::Null),
        Merge::Concat => Reply::Array(
            replies
                .into_iter()
                .flat_map(|r| match r {
                    Reply::Set(items) => items,
                    other => other.into_array().unwrap_or_default(),
                })
                .collect(),
        ),
        Merge::AnyNonNull => replies
            .into_iter()
            .find(|r| !matches!(r, Reply::Null | Reply::NullArray))
            .unwrap_or(Reply::Null),
        Merge::Min if replies.iter().any(|r| matches!(r, Reply::Array(_))) => {
            let answers: Vec<Vec<Reply>> = replies
                .into_iter()
                .map(|r| r.into_array().unwrap_or_default())
                .collect();
            let len = answers.iter().map(Vec::len).min().unwrap_or(0);
            Reply::Array(
                (0..len)
                    .map(|i| min_int(answers.iter().map(|a| a[i].clone())))
                    .collect(),
            )
        }
        Merge::Min => min_int(replies),
        Merge::AllTrue => {
            let answers: Vec<Vec<Reply>> = replies
                .into_iter()
                .map(|r| r.into_array().unwrap_or_default())
                .collect();
            let len = answers.iter().map(Vec::len).max().unwrap_or(0);
            let all = |i: usize| {
                answers
                    .iter()
                    .all(|a| matches!(a.get(i), Some(Reply::Int(n)) if *n != 0))
            };
            Reply::Array((0..len).map(|i| Reply::Int(all(i) as i64)).collect())
        }
    }
}

/// The smallest of the integer replies (nil when there is none).
fn min_int(replies: impl IntoIterator<Item = Reply>) -> Reply {
    replies
        .into_iter()
        .filter_map(|r| match r {
            Reply::Int(n) => Some(n),
            _ => None,
        })
        .min()
        .map_or(Reply::Null, Reply::Int)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges() {
        assert!(matches!(
            merge(Merge::Sum, vec![Reply::Int(2), Reply::Int(3)]),
            Reply::Int(5)
        ));
        let keys = merge(
            Merge::Concat,
            vec![
                Reply::bulks(["a"]),
                Reply::Array(vec![]),
                Reply::bulks(["b", "c"]),
            ],
        );
        assert_eq!(keys.into_array().map(|k| k.len()), Some(3));
        assert!(matches!(
            merge(Merge::AnyNonNull, vec![Reply::Null, Reply::bulk_str("k")]),
            Reply::Bulk(_)
        ));
        assert!(matches!(
            merge(Merge::AnyNonNull, vec![Reply::Null]),
            Reply::Null
        ));
        assert!(matches!(
            merge(Merge::First, vec![Reply::ok(), Reply::error("ERR x")]),
            Reply::Error(e) if e == "ERR x"
        ));
        let ints = |v: &[i64]| Reply::Array(v.iter().map(|n| Reply::Int(*n)).collect());
        let exists = merge(Merge::AllTrue, vec![ints(&[1, 1, 0]), ints(&[1, 0, 0])]);
        assert_eq!(exists, ints(&[1, 0, 0]));
        assert_eq!(
            merge(Merge::Min, vec![Reply::Int(2), Reply::Int(1)]),
            Reply::Int(1)
        );
        // WAITAOF: `[local, replicas]` per master, the least of each.
        assert_eq!(
            merge(Merge::Min, vec![ints(&[1, 2]), ints(&[0, 3])]),
            ints(&[0, 2])
        );
    }
}
