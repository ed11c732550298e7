//! Compressed files (`.gz`, `.zst`, `.xz`, `.bz2`) read by `--once` when the `filePattern` names
//! them: a streaming decoder over the file, so memory stays bounded whatever the archive's size.
//! Offsets (checkpoints, chunks) are in decompressed bytes; the compressed bytes consumed are
//! kept for progress and for naming where a corrupt archive fails.

use std::fs::File;
use std::io::{self, BufReader, Read};
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

/// Counts the compressed bytes the decoder has taken.
struct Counting {
    inner: File,
    taken: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
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
        let input = BufReader::with_capacity(64 * 1024, Counting { inner: file, taken: taken.clone() });
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

    /// Compressed bytes taken so far.
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
        }
    }
}
