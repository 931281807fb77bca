//! The command `zkcoord campaign` runs while it leads, and how it is stopped.
//!
//! The command must never outlive its campaign process, not even one killed with SIGKILL
//! (which runs no clean-up): a command still running after the campaign's lease expired would
//! act as leader next to the newly elected one. The command is therefore started through the
//! hidden `zkcoord run-child --parent PID -- CMD ARGS...`, which asks Linux to send it SIGKILL
//! when its parent dies (`PR_SET_PDEATHSIG`), checks that the parent is still the campaign
//! process (it may have died in between), and then `exec`s CMD in its own place: same pid,
//! same process group, the death signal kept. All of it without `unsafe` code, which setting
//! the signal between `fork` and `exec` (`pre_exec`) would need.
//!
//! The death signal fires when the *thread* that forked the child ends, so children are
//! spawned from the runtime's only thread (client subcommands run on a current-thread
//! runtime, see [`super::run`]), which lives as long as the process.

use std::{
    ffi::OsString,
    io,
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{ExitCode, ExitStatus},
    time::Duration,
};

use clap::Args;
use rustix::process::{Pid, Signal};

/// `zkcoord run-child --parent PID -- CMD ARGS...` (internal to `campaign`).
#[derive(Debug, Args)]
pub struct RunChildArgs {
    /// The campaign process that must be alive.
    #[arg(long, value_name = "PID")]
    pub parent: i32,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Replaces this process by the command, set to be killed when the campaign process dies.
/// Returns only when that fails: 127 when the command does not exist, 126 when it cannot be
/// run, 1 when the campaign process is already gone.
pub fn run_child(args: RunChildArgs) -> ExitCode {
    if let Err(err) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        eprintln!("zkcoord: cannot tie the command to the campaign process: {err}");
        return ExitCode::from(126);
    }
    if Pid::as_raw(rustix::process::getppid()) != args.parent {
        // The campaign process died before the death signal was set.
        return ExitCode::FAILURE;
    }
    let Some((program, arguments)) = args.command.split_first() else {
        return ExitCode::from(127);
    };
    let err = std::process::Command::new(program).args(arguments).exec();
    eprintln!("zkcoord: cannot run {}: {err}", program.to_string_lossy());
    ExitCode::from(if err.kind() == io::ErrorKind::NotFound { 127 } else { 126 })
}

/// A running command.
#[derive(Debug)]
pub(crate) struct Child {
    process: tokio::process::Child,
    pid: u32,
}

impl Child {
    /// Starts `command` with the extra environment `env`, tied to this process (see the module
    /// docs). Must be called from the thread that lives as long as the process.
    ///
    /// # Errors
    /// When this executable or the process cannot be started. A command that does not exist
    /// is reported later, as exit code 127.
    pub fn spawn(command: &[OsString], env: &[(&str, String)]) -> io::Result<Self> {
        let me = std::env::current_exe()?;
        let process = tokio::process::Command::new(me)
            .arg("run-child")
            .arg("--parent")
            .arg(rustix::process::getpid().as_raw_nonzero().get().to_string())
            .arg("--")
            .args(command)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .spawn()?;
        let pid = process.id().ok_or_else(|| io::Error::other("the command exited at once"))?;
        Ok(Self { process, pid })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the command exits.
    ///
    /// # Cancellation safety
    /// Cancellation safe.
    ///
    /// # Errors
    /// When waiting fails.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.process.wait().await
    }

    /// Stops the command: SIGTERM, then SIGKILL when it has not exited after `grace`.
    /// Returns how it ended and whether SIGKILL was needed.
    ///
    /// # Errors
    /// When waiting fails.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<(ExitStatus, bool)> {
        if let Some(status) = self.process.try_wait()? {
            return Ok((status, false));
        }
        if let Some(pid) = self.process.id().and_then(|pid| Pid::from_raw(pid as i32)) {
            // Not reaped yet (`id` is None after that), so the pid is still this command's.
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        if let Ok(status) = tokio::time::timeout(grace, self.process.wait()).await {
            return Ok((status?, false));
        }
        self.process.start_kill()?;
        Ok((self.process.wait().await?, true))
    }
}

/// The exit code a shell would give for `status`: the code, or 128 + the signal number.
pub(crate) fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from((128 + signal) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}
