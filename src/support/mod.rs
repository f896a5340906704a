//! Support: the small helpers every stage may use; none of them is a stage of the pipeline.
//!
//! Owns: `random` (every seeded draw in bertlab: ChaCha8 keyed by the run's seed, one stream per
//! purpose; candle's CPU generator cannot be seeded, so nothing draws from it), `atomic_file`
//! (writes as temporary file, fsync, rename: a reader sees the old file or the new one),
//! `progress` (what a running sweep shows on stderr and writes to each run's `train.log`) and
//! `memory` (glibc malloc's settings for the process).
//!
//! Uses: std and crates only. Never uses: any stage. A helper that needs a stage's types belongs
//! in that stage, and there is no grab-bag: a helper used by one stage lives in that stage.

pub mod atomic_file;
pub mod memory;
pub mod progress;
pub mod random;
