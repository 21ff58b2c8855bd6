//! Command-line definitions (clap derive). Parsing only: no side effects here.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{bpf::probe::ProbeMode, catalog::RuntimeRoots};

/// Where the options that few need are listed, after the common ones.
pub const EXPERT: &str = "Expert options";

macro_rules! root_note {
    () => {
        "\
Tracing needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN): run it with sudo.
If it fails, `ovltrace doctor` says what this kernel lacks and what to do."
    };
}

macro_rules! run_examples {
    () => {
        "\
Examples:
  sudo ovltrace run -d 30s                    trace every container for 30 s, then report
  sudo ovltrace run -- docker run --rm myimage
                                              trace while the command runs; exit with its status
  sudo ovltrace run --container web           only the container named web (may start later)
  sudo ovltrace run --image myapp:1.2 --min-latency 10ms
                                              copy-ups of myapp:1.2 containers that took 10 ms or more
  sudo ovltrace run --comm chown -d 1m --json out.json
                                              copy-ups made by chown, also saved as JSON
  sudo ovltrace run -i 5s                     a summary every 5 s, and the report at the end
  sudo ovltrace run --prometheus 9435         serve metrics at http://127.0.0.1:9435/metrics"
    };
}

macro_rules! run_cmd_note {
    () => {
        "\
With `-- CMD ARGS...` the probes are attached first, then CMD is started with
ovltrace's environment, as the user ovltrace runs as (root under sudo, as with
`perf stat -- CMD`; to run CMD as yourself: `sudo ovltrace run -- sudo -u \"$USER\" CMD`).
Only copy-ups that started between CMD's start and its exit are counted. Ctrl-C
reaches CMD from the terminal; SIGTERM and SIGHUP sent to ovltrace are passed on
to it, and so is SIGINT when ovltrace is not in the terminal's foreground;
--duration sends CMD SIGTERM when it runs out. ovltrace then exits with CMD's
status (128+N when a signal N ended it; 127 when CMD cannot be found, 126 when
it cannot be executed)."
    };
}

macro_rules! top_examples {
    () => {
        "\
Examples:
  sudo ovltrace top                           the hottest containers and files, every second
  sudo ovltrace top -i 5s --container web     every 5 s, only the container web
  sudo ovltrace top --rows 20 | tee top.log   not a terminal: a block of text per interval"
    };
}

macro_rules! doctor_examples {
    () => {
        "\
Examples:
  sudo ovltrace doctor                        what this kernel supports, and how run would attach
  sudo ovltrace doctor --probe kprobe         check the kprobe attach plan alone"
    };
}

macro_rules! layers_examples {
    () => {
        "\
Examples:
  sudo ovltrace layers                        the layer stack of every running container
  sudo ovltrace layers --json > layers.json   the same as JSON"
    };
}

macro_rules! report_examples {
    () => {
        "\
Examples:
  ovltrace report out.json                    print a saved report again
  ovltrace report --top 20 out.json           only the 20 hottest files and layers
  ovltrace report --html out.html a.json b.json
                                              merge two reports (e.g. two hosts) into HTML
  ovltrace report --json *.json > merged.json merge reports into one JSON report
Reading a saved report needs no privileges."
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "ovltrace",
    version,
    about = "Trace overlayfs copy-ups and lookups, attributed to containers and image layers",
    after_help = "\
Examples:
  sudo ovltrace doctor                        can this kernel be traced? (start here)
  sudo ovltrace run -d 30s                    trace for 30 s while you reproduce the slowness
  sudo ovltrace run -- docker run --rm myimage
                                              trace while one command runs
  sudo ovltrace top                           a live view of the hottest files and containers
Tracing needs root; `ovltrace doctor` says what is missing when it fails.
`ovltrace help SUBCOMMAND` shows a subcommand's options and examples.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace until Ctrl-C, --duration or the end of CMD, then print a report.
    #[command(
        after_help = concat!(run_examples!(), "\n\n", root_note!()),
        after_long_help = concat!(run_examples!(), "\n\n", run_cmd_note!(), "\n\n", root_note!())
    )]
    Run(RunArgs),
    /// A live view, redrawn in place: the hottest containers and files so far.
    #[command(after_help = concat!(top_examples!(), "\n\n", root_note!()))]
    Top(TopArgs),
    /// Check what this kernel supports and which attach plan `run` would use.
    #[command(after_help = concat!(doctor_examples!(), "\n\n", root_note!()))]
    Doctor(DoctorArgs),
    /// Print the layer stack of every running container.
    #[command(after_help = concat!(layers_examples!(), "\n\n", root_note!()))]
    Layers(LayersArgs),
    /// Re-render a saved JSON report, or merge several (from one host or many) into one.
    #[command(after_help = report_examples!())]
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stop after this long (e.g. 30s, 5m, 1h30m); default: until Ctrl-C (or CMD's exit).
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Rows of each hot-spot table (by copy-up time, by bytes) and of the
    /// layer table; 0 lists every file the tracer kept.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Also write the report as JSON to FILE (written atomically; never through a symlink).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
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
    pub probe: ProbeArgs,
    #[command(flatten)]
    pub docker: DockerArgs,
    /// A command to run while tracing: the trace starts before it and ends
    /// with it, and ovltrace exits with its status (more in --help).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Redraw every this long (e.g. 1s, 500ms, 5s).
    #[arg(short, long, value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Stop after this long; default: until Ctrl-C.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Rows in each table (containers, files); default: what fits the
    /// terminal, 10 when not a terminal.
    #[arg(long, value_name = "N")]
    pub rows: Option<usize>,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[command(flatten)]
    pub docker: DockerArgs,
}

