//! The model is proven, not assumed: every trainable tensor receives a gradient, gradients match
//! finite differences, outputs match transformers on fixtures it made (scripts/make_fixtures.py),
//! and checkpoints go in and out without loss; `bertlab device-check` (the GPU's proof against
//! the CPU) runs every check.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bertlab::model::checkpoint::{load_classifier, read_weights, save_classifier};
use bertlab::model::encoder::Rows;
use bertlab::model::layers::{Kernels, Precision, cross_entropy};
use bertlab::model::{Batch, EncoderClassifier, Mode, ModelConfig};
use bertlab::support::random::SeededRandom;
use bertlab::tokenize::tokenizer;
use candle_core::{DType, Device, Tensor};
use common::reference::{fixtures, floats, gradient_descent, max_difference, rows_u32, to_f64};
use serde_json::Value;

fn expected() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tiny-bert-expected.json")).unwrap(),
    )
    .unwrap()
}

/// The fixture's sentences as a batch (ids from transformers, padding from its mask).
fn fixture_batch(device: &Device) -> Batch {
    let expected = expected();
    let ids = rows_u32(&expected["input_ids"]);
    let mask = rows_u32(&expected["attention_mask"]);
    let shape = (ids.len(), ids[0].len());
    Batch {
        input_ids: Tensor::from_vec(ids.concat(), shape, device).unwrap(),
        token_type_ids: Tensor::zeros(shape, DType::U32, device).unwrap(),
        attention_mask: Tensor::from_vec(mask.concat(), shape, device).unwrap(),
    }
}

fn tiny(dtype: DType) -> EncoderClassifier {
    load_classifier(
        &fixtures().join("tiny-bert"),
        Some(3),
        42,
        dtype,
        &Device::Cpu,
    )
    .unwrap()
    .0
}

fn labels(device: &Device) -> Tensor {
    Tensor::new(&[0u32, 2, 1, 2, 0], device).unwrap()
}

/// The training loss of one step, with dropout masks drawn from a fixed seed.
fn training_loss(model: &EncoderClassifier, batch: &Batch) -> Tensor {
    let mut random = SeededRandom::for_dropout(7, 0);
    let logits = model.forward(batch, &mut Mode::Train(&mut random)).unwrap();
    cross_entropy(&logits, &labels(model.device()), None).unwrap()
}

/// The names of trainable tensors whose gradient after one backward pass is missing, not
/// finite, or zero everywhere.
fn tensors_without_gradient(model: &EncoderClassifier) -> Vec<String> {
    let batch = fixture_batch(model.device());
    let gradients = training_loss(model, &batch).backward().unwrap();
    let mut without = Vec::new();
    for (name, var) in model.parameters() {
        let ok = gradients.get(var.as_tensor()).is_some_and(|gradient| {
            let values = gradient
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            values.iter().all(|v| v.is_finite()) && values.iter().any(|v| *v != 0.0)
        });
        if !ok {
            without.push(name.clone());
        }
    }
    without
}

/// After one backward pass every trainable tensor has a finite, non-zero gradient.
///
/// The same check fails on candle-transformers' stock `BertModel`: its `LayerNorm` is
/// `candle_nn::LayerNorm`, whose `forward` calls the fused `candle_nn::ops::layer_norm` whenever the
/// input is contiguous (always, in BERT), and that op is built with `apply_op3_no_bwd`. Backprop
/// then stops at the last LayerNorm: of all the encoder, only nothing before the pooler receives a
/// gradient, while the loss still falls because the head trains. The second half of this test
/// swaps our LayerNorm for that fused op and shows the check catching exactly this.
#[test]
fn every_trainable_tensor_gets_a_nonzero_gradient() {
    let model = tiny(DType::F32);
    assert_eq!(model.parameters().len(), 5 + 2 * 16 + 2 + 2);
    assert_eq!(tensors_without_gradient(&model), Vec::<String>::new());

    let mut fused = tiny(DType::F32);
    fused.kernels = Kernels::CandleLayerNorm;
    let without = tensors_without_gradient(&fused);
    let expected: Vec<String> = model
        .parameters()
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|name| !name.starts_with("bert.pooler") && !name.starts_with("classifier"))
        .collect();
    assert_eq!(
        without, expected,
        "with candle's fused LayerNorm only the pooler and the head learn"
    );
}

