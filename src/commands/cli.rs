//! The command line as typed ([`LowArgs`], parsed by clap) and as the commands use it
//! ([`HiArgs`]: paths resolved, the store opened, colour decided). Nothing here does any work.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::PlanOptions;
use crate::report::tables::TableFormat;
use crate::store::RunStore;

const AFTER_HELP: &str = "\
Examples:
  bertlab run experiments/quickstart.toml
  bertlab plan experiments/tweets-sentiment.toml
  bertlab plan experiments/*.toml --format json
  bertlab --runs /data/runs show 3f2a9c

Exit status: 0 success, 1 the work ran but did not all succeed (a run failed), 2 an error (bad
arguments, an invalid experiment file, a missing file), 130 interrupted (SIGINT or SIGTERM).";

/// The arguments as typed.
#[derive(Debug, Parser)]
#[command(
    name = "bertlab",
    version,
    about = "Turn labelled text into the best BERT text classifier you can get, reproducibly.",
    after_help = AFTER_HELP
)]
pub struct LowArgs {
    /// The run store: one directory per run.
    #[arg(
        long,
        global = true,
        env = "BERTLAB_RUNS",
        value_name = "DIR",
        default_value = "runs",
        value_parser = store_folder
    )]
    pub runs: PathBuf,

    #[command(subcommand)]
    pub command: LowCommand,
}

#[derive(Debug, Subcommand)]
pub enum LowCommand {
    /// List the runs experiment files define, with their hashes and status in the store.
    #[command(
        after_help = "Example:\n  bertlab plan experiments/tweets-sentiment.toml --format csv > plan.csv"
    )]
    Plan(PlanArgs),
    /// Train every run of the plan, in order: done runs are skipped, interrupted runs resume
    /// from their checkpoint, failures are recorded and the sweep goes on.
    #[command(after_help = "Examples:
  bertlab run experiments/quickstart.toml
  bertlab run experiments/*.toml --fail-fast
  bertlab --runs /data/runs run experiments/tweets-sentiment.toml   (start it twice to use two machines on one store)
  bertlab run experiments/tweets-sentiment.toml --devices 0,1,2,3   (one run per GPU at a time)

Ctrl-C (or SIGTERM) writes a checkpoint and stops; a second Ctrl-C stops at once.
Exit status: 0 every run done, 1 a run failed, 2 an error, 130 interrupted.")]
    Run(RunArgs),
    /// Report what the data steps do to each distinct data setup: rows per step, classes per
    /// split, token lengths.
    #[command(
        after_help = "Examples:\n  bertlab data experiments/tweets-sentiment.toml\n  bertlab data experiments/quickstart.toml --export /tmp/quickstart-split"
    )]
    Data(DataArgs),
    /// Show one run: status and provenance, per-epoch metrics, per-class figures, confusion
    /// matrix, and its spec.
    #[command(
        after_help = "Example:\n  bertlab show 3f2a9c0d   (any unique prefix of 4 or more digits)"
    )]
    Show(ShowArgs),
    /// One row per run: hyperparameters, kept epoch, validation and test figures, time.
    #[command(after_help = "Examples:
  bertlab results
  bertlab results experiments/tweets-sentiment.toml --only-changed --sort val_macro_f1
  bertlab results --where 'val_macro_f1>0.7,learning_rate=2e-5' --format csv > results.csv
  bertlab results experiments/tweets-sentiment.toml --group-seeds
  bertlab results --format parquet --output results.parquet")]
    Results(ResultsArgs),
    /// Predict with a run's model: a label (or label set) and one probability per class for each text (or pair).
    #[command(after_help = "Examples:
  bertlab predict 99df --text \"what a smooth ride\" --text \"stuck in traffic again\"
  bertlab predict 99df --input tweets.csv --text-column text --output predictions.jsonl")]
    Predict(PredictArgs),
    /// Train a run again from its stored spec.json, in a scratch store, and compare metrics and
    /// weights with the original. Exit 0 only when reproduced.
    #[command(after_help = "Examples:
  bertlab reproduce 99df
  bertlab reproduce 99df --tolerance 1e-4   (GPU runs: weights and metrics within 1e-4)")]
    Reproduce(ReproduceArgs),
    /// What differs between runs' specs, and their figures side by side.
    #[command(after_help = "Example:\n  bertlab compare 99df 3f2a 8464")]
    Compare(CompareArgs),
    /// One self-contained HTML page: the results table, learning curves, the best run's
    /// confusion matrix; also writes curves.svg into every finished run's directory.
    #[command(after_help = "Examples:
  bertlab report --output report.html
  bertlab report experiments/tweets-sentiment.toml --output tweets.html")]
    Report(ReportArgs),
    /// Measure training and inference speed and peak memory on an experiment's first run: the
    /// same work `scripts/bench_pytorch.py` measures for PyTorch (`scripts/bench.sh` runs both).
    #[command(after_help = "Examples:
  bertlab bench experiments/quickstart.toml --threads 2
  bertlab bench experiments/quickstart.toml --steps 100 --format json > bertlab.json
  scripts/bench.sh experiments/quickstart.toml   (bertlab and PyTorch side by side)

Training: optimizer steps as `bertlab run` takes them, on batches of consecutive training
examples in file order, each padded to its longest row. Inference: the validation split in
batches of consecutive examples. Nothing is written to the run store.")]
    Bench(BenchArgs),
    /// Check that a device (a GPU) computes what the CPU computes on a small BERT model:
    /// logits and every gradient in f64, f32 and bf16, AdamW steps, dropout masks.
    #[command(after_help = "Examples:
  bertlab device-check tests/fixtures/tiny-bert --device cuda:0
  bertlab device-check tests/fixtures/tiny-bert   (auto: the first GPU, else the CPU)

Exit status: 0 every check passed, 1 a check failed, 2 an error.")]
    DeviceCheck(DeviceCheckArgs),
    /// Run sweeps on a Slurm cluster: a job array of workers sharing the run store.
    #[command(subcommand)]
    Slurm(SlurmCommand),
}

#[derive(Debug, Subcommand)]
pub enum SlurmCommand {
    /// Submit a job array whose tasks each run `bertlab run` on the same experiments and store;
    /// the store's claims share the runs out. Prints the job id.
    #[command(after_help = "Examples:
  bertlab --runs /shared/runs slurm submit experiments/tweets-sentiment.toml --workers 8 --gpus-per-worker 1 --time 04:00:00 --partition gpu
  bertlab slurm submit experiments/tweets-search.toml --workers 4 --cpus-per-worker 16 --sbatch-arg=--exclusive
  bertlab slurm submit experiments/quickstart.toml --dry-run   (print the job script, write nothing)

Each task gets Slurm's warning signal before its time limit: it checkpoints its run, stops and
goes back in the queue; the run resumes from its checkpoint (on CPU the result is bit-identical to
an uninterrupted run). The submission folder <store>/slurm/<time>-<id>/ holds job.sh,
submission.json and one log per task. The store must be on storage every node mounts, with
file locks shared between nodes (docs/cluster.md).
Exit status: 0 submitted, 2 an error (Slurm's commands missing, sbatch refused, a bad file).")]
    Submit(SlurmSubmitArgs),
    /// The array's tasks (from scontrol) beside the runs each trained or is training, and the
    /// sweep's progress.
    #[command(after_help = "Examples:
  bertlab slurm status          (the newest submission in the store)
  bertlab slurm status 4211     (by job id, or by submission folder name)")]
    Status(SlurmStatusArgs),
    /// Cancel a submission's job (or one task, `JOB_TASK`): runs being trained checkpoint and
    /// stop as `interrupted`; `bertlab run` or a new submission resumes them.
    #[command(after_help = "Examples:
  bertlab slurm cancel 4211
  bertlab slurm cancel 4211_3")]
    Cancel(SlurmCancelArgs),
}

#[derive(Debug, Args)]
pub struct SlurmSubmitArgs {
    /// Experiment files (TOML).
    #[arg(required = true, value_name = "EXPERIMENT.toml")]
    pub experiments: Vec<PathBuf>,

    /// Array tasks, each a worker training one run at a time (one run per GPU with
    /// --gpus-per-worker above 1).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub workers: u32,

    /// The partition (sbatch --partition).
    #[arg(long, value_name = "P")]
    pub partition: Option<String>,

    /// GPUs per worker (sbatch --gres=gpu:G); the worker trains one run per GPU. Needs a build
    /// with the `cuda` feature.
    #[arg(long, default_value_t = 0, value_name = "G")]
    pub gpus_per_worker: u32,

    /// CPUs per worker (sbatch --cpus-per-task); the matrix products use that many threads.
    #[arg(long, value_name = "C", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus_per_worker: Option<u32>,

    /// Time limit of each task, as sbatch takes it: MM:SS, HH:MM:SS or D-HH:MM:SS.
    #[arg(long, value_name = "HH:MM:SS", value_parser = parse_time_limit)]
    pub time: Option<String>,

    /// The account to charge (sbatch --account).
    #[arg(long, value_name = "A")]
    pub account: Option<String>,

    /// One more #SBATCH line, as given (repeatable): --sbatch-arg=--exclusive
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,

    /// Seconds before the time limit that Slurm warns a task: time for a step and a checkpoint.
    #[arg(long, default_value_t = crate::sweep::slurm::script::DEFAULT_SIGNAL_BEFORE_SECONDS, value_name = "S", value_parser = clap::value_parser!(u32).range(10..=65535))]
    pub signal_before: u32,

    /// Print the job script to stdout and write or submit nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Submit several workers even where the mount table says the store's file locks stay on
    /// each node: you checked that they are shared (docs/cluster.md shows how).
    #[arg(long)]
    pub trust_store_locks: bool,

    /// Passed on to each worker's `bertlab run`.
    #[arg(long)]
    pub fail_fast: bool,

    /// Passed on to each worker's `bertlab run`.
    #[arg(long)]
    pub retry_failed: bool,

    /// Refuse grids with more runs than this (also passed on to the workers).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_runs: usize,
}

#[derive(Debug, Args)]
pub struct SlurmStatusArgs {
    /// The job id, or the submission folder's name; default: the newest submission.
    #[arg(value_name = "JOB")]
    pub job: Option<String>,
}

#[derive(Debug, Args)]
pub struct SlurmCancelArgs {
    /// The job id (`4211`), or one task of it (`4211_3`).
    #[arg(value_name = "JOB")]
    pub job: String,
}

/// `--retry-failed-before`: an RFC 3339 time.
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&chrono::Utc))
        .map_err(|error| {
            format!("`{text}` is not an RFC 3339 time like 2026-12-01T16:00:00Z: {error}")
        })
}

/// `--time`: a time limit as sbatch takes it (`sweep::slurm::script::time_limit_seconds`).
fn parse_time_limit(text: &str) -> Result<String, String> {
    match crate::sweep::slurm::script::time_limit_seconds(text) {
        Some(_) => Ok(text.to_string()),
        None => Err(format!(
            "`{text}` is not a time limit: give MM:SS, HH:MM:SS or D-HH:MM:SS (as sbatch --time takes it)"
        )),
    }
}

#[derive(Debug, Args)]
pub struct DeviceCheckArgs {
    /// A small BERT model directory (config.json, model.safetensors).
    #[arg(value_name = "MODEL_DIR")]
    pub model: PathBuf,

    /// The device to check against the CPU (`cuda`, `cuda:N`, `cpu`, `auto`).
    #[arg(long, default_value = "auto", value_name = "DEVICE", value_parser = parse_device)]
    pub device: crate::plan::spec::DeviceRequest,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The experiment file (TOML); its first planned run is measured.
    #[arg(value_name = "EXPERIMENT.toml")]
    pub experiment: PathBuf,

    /// Timed training steps.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub steps: usize,

    /// Untimed training steps before them.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub warmup_steps: usize,

    /// Training examples per step (default: the run's `batch_size`).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Validation examples per forward pass when measuring inference.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub inference_batch_size: usize,

    /// Measure inference on the first N validation examples only (default: all of them).
    #[arg(long, value_name = "N")]
    pub inference_examples: Option<usize>,

    /// Worker threads (default: RAYON_NUM_THREADS, else every core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Make every example exactly N tokens long (its own ids repeated, no padding): fixed-shape
    /// work, as GPU benchmarks usually measure (batch 32 x 128 tokens, say). It may exceed the
    /// run's max_length, up to the model's position embeddings.
    #[arg(long, value_name = "N")]
    pub sequence_length: Option<usize>,

    /// Measure on this device instead of the run's `train.device` (`cpu`, `cuda`, `cuda:N`,
    /// `auto`).
    #[arg(long, value_name = "DEVICE", value_parser = parse_device)]
    pub device: Option<crate::plan::spec::DeviceRequest>,

    /// Measure with this matrix-product precision instead of the run's `train.precision`.
    #[arg(long, value_name = "fp32|bf16", value_parser = parse_precision)]
    pub precision: Option<crate::plan::spec::Precision>,

    /// Output: a text summary, or JSON for scripts (`scripts/bench_compare.py`).
    #[arg(long, value_enum, default_value_t)]
    pub format: BenchFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Experiment files (TOML).
    #[arg(required = true, value_name = "EXPERIMENT.toml")]
    pub experiments: Vec<PathBuf>,

    /// Output format: an aligned table, or JSON / CSV for scripts (with 64-digit hashes).
    #[arg(long, value_enum, default_value_t)]
    pub format: TableFormat,

    /// Refuse grids with more runs than this.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_runs: usize,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Experiment files (TOML).
    #[arg(required = true, value_name = "EXPERIMENT.toml")]
    pub experiments: Vec<PathBuf>,

    /// Stop at the first failed run instead of going on with the sweep.
    #[arg(long)]
    pub fail_fast: bool,

    /// Train runs recorded as failed again (by default they are reported and skipped).
    #[arg(long)]
    pub retry_failed: bool,

    /// Train again the runs that failed before this time (RFC 3339, like
    /// 2026-12-01T16:00:00Z), not those that failed since: what `bertlab slurm submit
    /// --retry-failed` gives its workers, so each failed run is retried once.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub retry_failed_before: Option<chrono::DateTime<chrono::Utc>>,

    /// Train on these GPUs, one run per GPU at a time, instead of each run's `train.device`:
    /// indices like `0,1,2,3` (or `cuda:0,cuda:1`), or `all`. Needs a build with the `cuda`
    /// feature.
    #[arg(long, value_name = "LIST", value_parser = parse_devices)]
    pub devices: Option<DeviceList>,

    /// Refuse grids with more runs than this.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_runs: usize,
}

/// Which runs `results` and `report` show: the store's, or those experiment files plan.
#[derive(Debug, Args)]
pub struct RunSelectionArgs {
    /// Only the runs these experiment files plan (runs not trained yet show as `new`).
    #[arg(value_name = "EXPERIMENT.toml")]
    pub experiments: Vec<PathBuf>,

    /// Only the runs of the experiment with this name.
    #[arg(long, value_name = "NAME")]
    pub experiment: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    #[command(flatten)]
    pub selection: RunSelectionArgs,

    /// Sort by a column, best first for metrics (e.g. val_macro_f1, val_loss, learning_rate).
    #[arg(long, value_name = "COLUMN")]
    pub sort: Option<String>,

    /// Keep rows meeting every condition: `column op value` joined by `,` (op: = != < <= > >=).
    #[arg(long = "where", value_name = "EXPR")]
    pub where_: Option<String>,

    /// Show only the hyperparameters that differ between the rows (the table and md formats do
    /// so unless given --all-columns).
    #[arg(long)]
    pub only_changed: bool,

    /// In the table and md formats, show every hyperparameter, constant ones included.
    #[arg(long, conflicts_with = "only_changed")]
    pub all_columns: bool,

    /// Fold runs that differ only in `seed` into one row: mean, standard deviation and n.
    #[arg(long)]
    pub group_seeds: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ResultsFormat,

    /// Write to this file instead of stdout (needed for parquet on a terminal).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Output formats of `bertlab results`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ResultsFormat {
    #[default]
    Table,
    Csv,
    Md,
    Json,
    Parquet,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The run whose model predicts (a hash prefix of 4 digits or more).
    #[arg(value_name = "HASH")]
    pub hash: String,

    /// A text to classify (repeatable); results go to stdout.
    #[arg(long = "text", value_name = "TEXT", conflicts_with = "input")]
    pub texts: Vec<String>,

    /// A file of texts (.csv .tsv .jsonl .parquet).
    #[arg(long, value_name = "FILE", requires = "output")]
    pub input: Option<PathBuf>,

    /// The column of `--input` holding the texts.
    #[arg(long, default_value = "text", value_name = "NAME")]
    pub text_column: String,

    /// A pair task's second text, matched by position with `--text` (repeatable: one per
    /// `--text`).
    #[arg(long = "text-pair", value_name = "TEXT", conflicts_with = "input")]
    pub text_pairs: Vec<String>,

    /// A pair task: the column of `--input` holding each example's second text.
    #[arg(long, value_name = "NAME", requires = "input")]
    pub text_pair_column: Option<String>,

    /// Where to write predictions: .csv or .jsonl.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Texts per forward pass.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch_size: usize,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Two or more runs (hash prefixes of 4 digits or more).
    #[arg(required = true, num_args = 2.., value_name = "HASH")]
    pub hashes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub selection: RunSelectionArgs,

    /// The HTML file to write.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// The run to reproduce (a hash prefix of 4 digits or more).
    #[arg(value_name = "HASH")]
    pub hash: String,

    /// Accept differences up to this (absolute, on weights and metrics) instead of exact
    /// equality: for GPU runs.
    #[arg(long, value_name = "X")]
    pub tolerance: Option<f64>,

    /// Keep the scratch store here instead of a temporary folder.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Experiment files (TOML).
    #[arg(required = true, value_name = "EXPERIMENT.toml")]
    pub experiments: Vec<PathBuf>,

    /// Output format: text for people, or JSON.
    #[arg(long, value_enum, default_value_t)]
    pub format: ReportFormat,

    /// Also write each data setup's splits as CSV files (`train.csv`, `validation.csv`,
    /// `test.csv`: row, text, label) into DIR (DIR/setup-N/ when there are several setups), for
    /// other tools to train on exactly the same examples.
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
}

/// Output formats of reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A run hash, or any unique prefix of it (4 digits or more).
    #[arg(value_name = "HASH")]
    pub hash: String,
}

/// The settings the commands run with.
#[derive(Debug)]
pub struct HiArgs {
    pub store: RunStore,
    /// Colour on stderr: a terminal, and `NO_COLOR` unset.
    pub color_stderr: bool,
    pub command: HiCommand,
}

#[derive(Debug)]
pub enum HiCommand {
    Plan {
        experiments: Vec<PathBuf>,
        format: TableFormat,
        options: PlanOptions,
    },
    Data {
        experiments: Vec<PathBuf>,
        format: ReportFormat,
        export: Option<PathBuf>,
    },
    Run {
        experiments: Vec<PathBuf>,
        plan_options: PlanOptions,
        options: crate::sweep::SweepOptions,
        /// Draw progress bars (stderr is a terminal).
        progress_bars: bool,
    },
    Show {
        hash_prefix: String,
    },
    Results(ResultsArgs),
    Predict(PredictArgs),
    Reproduce(ReproduceArgs),
    Compare(CompareArgs),
    Report(ReportArgs),
    Bench(BenchArgs),
    DeviceCheck(DeviceCheckArgs),
    SlurmSubmit {
        experiments: Vec<PathBuf>,
        plan_options: PlanOptions,
        options: crate::sweep::slurm::script::SubmitOptions,
        mode: crate::commands::slurm::SubmitMode,
    },
    SlurmStatus {
        job: Option<String>,
    },
    SlurmCancel {
        job: String,
    },
}

/// Whether to colour what goes to stderr: only for a terminal, and never when `NO_COLOR` is set
/// to anything non-empty (<https://no-color.org>).
pub fn stderr_wants_color() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

impl HiArgs {
    pub fn from_low(low: LowArgs) -> HiArgs {
        let command = match low.command {
            LowCommand::Plan(args) => HiCommand::Plan {
                experiments: args.experiments,
                format: args.format,
                options: PlanOptions {
                    max_runs: args.max_runs,
                },
            },
            LowCommand::Data(args) => HiCommand::Data {
                experiments: args.experiments,
                format: args.format,
                export: args.export,
            },
            LowCommand::Run(args) => HiCommand::Run {
                experiments: args.experiments,
                plan_options: PlanOptions {
                    max_runs: args.max_runs,
                },
                options: crate::sweep::SweepOptions {
                    fail_fast: args.fail_fast,
                    retry_failed: args.retry_failed || args.retry_failed_before.is_some(),
                    retry_failed_before: args.retry_failed_before,
                    cache_folder: crate::tokenize::preprocess::default_cache_folder(),
                    devices: args.devices.map(|list| list.0).unwrap_or_default(),
                },
                progress_bars: std::io::stderr().is_terminal(),
            },
            LowCommand::Show(args) => HiCommand::Show {
                hash_prefix: args.hash,
            },
            LowCommand::Results(args) => HiCommand::Results(args),
            LowCommand::Predict(args) => HiCommand::Predict(args),
            LowCommand::Reproduce(args) => HiCommand::Reproduce(args),
            LowCommand::Compare(args) => HiCommand::Compare(args),
            LowCommand::Report(args) => HiCommand::Report(args),
            LowCommand::Bench(args) => HiCommand::Bench(args),
            LowCommand::DeviceCheck(args) => HiCommand::DeviceCheck(args),
            LowCommand::Slurm(SlurmCommand::Submit(args)) => {
                let mut run_flags = Vec::new();
                if args.fail_fast {
                    run_flags.push("--fail-fast".to_string());
                }
                if args.max_runs != PlanOptions::default().max_runs {
                    run_flags.push(format!("--max-runs={}", args.max_runs));
                }
                HiCommand::SlurmSubmit {
                    experiments: args.experiments,
                    plan_options: PlanOptions {
                        max_runs: args.max_runs,
                    },
                    options: crate::sweep::slurm::script::SubmitOptions {
                        workers: args.workers as usize,
                        partition: args.partition,
                        account: args.account,
                        time: args.time,
                        gpus_per_worker: args.gpus_per_worker as usize,
                        cpus_per_worker: args.cpus_per_worker.map(|cpus| cpus as usize),
                        signal_before_seconds: args.signal_before,
                        sbatch_args: args.sbatch_args,
                        retry_failed: args.retry_failed,
                        run_flags,
                    },
                    mode: crate::commands::slurm::SubmitMode {
                        dry_run: args.dry_run,
                        trust_store_locks: args.trust_store_locks,
                    },
                }
            }
            LowCommand::Slurm(SlurmCommand::Status(args)) => {
                HiCommand::SlurmStatus { job: args.job }
            }
            LowCommand::Slurm(SlurmCommand::Cancel(args)) => {
                HiCommand::SlurmCancel { job: args.job }
            }
        };
        HiArgs {
            store: RunStore::new(low.runs),
            color_stderr: stderr_wants_color(),
            command,
        }
    }
}

/// The GPUs of `--devices`.
#[derive(Clone, Debug)]
pub struct DeviceList(pub Vec<crate::plan::spec::DeviceRequest>);

fn parse_devices(text: &str) -> Result<DeviceList, String> {
    crate::train::device::parse_device_list(text)
        .map(DeviceList)
        .map_err(|error| format!("{error:#}"))
}

fn parse_device(text: &str) -> Result<crate::plan::spec::DeviceRequest, String> {
    crate::plan::spec::DeviceRequest::parse(text)
        .ok_or_else(|| format!("unknown device {text:?}: expected auto, cpu, cuda or cuda:N"))
}

fn parse_precision(text: &str) -> Result<crate::plan::spec::Precision, String> {
    crate::plan::spec::Precision::parse(text)
        .ok_or_else(|| format!("unknown precision {text:?}: expected fp32 or bf16"))
}

/// `--runs DIR` (or `BERTLAB_RUNS`): a folder, new or existing. A path that is, or runs through, a
/// file is refused here, naming the flag, rather than later as "Not a directory" on a run file.
fn store_folder(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    let existing = path.ancestors().find(|ancestor| {
        !ancestor.as_os_str().is_empty() && std::fs::symlink_metadata(ancestor).is_ok()
    });
    match existing {
        Some(ancestor) if !ancestor.is_dir() => Err(format!(
            "{} is not a folder, and the run store (--runs or BERTLAB_RUNS) is one: give a folder, new or existing (default: ./runs)",
            ancestor.display()
        )),
        _ => Ok(path),
    }
}
