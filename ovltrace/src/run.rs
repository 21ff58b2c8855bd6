//! `ovltrace run`: load and attach the programs, stream events until a signal
//! or the deadline, then detach and report.

use std::{
    io::IsTerminal,
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    Ebpf, EbpfLoader,
};
use ovltrace_ebpf::{Config, LookupStats, Stat};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    aggregate::{Aggregator, Attribution},
    attribute::{Attributed, Tracker},
    btf::KernelBtf,
    cli::{ColorMode, RunArgs},
    event::{self, OverlayKey},
    live, mounts, privilege,
    probe::{self, Plan},
    report::{self, Counters, Drops, KnownContainer, ProbeInfo},
    resolve::{Catalog, SourceLayer},
};

/// The programs, built for bpfel by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ovltrace"));

/// Most files kept in the hot-spot table before the cheapest are evicted.
const MAX_FILES: usize = 100_000;

pub fn main(args: RunArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

/// Kernel release string (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Host name, as in /proc/sys/kernel/hostname.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("ovltrace needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN) to load eBPF programs; run it with sudo");
    }
    Ok(())
}

/// Everything needed to load the programs on this kernel.
pub struct Prepared {
    pub ebpf: Ebpf,
    pub plan: Plan,
    /// The programs can read overlay's own types (source layers, overlay
    /// identities); without them events carry the device only.
    pub overlay_types: bool,
}

/// Reads BTF and kallsyms, and loads the object with this kernel's offsets.
pub fn prepare(
    mode: crate::cli::ProbeMode,
    ring_buffer_size: u32,
    filter_overlays: bool,
) -> Result<Prepared> {
    if EBPF_OBJECT.is_empty() {
        bail!("this ovltrace was built with AYA_BUILD_SKIP=1 and carries no eBPF programs");
    }
    let btf = KernelBtf::load().context("reading kernel BTF")?;
    let offsets = btf
        .offsets()
        .context("finding struct offsets in kernel BTF")?;
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    let plan = probe::plan(mode, Some(&btf), &kallsyms);
    let config = Config {
        tracer_tgid: std::process::id(),
        filter_overlays: filter_overlays as u32,
        wakeup_bytes: wakeup_bytes(ring_buffer_size),
        _pad: 0,
    };
    raise_memlock();
    let ebpf = EbpfLoader::new()
        .override_global("OFFSETS", &offsets, true)
        .override_global("CONFIG", &config, true)
        // Kernel-side log statements below the user's level are skipped in the kernel.
        .override_global("AYA_LOG_LEVEL", &kernel_log_level(), false)
        .map_max_entries("EVENTS", ring_buffer_size)
        .load(EBPF_OBJECT)
        .context("loading the eBPF object (maps)")?;
    Ok(Prepared {
        ebpf,
        plan,
        overlay_types: offsets.lower_layout != 0,
    })
}

