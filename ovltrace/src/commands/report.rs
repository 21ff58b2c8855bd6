//! `ovltrace report FILE.json [FILE.json ...]`: re-render a saved report, or
//! merge several (see [`super::merge`]) and render the result.

use std::{io::Write as _, process::ExitCode};

use anyhow::{anyhow, Context, Result};

use crate::cli::{ColorMode, ReportArgs};
use crate::render::{html, terminal};
use crate::report::{filter, json, merge, Report};

/// The inputs, merged when several, narrowed to `--container` and cut to
/// `--top` as `run` cuts them.
fn read(args: &ReportArgs) -> Result<Report> {
    let reports = args
        .files
        .iter()
        .map(|p| json::load(p))
        .collect::<Result<Vec<Report>>>()?;
    // The tables an input was cut to (0: not cut); a merge of cut inputs
    // cannot rank more files than the least of them listed.
    let cut_to = reports
        .iter()
        .map(|r| r.hot_spots.top)
        .filter(|&t| t > 0)
        .min()
        .unwrap_or(0);
    let mut report = if reports.len() == 1 {
        reports.into_iter().next().context("no report")?
    } else {
        merge::merge(&reports, None).map_err(|e| {
            let name = args
                .files
                .get(e.input)
                .map(|p| crate::text::terminal(&p.display().to_string()))
                .unwrap_or_default();
            anyhow!("{name}: {e}")
        })?
    };
    filter::keep_containers(&mut report, &args.containers)?;
    let top = match (args.top, cut_to) {
        (0, _) => 0,
        (n, 0) => n,
        (n, t) => n.min(t),
    };
    if top != report.hot_spots.top || !args.containers.is_empty() {
        merge::cut(&mut report, top);
    }
    Ok(report)
}

pub fn main(args: ReportArgs) -> Result<ExitCode> {
    let report = read(&args)?;
    if let Some(out) = &args.html {
        json::write_atomic(out, html::render(&report).as_bytes())
            .with_context(|| format!("writing the HTML report to {}", out.display()))?;
        eprintln!("ovltrace: wrote {}", out.display());
    }
    let mut stdout = std::io::stdout().lock();
    let text = if args.json {
        let mut s = json::to_string(&report)?;
        s.push('\n');
        s
    } else {
        let color = match args.color {
            ColorMode::Auto => std::io::IsTerminal::is_terminal(&stdout),
            ColorMode::Always => true,
            ColorMode::Never => false,
        };
        // As `run` printed it: what the trace was limited to, first.
        let mut text = crate::render::filters_line(&report)
            .map(|l| l + "\n")
            .unwrap_or_default();
        text.push_str(&terminal::render_styled(&report, terminal::Style { color }));
        text
    };
    // A closed pipe (`| head`) is not an error worth a message.
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.context("writing to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}