/// Central finite differences in f64 against autograd for sampled entries of every parameter.
#[test]
fn gradients_match_finite_differences() {
    let model = tiny(DType::F64);
    let batch = fixture_batch(model.device());
    let loss = |model: &EncoderClassifier| training_loss(model, &batch).to_scalar::<f64>().unwrap();
    let gradients = training_loss(&model, &batch).backward().unwrap();
    let mut chooser = SeededRandom::new(99, 0);
    let step = 1e-6;
    let mut worst: f64 = 0.0;
    let mut checked = 0;
    for (name, var) in model.parameters() {
        let gradient = gradients
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let original = var.as_tensor().clone();
        let values = original.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        // Entries with the largest gradients, plus random ones: every tensor is checked where it matters.
        let mut entries: Vec<usize> = (0..3)
            .map(|_| chooser.below(values.len() as u64) as usize)
            .collect();
        let largest = (0..values.len())
            .max_by(|a, b| gradient[*a].abs().total_cmp(&gradient[*b].abs()))
            .unwrap();
        entries.push(largest);
        for entry in entries {
            let mut shifted = values.clone();
            shifted[entry] = values[entry] + step;
            var.set(&Tensor::from_vec(shifted.clone(), original.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let up = loss(&model);
            shifted[entry] = values[entry] - step;
            var.set(&Tensor::from_vec(shifted, original.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let down = loss(&model);
            var.set(&Tensor::from_vec(values.clone(), original.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let numeric = (up - down) / (2.0 * step);
            let analytic = gradient[entry];
            let scale = numeric.abs().max(analytic.abs());
            // Relative error below 1e-4; an absolute floor of 1e-8 for entries whose gradient is
            // itself at the level of finite-difference noise.
            let error = (numeric - analytic).abs();
            assert!(
                error <= 1e-4 * scale + 1e-8,
                "{name}[{entry}]: autograd {analytic:e}, finite differences {numeric:e}"
            );
            if scale > 1e-6 {
                worst = worst.max(error / scale);
            }
            checked += 1;
        }
    }
    assert!(checked >= 4 * model.parameters().len());
    eprintln!("checked {checked} entries, worst relative error {worst:e}");
}

#[test]
fn tokenizer_from_vocabulary_matches_transformers() {
    let expected = expected();
    let loaded = tokenizer::load(&fixtures().join("tiny-bert")).unwrap();
    let ids = rows_u32(&expected["input_ids"]);
    let masks = rows_u32(&expected["attention_mask"]);
    for ((sentence, row), mask) in expected["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&ids)
        .zip(&masks)
    {
        let length = mask.iter().filter(|m| **m == 1).count();
        let encoded = tokenizer::encode(&loaded, sentence.as_str().unwrap(), 64).unwrap();
        assert_eq!(encoded, row[..length], "{sentence}");
    }
}

#[test]
fn hidden_states_and_logits_match_transformers() {
    let expected = expected();
    let device = Device::Cpu;
    let batch = fixture_batch(&device);
    // A BertModel checkpoint: safetensors, keys without the `bert.` prefix.
    let model = tiny(DType::F32);
    let hidden = model.encode(&batch, &mut Mode::Eval).unwrap();
    let difference = max_difference(&to_f64(&hidden), &floats(&expected["last_hidden"]));
    assert!(
        difference < 1e-5,
        "last hidden states differ by {difference:e}"
    );
    eprintln!("tiny BertModel: last hidden states within {difference:e} of transformers");

    // A BertForSequenceClassification checkpoint: pytorch_model.bin, `bert.` prefix, 3 labels.
    let (classifier, report) = load_classifier(
        &fixtures().join("tiny-bert-classifier"),
        None,
        0,
        DType::F32,
        &device,
    )
    .unwrap();
    assert!(
        report.initialized.is_empty() && report.unexpected.is_empty(),
        "{report:?}"
    );
    let logits = classifier.forward(&batch, &mut Mode::Eval).unwrap();
    let difference = max_difference(&to_f64(&logits), &floats(&expected["classifier_logits"]));
    assert!(difference < 1e-5, "logits differ by {difference:e}");
    eprintln!("tiny BertForSequenceClassification: logits within {difference:e} of transformers");
}

#[test]
fn a_checkpoint_with_and_without_the_bert_prefix_load_alike() {
    let directory = tempfile::tempdir().unwrap();
    for file in ["config.json", "vocab.txt"] {
        std::fs::copy(
            fixtures().join("tiny-bert").join(file),
            directory.path().join(file),
        )
        .unwrap();
    }
    let prefixed: HashMap<String, Tensor> = read_weights(&fixtures().join("tiny-bert"))
        .unwrap()
        .into_iter()
        .map(|(name, tensor)| (format!("bert.{name}"), tensor))
        .collect();
    candle_core::safetensors::save(&prefixed, directory.path().join("model.safetensors")).unwrap();
    let batch = fixture_batch(&Device::Cpu);
    let plain = tiny(DType::F32);
    let (with_prefix, report) =
        load_classifier(directory.path(), Some(3), 42, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(report.initialized, ["classifier.weight", "classifier.bias"]);
    let a = to_f64(&plain.forward(&batch, &mut Mode::Eval).unwrap());
    let b = to_f64(&with_prefix.forward(&batch, &mut Mode::Eval).unwrap());
    assert_eq!(a, b);
}

#[test]
fn save_then_load_gives_identical_logits_and_a_transformers_layout() {
    let model = tiny(DType::F32);
    let directory = tempfile::tempdir().unwrap();
    let saved = directory.path().join("model");
    let labels = vec!["negative".to_string(), "neutral".into(), "positive".into()];
    save_classifier(
        &model,
        &labels,
        false,
        &fixtures().join("tiny-bert"),
        &saved,
    )
    .unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["architectures"],
        serde_json::json!(["BertForSequenceClassification"])
    );
    assert_eq!(config["id2label"]["2"], "positive");
    assert_eq!(config["label2id"]["neutral"], 1);
    assert!(saved.join("vocab.txt").is_file() && saved.join("tokenizer_config.json").is_file());
    let keys: Vec<String> = read_weights(&saved).unwrap().into_keys().collect();
    assert!(keys.contains(&"bert.encoder.layer.0.attention.self.query.weight".to_string()));
    assert!(keys.contains(&"classifier.weight".to_string()));
    assert_eq!(keys.len(), model.parameters().len());

    let (reloaded, report) = load_classifier(&saved, None, 999, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        report,
        Default::default(),
        "nothing missing, nothing unexpected"
    );
    let batch = fixture_batch(&Device::Cpu);
    assert_eq!(
        to_f64(&model.forward(&batch, &mut Mode::Eval).unwrap()),
        to_f64(&reloaded.forward(&batch, &mut Mode::Eval).unwrap())
    );
    // For scripts/check_saved_model.py: keep a saved model and bertlab's logits to compare with
    // transformers.
    if let Some(keep) = std::env::var_os("BERTLAB_KEEP_SAVED_MODEL") {
        let keep = PathBuf::from(keep);
        save_classifier(&model, &labels, false, &fixtures().join("tiny-bert"), &keep).unwrap();
        let expected = expected();
        let logits = model
            .forward(&batch, &mut Mode::Eval)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let record = serde_json::json!({"sentences": expected["sentences"], "logits": logits});
        std::fs::write(keep.join("bertlab-logits.json"), record.to_string()).unwrap();
    }
}

#[test]
fn missing_and_unexpected_tensors_are_reported() {
    let config = ModelConfig::load(&fixtures().join("tiny-bert/config.json")).unwrap();
    let mut tensors = read_weights(&fixtures().join("tiny-bert")).unwrap();
    tensors.remove("pooler.dense.weight");
    tensors.remove("pooler.dense.bias");
    tensors.insert(
        "cls.predictions.bias".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let (_, report) = EncoderClassifier::from_tensors(
        config.clone(),
        2,
        tensors.clone(),
        0,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        report.initialized,
        [
            "bert.pooler.dense.weight",
            "bert.pooler.dense.bias",
            "classifier.weight",
            "classifier.bias"
        ]
    );
    assert_eq!(report.unexpected, ["cls.predictions.bias"]);
    assert!(
        report.warnings[0].contains("no pooler"),
        "{:?}",
        report.warnings
    );

    tensors.remove("encoder.layer.1.output.dense.weight");
    let error = EncoderClassifier::from_tensors(config, 2, tensors, 0, DType::F32, &Device::Cpu)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the checkpoint lacks 1 encoder tensor: bert.encoder.layer.1.output.dense.weight"
    );
}

/// Evaluation records no graph (its intermediates are freed at once), so nothing in it can be
/// differentiated; it computes what the recording forward pass computes.
#[test]
fn evaluation_records_no_graph() {
    let model = tiny(DType::F32);
    let batch = fixture_batch(model.device());
    let logits = model.forward(&batch, &mut Mode::Eval).unwrap();
    let gradients = logits.sum_all().unwrap().backward().unwrap();
    for (name, var) in model.parameters() {
        assert!(
            gradients.get(var.as_tensor()).is_none(),
            "{name} has a gradient"
        );
    }
    // Training mode with every dropout rate at zero records the graph and gives the same logits.
    let mut silent = tiny(DType::F32);
    silent
        .set_dropout(bertlab::model::DropoutRates {
            hidden: 0.0,
            attention: 0.0,
            classifier: 0.0,
        })
        .unwrap();
    let mut random = SeededRandom::for_dropout(0, 0);
    let recorded = silent
        .forward(&batch, &mut Mode::Train(&mut random))
        .unwrap();
    assert_eq!(to_f64(&logits), to_f64(&recorded));
    let gradients = recorded.sum_all().unwrap().backward().unwrap();
    assert!(
        silent
            .parameters()
            .iter()
            .all(|(_, var)| gradients.get(var.as_tensor()).is_some())
    );
}

#[test]
fn evaluation_is_deterministic_and_training_depends_only_on_the_seed() {
    let model = tiny(DType::F32);
    let batch = fixture_batch(model.device());
    let eval = |model: &EncoderClassifier| to_f64(&model.forward(&batch, &mut Mode::Eval).unwrap());
    assert_eq!(eval(&model), eval(&model));
    let train = |seed: u64| {
        let mut random = SeededRandom::for_dropout(seed, 3);
        to_f64(
            &model
                .forward(&batch, &mut Mode::Train(&mut random))
                .unwrap(),
        )
    };
    assert_eq!(train(1), train(1));
    assert_ne!(train(1), train(2));
    assert_ne!(train(1), eval(&model), "dropout is on in training");
    // The head is initialised from the seed, the same way every time.
    assert_eq!(eval(&tiny(DType::F32)), eval(&model));
}

/// The row-wise work on the real tokens only (`Rows::Real`, the default) gives the logits, the
/// training loss with its dropout draws, and the gradients of the padded computation.
#[test]
fn skipping_padding_rows_changes_no_logit_and_no_gradient() {
    for dtype in [DType::F32, DType::F64] {
        let batch = fixture_batch(&Device::Cpu);
        let mask = to_f64(&batch.attention_mask.to_dtype(DType::F64).unwrap());
        assert!(mask.contains(&0.0), "the fixture batch must have padding");
        let real = tiny(dtype);
        let mut padded = tiny(dtype);
        padded.rows = Rows::Padded;
        let eval =
            |model: &EncoderClassifier| to_f64(&model.forward(&batch, &mut Mode::Eval).unwrap());
        let bound = if dtype == DType::F32 { 1e-6 } else { 1e-12 };
        let difference = max_difference(&eval(&real), &eval(&padded));
        assert!(
            difference <= bound,
            "{dtype:?}: logits differ by {difference:e}"
        );

        let losses = [&real, &padded].map(|model| training_loss(model, &batch));
        let values = losses.clone().map(|loss| {
            loss.to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        });
        assert!(
            (values[0] - values[1]).abs() <= bound,
            "{dtype:?}: losses {values:?}"
        );
        let gradients = losses.map(|loss| loss.backward().unwrap());
        for ((name, var), (_, twin)) in real.parameters().iter().zip(padded.parameters()) {
            let [a, b] = [(&gradients[0], var), (&gradients[1], twin)]
                .map(|(store, var)| to_f64(store.get(var.as_tensor()).unwrap()));
            let scale = b.iter().fold(1.0f64, |largest, v| largest.max(v.abs()));
            let difference = max_difference(&a, &b);
            assert!(
                difference <= bound * 10.0 * scale,
                "{dtype:?}: the gradient of {name} differs by {difference:e}"
            );
        }
    }
}
/// The example model (all-MiniLM-L6-v2) loads with no missing encoder tensor and its [CLS]
/// states match transformers. Runs where the example assets are (CI fetches them and sets
/// BERTLAB_REQUIRE_ASSETS=1, so there it cannot be skipped).
#[test]
fn the_example_model_matches_transformers() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/all-MiniLM-L6-v2");
    if !directory.join("model.safetensors").is_file() {
        assert!(
            std::env::var_os("BERTLAB_REQUIRE_ASSETS").is_none(),
            "BERTLAB_REQUIRE_ASSETS is set but {} is missing: run scripts/fetch-assets.sh",
            directory.display()
        );
        eprintln!("skipped: no example assets (run scripts/fetch-assets.sh)");
        return;
    }
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("minilm-cls.json")).unwrap())
            .unwrap();
    let (model, report) =
        load_classifier(&directory, Some(3), 0, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        report.initialized,
        ["classifier.weight", "classifier.bias"],
        "{report:?}"
    );
    let loaded = tokenizer::load(&directory).unwrap();
    for row in reference["rows"].as_array().unwrap() {
        let ids = tokenizer::encode(&loaded, row["sentence"].as_str().unwrap(), 512).unwrap();
        let expected_ids: Vec<u32> = row["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, expected_ids);
        let batch = Batch::from_rows(&[ids], loaded.pad_id, &Device::Cpu).unwrap();
        let hidden = model.encode(&batch, &mut Mode::Eval).unwrap();
        let cls = to_f64(&hidden.narrow(1, 0, 1).unwrap());
        let difference = max_difference(&cls, &floats(&row["cls_hidden"]));
        assert!(
            difference < 1e-4,
            "{}: [CLS] differs by {difference:e}",
            row["sentence"]
        );
        eprintln!("all-MiniLM-L6-v2: [CLS] within {difference:e} of transformers");
    }
}

/// A few plain gradient-descent steps lower the loss and move the lowest encoder layer: the
/// whole network trains, not only the head.
#[test]
fn training_steps_move_the_lowest_encoder_layer() {
    let model = tiny(DType::F32);
    let batch = fixture_batch(model.device());
    let name = "bert.encoder.layer.0.attention.self.query.weight";
    let lowest = |model: &EncoderClassifier| {
        let (_, var) = model
            .parameters()
            .iter()
            .find(|(candidate, _)| candidate == name)
            .unwrap();
        to_f64(var.as_tensor())
    };
    let before = lowest(&model);
    let (first_loss, last_loss) = gradient_descent(&model, &batch, &labels(model.device()), 20);
    assert!(
        last_loss < first_loss - 0.1,
        "loss {first_loss} -> {last_loss}"
    );
    let moved = max_difference(&lowest(&model), &before);
    assert!(moved > 1e-3, "{name} moved by {moved:e}");
}

/// `precision = "bf16"`: every trainable tensor still gets a gradient, and logits and gradients
/// stay close to the fp32 model's (bf16 keeps 8 bits of mantissa in the products only). On a CPU
/// without AVX512-BF16 a run asking for bf16 is refused with a message that says why.
#[test]
fn bf16_products_keep_every_gradient_and_stay_close_to_fp32() {
    if !bertlab::model::bf16::available() {
        let error =
            bertlab::train::model_precision(bertlab::plan::spec::Precision::Bf16, &Device::Cpu)
                .unwrap_err();
        assert!(error.to_string().contains("AVX512-BF16"), "{error}");
        return;
    }
    let fp32 = tiny(DType::F32);
    let mut bf16 = tiny(DType::F32);
    bf16.precision = Precision::Bf16;
    assert_eq!(tensors_without_gradient(&bf16), Vec::<String>::new());

    let batch = fixture_batch(&Device::Cpu);
    let logits =
        |model: &EncoderClassifier| to_f64(&model.forward(&batch, &mut Mode::Eval).unwrap());
    let difference = max_difference(&logits(&bf16), &logits(&fp32));
    assert!(difference > 0.0, "bf16 products must round");
    assert!(difference < 0.02, "bf16 logits differ by {difference}");

    let gradients_fp32 = training_loss(&fp32, &batch).backward().unwrap();
    let gradients_bf16 = training_loss(&bf16, &batch).backward().unwrap();
    let mut worst = f64::INFINITY;
    for ((name, var32), (_, var16)) in fp32.parameters().iter().zip(bf16.parameters()) {
        let a = to_f64(gradients_fp32.get(var32.as_tensor()).unwrap());
        let b = to_f64(gradients_bf16.get(var16.as_tensor()).unwrap());
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let norms = a.iter().map(|x| x * x).sum::<f64>().sqrt()
            * b.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cosine = dot / norms;
        if fp32.is_attention_key_bias(name) {
            // Softmax ignores what is added to every score of a row, and the key bias adds
            // q·b to every score of query q's row: its true gradient is zero, so both
            // gradients are rounding noise (fp32 noise of ~1e-9 against bf16 noise).
            continue;
        }
        assert!(
            cosine > 0.99,
            "{name}: gradient cosine {cosine} between bf16 and fp32"
        );
        worst = worst.min(cosine);
    }
    eprintln!("bf16: logits within {difference:.2e} of fp32, gradient cosines >= {worst:.5}");
}

/// `bertlab device-check` on the CPU (and on a fake GPU that computes on the CPU): every check
/// runs and passes, since the device is the reference itself; a GPU machine runs the same command
/// with `--device cuda:0` (`scripts/gpu-check.sh`).
#[test]
fn device_check_runs_every_check() {
    for (device, fake) in [("cpu", None), ("cuda:0", Some("1"))] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bertlab"));
        command
            .args(["device-check"])
            .arg(fixtures().join("tiny-bert"))
            .args(["--device", device])
            .env("NO_COLOR", "1");
        match fake {
            Some(count) => command.env(bertlab::train::device::FAKE_GPUS_VARIABLE, count),
            None => command.env_remove(bertlab::train::device::FAKE_GPUS_VARIABLE),
        };
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let checks = stdout
            .lines()
            .filter(|line| line.starts_with("ok "))
            .count();
        let expected = if bertlab::model::bf16::available() {
            15
        } else {
            12
        };
        assert_eq!(checks, expected, "{stdout}");
        assert!(
            stdout.contains(&format!("all {expected} checks passed")),
            "{stdout}"
        );
    }
}

/// Every parameter has the depth its name says (what layer-wise decay and freezing read), and a
/// frozen model records no gradient below the cut while every tensor above it still gets a
/// finite, non-zero one; freezing changes no output.
#[test]
fn frozen_tensors_get_no_gradient_and_every_tensor_has_a_depth() {
    use bertlab::model::Depth;
    let mut model = tiny(DType::F32);
    let layers = model.layer_count();
    assert_eq!(layers, 2);
    let mut seen_layers = std::collections::BTreeSet::new();
    for ((name, _), depth) in model.parameters().iter().zip(model.parameter_depths()) {
        let expected = if name.starts_with("bert.embeddings.") {
            Depth::Embeddings
        } else if let Some(rest) = name.strip_prefix("bert.encoder.layer.") {
            Depth::Layer(rest.split('.').next().unwrap().parse().unwrap())
        } else {
            assert!(
                name.starts_with("bert.pooler.") || name.starts_with("classifier."),
                "{name}"
            );
            Depth::Head
        };
        assert_eq!(*depth, expected, "{name}");
        if let Depth::Layer(index) = depth {
            seen_layers.insert(*index);
        }
    }
    assert_eq!(
        seen_layers.into_iter().collect::<Vec<_>>(),
        (0..layers).collect::<Vec<_>>()
    );

    let batch = fixture_batch(model.device());
    let before = model
        .forward(&batch, &mut Mode::Eval)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    model.freeze(Some(1)).unwrap();
    let frozen: Vec<String> = model
        .parameters()
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|name| {
            name.starts_with("bert.embeddings.") || name.starts_with("bert.encoder.layer.0.")
        })
        .collect();
    assert_eq!(frozen.len(), 5 + 16);
    assert_eq!(
        tensors_without_gradient(&model),
        frozen,
        "exactly the frozen tensors"
    );
    let trainable: Vec<&String> = model
        .trainable_parameters()
        .iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(trainable.len(), model.parameters().len() - frozen.len());
    assert!(trainable.iter().all(|name| !frozen.contains(name)));
    let gradients = training_loss(&model, &batch).backward().unwrap();
    for (name, var) in model.parameters() {
        assert_eq!(
            gradients.get(var.as_tensor()).is_some(),
            !frozen.contains(name),
            "{name}: a frozen tensor is never recorded"
        );
    }
    let after = model
        .forward(&batch, &mut Mode::Eval)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(before, after);

    model.freeze(Some(0)).unwrap();
    assert_eq!(
        tensors_without_gradient(&model).len(),
        5,
        "the embeddings only"
    );
    model.freeze(Some(2)).unwrap();
    assert_eq!(model.trainable_parameters().len(), 4, "pooler and head");
    assert!(model.freeze(Some(3)).is_err());
    model.freeze(None).unwrap();
    assert_eq!(tensors_without_gradient(&model), Vec::<String>::new());
}
