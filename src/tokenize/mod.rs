//! The tokenize stage: texts to token ids, an epoch to batches, and a run's data prepared once.
//!
//! Owns: `tokenizer` (a model directory's tokenizer loaded: `tokenizer.json`, a SentencePiece
//! `spm.model`, or WordPiece from `vocab.txt`; texts encoded in parallel and truncated to
//! `max_length`), `sentencepiece` (SentencePiece Unigram models read as they are), `wordpiece` (the ASCII
//! fast path, giving the tokenizers crate's ids), `batches` (an epoch's seeded, optionally
//! length-bucketed batches) and `preprocess` (the data stage and tokenization together, cached
//! on disk under a key of everything they depend on).
//!
//! Uses: `support`, `plan` (a run's settings, the model directory's files) and `data`. Never uses
//! the model, the run store, training or anything above them: it sits above `data` because it
//! tokenizes what the data stage produces, and below `model`, which takes ids.

pub mod batches;
pub mod preprocess;
pub mod sentencepiece;
pub mod tokenizer;
pub mod wordpiece;
