#!/usr/bin/env python3
"""Makes randomly initialised BASE-size encoders, one Hugging Face directory per family, to
benchmark the training-step time of each family beside BERT of the same size.

    python3 scripts/make_base_models.py OUTPUT_DIR                      # every family
    python3 scripts/make_base_models.py OUTPUT_DIR --family roberta --family electra-small

--family NAME (repeatable; bert, distilbert, roberta, xlm-roberta, electra, electra-small, deberta-v3,
modernbert; default: all of them). Each family is written to OUTPUT_DIR/NAME (replaced if it exists). Optional
--vocab PATH (the WordPiece vocab.txt; default: assets/models/all-MiniLM-L6-v2/vocab.txt, else the
first 30522-line vocab.txt under assets/) and --corpus PATH (the CSV whose `text` column trains the
RoBERTa and XLM-R tokenizers; default: assets/data/tweets.csv, else the first CSV under assets/
with a `text` column).

The weights are transformers' default init (torch.manual_seed(0) before each model is built, so a
family's weights do not depend on which others are made), float32, saved with save_pretrained
(model.safetensors). The saved class is the family's BASE model (BertModel, DistilBertModel,
RobertaModel, XLMRobertaModel, ElectraModel: keys without a prefix), i.e. what a user fine-tunes
from; bertlab initialises the classification head. deberta-v3 and modernbert are saved as
*ForSequenceClassification instead (keys under deberta. / model., the head included: 3 labels
negative/neutral/positive). Sizes (hidden 768, 12 layers, 12 heads, intermediate 3072 unless said):

  bert           BertConfig, vocab 30522, 512 positions, 2 token types
  distilbert     DistilBertConfig, vocab 30522, 6 layers (DistilBERT base), 512 positions
  roberta        RobertaConfig, vocab 50265, 514 positions, 1 token type, pad 1, eps 1e-5
  xlm-roberta    XLMRobertaConfig, the same with vocab 250002
  electra        ElectraConfig, embedding_size 768 = hidden (no embedding projection)
  electra-small  ElectraConfig, embedding_size 128, hidden 256, 12 layers, 4 heads, intermediate
                 1024 (the embedding projection 128 -> 256 is measured too)
  deberta-v3     DebertaV2Config (model_type deberta-v2), microsoft/deberta-v3-base's config.json:
                 vocab 128100, 512 positions, relative attention with position_buckets 256,
                 max_relative_positions -1, pos_att_type "p2c|c2p" (written as the hub's string),
                 share_att_key, norm_rel_ebd layer_norm, position_biased_input false, no token
                 types, eps 1e-7, dropouts 0.1 (pooler_dropout 0), GELU; DebertaV2ForSequenceClassification
  modernbert     ModernBertConfig, answerdotai/ModernBERT-base's config.json: 22 layers, intermediate
                 1152 (GeGLU), vocab 50368, 8192 positions, global attention every 3rd layer
                 (rotary theta 160000), the others local over 128 tokens (theta 10000), eps 1e-5,
                 no norm/attention/MLP/head biases, classifier_pooling "mean" (the hub's), dropouts 0,
                 pad/cls/sep ids the tokenizer's (below); ModernBertForSequenceClassification, with
                 "attn_implementation": "eager" in config.json (transformers does not save it; a
                 model loaded from the directory runs eager attention unless told otherwise)

Tokenizers (the ids only need to be valid: the models are for timing, not for accuracy):

  bert, distilbert, electra, electra-small: WordPiece from the example model's vocab.txt (30522
      entries, lower case), through the family's tokenizer class.
  roberta: byte-level BPE trained with `tokenizers` on the corpus (vocab up to 50265; the corpus
      may give fewer), <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4, RobertaProcessing.
  xlm-roberta: Unigram + Metaspace trained on the corpus (vocab up to 32000), <s>=0 <pad>=1 </s>=2
      <unk>=3, <mask> last, template `<s> $A </s>`. transformers 5 rebuilds XLM-R's pipeline when
      it loads the tokenizer, so the rebuilt backend (AutoTokenizer) is written as tokenizer.json:
      the file is what transformers runs.
  deberta-v3: the fixture's (tests/fixtures/tiny-deberta-v3: spm.model, 200 pieces, [PAD]=0 [CLS]=1
      [SEP]=2 [UNK]=3 [MASK]=4, and its tokenizer_config.json; no tokenizer.json, as hub DeBERTa-v3
      directories): ids below 200 of the model's 128100.
  modernbert: the fixture's (tests/fixtures/tiny-modernbert: tokenizer.json, a byte-level BPE of 400
      pieces, [UNK]=400 [CLS]=401 [SEP]=402 [PAD]=403 [MASK]=404, and tokenizer_config.json). The
      model's pad_token_id (403), cls/bos_token_id (401) and sep/eos_token_id (402) are the
      tokenizer's, not the hub's 50283/50281/50282; vocab_size stays 50368.

Each family's tokenizer.json is checked against AutoTokenizer on a sample of the corpus (the same
ids, or the script fails), and every tokenizer id is checked to be below the model's vocab_size
(deberta-v3, without a tokenizer.json: AutoTokenizer's ids on the sample). deberta-v3 and modernbert
are loaded back (AutoModelForSequenceClassification, AutoTokenizer) and run on two sentences.
Prints per family: parameter count, tokenizer vocab size, directory size.
"""
import argparse
import csv
import glob
import json
import os
import shutil
import sys

