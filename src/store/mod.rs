//! The store stage: what bertlab keeps on disk about runs.
//!
//! Owns: the run store here ([`RunStore`]): one directory per run,
//! `<store>/<first 12 hex digits of the hash>/`, holding `spec.json` (the canonical bytes that
//! were hashed), `run.json` (status, written atomically) and `lock` (held with an OS file lock
//! while a process trains the run, so two processes never train the same run, and a lock left by
//! a killed process is free again); `run_files` (every result file of a run directory as a pure
//! function from results to bytes, and `results.json` and `metrics.csv` read back),
//! `results_index` (one row per run for the results table, cached in `.results-index.json`) and
//! `filesystem` (what the mount under a store promises the claims: locks shared between nodes,
//! per node, or a local disk; docs/cluster.md).
//!
//! Hashes given by users may be any unique prefix of at least 4 hex digits, as in git.
//!
//! Uses: `support`, `plan` (specs and hashes), `metrics` (the figures the run files hold). Never
//! uses: the model, the tokenizer or the training loop: the store describes runs and never trains
//! them (`train` writes the result files, `sweep` claims runs and records how they ended).

pub mod filesystem;
pub mod results_index;
pub mod run_files;

use std::fmt;
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::spec::{RunHash, SHORT_HASH_LENGTH, hash_canonical};
use crate::support::atomic_file;

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Not in the store.
    New,
    /// A live process holds the run's lock.
    Running,
    Done,
    Failed,
    /// Stopped before it finished: marked so, or left `running` by a process that is gone.
    Interrupted,
    /// Stopped at a rung by a search's pruner (ASHA): metrics and checkpoint kept, no test
    /// evaluation and no model; a grid (or any plan) that holds the run continues it.
    Pruned,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Done,
        RunStatus::Pruned,
        RunStatus::Running,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::New,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::New => "new",
            RunStatus::Running => "running",
            RunStatus::Done => "done",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Pruned => "pruned",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The content of `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub hash: RunHash,
    pub status: RunStatus,
    pub updated_at: DateTime<Utc>,
    /// Why the run failed or stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The experiment's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// When training first started, and when it last ended (done, failed or interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds of work over every attempt (data, training, validation, saving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// The 1-based epoch whose weights the run keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
    /// The optimizer step of the kept evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_step: Option<u64>,
    /// How many times a process started (or resumed) the run.
    #[serde(default)]
    pub attempts: u32,
    /// Where and with what the run was (last) trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// The trials of searches this run stands for (several when a search proposed the same
    /// settings again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search_trials: Vec<SearchTrial>,
    /// Why a search's pruner stopped the run (status `pruned`; cleared when a plan continues it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned: Option<PruneRecord>,
}

/// One trial of a search that a run stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchTrial {
    /// The search's hash (64 hex digits; `searches/<first 12>.json` describes it).
    pub search: String,
    /// The trial's number, from 0.
    pub trial: usize,
}

/// A rung decision that stopped a run: where, on what value, against what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneRecord {
    /// The rung's number, from 1.
    pub rung: usize,
    /// The epochs trained when the rung was reached.
    pub epochs: usize,
    /// The selection metric (`macro_f1`, `accuracy`, `loss`).
    pub metric: String,
    /// The run's best value of the metric up to the rung.
    pub value: f64,
    /// The worst value that continued at this rung among the trials compared.
    pub threshold: f64,
    /// How many earlier trials it was compared with at the rung.
    pub compared_with: usize,
    /// How many of all those compared (itself included) go on: 1/reduction_factor of them.
    pub continuing: usize,
}

impl RunRecord {
    fn new(hash: &RunHash) -> RunRecord {
        RunRecord {
            hash: hash.clone(),
            status: RunStatus::New,
            updated_at: Utc::now(),
            error: None,
            experiment: None,
            started_at: None,
            finished_at: None,
            duration_seconds: None,
            best_epoch: None,
            best_step: None,
            attempts: 0,
            provenance: None,
            search_trials: Vec::new(),
            pruned: None,
        }
    }
}

impl Provenance {
    /// ` (<first 12 digits of the bertlab commit>)`, or nothing when unknown.
    pub fn commit_suffix(&self) -> String {
        commit_suffix(self.bertlab_commit.as_deref())
    }
}

/// Where and with what a run was trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub host: String,
    /// `cpu`, `cuda:0`, ...
    pub device: String,
    /// Threads of the matrix products.
    pub threads: usize,
    pub bertlab_version: String,
    /// The commit bertlab was built from, when it was built from a git checkout.
    pub bertlab_commit: Option<String>,
    pub experiment_file: String,
    /// The commit of the repository holding the experiment file, if it is in one.
    pub experiment_commit: Option<String>,
    /// Whether that repository had uncommitted changes to tracked files (outside the run store).
    pub experiment_dirty: Option<bool>,
    /// The Slurm job task that trained it, when a Slurm job did (`bertlab slurm submit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmProvenance>,
    /// The Hugging Face model the run's `model.hub` named, and the commit it resolved to in the
    /// local cache (the run hash holds the files' contents, not the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_hub: Option<HubProvenance>,
    /// The unit that computed a CPU run's bf16 products: `amx` (tiles) or `avx512-bf16`
    /// (vectors); their last bits differ, so `bertlab reproduce` uses the same one again. Absent
    /// for fp32 and GPU runs, and for bf16 runs trained before the tiles, all on `avx512-bf16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bf16_products: Option<String>,
}

