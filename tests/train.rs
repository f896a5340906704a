//! `bertlab run` end to end with the tiny fixture model: it learns a separable task; the same
//! spec trained twice, or killed and resumed, or interrupted with SIGINT and resumed, gives the
//! same metrics and weights bit for bit; a failing run is recorded while the sweep goes on; two
//! runners split a sweep; the optimizer matches torch.optim.AdamW.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bertlab::train::optimizer::{self, AdamW};
use bertlab::train::schedule;
use candle_core::{DType, Device, Tensor, Var};
use common::{Workspace, metrics_without_time, run_directories, separable_csv};
use serde_json::Value;

fn workspace() -> Workspace {
    let workspace = Workspace::new();
    separable_csv(&workspace.path().join("data/separable.csv"), 240);
    workspace
}

/// An experiment on the separable data with `train` settings and an optional grid.
fn experiment(name: &str, train: &str, grid: &str) -> String {
    format!(
        "name = \"{name}\"\n\n[data]\ntrain = \"../data/separable.csv\"\ntest_fraction = 0.1\n\n\
         [model]\npath = \"../models/tiny\"\n\n[train]\nmax_length = 24\n{train}\n{grid}"
    )
}

const LEARNING: &str = "learning_rate = 2e-3\nbatch_size = 16\nepochs = 8\nwarmup_ratio = 0.1";

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display())),
    )
    .unwrap()
}

/// Everything a run's results are made of, for bit-for-bit comparison.
fn fingerprint(directory: &Path) -> (Vec<Vec<String>>, Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        metrics_without_time(directory),
        std::fs::read(directory.join("model/model.safetensors")).unwrap(),
        std::fs::read(directory.join("predictions.csv")).unwrap(),
        std::fs::read(directory.join("per_class.csv")).unwrap(),
    )
}

fn bertlab_command(workspace: &Workspace, args: &[&str]) -> Command {
    workspace.command(args)
}

