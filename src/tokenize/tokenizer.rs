//! Loading a model directory's tokenizer: `tokenizer.json` when present (WordPiece, byte-level
//! BPE, SentencePiece Unigram: whatever the file describes), else `spm.model` (a SentencePiece
//! model, read by `sentencepiece`), else a BERT WordPiece tokenizer
//! built from `vocab.txt` and `tokenizer_config.json`'s `do_lower_case` (default true, as
//! transformers' BertTokenizer). The padding token is the one `tokenizer_config.json` (or
//! `special_tokens_map.json`) names, else `[PAD]` or `<pad>`. Encoding texts in parallel,
//! truncated to `max_length` (the first and last special tokens kept), through the WordPiece fast
//! path where it applies.

use std::path::Path;

use anyhow::{Context, anyhow};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, PostProcessor, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy, truncate_encodings,
};

use crate::tokenize::sentencepiece;
use crate::tokenize::wordpiece::FastWordPiece;

/// A tokenizer, the id of its padding token, and the fast path for plain BERT tokenizers.
pub struct LoadedTokenizer {
    pub tokenizer: Tokenizer,
    pub pad_id: u32,
    /// See `wordpiece`: exact ids for ASCII texts, several times faster.
    pub fast: Option<FastWordPiece>,
}

/// Loads the tokenizer of a Hugging Face model directory.
pub fn load(directory: &Path) -> anyhow::Result<LoadedTokenizer> {
    let json = directory.join("tokenizer.json");
    let mut file_pad_id = None;
    let tokenizer = if json.is_file() {
        let mut tokenizer = Tokenizer::from_file(&json)
            .map_err(|error| anyhow!("{error}"))
            .with_context(|| format!("cannot load the tokenizer {}", json.display()))?;
        file_pad_id = tokenizer.get_padding().map(|padding| padding.pad_id);
        // Truncation and padding are decided per batch by bertlab, not by the file.
        tokenizer
            .with_truncation(None)
            .map_err(|error| anyhow!("{error}"))?;
        tokenizer.with_padding(None);
        tokenizer
    } else if directory.join(SENTENCEPIECE_FILE).is_file() {
        let config = read_json_if_present(&directory.join("tokenizer_config.json"))?;
        let mut settings = sentencepiece::SentencePieceSettings::read(config.as_ref());
        // Older checkpoints (DeBERTa-v3 on the hub) add `[MASK]` in added_tokens.json.
        let added = directory.join("added_tokens.json");
        if let Some(serde_json::Value::Object(tokens)) = read_json_if_present(&added)? {
            for (token, id) in tokens {
                let id = id
                    .as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .with_context(|| format!("{}: {token} has the id {id}", added.display()))?;
                if !settings
                    .added_tokens
                    .iter()
                    .any(|(_, known)| *known == token)
                {
                    settings.added_tokens.push((id, token));
                }
            }
            settings.added_tokens.sort();
        }
        sentencepiece::load(&directory.join(SENTENCEPIECE_FILE), &settings)?
    } else {
        from_vocabulary(directory)?
    };
    let pad_id = named_pad_token(directory)?
        .and_then(|token| tokenizer.token_to_id(&token))
        .or(file_pad_id)
        .or_else(|| tokenizer.token_to_id("[PAD]"))
        .or_else(|| tokenizer.token_to_id("<pad>"))
        .unwrap_or(0);
    let fast = FastWordPiece::for_tokenizer(&tokenizer);
    Ok(LoadedTokenizer {
        tokenizer,
        pad_id,
        fast,
    })
}

/// DeBERTa-v3's SentencePiece model, read where a directory has no `tokenizer.json`.
pub const SENTENCEPIECE_FILE: &str = "spm.model";

/// A JSON file's value, `None` where the file does not exist.
fn read_json_if_present(path: &Path) -> anyhow::Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(Some(value))
}

