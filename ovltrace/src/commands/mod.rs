//! The subcommands: thin, they wire the stages together.

mod child;
pub mod doctor;
pub mod layers;
pub mod report;
pub mod run;
pub mod top;
