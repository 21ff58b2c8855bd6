//! Command-line definitions (clap derive). Parsing only: no side effects here.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{bpf::probe::ProbeMode, catalog::RuntimeRoots};

#[derive(Debug, Parser)]
#[command(
    name = "ovltrace",
    version,
    about = "Trace overlayfs copy-ups and lookups, attributed to containers and image layers",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the probes, trace until Ctrl-C or --duration, then print a report.
    Run(RunArgs),
    /// Check what this kernel supports and which attach plan `run` would use.
    Doctor(DoctorArgs),
    /// Print the layer stack of every running container.
    Layers(LayersArgs),
    /// Re-render a saved JSON report, or merge several (from one host or many) into one.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stop after this long (e.g. 30s, 5m, 1h30m); default: until SIGINT/SIGTERM.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also write the report as JSON to FILE (written atomically; never through a symlink).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Attach strategy.
    #[arg(long, value_enum, default_value_t = ProbeMode::Auto)]
    pub probe: ProbeMode,
    /// Kernel ring buffer size in bytes (rounded up to a power of two pages).
    #[arg(long, default_value_t = 4 << 20, value_parser = parse_ringbuf_size)]
    pub ring_buffer_size: u32,
    /// Files to list: the N with the most copy-up time plus the N with the
    /// most bytes (and as many layers); 0 lists every file the tracer kept.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Only trace these containers (name or id prefix; repeatable).
    #[arg(long = "container", value_name = "NAME|ID")]
    pub containers: Vec<String>,
    /// Also print a summary of every interval of this length (live mode).
    #[arg(short, long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Colour in the terminal report.
    #[arg(long, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
    /// Serve Prometheus metrics at http://ADDR/metrics while tracing. ADDR is
    /// HOST:PORT (e.g. 0.0.0.0:9435), or PORT / :PORT for 127.0.0.1.
    #[arg(long, value_name = "ADDR", value_parser = crate::exporter::parse_listen_addr)]
    pub prometheus: Option<std::net::SocketAddr>,
    /// Write DIR/ovltrace.prom for node_exporter's textfile collector, every 15 s
    /// and at the end (atomically; never through a symlink).
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<PathBuf>,
    #[command(flatten)]
    pub docker: DockerArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    /// When standard output is a terminal.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[arg(long, value_enum, default_value_t = ProbeMode::Auto)]
    pub probe: ProbeMode,
}

#[derive(Debug, Args)]
pub struct LayersArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub docker: DockerArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Reports written by `ovltrace run --json`; several are merged into one.
    #[arg(required = true, value_name = "FILE.json")]
    pub files: Vec<PathBuf>,
    /// Print the (merged) report as JSON on standard output instead of the terminal report.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report to OUT.html (atomically; never through a symlink).
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
    /// Hot-spot tables of N files each (by total time, by bytes), and the N
    /// costliest layers by time plus N by bytes, as `run` prints them; 0 keeps
    /// everything in the inputs.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Only these containers (name or id prefix; repeatable).
    #[arg(long = "container", value_name = "NAME|ID")]
    pub containers: Vec<String>,
    /// Colour in the terminal report.
    #[arg(long, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
}

#[derive(Debug, Args, Clone, Default)]
pub struct DockerArgs {
    /// Docker's data root (default: data-root from /etc/docker/daemon.json,
    /// then what mountinfo shows, then /var/lib/docker).
    #[arg(long, value_name = "DIR")]
    pub docker_root: Option<PathBuf>,
    /// containers/storage's graph root of Podman or CRI-O (default: graphroot
    /// from /etc/containers/storage.conf, /var/lib/containers/storage, and
    /// the roots mountinfo shows). containerd's roots are found in mountinfo.
    #[arg(long, value_name = "DIR")]
    pub podman_root: Option<PathBuf>,
}

impl DockerArgs {
    pub fn roots(&self) -> RuntimeRoots {
        RuntimeRoots {
            docker: self.docker_root.clone(),
            podman: self.podman_root.clone(),
        }
    }
}

/// Parses durations like `500ms`, `30s`, `5m`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number, e.g. 30s, 5m, 1h"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (use ms, s, m or h)"
                ))
            }
        };
        total = total.saturating_add(part);
    }
    if total.is_zero() {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    Ok(total)
}

fn parse_ringbuf_size(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number of bytes"))?;
    if !(4096..=(1 << 30)).contains(&n) {
        return Err(format!("ring buffer size {n} out of range (4096 to 1 GiB)"));
    }
    Ok(n.next_power_of_two())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn ringbuf_size_rounds_up() {
        assert_eq!(parse_ringbuf_size("5000"), Ok(8192));
        assert!(parse_ringbuf_size("100").is_err());
        assert!(parse_ringbuf_size("lots").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
