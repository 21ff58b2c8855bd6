//! Small helpers shared by the subcommands: running processes, well-known
//! paths, file locks and hashing for cache keys.

use std::{
    env,
    ffi::OsStr,
    fs::{self, File},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{bail, Context, Result};

/// Prints a harness message on stderr. Every line the harness itself writes
/// starts with `xtask: ` so it can be told apart from a guest command's output.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("xtask: {}", format_args!($($arg)*))
    };
}

/// The workspace root (the parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo binary to use for nested builds: the one running us, if known.
pub fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Where downloaded kernels and cached initramfs parts live.
/// `OVLTRACE_CACHE` overrides the default `~/.cache/ovltrace`.
pub fn cache_dir() -> Result<PathBuf> {
    let dir = match env::var_os("OVLTRACE_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home = env::var_os("HOME").context("neither OVLTRACE_CACHE nor HOME is set")?;
            PathBuf::from(home).join(".cache/ovltrace")
        }
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating cache dir {}", dir.display()))?;
    Ok(dir)
}

/// A readable one-line rendering of a command for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs a command with inherited stdio; fails unless it exits with 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed: {status}", describe(cmd));
    }
    Ok(())
}

/// Runs a command with stdout and stderr merged into one pipe, copied to
/// `log` and (when `echo`) to our stderr. On failure the error carries a
/// digest: the lines that say what failed (panics, compiler errors, failed
/// tests) and the last lines, so that the end of a long CI log tells why.
pub fn run_logged(cmd: &mut Command, log: &Path, echo: bool) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = File::create(log).with_context(|| format!("creating log {}", log.display()))?;
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    cmd.stdout(writer.try_clone().context("duplicating a pipe")?)
        .stderr(writer);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", describe(cmd)))?;
    // Our copies of the write end must go, or the reader never sees EOF.
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut digest = Digest::default();
    for line in BufReader::new(reader).split(b'\n') {
        let line = line.context("reading a child's output")?;
        let line = String::from_utf8_lossy(&line);
        if echo {
            eprintln!("{line}");
        }
        writeln!(file, "{line}").with_context(|| format!("writing {}", log.display()))?;
        digest.push(&line);
    }
    let status = child.wait().context("waiting for a child")?;
    if !status.success() {
        bail!(
            "`{}` failed: {status} (full output: {})\n{}",
            describe(cmd),
            log.display(),
            digest.render()
        );
    }
    Ok(())
}

/// What a failure digest keeps of a long output.
#[derive(Default)]
struct Digest {
    notable: Vec<String>,
    tail: std::collections::VecDeque<String>,
}

impl Digest {
    const NOTABLE: usize = 120;
    const TAIL: usize = 25;

    fn push(&mut self, line: &str) {
        let keep = [
            "panicked at",
            "error[",
            "error:",
            "FAILED",
            "failures:",
            "---- ",
            "SKIPPED",
            "assertion",
            "left:",
            "right:",
            "==ERROR",
            "SUMMARY:",
        ];
        if self.notable.len() < Self::NOTABLE && keep.iter().any(|k| line.contains(k)) {
            self.notable.push(truncate(line, 400));
        }
        if self.tail.len() == Self::TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(truncate(line, 400));
    }

    fn render(&self) -> String {
        let mut s = String::from("--- lines that say what failed:\n");
        for l in &self.notable {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("--- last lines:\n");
        for l in &self.tail {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

fn truncate(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{} [...]", &line[..i]),
        None => line.to_string(),
    }
}

/// Runs a command capturing its output; fails unless it exits with 0, and
/// then includes its stderr in the error.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = raw_output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}: {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout)
        .with_context(|| format!("non-UTF-8 output of `{}`", describe(cmd)))
}

/// Runs a command capturing its output, whatever its exit status.
pub fn raw_output(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("starting `{}`", describe(cmd)))
}

/// Whether `name` is an executable somewhere on PATH.
pub fn on_path(name: impl AsRef<OsStr>) -> Option<PathBuf> {
    let name = name.as_ref();
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An exclusive advisory lock held until dropped.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub fn acquire(path: &Path) -> Result<Self> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        // SAFETY: flock on a valid, open descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
        Ok(Self { _file: file })
    }
}

/// A temporary name next to `path`, unique to this process.
pub fn tmp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// FNV-1a, 64 bits: stable across builds, good enough for cache keys.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator so that ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        self
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Quotes a word for POSIX sh so that it is passed through unchanged.
pub fn sh_quote(word: &str) -> String {
    let mut s = String::with_capacity(word.len() + 2);
    s.push('\'');
    for c in word.chars() {
        if c == '\'' {
            s.push_str("'\\''");
        } else {
            s.push(c);
        }
    }
    s.push('\'');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("plain"), "'plain'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote("$HOME \"x\" \\n"), "'$HOME \"x\" \\n'");
    }

    #[test]
    fn fnv_separates_fields() {
        let a = Fnv::default().update(b"ab").update(b"c").hex();
        let b = Fnv::default().update(b"a").update(b"bc").hex();
        assert_ne!(a, b);
    }
}
