//! hashes commands (to be filled in by the collections work).

use crate::command::CommandSpec;

pub fn commands() -> Vec<CommandSpec> {
    Vec::new()
}
