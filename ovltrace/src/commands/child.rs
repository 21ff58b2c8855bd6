//! `run -- CMD`: the command a trace is the window of. It is started once
//! the probes are attached, its exit ends the trace, and its exit status
//! becomes ovltrace's.
//!
//! CMD runs as ovltrace does (root under sudo: as `perf stat -- CMD` and
//! `bpftrace -c CMD` do; tracing needs root, and the usual CMD, `docker run`,
//! needs it or the docker group too), with ovltrace's environment, standard
//! streams and process group: Ctrl-C on the terminal reaches it directly.

use std::{
    cell::Cell, future::Future, os::unix::process::ExitStatusExt as _, process::ExitStatus, rc::Rc,
    time::Duration,
};

use anyhow::{anyhow, Context as _, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::trace::Window;

/// Exit status when CMD cannot be found (as a shell says).
pub const NOT_FOUND: u8 = 127;
/// Exit status when CMD cannot be executed.
pub const NOT_EXECUTABLE: u8 = 126;

/// A started command.
pub struct Command {
    child: tokio::process::Child,
    pid: i32,
}

/// Why CMD did not start, and the exit status that says so.
#[derive(Debug)]
pub struct SpawnError {
    pub code: u8,
    pub error: anyhow::Error,
}

/// Starts `argv`.
pub fn spawn(argv: &[String]) -> Result<Command, SpawnError> {
    let Some((program, args)) = argv.split_first().filter(|(p, _)| !p.is_empty()) else {
        return Err(SpawnError {
            code: NOT_FOUND,
            error: anyhow!("no command given after --"),
        });
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        // Should ovltrace fail while CMD runs, CMD does not outlive it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SpawnError {
            code: spawn_failure_code(e.kind()),
            error: anyhow::Error::new(e).context(format!(
                "cannot start {}",
                crate::text::terminal(&quoted(argv))
            )),
        })?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| SpawnError {
            code: NOT_EXECUTABLE,
            error: anyhow!("the started command has no process id"),
        })?;
    Ok(Command { child, pid })
}

/// 127 when the program does not exist, 126 for any other failure to start it.
pub fn spawn_failure_code(kind: std::io::ErrorKind) -> u8 {
    match kind {
        std::io::ErrorKind::NotFound => NOT_FOUND,
        _ => NOT_EXECUTABLE,
    }
}

/// ovltrace's exit status for CMD's: its exit code, or 128+N when signal N
/// ended it (as a shell reports it).
pub fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return (code & 0xff) as u8;
    }
    match status.signal() {
        Some(sig) => u8::try_from(128 + (sig & 0x7f)).unwrap_or(u8::MAX),
        None => 1,
    }
}

/// `argv` as a shell would read it back: `sh -c 'exit 3'`.
pub fn quoted(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_./:=@%+,-".contains(&b));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where the stop future leaves CMD's exit status.
#[derive(Clone, Default)]
pub struct Outcome(Rc<Cell<Option<ExitStatus>>>);

impl Outcome {
    pub fn status(&self) -> Option<ExitStatus> {
        self.0.get()
    }
}

/// Which signals sent to ovltrace are passed on to CMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// CMD got it too (the terminal signals its foreground process group).
    No,
    Yes,
}

/// SIGINT reaches CMD from the terminal when ovltrace's process group is
/// the terminal's foreground group; otherwise (`kill -INT`, no terminal)
/// it is passed on.
pub fn sigint_forward(foreground_group: Option<i32>, own_group: i32) -> Forward {
    if foreground_group == Some(own_group) {
        Forward::No
    } else {
        Forward::Yes
    }
}

fn foreground_group() -> Option<i32> {
    // SAFETY: tcgetpgrp only reads the terminal's state.
    let g = unsafe { libc::tcgetpgrp(libc::STDIN_FILENO) };
    (g > 0).then_some(g)
}

fn own_group() -> i32 {
    // SAFETY: getpgrp has no preconditions.
    unsafe { libc::getpgrp() }
}

