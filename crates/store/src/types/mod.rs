//! Value types, one module each, with their own unit tests.

pub mod hash;
pub mod list;
pub mod set;
pub mod zset;
