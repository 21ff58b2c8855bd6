//! `ovltrace report FILE.json [FILE.json ...]`: re-render a saved report, or
//! merge several (see [`super::merge`]) and render the result.

use std::{
    fs,
    io::{Read as _, Write as _},
    path::Path,
    process::ExitCode,
};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::{html, json, merge, terminal, Report, OLDEST_SCHEMA_READ, SCHEMA_VERSION};
use crate::cli::{ColorMode, ReportArgs};

/// Larger than any report ovltrace writes by far; a bigger file is refused
/// before it is read into memory.
const MAX_REPORT_BYTES: u64 = 512 << 20;

/// Reads and parses one report. Every failure is one line naming the file.
pub fn load(path: &Path) -> Result<Report> {
    let name = terminal::sanitize(&path.display().to_string());
    let fail = |what: String| anyhow!("{name}: {what}");
    let file = fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_REPORT_BYTES {
        return Err(fail(format!(
            "larger than {} MiB: not an ovltrace report",
            MAX_REPORT_BYTES >> 20
        )));
    }
    parse(&bytes).map_err(|e| fail(format!("{e:#}")))
}

/// Parses a report, checking its schema version before its fields (a newer
/// schema would otherwise fail on some field with a misleading message).
pub fn parse(bytes: &[u8]) -> Result<Report> {
    #[derive(Deserialize)]
    struct Version {
        schema_version: Option<serde_json::Value>,
    }
    let v: Version =
        serde_json::from_slice(bytes).map_err(|e| anyhow!("not an ovltrace JSON report: {e}"))?;
    let readable = OLDEST_SCHEMA_READ..=SCHEMA_VERSION;
    match v.schema_version {
        None => bail!("not an ovltrace JSON report: no schema_version"),
        Some(serde_json::Value::Number(n))
            if n.as_u64()
                .is_some_and(|n| u32::try_from(n).is_ok_and(|n| readable.contains(&n))) => {}
        Some(other) => {
            bail!(
                "unsupported schema_version {other} (this ovltrace reads {})",
                merge::schemas_read()
            )
        }
    }
    let mut r: Report =
        serde_json::from_slice(bytes).map_err(|e| anyhow!("not an ovltrace JSON report: {e}"))?;
    merge::upgrade(&mut r);
    merge::check_schema(&r)?;
    Ok(r)
}

pub fn main(args: ReportArgs) -> Result<ExitCode> {
    let reports = args
        .files
        .iter()
        .map(|p| load(p))
        .collect::<Result<Vec<Report>>>()?;
    let report = if reports.len() == 1 {
        let mut r = reports.into_iter().next().context("no report")?;
        if let Some(n) = args.top {
            merge::cut(&mut r, n);
        }
        r
    } else {
        merge::merge(&reports, args.top).map_err(|e| {
            let name = args
                .files
                .get(e.input)
                .map(|p| terminal::sanitize(&p.display().to_string()))
                .unwrap_or_default();
            anyhow!("{name}: {e}")
        })?
    };
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
        terminal::render_styled(&report, terminal::Style { color })
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