impl Command {
    /// Completes when CMD has exited: its status is then in `outcome`, and
    /// `window` ends. SIGTERM and SIGHUP sent to ovltrace are passed on to
    /// CMD, and SIGINT as [`sigint_forward`] says; after `duration` CMD is
    /// sent SIGTERM. The trace goes on until CMD exits.
    pub fn supervise(
        mut self,
        duration: Option<Duration>,
        window: Window,
        outcome: Outcome,
    ) -> Result<impl Future<Output = ()>> {
        let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let deadline = duration.map(|d| tokio::time::Instant::now() + d);
        Ok(async move {
            let pid = self.pid;
            let send = |sig: i32| {
                // SAFETY: kill has no memory preconditions; `pid` is our
                // child, not reaped before `wait` below returns.
                unsafe { libc::kill(pid, sig) };
            };
            let mut timed_out = false;
            let wait = self.child.wait();
            tokio::pin!(wait);
            let status = loop {
                let sleep = async {
                    match deadline {
                        Some(d) if !timed_out => tokio::time::sleep_until(d).await,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    status = &mut wait => break status,
                    _ = sigint.recv() => {
                        if sigint_forward(foreground_group(), own_group()) == Forward::Yes {
                            send(libc::SIGINT);
                        }
                    }
                    _ = sigterm.recv() => send(libc::SIGTERM),
                    _ = sighup.recv() => send(libc::SIGHUP),
                    _ = sleep => {
                        timed_out = true;
                        eprintln!("ovltrace: --duration is over: sending the command SIGTERM");
                        send(libc::SIGTERM);
                    }
                }
            };
            window.end_now();
            match status {
                Ok(s) => outcome.0.set(Some(s)),
                Err(e) => log::warn!("waiting for the command: {e}"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(raw: i32) -> ExitStatus {
        ExitStatus::from_raw(raw)
    }

    #[test]
    fn exit_status_passes_through() {
        // wait(2) encodings: exit code in the second byte, signal in the first.
        assert_eq!(exit_code(status(0)), 0);
        assert_eq!(exit_code(status(3 << 8)), 3);
        assert_eq!(exit_code(status(255 << 8)), 255);
        assert_eq!(exit_code(status(libc::SIGINT)), 130);
        assert_eq!(exit_code(status(libc::SIGKILL)), 137);
        assert_eq!(exit_code(status(libc::SIGTERM | 0x80)), 143, "core dumped");
    }

    #[test]
    fn failures_to_start_are_told_apart() {
        use std::io::ErrorKind;
        assert_eq!(spawn_failure_code(ErrorKind::NotFound), 127);
        assert_eq!(spawn_failure_code(ErrorKind::PermissionDenied), 126);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let e = spawn(&["/nonexistent/ovltrace-test-cmd".into()])
                .err()
                .unwrap();
            assert_eq!(e.code, 127);
            let msg = format!("{:#}", e.error);
            assert!(
                msg.starts_with("cannot start /nonexistent/ovltrace-test-cmd: "),
                "{msg}"
            );
            let dir = tempfile::tempdir().unwrap();
            let e = spawn(&[dir.path().display().to_string()]).err().unwrap();
            assert_eq!(e.code, 126, "a directory cannot be executed");
            assert_eq!(spawn(&[]).err().unwrap().code, 127);
        });
    }

    #[test]
    fn the_command_ends_the_window_with_its_status() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let window = Window::starting_now();
            let cmd = spawn(&["sh".into(), "-c".into(), "exit 3".into()]).unwrap();
            let outcome = Outcome::default();
            cmd.supervise(None, window.clone(), outcome.clone())
                .unwrap()
                .await;
            assert_eq!(outcome.status().map(exit_code), Some(3));
            let end = window.until_ns.load(std::sync::atomic::Ordering::SeqCst);
            assert!(end != u64::MAX && end >= window.from_ns);

            // --duration: SIGTERM, then the trace waits for the exit.
            let cmd = spawn(&["sleep".into(), "30".into()]).unwrap();
            let outcome = Outcome::default();
            let t = std::time::Instant::now();
            cmd.supervise(
                Some(Duration::from_millis(100)),
                Window::starting_now(),
                outcome.clone(),
            )
            .unwrap()
            .await;
            assert_eq!(
                outcome.status().map(exit_code),
                Some(128 + libc::SIGTERM as u8)
            );
            assert!(t.elapsed() < Duration::from_secs(10));
        });
    }

    #[test]
    fn sigint_is_passed_on_unless_the_terminal_sent_it() {
        assert_eq!(sigint_forward(Some(42), 42), Forward::No);
        assert_eq!(sigint_forward(Some(7), 42), Forward::Yes);
        assert_eq!(sigint_forward(None, 42), Forward::Yes);
    }

    #[test]
    fn commands_are_quoted_for_a_shell() {
        let argv: Vec<String> = ["sh", "-c", "echo x; exit 3", "it's", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(quoted(&argv), r"sh -c 'echo x; exit 3' 'it'\''s' ''");
    }
}