fn from_vocabulary(directory: &Path) -> anyhow::Result<Tokenizer> {
    let vocabulary = directory.join("vocab.txt");
    if !vocabulary.is_file() {
        anyhow::bail!(
            "no tokenizer in {}: tried tokenizer.json, spm.model and vocab.txt",
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
    // As transformers' BertTokenizer: special-token text in the input is the special token.
    let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .into_iter()
        .filter(|token| tokenizer.token_to_id(token).is_some())
        .map(|token| AddedToken::from(token, true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|error| anyhow!("{error}"))?;
    Ok(tokenizer)
}

/// The padding token `tokenizer_config.json`, else `special_tokens_map.json`, names (a string or
/// an added-token object with `content`).
fn named_pad_token(directory: &Path) -> anyhow::Result<Option<String>> {
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        if let Some(value) = read_json_if_present(&directory.join(name))?
            && let Some(token) = value.get("pad_token").and_then(token_text)
        {
            return Ok(Some(token));
        }
    }
    Ok(None)
}

/// A special token as tokenizer files write it: a string, or an added-token object with
/// `content`.
pub(crate) fn token_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(token) => Some(token.clone()),
        serde_json::Value::Object(object) => object
            .get("content")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

fn read_do_lower_case(path: &Path) -> anyhow::Result<bool> {
    Ok(read_json_if_present(path)?
        .and_then(|value| value.get("do_lower_case")?.as_bool())
        .unwrap_or(true))
}

/// Token ids of one text with its special tokens ([CLS] and [SEP], `<s>` and `</s>`), truncated
/// to `max_length` (keeping the last).
pub fn encode(
    tokenizer: &LoadedTokenizer,
    text: &str,
    max_length: usize,
) -> anyhow::Result<Vec<u32>> {
    let ids = encode_untruncated(tokenizer, &[text])?
        .pop()
        .expect("one text");
    Ok(truncate(&ids, max_length))
}

/// Token ids of texts with [CLS] and [SEP], untruncated: the fast path where it applies (in
/// parallel over the machine's cores), the tokenizers crate for the rest.
pub fn encode_untruncated(
    tokenizer: &LoadedTokenizer,
    texts: &[&str],
) -> anyhow::Result<Vec<Vec<u32>>> {
    let mut results: Vec<Option<Vec<u32>>> = match &tokenizer.fast {
        None => vec![None; texts.len()],
        Some(fast) => {
            let threads = std::thread::available_parallelism().map_or(1, |count| count.get());
            let chunk = texts.len().div_ceil(threads).max(1);
            std::thread::scope(|scope| {
                let handles: Vec<_> = texts
                    .chunks(chunk)
                    .map(|part| {
                        scope.spawn(move || {
                            part.iter()
                                .map(|text| fast.encode(text))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|handle| handle.join().expect("no tokenizer thread panics"))
                    .collect()
            })
        }
    };
    let slow: Vec<usize> = (0..texts.len())
        .filter(|&index| results[index].is_none())
        .collect();
    if !slow.is_empty() {
        let inputs: Vec<&str> = slow.iter().map(|&index| texts[index]).collect();
        let encodings = tokenizer
            .tokenizer
            .encode_batch_fast(inputs, true)
            .map_err(|error| anyhow!("{error}"))?;
        for (index, encoding) in slow.into_iter().zip(encodings) {
            results[index] = Some(encoding.get_ids().to_vec());
        }
    }
    Ok(results
        .into_iter()
        .map(|ids| ids.expect("every text encoded"))
        .collect())
}

/// At most `max_length` ids, keeping the last one ([SEP], `</s>`): as transformers truncates
/// the text's tokens and then adds the special tokens.
pub fn truncate(ids: &[u32], max_length: usize) -> Vec<u32> {
    if ids.len() <= max_length {
        return ids.to_vec();
    }
    let mut truncated = ids[..max_length - 1].to_vec();
    truncated.push(*ids.last().expect("non-empty"));
    truncated
}

/// One encoded pair: token ids and token type ids.
pub type EncodedPair = (Vec<u32>, Vec<u32>);

/// Token ids and token type ids of text pairs, as transformers' `tokenizer(first, second,
/// truncation=True, max_length=max_length)` gives them: the tokenizer's pair template (BERT:
/// `[CLS] a [SEP] b [SEP]`, types 0 then 1; RoBERTa: `<s> a </s></s> b </s>`), the longer text
/// cut first (`longest_first`: when both must be cut, each keeps half the room and the one that
/// was longer keeps the odd token, the second on a tie). `None`: untruncated.
///
/// Each text is encoded whole, then the pair is cut and the template applied: the tokenizers
/// crate's own truncation (0.23) stops tokenizing a text at `max_length` tokens before it
/// compares the two lengths, which cuts two long texts differently from transformers.
pub fn encode_pairs(
    tokenizer: &LoadedTokenizer,
    pairs: &[(&str, &str)],
    max_length: Option<usize>,
) -> anyhow::Result<Vec<EncodedPair>> {
    Ok(encode_pairs_with_lengths(tokenizer, pairs, max_length)?.0)
}

/// [`encode_pairs`], and each pair's untruncated length (both texts and the special tokens),
/// from the same encoding.
pub fn encode_pairs_with_lengths(
    tokenizer: &LoadedTokenizer,
    pairs: &[(&str, &str)],
    max_length: Option<usize>,
) -> anyhow::Result<(Vec<EncodedPair>, Vec<usize>)> {
    let encode = |texts: Vec<&str>| {
        tokenizer
            .tokenizer
            .encode_batch_fast(texts, false)
            .map_err(|error| anyhow!("cannot encode the text pairs: {error}"))
    };
    let firsts = encode(pairs.iter().map(|(first, _)| *first).collect())?;
    let seconds = encode(pairs.iter().map(|(_, second)| *second).collect())?;
    let added = tokenizer
        .tokenizer
        .get_post_processor()
        .map_or(0, |processor| processor.added_tokens(true));
    let mut encoded = Vec::with_capacity(pairs.len());
    let mut lengths = Vec::with_capacity(pairs.len());
    for (first, second) in firsts.into_iter().zip(seconds) {
        lengths.push(first.len() + second.len() + added);
        let (first, second) = match max_length {
            None => (first, Some(second)),
            Some(max_length) => {
                let room = max_length.checked_sub(added).filter(|room| *room >= 2).with_context(|| {
                    format!("max_length {max_length} leaves no room for a pair: its template adds {added} special tokens")
                })?;
                truncate_encodings(
                    first,
                    Some(second),
                    &TruncationParams {
                        max_length: room,
                        strategy: TruncationStrategy::LongestFirst,
                        stride: 0,
                        direction: TruncationDirection::Right,
                    },
                )
                .map_err(|error| anyhow!("cannot truncate a text pair: {error}"))?
            }
        };
        let encoding = tokenizer
            .tokenizer
            .post_process(first, second, true)
            .map_err(|error| anyhow!("cannot encode a text pair: {error}"))?;
        encoded.push((
            encoding.get_ids().to_vec(),
            encoding.get_type_ids().to_vec(),
        ));
    }
    Ok((encoded, lengths))
}

/// Token counts of texts, [CLS] and [SEP] included, without truncation (in parallel).
pub fn token_lengths(tokenizer: &LoadedTokenizer, texts: &[&str]) -> anyhow::Result<Vec<usize>> {
    Ok(encode_untruncated(tokenizer, texts)?
        .iter()
        .map(Vec::len)
        .collect())
}

/// Token ids of many texts (in parallel), each with [CLS] and [SEP], truncated to `max_length`
/// keeping [SEP].
pub fn encode_all(
    tokenizer: &LoadedTokenizer,
    texts: &[&str],
    max_length: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    Ok(encode_untruncated(tokenizer, texts)?
        .iter()
        .map(|ids| truncate(ids, max_length))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path gives the tokenizers crate's ids, and hands back what it cannot do.
    #[test]
    fn the_fast_path_matches_the_tokenizers_crate() {
        let directory =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
        let loaded = load(&directory).unwrap();
        let fast = loaded
            .fast
            .as_ref()
            .expect("a plain BERT vocabulary gets the fast path");
        let texts = [
            "I love this movie!",
            "  The SERVICE was... really awful,not good?? ",
            "unbelievably\tboring\r\nfilms",
            "zzz qqq the",
            "a\u{7}b\u{0}c",
            "",
            "!!!",
            &"a".repeat(150),
        ];
        for text in texts {
            let expected = loaded
                .tokenizer
                .encode_fast(text, true)
                .unwrap()
                .get_ids()
                .to_vec();
            assert_eq!(fast.encode(text), Some(expected), "{text:?}");
        }
        assert_eq!(fast.encode("café"), None, "non-ASCII goes the slow way");
        assert_eq!(
            fast.encode("a [SEP] b"),
            None,
            "special-token text goes the slow way"
        );
        let mixed = ["café au lait", "good film", "a [SEP] b"];
        let ids = encode_all(&loaded, &mixed, 64).unwrap();
        for (text, ids) in mixed.iter().zip(ids) {
            assert_eq!(
                ids,
                loaded.tokenizer.encode_fast(*text, true).unwrap().get_ids()
            );
        }
    }

    #[test]
    fn encoding_truncates_and_keeps_the_special_tokens() {
        let directory =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
        let tokenizer = load(&directory).unwrap();
        let texts = [
            "i love this movie and the film and the book and the food",
            "good",
        ];
        let ids = encode_all(&tokenizer, &texts, 6).unwrap();
        let cls = tokenizer.tokenizer.token_to_id("[CLS]").unwrap();
        let sep = tokenizer.tokenizer.token_to_id("[SEP]").unwrap();
        assert_eq!(ids[0].len(), 6);
        assert_eq!((ids[0][0], ids[0][5]), (cls, sep));
        assert_eq!(ids[1].len(), 3);
        assert_eq!(ids[0], encode(&tokenizer, texts[0], 6).unwrap());
    }
}
