#!/usr/bin/env python3
"""Makes the model fixtures of bertlab's tests with PyTorch + transformers (CI does not need them;
the outputs are committed under tests/fixtures/).

    python3 scripts/make_fixtures.py            # tiny random checkpoints + the logits transformers gives
    python3 scripts/make_fixtures.py --minilm   # also [CLS] states of the example model (needs assets/)
    python3 scripts/make_fixtures.py --family distilbert --family roberta   # only those families

--family NAME (repeatable; bert, distilbert, roberta, xlm-roberta, electra, deberta-v2, deberta-v3,
modernbert, modernbert-mean; default: all of them)
picks which families are rewritten, so that one family's fixtures can be remade without touching
the others' (every family has its own seeds: the outputs do not depend on which others are made).

Outputs:
  tests/fixtures/tiny-bert/             BertModel (no `bert.` prefix), model.safetensors, vocab.txt
  tests/fixtures/tiny-bert-classifier/  BertForSequenceClassification, 3 labels, pytorch_model.bin
  tests/fixtures/tiny-bert-expected.json  token ids, masks, [CLS] hidden states and logits
  tests/fixtures/minilm-cls.json        token ids and [CLS] hidden states of all-MiniLM-L6-v2

  Per family F in distilbert, roberta, xlm-roberta, electra, deberta-v2, deberta-v3, modernbert,
  modernbert-mean (hidden 32, 2 layers, 4 heads, intermediate 48, 3 labels negative/neutral/positive,
  eager attention, random weights far from init):
  tests/fixtures/tiny-F/                F*ForSequenceClassification + its tokenizer (save_pretrained:
                                        tokenizer.json, tokenizer_config.json, ...); weights in
                                        model.safetensors, except distilbert and deberta-v3:
                                        pytorch_model.bin (torch.save of the state_dict, config via
                                        config.save_pretrained)
      distilbert, electra: WordPiece from VOCABULARY (vocab.txt, lower case)
      roberta:      byte-level BPE trained on CORPUS (<s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4)
      xlm-roberta:  Unigram trained on CORPUS, Metaspace (<s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last)
      deberta-v2, deberta-v3: DebertaV2ForSequenceClassification (model_type deberta-v2) with a
                    SentencePiece Unigram model trained on CORPUS by the sentencepiece library
                    (spm.model, nmt_nfkc with its precompiled charsmap; [PAD]=0 [CLS]=1 [SEP]=2
                    [UNK]=3, [MASK]=4 a control symbol) + tokenizer_config.json and NO
                    tokenizer.json, as hub DeBERTa-v3 directories ship them.
        deberta-v3: microsoft/deberta-v3-base's settings: relative attention with log buckets
                    (position_buckets 8, max_relative_positions -1 = 64), pos_att_type "p2c|c2p" (the
                    string form in config.json), share_att_key, norm_rel_ebd layer_norm, no absolute
                    positions, no token types; pytorch_model.bin
        deberta-v2: the other branches: pos_key_proj/pos_query_proj (share_att_key false), no buckets,
                    max_relative_positions 6 (distances clamped), absolute positions, 2 token types,
                    embedding_size 16 (embed_proj); model.safetensors
      modernbert, modernbert-mean: ModernBertForSequenceClassification (model_type modernbert, eager
                    attention, no compile) with a byte-level BPE trained on CORPUS as ModernBERT's
                    tokenizer.json is made (NFC, ByteLevel without prefix space, 400 pieces, then
                    [UNK]=400 [CLS]=401 [SEP]=402 [PAD]=403 [MASK]=404 (lstrip), `[CLS] $A [SEP]`),
                    trained twice (the same or an error), saved by transformers' TokenizersBackend
                    (what AutoTokenizer gives for modernbert); model.safetensors. Rotary positions
                    (global theta 160000, local 10000), GeGLU MLP (Wi: 2 x 48), norms without bias.
        modernbert: 3 layers, global_attn_every_n_layers 2 (layers 0, 2 global, 1 local),
                    local_attention 8 (|i - j| <= 4), CLS pooling, no attention/MLP/head biases
        modernbert-mean: 2 layers (0 global, 1 local), local_attention 16 (|i - j| <= 8), mean
                    pooling, attention_bias, mlp_bias and classifier_bias (head.dense) true
  tests/fixtures/tiny-F-expected.json   versions, model_type, sentences, labels, input_ids and
                                        attention_mask (AutoTokenizer, padding=True), logits (float32,
                                        eval, inputs: input_ids + attention_mask only) and the mean
                                        cross-entropy loss; tokenizer_texts with tokenizer_ids
                                        (AutoTokenizer) and tokenizer_json_ids (tokenizers.Tokenizer
                                        on tokenizer.json), pad/special token ids; pretraining_keys
                                        ([name, shape] of the state_dict of F's pretraining model:
                                        *ForMaskedLM, ElectraForPreTraining) and pretraining_load
                                        (missing/unexpected keys when the classifier is loaded from it)
      deberta-v2, deberta-v3: sentences add LONG_SENTENCE (40 tokens, label neutral); instead of
                                        tokenizer_json_ids: sentencepiece_ids ([CLS] + the
                                        sentencepiece library's SentencePieceProcessor on spm.model
                                        + [SEP]) on tokenizer_texts, which add SPM_TEXTS (whitespace
                                        and NFKC cases); tokenizer_disagreements lists the texts where
                                        the two differ (not an error, see below); and also buckets
                                        (make_log_bucket_position of transformers on distances -80..80
                                        for bucket_size 8 / max_position 64 and -1100..1100 for
                                        256 / 512, deberta-v3-base's), relative_position_ids
                                        (build_relative_position for the batch's padded length with
                                        the model's bucket_size and max_position) and
                                        relative_attention (those settings and the attention span)
      modernbert, modernbert-mean: sentences add NON_ASCII_SENTENCE and LONG_SENTENCE (41 tokens: the
                                        batch is padded and longer than twice the local window);
                                        tokenizer_texts add MODERNBERT_TEXTS (NFC, [MASK] lstrip,
                                        the split regex); and also config_json (config.json as saved:
                                        layer_types, rope_parameters, ...), layer_types,
                                        local_attention, sliding_window (local_attention // 2),
                                        rotary_{global,local}_{cos,sin} ([L, head_dim], the model's
                                        rotary module for the batch length L, float32 as computed),
                                        sliding_window_mask ([L, L] 0/1: the eager mask of a local
                                        layer before padding, |i - j| <= sliding_window),
                                        hidden_states_last ([B, L, 32] after final_norm, float32,
                                        eval) and pooled (the head's input, [B, 32])
  tests/fixtures/tiny-F-gradients.safetensors  the classifier in float64, eval mode: the gradient of
                                        the loss for every named parameter (state_dict names), plus
                                        `logits` [batch, 3] and `loss` (shape []), all float64
      modernbert, modernbert-mean: transformers' ModernBERT keeps float32 steps in a float64 model
                                        (rotary tables, rotary application, the eager softmax, where
                                        finfo(float64).min becomes -inf: the padded queries of a local
                                        layer that see no token get NaN, which the next layer spreads
                                        everywhere). The gradients are made with those steps in
                                        float64 (modernbert_in_float64: the same functions, inv_freq
                                        recomputed in float64), so that a fully masked row gets the
                                        uniform weights it gets in float32.

Every family's tokenizer.json (but the DeBERTa families', below) is the pipeline transformers
runs: the script fails unless AutoTokenizer and tokenizers.Tokenizer.from_file(tokenizer.json) give
the same ids on every text (`tokenizer_disagreements` is always []). This matters for xlm-roberta:
transformers 5's XLMRobertaTokenizer (like RobertaTokenizer) does not run tokenizer.json as written;
it rebuilds the backend from the file's vocab, keeping only a Precompiled normalizer (none here:
NFKC + Replace are dropped) and replacing the pre-tokenizer by WhitespaceSplit + Metaspace. So the
Unigram tokenizer is saved, loaded back with AutoTokenizer, and that rebuilt backend is written as
tokenizer.json.

The DeBERTa families are the exception: their directories have no tokenizer.json (a reader has to
run spm.model itself), and transformers 5's DebertaV2Tokenizer does not run spm.model as the
sentencepiece library does: it keeps the vocab and the scores but normalizes with Replace(\\s{2,} and
[\\n\\r\\t] -> " ") + NFC + right Strip instead of the model's precompiled NFKC charsmap, and matches
[CLS]/[SEP]/[MASK]/[PAD] in the text as special tokens. So tokenizer_disagreements records the texts
where AutoTokenizer (what the model's input_ids are made with) and sentencepiece differ.
The spm.model is trained twice and the script fails unless both give the same bytes.
"""
import argparse
import contextlib
import copy
import json
import os
import shutil
import tempfile