/// A model named by its hub id, as the cache resolved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubProvenance {
    pub id: String,
    pub revision: String,
    pub commit: String,
}

/// Which Slurm job array task trained a run (from the job's environment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmProvenance {
    /// The job id `sbatch` printed: the array's (`SLURM_ARRAY_JOB_ID`), else `SLURM_JOB_ID`.
    pub job_id: String,
    /// `SLURM_ARRAY_TASK_ID`: which worker of the array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_task_id: Option<u32>,
    /// `SLURM_RESTART_COUNT`: how many times the task was requeued (preempted, timed out, ...).
    pub restart_count: u32,
    /// The submission folder's name under `<store>/slurm/`, when `bertlab slurm submit` wrote
    /// the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission: Option<String>,
}

impl SlurmProvenance {
    /// `job 12_3 (restart 1)`, as logs and `show` write it.
    pub fn label(&self) -> String {
        let task = self
            .array_task_id
            .map(|task| format!("{}_{task}", self.job_id))
            .unwrap_or_else(|| self.job_id.clone());
        format!("slurm job {task} (restart {})", self.restart_count)
    }
}

/// The file names inside a run directory.
pub const SPEC_FILE: &str = "spec.json";
pub const RECORD_FILE: &str = "run.json";
pub const LOCK_FILE: &str = "lock";

/// Kept in the store's root so that specs and metrics can be committed, weights not.
const GITIGNORE: &str = "# Written by bertlab: specs, metrics and reports can be committed;\n\
# weights, checkpoints and locks stay out of git.\n\
*/model/\n\
*/checkpoint/\n\
*/lock\n\
*.tmp\n\
.results-index.json\n";

/// Minimum digits of a hash prefix.
pub const MIN_PREFIX_LENGTH: usize = 4;

/// A run store rooted at a directory (which need not exist yet).
#[derive(Clone, Debug)]
pub struct RunStore {
    root: PathBuf,
}

/// The outcome of trying to start work on a run.
#[derive(Debug)]
pub enum Claim {
    /// This process now holds the run.
    Claimed(RunLease),
    /// Another live process holds it; `holder` says which, as it wrote in the lock file.
    Busy { holder: String },
}

/// Exclusive hold of a run: the lock is released when this is dropped. A lease dropped without a
/// final status leaves `running` on disk, which readers report as `interrupted`.
#[derive(Debug)]
pub struct RunLease {
    hash: RunHash,
    directory: PathBuf,
    _lock: File,
    /// The status the run had before this claim.
    pub previous: RunStatus,
}

impl RunLease {
    pub fn hash(&self) -> &RunHash {
        &self.hash
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Records a status (and its error, if any) atomically, keeping the record's other fields.
    pub fn set_status(&self, status: RunStatus, error: Option<String>) -> anyhow::Result<()> {
        self.update(|record| {
            record.status = status;
            record.error = error;
        })
    }

    /// Changes the record with `change` and writes it atomically (`updated_at` is set).
    pub fn update(&self, change: impl FnOnce(&mut RunRecord)) -> anyhow::Result<()> {
        let path = self.directory.join(RECORD_FILE);
        let mut record = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a valid run record", path.display()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                RunRecord::new(&self.hash)
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        change(&mut record);
        record.updated_at = Utc::now();
        write_record(&self.directory, &record)
    }
}

fn write_record(directory: &Path, record: &RunRecord) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(record)?;
    bytes.push(b'\n');
    atomic_file::write(&directory.join(RECORD_FILE), &bytes)
}

