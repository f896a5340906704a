//! Loading a model directory's tokenizer: `tokenizer.json` when present, else a BERT WordPiece
//! tokenizer built from `vocab.txt` and `tokenizer_config.json`'s `do_lower_case` (default true,
//! as transformers' BertTokenizer). Turning data into batches is the data stage's job.

use std::path::Path;

use anyhow::{Context, anyhow};
use tokenizers::Tokenizer;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;

/// A tokenizer and the ids of its padding token.
pub struct LoadedTokenizer {
    pub tokenizer: Tokenizer,
    pub pad_id: u32,
}

/// Loads the tokenizer of a Hugging Face model directory.
pub fn load(directory: &Path) -> anyhow::Result<LoadedTokenizer> {
    let json = directory.join("tokenizer.json");
    let tokenizer = if json.is_file() {
        let mut tokenizer = Tokenizer::from_file(&json)
            .map_err(|error| anyhow!("{error}"))
            .with_context(|| format!("cannot load the tokenizer {}", json.display()))?;
        // Truncation and padding are decided per batch by bertlab, not by the file.
        tokenizer
            .with_truncation(None)
            .map_err(|error| anyhow!("{error}"))?;
        tokenizer.with_padding(None);
        tokenizer
    } else {
        from_vocabulary(directory)?
    };
    let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
    Ok(LoadedTokenizer { tokenizer, pad_id })
}

fn from_vocabulary(directory: &Path) -> anyhow::Result<Tokenizer> {
    let vocabulary = directory.join("vocab.txt");
    if !vocabulary.is_file() {
        anyhow::bail!(
            "no tokenizer in {}: tried tokenizer.json and vocab.txt",
            directory.display()
        );
    }
    let lowercase = read_do_lower_case(&directory.join("tokenizer_config.json"))?;
    let model = WordPiece::from_file(&vocabulary.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .map_err(|error| anyhow!("{error}"))
        .with_context(|| format!("cannot read the vocabulary {}", vocabulary.display()))?;
    let mut tokenizer = Tokenizer::new(model);
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .with_context(|| format!("{} has no {token} token", vocabulary.display()))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .map_err(|error| anyhow!("{error}"))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    tokenizer.with_decoder(Some(WordPieceDecoder::default()));
    Ok(tokenizer)
}

fn read_do_lower_case(path: &Path) -> anyhow::Result<bool> {
    if !path.is_file() {
        return Ok(true);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(value
        .get("do_lower_case")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true))
}

/// Token ids of one text with [CLS] and [SEP], truncated to `max_length` (keeping [SEP]).
pub fn encode(
    tokenizer: &LoadedTokenizer,
    text: &str,
    max_length: usize,
) -> anyhow::Result<Vec<u32>> {
    let encoding = tokenizer
        .tokenizer
        .encode_fast(text, true)
        .map_err(|error| anyhow!("{error}"))?;
    let mut ids = encoding.get_ids().to_vec();
    if ids.len() > max_length {
        let last = *ids.last().expect("non-empty");
        ids.truncate(max_length - 1);
        ids.push(last);
    }
    Ok(ids)
}

/// Token counts of texts, [CLS] and [SEP] included, without truncation (in parallel).
pub fn token_lengths(tokenizer: &LoadedTokenizer, texts: &[&str]) -> anyhow::Result<Vec<usize>> {
    let encodings = tokenizer
        .tokenizer
        .encode_batch_fast(texts.to_vec(), true)
        .map_err(|error| anyhow!("{error}"))?;
    Ok(encodings
        .iter()
        .map(|encoding| encoding.get_ids().len())
        .collect())
}
