//! The agent's open-file budget. At start the soft `RLIMIT_NOFILE` is raised to the hard limit;
//! files are opened only with a permit, and the permits leave a reserve for connections, the
//! checkpoint file and the log. When they run out, files read to their end and acknowledged are
//! closed (rotated ones first) and the others wait: no file is dropped, none fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Descriptors never used for tailed files: connections, the checkpoint file and its lock, the
/// log, inotify, the runtime.
pub const RESERVE: usize = 64;

#[derive(Debug)]
pub struct OpenFiles {
    limit: usize,
    open: AtomicUsize,
    /// Files each flow could not open at its last scan.
    waiting: Mutex<HashMap<usize, usize>>,
}

/// One open file's share of the budget, given back when dropped (with the file).
#[derive(Debug)]
pub struct Permit(Arc<OpenFiles>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl OpenFiles {
    pub fn new(limit: usize) -> Arc<OpenFiles> {
        Arc::new(OpenFiles { limit: limit.max(1), open: AtomicUsize::new(0), waiting: Mutex::default() })
    }

    /// Raise the soft limit on open files to the hard one; the budget is that less `reserve`.
    /// Returns it with a line for the log.
    pub fn from_system(reserve: usize) -> (Arc<OpenFiles>, String) {
        let (soft, hard, raised) = raise_nofile();
        // A tiny limit still leaves a few files, whatever the reserve.
        let limit = soft.saturating_sub(reserve).max(soft / 4).max(1);
        let note = format!(
            "open files: up to {limit} tailed at once (RLIMIT_NOFILE {soft}{}, {reserve} kept for connections and the checkpoint)",
            if raised { format!(", raised to the hard limit {hard}") } else { String::new() }
        );
        (OpenFiles::new(limit), note)
    }

    pub fn take(self: &Arc<Self>) -> Option<Permit> {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.limit).then_some(n + 1))
            .ok()
            .map(|_| Permit(self.clone()))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Flow `flow` has `n` files waiting for a permit (0: none).
    pub fn set_waiting(&self, flow: usize, n: usize) {
        let mut w = self.waiting.lock().unwrap();
        if n == 0 {
            w.remove(&flow);
        } else {
            w.insert(flow, n);
        }
    }

    /// Files waiting for a permit, over all flows: while there are, flows close what they can.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().unwrap().values().sum()
    }
}

/// The soft and hard limits after raising the soft one (and whether it was raised).
fn raise_nofile() -> (usize, usize, bool) {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return (1024, 1024, false);
    }
    let clamp = |v: libc::rlim_t| if v == libc::RLIM_INFINITY { 1 << 20 } else { (v as usize).min(1 << 20) };
    let (soft, hard) = (rl.rlim_cur, rl.rlim_max);
    if soft < hard {
        let raised = libc::rlimit { rlim_cur: hard, rlim_max: hard };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return (clamp(hard), clamp(hard), true);
        }
    }
    (clamp(soft), clamp(hard), false)
}

/// Whether an `open` failed for want of descriptors (the process's or the system's).
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_given_back() {
        let b = OpenFiles::new(2);
        let p1 = b.take().unwrap();
        let _p2 = b.take().unwrap();
        assert!(b.take().is_none());
        assert_eq!(b.open(), 2);
        drop(p1);
        assert!(b.take().is_some());
        b.set_waiting(0, 3);
        b.set_waiting(1, 1);
        assert_eq!(b.waiting(), 4);
        b.set_waiting(0, 0);
        assert_eq!(b.waiting(), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (b, note) = OpenFiles::from_system(RESERVE);
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as in raise_nofile.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
        assert_eq!(rl.rlim_cur, rl.rlim_max);
        assert!(b.limit() >= 1, "{note}");
    }
}