impl RunStore {
    pub fn new(root: impl Into<PathBuf>) -> RunStore {
        RunStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a run (whether or not it exists).
    pub fn run_directory(&self, hash: &RunHash) -> PathBuf {
        self.root.join(hash.short())
    }

    /// Reads a run's `run.json`, if it has one.
    pub fn record(&self, hash: &RunHash) -> anyhow::Result<Option<RunRecord>> {
        let path = self.run_directory(hash).join(RECORD_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let record: RunRecord = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid run record", path.display()))?;
        if record.hash != *hash {
            bail!(
                "{} belongs to run {}, not {hash}: two runs share the prefix {}",
                path.display(),
                record.hash,
                hash.short()
            );
        }
        Ok(Some(record))
    }

    /// A run's status: `new` when the store does not hold it; a `running` record whose lock no
    /// live process holds is reported `interrupted`.
    pub fn status(&self, hash: &RunHash) -> anyhow::Result<RunStatus> {
        Ok(self.record_and_status(hash)?.1)
    }

    /// A run's `run.json` (if any) and its status as [`RunStore::status`] reports it, from one
    /// read of the record.
    pub fn record_and_status(
        &self,
        hash: &RunHash,
    ) -> anyhow::Result<(Option<RunRecord>, RunStatus)> {
        let Some(record) = self.record(hash)? else {
            return Ok((None, RunStatus::New));
        };
        let status = self.live_status(hash, &record)?;
        Ok((Some(record), status))
    }

    /// A record's status, with `running` checked against the lock.
    fn live_status(&self, hash: &RunHash, record: &RunRecord) -> anyhow::Result<RunStatus> {
        if record.status != RunStatus::Running {
            return Ok(record.status);
        }
        let lock_path = self.run_directory(hash).join(LOCK_FILE);
        let Ok(lock) = File::open(&lock_path) else {
            return Ok(RunStatus::Interrupted);
        };
        Ok(match lock.try_lock_shared() {
            Ok(()) => RunStatus::Interrupted,
            Err(TryLockError::WouldBlock) => RunStatus::Running,
            Err(TryLockError::Error(error)) => {
                return Err(error)
                    .with_context(|| format!("cannot check the lock {}", lock_path.display()));
            }
        })
    }

    /// Creates the store's root, with its `.gitignore`, if missing.
    pub fn create(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create the run store {}", self.root.display()))?;
        let gitignore = self.root.join(".gitignore");
        if !gitignore.exists() {
            atomic_file::write(&gitignore, GITIGNORE.as_bytes())?;
        }
        Ok(())
    }

    /// Takes a run for this process: creates its directory and `spec.json` if needed, takes the
    /// lock, and marks it `running` unless it is `done` or `failed` (see [`RunLease::previous`]:
    /// the caller checks it, since another process may have finished the run a moment ago). `canonical_spec` must be the bytes whose sha256 is `hash`.
    pub fn claim(&self, hash: &RunHash, canonical_spec: &[u8]) -> anyhow::Result<Claim> {
        assert_eq!(
            &hash_canonical(canonical_spec),
            hash,
            "the spec bytes must hash to the run's hash"
        );
        self.create()?;
        let directory = self.run_directory(hash);
        std::fs::create_dir_all(&directory)
            .with_context(|| format!("cannot create the run directory {}", directory.display()))?;
        let lock_path = directory.join(LOCK_FILE);
        let mut lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("cannot open the lock {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = holder.trim();
                return Ok(Claim::Busy {
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        // Say who holds the lock, for the messages of processes that find it taken.
        lock.set_len(0)?;
        lock.rewind()?;
        writeln!(
            lock,
            "pid {} on {} since {}",
            std::process::id(),
            hostname(),
            Utc::now().to_rfc3339()
        )?;
        lock.sync_all()?;

        let spec_path = directory.join(SPEC_FILE);
        match std::fs::read(&spec_path) {
            Ok(existing) if existing == canonical_spec => {}
            Ok(_) => bail!(
                "{} holds a different spec than run {hash}: two runs share the prefix {}, or the file was edited",
                spec_path.display(),
                hash.short()
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                atomic_file::write(&spec_path, canonical_spec)?;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", spec_path.display()));
            }
        }
        let previous = match self.record(hash)? {
            None => RunStatus::New,
            // We hold the lock, so a `running` record was left by a process that is gone.
            Some(record) if record.status == RunStatus::Running => RunStatus::Interrupted,
            Some(record) => record.status,
        };
        let lease = RunLease {
            hash: hash.clone(),
            directory,
            _lock: lock,
            previous,
        };
        // A done or failed run is only held: the status someone else may have just written stays
        // until the caller decides to work on it.
        if matches!(previous, RunStatus::New | RunStatus::Interrupted) {
            lease.set_status(RunStatus::Running, None)?;
        }
        Ok(Claim::Claimed(lease))
    }

    /// Every run in the store (directories holding a `spec.json`), by hash. The full hash is the
    /// sha256 of `spec.json`, so it needs no other file.
    pub fn runs(&self) -> anyhow::Result<Vec<RunHash>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot list {}", self.root.display()));
            }
        };
        let mut hashes = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", self.root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() != SHORT_HASH_LENGTH || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let spec_path = entry.path().join(SPEC_FILE);
            let Ok(bytes) = std::fs::read(&spec_path) else {
                continue;
            };
            let hash = hash_canonical(&bytes);
            if hash.short() != name {
                bail!(
                    "{} does not hash to its directory's name ({} instead): the file was edited or moved",
                    spec_path.display(),
                    hash.short()
                );
            }
            hashes.push(hash);
        }
        hashes.sort();
        Ok(hashes)
    }

    /// The run a prefix names. Errors say when none or several match, listing the candidates.
    pub fn resolve(&self, prefix: &str) -> anyhow::Result<RunHash> {
        let prefix = prefix.trim().to_ascii_lowercase();
        if prefix.len() < MIN_PREFIX_LENGTH
            || prefix.len() > 64
            || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            bail!(
                "`{prefix}` is not a run hash: give {MIN_PREFIX_LENGTH} to 64 hex digits (as `bertlab plan` shows them)"
            );
        }
        let runs = self.runs()?;
        let matches: Vec<&RunHash> = runs
            .iter()
            .filter(|hash| hash.as_str().starts_with(&prefix))
            .collect();
        match matches.as_slice() {
            [single] => Ok((*single).clone()),
            [] => bail!(
                "no run in {} matches `{prefix}` ({} runs there)",
                self.root.display(),
                runs.len()
            ),
            several => {
                let mut listing = String::new();
                for hash in several {
                    let status = self
                        .status(hash)
                        .map(|status| status.to_string())
                        .unwrap_or_else(|_| "?".into());
                    listing.push_str(&format!("\n  {}  {status}", hash.as_str()));
                }
                bail!(
                    "`{prefix}` is ambiguous: {} runs in {} match it; give more digits:{listing}",
                    several.len(),
                    self.root.display()
                )
            }
        }
    }

