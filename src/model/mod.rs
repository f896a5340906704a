//! The model stage: sequence classifiers of the supported encoder families (`family`: BERT,
//! DistilBERT, RoBERTa, XLM-RoBERTa, ELECTRA, DeBERTa-v2/v3 on one shared encoder; ModernBERT's
//! own maths in `modernbert`), every operation differentiable (`encoder`, `modernbert`,
//! `layers`), their `config.json` (`config`), and Hugging Face
//! directories in and out (`checkpoint`); fused CPU kernels (`kernels`; `packed_attention` for
//! ModernBERT's rotary and windowed attention and DeBERTa's relative attention), bf16 matrix products
//! (`bf16`, on AMX tiles where the CPU has them: `amx`), the real tokens' rows without padding (`unpadded`), and, in the `cuda` build, fused GPU kernels (`cuda_kernels`).
//!
//! Uses: `support` only (`random`: every dropout mask and head initialisation is seeded). Never
//! uses: the experiment file, the plan, the data, the tokenizer, the run store or the reports: a
//! model takes token ids, weights and a device, and knows nothing of runs, stores or settings files.

pub mod amx;
pub mod bf16;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda_kernels;
pub mod encoder;
pub mod family;
pub mod kernels;
pub mod layers;
pub mod modernbert;
pub mod packed_attention;
pub mod unpadded;

pub use config::{DropoutRates, ModelConfig};
pub use encoder::{Batch, EncoderClassifier, LoadReport, Mode};

/// Where a parameter sits in an encoder, from the input up: what layer-wise learning-rate decay
/// and freezing read, and all they read, so both work for any model family that names the depth
/// of each of its parameters (a new family gives every parameter one; `tests/model.rs` checks
/// each family's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Depth {
    /// Token, position and segment embeddings, their normalisation and projection.
    Embeddings,
    /// Encoder layer `N` (0-based, the lowest is 0).
    Layer(usize),
    /// Above the encoder: the pooler and the classifier.
    Head,
}
