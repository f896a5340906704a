#!/usr/bin/env python3
"""Makes randomly initialised BASE-size encoders, one Hugging Face directory per family, to
benchmark the training-step time of each family beside BERT of the same size.

    python3 scripts/make_base_models.py OUTPUT_DIR                      # every family
    python3 scripts/make_base_models.py OUTPUT_DIR --family roberta --family electra-small

--family NAME (repeatable; bert, distilbert, roberta, xlm-roberta, electra, electra-small; default:
all of them). Each family is written to OUTPUT_DIR/NAME (replaced if it exists). Optional
--vocab PATH (the WordPiece vocab.txt; default: assets/models/all-MiniLM-L6-v2/vocab.txt, else the
first 30522-line vocab.txt under assets/) and --corpus PATH (the CSV whose `text` column trains the
RoBERTa and XLM-R tokenizers; default: assets/data/tweets.csv, else the first CSV under assets/
with a `text` column).

The weights are transformers' default init (torch.manual_seed(0) before each model is built, so a
family's weights do not depend on which others are made), float32, saved with save_pretrained
(model.safetensors). The saved class is the family's BASE model (BertModel, DistilBertModel,
RobertaModel, XLMRobertaModel, ElectraModel: keys without a prefix), i.e. what a user fine-tunes
from; bertlab initialises the classification head. Sizes (hidden 768, 12 layers, 12 heads,
intermediate 3072 unless said):

  bert           BertConfig, vocab 30522, 512 positions, 2 token types
  distilbert     DistilBertConfig, vocab 30522, 6 layers (DistilBERT base), 512 positions
  roberta        RobertaConfig, vocab 50265, 514 positions, 1 token type, pad 1, eps 1e-5
  xlm-roberta    XLMRobertaConfig, the same with vocab 250002
  electra        ElectraConfig, embedding_size 768 = hidden (no embedding projection)
  electra-small  ElectraConfig, embedding_size 128, hidden 256, 12 layers, 4 heads, intermediate
                 1024 (the embedding projection 128 -> 256 is measured too)

Tokenizers (the ids only need to be valid: the models are for timing, not for accuracy):

  bert, distilbert, electra, electra-small: WordPiece from the example model's vocab.txt (30522
      entries, lower case), through the family's tokenizer class.
  roberta: byte-level BPE trained with `tokenizers` on the corpus (vocab up to 50265; the corpus
      may give fewer), <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4, RobertaProcessing.
  xlm-roberta: Unigram + Metaspace trained on the corpus (vocab up to 32000), <s>=0 <pad>=1 </s>=2
      <unk>=3, <mask> last, template `<s> $A </s>`. transformers 5 rebuilds XLM-R's pipeline when
      it loads the tokenizer, so the rebuilt backend (AutoTokenizer) is written as tokenizer.json:
      the file is what transformers runs.

Each family's tokenizer.json is checked against AutoTokenizer on a sample of the corpus (the same
ids, or the script fails), and every tokenizer id is checked to be below the model's vocab_size.
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
FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "electra-small")
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


def check_tokenizer(family, directory, texts, model_vocab_size):
    """tokenizer.json gives AutoTokenizer's ids, and every id fits the model's embedding table."""
    from tokenizers import Tokenizer

    auto = transformers.AutoTokenizer.from_pretrained(directory)
    backend = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    size = backend.get_vocab_size(with_added_tokens=True)
    if size > model_vocab_size:
        raise SystemExit(f"{family}: tokenizer has {size} ids, the model's vocab_size is {model_vocab_size}")
    sample = texts[::max(1, len(texts) // 500)] + ["", "Café déjà vu — naïve, isn't it? 🙂"]
    for text in sample:
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
    raise ValueError(family)


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

    if family in ("bert", "distilbert", "electra", "electra-small"):
        tokenizer_class = {"bert": transformers.BertTokenizer, "distilbert": transformers.DistilBertTokenizer}.get(
            family, transformers.ElectraTokenizer)
        wordpiece_tokenizer(directory, tokenizer_class, vocab_path)
    elif family == "roberta":
        bpe_tokenizer(directory, texts)
    else:
        unigram_tokenizer(directory, texts)
    tokenizer_size = check_tokenizer(family, directory, texts, config.vocab_size)

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

    vocab_path = find_vocab(arguments.vocab) if set(families) - {"roberta", "xlm-roberta"} else None
    texts = None
    if set(families) & {"roberta", "xlm-roberta"}:
        corpus, texts = find_corpus(arguments.corpus)
        print(f"corpus {corpus}: {len(texts):,} texts", flush=True)
    if vocab_path:
        print(f"vocab {vocab_path}", flush=True)
    if texts is None:  # the WordPiece families' check still wants some text
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
