//! New files without a checkpoint of their own: whether each is a copy of a file followed
//! (`decide::copy_verdict`), what the originals are (live files, truncations seen, files found
//! truncated at a restart), and truncations a held-back tailer cannot see yet.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::decide::{self, Original, Verdict};
use super::follow::{Discovery, State, is_same_file};
use super::pattern::Found;
use crate::metrics::FlowMetrics;
use crate::tail::Truncation;
use crate::types::identity::FileId;
use crate::types::identity::{self, Content, Mark, OpenFile};

impl Discovery {
    /// Ask `decide::copy_verdict` about every new file without a checkpoint of its own; start
    /// those decided.
    pub(super) fn decide_pending(&self, st: &mut State) {
        if st.pending.is_empty() {
            return;
        }
        let now = Instant::now().into_std();
        for p in st.pending.values_mut() {
            let size = p.file.metadata().map(|m| m.len()).unwrap_or(p.size);
            p.seen.observe(now, p.size, size);
            p.size = size;
        }
        self.look_for_truncations(st);
        let all = self.originals(st);
        let ids: Vec<FileId> = st.pending.keys().copied().collect();
        for id in ids {
            let p = &st.pending[&id];
            let Some(content) = OpenFile::measure(&p.file) else { continue };
            // Not a copy of itself (a file truncated while the agent was stopped, say).
            let (names, originals): (Vec<PathBuf>, Vec<Original>) =
                all.iter().filter(|(of, _, _)| *of != id).map(|(_, n, o)| (n.clone(), o.clone())).unzip();
            let verdict = decide::copy_verdict(now, &content, &p.seen, &originals, !self.once);
            let (offset, marker) = match verdict {
                Verdict::Wait => {
                    if st.pending[&id].waited_on.is_none() {
                        // The file it starts like (for the log line when it is read from its start).
                        let mine = content.start(identity::START_BYTES);
                        let like = |o: &Original| match o {
                            Original::Live { start, .. } => !start.is_empty() && decide::same_start(start, &mine),
                            Original::Truncated { .. } => true,
                        };
                        let on = originals.iter().zip(&names).find(|(o, _)| like(o)).map(|(_, n)| n.clone());
                        st.pending.get_mut(&id).expect("pending").waited_on = on;
                    }
                    continue;
                }
                Verdict::Copy { original, offset } => {
                    let when = if matches!(originals[original], Original::Truncated { start: None, .. }) {
                        "made while the agent was stopped "
                    } else {
                        ""
                    };
                    tracing::info!(
                        "{} is a copy of {} {when}(copytruncate; it was seen truncated and the copy holds what it had): reading it from byte {offset}, where everything before was delivered",
                        p.path.display(),
                        names[original].display()
                    );
                    (offset, identity::marker(&p.file, offset))
                }
                Verdict::Distinct => {
                    if let Some(on) = &p.waited_on {
                        FlowMetrics::add(&self.metrics.bytes_maybe_duplicated, content.size());
                        tracing::info!(
                            "{} starts with the same bytes as {}, which was not truncated: it is a file of its own, read from its start",
                            p.path.display(),
                            on.display()
                        );
                    }
                    (0, None)
                }
            };
            let p = st.pending.remove(&id).expect("pending");
            self.start(st, id, &p.path, (p.file, p.permit), offset, marker);
        }
    }

