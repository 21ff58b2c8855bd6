//! A running trace: the loaded and attached programs, the event loop that
//! reads their ring buffer, attributes and aggregates every copy-up, and
//! answers requests for reports while it runs.

pub mod filter;
mod interval;
mod staging;

use std::{
    borrow::Cow,
    future::Future,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    Ebpf,
};
use aya_log::EbpfLogger;
use ovltrace_ebpf::{LookupStats, OverlayKey, Stat};
use tokio::io::unix::AsyncFd;

pub use filter::Window;
pub use interval::Interval;

use filter::{Filter, Verdict};
use staging::{Staging, STAGING_BYTES};

use crate::{
    aggregate::Aggregator,
    attribute::{Attributed, Attribution, Tracker},
    bpf::{
        self,
        event::{self, CopyUp},
        probe::{self, ProbeMode},
        Prepared,
    },
    catalog::{self, Catalog, KnownContainer, RuntimeRoots, SourceLayer},
    exporter::SnapshotRequest,
    render::{live, terminal::Style, top},
    report::{self, Counters, Drops, Filters, ProbeInfo},
    sys::{self, mounts},
};

/// Most files kept in the hot-spot table before the cheapest are evicted.
const MAX_FILES: usize = 100_000;
/// How often mounts and containers are rescanned during a trace.
const RESCAN_EVERY: Duration = Duration::from_secs(5);
/// Least time between two rescans caused by changes of the mount table.
const MOUNT_CHANGE_SPACING: Duration = Duration::from_millis(50);
/// Ring-buffer poll period while events arrive, and when none did at the last
/// poll. Events wait at most POLL_IDLE (plus one POLL_BUSY) before they are
/// read, unless the backlog wakes the reader first.
const POLL_BUSY: Duration = Duration::from_millis(20);
const POLL_IDLE: Duration = Duration::from_millis(200);
/// A burst of events is over when none came for this long: the staged ones
/// are attributed then (see [`staging`]).
const BURST_GAP: Duration = Duration::from_millis(100);

/// What a trace is asked to do.
pub struct Options {
    pub probe: ProbeMode,
    pub ring_buffer_size: u32,
    /// Which copy-ups are counted (`--container`, `--image`, ...).
    pub filters: Filters,
    /// Files listed in reports.
    pub top: usize,
    /// Length of `--interval` summaries (or of the top view's redraws).
    pub interval: Option<Duration>,
    /// Every interval, redraw the top view (the trace so far) instead of
    /// printing the interval's summary.
    pub top_view: Option<top::Options>,
    /// A status line on stderr while tracing, when it is a terminal (not
    /// while a command that may write there runs, nor with the top view).
    pub status_line: bool,
    pub roots: RuntimeRoots,
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
    filter: Filter,
    /// `--container` names in the kernel's filter map (only when every name
    /// was a running container's at the start: the programs' configuration
    /// is fixed once they are loaded).
    kernel_filter: Option<Vec<String>>,
    /// `--container` names no running container had at the start.
    awaited: Vec<String>,
    top_view: Option<top::Options>,
    status_line: bool,
    /// The current `--interval`, when live mode is on.
    interval: Option<Interval>,
    interval_every: Option<Duration>,
    /// Events read and not yet attributed.
    staging: Staging,
    /// When the last event was read (a burst ends after [`BURST_GAP`]).
    last_event: Instant,
}

/// The descriptors the event loop waits on.
pub struct Streams {
    ring: AsyncFd<RingBuf<MapData>>,
    kernel_log: Option<AsyncFd<EbpfLogger<&'static dyn log::Log>>>,
}

