//! Fixtures the integration tests make: a tiny random BERT directory, a small labelled CSV, and
//! experiment files, all in a temporary folder; plus a runner for the real binary whose output
//! has the temporary paths filtered out for snapshots.
#![allow(dead_code)]

pub mod reference;

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::tensor::{Dtype, TensorView};

/// Shape of the tiny model: 2 layers, hidden 32, 4 heads.
pub const HIDDEN: usize = 32;
pub const LAYERS: usize = 2;
pub const INTERMEDIATE: usize = 64;
pub const MAX_POSITIONS: usize = 64;

pub const VOCABULARY: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "good", "bad", "movie", "film",
    "great", "awful", "not", "very", "was", "is", "it", "i", "love", "hate", "!", ".", ",",
];

/// Deterministic pseudo-random numbers in [-0.1, 0.1) (a 64-bit LCG): fixtures need no RNG crate.
struct Numbers(u64);

impl Numbers {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    }
}

/// Writes a tiny random BERT in Hugging Face layout: config.json, vocab.txt, model.safetensors.
pub fn tiny_bert(directory: &Path, seed: u64) {
    std::fs::create_dir_all(directory).unwrap();
    let config = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": VOCABULARY.len(),
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0
    });
    std::fs::write(
        directory.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    std::fs::write(directory.join("vocab.txt"), VOCABULARY.join("\n") + "\n").unwrap();

    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![VOCABULARY.len(), HIDDEN],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![MAX_POSITIONS, HIDDEN],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, HIDDEN],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![HIDDEN]),
        ("embeddings.LayerNorm.bias".into(), vec![HIDDEN]),
    ];
    for layer in 0..LAYERS {
        let prefix = format!("encoder.layer.{layer}");
        for part in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            shapes.push((format!("{prefix}.{part}.weight"), vec![HIDDEN, HIDDEN]));
            shapes.push((format!("{prefix}.{part}.bias"), vec![HIDDEN]));
        }
        shapes.push((
            format!("{prefix}.intermediate.dense.weight"),
            vec![INTERMEDIATE, HIDDEN],
        ));
        shapes.push((
            format!("{prefix}.intermediate.dense.bias"),
            vec![INTERMEDIATE],
        ));
        shapes.push((
            format!("{prefix}.output.dense.weight"),
            vec![HIDDEN, INTERMEDIATE],
        ));
        shapes.push((format!("{prefix}.output.dense.bias"), vec![HIDDEN]));
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{prefix}.{norm}.weight"), vec![HIDDEN]));
            shapes.push((format!("{prefix}.{norm}.bias"), vec![HIDDEN]));
        }
    }
    shapes.push(("pooler.dense.weight".into(), vec![HIDDEN, HIDDEN]));
    shapes.push(("pooler.dense.bias".into(), vec![HIDDEN]));

    let mut numbers = Numbers(seed.wrapping_add(0x9e37_79b9_7f4a_7c15));
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let count: usize = shape.iter().product();
            let values: Vec<f32> = if name.contains("LayerNorm.weight") {
                vec![1.0; count]
            } else if name.contains("LayerNorm.bias") {
                vec![0.0; count]
            } else {
                (0..count).map(|_| numbers.next()).collect()
            };
            let bytes = values
                .iter()
                .flat_map(|value| value.to_le_bytes())
                .collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &directory.join("model.safetensors"))
        .unwrap();
}

