//! The simulated agent's side of the model test: its tailers read what the file system holds
//! (noticing truncation as the tailer does), the destination acknowledges, and the checkpoint
//! moves over acknowledged lines only.

use super::*;

impl World {
    pub(super) fn read_all(&mut self) {
        let now = self.now;
        let inos: Vec<u64> = self.agent.tails.keys().copied().collect();
        for ino in inos {
            if self.agent.tails[&ino].done {
                continue;
            }
            let bytes = self.fs.bytes(ino);
            let t = self.agent.tails.get_mut(&ino).unwrap();
            let mark = Mark { offset: t.read, head: t.head, marker: t.marker };
            if t.seen.is_some() || identity::rewritten(&Mem(bytes.clone()), &mark) {
                // The old content's chunks settle apart (`AckTracker::supersede`); the new content
                // is read at once.
                if self.trace {
                    eprintln!("  truncation of ino {ino} seen");
                }
                let at = t.seen.unwrap_or(now);
                let mut old = std::mem::take(&mut t.old);
                old.push(std::mem::take(&mut t.chunks));
                let mut truncated = t.truncated.take();
                if let Some(head) = t.head {
                    truncated = Some(Truncation {
                        texts: t.texts.clone(),
                        at,
                        start: t.start.clone(),
                        head,
                        committed: t.read,
                        marker: t.marker,
                        generation: old.len() - 1,
                    });
                }
                let (matched, absent) = (t.matched, t.absent);
                *t = Tail::new(0, None);
                (t.old, t.truncated, t.matched, t.absent) = (old, truncated, matched, absent);
            }
            let size = bytes.len() as u64;
            if size > t.read {
                let from = t.read;
                t.read = size;
                t.marker = marker_of(&bytes, size);
                if t.head.is_none_or(|h| (h.len as usize) < HEAD_BYTES && size > u64::from(h.len)) {
                    t.head = Some(head_of(&bytes));
                    t.start = bytes[..bytes.len().min(START_BYTES)].to_vec();
                }
                let marker = t.marker;
                let uids = self.uids(ino, from, size);
                if self.trace {
                    eprintln!("  read ino {ino} [{from}, {size}): {uids:?}");
                }
                let texts = self.texts(ino, size);
                let at = ((from / LINE) as usize..(size / LINE) as usize).map(|i| (ino, i, texts[i])).collect();
                self.required.extend(&uids);
                let t = self.agent.tails.get_mut(&ino).unwrap();
                t.texts = texts;
                t.chunks.push_back(Chunk { end: size, uids, at, marker, acked: false });
            } else if !self.fs.linked(ino) {
                t.done = true;
                t.retired = true;
            } else if !t.matched {
                t.done = true;
            }
        }
    }

    pub(super) fn acks(&mut self) {
        let slow = self.slow;
        let inos: Vec<u64> = self.agent.tails.keys().copied().collect();
        for ino in inos {
            let t = &self.agent.tails[&ino];
            let gens = t.old.len();
            let sizes: Vec<usize> = t.old.iter().map(VecDeque::len).chain([t.chunks.len()]).collect();
            for (g, &n) in sizes.iter().enumerate() {
                for i in 0..n {
                    if slow || !self.chance(70) {
                        continue;
                    }
                    let t = self.agent.tails.get_mut(&ino).unwrap();
                    let c = if g == gens { &mut t.chunks[i] } else { &mut t.old[g][i] };
                    if !c.acked {
                        c.acked = true;
                        for &u in &c.uids {
                            *self.delivered.entry(u).or_default() += 1;
                        }
                        for &(i, n, text) in &c.at {
                            self.delivered_at.insert((i, n, text));
                        }
                    }
                }
            }
            let t = self.agent.tails.get_mut(&ino).unwrap();
            while t.chunks.front().is_some_and(|c| c.acked) {
                let c = t.chunks.pop_front().unwrap();
                t.watermark = c.end;
                t.wm_marker = c.marker;
            }
        }
    }

    pub(super) fn checkpoint(&mut self) {
        for (&ino, t) in &self.agent.tails {
            if t.retired && t.chunks.is_empty() && t.old.iter().flatten().all(|c| c.acked) {
                self.store.remove(&ino);
            } else {
                let texts = t.texts[..(t.watermark / LINE) as usize].to_vec();
                self.store.insert(ino, Entry { texts, offset: t.watermark, head: t.head, marker: t.wm_marker });
            }
        }
        let gone = |t: &Tail| t.retired && t.chunks.is_empty() && t.old.iter().flatten().all(|c| c.acked);
        for (&ino, t) in &self.agent.tails {
            if let Some(tr) = t.truncated.clone().filter(|_| gone(t)) {
                self.agent.closed.push((ino, tr));
            }
        }
        self.agent.tails.retain(|_, t| !gone(t));
    }
}