import torch
import transformers

# The steps after training (special ids, post-processor, transformers' tokenizer class,
# save_pretrained, XLM-R's rebuilt tokenizer.json) are the fixtures' (scripts/make_fixtures.py,
# found beside this script: Python puts the script's folder on sys.path).
from make_fixtures import save_roberta_tokenizer, save_xlm_roberta_tokenizer, train_bpe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "electra-small", "deberta-v3",
            "modernbert")
WORDPIECE_FAMILIES = ("bert", "distilbert", "electra", "electra-small")
# Saved with a classification head, their tokenizer copied from a test fixture.
CLASSIFIER_FAMILIES = {"deberta-v3": ("tiny-deberta-v3", ("spm.model", "tokenizer_config.json")),
                       "modernbert": ("tiny-modernbert", ("tokenizer.json", "tokenizer_config.json"))}
ID2LABEL = {0: "negative", 1: "neutral", 2: "positive"}
HEAD = dict(num_labels=3, id2label=ID2LABEL, label2id={label: index for index, label in ID2LABEL.items()})
SEED = 0
BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


# ---------------------------------------------------------------------------------------------
# Inputs: the WordPiece vocabulary and the corpus the other tokenizers are trained on.

def find_vocab(path):
    if path:
        return path
    default = os.path.join(ASSETS, "models", "all-MiniLM-L6-v2", "vocab.txt")
    if os.path.isfile(default):
        return default
    for candidate in sorted(glob.glob(os.path.join(ASSETS, "**", "vocab.txt"), recursive=True)):
        with open(candidate, encoding="utf-8") as handle:
            if sum(1 for _ in handle) == 30522:
                return candidate
    raise SystemExit(f"no 30522-entry vocab.txt under {ASSETS} (run scripts/fetch-assets.sh, or pass --vocab)")


def read_texts(path):
    # The corpus holds invalid UTF-8 (bertlab reads it with encoding = "utf8-lossy"): replaced by
    # U+FFFD here too.
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        if "text" not in (reader.fieldnames or []):
            return None
        return [row["text"] for row in reader if row.get("text")]


def find_corpus(path):
    candidates = [path] if path else \
        [os.path.join(ASSETS, "data", "tweets.csv")] + \
        sorted(glob.glob(os.path.join(ASSETS, "**", "*.csv"), recursive=True))
    for candidate in candidates:
        if os.path.isfile(candidate):
            texts = read_texts(candidate)
            if texts:
                return candidate, texts
    raise SystemExit(f"no CSV with a `text` column under {ASSETS} (run scripts/fetch-assets.sh, or pass --corpus)")