import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

WORDS = ("the a an and or not very really quite i you it this that movie film book food service "
         "good great awesome bad awful terrible love hate like boring fun was is are be ! . , ? "
         "un ##believ ##able ##ly ##s ##ed ##ing").split()
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS

SENTENCES = [
    "I love this movie!",
    "The service was really awful, not good.",
    "It is a film.",
    "unbelievable",
    "This book is quite boring and the food was terrible, I really hate it.",
]

MINILM_SENTENCES = [
    "Self-driving cars will change how we commute.",
    "I would never trust a car without a driver!",
    "the quick brown fox",
]


def randomize(model, generator):
    """Weights far from the default init, so that a wrong op shows in the outputs."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            # BERT, RoBERTa, ELECTRA: `LayerNorm.weight`; DistilBERT: `sa_layer_norm.weight`,
            # `output_layer_norm.weight` (and `vocab_layer_norm.weight` in its MLM head); ModernBERT:
            # `embeddings.norm`, `attn_norm`, `mlp_norm`, `final_norm`, `head.norm` (no other family has a
            # name ending in `norm.weight` that the first two tests miss).
            if "LayerNorm.weight" in name or "layer_norm.weight" in name or name.endswith("norm.weight"):
                parameter.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                parameter.copy_(0.1 * noise)
            else:
                parameter.copy_(0.2 * noise)


def tiny_fixtures():
    config = BertConfig(
        vocab_size=len(VOCABULARY), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=64, type_vocab_size=2,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
    )
    base_dir = os.path.join(FIXTURES, "tiny-bert")
    classifier_dir = os.path.join(FIXTURES, "tiny-bert-classifier")
    for directory in (base_dir, classifier_dir):
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        with open(os.path.join(directory, "vocab.txt"), "w") as handle:
            handle.write("\n".join(VOCABULARY) + "\n")
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as handle:
            json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, handle)

    generator = torch.Generator().manual_seed(1234)
    base = BertModel(config).eval()
    randomize(base, generator)
    base.save_pretrained(base_dir)  # model.safetensors, keys without the `bert.` prefix

    config.num_labels = 3
    config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    config.label2id = {"negative": 0, "neutral": 1, "positive": 2}
    classifier = BertForSequenceClassification(config).eval()
    randomize(classifier, generator)
    # pytorch_model.bin with the `bert.` prefix: the other format and the other key style.
    classifier.config.save_pretrained(classifier_dir)
    torch.save(classifier.state_dict(), os.path.join(classifier_dir, "pytorch_model.bin"))

    tokenizer = BertTokenizer.from_pretrained(base_dir)  # vocab.txt + tokenizer_config.json
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = base(**encoded).last_hidden_state
        logits = classifier(**encoded).logits
    expected = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "sentences": SENTENCES,
        "input_ids": encoded["input_ids"].tolist(),
        "attention_mask": encoded["attention_mask"].tolist(),
        "cls_hidden": hidden[:, 0, :].tolist(),
        "last_hidden": hidden.tolist(),
        "classifier_logits": logits.tolist(),
    }
    with open(os.path.join(FIXTURES, "tiny-bert-expected.json"), "w") as handle:
        json.dump(expected, handle)
    print("wrote", base_dir, classifier_dir)


def minilm_fixture():
    directory = os.path.join(ROOT, "assets", "models", "all-MiniLM-L6-v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = BertModel.from_pretrained(directory).eval()
    rows = []
    for sentence in MINILM_SENTENCES:
        encoded = tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state
        rows.append({"sentence": sentence, "input_ids": encoded["input_ids"][0].tolist(),
                     "cls_hidden": hidden[0, 0, :].tolist()})
    with open(os.path.join(FIXTURES, "minilm-cls.json"), "w") as handle:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "rows": rows}, handle)
    print("wrote minilm-cls.json")


# ---------------------------------------------------------------------------------------------
# Other encoder families: DistilBERT, RoBERTa, XLM-RoBERTa, ELECTRA.

FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "deberta-v2", "deberta-v3",
            "modernbert", "modernbert-mean")
DEBERTA_FAMILIES = ("deberta-v2", "deberta-v3")  # SentencePiece spm.model, no tokenizer.json
MODERNBERT_FAMILIES = ("modernbert", "modernbert-mean")  # model_type modernbert, rotary, local attention
PYTORCH_BIN_FAMILIES = ("distilbert", "deberta-v3")  # config.json + pytorch_model.bin

ID2LABEL = {0: "negative", 1: "neutral", 2: "positive"}
LABEL2ID = {"negative": 0, "neutral": 1, "positive": 2}
LABELS = [0, 2, 1, 2, 0, 1]
NON_ASCII_SENTENCE = "Café déjà vu — naïve, isn't it?"

# What the BPE and the Unigram tokenizers are trained on.
CORPUS = SENTENCES + [
    NON_ASCII_SENTENCE,
    "The café on 5th Street opens at 7:30 a.m., doesn't it?",
    "A naïve reviewer gave it 10/10; I'd give it 3.",
    "Déjà vu: the sequel is the same film — again.",
    "We waited 45 minutes for a cold coffee... never again!",
    "Honestly? It's fine. Not great, not terrible.",
    "The soundtrack (by an unknown band) was surprisingly good.",
    "\"Best movie of 2023,\" they said. They were wrong.",
    "My kids loved it; my wife fell asleep after 20 minutes.",
    "Service: slow. Food: cold. Price: $$$. Verdict: avoid.",
    "I've read this book twice and I'd read it again tomorrow.",
    "The plot makes no sense, but the actors are charming.",
    "Crème brûlée for dessert was the only highlight of the evening.",
    "It's 2 hours and 41 minutes long - way too long!",
    "Five stars: funny, smart, and genuinely moving.",
    "The pizza arrived late, the box was soggy, and the cheese was gone.",
    "Would I recommend it? Yes, to people who like slow films.",
    "The hotel's résumé of amenities is impressive: spa, pool, gym.",
    "This is, without a doubt, the worst sequel ever made.",
    "Chapter 12 drags on, but chapters 13-15 are brilliant.",
    "A quiet, gentle, beautiful story about a family in Zürich.",
    "The waiter was rude — really rude — and the bill was wrong.",
    "I can't believe how boring the second half was.",
    "Good value for money: 3 courses for 25 euros.",
    "The special effects look cheap, like a 1990s video game.",
    "She said: 'This is the best ramen in town,' and she was right.",
    "Not bad at all, actually; better than I expected.",
    "Über-hyped and under-delivered, as usual.",
    "Loved the first book, hated the ending of the third one.",
    "Is it worth seeing? Absolutely, especially on a big screen!",
    "The narrator's voice is soothing; perfect for long drives.",
    "Everything was awful: the food, the music, the chairs, everything.",
]

# Edge cases for the tokenizers (ids recorded with special tokens, no padding, no truncation).
EDGE_TEXTS = [
    "",
    "?!... ,,, !!! ;:",
    "  i   love    this     movie  ",
    "tabs\tand\nnew\r\nlines\there",
    "Call 555-0199 or 42 times: 3.14, 1,000,000 and 007.",
    ("the movie was good but the service was really awful and boring, " * 5)[:300],
    "Ünïcödé: café, naïve, déjà vu — 日本語 🙂",
    "ﬁne ＡＢＣ ½ ①",  # NFKC changes all of these
    "the [SEP] movie <s> was </s> good [MASK] <mask> [CLS]<pad>",
]
assert len(EDGE_TEXTS[5]) == 300

SEEDS = {"distilbert": 2001, "roberta": 2002, "xlm-roberta": 2003, "electra": 2004,
         "deberta-v2": 2005, "deberta-v3": 2006, "modernbert": 2007, "modernbert-mean": 2008}

# More tokenizer texts for the SentencePiece (DeBERTa) families: where the model's own normalization
# (nmt_nfkc: NFKC, whitespace collapsed and stripped) and transformers' (NFC + Replace) may part.
SPM_TEXTS = [
    "ﬁne ﬂowers",
    "ＡＢＣ １２３",
    "two  spaces   here",
    "tab\there",
    "new\nline",
    "  leading and trailing  ",
    "café naïve",
    "①②",
    "a [SEP] b",
    "a[MASK]b and [MASK] and the[CLS]end",
]

# The DeBERTa families' batch adds a sentence of 40 tokens (their spm.model's), mixed (neutral): distances
# up to 39 reach the log bucket 7 of deberta-v3 (distances 26..63) and are clamped to deberta-v2's 6.
LONG_SENTENCE = "The plot makes no sense, but the actors are charming and I would read the book again."
LONG_SENTENCE_LABEL = 1

# More tokenizer texts for the ModernBERT families (byte-level BPE behind an NFC normalizer, GPT-2's
# split regex, [MASK] with lstrip): NFC composing and replacing singletons (Å, Ω), contractions and
# digit runs as the regex splits them, whitespace runs, special tokens in the text.
MODERNBERT_TEXTS = [
    "cafe\u0301 nai\u0308ve",
    "\u212b and \u2126",
    "a [MASK] b",
    "a  [MASK]",
    "x[MASK]y [MASK]",
    "the [UNK] and [PAD] tokens",
    "I'm sure they'll say it's what we've done, isn't it? I'M",
    "12345678 and 3.14159",
    "trailing spaces   ",
    "line\n\n  break",
]

# make_log_bucket_position's recorded settings: (bucket_size, max_position, largest |distance|).
BUCKET_CASES = ((8, 64, 80), (256, 512, 1100))


def write_vocab_txt(directory):
    with open(os.path.join(directory, "vocab.txt"), "w") as handle:
        handle.write("\n".join(VOCABULARY) + "\n")


def wordpiece_tokenizer(directory, tokenizer_class):
    write_vocab_txt(directory)
    # Built from the file rather than with from_pretrained, which would leave `is_local` and
    # `local_files_only` in tokenizer_config.json. (v5's save_pretrained writes no vocab.txt.)
    tokenizer = tokenizer_class(vocab=os.path.join(directory, "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


# The part of the RoBERTa and XLM-R tokenizers that follows training, shared with
# scripts/make_base_models.py (which imports it; this module does nothing else when imported).

def save_roberta_tokenizer(tokenizer, directory):
    """Saves a trained byte-level BPE `tokenizers.Tokenizer` (special tokens <s>=0 <pad>=1 </s>=2
    <unk>=3 <mask>=4) as RoBERTa's: RobertaProcessing, transformers' RoBERTa tokenizer class,
    save_pretrained(directory). Returns the transformers tokenizer."""
    from tokenizers import processors

    for token, index in (("<s>", 0), ("<pad>", 1), ("</s>", 2), ("<unk>", 3), ("<mask>", 4)):
        assert tokenizer.token_to_id(token) == index, token
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    wrapper_class = getattr(transformers, "RobertaTokenizerFast", None) or transformers.RobertaTokenizer
    wrapped = wrapper_class(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
    )
    wrapped.save_pretrained(directory)
    return wrapped


def save_xlm_roberta_tokenizer(tokenizer, directory):
    """Saves a trained Unigram `tokenizers.Tokenizer` (special tokens <s>=0 <pad>=1 </s>=2 <unk>=3)
    as XLM-R's: adds <mask> (the last id), template `<s> $A </s>`, transformers' XLM-R tokenizer
    class, save_pretrained(directory), then tokenizer.json rewritten with the pipeline that
    AutoTokenizer rebuilds. Returns the transformers tokenizer made before that rewrite
    (tokenizer_config.json is its)."""
    from tokenizers import processors

    tokenizer.add_special_tokens(["<mask>"])
    for token, index in (("<s>", 0), ("<pad>", 1), ("</s>", 2), ("<unk>", 3)):
        assert tokenizer.token_to_id(token) == index, token
    assert tokenizer.token_to_id("<mask>") == tokenizer.get_vocab_size(with_added_tokens=True) - 1
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    wrapper_class = getattr(transformers, "XLMRobertaTokenizerFast", None) or transformers.XLMRobertaTokenizer
    wrapped = wrapper_class(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
    )
    wrapped.save_pretrained(directory)
    # transformers 5 does not run that tokenizer.json as written (see the docstring): it rebuilds the
    # backend from the vocab. The rebuilt pipeline becomes the tokenizer.json, so that the file and
    # AutoTokenizer agree (family_fixtures here, check_tokenizer in make_base_models.py check it);
    # tokenizer_config.json stays as written above.
    rebuilt = transformers.AutoTokenizer.from_pretrained(directory)
    rebuilt.backend_tokenizer.save(os.path.join(directory, "tokenizer.json"))
    return wrapped


def train_bpe(texts, vocab_size, min_frequency):
    """A byte-level BPE like RoBERTa's trained on texts, specials <s> <pad> </s> <unk> <mask> first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def bpe_tokenizer(directory):
    """Byte-level BPE like RoBERTa's, trained on CORPUS."""
    return save_roberta_tokenizer(train_bpe(CORPUS, vocab_size=300, min_frequency=1), directory)


