//! `ovltrace run`: trace until a signal, the deadline or the end of CMD,
//! then report.

use std::{io::IsTerminal, path::Path, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use tokio::signal::unix::SignalKind;

use super::child::{self, Outcome};
use crate::{
    cli::{ColorMode, FilterArgs, RunArgs},
    exporter::{Exporter, SnapshotRequest},
    render::{
        self,
        terminal::{self, Style},
    },
    report::{json, Filters, Report},
    sys::{self, privilege},
    trace::{Options, Session, Window},
};

pub fn main(args: RunArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

async fn run(args: RunArgs) -> Result<ExitCode> {
    sys::require_root()?;
    // The JSON output fails fast too (a symlink, a missing directory).
    if let Some(p) = &args.json {
        json::check_target(p)?;
    }
    // Metrics outputs fail fast (port in use, no such directory).
    let mut exporter = Exporter::prepare(args.prometheus, args.textfile.as_deref()).await?;
    let (mut session, streams) = Session::start(Options {
        probe: args.probe.probe,
        ring_buffer_size: args.probe.ring_buffer_size,
        filters: filter_spec(&args.filters),
        top: args.top,
        interval: args.interval,
        top_view: None,
        // CMD may write to the terminal.
        status_line: args.command.is_empty(),
        roots: args.docker.roots(),
    })?;
    let outcome = Outcome::default();
    let stop = match stop_condition(&args, &mut session, &outcome)? {
        Ok(stop) => stop,
        Err(code) => return Ok(code),
    };
    // Everything that needs privileges (attaching, opening maps, listening
    // sockets) is done above this line; from here on only what the trace
    // needs is kept (see sys/privilege.rs).
    let outputs: Vec<&Path> = args
        .json
        .as_deref()
        .into_iter()
        .chain(exporter.textfile())
        .collect();
    drop_privileges(&mut session, &outputs);
    // Consumers of live reports (Prometheus) send requests here.
    let (snapshot_tx, snapshot_rx) = tokio::sync::mpsc::channel::<SnapshotRequest>(16);
    // Started once privileges are dropped (its writer threads inherit that).
    let exporter_tasks = exporter.start(&snapshot_tx);
    if args.command.is_empty() {
        eprintln!(
            "Tracing overlayfs copy-ups and lookups ({} probes{})... Hit Ctrl-C to end.",
            session.strategy(),
            args.duration
                .map(|d| format!(", for {}", humantime(d)))
                .unwrap_or_default()
        );
    }
    let style = style_of(args.color);
    let report = session.run(streams, snapshot_rx, style, stop).await?;
    drop(exporter_tasks);
    if let Some(line) = render::filters_line(&report) {
        println!("{line}");
    }
    print!("{}", terminal::render_styled(&report, style));
    write_outputs(&report, args.json.as_deref(), &exporter)?;
    if args.command.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    Ok(match outcome.status() {
        Some(s) => ExitCode::from(child::exit_code(s)),
        // Not waited for (see the warning): no status to pass on.
        None => ExitCode::FAILURE,
    })
}

/// What ends the trace. With `-- CMD`, CMD is started here, now that the
/// probes are attached, and its exit ends the trace; it is started before
/// the privilege drop, which is ovltrace's alone. `Err(code)`: CMD could
/// not be started (the error is printed).
fn stop_condition(
    args: &RunArgs,
    session: &mut Session,
    outcome: &Outcome,
) -> Result<std::result::Result<Stop, ExitCode>> {
    if args.command.is_empty() {
        return Ok(Ok(Box::pin(stop_signal(args.duration)?)));
    }
    let shown = child::quoted(&args.command);
    eprintln!(
        "Tracing overlayfs copy-ups and lookups ({} probes) while {} runs...",
        session.strategy(),
        crate::text::terminal(&shown)
    );
    let window = Window::starting_now();
    let cmd = match child::spawn(&args.command) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ovltrace: error: {:#}", e.error);
            return Ok(Err(ExitCode::from(e.code)));
        }
    };
    session.limit_to(window.clone(), shown);
    Ok(Ok(Box::pin(cmd.supervise(
        args.duration,
        window,
        outcome.clone(),
    )?)))
}

/// What ends a trace.
type Stop = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

fn style_of(color: ColorMode) -> Style {
    Style {
        color: match color {
            ColorMode::Always => true,
            ColorMode::Never => false,
            ColorMode::Auto => std::io::stdout().is_terminal(),
        },
    }
}

/// The filter flags as the trace takes them.
pub(crate) fn filter_spec(f: &FilterArgs) -> Filters {
    Filters {
        containers: f.containers.clone(),
        images: f.images.clone(),
        comms: f.comms.clone(),
        min_latency_ns: f
            .min_latency
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        ..Filters::default()
    }
}

/// Completes on SIGINT, SIGTERM or after `duration`.
pub(crate) fn stop_signal(
    duration: Option<Duration>,
) -> Result<impl std::future::Future<Output = ()>> {
    let mut sigterm =
        tokio::signal::unix::signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint =
        tokio::signal::unix::signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    Ok(async move {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
            _ = sleep => {}
        }
    })
}

pub(crate) fn drop_privileges(session: &mut Session, outputs: &[&Path]) {
    let base = privilege::base_keep(outputs);
    match privilege::drop_privileges(base, &mut || session.maps_readable()) {
        Ok(d) => log::info!("capabilities dropped; kept: {}", d.names()),
        Err(e) => {
            let w = format!("capabilities not dropped: {e:#}");
            log::warn!("{w}");
            session.warn(w);
        }
    }
}

/// Writes the JSON report and the final textfile. Every output is attempted
/// even when an earlier one fails.
fn write_outputs(report: &Report, json_path: Option<&Path>, exporter: &Exporter) -> Result<()> {
    let json = match json_path {
        Some(path) => json::to_string(report).and_then(|text| {
            json::write_atomic(path, text.as_bytes())
                .with_context(|| format!("writing the JSON report to {}", path.display()))?;
            eprintln!("JSON report written to {}", path.display());
            Ok(())
        }),
        None => Ok(()),
    };
    let textfile = exporter.finish(report);
    json.and(textfile)
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{s}s")
    }
}
