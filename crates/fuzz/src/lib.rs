//! Fuzzing Tidewire's parsers on stable Rust.
//!
//! Each [`Target`] runs the real parsing code on one input and checks invariants
//! beyond "no panic" (round trips, differential parses, signature soundness). The
//! [`driver`] feeds it the committed corpus (`corpus/<target>/`), mutations of it and
//! structured near-valid inputs from a seeded RNG, and holds every input to two
//! bounds: time (the driver's elapsed check, and the [`watchdog`] for inputs that
//! never return) and allocation (the [`alloc_meter`] global allocator counts the
//! bytes one input keeps live; the target's budget is linear in the input's size, so
//! a declared length or count can never become an allocation).
//!
//! `cargo test -p tidewire-fuzz` runs a short, deterministic run of every target;
//! docs/fuzzing.md has the long run.

#![deny(unsafe_code)]

pub mod alloc_meter;
pub mod corpus;
pub mod driver;
pub mod finding;
pub mod mutate;
pub mod targets;
pub mod watchdog;

pub use driver::{Report, Settings, Target};
