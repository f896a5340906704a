#!/usr/bin/env python3
"""Makes the model fixtures of bertlab's tests with PyTorch + transformers (CI does not need them;
the outputs are committed under tests/fixtures/).

    python3 scripts/make_fixtures.py            # tiny random checkpoints + the logits transformers gives
    python3 scripts/make_fixtures.py --minilm   # also [CLS] states of the example model (needs assets/)

Outputs:
  tests/fixtures/tiny-bert/             BertModel (no `bert.` prefix), model.safetensors, vocab.txt
  tests/fixtures/tiny-bert-classifier/  BertForSequenceClassification, 3 labels, pytorch_model.bin
  tests/fixtures/tiny-bert-expected.json  token ids, masks, [CLS] hidden states and logits
  tests/fixtures/minilm-cls.json        token ids and [CLS] hidden states of all-MiniLM-L6-v2
"""
import argparse
import json
import os
import shutil

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
            if "LayerNorm.weight" in name:
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", action="store_true", help="also record the example model's [CLS] states")
    arguments = parser.parse_args()
    torch.manual_seed(0)
    tiny_fixtures()
    if arguments.minilm:
        minilm_fixture()
