//! Content fingerprints of data and model files: the sha256 of their bytes, cached by
//! (absolute path, size, modification time) in memory and in a cache file, so that planning a
//! 100-run sweep over a 400 MB model reads the model once, and the next plan not at all.
//!
//! A file modified in the last few seconds is not written to the cache file: another write within
//! the same clock tick could keep its size and time while changing its bytes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::support::atomic_file;

/// A file's identity: its bytes' sha256 and its length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    pub sha256: String,
    pub size: u64,
}

/// Files younger than this are fingerprinted but not remembered across processes.
const SETTLE_TIME: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    modified_ns: u128,
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    files: BTreeMap<String, CacheEntry>,
}

const CACHE_VERSION: u32 = 1;

/// Computes and caches file fingerprints.
#[derive(Debug)]
pub struct Fingerprinter {
    cache_path: Option<PathBuf>,
    /// Entries of settled files: loaded from and saved to the cache file.
    entries: BTreeMap<String, CacheEntry>,
    /// Entries of files modified moments ago: kept for this process only.
    session_entries: BTreeMap<String, CacheEntry>,
    changed: bool,
    files_read: usize,
    bytes_read: u64,
}

/// The cache file used when none is given: `$BERTLAB_CACHE_DIR`, else `$XDG_CACHE_HOME/bertlab`,
/// else `~/.cache/bertlab`, each holding `fingerprints.json`.
pub fn default_cache_path() -> Option<PathBuf> {
    let folder = if let Some(folder) = std::env::var_os("BERTLAB_CACHE_DIR") {
        PathBuf::from(folder)
    } else if let Some(folder) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(folder).join("bertlab")
    } else {
        PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache")
            .join("bertlab")
    };
    Some(folder.join("fingerprints.json"))
}

impl Fingerprinter {
    /// A fingerprinter backed by `cache_path` (read now, written by [`Fingerprinter::save`]); an
    /// unreadable or outdated cache file is ignored.
    pub fn new(cache_path: Option<PathBuf>) -> Fingerprinter {
        let entries = cache_path
            .as_deref()
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|cache| cache.version == CACHE_VERSION)
            .map(|cache| cache.files)
            .unwrap_or_default();
        Fingerprinter {
            cache_path,
            entries,
            session_entries: BTreeMap::new(),
            changed: false,
            files_read: 0,
            bytes_read: 0,
        }
    }

    /// How many files were actually read and hashed (not served from the cache).
    pub fn files_read(&self) -> usize {
        self.files_read
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The file's sha256 (64 lowercase hex digits) and length.
    pub fn fingerprint(&mut self, path: &Path) -> anyhow::Result<FileFingerprint> {
        let absolute = std::fs::canonicalize(path)
            .with_context(|| format!("cannot find {}", path.display()))?;
        let metadata = std::fs::metadata(&absolute)
            .with_context(|| format!("cannot read the metadata of {}", absolute.display()))?;
        let modified = metadata.modified().ok();
        let modified_ns = modified
            .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|since| since.as_nanos());
        let key = absolute.to_string_lossy().into_owned();
        let remembered = self
            .entries
            .get(&key)
            .or_else(|| self.session_entries.get(&key));
        if let (Some(modified_ns), Some(entry)) = (modified_ns, remembered)
            && entry.size == metadata.len()
            && entry.modified_ns == modified_ns
        {
            return Ok(FileFingerprint {
                sha256: entry.sha256.clone(),
                size: entry.size,
            });
        }
        let (sha256, size) = hash_file(&absolute)?;
        self.files_read += 1;
        self.bytes_read += size;
        if let Some(modified_ns) = modified_ns {
            let settled = modified
                .and_then(|time| SystemTime::now().duration_since(time).ok())
                .is_some_and(|age| age >= SETTLE_TIME);
            let entry = CacheEntry {
                size,
                modified_ns,
                sha256: sha256.clone(),
            };
            // Unsettled files are remembered for this process only: see the module comment.
            if settled {
                self.entries.insert(key, entry);
                self.changed = true;
            } else {
                self.session_entries.insert(key, entry);
            }
        }
        Ok(FileFingerprint { sha256, size })
    }

    /// Writes the cache file, when anything worth keeping was added. Errors are returned, not
    /// fatal to the caller: a missing cache only costs time.
    pub fn save(&mut self) -> anyhow::Result<()> {
        let Some(path) = &self.cache_path else {
            return Ok(());
        };
        if !self.changed {
            return Ok(());
        }
        let files = self.entries.clone();
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("cannot create the cache folder {}", folder.display()))?;
        }
        let cache = CacheFile {
            version: CACHE_VERSION,
            files,
        };
        atomic_file::write(path, &serde_json::to_vec_pretty(&cache)?)?;
        self.changed = false;
        Ok(())
    }
}

/// The sha256 and length of a file, read in 1 MiB blocks.
pub fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

/// Lowercase hex digits of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old_file(folder: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = folder.join(name);
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        path
    }

    #[test]
    fn known_digest() {
        let folder = tempfile::tempdir().unwrap();
        let path = old_file(folder.path(), "abc", b"abc");
        let mut fingerprinter = Fingerprinter::new(None);
        assert_eq!(
            fingerprinter.fingerprint(&path).unwrap().sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_file_is_read_once_per_process_and_not_again_with_the_cache_file() {
        let folder = tempfile::tempdir().unwrap();
        let path = old_file(folder.path(), "weights", &vec![7u8; 3 << 20]);
        let cache = folder.path().join("cache").join("fingerprints.json");
        let mut first = Fingerprinter::new(Some(cache.clone()));
        let digest = first.fingerprint(&path).unwrap();
        for _ in 0..100 {
            assert_eq!(first.fingerprint(&path).unwrap(), digest);
        }
        assert_eq!(first.files_read(), 1);
        first.save().unwrap();
        let mut second = Fingerprinter::new(Some(cache));
        assert_eq!(second.fingerprint(&path).unwrap(), digest);
        assert_eq!(second.files_read(), 0);
    }

    #[test]
    fn a_changed_file_is_read_again() {
        let folder = tempfile::tempdir().unwrap();
        let path = old_file(folder.path(), "data.csv", b"a,b\n");
        let mut fingerprinter = Fingerprinter::new(None);
        let before = fingerprinter.fingerprint(&path).unwrap();
        let path = old_file(folder.path(), "data.csv", b"a,c\n");
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(100))
            .unwrap();
        assert_ne!(fingerprinter.fingerprint(&path).unwrap(), before);
        assert_eq!(fingerprinter.files_read(), 2);
    }

    #[test]
    fn a_fresh_file_is_not_written_to_the_cache_file() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("fresh");
        std::fs::write(&path, b"new").unwrap();
        let cache = folder.path().join("fingerprints.json");
        let mut first = Fingerprinter::new(Some(cache.clone()));
        first.fingerprint(&path).unwrap();
        assert_eq!(first.fingerprint(&path).unwrap().sha256.len(), 64);
        assert_eq!(first.files_read(), 1);
        first.save().unwrap();
        let mut second = Fingerprinter::new(Some(cache));
        second.fingerprint(&path).unwrap();
        assert_eq!(second.files_read(), 1);
    }
}
