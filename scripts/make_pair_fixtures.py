#!/usr/bin/env python3
"""Makes tests/fixtures/pairs-expected.json: what transformers gives for sentence pairs
(`tokenizer(first, second, truncation=True, max_length=M)`) with every tiny fixture model of
tests/fixtures/ (made by scripts/make_fixtures.py, read here, never written).

    /work/torch-venv/bin/python scripts/make_pair_fixtures.py

CI does not run it: the output is committed. It needs torch and transformers, and writes the same
bytes on every run with the same versions (no timestamps).

Per family (AutoTokenizer + AutoModelForSequenceClassification on the fixture directory, eval,
float32, eager attention), for each pair of PAIRS:
  input_ids, token_type_ids        tokenizer(first, second, truncation=True, max_length=16), no
                                   padding (token_type_ids null where the tokenizer returns none)
  input_ids_short, token_type_ids_short   the same with max_length=8
  untruncated_ids                  tokenizer(first, second), no truncation
  logits                           the model on the padded batch tokenizer(firsts, seconds,
                                   truncation=True, max_length=16, padding=True), fed exactly what
                                   the tokenizer returns (token_type_ids included when returned)
and tokenizer_class, returns_token_type_ids, model_type, type_vocab_size, directory and
tokenizer_directory.
The script also checks that the truncation cuts the pair as the tokenizers library's
`longest_first` does (the shorter text keeps min(its length, max(budget // 2, budget - other)),
an odd token goes to the longer text, to the second on a tie) and fails otherwise.
"""
import json
import os

import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
OUTPUT = os.path.join(FIXTURES, "pairs-expected.json")

MAX_LENGTH = 16
MAX_LENGTH_SHORT = 8

# family: (model directory, tokenizer directory), relative to the repository root.
FAMILIES = {
    "bert": ("tests/fixtures/tiny-bert-classifier", "tests/fixtures/tiny-bert-classifier"),
    "distilbert": ("tests/fixtures/tiny-distilbert",) * 2,
    "roberta": ("tests/fixtures/tiny-roberta",) * 2,
    "xlm-roberta": ("tests/fixtures/tiny-xlm-roberta",) * 2,
    "electra": ("tests/fixtures/tiny-electra",) * 2,
    "deberta-v2": ("tests/fixtures/tiny-deberta-v2",) * 2,
    "deberta-v3": ("tests/fixtures/tiny-deberta-v3",) * 2,
    "modernbert": ("tests/fixtures/tiny-modernbert",) * 2,
}

# Words of make_fixtures.py's VOCABULARY (WordPiece) and CORPUS (BPE, Unigram, SentencePiece).
PAIRS = [
    ["I love this movie!", "It is a film."],  # short / short
    ["This book is quite boring and the food was terrible, I really hate it.", "It is a film."],  # long first
    ["I love this movie!", "The service was really awful, not good, and the food was terrible."],  # long second
    ["the movie was good and the food was great and the service was awful",
     "the book was bad and the film was boring and the food was terrible"],  # both long, about equal
    ["The service was really awful, not good.",
     "This book is quite boring and the food was terrible, I really hate it."],  # both long, unequal
    ["Café déjà vu — naïve, isn't it?", "The café on 5th Street opens at 7:30 a.m."],  # non-ASCII
    ["This book is quite boring and the food was terrible.", "unbelievable"],  # single-word second
    ["Not bad at all, actually; better than I expected.", "Honestly? It's fine. Not great, not terrible."],
    ["the film", "the book"],  # fits max_length 16 untruncated in every family, RoBERTa's too (15 ids)
]


def longest_first(n1, n2, budget):
    """The lengths the tokenizers library (Rust, TruncationStrategy::LongestFirst) keeps."""
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    short, long = (n2, n1) if swap else (n1, n2)
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short = budget // 2
        long = short + budget % 2
    return (long, short) if swap else (short, long)


