//! The model stage: a BERT sequence classifier in candle whose every operation is
//! differentiable (`layers`, `bert`), its `config.json` (`config`), and Hugging Face directories
//! in and out (`checkpoint`).

pub mod bert;
pub mod checkpoint;
pub mod config;
pub mod kernels;
pub mod layers;

pub use bert::{Batch, BertClassifier, DropoutRates, LoadReport, Mode};
pub use config::BertConfig;