/// aya-log's level numbering (error = 1 ... trace = 5) for `log::max_level()`.
fn kernel_log_level() -> u8 {
    match log::max_level() {
        log::LevelFilter::Off => 0,
        log::LevelFilter::Error => 1,
        log::LevelFilter::Warn => 2,
        log::LevelFilter::Info => 3,
        log::LevelFilter::Debug => 4,
        log::LevelFilter::Trace => 5,
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a local rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

/// A running trace: the loaded programs and everything aggregated so far.
/// The event loop owns it; reports are built from it on demand (final report,
/// Prometheus scrapes, intervals).
pub struct Session {
    ebpf: Ebpf,
    tracker: Tracker,
    agg: Aggregator,
    decode_errors: u64,
    probe: ProbeInfo,
    started: Instant,
    started_unix_ms: u64,
    warnings: Vec<String>,
    top: usize,
    /// The current `--interval`, when live mode is on.
    interval: Option<live::Interval>,
}

/// A request for a report of the trace so far (answered by the event loop).
pub type SnapshotRequest = tokio::sync::oneshot::Sender<report::Report>;

impl Session {
    /// The report of everything so far.
    pub fn report(&self) -> report::Report {
        let lookups = read_lookups(&self.ebpf);
        self.report_of(&self.agg, lookups, self.started)
    }

    /// The report of the interval that just ended; starts the next one.
    fn interval_report(&mut self) -> Option<report::Report> {
        let lookups = read_lookups(&self.ebpf);
        let i = self.interval.take()?;
        let delta = lookups
            .as_ref()
            .map(|now| i.lookup_delta(now))
            .map_err(|e| anyhow!("{e:#}"));
        let r = self.report_of(&i.agg, delta, i.started);
        self.interval = Some(i.next(lookups.unwrap_or_default()));
        Some(r)
    }

    fn report_of(
        &self,
        agg: &Aggregator,
        lookups: Result<Vec<(OverlayKey, LookupStats)>>,
        since: Instant,
    ) -> report::Report {
        let mut warnings = self.warnings.clone();
        let stats = read_stats(&self.ebpf).unwrap_or_else(|e| {
            warnings.push(format!("kernel counters unreadable: {e:#}"));
            [0; ovltrace_ebpf::STAT_COUNT as usize]
        });
        let lookups = lookups.unwrap_or_else(|e| {
            warnings.push(format!("lookup statistics unreadable: {e:#}"));
            Vec::new()
        });
        let s = |st: Stat| stats[st as usize];
        let containers: Vec<KnownContainer> = self.tracker.containers().cloned().collect();
        report::build(report::Inputs {
            agg,
            lookups: &lookups,
            mounts: self.tracker.mounts(),
            containers: &containers,
            probe: self.probe.clone(),
            host: hostname(),
            kernel: kernel_release(),
            started_unix_ms: self.started_unix_ms,
            duration_ms: since.elapsed().as_millis() as u64,
            drops: Drops {
                ringbuf_full: s(Stat::RingbufFull),
                lost_returns: s(Stat::LostReturn),
                inflight_full: s(Stat::InflightFull),
                decode_errors: self.decode_errors,
                ..Default::default()
            },
            counters: Counters {
                copy_up_entries: s(Stat::CopyUpEnter),
                copy_up_exits: s(Stat::CopyUpExit),
                data_copies: s(Stat::DataCopyEnter),
                lookup_entries: s(Stat::LookupEnter),
                lookup_exits: s(Stat::LookupExit),
                filtered: s(Stat::Filtered),
                ..Default::default()
            },
            warnings,
            top: self.top,
        })
    }

    /// Events lost so far (for the status line).
    fn report_drops(&self) -> u64 {
        read_stats(&self.ebpf).map_or(0, |s| {
            s[Stat::RingbufFull as usize]
                + s[Stat::LostReturn as usize]
                + s[Stat::InflightFull as usize]
        }) + self.decode_errors
    }

    /// Counts one attributed copy-up in the trace and the current interval.
    fn add(&mut self, ev: &event::CopyUp, attr: &Attribution, source: Option<&SourceLayer>) {
        self.agg.add(ev, attr, source);
        if let Some(i) = &mut self.interval {
            i.agg.add(ev, attr, source);
        }
    }

    /// Rescans mounts and containers, and aggregates the parked copy-ups that
    /// it settles.
    ///
    /// Copy-ups parked by [`Tracker::attribute`] (a runtime's short-lived
    /// mount of a container's init layer, until the container is known) are
    /// in no aggregate until then: live reports (Prometheus scrapes, interval
    /// summaries, the status line) do not count them yet, rather than count
    /// them as not attributed and take that back. A settled copy-up counts in
    /// the interval in which it is settled.
    fn refresh(&mut self) {
        for s in self.tracker.refresh() {
            self.add(&s.ev, &s.attr, s.source.as_ref());
        }
    }

    /// The final refresh: every parked copy-up is aggregated.
    fn finish(&mut self) {
        for s in self.tracker.finish() {
            self.add(&s.ev, &s.attr, s.source.as_ref());
        }
    }

    /// Reads every event waiting in the ring buffer; returns how many.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> usize {
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            match event::decode(&item) {
                Ok(ev) => match self.tracker.attribute(&ev) {
                    Attributed::Now(attr, source) => {
                        // The source layer borrows the tracker: add to the
                        // aggregates field by field.
                        let source = source.as_deref();
                        self.agg.add(&ev, &attr, source);
                        if let Some(i) = &mut self.interval {
                            i.agg.add(&ev, &attr, source);
                        }
                    }
                    // Aggregated once, when a refresh settles it.
                    Attributed::Pending => {}
                },
                Err(e) => {
                    self.decode_errors += 1;
                    log::warn!("undecodable event: {e}");
                }
            }
        }
        n
    }
}

