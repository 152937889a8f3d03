//! The command-line programs, as library code so that the thin binaries of
//! this crate and of the integration tests run exactly the same thing.

pub mod arborctl;
pub mod arbord;
pub mod demo;
