//! The model test's file system: inodes holding lines (a unique id each, which copies keep, and a
//! text that makes the bytes), names pointing at inodes, and files as `Content` for the decisions.

use std::collections::HashMap;

use super::HEADER;
use crate::types::identity::{Content, HEAD_BYTES, MARKER_BYTES, Sample};

#[derive(Clone, Copy, Debug)]
pub struct Line {
    pub uid: u64,
    pub text: u64,
}

#[derive(Default)]
pub struct Fs {
    pub inodes: HashMap<u64, Vec<Line>>,
    pub names: HashMap<&'static str, u64>,
    pub next_ino: u64,
    pub next_uid: u64,
}

impl Fs {
    pub fn bytes(&self, ino: u64) -> Vec<u8> {
        self.inodes[&ino].iter().flat_map(|l| format!("{:015x}\n", l.text).into_bytes()).collect()
    }
    pub fn linked(&self, ino: u64) -> bool {
        self.names.values().any(|&i| i == ino)
    }
    pub fn fresh(&mut self, text: Option<u64>) -> Line {
        self.next_uid += 1;
        Line { uid: self.next_uid, text: text.unwrap_or(self.next_uid) }
    }
    pub fn create(&mut self, name: &'static str, header: usize) -> u64 {
        self.next_ino += 1;
        let lines = (0..header).map(|_| self.fresh(Some(HEADER))).collect();
        self.inodes.insert(self.next_ino, lines);
        self.names.insert(name, self.next_ino);
        self.next_ino
    }
    /// `cp from to`: an existing `to` is truncated and written over (same inode).
    pub fn copy(&mut self, from: &'static str, to: &'static str) -> Option<u64> {
        let src = *self.names.get(from)?;
        let lines = self.inodes[&src].clone();
        let dst = match self.names.get(to) {
            Some(&i) if i != src => i,
            Some(_) => return None,
            None => self.create(to, 0),
        };
        self.inodes.insert(dst, lines);
        Some(dst)
    }
}

pub struct Mem(pub Vec<u8>);

impl Content for Mem {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn holds(&self, s: Sample, at: Option<u64>) -> bool {
        let end = at.unwrap_or(u64::from(s.len));
        let Some(start) = end.checked_sub(u64::from(s.len)) else { return false };
        end <= self.size() && Sample::of(&self.0[start as usize..end as usize]) == s
    }
    fn start(&self, n: usize) -> Vec<u8> {
        self.0[..n.min(self.0.len())].to_vec()
    }
}

pub fn head_of(b: &[u8]) -> Sample {
    Sample::of(&b[..b.len().min(HEAD_BYTES)])
}

pub fn marker_of(b: &[u8], at: u64) -> Option<Sample> {
    let at = at as usize;
    (at > 0).then(|| Sample::of(&b[at.saturating_sub(MARKER_BYTES)..at]))
}
