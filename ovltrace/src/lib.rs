//! ovltrace: why are writes inside containers slow?
//!
//! Module map (one concept each):
//! - `cli`: command-line definitions.
//! - `btf`: struct offsets from the running kernel's BTF.
//! - `probe`: which attach strategy (fentry or kprobe) works here, and attaching.
//! - `event`: decoding ring-buffer bytes into events.
//! - `mounts`: overlay mounts from /proc/self/mountinfo.
//! - `resolve`: overlay instance -> mount/container/image/layers, one resolver per runtime.
//! - `attribute`: event -> mount, container and layer, through the catalog.
//! - `aggregate`: histograms and hot spots.
//! - `instruction`: image history instructions as Dockerfile lines, for display.
//! - `report`: output formats.
//! - `run`, `doctor`: the subcommands.

pub mod advice;
pub mod aggregate;
pub mod attribute;
pub mod btf;
pub mod cli;
pub mod doctor;
pub mod event;
pub mod exporter;
pub mod instruction;
pub mod layers;
pub mod live;
pub mod module_btf;
pub mod mounts;
pub mod privilege;
pub mod probe;
pub mod report;
pub mod resolve;
pub mod run;
