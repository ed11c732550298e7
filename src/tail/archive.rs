//! Compressed files (`.gz`, `.zst`, `.xz`, `.bz2`) read by `--once` when the `filePattern` names
//! them: a streaming decoder over the file, so memory stays bounded whatever the archive's size.
//! Offsets (checkpoints, chunks) are in decompressed bytes; the compressed bytes consumed are
//! kept for progress and for naming where a corrupt archive fails.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The formats read, by file name suffix (any case). `.zip` holds several files: never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

pub const SUFFIXES: [(&str, Kind); 4] =
    [(".gz", Kind::Gzip), (".zst", Kind::Zstd), (".xz", Kind::Xz), (".bz2", Kind::Bzip2)];

impl Kind {
    pub fn of(path: &Path) -> Option<Kind> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        SUFFIXES.iter().find(|(s, _)| name.ends_with(s)).map(|(_, k)| *k)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Gzip => "gzip",
            Kind::Zstd => "zstd",
            Kind::Xz => "xz",
            Kind::Bzip2 => "bzip2",
        }
    }
}

/// An archive's size and modification time: the daemon reads an archive once these have stayed
/// the same for a while (a half-written archive would read as truncated), and reads it again only
/// when they change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime: i128,
}

impl Stat {
    pub fn of(meta: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat { size: meta.len(), mtime: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()) }
    }
}

/// How the reading of an archive ended (the tailer says; discovery decides what comes next).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Decoded to its end while it kept the size and time it had when opened: its checkpoint is
    /// sealed (see `Tailer::seal`), and it is not read again while it stays so.
    Complete,
    /// It changed while being read (size or time): what decoded was sent; it is read again,
    /// from its checkpoint, once it settles.
    Changed,
    /// It failed to decode while unchanged: corrupt or truncated. Said once; read again only if
    /// it changes.
    Damaged,
}

/// Counts the compressed bytes the decoder has consumed (not what the buffer read ahead): where a
/// damaged archive fails, and the progress.
struct Counting {
    inner: BufReader<File>,
    taken: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl BufRead for Counting {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.taken.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// An archive being decompressed.
pub struct Archive {
    decoder: Box<dyn Read + Send>,
    taken: Arc<AtomicU64>,
    kind: Kind,
}

/// Why an archive cannot be read from an offset.
#[derive(Debug)]
pub enum OpenError {
    /// It decompresses to fewer bytes than the offset.
    Shorter {
        decoded: u64,
    },
    Io(io::Error),
}

impl Archive {
    /// Decodes `file` (read from its start) and skips the first `offset` decompressed bytes
    /// (they were delivered: a stream cannot be entered in the middle).
    pub fn open(file: File, kind: Kind, offset: u64) -> Result<Archive, OpenError> {
        let taken = Arc::new(AtomicU64::new(0));
        let input = Counting { inner: BufReader::with_capacity(64 * 1024, file), taken: taken.clone() };
        let decoder: Box<dyn Read + Send> = match kind {
            // Several members (`cat a.gz b.gz`, pigz) are one stream, as gzip -d reads them.
            Kind::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Kind::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(OpenError::Io)?),
            Kind::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
            Kind::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        };
        let mut a = Archive { decoder, taken, kind };
        let skipped = io::copy(&mut (&mut a.decoder).take(offset), &mut io::sink()).map_err(OpenError::Io)?;
        if skipped < offset {
            return Err(OpenError::Shorter { decoded: skipped });
        }
        Ok(a)
    }

    /// Decompressed bytes into `buf`; 0 at the end of the archive. An error is a corrupt or
    /// truncated archive (`compressed_pos` says about where).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.decoder.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    /// Compressed bytes the decoder consumed so far.
    pub fn compressed_pos(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn compress(kind: Kind, data: &[u8]) -> Vec<u8> {
        match kind {
            Kind::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Kind::Zstd => zstd::stream::encode_all(data, 1).unwrap(),
            Kind::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Kind::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        use std::io::Seek;
        f.rewind().unwrap();
        f
    }

    fn read_all(a: &mut Archive) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            match a.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Every format decodes, two members in a row too, and resumes at a decompressed offset.
    #[test]
    fn every_format_decodes_and_resumes() {
        let data: Vec<u8> = (0..20_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        for (_, kind) in SUFFIXES {
            let mut packed = compress(kind, &data[..50_000]);
            packed.extend(compress(kind, &data[50_000..]));
            let mut a = Archive::open(file_with(&packed), kind, 0).unwrap();
            assert_eq!(read_all(&mut a).unwrap(), data, "{kind:?}");
            assert_eq!(a.compressed_pos(), packed.len() as u64);
            let mut a = Archive::open(file_with(&packed), kind, 70_000).unwrap();
            assert_eq!(read_all(&mut a).unwrap(), &data[70_000..], "{kind:?}");
            match Archive::open(file_with(&packed), kind, data.len() as u64 + 1) {
                Err(OpenError::Shorter { decoded }) => assert_eq!(decoded, data.len() as u64),
                _ => panic!("{kind:?}: an offset past the end is not noticed"),
            }
        }
    }

    /// A truncated or corrupt archive is an error after what decoded before it.
    #[test]
    fn a_damaged_archive_is_an_error_after_what_decoded() {
        let data: Vec<u8> = (0..50_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        for (_, kind) in SUFFIXES {
            let packed = compress(kind, &data);
            let cut = &packed[..packed.len() * 2 / 3];
            let mut a = Archive::open(file_with(cut), kind, 0).unwrap();
            let mut out = Vec::new();
            let mut buf = vec![0u8; 4096];
            let err = loop {
                match a.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => break Some(e),
                }
            };
            assert!(err.is_some(), "{kind:?}: a truncated archive reads as complete");
            assert!(data.starts_with(&out), "{kind:?}: what decoded is not the start of the data");
            // Where it fails is where the data ends, not where the buffer read ahead to.
            assert!(a.compressed_pos() <= cut.len() as u64, "{kind:?}: {} past the end", a.compressed_pos());
            // A valid archive followed by garbage fails about where the garbage starts.
            let mut bad = packed.clone();
            bad.extend_from_slice(&[0x55; 4096]);
            let mut a = Archive::open(file_with(&bad), kind, 0).unwrap();
            let err = loop {
                match a.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(_) => {}
                    Err(e) => break Some(e),
                }
            };
            assert!(err.is_some(), "{kind:?}: garbage after the archive reads as its end");
            let at = a.compressed_pos();
            assert!(at >= packed.len() as u64 && at <= bad.len() as u64, "{kind:?}: fails at {at} of {}", bad.len());
        }
    }
}