async fn run(args: RunArgs) -> Result<ExitCode> {
    require_root()?;
    // The JSON output fails fast too (a symlink, a missing directory).
    if let Some(p) = &args.json {
        report::json::check_target(p)?;
    }
    // Metrics outputs fail fast (port in use, no such directory).
    let mut exporter =
        crate::exporter::Exporter::prepare(args.prometheus, args.textfile.as_deref()).await?;
    let filter = !args.containers.is_empty();
    let Prepared {
        mut ebpf,
        plan,
        overlay_types,
    } = prepare(args.probe, args.ring_buffer_size, filter)?;
    let mut catalog = Catalog::new(crate::resolve::all_resolvers(&args.docker));
    catalog.set_dev_only(!overlay_types);
    let mut tracker = Tracker::new(catalog);
    // Nothing is parked before the first event.
    let _ = tracker.refresh();
    if filter {
        tracker.check_filters(&args.containers)?;
        update_filter(&tracker, &mut ebpf, &args.containers)?;
    }
    let attached = probe::attach(&mut ebpf, &plan).map_err(|e| anyhow!("{e}"))?;
    for w in &attached.warnings {
        log::warn!("{w}");
    }
    // The programs' own log records (rare failure paths), through `log`.
    let mut kernel_log = match aya_log::EbpfLogger::init(&mut ebpf) {
        // SAFETY: the logger owns its ring buffer fd for the AsyncFd's lifetime.
        Ok(l) => unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }
            .map_err(|e| log::warn!("kernel log unavailable: {e}"))
            .ok(),
        Err(e) => {
            log::warn!("kernel log unavailable: {e}");
            None
        }
    };
    let ring = RingBuf::try_from(
        ebpf.take_map("EVENTS")
            .ok_or_else(|| anyhow!("EVENTS map missing from the object"))?,
    )
    .context("opening the ring buffer")?;
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for
    // as long as the AsyncFd owns the RingBuf.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("polling the ring buffer: {e}"))?;

    let mut session = Session {
        ebpf,
        tracker,
        agg: Aggregator::new(MAX_FILES),
        decode_errors: 0,
        probe: ProbeInfo {
            strategy: attached.strategy.to_string(),
            data_copy: attached.data_copy.clone(),
        },
        started: Instant::now(),
        started_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        warnings: attached.warnings.clone(),
        top: args.top,
        interval: None,
    };
    if args.interval.is_some() {
        let lookups = read_lookups(&session.ebpf).unwrap_or_default();
        session.interval = Some(live::Interval::new(MAX_FILES, lookups));
    }
    let color = match args.color {
        ColorMode::Always => true,
        ColorMode::Never => false,
        ColorMode::Auto => std::io::stdout().is_terminal(),
    };
    let style = report::terminal::Style { color };
    // The status line is for a person watching: only on a terminal.
    let mut status = live::StatusLine::new(std::io::stderr().is_terminal());
    // Consumers of live reports (Prometheus) send requests here.
    let (snapshot_tx, mut snapshot_rx) = tokio::sync::mpsc::channel::<SnapshotRequest>(16);

    let mut sigterm =
        tokio::signal::unix::signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint =
        tokio::signal::unix::signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    // Containers come and go (and reuse overlay device numbers): rescan.
    let mut rescan = tokio::time::interval(RESCAN_EVERY);
    rescan.tick().await;
    let mut interval = tokio::time::interval(args.interval.unwrap_or(Duration::from_secs(3600)));
    interval.tick().await;
    let mut status_tick = tokio::time::interval(live::STATUS_EVERY);

    // Everything that needs privileges (attaching, opening maps, listening
    // sockets) is done above this line; from here on only what the trace
    // needs is kept (see privilege.rs).
    let outputs: Vec<&std::path::Path> = args
        .json
        .as_deref()
        .into_iter()
        .chain(exporter.textfile())
        .collect();
    let base = privilege::base_keep(&outputs);
    match privilege::drop_privileges(base, &mut || read_stats(&session.ebpf).is_ok()) {
        Ok(d) => log::info!("capabilities dropped; kept: {}", d.names()),
        Err(e) => {
            let w = format!("capabilities not dropped: {e:#}");
            log::warn!("{w}");
            session.warnings.push(w);
        }
    }

    // Started once privileges are dropped (its writer threads inherit that).
    let exporter_tasks = exporter.start(&snapshot_tx);
    eprintln!(
        "Tracing overlayfs copy-ups and lookups ({} probes{})... Hit Ctrl-C to end.",
        attached.strategy,
        args.duration
            .map(|d| format!(", for {}", humantime(d)))
            .unwrap_or_default()
    );

    let mounts_changed = watch_mounts();
    // The kernel wakes us only once a backlog builds up (Config::wakeup_bytes),
    // so the ring buffer is also polled: often while events arrive, seldom
    // when none do.
    let poll = tokio::time::sleep(POLL_IDLE);
    tokio::pin!(poll);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for events")?;
                session.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = &mut poll => {
                let n = session.drain(ring.get_mut());
                let next = if n > 0 { POLL_BUSY } else { POLL_IDLE };
                poll.as_mut().reset(tokio::time::Instant::now() + next);
            }
            Some(mut guard) = async { match kernel_log.as_mut() {
                Some(l) => l.readable_mut().await.ok(),
                None => std::future::pending().await,
            } } => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = mounts_changed.notified() => {
                // Queued events happened before the change: attribute them
                // first, then learn the new mounts (and which have gone).
                session.drain(ring.get_mut());
                session.refresh();
                if filter {
                    if let Err(e) = update_filter(&session.tracker, &mut session.ebpf, &args.containers) {
                        log::warn!("updating the container filter: {e:#}");
                    }
                }
            }
            Some(reply) = snapshot_rx.recv() => {
                // A scrape sees every event that happened before it.
                session.drain(ring.get_mut());
                let _ = reply.send(session.report());
            }
            _ = rescan.tick() => {
                session.refresh();
                if filter {
                    if let Err(e) = update_filter(&session.tracker, &mut session.ebpf, &args.containers) {
                        log::warn!("updating the container filter: {e:#}");
                    }
                }
            }
            _ = interval.tick(), if args.interval.is_some() => {
                session.drain(ring.get_mut());
                if let Some(r) = session.interval_report() {
                    status.clear();
                    print!("{}", live::summary(&r, session.started.elapsed(), style));
                }
            }
            _ = status_tick.tick(), if status.enabled() => {
                status.update(&session.agg, session.started.elapsed(), session.report_drops());
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut sleep => break,
        }
    }
    status.clear();
    drop(exporter_tasks);
    // Whatever is already in the ring buffer belongs to the trace.
    session.drain(ring.get_mut());
    session.finish();
    let report = session.report();
    // Detach before writing: the outputs can take a while.
    drop(session);

    print!("{}", report::terminal::render_styled(&report, style));
    // Every output is attempted even when an earlier one fails.
    let json = match &args.json {
        Some(path) => report::json::to_string(&report).and_then(|text| {
            report::json::write_atomic(path, text.as_bytes())
                .with_context(|| format!("writing the JSON report to {}", path.display()))?;
            eprintln!("JSON report written to {}", path.display());
            Ok(())
        }),
        None => Ok(()),
    };
    let textfile = exporter.finish(&report);
    json.and(textfile)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn read_stats(ebpf: &Ebpf) -> Result<[u64; ovltrace_ebpf::STAT_COUNT as usize]> {
    let map = ebpf
        .map("STATS")
        .ok_or_else(|| anyhow!("STATS map missing"))?;
    let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
    let mut out = [0u64; ovltrace_ebpf::STAT_COUNT as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = arr.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(out)
}

fn read_lookups(ebpf: &Ebpf) -> Result<Vec<(OverlayKey, LookupStats)>> {
    let map = ebpf
        .map("LOOKUPS")
        .ok_or_else(|| anyhow!("LOOKUPS map missing"))?;
    let m: PerCpuHashMap<&MapData, OverlayKey, LookupStats> = PerCpuHashMap::try_from(map)?;
    let mut out = Vec::new();
    for item in m.iter() {
        let (dev, per_cpu) = item?;
        let mut sum = LookupStats::ZERO;
        for v in per_cpu.iter() {
            sum.found += v.found;
            sum.not_found += v.not_found;
            sum.errors += v.errors;
            sum.total_ns += v.total_ns;
            for (a, b) in sum.hist.iter_mut().zip(v.hist.iter()) {
                *a += b;
            }
        }
        out.push((dev, sum));
    }
    out.sort_by_key(|(d, _)| *d);
    Ok(out)
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{s}s")
    }
}