    /// While a new file waits, the live files it may be a copy of are checked for a truncation
    /// their tailers cannot see yet (held back by a slow destination): a size below what was
    /// read, or first bytes that changed, is proof. The tailer is told.
    fn look_for_truncations(&self, st: &State) {
        let waiting: Vec<Vec<u8>> = st
            .pending
            .values()
            .map(|p| OpenFile { file: &p.file, size: p.size }.start(identity::START_BYTES))
            .collect();
        for h in st.tailers.values() {
            let slot = h.slot();
            if h.done.load(Ordering::Relaxed) || h.truncation_seen_for(slot) {
                continue;
            }
            // Nothing read of it: no copy of it can skip anything.
            let start = h.start.lock().unwrap().clone();
            if start.is_empty() || !waiting.iter().any(|mine| decide::same_start(mine, &start)) {
                continue;
            }
            // What was read, taken before the file is measured.
            let read =
                Mark { offset: h.read_offset.load(Ordering::Relaxed), head: *h.head.lock().unwrap(), marker: None };
            let path = h.path.lock().unwrap().clone();
            let Ok(file) = File::open(&path) else { continue };
            if !is_same_file(&file, h.id) {
                continue;
            }
            // Unless its tailer started over meanwhile (then what it read is of the new content).
            if OpenFile::measure(&file).is_some_and(|f| identity::rewritten(&f, &read)) && h.slot() == slot {
                *h.truncation_seen.lock().unwrap() = Some((slot, Instant::now()));
                h.wake.notify_one();
            }
        }
    }

    /// A recorded truncation as an original: `committed` counts once its records settled.
    fn truncated(&self, t: &Truncation) -> Original {
        Original::Truncated {
            at: t.at.into_std(),
            start: Some(t.start.clone()),
            head: t.head,
            settled: self.tracker.is_settled(t.slot).then_some((t.committed, t.marker)),
        }
    }

    /// The files a new file may be a copy of, with their identities and paths (for the log).
    fn originals(&self, st: &State) -> Vec<(FileId, PathBuf, Original)> {
        let mut out = Vec::new();
        for h in st.tailers.values() {
            let path = h.path.lock().unwrap().clone();
            // Its last truncation its tailer handled, and one seen that it has not yet.
            let record = h.truncated.lock().unwrap().clone();
            if let Some(t) = &record {
                out.push((h.id, path.clone(), self.truncated(t)));
            }
            let slot = h.slot();
            let seen = h.truncation_seen.lock().unwrap().filter(|(s, _)| *s == slot);
            if let Some((_, at)) = seen {
                let Some(head) = *h.head.lock().unwrap() else { continue };
                let start = h.start.lock().unwrap().clone();
                // The tailer changes the handle before it takes the new content's head: the same
                // handle now means `head` and `start` are the old content's.
                if h.slot() != slot {
                    continue;
                }
                let settled = self.tracker.settled_mark(slot);
                out.push((h.id, path, Original::Truncated { at: at.into_std(), start: Some(start), head, settled }));
                continue;
            }
            if !h.done.load(Ordering::Relaxed) {
                out.push((
                    h.id,
                    path,
                    Original::Live { start: h.start.lock().unwrap().clone(), head: *h.head.lock().unwrap() },
                ));
            }
        }
        out.extend(st.startup.iter().cloned());
        out.extend(st.closed.iter().map(|(id, path, t)| (*id, path.clone(), self.truncated(t))));
        out
    }

    /// Checkpointed files of this flow found, at the first scan, no longer holding what their
    /// checkpoint says was delivered: truncated or rewritten while the agent was stopped.
    pub(super) fn truncated_while_stopped(&self, found: &[Found]) -> Vec<(FileId, PathBuf, Original)> {
        let store = self.store.lock().unwrap();
        let now = Instant::now().into_std();
        let mut out = Vec::new();
        for e in store.entries().filter(|e| e.flow == self.flow.id && e.offset > 0) {
            let (Some(head), id) = (e.head, FileId { dev: e.dev, ino: e.ino }) else { continue };
            let Some(f) = found.iter().find(|f| f.id == id) else { continue };
            let Ok(file) = File::open(&f.path) else { continue };
            if !is_same_file(&file, id) {
                continue;
            }
            let mark = Mark { offset: e.offset, head: e.head, marker: e.marker };
            if OpenFile::measure(&file).is_some_and(|c| identity::checkpoint_trust(&mark, &c).is_err()) {
                out.push((
                    id,
                    f.path.clone(),
                    Original::Truncated { at: now, start: None, head, settled: Some((e.offset, e.marker)) },
                ));
            }
        }
        out
    }
}
