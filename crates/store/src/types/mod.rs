//! Value types, one module each, with their own unit tests.

pub mod hash;
pub mod hll;
pub mod json;
pub mod json_path;
pub mod list;
pub mod pack;
pub mod set;
pub mod stream;
pub mod zset;