/// Ring-buffer poll period while events arrive, and when none did at the last
/// poll. Events wait at most POLL_IDLE (plus one POLL_BUSY) before they are
/// read, unless the backlog wakes the reader first.
const POLL_BUSY: Duration = Duration::from_millis(20);
const POLL_IDLE: Duration = Duration::from_millis(200);

/// Backlog (bytes waiting in the ring buffer) at which the kernel wakes the
/// reader: 1/16 of the buffer, far from full at the poll rate.
fn wakeup_bytes(ring_buffer_size: u32) -> u32 {
    (ring_buffer_size / 16).max(1)
}

/// How often mounts and containers are rescanned during a trace.
const RESCAN_EVERY: Duration = Duration::from_secs(5);
/// Least time between two rescans caused by changes of the mount table.
const MOUNT_CHANGE_SPACING: Duration = Duration::from_millis(50);

/// Notified when the mount table changes (the kernel flags
/// /proc/self/mountinfo with POLLPRI), so that containers starting and
/// stopping are seen promptly and device numbers handed from one container
/// to the next are told apart. Notifications coalesce; a thread blocks in
/// poll(2) for them. Without it (poll fails) the periodic rescan remains.
fn watch_mounts() -> std::sync::Arc<tokio::sync::Notify> {
    use std::os::fd::AsRawFd;
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let file = match std::fs::File::open(mounts::MOUNTINFO) {
        Ok(f) => f,
        Err(e) => {
            log::debug!("not watching {}: {e}", mounts::MOUNTINFO);
            return notify;
        }
    };
    let tx = notify.clone();
    let spawned = std::thread::Builder::new()
        .name("mount-watch".into())
        .spawn(move || loop {
            let mut pfd = libc::pollfd {
                fd: file.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            };
            // SAFETY: one valid pollfd; `file` outlives the call.
            let n = unsafe { libc::poll(&mut pfd, 1, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if pfd.revents & libc::POLLNVAL != 0 {
                return;
            }
            if pfd.revents & (libc::POLLPRI | libc::POLLERR) != 0 {
                tx.notify_one();
                // Changes meanwhile are reported by the next poll.
                std::thread::sleep(MOUNT_CHANGE_SPACING);
            }
        });
    if let Err(e) = spawned {
        log::debug!("not watching the mount table: {e}");
    }
    notify
}

/// Puts the overlays of the containers `filters` match in the kernel's filter.
fn update_filter(tracker: &Tracker, ebpf: &mut Ebpf, filters: &[String]) -> Result<()> {
    let map = ebpf
        .map_mut("FILTER")
        .ok_or_else(|| anyhow!("FILTER map missing"))?;
    let mut keys: BpfHashMap<&mut MapData, OverlayKey, u8> = BpfHashMap::try_from(map)?;
    for (key, name) in tracker.filter_keys(filters) {
        keys.insert(key, 1, 0)
            .with_context(|| format!("adding {name} to the overlay filter"))?;
    }
    Ok(())
}
