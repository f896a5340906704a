//! The model stage: a BERT sequence classifier in candle whose every operation is
//! differentiable (`layers`, `bert`), its `config.json` (`config`), and Hugging Face directories
//! in and out (`checkpoint`); fused CPU kernels (`kernels`) and bf16 matrix products
//! (`bf16`).

pub mod bert;
pub mod bf16;
pub mod checkpoint;
pub mod config;
pub mod kernels;
pub mod layers;

pub use bert::{Batch, BertClassifier, DropoutRates, LoadReport, Mode};
pub use config::BertConfig;
