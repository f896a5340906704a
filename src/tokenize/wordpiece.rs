//! A fast path for BERT WordPiece tokenization of ASCII text, giving exactly the ids the
//! tokenizers crate gives (tested on every text of the example corpus), several times faster: no
//! offsets, no alignment tracking, no per-token strings.
//!
//! It applies only to the standard BERT pipeline (BertNormalizer with clean_text, lowercase as
//! configured; BertPreTokenizer; WordPiece with `##` and [UNK]; [CLS] text [SEP]), and only to
//! texts that are pure ASCII and hold no special-token text such as `[SEP]`. Every other text goes
//! through the tokenizers crate.

use std::collections::HashMap;

use serde_json::Value;
use tokenizers::Tokenizer;

/// The WordPiece vocabulary split by prefix, for lookups without allocation.
#[derive(Clone, Debug)]
pub struct FastWordPiece {
    words: HashMap<Vec<u8>, u32>,
    continuations: HashMap<Vec<u8>, u32>,
    unk: u32,
    cls: u32,
    sep: u32,
    max_chars_per_word: usize,
    lowercase: bool,
    /// Texts containing any of these go the slow way (added tokens match before normalisation).
    special_texts: Vec<String>,
}

impl FastWordPiece {
    /// The fast path for a tokenizer, when its pipeline is the standard BERT one. `description`
    /// is the tokenizer's JSON (`Tokenizer::to_string`).
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Option<FastWordPiece> {
        let description: Value = serde_json::from_str(&tokenizer.to_string(false).ok()?).ok()?;
        let normalizer = &description["normalizer"];
        let standard_normalizer = normalizer["type"] == "BertNormalizer"
            && normalizer["clean_text"] == true
            && normalizer["strip_accents"].is_null()
            && normalizer["lowercase"].is_boolean();
        let model = &description["model"];
        let standard_model =
            model["type"] == "WordPiece" && model["continuing_subword_prefix"] == "##";
        let post = &description["post_processor"];
        let standard_post = post["type"] == "BertProcessing"
            || (post["type"] == "TemplateProcessing"
                && post["single"].as_array().is_some_and(|items| {
                    items.len() == 3
                        && items[0]["SpecialToken"]["id"] == "[CLS]"
                        && items[1]["Sequence"]["id"] == "A"
                        && items[2]["SpecialToken"]["id"] == "[SEP]"
                }));
        if !(standard_normalizer
            && description["pre_tokenizer"]["type"] == "BertPreTokenizer"
            && standard_model
            && standard_post)
        {
            return None;
        }
        let unk_token = model["unk_token"].as_str()?;
        let mut words = HashMap::new();
        let mut continuations = HashMap::new();
        for (token, id) in tokenizer.get_vocab(false) {
            match token.strip_prefix("##") {
                Some(rest) => continuations.insert(rest.as_bytes().to_vec(), id),
                None => words.insert(token.as_bytes().to_vec(), id),
            };
        }
        let special_texts = description["added_tokens"]
            .as_array()
            .map(|tokens| {
                tokens
                    .iter()
                    .filter_map(|token| token["content"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Some(FastWordPiece {
            unk: tokenizer.token_to_id(unk_token)?,
            cls: tokenizer.token_to_id("[CLS]")?,
            sep: tokenizer.token_to_id("[SEP]")?,
            max_chars_per_word: model["max_input_chars_per_word"].as_u64().unwrap_or(100) as usize,
            lowercase: normalizer["lowercase"] == true,
            words,
            continuations,
            special_texts,
        })
    }

    /// The ids of a text with [CLS] and [SEP], or `None` when the text needs the full tokenizer.
    pub fn encode(&self, text: &str) -> Option<Vec<u32>> {
        if !text.is_ascii()
            || self
                .special_texts
                .iter()
                .any(|special| text.contains(special.as_str()))
        {
            return None;
        }
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        ids.push(self.cls);
        let mut word: Vec<u8> = Vec::with_capacity(32);
        for &byte in text.as_bytes() {
            match byte {
                // clean_text removes control characters...
                0x00..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f => {}
                // ...and whitespace separates words.
                b' ' | b'\t' | b'\n' | b'\r' => self.flush(&mut word, &mut ids),
                // Punctuation is a word of its own.
                b'!'..=b'/' | b':'..=b'@' | b'['..=b'`' | b'{'..=b'~' => {
                    self.flush(&mut word, &mut ids);
                    word.push(byte);
                    self.flush(&mut word, &mut ids);
                }
                _ => word.push(if self.lowercase {
                    byte.to_ascii_lowercase()
                } else {
                    byte
                }),
            }
        }
        self.flush(&mut word, &mut ids);
        ids.push(self.sep);
        Some(ids)
    }

    /// Greedy longest-match-first WordPiece of one word; [UNK] when any piece is missing.
    fn flush(&self, word: &mut Vec<u8>, ids: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if word.len() > self.max_chars_per_word {
            ids.push(self.unk);
            word.clear();
            return;
        }
        let mark = ids.len();
        let mut start = 0;
        while start < word.len() {
            let table = if start == 0 {
                &self.words
            } else {
                &self.continuations
            };
            let found = (start + 1..=word.len())
                .rev()
                .find_map(|end| table.get(&word[start..end]).map(|&id| (id, end)));
            match found {
                Some((id, end)) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(mark);
                    ids.push(self.unk);
                    break;
                }
            }
        }
        word.clear();
    }
}
