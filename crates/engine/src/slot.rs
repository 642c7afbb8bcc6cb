//! Redis Cluster's hash slots: CRC16 (XMODEM: polynomial 0x1021, initial value 0)
//! of the key, or of its hash tag, modulo 16384. The tag is what lies between the
//! first `{` and the next `}` when that is not empty, so `{user1}.a` and
//! `{user1}.b` land in one slot.

/// Slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// The slot a key hashes to.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOT_COUNT
}

/// The part of the key that is hashed: its non-empty `{tag}`, or the whole key.
fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|b| *b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|b| *b == b'}') {
        Some(len) if len > 0 => &key[open + 1..open + 1 + len],
        _ => key,
    }
}

/// CRC16/XMODEM, computed bit by bit: keys are short and a table buys little.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in data {
        crc ^= (*byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        // The CRC16/XMODEM check value, as in the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"a"), 15495);
        assert_eq!(key_slot(b"b"), 3300);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(key_slot(b"{user1}.a"), key_slot(b"user1"));
        assert_eq!(key_slot(b"x{user1}y{z}"), key_slot(b"user1"));
        // An empty tag or an unclosed brace hashes the whole key.
        assert_eq!(hash_tag(b"{}abc"), b"{}abc");
        assert_eq!(hash_tag(b"abc{"), b"abc{");
        assert_eq!(hash_tag(b"a{b"), b"a{b");
        assert_eq!(hash_tag(b"{{x}}"), b"{x");
    }
}