def check_truncation(family, tokenizer, first, second, ids, max_length):
    """Fails unless ids are the untruncated pair with each text cut to its longest_first length."""
    a = tokenizer(first, add_special_tokens=False)["input_ids"]
    b = tokenizer(second, add_special_tokens=False)["input_ids"]
    n1, n2 = longest_first(len(a), len(b), max_length - tokenizer.num_special_tokens_to_add(pair=True))
    full = tokenizer(first, second)["input_ids"]
    starts_a = [k for k in range(len(full)) if full[k:k + len(a)] == a]
    starts_b = [k for k in range(starts_a[0] + len(a), len(full)) if full[k:k + len(b)] == b] if starts_a else []
    if not starts_b:
        raise SystemExit(f"{family}: the texts' own ids {a}, {b} are not in the pair's {full}")
    i, j = starts_a[0], starts_b[0]
    rebuilt = full[:i] + a[:n1] + full[i + len(a):j] + b[:n2] + full[j + len(b):]
    if ids != rebuilt:
        raise SystemExit(f"{family}: max_length {max_length} on {[first, second]} gives {ids}, not the "
                         f"longest_first cut {rebuilt} ({len(a)}, {len(b)} -> {n1}, {n2})")


def family_expected(family, directory, tokenizer_directory):
    tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.join(ROOT, tokenizer_directory))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        os.path.join(ROOT, directory), attn_implementation="eager", dtype=torch.float32).eval()
    if model.config._attn_implementation != "eager":
        raise SystemExit(f"{family}: the model runs {model.config._attn_implementation!r} attention")
    firsts, seconds = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    returns_types = "token_type_ids" in tokenizer(firsts[0], seconds[0])
    out = {"directory": directory, "tokenizer_directory": tokenizer_directory,
           "tokenizer_class": type(tokenizer).__name__, "returns_token_type_ids": returns_types,
           "model_type": model.config.model_type,
           "type_vocab_size": getattr(model.config, "type_vocab_size", None)}
    for suffix, max_length in (("", MAX_LENGTH), ("_short", MAX_LENGTH_SHORT)):
        rows = [tokenizer(f, s, truncation=True, max_length=max_length) for f, s in PAIRS]
        for (f, s), row in zip(PAIRS, rows):
            if len(row["input_ids"]) > max_length:
                raise SystemExit(f"{family}: {[f, s]} has {len(row['input_ids'])} ids > {max_length}")
            check_truncation(family, tokenizer, f, s, row["input_ids"], max_length)
        out["input_ids" + suffix] = [row["input_ids"] for row in rows]
        out["token_type_ids" + suffix] = [row["token_type_ids"] for row in rows] if returns_types else None
    out["untruncated_ids"] = [tokenizer(f, s)["input_ids"] for f, s in PAIRS]
    batch = tokenizer(firsts, seconds, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits.float()
    out["logits"] = logits.tolist()
    print(f"{family:12} {out['tokenizer_class']:22} type ids: {returns_types!s:5} "
          f"type_vocab_size {out['type_vocab_size']}  pair 0: {out['input_ids'][0]}"
          + (f" types {out['token_type_ids'][0]}" if returns_types else ""))
    print(f"{'':12} tokens: {tokenizer.convert_ids_to_tokens(out['input_ids'][0])}")
    return out


def main():
    torch.manual_seed(0)
    expected = {"transformers": transformers.__version__, "torch": torch.__version__,
                "max_length": MAX_LENGTH, "max_length_short": MAX_LENGTH_SHORT, "pairs": PAIRS,
                "families": {}}
    for family, (directory, tokenizer_directory) in FAMILIES.items():
        expected["families"][family] = family_expected(family, directory, tokenizer_directory)
    with open(OUTPUT, "w") as handle:
        json.dump(expected, handle, indent=1)
        handle.write("\n")
    print("wrote", os.path.relpath(OUTPUT, ROOT))


if __name__ == "__main__":
    main()
