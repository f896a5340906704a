//! The tokenize stage.
pub mod preprocess;
pub mod tokenizer;
pub mod wordpiece;
