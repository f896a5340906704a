//! Every model family beside BERT is proven as BERT is (tests/model.rs), on tiny random models
//! that transformers made (`scripts/make_fixtures.py`, committed under tests/fixtures/ with the
//! token ids, logits, loss and every parameter's gradient transformers computed): the tokenizer
//! gives transformers' ids; logits and loss match on a padded batch; every gradient matches
//! transformers' and finite differences in f64; every trainable tensor gets a finite non-zero
//! gradient; fine-tuning moves the lowest layer; pretraining checkpoints load with the head
//! tensors transformers initialises and the tensors it ignores; saved models keep the family's
//! layout; depths and freezing follow the family's names; and planning reads each family's
//! config as the model stage does.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use bertlab::model::checkpoint::{load_classifier, read_weights, save_classifier};
use bertlab::model::layers::cross_entropy;
use bertlab::model::{Batch, Depth, DropoutRates, EncoderClassifier, Mode, ModelConfig};
use bertlab::plan::model_directory::ModelDirectory;
use bertlab::support::random::SeededRandom;
use bertlab::tokenize::tokenizer;
use candle_core::{DType, Device, Tensor};
use common::reference::{FAMILIES, floats, gradient_descent, max_difference, rows_u32, to_f64};
use serde_json::Value;

fn fixtures() -> PathBuf {
    common::reference::fixtures()
}

fn directory(family: &str) -> PathBuf {
    fixtures().join(format!("tiny-{family}"))
}

