//! The model stage: a BERT sequence classifier in candle whose every operation is
//! differentiable (`layers`, `bert`), its `config.json` (`config`), and Hugging Face directories
//! in and out (`checkpoint`); fused CPU kernels (`kernels`), bf16 matrix products
//! (`bf16`), and, in the `cuda` build, fused GPU kernels (`cuda_kernels`).
//!
//! Uses: `support` only (`random`: every dropout mask and head initialisation is seeded). Never
//! uses: the experiment file, the plan, the data, the tokenizer, the run store or the reports: a
//! model takes token ids, weights and a device, and knows nothing of runs, stores or settings files.

pub mod bert;
pub mod bf16;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda_kernels;
pub mod kernels;
pub mod layers;

pub use bert::{Batch, BertClassifier, DropoutRates, LoadReport, Mode};
pub use config::BertConfig;