impl Session {
    /// Loads and attaches the programs and learns the mounts there are.
    ///
    /// `--container` names that no running container has are waited for
    /// (see [`Session::awaited`]). Then the kernel cannot filter by overlay
    /// (a new container's first copy-ups would be dropped before a rescan
    /// put its overlay in the filter map): every copy-up is sent to user
    /// space, and those of other containers are dropped there.
    pub fn start(opts: Options) -> Result<(Session, Streams)> {
        let inspected = bpf::inspect(opts.probe)?;
        let mut catalog = Catalog::new(catalog::all_resolvers(&opts.roots));
        catalog.set_dev_only(!inspected.overlay_types);
        let mut tracker = Tracker::new(catalog);
        // Nothing is parked before the first event.
        let _ = tracker.refresh();
        let mut filter = Filter::new(opts.filters.clone());
        let awaited = filter.awaited(tracker.running());
        if !awaited.is_empty() {
            let running = running_names(&tracker);
            for name in &awaited {
                eprintln!("{}", awaited_note(name, &running));
            }
        }
        let kernel_filter = (!opts.filters.containers.is_empty() && awaited.is_empty())
            .then(|| opts.filters.containers.clone());
        let Prepared {
            mut ebpf,
            plan,
            overlay_types: _,
        } = inspected.load(opts.ring_buffer_size, kernel_filter.is_some())?;
        if let Some(names) = &kernel_filter {
            set_filter(&tracker, &mut ebpf, names)?;
        }
        for c in tracker.containers() {
            filter.learn(&c.info);
        }
        let attached = probe::attach(&mut ebpf, &plan).map_err(|e| anyhow!("{e}"))?;
        for w in &attached.warnings {
            log::warn!("{w}");
        }
        let streams = Streams::open(&mut ebpf)?;
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
            top: opts.top,
            filter,
            kernel_filter,
            awaited,
            status_line: opts.status_line && opts.top_view.is_none(),
            top_view: opts.top_view,
            interval: None,
            interval_every: opts.interval,
            staging: Staging::new(STAGING_BYTES),
            last_event: Instant::now(),
        };
        // The top view shows the whole trace: no interval aggregate.
        if session.interval_every.is_some() && session.top_view.is_none() {
            let lookups = bpf::read_lookups(&session.ebpf).unwrap_or_default();
            session.interval = Some(Interval::new(MAX_FILES, lookups));
        }
        Ok((session, streams))
    }

    /// The attach strategy in use ("fentry" or "kprobe").
    pub fn strategy(&self) -> &str {
        &self.probe.strategy
    }

    /// Whether the maps can still be read (to check a privilege drop).
    pub fn maps_readable(&self) -> bool {
        bpf::read_stats(&self.ebpf).is_ok()
    }

    /// `--container` names no running container had when the trace started:
    /// their copy-ups are counted once they start.
    pub fn awaited(&self) -> &[String] {
        &self.awaited
    }

    /// Counts only copy-ups that start in `window` (the run of `command`).
    pub fn limit_to(&mut self, window: Window, command: String) {
        self.filter.set_window(window, command);
    }

    /// A warning that belongs in the final report.
    pub fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    /// Streams events until `stop` completes; answers report requests from
    /// `snapshots` meanwhile. Then reads what is left and returns the report
    /// of the whole trace.
    pub async fn run(
        mut self,
        mut streams: Streams,
        mut snapshots: tokio::sync::mpsc::Receiver<SnapshotRequest>,
        style: Style,
        stop: impl Future<Output = ()>,
    ) -> Result<report::Report> {
        tokio::pin!(stop);
        // Containers come and go (and reuse overlay device numbers): rescan.
        let mut rescan = tokio::time::interval(RESCAN_EVERY);
        rescan.tick().await;
        let every = self.interval_every.unwrap_or(Duration::from_secs(3600));
        let mut interval = tokio::time::interval(every);
        interval.tick().await;
        let live_mode = self.interval_every.is_some();
        let mut status_tick = tokio::time::interval(live::STATUS_EVERY);
        // The status line is for a person watching: only on a terminal.
        let mut status = live::StatusLine::new(
            self.status_line && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        );
        let mut top_screen = self.top_view.clone().map(top::Screen::new);
        let mounts_changed = watch_mounts();
        // The kernel wakes us only once a backlog builds up (Config::wakeup_bytes),
        // so the ring buffer is also polled: often while events arrive, seldom
        // when none do.
        let poll = tokio::time::sleep(POLL_IDLE);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                guard = streams.ring.readable_mut() => {
                    let mut guard = guard.context("waiting for events")?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                _ = &mut poll => {
                    let n = self.drain(streams.ring.get_mut());
                    if n == 0 && self.last_event.elapsed() >= BURST_GAP {
                        self.attribute_staged();
                    }
                    let next = if n > 0 { POLL_BUSY } else { POLL_IDLE };
                    poll.as_mut().reset(tokio::time::Instant::now() + next);
                }
                Some(mut guard) = async { match streams.kernel_log.as_mut() {
                    Some(l) => l.readable_mut().await.ok(),
                    None => std::future::pending().await,
                } } => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                _ = mounts_changed.notified() => {
                    // Queued events happened before the change: attribute them
                    // first, then learn the new mounts (and which have gone).
                    self.catch_up(streams.ring.get_mut());
                    self.rescan();
                }
                Some(reply) = snapshots.recv() => {
                    // A scrape sees every event that happened before it.
                    self.catch_up(streams.ring.get_mut());
                    let _ = reply.send(self.report());
                }
                _ = rescan.tick() => {
                    self.attribute_staged();
                    self.rescan();
                }
                _ = interval.tick(), if live_mode => {
                    self.catch_up(streams.ring.get_mut());
                    if let Some(screen) = &mut top_screen {
                        // The trace so far, not the interval.
                        screen.draw(&self.report(), self.started.elapsed());
                    } else if let Some(r) = self.interval_report() {
                        status.clear();
                        print!("{}", live::summary(&r, self.started.elapsed(), style));
                    }
                }
                _ = status_tick.tick(), if status.enabled() => {
                    self.attribute_staged();
                    status.update(&self.agg, self.started.elapsed(), self.report_drops());
                }
                _ = &mut stop => break,
            }
        }
        status.clear();
        if let Some(screen) = &mut top_screen {
            screen.leave();
        }
        // Whatever is already in the ring buffer belongs to the trace.
        self.catch_up(streams.ring.get_mut());
        self.finish();
        Ok(self.report())
    }

    /// The report of everything so far.
    pub fn report(&self) -> report::Report {
        let lookups = bpf::read_lookups(&self.ebpf);
        self.report_of(&self.agg, lookups, self.started)
    }

    /// The report of the interval that just ended; starts the next one.
    fn interval_report(&mut self) -> Option<report::Report> {
        let lookups = bpf::read_lookups(&self.ebpf);
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
        let stats = bpf::read_stats(&self.ebpf).unwrap_or_else(|e| {
            warnings.push(format!("kernel counters unreadable: {e:#}"));
            [0; ovltrace_ebpf::STAT_COUNT as usize]
        });
        let lookups = lookups.unwrap_or_else(|e| {
            warnings.push(format!("lookup statistics unreadable: {e:#}"));
            Vec::new()
        });
        let lookups = self.filtered_lookups(lookups);
        let containers: Vec<KnownContainer> = self.tracker.containers().cloned().collect();
        let mut counters = counters(&stats);
        counters.filtered_user = self.filter.dropped;
        let mut r = report::build(report::Inputs {
            agg,
            lookups: &lookups,
            mounts: self.tracker.mounts(),
            containers: &containers,
            probe: self.probe.clone(),
            host: sys::hostname(),
            kernel: sys::kernel_release(),
            started_unix_ms: self.started_unix_ms,
            duration_ms: since.elapsed().as_millis() as u64,
            drops: drops(&stats, self.decode_errors),
            counters,
            warnings,
            top: self.top,
        });
        r.filters = self.filter.describe(self.kernel_filter.is_some());
        r
    }

    /// With a container or image filter, the lookups of the overlays of the
    /// containers it keeps (the kernel counts every overlay's when it does
    /// not filter by overlay itself).
    fn filtered_lookups(
        &self,
        lookups: Vec<(OverlayKey, LookupStats)>,
    ) -> Vec<(OverlayKey, LookupStats)> {
        if !self.filter.by_container() {
            return lookups;
        }
        lookups
            .into_iter()
            .filter(|(key, _)| {
                let id = self
                    .tracker
                    .mounts()
                    .get(key)
                    .and_then(|m| m.container.as_deref());
                self.filter.verdict(id) == Verdict::Keep
            })
            .collect()
    }

    /// Events lost so far (for the status line).
    fn report_drops(&self) -> u64 {
        bpf::read_stats(&self.ebpf).map_or(self.decode_errors, |s| {
            drops(&s, self.decode_errors).with_total().total
        })
    }

    /// Counts one attributed copy-up in the trace and the current interval,
    /// unless the filter drops it.
    fn add(&mut self, ev: &CopyUp, attr: &Attribution, source: Option<&SourceLayer>) {
        if !(self.filter.event_passes(ev) && self.keeps(attr)) {
            self.filter.dropped += 1;
            return;
        }
        self.agg.add(ev, attr, source);
        if let Some(i) = &mut self.interval {
            i.agg.add(ev, attr, source);
        }
    }

    /// Rescans mounts and containers, aggregates the parked copy-ups that it
    /// settles, and updates the kernel's container filter.
    ///
    /// Copy-ups parked by [`Tracker::attribute`] (a runtime's short-lived
    /// mount of a container's init layer, until the container is known) are
    /// in no aggregate until then: live reports (Prometheus scrapes, interval
    /// summaries, the status line) do not count them yet, rather than count
    /// them as not attributed and take that back. A settled copy-up counts in
    /// the interval in which it is settled.
    fn rescan(&mut self) {
        for s in self.tracker.refresh() {
            self.add(&s.ev, &s.attr, s.source.as_ref());
        }
        self.learn_containers();
        if let Some(names) = &self.kernel_filter {
            if let Err(e) = set_filter(&self.tracker, &mut self.ebpf, names) {
                log::warn!("updating the container filter: {e:#}");
            }
        }
    }

    /// Decides again about every container (names change, awaited ones
    /// start).
    fn learn_containers(&mut self) {
        if !self.filter.by_container() {
            return;
        }
        for c in self.tracker.containers() {
            let keep = self.filter.learn(&c.info);
            if let Some(i) = self.awaited.iter().position(|n| c.info.matches(n)) {
                if keep {
                    log::info!(
                        "container {} started: tracing it",
                        crate::text::terminal(&self.awaited[i])
                    );
                }
                self.awaited.remove(i);
            }
        }
    }

    /// Whether the copy-up's container passes the filter (learning about a
    /// container seen for the first time).
    fn keeps(&mut self, attr: &Attribution) -> bool {
        match self.filter.verdict(attr.container.as_deref()) {
            Verdict::Keep => true,
            Verdict::Drop => false,
            Verdict::Unknown => {
                let id = attr.container.as_deref().unwrap_or_default();
                match self.tracker.container(id) {
                    Some(c) => self.filter.learn(&c.info),
                    None => false,
                }
            }
        }
    }

    /// The final refresh: every parked copy-up is aggregated.
    fn finish(&mut self) {
        for s in self.tracker.finish() {
            self.add(&s.ev, &s.attr, s.source.as_ref());
        }
    }

    /// Reads every event waiting in the ring buffer into staging (see
    /// [`staging`]); returns how many.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> usize {
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            if !self.staging.push(&item) {
                self.attribute_staged();
                if !self.staging.push(&item) {
                    self.ingest(&item);
                }
            }
        }
        if n > 0 {
            self.last_event = Instant::now();
        }
        if self.staging.over_half() {
            self.attribute_staged();
        }
        n
    }

    /// Reads the ring buffer and attributes everything read so far: for
    /// whatever needs the aggregates (or the mount table as the events saw it).
    fn catch_up(&mut self, ring: &mut RingBuf<MapData>) {
        self.drain(ring);
        self.attribute_staged();
    }

    /// Decodes, attributes and aggregates every staged event, oldest first.
    fn attribute_staged(&mut self) {
        if self.staging.is_empty() {
            return;
        }
        // Moved out for the loop (the memory comes back).
        let mut staging = std::mem::take(&mut self.staging);
        for record in staging.records() {
            self.ingest(record);
        }
        staging.clear();
        self.staging = staging;
    }

    /// Decodes, attributes and aggregates one ring-buffer record.
    fn ingest(&mut self, item: &[u8]) {
        match event::decode(item) {
            // What the event alone rules out is not even attributed.
            Ok(ev) if !self.filter.event_passes(&ev) => self.filter.dropped += 1,
            Ok(mut ev) => match self.tracker.attribute(&ev) {
                Attributed::Now(attr, source) => {
                    match self.filter.verdict(attr.container.as_deref()) {
                        Verdict::Keep => {
                            // The source layer borrows the tracker: add to
                            // the aggregates field by field.
                            let source = source.as_deref();
                            if let Some(i) = &mut self.interval {
                                i.agg.add(&ev, &attr, source);
                            }
                            self.agg.add_taking_path(&mut ev, &attr, source);
                        }
                        Verdict::Drop => self.filter.dropped += 1,
                        // A container new to the filter (rare): decided
                        // through the tracker, so the source is copied.
                        Verdict::Unknown => {
                            let source = source.map(Cow::into_owned);
                            self.add(&ev, &attr, source.as_ref());
                        }
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
}

impl Streams {
    fn open(ebpf: &mut Ebpf) -> Result<Streams> {
        // The programs' own log records (rare failure paths), through `log`.
        let kernel_log = match EbpfLogger::init(ebpf) {
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
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow!("polling the ring buffer: {e}"))?;
        Ok(Streams { ring, kernel_log })
    }
}

/// "name (short id)" of every container mounted now, sorted.
fn running_names(tracker: &Tracker) -> Vec<String> {
    let mut v: Vec<String> = tracker
        .running()
        .map(|c| format!("{} ({})", c.display_name(), c.short_id()))
        .collect();
    v.sort();
    v
}

/// The note on stderr for a `--container` name no running container has.
pub fn awaited_note(name: &str, running: &[String]) -> String {
    let running = if running.is_empty() {
        "none".to_string()
    } else {
        running.join(", ")
    };
    crate::text::terminal(&format!(
        "ovltrace: waiting for container \"{name}\": no running container has this name or id \
         prefix yet (running: {running})"
    ))
}

fn drops(stats: &[u64; ovltrace_ebpf::STAT_COUNT as usize], decode_errors: u64) -> Drops {
    let s = |st: Stat| stats[st as usize];
    Drops {
        ringbuf_full: s(Stat::RingbufFull),
        lost_returns: s(Stat::LostReturn),
        inflight_full: s(Stat::InflightFull),
        decode_errors,
        ..Default::default()
    }
}

fn counters(stats: &[u64; ovltrace_ebpf::STAT_COUNT as usize]) -> Counters {
    let s = |st: Stat| stats[st as usize];
    Counters {
        copy_up_entries: s(Stat::CopyUpEnter),
        copy_up_exits: s(Stat::CopyUpExit),
        data_copies: s(Stat::DataCopyEnter),
        lookup_entries: s(Stat::LookupEnter),
        lookup_exits: s(Stat::LookupExit),
        filtered: s(Stat::Filtered),
        ..Default::default()
    }
}

/// Puts the overlays of the containers `filters` match in the kernel's filter.
fn set_filter(tracker: &Tracker, ebpf: &mut Ebpf, filters: &[String]) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waiting_note_names_the_running_containers() {
        assert_eq!(
            awaited_note("late", &[]),
            "ovltrace: waiting for container \"late\": no running container has this name \
             or id prefix yet (running: none)"
        );
        assert_eq!(
            awaited_note(
                "l\x1bate",
                &["web (0123456789ab)".into(), "db (ba9876543210)".into()]
            ),
            "ovltrace: waiting for container \"l\\u{1b}ate\": no running container has this \
             name or id prefix yet (running: web (0123456789ab), db (ba9876543210))"
        );
    }
}