# ---------------------------------------------------------------------------------------------
# Tokenizers.

def wordpiece_tokenizer(directory, tokenizer_class, vocab_path):
    # transformers 5's WordPiece tokenizers take the vocab file as `vocab` (a path or a dict).
    tokenizer = tokenizer_class(vocab=vocab_path, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def bpe_tokenizer(directory, texts):
    """Byte-level BPE like RoBERTa's."""
    return save_roberta_tokenizer(train_bpe(texts, vocab_size=50265, min_frequency=2), directory)


def unigram_tokenizer(directory, texts):
    """SentencePiece-style Unigram like XLM-R's; <mask> is the last id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    # No normalizer: transformers 5 drops any but a Precompiled one when it rebuilds the pipeline,
    # so the pieces are trained on the text as the rebuilt tokenizer sees it.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=32000, show_progress=False, unk_token="<unk>",
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
    )
    tokenizer.train_from_iterator(texts, trainer)
    return save_xlm_roberta_tokenizer(tokenizer, directory)


def fixture_tokenizer(directory, family):
    """Copies the family's tokenizer files from its test fixture."""
    fixture, names = CLASSIFIER_FAMILIES[family]
    for name in names:
        shutil.copyfile(os.path.join(FIXTURES, fixture, name), os.path.join(directory, name))


def sample_texts(texts):
    return texts[::max(1, len(texts) // 500)] + ["", "Café déjà vu — naïve, isn't it? 🙂"]


def check_sentencepiece_tokenizer(family, directory, texts, model_vocab_size):
    """spm.model without tokenizer.json: AutoTokenizer's ids on the sample fit the embedding table."""
    if os.path.exists(os.path.join(directory, "tokenizer.json")):
        raise SystemExit(f"{family}: {directory} has a tokenizer.json")
    auto = transformers.AutoTokenizer.from_pretrained(directory)
    size = len(auto)
    if size > model_vocab_size:
        raise SystemExit(f"{family}: tokenizer has {size} ids, the model's vocab_size is {model_vocab_size}")
    for text in sample_texts(texts):
        ids = auto(text)["input_ids"]
        if max(ids) >= model_vocab_size:
            raise SystemExit(f"{family}: AutoTokenizer gives id {max(ids)} on {text!r}")
    return size


def check_tokenizer(family, directory, texts, model_vocab_size):
    """tokenizer.json gives AutoTokenizer's ids, and every id fits the model's embedding table."""
    from tokenizers import Tokenizer

    if family == "deberta-v3":
        return check_sentencepiece_tokenizer(family, directory, texts, model_vocab_size)
    auto = transformers.AutoTokenizer.from_pretrained(directory)
    backend = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    size = backend.get_vocab_size(with_added_tokens=True)
    if size > model_vocab_size:
        raise SystemExit(f"{family}: tokenizer has {size} ids, the model's vocab_size is {model_vocab_size}")
    for text in sample_texts(texts):
        a, b = auto(text)["input_ids"], backend.encode(text).ids
        if a != b:
            raise SystemExit(f"{family}: AutoTokenizer ({type(auto).__name__}) and tokenizer.json "
                             f"give different ids on {text!r}: {a} vs {b}")
    return size


# ---------------------------------------------------------------------------------------------
# Models.

def family_model(family):
    """(config, base model class) of a family at base size."""
    if family == "bert":
        config = transformers.BertConfig(
            vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, **BASE)
        return config, transformers.BertModel
    if family == "distilbert":
        config = transformers.DistilBertConfig(
            vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512)
        return config, transformers.DistilBertModel
    if family in ("roberta", "xlm-roberta"):
        config_class, model_class, vocab_size = (
            (transformers.RobertaConfig, transformers.RobertaModel, 50265) if family == "roberta"
            else (transformers.XLMRobertaConfig, transformers.XLMRobertaModel, 250002))
        config = config_class(
            vocab_size=vocab_size, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
            bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **BASE)
        return config, model_class
    if family == "electra":
        config = transformers.ElectraConfig(
            vocab_size=30522, embedding_size=768, max_position_embeddings=512, **BASE)
        return config, transformers.ElectraModel
    if family == "electra-small":
        config = transformers.ElectraConfig(
            vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12,
            num_attention_heads=4, intermediate_size=1024, max_position_embeddings=512)
        return config, transformers.ElectraModel
    if family == "deberta-v3":  # microsoft/deberta-v3-base's config.json
        config = transformers.DebertaV2Config(
            vocab_size=128100, max_position_embeddings=512, relative_attention=True, position_buckets=256,
            max_relative_positions=-1, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
            share_att_key=True, position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7,
            hidden_act="gelu", pooler_hidden_act="gelu", pooler_dropout=0, hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, pad_token_id=0, **BASE, **HEAD)
        return config, transformers.DebertaV2ForSequenceClassification
    if family == "modernbert":  # answerdotai/ModernBERT-base's config.json, the tokenizer's special ids
        # global_attn_every_n_layers, global_rope_theta and local_rope_theta are the hub config's keys;
        # transformers 5 turns them into layer_types and rope_parameters.
        config = transformers.ModernBertConfig(
            vocab_size=50368, hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
            intermediate_size=1152, max_position_embeddings=8192, global_attn_every_n_layers=3,
            local_attention=128, global_rope_theta=160000.0, local_rope_theta=10000.0, norm_eps=1e-5,
            norm_bias=False, attention_bias=False, mlp_bias=False, classifier_bias=False, decoder_bias=True,
            classifier_pooling="mean", hidden_activation="gelu", classifier_activation="gelu",
            embedding_dropout=0.0, attention_dropout=0.0, mlp_dropout=0.0, classifier_dropout=0.0,
            initializer_range=0.02, initializer_cutoff_factor=2.0, deterministic_flash_attn=False,
            pad_token_id=403, cls_token_id=401, sep_token_id=402, bos_token_id=401, eos_token_id=402,
            attn_implementation="eager", **HEAD)
        return config, transformers.ModernBertForSequenceClassification
    raise ValueError(family)


def rewrite_config(family, directory):
    """config.json as the hub's: deberta-v3's pos_att_type as the string "p2c|c2p"; modernbert's
    attn_implementation "eager" (save_pretrained leaves it out). Checked to load as before, but for
    the attention implementation."""
    path = os.path.join(directory, "config.json")
    before = transformers.AutoConfig.from_pretrained(directory)
    with open(path) as handle:
        written = json.load(handle)
    if family == "deberta-v3":
        written["pos_att_type"] = "|".join(written["pos_att_type"])
    else:
        written["attn_implementation"] = "eager"
    with open(path, "w") as handle:  # the layout of PretrainedConfig.to_json_file
        handle.write(json.dumps(written, indent=2, sort_keys=True) + "\n")
    after = transformers.AutoConfig.from_pretrained(directory)
    if after.to_dict() != before.to_dict():
        changed = sorted(key for key in set(before.to_dict()) | set(after.to_dict())
                         if before.to_dict().get(key) != after.to_dict().get(key))
        raise SystemExit(f"{family}: the rewritten config.json loads differently: {changed}")
    if family == "modernbert" and after._attn_implementation != "eager":
        raise SystemExit(f"{family}: config.json loads with {after._attn_implementation!r} attention")


def check_classifier(family, directory, model_class, config):
    """Loaded back from the directory: the class, eager attention (modernbert), the special ids the
    tokenizer's (modernbert), finite (2, 3) logits on two sentences. Returns the logits."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(directory).eval()
    if type(model) is not model_class:
        raise SystemExit(f"{family}: AutoModelForSequenceClassification gives {type(model).__name__}")
    if family == "modernbert":
        if model.config._attn_implementation != "eager":
            raise SystemExit(f"{family}: the model runs {model.config._attn_implementation!r} attention")
        for name, token in (("pad", "pad"), ("cls", "cls"), ("sep", "sep"), ("bos", "cls"), ("eos", "sep")):
            if getattr(model.config, name + "_token_id") != getattr(tokenizer, token + "_token_id"):
                raise SystemExit(f"{family}: config {name}_token_id is not the tokenizer's {token}_token_id")
    batch = tokenizer(["Self-driving cars will change how we commute.", "I would never trust a car!"],
                      padding=True, return_tensors="pt")
    if int(batch["input_ids"].max()) >= config.vocab_size:
        raise SystemExit(f"{family}: the tokenizer gives ids beyond vocab_size")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    if tuple(logits.shape) != (2, 3) or not torch.isfinite(logits).all():
        raise SystemExit(f"{family}: logits {tuple(logits.shape)}: {logits}")
    return logits


def directory_size(directory):
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(directory) for name in names)


def human(size):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024


def make(family, output, vocab_path, texts):
    directory = os.path.join(output, family)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)

    config, model_class = family_model(family)
    torch.manual_seed(SEED)
    model = model_class(config).eval()
    parameters = sum(parameter.numel() for parameter in model.parameters())
    model.save_pretrained(directory)  # model.safetensors + config.json
    del model

    if family in CLASSIFIER_FAMILIES:
        rewrite_config(family, directory)
        fixture_tokenizer(directory, family)
    elif family in WORDPIECE_FAMILIES:
        tokenizer_class = {"bert": transformers.BertTokenizer, "distilbert": transformers.DistilBertTokenizer}.get(
            family, transformers.ElectraTokenizer)
        wordpiece_tokenizer(directory, tokenizer_class, vocab_path)
    elif family == "roberta":
        bpe_tokenizer(directory, texts)
    else:
        unigram_tokenizer(directory, texts)
    tokenizer_size = check_tokenizer(family, directory, texts, config.vocab_size)
    if family in CLASSIFIER_FAMILIES:
        logits = check_classifier(family, directory, model_class, config)
        print(f"{family}: loaded back, logits on two sentences {[round(x, 4) for x in logits.flatten().tolist()]}",
              flush=True)

    size = directory_size(directory)
    print(f"{family:14s} parameters {parameters:>12,}  model vocab {config.vocab_size:>7,}  "
          f"tokenizer vocab {tokenizer_size:>7,}  directory {human(size):>10s} ({size:,} bytes)  {directory}",
          flush=True)
    return {"family": family, "directory": directory, "parameters": parameters,
            "model_vocab_size": config.vocab_size, "tokenizer_vocab_size": tokenizer_size, "bytes": size}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", metavar="OUTPUT_DIR")
    parser.add_argument("--family", action="append", choices=FAMILIES, metavar="NAME",
                        help=f"repeatable; one of {', '.join(FAMILIES)} (default: all)")
    parser.add_argument("--vocab", help="WordPiece vocab.txt (default: the example model's)")
    parser.add_argument("--corpus", help="CSV with a `text` column for the BPE/Unigram tokenizers")
    arguments = parser.parse_args()
    families = [family for family in FAMILIES if family in (arguments.family or FAMILIES)]

    vocab_path = find_vocab(arguments.vocab) if set(families) & set(WORDPIECE_FAMILIES) else None
    texts = None
    if set(families) & {"roberta", "xlm-roberta"}:
        corpus, texts = find_corpus(arguments.corpus)
        print(f"corpus {corpus}: {len(texts):,} texts", flush=True)
    if vocab_path:
        print(f"vocab {vocab_path}", flush=True)
    if texts is None:  # the WordPiece and fixture-tokenizer families' check still wants some text
        texts = ["Self-driving cars will change how we commute.", "I would never trust a car without a driver!"]

    os.makedirs(arguments.output, exist_ok=True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, seed {SEED}", flush=True)
    summary = [make(family, arguments.output, vocab_path, texts) for family in families]
    with open(os.path.join(arguments.output, "summary.json"), "w") as handle:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "seed": SEED,
                   "models": summary}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
