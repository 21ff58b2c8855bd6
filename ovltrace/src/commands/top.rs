//! `ovltrace top`: a live view of the hottest containers and files, redrawn
//! every interval until Ctrl-C or --duration.
//!
//! A subcommand of its own, as filetop and `docker stats` are: it owns the
//! screen while it runs and prints no report at the end (`run -i` prints a
//! summary per interval and the report; `top` shows the trace so far).

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::run::{drop_privileges, filter_spec, stop_signal};
use crate::{
    cli::TopArgs,
    render::{terminal::Style, top},
    sys,
    trace::{Options, Session},
};

pub fn main(args: TopArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

async fn run(args: TopArgs) -> Result<ExitCode> {
    sys::require_root()?;
    let rows = args.rows.map(|n| n.max(1));
    let (mut session, streams) = Session::start(Options {
        probe: args.probe.probe,
        ring_buffer_size: args.probe.ring_buffer_size,
        filters: filter_spec(&args.filters),
        // Enough files for the table.
        top: rows.unwrap_or(0).max(50),
        interval: Some(args.interval),
        top_view: Some(top::Options { rows }),
        status_line: false,
        roots: args.docker.roots(),
    })?;
    let stop = stop_signal(args.duration)?;
    drop_privileges(&mut session, &[]);
    // As `run` says it: scripts wait for this line.
    eprintln!(
        "Tracing overlayfs copy-ups and lookups ({} probes)... Hit Ctrl-C to end.",
        session.strategy()
    );
    // No live reports are requested: the sender is dropped at once.
    let (_, snapshot_rx) = tokio::sync::mpsc::channel(1);
    session
        .run(streams, snapshot_rx, Style::default(), stop)
        .await?;
    Ok(ExitCode::SUCCESS)
}
