//! `cargo xtask demo`: boots a 6.12 VM with dockerd, loads the demo image and
//! runs the embedded workload (demo.sh): two containers write to files from
//! different image layers while ovltrace traces, then its report.
//!
//! The demo image (`demo/shop-api:2.3`: a busybox base and four layers made
//! by COPY and RUN instructions) is built offline with the host's dockerd
//! (started for the build and stopped again if none was running), saved, and
//! cached under the cache directory keyed by a hash of everything it is made
//! from; later runs need no dockerd on the host. Building it inside the VM
//! instead would need no host daemon at all, but under TCG the legacy builder
//! took 100 s (import and five instructions) against 6 s on the host, paid on
//! every run since nothing can be cached from inside the VM.

use std::{
    fs,
    io::IsTerminal,
    os::unix::{fs::symlink, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{kernels::Series, say, util, vm};

const DEMO_SCRIPT: &str = include_str!("demo.sh");

/// The demo image's tag (demo.sh runs it).
const TAG: &str = "demo/shop-api:2.3";
const BASE_TAG: &str = "demo/busybox:1";

/// Built FROM the imported busybox base; the build context holds
/// catalog.db and app.conf (see `build_context`).
const DOCKERFILE: &str = "\
FROM demo/busybox:1
COPY catalog.db /var/lib/app/catalog.db
RUN mkdir -p /var/cache/app && dd if=/dev/zero of=/var/cache/app/index.bin bs=65536 count=64
RUN mkdir -p /srv/static && for i in $(seq 1 300); do echo \"asset $i\" > /srv/static/asset-$i.css; done
COPY app.conf /etc/app/app.conf
ENV APP_ENV=production
CMD [\"/bin/sh\"]
";
/// Size of catalog.db (COPY'd into the image).
const CATALOG_BYTES: usize = 16 << 20;
const APP_CONF: &str = "listen=8080\nlog=/var/log/app.log\n";
const BUSYBOX: &str = "/bin/busybox";

pub fn run() -> Result<ExitCode> {
    let dir = util::cache_dir()?.join("demo");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let image = demo_image(&dir)?;
    let script = dir.join("demo.sh");
    let color = if std::io::stdout().is_terminal() {
        "always"
    } else {
        "never"
    };
    fs::write(&script, format!("COLOR={color}\n{DEMO_SCRIPT}"))
        .with_context(|| format!("writing {}", script.display()))?;
    let script = script.to_str().context("non-UTF-8 cache path")?.to_string();
    let args = vm::VmArgs {
        kernel: Series::V6_12,
        mem: None,
        smp: None,
        timeout: 900,
        include: vec![format!("{script}:/host/demo.sh")],
        icount: false,
        console: false,
        with: vec![vm::With::Docker],
        docker_image: vec![image],
        append: None,
        no_build: false,
        cmd: vec!["sh".into(), "/host/demo.sh".into()],
    };
    vm::run(&args)
}

/// The cached `docker save` tarball of the demo image, built if missing.
fn demo_image(dir: &Path) -> Result<PathBuf> {
    let busybox =
        fs::read(BUSYBOX).with_context(|| format!("reading {BUSYBOX} (package busybox-static)"))?;
    let key = util::Fnv::default()
        .update(TAG.as_bytes())
        .update(DOCKERFILE.as_bytes())
        .update(APP_CONF.as_bytes())
        .update(&CATALOG_BYTES.to_le_bytes())
        .update(&busybox)
        .hex();
    let tar = dir.join(format!("shop-api-{key}.tar"));
    if tar.is_file() {
        return Ok(tar);
    }
    let _lock = util::FileLock::acquire(&dir.join("image.lock"))?;
    if tar.is_file() {
        return Ok(tar);
    }
    say!(
        "demo: building the demo image {TAG} (once; cached in {})",
        dir.display()
    );
    let started = Instant::now();
    let _daemon = HostDockerd::ensure(dir)?;
    let work = dir.join(format!("build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let result = build(&work, &tar);
    let _ = fs::remove_dir_all(&work);
    result?;
    say!(
        "demo: image built and saved in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(tar)
}

fn build(work: &Path, tar: &Path) -> Result<()> {
    // The base: busybox and a link per applet, imported as one layer.
    let root = work.join("rootfs");
    for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(d)).with_context(|| format!("creating rootfs/{d}"))?;
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).context("copying busybox")?;
    let applets = util::output(Command::new(BUSYBOX).arg("--list"))?;
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        symlink("busybox", root.join("bin").join(applet))
            .with_context(|| format!("linking bin/{applet}"))?;
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .context("writing etc/passwd")?;
    fs::write(root.join("etc/group"), "root:x:0:\n").context("writing etc/group")?;
    let rootfs_tar = work.join("rootfs.tar");
    util::run(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&rootfs_tar)
            .arg("."),
    )?;
    docker(&[
        "import".as_ref(),
        "-c".as_ref(),
        "CMD [\"/bin/sh\"]".as_ref(),
        "-m".as_ref(),
        "ovltrace demo base (busybox-static)".as_ref(),
        rootfs_tar.as_os_str(),
        BASE_TAG.as_ref(),
    ])?;

    let ctx = work.join("context");
    fs::create_dir_all(&ctx).context("creating the build context")?;
    let catalog: Vec<u8> = b"sku;name;price\n"
        .iter()
        .copied()
        .cycle()
        .take(CATALOG_BYTES)
        .collect();
    fs::write(ctx.join("catalog.db"), catalog).context("writing catalog.db")?;
    fs::write(ctx.join("app.conf"), APP_CONF).context("writing app.conf")?;
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).context("writing the Dockerfile")?;
    let mut cmd = docker_cmd();
    cmd.args(["build", "-q", "-t", TAG]).arg(&ctx);
    cmd.env("DOCKER_BUILDKIT", "0");
    util::output(&mut cmd)?;

    let tmp = util::tmp_sibling(tar);
    docker(&[
        "save".as_ref(),
        "-o".as_ref(),
        tmp.as_os_str(),
        TAG.as_ref(),
    ])?;
    fs::rename(&tmp, tar).with_context(|| format!("renaming to {}", tar.display()))?;
    Ok(())
}

/// Debian's docker CLI (another `docker` may come first on PATH).
fn docker_cmd() -> Command {
    let cli = if Path::new("/usr/bin/docker").is_file() {
        "/usr/bin/docker"
    } else {
        "docker"
    };
    Command::new(cli)
}

fn docker(args: &[&std::ffi::OsStr]) -> Result<String> {
    util::output(docker_cmd().args(args))
}

fn daemon_answers() -> bool {
    docker_cmd()
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A host dockerd for the build: the running one, or one started here and
/// stopped (SIGTERM, then waited for) when dropped.
struct HostDockerd(Option<Child>);

impl HostDockerd {
    fn ensure(dir: &Path) -> Result<Self> {
        if daemon_answers() {
            return Ok(Self(None));
        }
        let log_path = dir.join("dockerd.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log2 = log.try_clone().context("duplicating the log file")?;
        say!(
            "demo: starting dockerd for the build (log: {})",
            log_path.display()
        );
        let mut cmd = Command::new("dockerd");
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        // SAFETY: setsid is async-signal-safe; the daemon must not get the
        // terminal's Ctrl-C before it has been stopped cleanly.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .context("starting dockerd (package docker.io; run `cargo xtask setup`)")?;
        let mut daemon = Self(Some(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if daemon_answers() {
                return Ok(daemon);
            }
            if let Some(Ok(Some(status))) = daemon.0.as_mut().map(Child::try_wait) {
                daemon.0 = None;
                bail!("dockerd exited ({status}); see {}", log_path.display());
            }
            thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "dockerd did not answer within 60 s; see {}",
            log_path.display()
        )
    }
}

impl Drop for HostDockerd {
    fn drop(&mut self) {
        let Some(child) = self.0.as_mut() else { return };
        // SAFETY: a plain signal to the child we started and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
