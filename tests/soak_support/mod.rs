//! The parts of the soak test (`tests/soak.rs`): the ledger of what clients
//! were told, the regate process under a killer, the images, the workers
//! (pushers, pullers, deleters) and the final checks.

pub mod checks;
pub mod images;
pub mod ledger;
pub mod process;
pub mod workers;
