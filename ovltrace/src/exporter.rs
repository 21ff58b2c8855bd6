//! Prometheus metrics while a trace runs: `GET /metrics` over HTTP
//! (`ovltrace run --prometheus ADDR`) and node_exporter textfile-collector
//! output (`ovltrace run --textfile DIR`). Both ask the event loop for a
//! report (a [`SnapshotRequest`]) and render it with
//! [`crate::render::prometheus::render`].

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header, Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot, Semaphore},
    task::JoinHandle,
};

/// A request for a report of the trace so far (answered by the event loop).
pub type SnapshotRequest = tokio::sync::oneshot::Sender<Report>;

use crate::{
    render::prometheus,
    report::{json::write_atomic, Report},
};

/// The file written in `--textfile DIR`.
pub const TEXTFILE_NAME: &str = "ovltrace.prom";
/// How often the textfile is rewritten while the trace runs (and once more
/// at the end).
pub const TEXTFILE_EVERY: Duration = Duration::from_secs(15);
/// The port suggested in examples and error messages.
pub const DEFAULT_PORT_HINT: u16 = 9435;
/// A scrape waits at most this long for the event loop's report.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed straight away.
const MAX_CONNECTIONS: usize = 16;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `--prometheus`: `HOST:PORT` (an IP address, `[IPv6]`, or
/// `localhost`), or a bare `PORT` / `:PORT`, which listen on 127.0.0.1.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .map_err(|_| format!("invalid port {p:?} in {s:?}: expected 0 to 65535"))
    };
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if s.is_empty() {
        return Err("empty address: expected HOST:PORT or PORT".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(SocketAddr::new(loopback, port(s)?));
    }
    if let Some(p) = s.strip_prefix(':') {
        return Ok(SocketAddr::new(loopback, port(p)?));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    match s.rsplit_once(':') {
        Some(("localhost", p)) => Ok(SocketAddr::new(loopback, port(p)?)),
        Some((host, p)) if !host.contains(':') => {
            port(p)?;
            Err(format!(
                "invalid address {s:?}: {host:?} is not an IP address \
                 (e.g. 127.0.0.1:{DEFAULT_PORT_HINT}, [::1]:{DEFAULT_PORT_HINT}, 0.0.0.0:{DEFAULT_PORT_HINT})"
            ))
        }
        _ => Err(format!(
            "invalid address {s:?}: expected HOST:PORT, [IPv6]:PORT or PORT"
        )),
    }
}

/// The metrics outputs of one `ovltrace run`, set up before tracing starts
/// so that a port in use or a missing directory fails fast.
#[derive(Default)]
pub struct Exporter {
    listener: Option<TcpListener>,
    textfile: Option<Arc<Textfile>>,
}

/// The textfile and its writer lock: periodic writes (on blocking threads)
/// and the final one never overlap, and none lands after the final one.
struct Textfile {
    target: PathBuf,
    /// True once the final report is written.
    done: std::sync::Mutex<bool>,
}

impl Textfile {
    fn write(&self, text: &str, last: bool) -> Result<()> {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if *done {
            return Ok(());
        }
        write_atomic(&self.target, text.as_bytes())
            .with_context(|| format!("writing Prometheus metrics to {}", self.target.display()))?;
        *done = last;
        Ok(())
    }
}

impl Exporter {
    /// Binds the `--prometheus` address and checks the `--textfile` directory.
    pub async fn prepare(listen: Option<SocketAddr>, textfile_dir: Option<&Path>) -> Result<Self> {
        let listener = match listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow!("--prometheus: cannot listen on {addr}: {e}"))?,
            ),
            None => None,
        };
        let textfile = match textfile_dir {
            Some(dir) => Some(Arc::new(Textfile {
                target: textfile_path(dir)?,
                done: std::sync::Mutex::new(false),
            })),
            None => None,
        };
        Ok(Self { listener, textfile })
    }

    /// The file `--textfile` writes, if any.
    pub fn textfile(&self) -> Option<&Path> {
        self.textfile.as_deref().map(|t| t.target.as_path())
    }

    /// The address `/metrics` is served on (the real port when 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Starts serving and writing, answered by the event loop through
    /// `snapshots`. The tasks stop when the returned value is dropped.
    pub fn start(&mut self, snapshots: &mpsc::Sender<SnapshotRequest>) -> Tasks {
        let mut tasks = Vec::new();
        if let Some(listener) = self.listener.take() {
            match listener.local_addr() {
                Ok(addr) => eprintln!("Serving Prometheus metrics on http://{addr}/metrics"),
                Err(e) => log::warn!("--prometheus: listening address unknown: {e}"),
            }
            tasks.push(tokio::spawn(serve(listener, snapshots.clone())));
        }
        if let Some(t) = &self.textfile {
            eprintln!(
                "Writing Prometheus metrics to {} every {}s",
                t.target.display(),
                TEXTFILE_EVERY.as_secs()
            );
            tasks.push(tokio::spawn(textfile_loop(t.clone(), snapshots.clone())));
        }
        Tasks(tasks)
    }

    /// Writes the textfile of the final report, if asked for. Periodic
    /// writes still under way finish first; none happens afterwards.
    pub fn finish(&self, report: &Report) -> Result<()> {
        if let Some(t) = &self.textfile {
            t.write(&prometheus::render(report), true)?;
            eprintln!("Prometheus metrics written to {}", t.target.display());
        }
        Ok(())
    }
}

