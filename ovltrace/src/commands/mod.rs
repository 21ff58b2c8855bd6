//! The subcommands: thin, they wire the stages together.

pub mod doctor;
pub mod layers;
pub mod report;
pub mod run;