    /// The canonical bytes of a run's `spec.json`.
    pub fn spec_bytes(&self, hash: &RunHash) -> anyhow::Result<Vec<u8>> {
        let path = self.run_directory(hash).join(SPEC_FILE);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// ` (<first 12 digits of a commit>)`, or nothing without one.
pub fn commit_suffix(commit: Option<&str>) -> String {
    commit
        .map(|commit| format!(" ({})", &commit[..commit.len().min(12)]))
        .unwrap_or_default()
}

/// This machine's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> (Vec<u8>, RunHash) {
        let bytes = format!("{{\"x\":\"{text}\"}}").into_bytes();
        let hash = hash_canonical(&bytes);
        (bytes, hash)
    }

    fn claim(store: &RunStore, bytes: &[u8], hash: &RunHash) -> RunLease {
        match store.claim(hash, bytes).unwrap() {
            Claim::Claimed(lease) => lease,
            Claim::Busy { holder } => panic!("busy: {holder}"),
        }
    }

    #[test]
    fn statuses_follow_the_lease() {
        let folder = tempfile::tempdir().unwrap();
        let store = RunStore::new(folder.path().join("runs"));
        let (bytes, hash) = spec("a");
        assert_eq!(store.status(&hash).unwrap(), RunStatus::New);
        let lease = claim(&store, &bytes, &hash);
        assert_eq!(lease.previous, RunStatus::New);
        assert_eq!(store.status(&hash).unwrap(), RunStatus::Running);
        assert_eq!(
            std::fs::read(store.run_directory(&hash).join(SPEC_FILE)).unwrap(),
            bytes
        );
        assert!(store.root().join(".gitignore").is_file());
        // A second claim, as by another process, finds the run busy.
        match store.claim(&hash, &bytes).unwrap() {
            Claim::Busy { holder } => assert!(
                holder.starts_with(&format!("pid {}", std::process::id())),
                "{holder}"
            ),
            Claim::Claimed(_) => panic!("claimed twice"),
        }
        lease.set_status(RunStatus::Done, None).unwrap();
        drop(lease);
        assert_eq!(store.status(&hash).unwrap(), RunStatus::Done);
        // Claiming a done run holds it without touching its status: the caller decides.
        let held = claim(&store, &bytes, &hash);
        assert_eq!(held.previous, RunStatus::Done);
        assert_eq!(
            store.record(&hash).unwrap().unwrap().status,
            RunStatus::Done
        );
    }