/// Background tasks of an [`Exporter`]; aborted when dropped.
pub struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// `DIR/ovltrace.prom`, after checking that DIR is a directory.
pub fn textfile_path(dir: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("--textfile {}: cannot use the directory", dir.display()))?;
    if !meta.is_dir() {
        bail!("--textfile {}: not a directory", dir.display());
    }
    Ok(dir.join(TEXTFILE_NAME))
}

/// A report of the trace so far, from the event loop.
pub async fn snapshot(snapshots: &mpsc::Sender<SnapshotRequest>) -> Result<Report> {
    let (reply, answer) = oneshot::channel();
    let ask = async {
        snapshots
            .send(reply)
            .await
            .map_err(|_| anyhow!("the trace has ended"))?;
        answer.await.map_err(|_| anyhow!("the trace has ended"))
    };
    tokio::time::timeout(SNAPSHOT_TIMEOUT, ask)
        .await
        .map_err(|_| anyhow!("no report within {}s", SNAPSHOT_TIMEOUT.as_secs()))?
}

async fn textfile_loop(textfile: Arc<Textfile>, snapshots: mpsc::Sender<SnapshotRequest>) {
    let mut tick = tokio::time::interval(TEXTFILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tick.tick().await;
        let result = match snapshot(&snapshots).await {
            Ok(report) => {
                // Rendering is quick; the write syncs to disk: off the loop.
                let text = prometheus::render(&report);
                let t = textfile.clone();
                tokio::task::spawn_blocking(move || t.write(&text, false))
                    .await
                    .unwrap_or_else(|e| Err(anyhow!("textfile writer failed: {e}")))
            }
            Err(e) => Err(e),
        };
        // Say it once per distinct failure, and when it is over.
        match result {
            Ok(()) => {
                if last_error.take().is_some() {
                    log::warn!("--textfile: {} written again", textfile.target.display());
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if last_error.as_deref() != Some(msg.as_str()) {
                    log::warn!("--textfile: {msg}");
                    last_error = Some(msg);
                }
            }
        }
    }
}

async fn serve(listener: TcpListener, snapshots: mpsc::Sender<SnapshotRequest>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // E.g. out of file descriptors: wait rather than spin.
                log::warn!("--prometheus: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            log::debug!("--prometheus: too many connections; closing the one from {peer}");
            continue;
        };
        let snapshots = snapshots.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let snapshots = snapshots.clone();
                async move { Ok::<_, Infallible>(handle(&req, &snapshots).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                log::debug!("--prometheus: connection from {peer}: {e}");
            }
            drop(slot);
        });
    }
}

