//! SentencePiece models (`spm.model`: DeBERTa-v3's tokenizer, shipped without a
//! `tokenizer.json`) read as they are and run through `tokenizers`: the model file is a
//! protobuf `ModelProto`, decoded with prost (only the fields a Unigram tokenizer needs; a
//! hand-written decoder would duplicate what prost does well); its pieces and scores become a
//! Unigram model (Viterbi), in the pipeline transformers' `DebertaV2Tokenizer` builds around
//! them, so that a fine-tuned model predicts in transformers what it predicts here: runs of
//! whitespace, tabs and newlines to one space, NFC, the right end stripped [, lower case]; a `▁`
//! before the text and for every space (Metaspace) [, punctuation split off]; `[CLS] ... [SEP]`.
//! Its control and user-defined pieces and the tokens `tokenizer_config.json` or
//! `added_tokens.json` add (`[MASK]`) are special tokens, recognised in the text.
//!
//! The SentencePiece library itself normalises with the model's precompiled NFKC map instead
//! (ligatures, full-width forms and circled digits become plain letters and digits, where
//! transformers 5 gives `[UNK]`), and cuts special-token text into pieces; transformers 5 does
//! not read that map (not even from a `tokenizer.json`), so neither does bertlab.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{
    Lowercase, NFC, NormalizerWrapper, Replace, Sequence as NormalizerSequence, Strip,
};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::punctuation::Punctuation;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// `sentencepiece_model.proto`'s `ModelProto`, the fields read here.
#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pieces: Vec<SentencePiece>,
    #[prost(message, optional, tag = "2")]
    trainer_spec: Option<TrainerSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SentencePiece {
    #[prost(string, optional, tag = "1")]
    piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    score: Option<f32>,
    /// NORMAL 1 (the default), UNKNOWN 2, CONTROL 3, USER_DEFINED 4, BYTE 6, UNUSED 5.
    #[prost(int32, optional, tag = "3")]
    kind: Option<i32>,
}

const PIECE_UNKNOWN: i32 = 2;
const PIECE_CONTROL: i32 = 3;
const PIECE_USER_DEFINED: i32 = 4;

#[derive(Clone, PartialEq, prost::Message)]
struct TrainerSpec {
    /// UNIGRAM 1 (the default), BPE 2, WORD 3, CHAR 4.
    #[prost(int32, optional, tag = "3")]
    model_type: Option<i32>,
    #[prost(bool, optional, tag = "35")]
    byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "40")]
    unk_id: Option<i32>,
}

/// What `tokenizer_config.json` says of a SentencePiece tokenizer.
#[derive(Clone, Debug, PartialEq)]
pub struct SentencePieceSettings {
    pub do_lower_case: bool,
    pub split_by_punct: bool,
    /// A `▁` before the text (`add_prefix_space`, default true) and after each special token.
    pub add_prefix_space: bool,
    pub cls_token: String,
    pub sep_token: String,
    /// Tokens the config adds beyond the model's pieces (`added_tokens_decoder`), by id.
    pub added_tokens: Vec<(u32, String)>,
}