/// Which copy-ups a trace counts: those that match every filter given.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only these containers (name or id prefix; repeatable). A name no running
    /// container has is waited for: the container may start later.
    #[arg(short = 'c', long = "container", value_name = "NAME|ID")]
    pub containers: Vec<String>,
    /// Only containers of this image: NAME (any tag), NAME:TAG, or an image id
    /// prefix (sha256:... or hex); repeatable.
    #[arg(long = "image", value_name = "NAME[:TAG]")]
    pub images: Vec<String>,
    /// Only copy-ups made by a process of this command name (as `ps -o comm`
    /// shows it, at most 15 bytes); repeatable.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Only copy-ups that took at least this long (e.g. 10ms, 1s), like
    /// fsslower's threshold.
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub min_latency: Option<Duration>,
}

/// How the programs are attached and read.
#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// Attach strategy.
    #[arg(long, value_enum, default_value_t = ProbeMode::Auto, help_heading = EXPERT)]
    pub probe: ProbeMode,
    /// Kernel ring buffer size in bytes (rounded up to a power of two pages).
    #[arg(long, default_value_t = 4 << 20, value_parser = parse_ringbuf_size, help_heading = EXPERT)]
    pub ring_buffer_size: u32,
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
    /// The attach strategy to check.
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
    #[arg(long, value_name = "DIR", help_heading = EXPERT)]
    pub docker_root: Option<PathBuf>,
    /// containers/storage's graph root of Podman or CRI-O (default: graphroot
    /// from /etc/containers/storage.conf, /var/lib/containers/storage, and
    /// the roots mountinfo shows). containerd's roots are found in mountinfo.
    #[arg(long, value_name = "DIR", help_heading = EXPERT)]
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

    fn long_help(sub: Option<&str>) -> String {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        match sub {
            Some(name) => cmd
                .find_subcommand_mut(name)
                .unwrap()
                .render_long_help()
                .to_string(),
            None => cmd.render_long_help().to_string(),
        }
    }

    /// The example command lines of a help text (after the program name),
    /// each with the arguments a shell would pass.
    fn examples(help: &str) -> Vec<Vec<String>> {
        help.lines()
            .skip_while(|l| !l.starts_with("Examples:"))
            .filter_map(|l| {
                let l = l.trim_start();
                let l = l.strip_prefix("sudo ").unwrap_or(l);
                let cmd = l.strip_prefix("ovltrace ")?;
                // The command ends where the explanation starts (two spaces
                // or more) or at a shell redirection or pipe.
                let cmd = cmd.split("  ").next().unwrap();
                let cmd = cmd.split(['>', '|']).next().unwrap();
                let mut argv = vec!["ovltrace".to_string()];
                argv.extend(cmd.split_whitespace().map(str::to_string));
                Some(argv)
            })
            .collect()
    }

    #[test]
    fn every_subcommand_has_examples_that_parse() {
        use clap::Parser as _;
        let mut seen = 0;
        for sub in [
            None,
            Some("run"),
            Some("top"),
            Some("doctor"),
            Some("layers"),
            Some("report"),
        ] {
            let help = long_help(sub);
            let ex = examples(&help);
            assert!(ex.len() >= 2, "{sub:?}: examples in\n{help}");
            for argv in ex {
                if let Some(s) = sub {
                    assert_eq!(argv[1], s, "{sub:?}: {argv:?}");
                }
                if let Err(e) = Cli::try_parse_from(&argv) {
                    panic!("{argv:?} does not parse: {e}");
                }
                seen += 1;
            }
        }
        assert!(seen >= 18, "{seen}");
    }

    #[test]
    fn help_says_root_is_needed_and_points_at_doctor() {
        for sub in [None, Some("run"), Some("top"), Some("layers")] {
            let help = long_help(sub);
            assert!(help.contains("needs root"), "{sub:?}:\n{help}");
            assert!(help.contains("ovltrace doctor"), "{sub:?}:\n{help}");
        }
        let run = long_help(Some("run"));
        assert!(
            run.contains("ovltrace run -- docker run --rm myimage"),
            "{run}"
        );
        assert!(run.contains("128+N"), "{run}");
    }

    #[test]
    fn common_options_come_before_expert_ones() {
        for sub in ["run", "top"] {
            let help = long_help(Some(sub));
            let at = |s: &str| help.find(s).unwrap_or_else(|| panic!("{s} in {help}"));
            let expert = at("Expert options:");
            for common in [
                "--duration",
                "--container",
                "--image",
                "--comm",
                "--min-latency",
            ] {
                assert!(
                    at(common) < expert,
                    "{sub}: {common} after the expert options"
                );
            }
            for rare in [
                "--probe",
                "--ring-buffer-size",
                "--docker-root",
                "--podman-root",
            ] {
                assert!(at(rare) > expert, "{sub}: {rare} before the expert options");
            }
        }
    }

    #[test]
    fn run_takes_a_command_after_double_dash() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from([
            "ovltrace",
            "run",
            "--comm",
            "chown",
            "--min-latency",
            "10ms",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run");
        };
        assert_eq!(args.command, ["sh", "-c", "exit 3"]);
        assert_eq!(args.filters.comms, ["chown"]);
        assert_eq!(args.filters.min_latency, Some(Duration::from_millis(10)));
        let cli = Cli::try_parse_from(["ovltrace", "top", "-c", "late", "--image", "x:1"]).unwrap();
        let Command::Top(args) = cli.command else {
            panic!("top");
        };
        assert_eq!(args.interval, Duration::from_secs(1));
        assert_eq!(args.filters.containers, ["late"]);
        assert_eq!(args.filters.images, ["x:1"]);
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