def unigram_tokenizer(directory):
    """SentencePiece-style Unigram like XLM-R's, trained on CORPUS; <mask> is the last id."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=200, show_progress=False, unk_token="<unk>",
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    # The trainer's output is not the same from run to run: its scores differ in their last bits
    # (summation order), and the characters it appends at the end (required characters that no
    # piece covers, scores decreasing by 0.0001) come in hash-set order. Rounded scores, pieces
    # sorted by (score, piece), the appended characters sorted, so that the file is reproducible.
    state = json.loads(tokenizer.to_str())
    vocab = state["model"]["vocab"]
    specials, pieces = vocab[:4], [[piece, round(score, 6)] for piece, score in vocab[4:]]
    tail = len(pieces) - 1  # the first of the appended characters
    while tail > 0 and len(pieces[tail][0]) == 1 and len(pieces[tail - 1][0]) == 1 \
            and abs(pieces[tail - 1][1] - pieces[tail][1] - 0.0001) < 2e-6:
        tail -= 1
    appended = sorted(piece for piece, _ in pieces[tail:])
    pieces = sorted(pieces[:tail], key=lambda item: (-item[1], item[0])) + \
        [[piece, score] for piece, (_, score) in zip(appended, pieces[tail:])]
    state["model"]["vocab"] = specials + pieces
    tokenizer = Tokenizer.from_str(json.dumps(state))
    return save_xlm_roberta_tokenizer(tokenizer, directory)


def train_sentencepiece(texts):
    """The bytes of a SentencePiece Unigram model (like DeBERTa-v3's spm.model) trained on texts:
    [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3 [MASK]=4 (a control symbol, like [PAD] [CLS] [SEP]: never matched
    in text by sentencepiece), nmt_nfkc normalization (a precompiled charsmap in the model)."""
    import io

    import sentencepiece

    if hasattr(sentencepiece, "set_random_generator_seed"):
        sentencepiece.set_random_generator_seed(1)
    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buffer, model_type="unigram", vocab_size=200,
        pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]",
        unk_id=3, unk_piece="[UNK]", control_symbols=["[MASK]"], normalization_rule_name="nmt_nfkc",
        num_threads=1, shuffle_input_sentence=False, minloglevel=2,
    )
    return buffer.getvalue()


def sentencepiece_tokenizer(directory):
    """spm.model trained on CORPUS (twice: the bytes must be the same), DebertaV2Tokenizer made from
    it and saved (tokenizer_config.json), its tokenizer.json deleted. Returns the tokenizer."""
    model = train_sentencepiece(CORPUS)
    if train_sentencepiece(CORPUS) != model:
        raise SystemExit("sentencepiece: two trainings on CORPUS gave different spm.model bytes")
    vocab_file = os.path.join(directory, "spm.model")
    with open(vocab_file, "wb") as handle:
        handle.write(model)
    # What from_pretrained does with a directory holding spm.model, without the `is_local` and
    # `local_files_only` it would leave in tokenizer_config.json.
    tokenizer = transformers.DebertaV2Tokenizer(
        **transformers.DebertaV2Tokenizer.convert_to_native_format(vocab_file=vocab_file))
    for name, token, index in (("pad", "[PAD]", 0), ("cls", "[CLS]", 1), ("sep", "[SEP]", 2),
                               ("unk", "[UNK]", 3), ("mask", "[MASK]", 4)):
        if (str(getattr(tokenizer, name + "_token")), getattr(tokenizer, name + "_token_id")) != (token, index):
            raise SystemExit(f"sentencepiece: {name}_token is not {token}={index}")
    tokenizer.save_pretrained(directory)
    tokenizer_json = os.path.join(directory, "tokenizer.json")
    if os.path.exists(tokenizer_json):  # the directory must make a reader run spm.model itself
        os.remove(tokenizer_json)
    return tokenizer


MODERNBERT_SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")  # after the BPE vocab, in this order


def train_modernbert_bpe(texts, vocab_size):
    """A byte-level BPE like answerdotai/ModernBERT-base's tokenizer.json: NFC normalizer, ByteLevel
    pre-tokenizer (no prefix space, GPT-2's regex), no unk token, trained on texts with no special
    tokens; then [UNK] [CLS] [SEP] [PAD] [MASK] added after the vocab (ModernBERT's ids 50280..50284
    are its last ones too), [MASK] with lstrip (as the hub's), and the template `[CLS] $A [SEP]`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, show_progress=False, special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    assert tokenizer.get_vocab_size() == vocab_size, tokenizer.get_vocab_size()
    tokenizer.add_special_tokens([
        AddedToken(token, special=True, normalized=False, lstrip=token == "[MASK]") for token in MODERNBERT_SPECIALS])
    for offset, token in enumerate(MODERNBERT_SPECIALS):
        assert tokenizer.token_to_id(token) == vocab_size + offset, token
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tokenizer


def modernbert_tokenizer(directory):
    """The byte-level BPE of train_modernbert_bpe on CORPUS (trained twice: the same tokenizer.json or
    an error), as transformers 5 wraps it for model_type modernbert (TokenizersBackend, which runs
    tokenizer.json as written), save_pretrained(directory). Returns the transformers tokenizer."""
    tokenizer = train_modernbert_bpe(CORPUS, vocab_size=400)
    if train_modernbert_bpe(CORPUS, vocab_size=400).to_str() != tokenizer.to_str():
        raise SystemExit("modernbert: two trainings on CORPUS gave different tokenizers")
    wrapped = transformers.PreTrainedTokenizerFast(  # = TokenizersBackend in transformers 5
        tokenizer_object=tokenizer, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"], model_max_length=128,
    )
    wrapped.save_pretrained(directory)
    return wrapped


def log_buckets():
    """transformers' make_log_bucket_position, as ints, on every distance up to a bound."""
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    rows = []
    for bucket_size, max_position, bound in BUCKET_CASES:
        distances = list(range(-bound, bound + 1))
        buckets = make_log_bucket_position(torch.tensor(distances), bucket_size, max_position)
        rows.append({"bucket_size": bucket_size, "max_position": max_position, "distances": distances,
                     "buckets": [int(value) for value in buckets.tolist()]})
    return rows


def relative_positions(model, length):
    """build_relative_position for `length` tokens with the settings the model's encoder uses."""
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    encoder = model.deberta.encoder
    states = torch.zeros(1, length, model.config.hidden_size)
    ids = build_relative_position(states, states, bucket_size=encoder.position_buckets,
                                  max_position=encoder.max_relative_positions)
    assert torch.equal(ids, encoder.get_rel_pos(states)), "not what the encoder builds"
    attention = encoder.layer[0].attention.self
    settings = {"position_buckets": encoder.position_buckets,
                "max_relative_positions": encoder.max_relative_positions,
                "att_span": attention.pos_ebd_size, "rel_embeddings": list(encoder.rel_embeddings.weight.shape)}
    return ids[0].tolist(), settings


def family_parts(family, vocab_size):
    """(config, classifier class, pretraining class) of a family."""
    common = dict(num_labels=3, id2label=ID2LABEL, label2id=LABEL2ID, attn_implementation="eager")
    if family == "distilbert":
        config = transformers.DistilBertConfig(
            vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=64,
            dropout=0.1, attention_dropout=0.1, seq_classif_dropout=0.2, activation="gelu", pad_token_id=0,
            **common)
        return config, transformers.DistilBertForSequenceClassification, transformers.DistilBertForMaskedLM
    if family in ("roberta", "xlm-roberta"):
        config_class = transformers.RobertaConfig if family == "roberta" else transformers.XLMRobertaConfig
        config = config_class(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
            bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **common)
        if family == "roberta":
            return config, transformers.RobertaForSequenceClassification, transformers.RobertaForMaskedLM
        return config, transformers.XLMRobertaForSequenceClassification, transformers.XLMRobertaForMaskedLM
    if family == "electra":
        config = transformers.ElectraConfig(
            vocab_size=vocab_size, embedding_size=16, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=48, max_position_embeddings=64, type_vocab_size=2,
            **common)
        return config, transformers.ElectraForSequenceClassification, transformers.ElectraForPreTraining
    if family in DEBERTA_FAMILIES:
        shared = dict(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=64, relative_attention=True, layer_norm_eps=1e-7,
            hidden_act="gelu", pooler_hidden_act="gelu", pooler_dropout=0, hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, pad_token_id=0, **common)
        if family == "deberta-v3":  # microsoft/deberta-v3-base's config, scaled down
            config = transformers.DebertaV2Config(
                type_vocab_size=0, position_buckets=8, max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
                norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False, **shared)
        else:  # the other branches: separate position projections, clamped distances, absolute positions
            config = transformers.DebertaV2Config(
                type_vocab_size=2, position_buckets=-1, max_relative_positions=6, pos_att_type=["c2p", "p2c"],
                norm_rel_ebd="none", share_att_key=False, position_biased_input=True, embedding_size=16,
                conv_kernel_size=0, **shared)
        return config, transformers.DebertaV2ForSequenceClassification, transformers.DebertaV2ForMaskedLM
    if family in MODERNBERT_FAMILIES:
        # global_attn_every_n_layers, global_rope_theta and local_rope_theta are the hub configs' keys;
        # transformers 5 turns them into layer_types and rope_parameters (config.json keeps
        # global_attn_every_n_layers too). reference_compile is not saved (to_dict drops it).
        shared = dict(
            vocab_size=vocab_size, hidden_size=32, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=128, global_rope_theta=160000.0, local_rope_theta=10000.0, norm_eps=1e-5,
            norm_bias=False, decoder_bias=True, hidden_activation="gelu", classifier_activation="gelu",
            embedding_dropout=0.0, attention_dropout=0.0, mlp_dropout=0.0, classifier_dropout=0.0,
            pad_token_id=vocab_size - 2, cls_token_id=vocab_size - 4, sep_token_id=vocab_size - 3,
            bos_token_id=vocab_size - 4, eos_token_id=vocab_size - 3, deterministic_flash_attn=False,
            reference_compile=False, **common)  # ids: MODERNBERT_SPECIALS end the vocab (checked later)
        if family == "modernbert":  # layers 0 and 2 global, 1 local with a window of 8 (|i - j| <= 4)
            config = transformers.ModernBertConfig(
                num_hidden_layers=3, global_attn_every_n_layers=2, local_attention=8, classifier_pooling="cls",
                attention_bias=False, mlp_bias=False, classifier_bias=False, **shared)
        else:  # the bias branches and mean pooling: layer 0 global, 1 local with a window of 16 (|i - j| <= 8)
            config = transformers.ModernBertConfig(
                num_hidden_layers=2, global_attn_every_n_layers=2, local_attention=16, classifier_pooling="mean",
                attention_bias=True, mlp_bias=True, classifier_bias=True, **shared)
        return config, transformers.ModernBertForSequenceClassification, transformers.ModernBertForMaskedLM
    raise ValueError(family)


def modernbert_extras(model, inputs):
    """What the ModernBERT families' expected JSON adds: layer types, the rotary tables and the sliding
    window mask of the batch's length as transformers makes them, the last hidden state and the head's
    input (the pooled states) of the batch, all float32 as the model computes them."""
    from transformers.masking_utils import create_bidirectional_sliding_window_mask

    config = model.config
    length = inputs["input_ids"].shape[1]
    states = torch.zeros(1, length, config.hidden_size)
    positions = torch.arange(length).unsqueeze(0)
    extras = {"layer_types": list(config.layer_types), "local_attention": config.local_attention,
              "sliding_window": config.sliding_window}
    for name, layer_type in (("global", "full_attention"), ("local", "sliding_attention")):
        cos, sin = model.model.rotary_emb(states, positions, layer_type)
        extras[f"rotary_{name}_cos"] = float9(cos[0].tolist())
        extras[f"rotary_{name}_sin"] = float9(sin[0].tolist())
    # The eager mask of a local layer without padding (0 where a query may attend a key, finfo.min elsewhere).
    mask = create_bidirectional_sliding_window_mask(
        config=config, inputs_embeds=states, attention_mask=torch.ones(1, length, dtype=torch.long),
        allow_is_bidirectional_skip=False)
    window = (mask[0, 0] == 0).long()
    distances = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).abs()
    assert torch.equal(window, (distances <= config.sliding_window).long()), "not |i - j| <= local_attention // 2"
    extras["sliding_window_mask"] = window.tolist()
    pooled = []
    hook = model.head.register_forward_pre_hook(lambda module, args: pooled.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            hidden = model.model(**inputs).last_hidden_state
            model(**inputs)
    finally:
        hook.remove()
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mine = hidden[:, 0] if config.classifier_pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)
    assert torch.allclose(pooled[0], mine, atol=1e-6), "the head's input is not the pooled last hidden state"
    extras["hidden_states_last"] = float9(hidden.tolist())
    extras["pooled"] = float9(pooled[0].tolist())
    return extras


class modernbert_in_float64:
    """transformers' ModernBERT computes in float32 inside a float64 model: the rotary tables
    (inv_freq from a float32 arange, position * inv_freq and cos/sin in float32), the rotary
    application (q.float(), k.float()) and the eager softmax (dtype=torch.float32). Inside this
    context the same functions keep float64 throughout (inv_freq recomputed in float64), so that the
    gradients file is float64 arithmetic like the other families'. Patches and restores the module."""

    def __init__(self, model):
        from transformers.models.modernbert import modeling_modernbert

        self.module, self.model = modeling_modernbert, model

    def __enter__(self):
        module = self.module
        self.saved = (module.apply_rotary_pos_emb, module.eager_attention_forward,
                      module.ModernBertRotaryEmbedding.forward)

        def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
            cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
            return q * cos + module.rotate_half(q) * sin, k * cos + module.rotate_half(k) * sin

        def eager_attention_forward(attention, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
            weights = torch.matmul(query, key.transpose(2, 3)) * scaling
            if attention_mask is not None:
                weights = weights + attention_mask
            weights = torch.nn.functional.softmax(weights, dim=-1)
            weights = torch.nn.functional.dropout(weights, p=dropout, training=attention.training)
            return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

        def rotary_forward(rotary, x, position_ids, layer_type):
            inv_freq = getattr(rotary, f"{layer_type}_inv_freq").to(device=x.device, dtype=x.dtype)
            freqs = position_ids[..., None].to(x.dtype) * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            scaling = getattr(rotary, f"{layer_type}_attention_scaling")
            return emb.cos() * scaling, emb.sin() * scaling

        rotary = self.model.model.rotary_emb
        dim = self.model.config.hidden_size // self.model.config.num_attention_heads
        for layer_type in rotary.layer_types:
            assert rotary.rope_type[layer_type] == "default", rotary.rope_type
            theta = self.model.config.rope_parameters[layer_type]["rope_theta"]
            inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
            getattr(rotary, f"{layer_type}_inv_freq").copy_(inv_freq)
        module.apply_rotary_pos_emb, module.eager_attention_forward = apply_rotary_pos_emb, eager_attention_forward
        module.ModernBertRotaryEmbedding.forward = rotary_forward
        return self

    def __exit__(self, *_):
        module = self.module
        module.apply_rotary_pos_emb, module.eager_attention_forward, module.ModernBertRotaryEmbedding.forward = \
            self.saved
        return False


def float9(values):
    """Rounded to 9 significant digits: enough to give back the same float32."""
    if isinstance(values, list):
        return [float9(value) for value in values]
    return float(f"{values:.9g}")


def family_fixtures(family):
    from safetensors.torch import save_file
    from tokenizers import Tokenizer

    directory = os.path.join(FIXTURES, f"tiny-{family}")
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    torch.manual_seed(SEEDS[family])
    generator = torch.Generator().manual_seed(SEEDS[family])
    spm_family = family in DEBERTA_FAMILIES  # spm.model, no tokenizer.json
    modernbert = family in MODERNBERT_FAMILIES

    if family == "distilbert":
        tokenizer = wordpiece_tokenizer(directory, transformers.DistilBertTokenizer)
    elif family == "electra":
        tokenizer = wordpiece_tokenizer(directory, transformers.ElectraTokenizer)
    elif family == "roberta":
        tokenizer = bpe_tokenizer(directory)
    elif spm_family:
        tokenizer = sentencepiece_tokenizer(directory)
    elif modernbert:
        tokenizer = modernbert_tokenizer(directory)
    else:
        tokenizer = unigram_tokenizer(directory)
    vocab_size = len(tokenizer)

    config, classifier_class, pretraining_class = family_parts(family, vocab_size)
    classifier = classifier_class(config).eval()
    randomize(classifier, generator)
    if family in PYTORCH_BIN_FAMILIES:  # the other format: config.json + pytorch_model.bin
        classifier.config.save_pretrained(directory)
        torch.save(classifier.state_dict(), os.path.join(directory, "pytorch_model.bin"))
    else:
        classifier.save_pretrained(directory)
    if family == "deberta-v3":  # pos_att_type as hub configs write it: "p2c|c2p"
        config_path = os.path.join(directory, "config.json")
        as_list = transformers.AutoConfig.from_pretrained(directory).to_dict()
        with open(config_path) as handle:
            written = json.load(handle)
        written["pos_att_type"] = "|".join(written["pos_att_type"])
        with open(config_path, "w") as handle:  # the layout of PretrainedConfig.to_json_file
            handle.write(json.dumps(written, indent=2, sort_keys=True) + "\n")
        as_string = transformers.AutoConfig.from_pretrained(directory).to_dict()
        if as_string != as_list:
            changed = sorted(k for k in set(as_list) | set(as_string) if as_list.get(k) != as_string.get(k))
            raise SystemExit(f"deberta-v3: config.json with pos_att_type {written['pos_att_type']!r} loads "
                             f"differently: {changed}")

    # Everything below is read back from the directory, as a user of the fixture would.
    saved_tokenizer = tokenizer
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    if spm_family:
        import sentencepiece

        if os.path.exists(os.path.join(directory, "tokenizer.json")):
            raise SystemExit(f"{family}: {directory} has a tokenizer.json")
        processor = sentencepiece.SentencePieceProcessor(model_file=os.path.join(directory, "spm.model"))
        assert processor.get_piece_size() == len(tokenizer), (processor.get_piece_size(), len(tokenizer))
        backend = None
    else:
        backend = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        directory, attn_implementation="eager").eval()
    assert type(model) is classifier_class, type(model)
    if model.config._attn_implementation != "eager":
        raise SystemExit(f"{family}: the model runs {model.config._attn_implementation!r} attention, not eager")
    if modernbert:
        for name in ("pad", "cls", "sep", "bos", "eos"):
            token = {"bos": "cls", "eos": "sep"}.get(name, name)
            if getattr(model.config, name + "_token_id") != getattr(tokenizer, token + "_token_id"):
                raise SystemExit(f"{family}: config {name}_token_id is not the tokenizer's {token}_token_id")
    for (name, saved), (_, loaded) in zip(classifier.state_dict().items(), model.state_dict().items()):
        assert torch.equal(saved, loaded), name

    sentences = SENTENCES + ([NON_ASCII_SENTENCE] if family in ("roberta", "xlm-roberta") or spm_family or modernbert
                             else [])
    sentences += [LONG_SENTENCE] if spm_family or modernbert else []
    labels = torch.tensor((LABELS + [LONG_SENTENCE_LABEL])[:len(sentences)])
    encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    with torch.no_grad():
        logits = model(**inputs).logits
    loss = torch.nn.functional.cross_entropy(logits, labels)

    texts = sentences + EDGE_TEXTS + (SPM_TEXTS if spm_family else []) + (MODERNBERT_TEXTS if modernbert else [])
    if modernbert:
        length = encoded["input_ids"].shape[1]
        if length < max(30, 2 * config.local_attention) or encoded["attention_mask"].all():
            raise SystemExit(f"{family}: the batch ({length} tokens) must be padded and longer than 30 tokens "
                             f"and twice the local window {config.local_attention}")
    tokenizer_ids = [tokenizer(text)["input_ids"] for text in texts]
    if spm_family:
        if [saved_tokenizer(text)["input_ids"] for text in texts] != tokenizer_ids:
            raise SystemExit(f"{family}: AutoTokenizer on {directory} is not the tokenizer saved there")
        if encoded["input_ids"].shape[1] <= 26:  # deberta-v3's bucket 7 starts at 26; deberta-v2 clamps at 6
            raise SystemExit(f"{family}: no sentence longer than 26 tokens (log buckets, clamping)")
        # Both the recorded ids and the disagreements: these differ by design (see the docstring).
        other_ids_name = "sentencepiece_ids"
        other_ids = [[tokenizer.cls_token_id] + processor.encode(text) + [tokenizer.sep_token_id] for text in texts]
        disagreements = [text for text, a, b in zip(texts, tokenizer_ids, other_ids) if a != b]
    else:
        other_ids_name = "tokenizer_json_ids"
        other_ids = [backend.encode(text).ids for text in texts]
        disagreements = [text for text, a, b in zip(texts, tokenizer_ids, other_ids) if a != b]
        batch_json_ids = [backend.encode(sentence).ids for sentence in sentences]
        for sentence, ids in zip(sentences, batch_json_ids):
            if ids != tokenizer(sentence)["input_ids"] and sentence not in disagreements:
                disagreements.append(sentence)
        if disagreements:  # not `assert`: it must fail under python -O too
            raise SystemExit(f"{family}: AutoTokenizer ({type(tokenizer).__name__}) and "
                             f"{os.path.join(directory, 'tokenizer.json')} give different ids on {disagreements!r}")

    # The pretraining model of the same config, and what the classifier makes of its checkpoint.
    pretraining = pretraining_class(copy.deepcopy(config)).eval()
    pretraining_keys = [[name, list(tensor.shape)] for name, tensor in pretraining.state_dict().items()]
    with tempfile.TemporaryDirectory() as temporary:
        pretraining.save_pretrained(temporary)
        _, info = classifier_class.from_pretrained(
            temporary, num_labels=3, output_loading_info=True, attn_implementation="eager")
    pretraining_load = {}
    for key, value in info.items():
        if key in ("missing_keys", "unexpected_keys"):
            pretraining_load[key] = sorted(value)
        else:  # anything else v5 reports (mismatched_keys, error_msgs, ...): kept as given
            pretraining_load[key] = sorted(list(item) if isinstance(item, tuple) else item for item in value) \
                if isinstance(value, (list, set, tuple)) else value

    special_tokens = {
        name: [str(getattr(tokenizer, name)), getattr(tokenizer, name + "_id")]
        for name in ("bos_token", "eos_token", "sep_token", "cls_token", "unk_token", "pad_token", "mask_token")
        if getattr(tokenizer, name, None) is not None
    }
    expected = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "model_type": config.model_type,
        "architecture": classifier_class.__name__,
        "tokenizer_class": type(tokenizer).__name__,
        "sentences": sentences,
        "model_inputs": sorted(inputs),
        "input_ids": encoded["input_ids"].tolist(),
        "attention_mask": encoded["attention_mask"].tolist(),
        "labels": labels.tolist(),
        "logits": float9(logits.tolist()),
        "loss": float(loss.item()),
        "tokenizer_texts": texts,
        "tokenizer_ids": tokenizer_ids,
        other_ids_name: other_ids,
        "tokenizer_disagreements": disagreements,
        "vocab_size": vocab_size,
        "pad_token_id": tokenizer.pad_token_id,
        "special_tokens": special_tokens,
        "pretraining_architecture": pretraining_class.__name__,
        "pretraining_keys": pretraining_keys,
        "pretraining_load": pretraining_load,
        "gradients": {"file": f"tiny-{family}-gradients.safetensors", "dtype": "float64", "loss_shape": []},
    }
    if modernbert:
        with open(os.path.join(directory, "config.json")) as handle:
            expected["config_json"] = json.load(handle)
        expected.update(modernbert_extras(model, inputs))
        expected["gradients"]["float64"] = "throughout (transformers' float32 steps made float64, rotary tables too)"
    if spm_family:
        expected["buckets"] = log_buckets()
        expected["relative_position_ids"], expected["relative_attention"] = \
            relative_positions(model, encoded["input_ids"].shape[1])
    with open(os.path.join(FIXTURES, f"tiny-{family}-expected.json"), "w") as handle:
        json.dump(expected, handle, ensure_ascii=False)

    # float64, eval mode (no dropout): d loss / d parameter for every named parameter.
    double = copy.deepcopy(model).double().eval()
    double.zero_grad(set_to_none=True)
    with modernbert_in_float64(double) if modernbert else contextlib.nullcontext():
        logits64 = double(**inputs).logits
    loss64 = torch.nn.functional.cross_entropy(logits64, labels)
    loss64.backward()
    gradients = {}
    for name, parameter in double.named_parameters():
        assert parameter.grad is not None, f"{family}: no gradient for {name}"
        gradients[name] = parameter.grad.detach().clone().contiguous()
    assert set(gradients) == set(model.state_dict()), set(gradients) ^ set(model.state_dict())
    gradients["logits"] = logits64.detach().clone().contiguous()
    gradients["loss"] = loss64.detach().clone()
    assert torch.allclose(logits64.float(), logits, atol=1e-5), (logits64, logits)
    save_file(gradients, os.path.join(FIXTURES, f"tiny-{family}-gradients.safetensors"))
    print("wrote", directory)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", action="store_true", help="also record the example model's [CLS] states")
    parser.add_argument("--family", action="append", choices=FAMILIES, metavar="NAME",
                        help="make only this family's fixtures (repeatable; default: all): " + ", ".join(FAMILIES))
    arguments = parser.parse_args()
    families = arguments.family or list(FAMILIES)
    if "bert" in families:
        torch.manual_seed(0)
        tiny_fixtures()
    for family in FAMILIES[1:]:
        if family in families:
            family_fixtures(family)
    if arguments.minilm:
        minilm_fixture()