fn expected(family: &str) -> Value {
    let path = fixtures().join(format!("tiny-{family}-expected.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The gradients (and `logits`, `loss`) transformers computed in f64 without dropout.
fn reference_tensors(family: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join(format!("tiny-{family}-gradients.safetensors")),
        &Device::Cpu,
    )
    .unwrap()
}

/// The fixture's sentences as transformers padded them.
fn batch(family: &str) -> Batch {
    let expected = expected(family);
    let ids = rows_u32(&expected["input_ids"]);
    let mask = rows_u32(&expected["attention_mask"]);
    let shape = (ids.len(), ids[0].len());
    assert!(
        mask.iter().any(|row| row.contains(&0)),
        "{family}: the batch must have padding"
    );
    Batch {
        input_ids: Tensor::from_vec(ids.concat(), shape, &Device::Cpu).unwrap(),
        token_type_ids: Tensor::zeros(shape, DType::U32, &Device::Cpu).unwrap(),
        attention_mask: Tensor::from_vec(mask.concat(), shape, &Device::Cpu).unwrap(),
    }
}

fn labels(family: &str) -> Tensor {
    let labels: Vec<u32> = expected(family)["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|label| label.as_u64().unwrap() as u32)
        .collect();
    Tensor::new(labels.as_slice(), &Device::Cpu).unwrap()
}

/// The fine-tuned fixture (3 labels, its head from the checkpoint).
fn classifier(family: &str, dtype: DType) -> EncoderClassifier {
    let (model, report) = load_classifier(&directory(family), None, 0, dtype, &Device::Cpu)
        .unwrap_or_else(|error| panic!("{family}: {error:#}"));
    assert_eq!(
        (report.initialized.len(), report.unexpected.len()),
        (0, 0),
        "{family}: {report:?}"
    );
    model
}

fn no_dropout(model: &mut EncoderClassifier) {
    model
        .set_dropout(DropoutRates {
            hidden: 0.0,
            attention: 0.0,
            classifier: 0.0,
        })
        .unwrap();
}

/// The loss of one training step, dropout masks from a fixed seed.
fn training_loss(model: &EncoderClassifier, family: &str, batch: &Batch) -> Tensor {
    let mut random = SeededRandom::for_dropout(7, 0);
    let logits = model.forward(batch, &mut Mode::Train(&mut random)).unwrap();
    cross_entropy(&logits, &labels(family), None).unwrap()
}

#[test]
fn tokenizers_give_the_ids_transformers_gives() {
    for family in FAMILIES {
        let expected = expected(family);
        // A SentencePiece model (DeBERTa's spm.model, no tokenizer.json) is run as transformers
        // 5 runs it, which normalises some texts otherwise than the SentencePiece library (NFC
        // instead of the model's own NFKC map; special-token text as the special token): the
        // fixture records the library's ids and where they differ.
        let sentencepiece = expected.get("sentencepiece_ids").map(rows_u32);
        if sentencepiece.is_none() {
            assert_eq!(
                expected["tokenizer_disagreements"].as_array().map(Vec::len),
                Some(0),
                "{family}: the fixture's tokenizer.json is the pipeline transformers runs"
            );
        }
        let loaded = tokenizer::load(&directory(family)).unwrap();
        assert_eq!(
            loaded.pad_id as u64,
            expected["pad_token_id"].as_u64().unwrap(),
            "{family}: the padding id"
        );
        let texts: Vec<&str> = expected["tokenizer_texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|text| text.as_str().unwrap())
            .collect();
        let ids = tokenizer::encode_untruncated(&loaded, &texts).unwrap();
        let transformers_ids = rows_u32(&expected["tokenizer_ids"]);
        let mut as_library = 0;
        for (index, (text, ids)) in texts.iter().zip(ids).enumerate() {
            assert_eq!(ids, transformers_ids[index], "{family}: {text:?}");
            if let Some(library) = &sentencepiece {
                as_library += usize::from(ids == library[index]);
            }
        }
        if sentencepiece.is_some() {
            eprintln!(
                "{family}: {as_library} of {} texts as the SentencePiece library tokenizes them",
                texts.len()
            );
        }
        // The padded batch's rows are the sentences' ids.
        let sentences: Vec<&str> = expected["sentences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|text| text.as_str().unwrap())
            .collect();
        let masks = rows_u32(&expected["attention_mask"]);
        let encoded = tokenizer::encode_all(&loaded, &sentences, 512).unwrap();
        for ((row, mask), ids) in rows_u32(&expected["input_ids"])
            .iter()
            .zip(&masks)
            .zip(encoded)
        {
            let length = mask.iter().filter(|value| **value == 1).count();
            assert_eq!(ids, row[..length], "{family}");
        }
        eprintln!(
            "{family}: {} texts tokenized as transformers does",
            texts.len()
        );
    }
}

#[test]
fn logits_and_loss_match_transformers_on_a_padded_batch() {
    for family in FAMILIES {
        let expected = expected(family);
        let model = classifier(family, DType::F32);
        assert_eq!(
            model.config().family.model_type,
            expected["model_type"].as_str().unwrap()
        );
        let batch = batch(family);
        let logits = model.forward(&batch, &mut Mode::Eval).unwrap();
        let difference = max_difference(&to_f64(&logits), &floats(&expected["logits"]));
        assert!(
            difference < 1e-5,
            "{family}: logits differ by {difference:e}"
        );
        let loss = cross_entropy(&logits, &labels(family), None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let loss_difference = (loss - expected["loss"].as_f64().unwrap()).abs();
        assert!(
            loss_difference < 1e-5,
            "{family}: loss differs by {loss_difference:e}"
        );
        eprintln!(
            "{family}: logits within {difference:.1e}, loss within {loss_difference:.1e} of transformers"
        );

        // Each sentence alone gives its row of the padded batch: padding changes nothing
        // (RoBERTa's positions skip it, the mask hides it).
        let ids = rows_u32(&expected["input_ids"]);
        let masks = rows_u32(&expected["attention_mask"]);
        let batched = to_f64(&logits);
        for (index, (row, mask)) in ids.iter().zip(&masks).enumerate() {
            let length = mask.iter().filter(|value| **value == 1).count();
            let alone = Batch::from_rows(&[row[..length].to_vec()], 0, &Device::Cpu).unwrap();
            let single = to_f64(&model.forward(&alone, &mut Mode::Eval).unwrap());
            let difference = max_difference(&single, &batched[index * 3..index * 3 + 3]);
            assert!(
                difference < 1e-5,
                "{family}: sentence {index} alone differs by {difference:e}"
            );
        }
    }
}

#[test]
fn every_gradient_matches_transformers() {
    for family in FAMILIES {
        let reference = reference_tensors(family);
        let mut model = classifier(family, DType::F64);
        no_dropout(&mut model);
        let batch = batch(family);
        let mut random = SeededRandom::for_dropout(0, 0);
        let logits = model
            .forward(&batch, &mut Mode::Train(&mut random))
            .unwrap();
        let loss = cross_entropy(&logits, &labels(family), None).unwrap();
        let loss_difference = (loss.to_scalar::<f64>().unwrap()
            - reference["loss"].to_scalar::<f64>().unwrap())
        .abs();
        assert!(
            loss_difference < 1e-10,
            "{family}: f64 loss differs by {loss_difference:e}"
        );
        let gradients = loss.backward().unwrap();
        let mut names: Vec<&str> = reference
            .keys()
            .map(String::as_str)
            .filter(|name| !matches!(*name, "logits" | "loss"))
            .collect();
        names.sort();
        let mut ours: Vec<&str> = model
            .parameters()
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        ours.sort();
        assert_eq!(
            ours, names,
            "{family}: bertlab's parameters are transformers' parameters"
        );
        let mut worst: f64 = 0.0;
        for (name, var) in model.parameters() {
            let ours = to_f64(gradients.get(var.as_tensor()).unwrap());
            let theirs = to_f64(&reference[name]);
            let scale = theirs.iter().fold(0.0f64, |a, b| a.max(b.abs())).max(1e-3);
            let difference = max_difference(&ours, &theirs) / scale;
            assert!(
                difference < 1e-8,
                "{family} {name}: gradient differs by {difference:e} (relative)"
            );
            worst = worst.max(difference);
        }
        eprintln!(
            "{family}: {} gradients within {worst:.1e} (relative to each tensor's largest) of transformers in f64",
            names.len()
        );
    }
}

#[test]
fn every_trainable_tensor_gets_a_finite_nonzero_gradient() {
    for family in FAMILIES {
        let model = classifier(family, DType::F32);
        let batch = batch(family);
        let gradients = training_loss(&model, family, &batch).backward().unwrap();
        let without: Vec<&str> = model
            .parameters()
            .iter()
            .filter(|(_, var)| {
                !gradients.get(var.as_tensor()).is_some_and(|gradient| {
                    let values = to_f64(gradient);
                    values.iter().all(|v| v.is_finite()) && values.iter().any(|v| *v != 0.0)
                })
            })
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(without, Vec::<&str>::new(), "{family}");
    }
}

/// Central finite differences in f64 against autograd (dropout on, from a fixed seed) for
/// sampled entries of every parameter, the largest gradient's entry among them.
#[test]
fn gradients_match_finite_differences() {
    for family in FAMILIES {
        let model = classifier(family, DType::F64);
        let batch = batch(family);
        let loss = |model: &EncoderClassifier| {
            training_loss(model, family, &batch)
                .to_scalar::<f64>()
                .unwrap()
        };
        let gradients = training_loss(&model, family, &batch).backward().unwrap();
        let mut chooser = SeededRandom::new(99, 0);
        let step = 1e-6;
        let mut checked = 0;
        for (name, var) in model.parameters() {
            let gradient = to_f64(gradients.get(var.as_tensor()).unwrap());
            let original = var.as_tensor().clone();
            let values = to_f64(&original);
            let mut entries: Vec<usize> = (0..2)
                .map(|_| chooser.below(values.len() as u64) as usize)
                .collect();
            entries.push(
                (0..values.len())
                    .max_by(|a, b| gradient[*a].abs().total_cmp(&gradient[*b].abs()))
                    .unwrap(),
            );
            for entry in entries {
                let set = |value: f64| {
                    let mut shifted = values.clone();
                    shifted[entry] = value;
                    var.set(&Tensor::from_vec(shifted, original.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                };
                set(values[entry] + step);
                let up = loss(&model);
                set(values[entry] - step);
                let down = loss(&model);
                set(values[entry]);
                let numeric = (up - down) / (2.0 * step);
                let analytic = gradient[entry];
                let scale = numeric.abs().max(analytic.abs());
                assert!(
                    (numeric - analytic).abs() <= 1e-4 * scale + 1e-8,
                    "{family} {name}[{entry}]: autograd {analytic:e}, finite differences {numeric:e}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 3 * model.parameters().len());
        eprintln!("{family}: {checked} entries match finite differences");
    }
}

/// Plain gradient descent lowers the loss and moves the lowest encoder layer.
#[test]
fn fine_tuning_moves_the_lowest_layer() {
    for family in FAMILIES {
        let model = classifier(family, DType::F32);
        let batch = batch(family);
        let (lowest_name, lowest) = model
            .parameters()
            .iter()
            .zip(model.parameter_depths())
            .find(|(_, depth)| **depth == Depth::Layer(0))
            .map(|((name, var), _)| (name.clone(), var.clone()))
            .unwrap();
        let before = to_f64(lowest.as_tensor());
        let (first, last) = gradient_descent(&model, &batch, &labels(family), 20);
        assert!(last < first - 0.1, "{family}: loss {first} -> {last}");
        let moved = max_difference(&to_f64(lowest.as_tensor()), &before);
        assert!(moved > 1e-3, "{family}: {lowest_name} moved by {moved:e}");
    }
}

/// A pretraining checkpoint (the encoder plus `lm_head.*`, `vocab_*` or
/// `discriminator_predictions.*`) loads with exactly the head tensors transformers initialises
/// and reports exactly the tensors transformers ignores; a bare base checkpoint (keys without the
/// family's prefix) loads as the prefixed one.
#[test]
fn pretraining_checkpoints_load_as_transformers_loads_them() {
    for family in FAMILIES {
        let expected = expected(family);
        let config = ModelConfig::load(&directory(family).join("config.json")).unwrap();
        let layout = &config.family.layout;
        let head = [layout.head.dense, layout.head.output];
        let shapes: HashMap<String, Vec<usize>> = expected["pretraining_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                let shape = entry[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|size| size.as_u64().unwrap() as usize)
                    .collect();
                (entry[0].as_str().unwrap().to_string(), shape)
            })
            .collect();
        let names = |key: &str| -> Vec<String> {
            let mut names: Vec<String> = expected["pretraining_load"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|name| name.as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        };
        // The pretraining checkpoint: the classifier's tensors but those transformers reports
        // missing (the head's, except ModernBERT's `head.dense`/`head.norm`, which its masked-LM
        // head has), plus those it reports unexpected.
        let missing = names("missing_keys");
        assert!(
            missing.iter().all(|name| head
                .iter()
                .any(|part| name.starts_with(&format!("{part}.")))),
            "{family}: only head tensors are missing: {missing:?}"
        );
        let mut tensors: HashMap<String, Tensor> = read_weights(&directory(family))
            .unwrap()
            .into_iter()
            .filter(|(name, _)| !missing.contains(name))
            .collect();
        for name in names("unexpected_keys") {
            let shape = &shapes[&name];
            tensors.insert(
                name,
                Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu).unwrap(),
            );
        }
        let (pretrained, report) = EncoderClassifier::from_tensors(
            config.clone(),
            3,
            tensors.clone(),
            5,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let mut initialized = report.initialized.clone();
        initialized.sort();
        assert_eq!(
            initialized,
            names("missing_keys"),
            "{family}: initialised head tensors"
        );
        assert_eq!(
            report.unexpected,
            names("unexpected_keys"),
            "{family}: ignored tensors"
        );
        assert_eq!(
            report.warnings,
            Vec::<String>::new(),
            "{family}: no pooler to miss"
        );

        let prefix = format!("{}.", layout.base);
        // A bare base model: the prefixed tensors without their prefix, the head's as they are.
        let unexpected = names("unexpected_keys");
        let bare: HashMap<String, Tensor> = tensors
            .into_iter()
            .filter_map(|(name, tensor)| match name.strip_prefix(&prefix) {
                Some(rest) => Some((rest.to_string(), tensor)),
                None => (!unexpected.contains(&name)).then_some((name, tensor)),
            })
            .collect();
        let (base, report) =
            EncoderClassifier::from_tensors(config, 3, bare, 5, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(report.unexpected, Vec::<String>::new(), "{family}");
        let batch = batch(family);
        assert_eq!(
            to_f64(&pretrained.forward(&batch, &mut Mode::Eval).unwrap()),
            to_f64(&base.forward(&batch, &mut Mode::Eval).unwrap()),
            "{family}: with and without the `{prefix}` prefix"
        );
    }
}

#[test]
fn a_saved_model_keeps_the_family_layout_and_its_outputs() {
    for family in FAMILIES {
        let model = classifier(family, DType::F32);
        let folder = tempfile::tempdir().unwrap();
        let saved = folder.path().join("model");
        let labels = ["negative", "neutral", "positive"].map(String::from);
        save_classifier(&model, &labels, false, &directory(family), &saved).unwrap();
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap())
                .unwrap();
        let written = &model.config().family;
        assert_eq!(
            config["architectures"],
            serde_json::json!([written.architecture])
        );
        assert_eq!(config["model_type"], expected(family)["model_type"]);
        assert_eq!(config["id2label"]["2"], "positive");
        assert_eq!(
            config[written.layout.head.dropout_key].as_f64(),
            Some(model.dropout.classifier),
            "{family}"
        );
        let tokenizer_file = if directory(family).join("spm.model").is_file() {
            "spm.model"
        } else {
            "tokenizer.json"
        };
        assert!(saved.join(tokenizer_file).is_file(), "{family}");
        let mut keys: Vec<String> = read_weights(&saved).unwrap().into_keys().collect();
        keys.sort();
        let mut names: Vec<String> = model
            .parameters()
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        assert_eq!(keys, names, "{family}");
        let (reloaded, report) =
            load_classifier(&saved, None, 9, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(report, Default::default(), "{family}");
        let batch = batch(family);
        assert_eq!(
            to_f64(&model.forward(&batch, &mut Mode::Eval).unwrap()),
            to_f64(&reloaded.forward(&batch, &mut Mode::Eval).unwrap()),
            "{family}"
        );
    }
}

/// Every parameter has the depth its name says under the family's layout, and freezing the
/// embeddings and layer 0 leaves exactly those without a gradient.
#[test]
fn depths_and_freezing_follow_the_family_names() {
    for family in FAMILIES {
        let mut model = classifier(family, DType::F32);
        let layout = &model.config().family.layout;
        let embeddings = format!("{}.embeddings", layout.base);
        let layers = format!("{}.{}.", layout.base, layout.layers);
        // DeBERTa's relative embeddings and their norm feed every layer: they sit with the
        // embeddings.
        let relative: Vec<String> = layout
            .relative
            .iter()
            .flat_map(|names| [names.embeddings, names.norm])
            .map(|name| format!("{}.{name}.", layout.base))
            .collect();
        for ((name, _), depth) in model.parameters().iter().zip(model.parameter_depths()) {
            let expected = if name.starts_with(&embeddings)
                || relative.iter().any(|prefix| name.starts_with(prefix))
            {
                Depth::Embeddings
            } else if let Some(rest) = name.strip_prefix(&layers) {
                Depth::Layer(rest.split('.').next().unwrap().parse().unwrap())
            } else {
                Depth::Head
            };
            assert_eq!(*depth, expected, "{family} {name}");
        }
        model.freeze(Some(1)).unwrap();
        let frozen: Vec<String> = model
            .parameters()
            .iter()
            .zip(model.parameter_depths())
            .filter(|(_, depth)| matches!(depth, Depth::Embeddings | Depth::Layer(0)))
            .map(|((name, _), _)| name.clone())
            .collect();
        let batch = batch(family);
        let gradients = training_loss(&model, family, &batch).backward().unwrap();
        for (name, var) in model.parameters() {
            assert_eq!(
                gradients.get(var.as_tensor()).is_some(),
                !frozen.contains(name),
                "{family} {name}"
            );
        }
    }
}

/// Planning and the model stage read each family's config.json alike (dropout defaults, layer
/// count, the longest sequence), and both know the same families.
#[test]
fn planning_reads_every_family_config_as_the_model_does() {
    let planned: Vec<&str> = bertlab::plan::model_directory::FAMILIES
        .iter()
        .map(|family| family.model_type)
        .collect();
    let modelled: Vec<&str> = bertlab::model::family::FAMILIES
        .iter()
        .map(|family| family.model_type)
        .collect();
    assert_eq!(planned, modelled);
    for family in FAMILIES.iter().copied().chain(["bert"]) {
        let folder = if family == "bert" {
            fixtures().join("tiny-bert")
        } else {
            directory(family)
        };
        let summary = ModelDirectory::inspect(&folder).unwrap().config;
        let config = ModelConfig::load(&folder.join("config.json")).unwrap();
        assert_eq!(summary.family.model_type, config.family.model_type);
        assert_eq!(
            summary.num_hidden_layers,
            Some(config.num_hidden_layers as u64),
            "{family}"
        );
        assert_eq!(
            summary.max_length,
            config.max_sequence_length() as u64,
            "{family}"
        );
        assert_eq!(
            (
                summary.hidden_dropout,
                summary.attention_dropout,
                summary.classifier_dropout
            ),
            (
                config.dropout.hidden,
                config.dropout.attention,
                config.dropout.classifier
            ),
            "{family}"
        );
    }
}

/// RoBERTa's positions start after the padding id: 66 positions hold 64 tokens, not 66.
#[test]
fn roberta_sequences_stop_two_short_of_the_positions() {
    let model = classifier("roberta", DType::F32);
    assert_eq!(model.config().max_position_embeddings, 66);
    assert_eq!(model.config().max_sequence_length(), 64);
    let row = |length: usize| vec![vec![5u32; length]];
    let fits = Batch::from_rows(&row(64), 1, &Device::Cpu).unwrap();
    assert!(model.forward(&fits, &mut Mode::Eval).is_ok());
    let long = Batch::from_rows(&row(65), 1, &Device::Cpu).unwrap();
    let error = model.forward(&long, &mut Mode::Eval).unwrap_err();
    assert_eq!(
        error.to_string(),
        "sequence of 65 tokens is longer than the model's 64 positions"
    );
}

/// `bertlab device-check` on every family: each check (f64, f32 and, where the CPU has
/// AVX512-BF16, bf16 products against the fp32 gradients; AdamW steps; dropout) passes, with
/// each family's own key bias left out of the gradient comparisons.
#[test]
fn device_check_passes_on_every_family() {
    for family in FAMILIES {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_bertlab"))
            .args(["device-check"])
            .arg(directory(family))
            .args(["--device", "cpu"])
            .env("NO_COLOR", "1")
            .env_remove(bertlab::train::device::FAKE_GPUS_VARIABLE)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{family}: {stdout}");
        let expected = if bertlab::model::bf16::available() {
            15
        } else {
            12
        };
        assert!(
            stdout.contains(&format!("all {expected} checks passed")),
            "{family}: {stdout}"
        );
    }
}

#[test]
fn the_attention_key_bias_is_named_by_the_family_layout() {
    for family in FAMILIES {
        let model = classifier(family, DType::F32);
        let key_biases: Vec<&str> = model
            .parameters()
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| model.is_attention_key_bias(name))
            .collect();
        // DeBERTa's position-to-content scores give the key bias a true gradient; its own
        // position key projection's bias (deberta-v2) has none.
        let layout = &model.config().family.layout;
        let key = match family {
            // ModernBERT rotates keys by their position: the key bias has a true gradient.
            "deberta-v3" | "modernbert" | "modernbert-mean" => None,
            "deberta-v2" => layout.relative.map(|names| names.position_key),
            _ => Some(layout.layer.key),
        };
        assert_eq!(
            key_biases.len(),
            if key.is_some() { 2 } else { 0 },
            "{family}: one per layer: {key_biases:?}"
        );
        assert!(
            key_biases
                .iter()
                .all(|name| key.is_some_and(|key| name.ends_with(&format!("{key}.bias")))),
            "{family}: {key_biases:?}"
        );
    }
}

/// DeBERTa's relative positions: log buckets as transformers' `make_log_bucket_position` gives
/// them (the fixture's setting and deberta-v3-base's 256 buckets over 512 positions), the
/// batch's relative position matrix as `build_relative_position` gives it, and the span of
/// relative embeddings the attention reads.
#[test]
fn deberta_relative_positions_match_transformers() {
    use bertlab::model::family::deberta;
    for family in ["deberta-v2", "deberta-v3"] {
        let expected = expected(family);
        for table in expected["buckets"].as_array().unwrap() {
            let size = table["bucket_size"].as_u64().unwrap() as usize;
            let max_position = table["max_position"].as_u64().unwrap() as usize;
            let distances = table["distances"].as_array().unwrap();
            let buckets = table["buckets"].as_array().unwrap();
            for (distance, bucket) in distances.iter().zip(buckets) {
                let distance = distance.as_i64().unwrap();
                assert_eq!(
                    deberta::log_bucket_position(distance, size, max_position),
                    bucket.as_i64().unwrap(),
                    "{family}: distance {distance}, {size} buckets over {max_position}"
                );
            }
        }
        let model = classifier(family, DType::F32);
        let relative = model.config().relative_attention.unwrap();
        let wanted = &expected["relative_attention"];
        assert_eq!(
            relative.span() as u64,
            wanted["att_span"].as_u64().unwrap(),
            "{family}"
        );
        assert_eq!(
            relative.max_relative_positions as u64,
            wanted["max_relative_positions"].as_u64().unwrap(),
            "{family}"
        );
        for (i, row) in expected["relative_position_ids"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            for (j, position) in row.as_array().unwrap().iter().enumerate() {
                assert_eq!(
                    deberta::relative_position(i, j, &relative),
                    position.as_i64().unwrap(),
                    "{family}: query {i}, key {j}"
                );
            }
        }
    }
}

/// ModernBERT's parts against transformers: the rotary tables of global and local layers (f32 in
/// transformers, f64 here), which keys a local layer's query sees, and the final norm's output
/// at every position of the padded batch (padded ones too).
#[test]
fn modernbert_rotary_window_and_hidden_states_match_transformers() {
    use bertlab::model::modernbert::{attends_locally, rotary_tables};
    for family in ["modernbert", "modernbert-mean"] {
        let expected = expected(family);
        let model = classifier(family, DType::F32);
        let config = model.config();
        let settings = config.modern_bert.clone().unwrap();
        let length = rows_u32(&expected["input_ids"])[0].len();
        for (theta, kind) in [
            (settings.global_rope_theta, "global"),
            (settings.local_rope_theta, "local"),
        ] {
            let (cos, sin) =
                rotary_tables(length, config.head_size(), theta, DType::F64, &Device::Cpu).unwrap();
            for (table, name) in [(cos, "cos"), (sin, "sin")] {
                let difference = max_difference(
                    &to_f64(&table),
                    &floats(&expected[format!("rotary_{kind}_{name}").as_str()]),
                );
                assert!(difference < 1e-6, "{family} {kind} {name}: {difference:e}");
            }
        }
        let window = expected["sliding_window"].as_u64().unwrap() as usize;
        assert_eq!(settings.window, window, "{family}");
        for (query, row) in expected["sliding_window_mask"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            for (key, allowed) in row.as_array().unwrap().iter().enumerate() {
                assert_eq!(
                    attends_locally(query, key, window),
                    allowed.as_u64() == Some(1),
                    "{family}: query {query}, key {key}"
                );
            }
        }
        let layer_types: Vec<bool> = expected["layer_types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kind| kind == "full_attention")
            .collect();
        assert_eq!(settings.global_layers, layer_types, "{family}");
        let hidden = model.encode(&batch(family), &mut Mode::Eval).unwrap();
        let difference = max_difference(&to_f64(&hidden), &floats(&expected["hidden_states_last"]));
        assert!(
            difference < 1e-5,
            "{family}: hidden states differ by {difference:e}"
        );
        eprintln!(
            "{family}: every position's last hidden state within {difference:.1e} of transformers"
        );
    }
}

/// Sentence pairs as transformers encodes them (`scripts/make_pair_fixtures.py`, committed as
/// `tests/fixtures/pairs-expected.json`): for BERT and every family, `tokenizer(first, second,
/// truncation=True, max_length=M)` ids at 16 and 8 tokens (`longest_first`) and untruncated,
/// the token type ids where the tokenizer returns them, and the logits of the padded pair batch
/// with the token types the tokenizer gives (models with fewer than two token types ignore
/// them, as transformers never passes them).
#[test]
fn pairs_are_encoded_and_classified_as_transformers_does() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("pairs-expected.json")).unwrap(),
    )
    .unwrap();
    let pairs: Vec<(String, String)> = expected["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_string(),
                pair[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let references: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(first, second)| (first.as_str(), second.as_str()))
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let families = expected["families"].as_object().unwrap();
    // BERT and every family (modernbert-mean differs from modernbert in its head only).
    for family in FAMILIES
        .iter()
        .filter(|family| **family != "modernbert-mean")
    {
        assert!(
            families.contains_key(*family),
            "{family} has no pair fixture"
        );
    }
    assert!(families.contains_key("bert"));
    for (family, record) in families {
        let loaded = tokenizer::load(&root.join(record["tokenizer_directory"].as_str().unwrap()))
            .unwrap_or_else(|error| panic!("{family}: {error:#}"));
        let with_types = record["returns_token_type_ids"].as_bool().unwrap();
        for (ids_key, types_key, max_length) in [
            ("untruncated_ids", "", None),
            ("input_ids", "token_type_ids", Some(16)),
            ("input_ids_short", "token_type_ids_short", Some(8)),
        ] {
            let encoded = tokenizer::encode_pairs(&loaded, &references, max_length).unwrap();
            let (ids, types): (Vec<Vec<u32>>, Vec<Vec<u32>>) = encoded.into_iter().unzip();
            assert_eq!(ids, rows_u32(&record[ids_key]), "{family}: {ids_key}");
            if with_types && !types_key.is_empty() {
                assert_eq!(types, rows_u32(&record[types_key]), "{family}: {types_key}");
            }
        }
        let (ids, types): (Vec<Vec<u32>>, Vec<Vec<u32>>) =
            tokenizer::encode_pairs(&loaded, &references, Some(16))
                .unwrap()
                .into_iter()
                .unzip();
        let model = classifier_at(&root.join(record["directory"].as_str().unwrap()));
        let batch =
            Batch::with_token_types(&ids, Some(&types), loaded.pad_id, &Device::Cpu).unwrap();
        let logits = to_f64(&model.forward(&batch, &mut Mode::Eval).unwrap());
        let reference = floats(&record["logits"]);
        let difference = max_difference(&logits, &reference);
        assert!(difference < 1e-5, "{family}: logits differ by {difference}");
    }
}

/// A fine-tuned classifier directory as it is (f32).
fn classifier_at(directory: &std::path::Path) -> EncoderClassifier {
    load_classifier(directory, None, 0, DType::F32, &Device::Cpu)
        .unwrap_or_else(|error| panic!("{}: {error:#}", directory.display()))
        .0
}
