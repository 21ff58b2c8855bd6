//! ovltrace: why are writes inside containers slow?
//!
//! Modules, lowest first; a module uses only those listed before it
//! (`ovltrace/tests/module_direction.rs` checks this):
//! - `sys`: kernel and file-system facts: BTF offsets, mountinfo, privileges, safe reads.
//! - `text`: the one policy for untrusted text, per output.
//! - `units`: durations and sizes for people.
//! - `hdr`: histogram construction and serialisation.
//! - `bpf`: probes (fentry or kprobe), loading, maps, event decoding.
//! - `catalog`: overlay instance -> mount, container, image, layers; one resolver per runtime.
//! - `attribute`: event -> mount, container and layer, through the catalog.
//! - `aggregate`: totals, histograms and hot spots.
//! - `report`: the report model built from the aggregate, advice, merging saved reports.
//! - `render`: terminal, live view, top view, HTML, Prometheus.
//! - `exporter`: the live Prometheus endpoint and textfile.
//! - `trace`: a running trace session, its event loop and its filters.
//! - `cli`: the flags of every subcommand.
//! - `commands`: `run` (and the command it runs), `top`, `doctor`, `layers`, `report`:
//!   thin, they wire the stages.
//!
//! Tests: hermetic ones (no root, daemon, network or installed tool) next to
//! the code and in `ovltrace/tests/`; those that need a VM, root, Docker or
//! another runtime, Chromium or promtool in the workspace's `tests/` crate,
//! with its one helper library (docs/testing.md).

pub mod aggregate;
pub mod attribute;
pub mod bpf;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod exporter;
pub mod hdr;
pub mod render;
pub mod report;
pub mod sys;
pub mod text;
pub mod trace;
pub mod units;