impl SentencePieceSettings {
    /// transformers' `DebertaV2Tokenizer` defaults, changed by what `tokenizer_config.json` (if
    /// any) says.
    pub fn read(config: Option<&serde_json::Value>) -> SentencePieceSettings {
        let flag_or = |key: &str, default: bool| {
            config
                .and_then(|config| config.get(key))
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(default)
        };
        let flag = |key: &str| flag_or(key, false);
        let token = |key: &str, default: &str| {
            config
                .and_then(|config| config.get(key))
                .and_then(crate::tokenize::tokenizer::token_text)
                .unwrap_or_else(|| default.to_string())
        };
        let mut added_tokens: Vec<(u32, String)> = config
            .and_then(|config| config.get("added_tokens_decoder"))
            .and_then(serde_json::Value::as_object)
            .map(|decoder| {
                decoder
                    .iter()
                    .filter_map(|(id, token)| {
                        Some((
                            id.parse().ok()?,
                            token.get("content")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        added_tokens.sort();
        SentencePieceSettings {
            do_lower_case: flag("do_lower_case"),
            split_by_punct: flag("split_by_punct"),
            add_prefix_space: flag_or("add_prefix_space", true),
            cls_token: token("cls_token", "[CLS]"),
            sep_token: token("sep_token", "[SEP]"),
            added_tokens,
        }
    }
}

/// Builds the tokenizer of a SentencePiece Unigram model file.
pub fn load(path: &Path, settings: &SentencePieceSettings) -> anyhow::Result<Tokenizer> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    from_bytes(&bytes, settings).with_context(|| {
        format!(
            "cannot read the SentencePiece model {} (hint: write a tokenizer.json beside it with transformers: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR))",
            path.display()
        )
    })
}

fn from_bytes(bytes: &[u8], settings: &SentencePieceSettings) -> anyhow::Result<Tokenizer> {
    let model: ModelProto =
        prost::Message::decode(bytes).context("it is not a SentencePiece model (protobuf)")?;
    let trainer = model.trainer_spec.clone().unwrap_or_default();
    match trainer.model_type.unwrap_or(1) {
        1 => {}
        2 => bail!("it is a BPE model; bertlab reads SentencePiece Unigram models"),
        other => bail!("its model type is {other}; bertlab reads SentencePiece Unigram models"),
    }
    if model.pieces.is_empty() {
        bail!("it has no pieces");
    }
    let vocabulary: Vec<(String, f64)> = model
        .pieces
        .iter()
        .map(|piece| {
            (
                piece.piece.clone().unwrap_or_default(),
                f64::from(piece.score.unwrap_or(0.0)),
            )
        })
        .collect();
    let unknown = model
        .pieces
        .iter()
        .position(|piece| piece.kind == Some(PIECE_UNKNOWN))
        .or_else(|| trainer.unk_id.and_then(|id| usize::try_from(id).ok()))
        .filter(|&id| id < vocabulary.len())
        .context("it has no unknown piece")?;
    let unigram = Unigram::from(
        vocabulary,
        Some(unknown),
        trainer.byte_fallback.unwrap_or(false),
    )
    .map_err(|error| anyhow!("{error}"))?;
    let mut tokenizer = Tokenizer::new(unigram);

    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if settings.do_lower_case {
        normalizers.push(Lowercase.into());
    }
    normalizers.push(
        Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s{2,}|[\n\r\t]".into()),
            " ",
        )
        .map_err(|error| anyhow!("{error}"))?
        .into(),
    );
    normalizers.push(NFC.into());
    normalizers.push(Strip::new(false, true).into());
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(|error| anyhow!("{error}"))?;

    let prepend = if settings.add_prefix_space {
        PrependScheme::Always
    } else {
        PrependScheme::First
    };
    let mut pre_tokenizers: Vec<PreTokenizerWrapper> = Vec::new();
    if settings.split_by_punct {
        pre_tokenizers.push(Punctuation::new(SplitDelimiterBehavior::Isolated).into());
    }
    pre_tokenizers.push(Metaspace::new('▁', prepend, true).into());
    tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(pre_tokenizers)));
    tokenizer.with_decoder(Some(MetaspaceDecoder::new('▁', prepend, true)));

    // Control and user-defined pieces are never cut from text by the model: as special tokens
    // they are matched whole, before it.
    let mut specials: Vec<AddedToken> = model
        .pieces
        .iter()
        .filter(|piece| matches!(piece.kind, Some(PIECE_CONTROL | PIECE_USER_DEFINED)))
        .filter_map(|piece| piece.piece.clone())
        .map(|piece| AddedToken::from(piece, true))
        .collect();
    for (id, token) in &settings.added_tokens {
        if tokenizer.token_to_id(token).is_none() {
            specials.push(AddedToken::from(token.clone(), true));
        } else if tokenizer.token_to_id(token) != Some(*id) {
            bail!(
                "tokenizer_config.json gives {token} the id {id}, the model {}",
                tokenizer.token_to_id(token).unwrap_or_default()
            );
        }
    }
    tokenizer
        .add_special_tokens(specials)
        .map_err(|error| anyhow!("{error}"))?;
    for (id, token) in &settings.added_tokens {
        let given = tokenizer.token_to_id(token);
        if given != Some(*id) {
            bail!(
                "tokenizer_config.json gives {token} the id {id}, but it comes after the model's {} pieces as {}",
                model.pieces.len(),
                given.map_or("nothing".to_string(), |given| given.to_string())
            );
        }
    }

    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .with_context(|| format!("it has no {token} piece"))
    };
    let (cls, sep) = (id(&settings.cls_token)?, id(&settings.sep_token)?);
    let (cls_token, sep_token) = (&settings.cls_token, &settings.sep_token);
    let template = TemplateProcessing::builder()
        .try_single(format!("{cls_token}:0 $A:0 {sep_token}:0"))
        .map_err(|error| anyhow!("{error}"))?
        .try_pair(format!(
            "{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1"
        ))
        .map_err(|error| anyhow!("{error}"))?
        .special_tokens(vec![(cls_token.clone(), cls), (sep_token.clone(), sep)])
        .build()
        .map_err(|error| anyhow!("{error}"))?;
    tokenizer.with_post_processor(Some(template));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_model_is_refused_with_the_hint() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("spm.model");
        std::fs::write(&path, b"\xff\xff\xff not protobuf").unwrap();
        let error = load(&path, &SentencePieceSettings::read(None)).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("spm.model"), "{message}");
        assert!(message.contains("tokenizer.json"), "{message}");
    }

    #[test]
    fn settings_default_as_transformers_and_read_added_tokens() {
        let defaults = SentencePieceSettings::read(None);
        assert_eq!(defaults.cls_token, "[CLS]");
        assert!(!defaults.do_lower_case);
        let config = serde_json::json!({
            "do_lower_case": true,
            "sep_token": {"content": "</s>"},
            "added_tokens_decoder": {"7": {"content": "[MASK]"}, "0": {"content": "[PAD]"}}
        });
        let settings = SentencePieceSettings::read(Some(&config));
        assert!(settings.do_lower_case);
        assert_eq!(settings.sep_token, "</s>");
        assert_eq!(
            settings.added_tokens,
            vec![(0, "[PAD]".to_string()), (7, "[MASK]".to_string())]
        );
    }
}