async fn handle(
    req: &Request<Incoming>,
    snapshots: &mpsc::Sender<SnapshotRequest>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "Not found: metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "Use GET\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match snapshot(snapshots).await {
        Ok(report) => {
            let mut r = Response::new(Full::new(Bytes::from(prometheus::render(&report))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(prometheus::CONTENT_TYPE),
            );
            r
        }
        Err(e) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("No metrics: {e:#}\n"),
        ),
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::bpf::event::OverlayKey;
    use crate::report::{self, Counters, Drops, ProbeInfo};

    fn sample_report(copy_ups: u64) -> Report {
        let mut agg = crate::aggregate::Aggregator::new(16);
        for i in 0..copy_ups {
            let ev = crate::bpf::event::CopyUp {
                start_ns: 0,
                latency_ns: 5_000,
                data_ns: None,
                data_len: Some(1),
                size: 1,
                tgid: 1,
                tid: 1,
                overlay: OverlayKey::dev_only(7),
                ret: 0,
                kind: crate::bpf::event::FileKind::Regular,
                path: format!("f{i}").into_bytes(),
                path_truncated: false,
                comm: "sh".into(),
                mnt_ns: 0,
                source: None,
                cause: Default::default(),
            };
            agg.add(&ev, &Default::default(), None);
        }
        report::build(report::Inputs {
            agg: &agg,
            lookups: &[],
            mounts: &HashMap::new(),
            containers: &[],
            probe: ProbeInfo {
                strategy: "kprobe".into(),
                data_copy: None,
            },
            host: "h".into(),
            kernel: "k".into(),
            started_unix_ms: 0,
            duration_ms: 0,
            drops: Drops::default(),
            counters: Counters::default(),
            warnings: vec![],
            top: 10,
        })
    }

    /// Stands in for the event loop: answers every request with a report of
    /// as many copy-ups as requests so far, until `max` requests.
    fn fake_loop(max: u64) -> mpsc::Sender<SnapshotRequest> {
        let (tx, mut rx) = mpsc::channel::<SnapshotRequest>(4);
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(reply) = rx.recv().await {
                n += 1;
                let _ = reply.send(sample_report(n));
                if n == max {
                    break;
                }
            }
        });
        tx
    }

    async fn http(addr: SocketAddr, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let mut exporter = Exporter::prepare(Some(lo), None).await.unwrap();
        let addr = exporter.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let tasks = exporter.start(&fake_loop(2));
        // Each scrape is a new report from the loop.
        for n in 1..=2 {
            let r = http(addr, &get("/metrics")).await;
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
            assert!(
                r.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
                "{r}"
            );
            let series = format!("\novltrace_copy_ups_total{{container=\"\",image=\"\"}} {n}\n");
            assert!(r.contains(&series), "{r}");
        }
        let r = http(addr, &get("/")).await;
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        let r = http(addr, &get("/metricsx")).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = http(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        // The loop has ended: no report, a clear 503.
        let r = http(addr, &get("/metrics")).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("the trace has ended"), "{r}");
        // Garbage is answered (400) or dropped, and the server lives on.
        let _ = http(addr, "\x00\x01 not http\r\n\r\n").await;
        let r = http(addr, &get("/")).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        drop(tasks);
        drop(dir);
    }

    #[tokio::test]
    async fn bind_failure_is_one_clear_line() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = Exporter::prepare(Some(addr), None)
            .await
            .err()
            .expect("a port in use must fail");
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with(&format!("--prometheus: cannot listen on {addr}: ")),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[tokio::test]
    async fn textfile_written_at_start_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut exporter = Exporter::prepare(None, Some(dir.path())).await.unwrap();
        let target = dir.path().join(TEXTFILE_NAME);
        let tasks = exporter.start(&fake_loop(1));
        // The first write happens straight away.
        let mut text = String::new();
        for _ in 0..200 {
            if let Ok(t) = std::fs::read_to_string(&target) {
                text = t;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            text.contains("\novltrace_copy_ups_total{container=\"\",image=\"\"} 1\n"),
            "{text}"
        );
        drop(tasks);
        exporter.finish(&sample_report(7)).unwrap();
        let text = std::fs::read_to_string(&target).unwrap();
        assert!(
            text.contains("\novltrace_copy_ups_total{container=\"\",image=\"\"} 7\n"),
            "{text}"
        );
        // Only the file itself: no temporary left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A periodic write that comes late does not replace the final one.
        let t = exporter.textfile.clone().unwrap();
        tokio::task::spawn_blocking(move || t.write("stale", false))
            .await
            .unwrap()
            .unwrap();
        let text = std::fs::read_to_string(&target).unwrap();
        assert!(text.contains("} 7\n"), "{text}");
        assert_eq!(exporter.textfile(), Some(target.as_path()));
        // Never through a symlink.
        let exporter = Exporter::prepare(None, Some(dir.path())).await.unwrap();
        std::fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &target).unwrap();
        let err = exporter.finish(&sample_report(1)).unwrap_err();
        assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
    }

    #[test]
    fn listen_addresses() {
        let lo = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        assert_eq!(parse_listen_addr("9435"), Ok(lo(9435)));
        assert_eq!(parse_listen_addr(":9435"), Ok(lo(9435)));
        assert_eq!(parse_listen_addr("localhost:9435"), Ok(lo(9435)));
        assert_eq!(parse_listen_addr("127.0.0.1:9435"), Ok(lo(9435)));
        assert_eq!(
            parse_listen_addr("0.0.0.0:80"),
            Ok("0.0.0.0:80".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("[::1]:9435"),
            Ok("[::1]:9435".parse().unwrap())
        );
        for bad in [
            "",
            ":",
            "99999",
            ":x",
            "host:9435",
            "1.2.3.4",
            "::1",
            "1.2.3.4:-1",
        ] {
            assert!(parse_listen_addr(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_listen_addr("example.com:9435")
            .unwrap_err()
            .contains("not an IP address"));
    }

    #[test]
    fn textfile_dir_must_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            textfile_path(dir.path()).unwrap(),
            dir.path().join("ovltrace.prom")
        );
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(textfile_path(&file)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        let err = textfile_path(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("No such file"), "{err:#}");
    }
}
