//! bench-measure OUT -- COMMAND [ARGS…]: runs COMMAND, waits for it with wait4, and writes its
//! CPU time and peak RSS to OUT as JSON; exits with its exit code.
//!
//! Why not let the harness (Python) wait for the command itself: a child's peak RSS as wait4
//! reports it (`ru_maxrss`) includes the memory of the process it was forked from, up to its
//! exec — 25 MiB of Python for every command the harness would start. Started from this small
//! process instead, the command's figure carries about 1 MiB of it.
//!
//! SIGTERM and SIGINT are passed on to the command (the harness signals the whole session, so
//! the command usually has them already); this process stays to report.

use std::ffi::c_int;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn pass_on(sig: c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, command) = match args.as_slice() {
        [out, dashes, command @ ..] if dashes == "--" && !command.is_empty() => (out.clone(), command.to_vec()),
        _ => {
            eprintln!("usage: bench-measure OUT.json -- COMMAND [ARGS...]");
            std::process::exit(2);
        }
    };
    // A handler (not SIG_IGN, which the command would inherit): exec resets it to the default.
    let handler = pass_on as extern "C" fn(c_int) as libc::sighandler_t;
    // SAFETY: installs a handler that only calls kill.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
    let child = match Command::new(&command[0]).args(&command[1..]).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench-measure: cannot run {}: {e}", command[0]);
            std::process::exit(127);
        }
    };
    let pid = child.id() as i32;
    CHILD.store(pid, Ordering::SeqCst);
    let mut status: c_int = 0;
    // SAFETY: rusage is plain data, filled by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            eprintln!("bench-measure: wait4: {}", std::io::Error::last_os_error());
            std::process::exit(125);
        }
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let (code, signal) = if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), 0)
    } else {
        (128 + libc::WTERMSIG(status), libc::WTERMSIG(status))
    };
    let report = format!(
        "{{\"exit_code\": {code}, \"signal\": {signal}, \"user_s\": {:.6}, \"system_s\": {:.6}, \"max_rss_kib\": {}}}\n",
        seconds(usage.ru_utime),
        seconds(usage.ru_stime),
        usage.ru_maxrss
    );
    if let Err(e) = std::fs::write(&out, report) {
        eprintln!("bench-measure: cannot write {out}: {e}");
    }
    std::process::exit(code);
}
