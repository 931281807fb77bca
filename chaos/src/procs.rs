//! Child processes: spawned with PR_SET_PDEATHSIG (none outlives the run, even a crashed
//! one), signalled and killed by PID.

#![allow(unsafe_code)] // prctl(PR_SET_PDEATHSIG) in pre_exec, as tests/support/zk.rs does.

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command},
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal, kill_process};

/// Spawns `cmd` so that it is SIGKILLed when the spawning thread ends.
pub fn spawn(mut cmd: Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when
    // the thread that spawned it ends.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends SIGSTOP (`stop`) or SIGCONT to `pid`.
pub fn pause(pid: u32, stop: bool) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = kill_process(pid, if stop { Signal::STOP } else { Signal::CONT });
    }
}

/// SIGKILLs `child` (by PID) and reaps it.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits at most `timeout` for `child` to exit by itself, then SIGKILLs it.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGKILL also ends a stopped process.
    kill(child);
}
