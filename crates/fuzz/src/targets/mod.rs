//! One module per kind of input; each exposes its [`crate::Target`] constants.

pub mod ably_codec;
pub mod capability;
pub mod dump_payload;
pub mod rdb_value;
pub mod resp_reply;
pub mod resp_request;
pub mod token;
pub mod upstash_body;

use crate::driver::Target;

/// Every target, in the order the long run goes through them.
pub const ALL: &[&Target] = &[
    &resp_request::STREAM,
    &resp_request::ROUNDTRIP,
    &resp_reply::DECODE,
    &resp_reply::ROUNDTRIP,
    &ably_codec::JSON,
    &ably_codec::MSGPACK,
    &upstash_body::TARGET,
    &token::JWT,
    &token::TOKEN_REQUEST,
    &capability::TARGET,
    &dump_payload::TARGET,
    &rdb_value::TARGET,
];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<&'static Target> {
    ALL.iter().copied().find(|t| t.name == name)
}
