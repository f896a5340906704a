//! The command line as typed ([`LowArgs`], parsed by clap) and as the commands use it
//! ([`HiArgs`]: paths resolved, the store opened, colour decided). Nothing here does any work.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::PlanOptions;
use crate::report::TableFormat;
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
        default_value = "runs"
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

Ctrl-C (or SIGTERM) writes a checkpoint and stops; a second Ctrl-C stops at once.
Exit status: 0 every run done, 1 a run failed, 2 an error, 130 interrupted.")]
    Run(RunArgs),
    /// Report what the data steps do to each distinct data setup: rows per step, classes per
    /// split, token lengths.
    #[command(
        after_help = "Examples:\n  bertlab data experiments/tweets-sentiment.toml\n  bertlab data experiments/quickstart.toml --export /tmp/quickstart-split"
    )]
    Data(DataArgs),
    /// Show one run's status and spec.
    #[command(
        after_help = "Example:\n  bertlab show 3f2a9c0d   (any unique prefix of 4 or more digits)"
    )]
    Show(ShowArgs),
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

    /// Refuse grids with more runs than this.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_runs: usize,
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
                    retry_failed: args.retry_failed,
                    cache_folder: crate::preprocess::default_cache_folder(),
                },
                progress_bars: std::io::stderr().is_terminal(),
            },
            LowCommand::Show(args) => HiCommand::Show {
                hash_prefix: args.hash,
            },
        };
        HiArgs {
            store: RunStore::new(low.runs),
            color_stderr: stderr_wants_color(),
            command,
        }
    }
}