#[test]
fn the_tiny_model_learns_a_separable_task_and_the_run_directory_is_complete() {
    let workspace = workspace();
    workspace.experiment("learn.toml", &experiment("learn", LEARNING, ""));
    let output = workspace.bertlab(&["run", "experiments/learn.toml"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    let directories = run_directories(&workspace.path().join("runs"));
    assert_eq!(directories.len(), 1);
    let directory = &directories[0];
    for file in [
        "spec.json",
        "experiment.toml",
        "run.json",
        "metrics.csv",
        "per_class.csv",
        "confusion.csv",
        "predictions.csv",
        "data_report.json",
        "train.log",
        "results.json",
        "model/config.json",
        "model/model.safetensors",
        "model/vocab.txt",
    ] {
        assert!(directory.join(file).is_file(), "{file} missing");
    }
    assert!(
        !directory.join("checkpoint").exists(),
        "a done run keeps no checkpoint"
    );
    assert_eq!(
        std::fs::read_to_string(directory.join("experiment.toml")).unwrap(),
        experiment("learn", LEARNING, "")
    );
    let record = read_json(&directory.join("run.json"));
    assert_eq!(record["status"], "done");
    assert_eq!(record["attempts"], 1);
    assert_eq!(record["provenance"]["device"], "cpu");
    assert!(record["provenance"]["threads"].as_u64().unwrap() >= 1);
    assert!(record["started_at"].is_string() && record["finished_at"].is_string());
    let results = read_json(&directory.join("results.json"));
    let accuracy = results["validation"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "validation accuracy {accuracy}");
    assert!(results["test"]["accuracy"].as_f64().unwrap() >= 0.8);
    // The kept epoch is the best by macro-F1, and metrics.csv agrees with results.json.
    let rows = metrics_without_time(directory);
    assert_eq!(rows.len(), 8);
    let best = record["best_epoch"].as_u64().unwrap() as usize;
    let f1: Vec<f64> = rows.iter().map(|row| row[4].parse().unwrap()).collect();
    let first_best = f1
        .iter()
        .position(|value| *value == f1.iter().copied().fold(f64::MIN, f64::max))
        .unwrap();
    assert_eq!(best, first_best + 1);
    assert_eq!(
        results["validation"]["macro_f1"].as_f64().unwrap(),
        f1[best - 1]
    );
    let train_losses: Vec<f64> = rows.iter().map(|row| row[1].parse().unwrap()).collect();
    assert!(
        train_losses[7] < train_losses[0] * 0.5,
        "the loss falls: {train_losses:?}"
    );
    // The stdout table ends the sweep; the saved model predicts what predictions.csv says.
    assert!(output.stdout.contains("done"), "{}", output.stdout);
    let (model, _) = bertlab::model::checkpoint::load_classifier(
        &directory.join("model"),
        None,
        0,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let loaded = bertlab::tokenize::tokenizer::load(&directory.join("model")).unwrap();
    let mut reader = csv::Reader::from_path(directory.join("predictions.csv")).unwrap();
    let mut checked = 0;
    for record in reader.records() {
        let record = record.unwrap();
        let ids = bertlab::tokenize::tokenizer::encode(&loaded, &record[2], 24).unwrap();
        let batch = bertlab::model::Batch::from_rows(&[ids], loaded.pad_id, &Device::Cpu).unwrap();
        let probabilities = model
            .predict_probabilities(&batch)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let stored: Vec<f32> = (5..7)
            .map(|column| record[column].parse().unwrap())
            .collect();
        for (a, b) in probabilities[0].iter().zip(&stored) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b} for {:?}", &record[2]);
        }
        checked += 1;
    }
    assert_eq!(checked, 48, "validation and test rows");
    // A second `bertlab run` skips the done run.
    let again = workspace.bertlab(&["run", "experiments/learn.toml"]);
    assert_eq!(again.status, Some(0));
    assert!(
        again.stderr.contains("done already, skipped"),
        "{}",
        again.stderr
    );
}

/// Settings that exercise every random draw and the accumulation path.
const RESUMABLE: &str = "learning_rate = 5e-4\nbatch_size = 8\nepochs = 3\nwarmup_ratio = 0.2\n\
                         gradient_accumulation = 2\nclass_weights = \"balanced\"\nlength_bucketing = true";

/// `bertlab --runs STORE run EXPERIMENT`, killed right after step `abort_after` when given.
fn train_into(
    workspace: &Workspace,
    experiment: &str,
    store: &str,
    abort_after: Option<u64>,
) -> std::process::Output {
    let mut command = bertlab_command(workspace, &["--runs", store, "run", experiment]);
    if let Some(step) = abort_after {
        command.env(
            bertlab::train::epochs::ABORT_AFTER_STEP_VARIABLE,
            step.to_string(),
        );
    }
    command.output().unwrap()
}

#[test]
fn the_same_spec_killed_and_resumed_gives_bit_identical_results() {
    let workspace = workspace();
    workspace.experiment("resume.toml", &experiment("resume", RESUMABLE, ""));
    let train = |store: &str, abort_after: Option<u64>| {
        train_into(&workspace, "experiments/resume.toml", store, abort_after)
    };
    let reference = train("runs-reference", None);
    assert!(
        reference.status.success(),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let repeat = train("runs-repeat", None);
    assert!(repeat.status.success());
    let reference_directory = &run_directories(&workspace.path().join("runs-reference"))[0];
    let expected = fingerprint(reference_directory);
    assert_eq!(
        fingerprint(&run_directories(&workspace.path().join("runs-repeat"))[0]),
        expected,
        "the same spec trained twice"
    );

    // 192 training examples, batches of 8, 2 per step: 12 steps an epoch. Step 20 is mid-epoch 2.
    let killed = train("runs-killed", Some(20));
    assert!(!killed.status.success(), "the abort hook kills the process");
    let directory = &run_directories(&workspace.path().join("runs-killed"))[0];
    assert_eq!(
        metrics_without_time(directory).len(),
        1,
        "epoch 1 was finished"
    );
    let status = workspace.bertlab(&["--runs", "runs-killed", "plan", "experiments/resume.toml"]);
    assert!(status.stdout.contains("interrupted"), "{}", status.stdout);
    let resumed = train("runs-killed", None);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("resuming at epoch 2"), "{stderr}");
    assert_eq!(fingerprint(directory), expected, "killed and resumed");
    assert_eq!(read_json(&directory.join("run.json"))["attempts"], 2);
}

#[test]
fn sigint_writes_a_checkpoint_and_the_resumed_run_matches() {
    let workspace = workspace();
    let settings = "learning_rate = 5e-4\nbatch_size = 8\nepochs = 40";
    workspace.experiment("long.toml", &experiment("long", settings, ""));
    let reference = bertlab_command(
        &workspace,
        &["--runs", "runs-reference", "run", "experiments/long.toml"],
    )
    .output()
    .unwrap();
    assert!(reference.status.success());
    let expected = fingerprint(&run_directories(&workspace.path().join("runs-reference"))[0]);

    let child = bertlab_command(
        &workspace,
        &["--runs", "runs-signal", "run", "experiments/long.toml"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Wait until the first epoch is validated, then interrupt.
    let store = workspace.path().join("runs-signal");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = store.is_dir()
            && run_directories(&store)
                .first()
                .is_some_and(|directory| directory.join("metrics.csv").is_file());
        if started {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let directory = &run_directories(&store)[0];
    let record = read_json(&directory.join("run.json"));
    assert_eq!(record["status"], "interrupted", "{record}");
    assert!(directory.join("checkpoint/state.safetensors").is_file());

    let resumed = bertlab_command(
        &workspace,
        &["--runs", "runs-signal", "run", "experiments/long.toml"],
    )
    .output()
    .unwrap();
    assert!(resumed.status.success());
    assert_eq!(fingerprint(directory), expected);
}

/// A copy of the tiny model whose pooler holds NaN: its loss is NaN from the first step.
fn poisoned_model(workspace: &Workspace) {
    let source = workspace.path().join("models/tiny");
    let target = workspace.path().join("models/poisoned");
    std::fs::create_dir_all(&target).unwrap();
    for name in ["config.json", "vocab.txt"] {
        std::fs::copy(source.join(name), target.join(name)).unwrap();
    }
    let mut tensors =
        candle_core::safetensors::load(source.join("model.safetensors"), &Device::Cpu).unwrap();
    let pooler = tensors.get("pooler.dense.weight").unwrap();
    let nan = (pooler.ones_like().unwrap() * f64::NAN).unwrap();
    tensors.insert("pooler.dense.weight".into(), nan);
    candle_core::safetensors::save(&tensors, target.join("model.safetensors")).unwrap();
}

#[test]
fn a_diverging_run_is_recorded_as_failed_and_the_sweep_goes_on() {
    let workspace = workspace();
    poisoned_model(&workspace);
    let text = experiment("diverge", "learning_rate = 1e-3\nepochs = 1", "")
        .replace("path = \"../models/tiny\"\n", "")
        + "[grid]\nmodel.path = [\"../models/poisoned\", \"../models/tiny\"]\n";
    workspace.experiment("diverge.toml", &text);
    let output = workspace.bertlab(&["run", "experiments/diverge.toml"]);
    assert_eq!(
        output.status,
        Some(1),
        "a failed run: exit 1\n{}",
        output.stderr
    );
    assert!(
        output
            .stderr
            .contains("failed: diverged at epoch 1 step 1: the training loss is NaN"),
        "{}",
        output.stderr
    );
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert!(
        lines[1].contains("failed") && lines[2].contains("done"),
        "{}",
        output.stdout
    );
    let statuses: Vec<String> = run_directories(&workspace.path().join("runs"))
        .iter()
        .map(|directory| {
            read_json(&directory.join("run.json"))["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, ["done", "failed"]);
    // The failure is kept, with its reason, and not retried unless asked.
    let again = workspace.bertlab(&["run", "experiments/diverge.toml"]);
    assert_eq!(again.status, Some(1));
    assert!(
        again.stderr.contains("failed earlier (diverged at epoch 1"),
        "{}",
        again.stderr
    );
    // --retry-failed trains it again, from the start.
    let retried = workspace.bertlab(&["run", "experiments/diverge.toml", "--retry-failed"]);
    assert_eq!(retried.status, Some(1));
    assert!(
        retried.stderr.contains("attempt 2") && retried.stderr.contains("training from the start"),
        "{}",
        retried.stderr
    );
    // --fail-fast stops at the failure.
    let fresh = workspace.bertlab(&[
        "--runs",
        "runs-fast",
        "run",
        "experiments/diverge.toml",
        "--fail-fast",
    ]);
    assert_eq!(fresh.status, Some(1));
    assert!(
        fresh.stderr.contains("stopped at the first failure"),
        "{}",
        fresh.stderr
    );
    assert_eq!(
        run_directories(&workspace.path().join("runs-fast")).len(),
        1
    );
}

#[test]
fn two_runners_split_a_sweep_and_train_each_run_once() {
    let workspace = workspace();
    workspace.experiment(
        "sweep.toml",
        &experiment(
            "sweep",
            "learning_rate = 1e-3\nepochs = 4",
            "[grid]\nseed = [0, 1, 2, 3]\n",
        ),
    );
    let spawn = || {
        bertlab_command(&workspace, &["run", "experiments/sweep.toml"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    for output in &outputs {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let directories = run_directories(&workspace.path().join("runs"));
    assert_eq!(directories.len(), 4);
    let mut trained = 0;
    for directory in &directories {
        let record = read_json(&directory.join("run.json"));
        assert_eq!(record["status"], "done");
        assert_eq!(
            record["attempts"],
            1,
            "trained once: {}",
            directory.display()
        );
        let short = directory.file_name().unwrap().to_str().unwrap();
        let trainers = outputs
            .iter()
            .filter(|output| {
                String::from_utf8_lossy(&output.stderr).contains(&format!("{short} done in"))
            })
            .count();
        assert_eq!(trainers, 1, "{short} trained by exactly one process");
        trained += trainers;
    }
    assert_eq!(trained, 4);
}

/// A worker killed with SIGKILL while it holds a run's claim (no signal handler runs, the lock
/// is released by the kernel as the process dies): a second worker, waiting for that run, takes
/// it over from its last checkpoint and ends it as an uninterrupted run would.
#[test]
fn a_worker_killed_while_holding_a_claim_leaves_the_run_to_a_waiting_worker() {
    let workspace = workspace();
    let settings = "learning_rate = 5e-4\nbatch_size = 8\nepochs = 6";
    workspace.experiment("held.toml", &experiment("held", settings, ""));
    let reference = train_into(&workspace, "experiments/held.toml", "runs-reference", None);
    assert!(reference.status.success());
    let expected = fingerprint(&run_directories(&workspace.path().join("runs-reference"))[0]);

    let spawn = || {
        bertlab_command(
            &workspace,
            &["--runs", "runs-shared", "run", "experiments/held.toml"],
        )
        .env(bertlab::train::epochs::STEP_DELAY_VARIABLE, "150")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let store = workspace.path().join("runs-shared");
    let mut holder = spawn();
    // The holder is past its first epoch (a state checkpoint on disk) when the second worker
    // starts. The folder alone is not enough: the kept epoch's weights are written into it first,
    // and a holder killed before its state lands leaves nothing to resume from.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(store.is_dir()
        && run_directories(&store).first().is_some_and(|directory| {
            bertlab::train::checkpoint::checkpoint_folder(directory)
                .join(bertlab::train::checkpoint::STATE_FILE)
                .is_file()
        }))
    {
        assert!(
            Instant::now() < deadline,
            "the run did not reach a checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut waiter = spawn();
    // Read the waiter's stderr as it comes, until it says it waits for the held run.
    let waiter_stderr = waiter.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut text = String::new();
        for line in std::io::BufReader::new(waiter_stderr).lines() {
            let line = line.unwrap();
            text.push_str(&line);
            text.push('\n');
            let _ = lines.send(line);
        }
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = seen
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the second worker did not say it waits");
        if line.contains("waiting for 1 run being trained elsewhere") {
            break;
        }
    }
    let directory = run_directories(&store)[0].clone();
    assert_eq!(
        read_json(&directory.join("run.json"))["attempts"],
        1,
        "the waiter waits"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let status = waiter.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("resuming at epoch"), "{stderr}");
    let record = read_json(&directory.join("run.json"));
    assert_eq!(record["status"], "done");
    assert_eq!(record["attempts"], 2, "{record}");
    assert_eq!(
        fingerprint(&directory),
        expected,
        "taken over = uninterrupted"
    );
}

/// The gradient of `loss` for each of `parameters`, flattened.
fn flat_gradients(loss: &Tensor, parameters: &[(String, Var)]) -> Vec<Vec<f32>> {
    let grads = loss.backward().unwrap();
    parameters
        .iter()
        .map(|(_, var)| {
            grads
                .get(var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect()
}

/// bertlab's AdamW, schedule and clipping against torch's on a toy problem
/// (tests/fixtures/adamw-torch.json, from scripts/make_optimizer_fixture.py).
#[test]
fn adamw_matches_torch_to_1e_6() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adamw-torch.json");
    let fixture = read_json(&path);
    let device = Device::Cpu;
    let matrix = |value: &Value| -> Tensor {
        let rows: Vec<Vec<f32>> = serde_json::from_value(value.clone()).unwrap();
        let shape = (rows.len(), rows[0].len());
        Tensor::from_vec(rows.concat(), shape, &device).unwrap()
    };
    let vector = |value: &Value| -> Vec<f32> { serde_json::from_value(value.clone()).unwrap() };
    let inputs = matrix(&fixture["inputs"]);
    let targets = matrix(&fixture["targets"]);
    let parameters: Vec<(String, Var)> = vec![
        (
            "layer.weight".into(),
            Var::from_tensor(&matrix(&fixture["init"]["layer.weight"])).unwrap(),
        ),
        (
            "layer.bias".into(),
            Var::new(vector(&fixture["init"]["layer.bias"]).as_slice(), &device).unwrap(),
        ),
        (
            "norm.LayerNorm.weight".into(),
            Var::new(
                vector(&fixture["init"]["norm.LayerNorm.weight"]).as_slice(),
                &device,
            )
            .unwrap(),
        ),
    ];
    let total = fixture["total_steps"].as_u64().unwrap();
    let warmup = fixture["warmup_steps"].as_u64().unwrap();
    assert_eq!(schedule::warmup_steps(total, 0.1), warmup);
    let peak = fixture["peak_learning_rate"].as_f64().unwrap();
    let max_norm = fixture["max_grad_norm"].as_f64().unwrap();
    let mut adamw = AdamW::new(&parameters, fixture["weight_decay"].as_f64().unwrap());
    // A twin updated in place (clipping folded in, no copies) must stay bit-identical.
    let twins: Vec<(String, Var)> = parameters
        .iter()
        .map(|(name, var)| {
            (
                name.clone(),
                Var::from_tensor(&var.as_tensor().copy().unwrap()).unwrap(),
            )
        })
        .collect();
    let mut twin_adamw = AdamW::new(&twins, adamw.settings.weight_decay);
    for step in 0..total {
        let (weight, bias, scale) = (
            parameters[0].1.as_tensor(),
            parameters[1].1.as_tensor(),
            parameters[2].1.as_tensor(),
        );
        let prediction = inputs
            .broadcast_mul(scale)
            .unwrap()
            .matmul(&weight.t().unwrap())
            .unwrap()
            .broadcast_add(bias)
            .unwrap();
        let loss = (prediction - &targets)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        let expected_loss = fixture["losses"][step as usize].as_f64().unwrap();
        let got_loss = loss.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (got_loss - expected_loss).abs() < 1e-6,
            "step {step}: loss {got_loss} vs {expected_loss}"
        );
        let mut gradients = flat_gradients(&loss, &parameters);
        let norm = optimizer::clip_global_norm(&mut gradients, max_norm);
        let expected_norm = fixture["norms"][step as usize].as_f64().unwrap();
        assert!(
            (norm - expected_norm).abs() < 1e-5,
            "step {step}: norm {norm} vs {expected_norm}"
        );
        let rate = schedule::learning_rate_at(step, total, warmup, peak);
        let expected_rate = fixture["learning_rates"][step as usize].as_f64().unwrap();
        assert!(
            (rate - expected_rate).abs() < 1e-12,
            "step {step}: rate {rate} vs {expected_rate}"
        );
        adamw.step(&parameters, &gradients, rate).unwrap();

        let prediction = inputs
            .broadcast_mul(twins[2].1.as_tensor())
            .unwrap()
            .matmul(&twins[0].1.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(twins[1].1.as_tensor())
            .unwrap();
        let twin_loss = (prediction - &targets)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        let twin_grads = twin_loss.backward().unwrap();
        let twin_gradients: Vec<Tensor> = twins
            .iter()
            .map(|(_, var)| twin_grads.get(var).unwrap().contiguous().unwrap())
            .collect();
        let twin_norm = twin_adamw
            .step_tensors(&twins, &twin_gradients, max_norm, rate)
            .unwrap()
            .unwrap();
        assert_eq!(twin_norm.to_bits(), norm.to_bits(), "step {step}");
        for ((_, a), (_, b)) in parameters.iter().zip(&twins) {
            let a: Vec<f32> = a.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = b.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b, "step {step}: in place = copying");
        }
    }
    let mut worst = 0f64;
    for (name, var) in &parameters {
        let got: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let expected: Vec<f64> = match &fixture["final"][name] {
            Value::Array(items) if items[0].is_array() => items
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
                .collect(),
            Value::Array(items) => items.iter().map(|v| v.as_f64().unwrap()).collect(),
            other => panic!("{other}"),
        };
        for (a, b) in got.iter().zip(&expected) {
            worst = worst.max((*a as f64 - b).abs());
        }
    }
    eprintln!("AdamW vs torch after {total} steps: worst parameter difference {worst:e}");
    assert!(worst < 1e-6, "worst difference {worst}");

    // The state round-trips exactly through the checkpoint tensors.
    let tensors: std::collections::HashMap<String, Tensor> =
        adamw.state_tensors().unwrap().into_iter().collect();
    let mut restored = AdamW::new(&parameters, adamw.settings.weight_decay);
    restored.restore(&tensors, adamw.steps).unwrap();
    assert_eq!(restored, adamw);
}

/// `precision = "bf16"`: the tiny model still learns the separable task, and the same spec
/// trained twice gives the same bits (the bf16 kernel's sums do not depend on how its work is
/// shared between threads). Without AVX512-BF16 the run fails with a message that says why.
#[test]
fn a_bf16_run_learns_and_repeats_bit_for_bit() {
    let workspace = workspace();
    let train = format!("{LEARNING}\nprecision = \"bf16\"");
    workspace.experiment("bf16.toml", &experiment("bf16", &train, ""));
    let run = |store: &str| workspace.bertlab(&["--runs", store, "run", "experiments/bf16.toml"]);
    let first = run("runs-first");
    if !bertlab::model::bf16::available() {
        assert_ne!(first.status, Some(0));
        assert!(first.stderr.contains("AVX512-BF16"), "{}", first.stderr);
        return;
    }
    assert_eq!(first.status, Some(0), "{}", first.stderr);
    let directory = &run_directories(&workspace.path().join("runs-first"))[0];
    let results = read_json(&directory.join("results.json"));
    let accuracy = results["validation"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "validation accuracy {accuracy} in bf16");
    assert_eq!(
        read_json(&directory.join("spec.json"))["train"]["precision"],
        "bf16"
    );
    assert_eq!(
        read_json(&directory.join("run.json"))["provenance"]["bf16_products"],
        bertlab::model::bf16::Unit::current().name(),
        "the run records the unit of its products"
    );
    let second = run("runs-second");
    assert_eq!(second.status, Some(0), "{}", second.stderr);
    assert_eq!(
        fingerprint(&run_directories(&workspace.path().join("runs-second"))[0]),
        fingerprint(directory),
        "the same bf16 spec trained twice"
    );
}

/// On a CPU with AMX tiles: a bf16 run kept on the AVX512-BF16 vectors
/// (`BERTLAB_BF16_PRODUCTS=avx512`) records so, and `bertlab reproduce` without the variable
/// trains it on the vectors again and gets the same bits. (Elsewhere only the record is
/// checked: a CPU without tiles has one unit.)
#[test]
fn a_bf16_run_on_the_vectors_reproduces_on_a_cpu_with_tiles() {
    if !bertlab::model::bf16::available() {
        return; // a_bf16_run_learns_and_repeats_bit_for_bit checks the refusal.
    }
    let workspace = workspace();
    let train = format!("{LEARNING}\nprecision = \"bf16\"");
    workspace.experiment("bf16.toml", &experiment("bf16", &train, ""));
    let mut command = workspace.command(&["run", "experiments/bf16.toml"]);
    command.env(bertlab::model::amx::UNIT_VARIABLE, "avx512");
    let trained = workspace.output(command);
    assert_eq!(trained.status, Some(0), "{}", trained.stderr);
    let directory = &run_directories(&workspace.path().join("runs"))[0];
    assert_eq!(
        read_json(&directory.join("run.json"))["provenance"]["bf16_products"],
        "avx512-bf16"
    );
    if !bertlab::model::amx::hardware_available() {
        return;
    }
    let hash = directory.file_name().unwrap().to_str().unwrap().to_string();
    let mut command = workspace.command(&["reproduce", &hash]);
    command.env_remove(bertlab::model::amx::UNIT_VARIABLE);
    let reproduced = workspace.output(command);
    assert_eq!(
        reproduced.status,
        Some(0),
        "{}\n{}",
        reproduced.stdout,
        reproduced.stderr
    );
    assert!(
        reproduced.stdout.contains("AMX tiles set aside")
            && reproduced.stdout.contains("identical, bit for bit"),
        "{}",
        reproduced.stdout
    );
}

/// `bertlab run --devices 0,1` on a build without GPUs, with the test hook standing in for two
/// GPUs (they compute on the CPU): the real scheduler gives each device one run at a time, both
/// devices work, every run is trained once and records the device it ran on.
#[test]
fn devices_train_one_run_each_at_a_time_until_the_sweep_is_done() {
    let workspace = workspace();
    workspace.experiment(
        "sweep.toml",
        &experiment(
            "sweep",
            "learning_rate = 1e-3\nepochs = 3",
            "[grid]\nseed = [0, 1, 2, 3, 4]\n",
        ),
    );
    let output = bertlab_command(
        &workspace,
        &["run", "experiments/sweep.toml", "--devices", "0,1"],
    )
    .env(bertlab::train::device::FAKE_GPUS_VARIABLE, "2")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 workers, one run at a time on each of cuda:0 (fake), cuda:1 (fake)"),
        "{stderr}"
    );
    let directories = run_directories(&workspace.path().join("runs"));
    assert_eq!(directories.len(), 5);
    let mut spans: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    for directory in &directories {
        let record = read_json(&directory.join("run.json"));
        assert_eq!(record["status"], "done", "{}", directory.display());
        assert_eq!(
            record["attempts"],
            1,
            "trained once: {}",
            directory.display()
        );
        let device = record["provenance"]["device"].as_str().unwrap().to_string();
        assert!(
            device == "cuda:0 (fake)" || device == "cuda:1 (fake)",
            "recorded device {device}"
        );
        let log = std::fs::read_to_string(directory.join("train.log")).unwrap();
        assert!(log.contains(&format!("on {device}")), "{log}");
        spans.entry(device).or_default().push((
            record["started_at"].as_str().unwrap().to_string(),
            record["finished_at"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(spans.len(), 2, "both devices trained: {spans:?}");
    for (device, mut runs) in spans {
        runs.sort();
        for pair in runs.windows(2) {
            // RFC 3339 times in UTC with the same format sort as text.
            assert!(
                pair[0].1 <= pair[1].0,
                "{device} trained two runs at once: {pair:?}"
            );
        }
    }
    // Every run is reported once, in plan order, in the results table.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("done").count(), 5, "{stdout}");
}

/// Without the `cuda` feature, `--devices` is an error that names the feature, before any run.
#[cfg(not(feature = "cuda"))]
#[test]
fn devices_need_a_gpu_build() {
    let workspace = workspace();
    workspace.experiment("one.toml", &experiment("one", LEARNING, ""));
    let output = bertlab_command(
        &workspace,
        &["run", "experiments/one.toml", "--devices", "0"],
    )
    .env_remove(bertlab::train::device::FAKE_GPUS_VARIABLE)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`cuda` Cargo feature"), "{stderr}");
    assert!(!workspace.store_exists(), "nothing written");
}

/// One tensor's values from the fixture, flattened (nested lists of numbers).
fn flat_values(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(flat_values).collect(),
        Value::Number(number) => vec![number.as_f64().unwrap() as f32],
        other => panic!("not a tensor: {other}"),
    }
}

fn shape_of(value: &Value) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut current = value;
    while let Value::Array(items) = current {
        shape.push(items.len());
        current = &items[0];
    }
    shape
}

fn fixture_tensor(value: &Value) -> Tensor {
    Tensor::from_vec(flat_values(value), shape_of(value), &Device::Cpu).unwrap()
}

/// The loss of a fixture problem at `parameters` (in the fixture's order of names).
fn recipe_loss(
    fixture: &Value,
    problem: &str,
    case: &Value,
    parameters: &[(String, Var)],
) -> Tensor {
    let data = &fixture[problem];
    let inputs = fixture_tensor(&data["inputs"]);
    let find = |name: &str| -> Tensor {
        parameters
            .iter()
            .find(|(candidate, _)| candidate == name)
            .unwrap()
            .1
            .as_tensor()
            .clone()
    };
    match problem {
        "regression" => {
            let prediction = inputs
                .broadcast_mul(&find("norm.LayerNorm.weight"))
                .unwrap()
                .matmul(&find("layer.weight").t().unwrap())
                .unwrap()
                .broadcast_add(&find("layer.bias"))
                .unwrap();
            (prediction - fixture_tensor(&data["targets"]))
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
        }
        _ => {
            let logits = inputs
                .matmul(&find("classifier.weight").t().unwrap())
                .unwrap()
                .broadcast_add(&find("classifier.bias"))
                .unwrap();
            let labels: Vec<u32> = serde_json::from_value(data["labels"].clone()).unwrap();
            let labels = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
            let weights = case["use_class_weights"]
                .as_bool()
                .unwrap()
                .then(|| fixture_tensor(&data["class_weights"]));
            bertlab::model::layers::cross_entropy_smoothed(
                &logits,
                &labels,
                weights.as_ref(),
                case["label_smoothing"].as_f64().unwrap(),
            )
            .unwrap()
        }
    }
}

/// Every schedule, betas and epsilon, both decay scopes, per-tensor learning rates, clipping on
/// and off and label smoothing (with and without class weights) against torch.optim.AdamW,
/// transformers' schedule functions and torch's cross_entropy (tests/fixtures/recipes-torch.json,
/// from scripts/make_recipe_fixture.py): learning rates to 1e-12, losses to 1e-6, parameters
/// after every step of 20-30 to 1e-6, through the host update, the in-place update (bit-identical
/// to the host's) and the tensor update a GPU runs (here on the CPU).
#[test]
fn every_recipe_matches_torch() {
    use bertlab::plan::spec::{TrainSettings, WeightDecayScope};
    use bertlab::train::optimizer::{AdamWSettings, ParameterGroup};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recipes-torch.json");
    let fixture = read_json(&path);
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let problem = case["problem"].as_str().unwrap();
        let mut train = serde_json::json!({
            "max_length": 16, "batch_size": 8, "epochs": 1, "gradient_accumulation": 1,
            "early_stopping_patience": 0, "selection_metric": "macro_f1", "class_weights": "none",
            "length_bucketing": false, "precision": "fp32", "seed": 0, "warmup_ratio": 0.0,
            "learning_rate": case["peak_learning_rate"], "warmup_steps": case["warmup_steps"],
            "learning_rate_schedule": case["schedule"], "adam_beta1": case["beta1"],
            "adam_beta2": case["beta2"], "adam_epsilon": case["epsilon"],
            "weight_decay": case["weight_decay"], "weight_decay_scope": case["weight_decay_scope"],
            "max_grad_norm": case["max_grad_norm"], "label_smoothing": case["label_smoothing"],
        });
        for key in [
            "cosine_cycles",
            "polynomial_power",
            "polynomial_end_learning_rate",
            "inverse_sqrt_timescale",
        ] {
            if !case[key].is_null() {
                train[key] = case[key].clone();
            }
        }
        let train: TrainSettings = serde_json::from_value(train).unwrap();
        let total = case["total_steps"].as_u64().unwrap();
        let steps_run = case["steps_run"].as_u64().unwrap_or(total);
        let schedule = schedule::Schedule::for_run(&train, total);
        let init = fixture[problem]["init"].as_object().unwrap();
        let make = || -> Vec<(String, Var)> {
            init.iter()
                .map(|(name, value)| {
                    (
                        name.clone(),
                        Var::from_tensor(&fixture_tensor(value)).unwrap(),
                    )
                })
                .collect()
        };
        let (host, in_place, device) = (make(), make(), make());
        let scope = WeightDecayScope::parse(case["weight_decay_scope"].as_str().unwrap()).unwrap();
        let groups: Vec<ParameterGroup> = host
            .iter()
            .map(|(parameter, _)| ParameterGroup {
                weight_decay: optimizer::decays(parameter, scope),
                learning_rate_scale: case["learning_rate_scales"][parameter]
                    .as_f64()
                    .unwrap_or(1.0),
            })
            .collect();
        let settings = AdamWSettings::for_run(&train);
        let mut host_adamw = AdamW::with_groups(&host, settings, groups.clone());
        let mut in_place_adamw = AdamW::with_groups(&in_place, settings, groups.clone());
        let mut device_adamw = AdamW::with_groups(&device, settings, groups);
        let max_norm = train.max_grad_norm;
        for step in 0..steps_run {
            let index = step as usize;
            let rate = schedule.learning_rate_at(step);
            let expected_rate = case["learning_rates"][index].as_f64().unwrap();
            assert!(
                (rate - expected_rate).abs() <= 1e-12 * expected_rate.abs().max(1e-3),
                "{name} step {step}: rate {rate} vs {expected_rate}"
            );
            let loss = recipe_loss(&fixture, problem, case, &host);
            let expected_loss = case["losses"][index].as_f64().unwrap();
            let got_loss = loss.to_scalar::<f32>().unwrap() as f64;
            assert!(
                (got_loss - expected_loss).abs() < 1e-6,
                "{name} step {step}: loss {got_loss} vs {expected_loss}"
            );
            let mut gradients = flat_gradients(&loss, &host);
            let norm = optimizer::clip_global_norm(&mut gradients, max_norm);
            let expected_norm = case["norms"][index].as_f64().unwrap();
            assert!(
                (norm - expected_norm).abs() < 1e-5,
                "{name} step {step}: norm {norm} vs {expected_norm}"
            );
            host_adamw.step(&host, &gradients, rate).unwrap();

            let gradient_tensors = |parameters: &[(String, Var)]| -> Vec<Tensor> {
                let grads = recipe_loss(&fixture, problem, case, parameters)
                    .backward()
                    .unwrap();
                parameters
                    .iter()
                    .map(|(_, var)| grads.get(var).unwrap().contiguous().unwrap())
                    .collect()
            };
            let in_place_norm = in_place_adamw
                .step_tensors(&in_place, &gradient_tensors(&in_place), max_norm, rate)
                .unwrap()
                .unwrap();
            assert_eq!(
                in_place_norm.to_bits(),
                norm.to_bits(),
                "{name} step {step}"
            );
            device_adamw
                .step_on_device(&device, &gradient_tensors(&device), max_norm, rate)
                .unwrap();
            for ((_, a), (_, b)) in host.iter().zip(&in_place) {
                let a: Vec<f32> = a.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
                let b: Vec<f32> = b.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(a, b, "{name} step {step}: in place = copying");
            }
        }
        for (label, parameters) in [("host", &host), ("device", &device)] {
            let mut worst = 0f64;
            for (parameter, var) in parameters {
                let got: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
                let expected = flat_values(&case["final"][parameter]);
                assert_eq!(got.len(), expected.len());
                for (a, b) in got.iter().zip(&expected) {
                    worst = worst.max((a - b).abs() as f64);
                }
            }
            eprintln!("{name} ({label}): worst parameter difference from torch {worst:e}");
            assert!(worst < 1e-6, "{name} ({label}): worst difference {worst}");
        }
    }
}

/// A model file's tensors by name without the `bert.` prefix (the source fixture has none).
fn tensors_by_name(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(name, tensor)| {
            (
                name.trim_start_matches("bert.").to_string(),
                tensor
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            )
        })
        .collect()
}

/// `eval_every_steps`: one metrics.csv row per evaluation (the one on an epoch's last step once),
/// the kept weights are the best evaluation's, recorded as best_epoch and best_step in run.json,
/// results.json and `bertlab results`; killed mid-epoch and resumed, the run is bit-identical.
#[test]
fn validation_every_n_steps_keeps_the_best_evaluation_and_resumes_bit_for_bit() {
    let workspace = workspace();
    // 192 training examples, batches of 16: 12 steps an epoch, 36 in all; every 4 steps.
    let settings = "learning_rate = 2e-3\nbatch_size = 16\nepochs = 3\nwarmup_steps = 4\n\
                    eval_every_steps = 4";
    workspace.experiment("steps.toml", &experiment("steps", settings, ""));
    let train = |store: &str, abort_after: Option<u64>| {
        train_into(&workspace, "experiments/steps.toml", store, abort_after)
    };
    let reference = train("runs-reference", None);
    let stderr = String::from_utf8_lossy(&reference.stderr);
    assert!(reference.status.success(), "{stderr}");
    assert!(stderr.contains("epoch 1/3 step 4:"), "{stderr}");
    let directory = &run_directories(&workspace.path().join("runs-reference"))[0];
    let rows = metrics_without_time(directory);
    let steps: Vec<u64> = rows.iter().map(|row| row[6].parse().unwrap()).collect();
    let epochs: Vec<usize> = rows.iter().map(|row| row[0].parse().unwrap()).collect();
    assert_eq!(steps, [4, 8, 12, 16, 20, 24, 28, 32, 36]);
    assert_eq!(epochs, [1, 1, 1, 2, 2, 2, 3, 3, 3]);
    let f1: Vec<f64> = rows.iter().map(|row| row[4].parse().unwrap()).collect();
    let best = f1
        .iter()
        .position(|value| *value == f1.iter().copied().fold(f64::MIN, f64::max))
        .unwrap();
    let record = read_json(&directory.join("run.json"));
    assert_eq!(record["best_step"].as_u64().unwrap(), steps[best]);
    assert_eq!(
        record["best_epoch"].as_u64().unwrap() as usize,
        epochs[best]
    );
    let results = read_json(&directory.join("results.json"));
    assert_eq!(results["best_step"].as_u64().unwrap(), steps[best]);
    assert_eq!(results["epochs_run"], 3);
    assert_eq!(
        results["validation"]["macro_f1"].as_f64().unwrap(),
        f1[best],
        "the kept weights are the best evaluation's"
    );
    let table = workspace.bertlab(&["--runs", "runs-reference", "results", "--format", "csv"]);
    assert_eq!(table.status, Some(0), "{}", table.stderr);
    let mut reader = csv::Reader::from_reader(table.stdout.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = headers.iter().position(|name| name == "best_step").unwrap();
    let row = reader.records().next().unwrap().unwrap();
    assert_eq!(row[column].parse::<u64>().unwrap(), steps[best]);
    let cell =
        |name: &str| row[headers.iter().position(|header| header == name).unwrap()].to_string();
    assert_eq!(cell("eval_every_steps"), "4");
    assert_eq!(cell("warmup_steps"), "4");
    assert_eq!(
        cell("learning_rate_schedule"),
        "linear",
        "a key at its default, absent from the spec, shows its resolved value"
    );

    // Step 18 is mid-epoch 2, after the evaluation at step 16: the checkpoint of epoch 1 resumes.
    let killed = train("runs-killed", Some(18));
    assert!(!killed.status.success(), "the abort hook kills the process");
    let killed_directory = &run_directories(&workspace.path().join("runs-killed"))[0];
    assert_eq!(
        metrics_without_time(killed_directory).len(),
        4,
        "rows up to step 16"
    );
    let resumed = train("runs-killed", None);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(
        fingerprint(killed_directory),
        fingerprint(directory),
        "killed and resumed"
    );
}

/// A recipe with every new knob (freezing, layer-wise decay, label smoothing, a cosine schedule
/// with warmup steps, decay on all parameters, other betas, no clipping) still learns; the
/// frozen embeddings and lowest layer are saved exactly as loaded and have no optimizer state in
/// the checkpoint, while every other tensor trains.
#[test]
fn a_frozen_smoothed_layer_decayed_run_learns_and_keeps_the_frozen_tensors() {
    let workspace = workspace();
    let settings = "learning_rate = 5e-3\nbatch_size = 16\nepochs = 8\nwarmup_steps = 10\n\
                    learning_rate_schedule = \"cosine\"\nfreeze = 1\nlayer_learning_rate_decay = 0.8\n\
                    label_smoothing = 0.1\nweight_decay_scope = \"all\"\nadam_beta2 = 0.98\n\
                    max_grad_norm = 0";
    workspace.experiment("recipe.toml", &experiment("recipe", settings, ""));
    // Killed in epoch 2: the checkpoint of epoch 1 shows what the optimizer holds.
    let killed = bertlab_command(&workspace, &["run", "experiments/recipe.toml"])
        .env(bertlab::train::epochs::ABORT_AFTER_STEP_VARIABLE, "14")
        .output()
        .unwrap();
    assert!(
        !killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let directory = &run_directories(&workspace.path().join("runs"))[0];
    assert!(
        directory.join("checkpoint/state.safetensors").is_file(),
        "{}: {:?}",
        String::from_utf8_lossy(&killed.stderr),
        std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    let state = tensors_by_name(&directory.join("checkpoint/state.safetensors"));
    let moments: Vec<&String> = state
        .keys()
        .filter(|name| name.starts_with("adamw.first."))
        .collect();
    assert!(!moments.is_empty());
    for name in &moments {
        assert!(
            !name.contains("embeddings") && !name.contains("encoder.layer.0."),
            "{name}: a frozen tensor has optimizer state"
        );
    }
    assert!(moments.iter().any(|name| name.contains("encoder.layer.1.")));
    assert!(moments.iter().any(|name| name.contains("classifier.")));

    let output = workspace.bertlab(&["run", "experiments/recipe.toml"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    let results = read_json(&directory.join("results.json"));
    let accuracy = results["validation"]["accuracy"].as_f64().unwrap();
    let source = tensors_by_name(&workspace.path().join("models/tiny/model.safetensors"));
    let saved = tensors_by_name(&directory.join("model/model.safetensors"));
    let mut trained = 0;
    for (name, values) in &saved {
        let Some(before) = source.get(name) else {
            continue; // the new head
        };
        let frozen = name.starts_with("embeddings.") || name.starts_with("encoder.layer.0.");
        if frozen {
            assert_eq!(
                values, before,
                "{name} is frozen and must be saved unchanged"
            );
        } else {
            assert_ne!(values, before, "{name} must train");
            trained += 1;
        }
    }
    assert!(trained > 0);
    assert!(
        accuracy >= 0.9,
        "validation accuracy {accuracy}: {}",
        std::fs::read_to_string(directory.join("metrics.csv")).unwrap()
    );
}

/// With `eval_every_steps`, early stopping counts evaluations and may stop inside an epoch: the
/// run ends `patience` evaluations after its best (a tie is no improvement), keeps the best, and
/// counts the epoch in progress as run.
#[test]
fn early_stopping_counts_evaluations_and_can_stop_inside_an_epoch() {
    let workspace = workspace();
    // 12 steps an epoch; validation every 7 steps: accuracy reaches 1 and then only ties.
    let settings = "learning_rate = 2e-3\nbatch_size = 16\nepochs = 8\nwarmup_ratio = 0.1\n\
                    eval_every_steps = 7\nearly_stopping_patience = 4\nselection_metric = \"accuracy\"";
    workspace.experiment("stop.toml", &experiment("stop", settings, ""));
    let output = workspace.bertlab(&["run", "experiments/stop.toml"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    assert!(
        output
            .stderr
            .contains("early stopping: 4 evaluations without improvement of validation accuracy"),
        "{}",
        output.stderr
    );
    let directory = &run_directories(&workspace.path().join("runs"))[0];
    let rows = metrics_without_time(directory);
    let accuracy: Vec<f64> = rows.iter().map(|row| row[3].parse().unwrap()).collect();
    let steps: Vec<u64> = rows.iter().map(|row| row[6].parse().unwrap()).collect();
    let best = accuracy
        .iter()
        .position(|value| *value == accuracy.iter().copied().fold(f64::MIN, f64::max))
        .unwrap();
    assert_eq!(
        rows.len(),
        best + 1 + 4,
        "four evaluations after the best: {steps:?}"
    );
    let last_step = *steps.last().unwrap();
    assert_ne!(
        last_step % 12,
        0,
        "the stop came inside an epoch: {steps:?}"
    );
    let results = read_json(&directory.join("results.json"));
    assert_eq!(results["stopped_early"], true);
    assert_eq!(results["best_step"].as_u64().unwrap(), steps[best]);
    let last_epoch: u64 = rows.last().unwrap()[0].parse().unwrap();
    assert_eq!(results["epochs_run"].as_u64().unwrap(), last_epoch);
    assert_eq!(
        results["validation"]["accuracy"].as_f64().unwrap(),
        accuracy[best],
        "the kept weights are the best evaluation's"
    );
    assert!(directory.join("model/model.safetensors").is_file());
    eprintln!("evaluations at steps {steps:?}, accuracy {accuracy:?}");
}
