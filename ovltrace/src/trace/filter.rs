//! Which copy-ups a trace counts: `--container`, `--image`, `--comm`,
//! `--min-latency` and the window of `run -- CMD`, applied in user space.
//!
//! What needs only the event (command name, latency, start time) is decided
//! before attribution; what needs the container (name, id, image) once the
//! copy-up is attributed, from a verdict per container id that is refreshed
//! at every rescan. The kernel filters by container too when it can (every
//! `--container` named a running container at the start): see
//! [`crate::trace::Session::start`].

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use crate::{
    bpf::event::{Comm, CopyUp},
    catalog::{ContainerInfo, ImageInfo},
    report::Filters,
};

/// The time window of a trace, in the kernel's monotonic clock (the clock of
/// [`CopyUp::start_ns`]): copy-ups that started before `from_ns` or after
/// the end are not counted. The end is set from elsewhere (when a command
/// exits) and is `u64::MAX` until then.
#[derive(Debug, Clone)]
pub struct Window {
    pub from_ns: u64,
    pub until_ns: Arc<AtomicU64>,
}

impl Window {
    /// A window that starts now and has no end yet.
    pub fn starting_now() -> Self {
        Self {
            from_ns: monotonic_ns(),
            until_ns: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// Ends the window now.
    pub fn end_now(&self) {
        self.until_ns.store(monotonic_ns(), Ordering::SeqCst);
    }

    pub fn contains(&self, start_ns: u64) -> bool {
        start_ns >= self.from_ns && start_ns <= self.until_ns.load(Ordering::Relaxed)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// What the filter says of a copy-up's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
    /// A container the filter has not been told about (see [`Filter::learn`]).
    Unknown,
}

/// The filters of a running trace, and how many copy-ups they dropped.
#[derive(Debug, Default)]
pub struct Filter {
    /// As the user gave them (and as the report names them).
    spec: Filters,
    comms: Vec<Comm>,
    min_latency_ns: u64,
    window: Option<Window>,
    /// Container id -> whether its copy-ups are counted.
    verdicts: HashMap<String, bool>,
    /// Copy-ups received and not counted.
    pub dropped: u64,
}

impl Filter {
    /// `spec`'s `command` and `containers_in_kernel` are set by the trace
    /// ([`set_window`](Self::set_window), [`describe`](Self::describe)).
    pub fn new(spec: Filters) -> Self {
        Self {
            comms: spec.comms.iter().map(|c| Comm::from(c.as_str())).collect(),
            min_latency_ns: spec.min_latency_ns.unwrap_or(0),
            spec,
            ..Default::default()
        }
    }

    /// Counts only copy-ups that start in `window`, which is `command`'s run.
    pub fn set_window(&mut self, window: Window, command: String) {
        self.window = Some(window);
        self.spec.command = Some(command);
    }

    /// Whether copy-ups are kept or dropped by their container.
    pub fn by_container(&self) -> bool {
        !self.spec.containers.is_empty() || !self.spec.images.is_empty()
    }

    /// What the event alone says: its command name, latency and start.
    pub fn event_passes(&self, ev: &CopyUp) -> bool {
        (self.comms.is_empty() || self.comms.contains(&ev.comm))
            && ev.latency_ns >= self.min_latency_ns
            && self.window.as_ref().is_none_or(|w| w.contains(ev.start_ns))
    }

    /// What the copy-up's container (None: no container's) says.
    pub fn verdict(&self, container: Option<&str>) -> Verdict {
        if !self.by_container() {
            return Verdict::Keep;
        }
        match container {
            None => Verdict::Drop,
            Some(id) => match self.verdicts.get(id) {
                Some(true) => Verdict::Keep,
                Some(false) => Verdict::Drop,
                None => Verdict::Unknown,
            },
        }
    }

    /// Decides (again) about `c`: its name may have changed, and a waited-for
    /// name may have appeared. Returns the verdict.
    pub fn learn(&mut self, c: &ContainerInfo) -> bool {
        let keep = self.container_matches(c);
        self.verdicts.insert(c.id.clone(), keep);
        keep
    }

    /// Whether `c` matches the container and image filters.
    pub fn container_matches(&self, c: &ContainerInfo) -> bool {
        (self.spec.containers.is_empty() || self.spec.containers.iter().any(|f| c.matches(f)))
            && (self.spec.images.is_empty()
                || self.spec.images.iter().any(|f| image_matches(f, &c.image)))
    }

    /// The `--container` names that match none of `running`.
    pub fn awaited<'a>(&self, running: impl IntoIterator<Item = &'a ContainerInfo>) -> Vec<String> {
        let running: Vec<&ContainerInfo> = running.into_iter().collect();
        self.spec
            .containers
            .iter()
            .filter(|f| !running.iter().any(|c| c.matches(f)))
            .cloned()
            .collect()
    }

    /// The filters as the report names them.
    pub fn describe(&self, containers_in_kernel: bool) -> Filters {
        Filters {
            min_latency_ns: (self.min_latency_ns > 0).then_some(self.min_latency_ns),
            containers_in_kernel: containers_in_kernel && !self.spec.containers.is_empty(),
            ..self.spec.clone()
        }
    }
}

/// Whether `image` is what `filter` names: an id prefix (`sha256:abc...` or
/// at least 4 hex digits), `NAME:TAG` (exactly, Docker Hub's `docker.io/`
/// and `library/` prefixes aside), or `NAME` with any tag.
pub fn image_matches(filter: &str, image: &ImageInfo) -> bool {
    let filter = filter.trim();
    if filter.is_empty() {
        return false;
    }
    if let Some(id) = &image.id {
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        if let Some(want) = filter.strip_prefix("sha256:") {
            if !want.is_empty() && hex.starts_with(want) {
                return true;
            }
        } else if filter.len() >= 4
            && filter.bytes().all(|b| b.is_ascii_hexdigit())
            && hex.starts_with(&filter.to_ascii_lowercase())
        {
            return true;
        }
    }
    let want = normalize(filter);
    let has_tag = tag_of(&want).is_some();
    image.tags.iter().any(|t| {
        let t = normalize(t);
        if has_tag {
            t == want
        } else {
            repo_of(&t) == want
        }
    })
}

/// `docker.io/library/x:t` and `library/x:t` are `x:t`.
fn normalize(name: &str) -> String {
    let n = name.strip_prefix("docker.io/").unwrap_or(name);
    n.strip_prefix("library/").unwrap_or(n).to_string()
}

/// The tag of `repo:tag` (a colon after the last slash: not a registry port).
fn tag_of(name: &str) -> Option<&str> {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':').map(|(_, t)| t)
}

fn repo_of(name: &str) -> &str {
    match tag_of(name) {
        Some(t) => &name[..name.len() - t.len() - 1],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        bpf::event::{FileKind, OverlayKey},
        sys::mounts::Dev,
    };

    fn image(id: &str, tags: &[&str]) -> ImageInfo {
        ImageInfo {
            id: Some(id.into()),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn container(id: &str, name: &str, img: ImageInfo) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: Some(name.into()),
            image: img,
            mountpoint: "/m".into(),
            dev: Dev::new(0, 1),
            runtime: "docker",
            upperdir: None,
            layers: vec![],
            pod: None,
            mount_id: 1,
        }
    }

    fn ev(comm: &str, latency_ns: u64, start_ns: u64) -> CopyUp {
        CopyUp {
            start_ns,
            latency_ns,
            data_ns: None,
            data_len: None,
            size: 0,
            tgid: 1,
            tid: 1,
            overlay: OverlayKey::dev_only(1),
            ret: 0,
            kind: FileKind::Regular,
            path: b"f".to_vec(),
            path_truncated: false,
            comm: comm.into(),
            mnt_ns: 0,
            cause: Default::default(),
            source: None,
        }
    }

    #[test]
    fn images_by_name_tag_and_id() {
        let img = image(
            "sha256:0123456789abcdef",
            &[
                "myapp:1.2",
                "docker.io/library/alpine:3.19",
                "reg:5000/team/app:v1",
            ],
        );
        for yes in [
            "myapp",
            "myapp:1.2",
            "alpine",
            "alpine:3.19",
            "library/alpine:3.19",
            "docker.io/alpine",
            "reg:5000/team/app",
            "reg:5000/team/app:v1",
            "sha256:0123",
            "01234567",
            "0123456789ABCDEF",
        ] {
            assert!(image_matches(yes, &img), "{yes}");
        }
        for no in [
            "myapp:1.3",
            "myap",
            "alpine:3",
            "reg:5000/team/app:v2",
            "reg",
            "sha256:1",
            "012",
            "fedc",
            "",
            "app",
        ] {
            assert!(!image_matches(no, &img), "{no}");
        }
        // An untagged image matches by id only.
        assert!(!image_matches("x", &ImageInfo::default()));
    }

    #[test]
    fn event_filters_comm_latency_and_window() {
        let f = Filter::new(Filters {
            comms: vec!["chown".into(), "a-very-long-command-name".into()],
            min_latency_ns: Some(10_000_000),
            ..Default::default()
        });
        assert!(f.event_passes(&ev("chown", 10_000_000, 5)));
        assert!(
            !f.event_passes(&ev("chown", 9_999_999, 5)),
            "below the threshold"
        );
        assert!(
            !f.event_passes(&ev("chmod", 20_000_000, 5)),
            "another command"
        );
        // The kernel keeps 15 bytes of a command name: so does the filter.
        assert!(f.event_passes(&ev("a-very-long-command-name", 10_000_000, 5)));
        assert!(f.event_passes(&ev("a-very-long-com", 10_000_000, 5)));
        // No filters: everything passes.
        assert!(Filter::new(Filters::default()).event_passes(&ev("x", 0, 0)));

        let mut f = Filter::new(Filters::default());
        let w = Window {
            from_ns: 100,
            until_ns: Arc::new(AtomicU64::new(u64::MAX)),
        };
        f.set_window(w.clone(), "sh -c x".into());
        assert!(
            !f.event_passes(&ev("x", 0, 99)),
            "before the command started"
        );
        assert!(f.event_passes(&ev("x", 0, 100)));
        assert!(f.event_passes(&ev("x", 0, u64::MAX - 1)), "no end yet");
        w.until_ns.store(200, Ordering::SeqCst);
        assert!(f.event_passes(&ev("x", 0, 200)));
        assert!(
            !f.event_passes(&ev("x", 0, 201)),
            "after the command exited"
        );
    }

    #[test]
    fn window_ends_now_on_the_kernels_clock() {
        let w = Window::starting_now();
        assert!(w.contains(monotonic_ns()));
        assert!(!w.contains(w.from_ns - 1));
        w.end_now();
        let end = w.until_ns.load(Ordering::SeqCst);
        assert!(end >= w.from_ns && end != u64::MAX);
        assert!(!w.contains(end + 1));
    }

    #[test]
    fn containers_by_name_id_and_image_all_of_them() {
        let web = container(&"a".repeat(64), "web", image("sha256:11", &["nginx:1.25"]));
        let db = container(&"b".repeat(64), "db", image("sha256:22", &["postgres:16"]));
        let mut f = Filter::new(Filters {
            containers: vec!["web".into(), "late".into()],
            ..Default::default()
        });
        assert!(f.by_container());
        assert_eq!(f.verdict(Some(&web.id)), Verdict::Unknown);
        assert!(f.learn(&web));
        assert!(!f.learn(&db));
        assert_eq!(f.verdict(Some(&web.id)), Verdict::Keep);
        assert_eq!(f.verdict(Some(&db.id)), Verdict::Drop);
        assert_eq!(f.verdict(None), Verdict::Drop, "not a container's");
        // `late` is not running yet: waited for.
        assert_eq!(f.awaited([&web, &db]), vec!["late".to_string()]);
        let late = container(&"c".repeat(64), "late", image("sha256:33", &["x:1"]));
        assert!(f.learn(&late));
        assert!(f.awaited([&web, &late]).is_empty());

        // Image and container filters must both match.
        let mut f = Filter::new(Filters {
            containers: vec!["aaaa".into(), "db".into()],
            images: vec!["nginx".into()],
            ..Default::default()
        });
        assert!(f.learn(&web));
        assert!(!f.learn(&db), "db is no nginx");
        // Without container filters nothing is kept or dropped by container.
        let f = Filter::new(Filters {
            comms: vec!["x".into()],
            ..Default::default()
        });
        assert!(!f.by_container());
        assert_eq!(f.verdict(None), Verdict::Keep);
        assert!(f.awaited([&web]).is_empty());
    }

    #[test]
    fn the_report_names_the_filters() {
        let mut f = Filter::new(Filters {
            containers: vec!["late".into()],
            images: vec!["nginx:1.25".into()],
            comms: vec!["chown".into()],
            min_latency_ns: Some(10_000_000),
            ..Default::default()
        });
        f.set_window(Window::starting_now(), "sh -c 'exit 3'".into());
        let d = f.describe(false);
        assert_eq!(d.min_latency_ns, Some(10_000_000));
        assert!(!d.containers_in_kernel);
        assert_eq!(
            d.summary(),
            "container late, image nginx:1.25, comm chown, min latency 10.00ms, \
             while `sh -c 'exit 3'` ran"
        );
        assert!(f.describe(true).containers_in_kernel);
        let none = Filter::new(Filters::default()).describe(true);
        assert!(none.is_empty());
        assert!(!none.containers_in_kernel, "no container filter to apply");
    }
}