/// A small two-class CSV (`text,label`).
pub fn sentiment_csv(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = String::from("text,label\n");
    for index in 0..40 {
        let (words, label) = if index % 2 == 0 {
            ("i love it, a great film", "positive")
        } else {
            ("i hate it, an awful movie", "negative")
        };
        text.push_str(&format!("\"{words} {index}\",{label}\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// A two-class task the tiny model can separate: a sentiment word among filler words.
pub fn separable_csv(path: &Path, rows: usize) {
    let positive = ["good", "great", "love"];
    let negative = ["bad", "awful", "hate"];
    let filler = [
        "the", "a", "movie", "film", "it", "was", "is", "very", "not", "i",
    ];
    let mut state = 7u64;
    let mut next = |bound: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % bound
    };
    let mut text = String::from("text,label\n");
    for index in 0..rows {
        let label = index % 2;
        let mut words: Vec<&str> = (0..2 + next(6))
            .map(|_| filler[next(filler.len())])
            .collect();
        let signal = if label == 1 { positive } else { negative };
        let at = next(words.len() + 1);
        words.insert(at, signal[next(3)]);
        text.push_str(&format!(
            "{} {index},{}\n",
            words.join(" "),
            if label == 1 { "positive" } else { "negative" }
        ));
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The run directories of a store.
pub fn run_directories(store: &Path) -> Vec<PathBuf> {
    let mut directories: Vec<PathBuf> = std::fs::read_dir(store)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("spec.json").is_file())
        .collect();
    directories.sort();
    directories
}

/// A workspace with `data/train.csv`, `models/tiny/`, and experiment files under `experiments/`.
pub struct Workspace {
    pub directory: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let directory = tempfile::tempdir().unwrap();
        sentiment_csv(&directory.path().join("data/train.csv"));
        tiny_bert(&directory.path().join("models/tiny"), 1);
        std::fs::create_dir_all(directory.path().join("experiments")).unwrap();
        Workspace { directory }
    }

    pub fn path(&self) -> &Path {
        self.directory.path()
    }

    /// Writes `experiments/<name>` and returns its path.
    pub fn experiment(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join("experiments").join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The real binary in the workspace, with its own fingerprint cache, no colour, no store
    /// from the environment and no test hook: to spawn, or to add to.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bertlab"));
        command
            .args(args)
            .current_dir(self.path())
            .env("BERTLAB_CACHE_DIR", self.path().join("cache"))
            .env("NO_COLOR", "1")
            .env_remove("BERTLAB_RUNS")
            .env_remove(bertlab::train::epochs::ABORT_AFTER_STEP_VARIABLE)
            .env_remove(bertlab::train::epochs::STEP_DELAY_VARIABLE);
        command
    }

    /// Runs the real binary in the workspace, with its own fingerprint cache and no colour.
    pub fn bertlab(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bertlab"));
        command
            .args(args)
            .current_dir(self.path())
            .env("BERTLAB_CACHE_DIR", self.path().join("cache"))
            .env("NO_COLOR", "1")
            .env_remove("BERTLAB_RUNS");
        self.output(command)
    }

    /// Runs `command` to its end: its exit status and output, the workspace path replaced by
    /// `[WORKSPACE]`.
    pub fn output(&self, mut command: Command) -> Output {
        let output = command.output().unwrap();
        let filter = |bytes: &[u8]| {
            String::from_utf8(bytes.to_vec())
                .unwrap()
                .replace(&self.path().display().to_string(), "[WORKSPACE]")
        };
        Output {
            status: output.status.code(),
            stdout: filter(&output.stdout),
            stderr: filter(&output.stderr),
        }
    }

    /// Whether the run store exists (it must not after a failed command).
    pub fn store_exists(&self) -> bool {
        self.path().join("runs").exists()
    }
}

/// What the binary printed, with the workspace path replaced by `[WORKSPACE]`.
#[derive(Debug)]
pub struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The experiment most tests start from: a 3 x 2 x 3 sweep over the tiny model.
pub const SWEEP: &str = r#"name = "tiny-sweep"
description = "3 x 2 x 3"

[data]
train = "../data/train.csv"

[model]
path = "../models/tiny"

[train]
max_length = 32
epochs = 2

[grid]
learning_rate = [2e-5, 3e-5, 5e-5]
batch_size = [16, 32]
seed = [0, 1, 2]
"#;

/// metrics.csv without its time columns (which differ between two trainings of the same run).
pub fn metrics_without_time(directory: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_path(directory.join("metrics.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let keep: Vec<usize> = headers
        .iter()
        .enumerate()
        .filter(|(_, name)| !bertlab::store::run_files::TIME_COLUMNS.contains(name))
        .map(|(index, _)| index)
        .collect();
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            keep.iter()
                .map(|&index| record[index].to_string())
                .collect()
        })
        .collect()
}
