//! RESP2/RESP3 codec for Tidewire.
//!
//! Two halves, no I/O and no server logic:
//! - [`request`]: turns bytes from a client into commands (`Vec<Bytes>`), for both the
//!   multibulk form real clients send and the inline form telnet and redis-benchmark
//!   send. Limits are enforced while parsing so a hostile client cannot make the server
//!   buffer unbounded data; violations come back as [`ProtocolError`] with Redis's text.
//! - [`reply`]: the [`Reply`] value tree handlers produce, encoded for either protocol
//!   version (RESP3 types degrade to their RESP2 shapes the way Redis does);
//!   [`bulk_array`] is its compact form for arrays of strings.
//! - [`decode`]: a reader of that wire form back into a [`Reply`]: strict for the
//!   tests and fuzz targets that check the encoder against it, lossy
//!   ([`decode_lossy`]) for the engine client, which reads another server's replies.

#![forbid(unsafe_code)]

pub mod bulk_array;
pub mod decode;
pub mod reply;
pub mod request;

pub use bulk_array::BulkArray;
pub use decode::{decode, decode_exact, decode_lossy, DecodeError};
pub use reply::{format_double, Protocol, Reply};
pub use request::{encode_command, Limits, ProtocolError, RequestParser};