    #[test]
    fn a_run_left_running_by_a_dead_process_is_interrupted_and_can_be_taken_over() {
        let folder = tempfile::tempdir().unwrap();
        let store = RunStore::new(folder.path());
        let (bytes, hash) = spec("b");
        drop(claim(&store, &bytes, &hash));
        assert_eq!(store.status(&hash).unwrap(), RunStatus::Interrupted);
        let lease = claim(&store, &bytes, &hash);
        assert_eq!(lease.previous, RunStatus::Interrupted);
    }

    #[test]
    fn prefixes_resolve_like_git() {
        let folder = tempfile::tempdir().unwrap();
        let store = RunStore::new(folder.path());
        let hashes: Vec<RunHash> = ["p", "q"]
            .iter()
            .map(|text| {
                let (bytes, hash) = spec(text);
                claim(&store, &bytes, &hash)
                    .set_status(RunStatus::Done, None)
                    .unwrap();
                hash
            })
            .collect();
        assert_eq!(store.runs().unwrap().len(), 2);
        for hash in &hashes {
            assert_eq!(&store.resolve(&hash.as_str()[..8]).unwrap(), hash);
            assert_eq!(&store.resolve(hash.as_str()).unwrap(), hash);
            assert_eq!(
                &store.resolve(&hash.as_str()[..20].to_uppercase()).unwrap(),
                hash
            );
        }
        let error = store.resolve("ab").unwrap_err().to_string();
        assert!(error.contains("not a run hash"), "{error}");
        let error = store.resolve("xyz123").unwrap_err().to_string();
        assert!(error.contains("not a run hash"), "{error}");
        let unused = (0..16u8)
            .map(|digit| format!("{digit:x}").repeat(6))
            .find(|prefix| !hashes.iter().any(|hash| hash.as_str().starts_with(prefix)))
            .unwrap();
        let error = store.resolve(&unused).unwrap_err().to_string();
        assert!(
            error.contains("no run in") && error.contains("2 runs there"),
            "{error}"
        );
    }

    #[test]
    fn ambiguous_prefix_lists_candidates() {
        // Two run directories sharing 4 digits, made by hand: a real collision is astronomically rare.
        let folder = tempfile::tempdir().unwrap();
        let store = RunStore::new(folder.path());
        let mut found: Vec<(Vec<u8>, RunHash)> = Vec::new();
        let mut index = 0u64;
        'search: loop {
            let candidate = spec(&format!("s{index}"));
            index += 1;
            for (_, hash) in &found {
                if hash.as_str()[..4] == candidate.1.as_str()[..4] {
                    found = vec![
                        found.iter().find(|(_, h)| h == hash).unwrap().clone(),
                        candidate,
                    ];
                    break 'search;
                }
            }
            found.push(candidate);
        }
        for (bytes, hash) in &found {
            claim(&store, bytes, hash)
                .set_status(RunStatus::Failed, Some("diverged".into()))
                .unwrap();
        }
        let error = store
            .resolve(&found[0].1.as_str()[..4])
            .unwrap_err()
            .to_string();
        assert!(error.contains("ambiguous: 2 runs"), "{error}");
        assert!(
            error.contains(found[0].1.as_str()) && error.contains(found[1].1.as_str()),
            "{error}"
        );
        assert!(error.contains("failed"), "{error}");
    }
}
