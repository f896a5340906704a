//! The keys of the experiment file, format version 1: for each key its section, type, allowed range,
//! default, whether `[grid]` may sweep it, and a one-line meaning.
//!
//! This table is the single source of truth: the parser checks types and ranges against it, the
//! resolver fills defaults from it, and a test checks that `docs/experiment-file.md` documents every
//! key it lists. Cross-key rules (fractions that must add up to less than 1, `max_length` against the
//! model) live in `plan`.

use crate::experiment::setting::format_float;
use std::fmt;

/// The tables of an experiment file. `Top` holds the keys outside any table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    Top,
    Data,
    Labels,
    Model,
    Train,
    Grid,
    /// `[search]`: the search's own settings (none of them enters a run's spec).
    Search,
    /// `[search.pruner]`.
    SearchPruner,
}

impl Section {
    pub const TABLES: [Section; 6] = [
        Section::Data,
        Section::Labels,
        Section::Model,
        Section::Train,
        Section::Grid,
        Section::Search,
    ];

    /// The table's name as written in the file (`data` for `[data]`); empty for the top level.
    pub fn name(self) -> &'static str {
        match self {
            Section::Top => "",
            Section::Data => "data",
            Section::Labels => "labels",
            Section::Model => "model",
            Section::Train => "train",
            Section::Grid => "grid",
            Section::Search => "search",
            Section::SearchPruner => "search.pruner",
        }
    }

    pub fn from_name(name: &str) -> Option<Section> {
        Section::TABLES
            .into_iter()
            .find(|section| section.name() == name)
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Top => f.write_str("the top level"),
            other => write!(f, "[{}]", other.name()),
        }
    }
}

/// What a key's value may be.
#[derive(Clone, Copy, Debug)]
pub enum ValueKind {
    /// Any string.
    Text,
    /// An experiment name: `[a-z0-9][a-z0-9._-]*`.
    Name,
    /// A path, relative to the folder of the experiment file.
    Path,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// `"auto"`, `"cpu"`, `"cuda"` or `"cuda:N"`.
    Device,
    Bool,
    /// An integer in `min..=max`.
    Integer {
        min: i64,
        max: i64,
    },
    /// A finite float within the bounds; an integer literal is accepted too.
    Float {
        min: Bound,
        max: Bound,
    },
    /// `"none"`, `"embeddings"` or an integer `N >= 1` (the embeddings and the lowest N layers).
    Freeze,
}

/// One end of a float range.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    Unbounded,
    Inclusive(f64),
    Exclusive(f64),
}

/// The value a key takes when the file does not set it.
#[derive(Clone, Copy, Debug)]
pub enum Default {
    /// The file must set the key.
    Required,
    /// The key is optional and has no value when absent.
    Absent,
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(&'static str),
    /// Read from the model directory's `config.json` (see `experiment::resolve`).
    FromModel(&'static str),
}

/// One key of the experiment file.
#[derive(Debug)]
pub struct Key {
    pub section: Section,
    pub name: &'static str,
    pub kind: ValueKind,
    pub default: Default,
    /// Whether `[grid]` may sweep this key.
    pub gridded: bool,
    /// Whether the key takes part in the run hash (directly, or through the file it names).
    pub hashed: bool,
    pub meaning: &'static str,
}

impl Key {
    /// `train.learning_rate`; top-level keys have no prefix (`name`).
    pub fn full_name(&self) -> String {
        match self.section {
            Section::Top => self.name.to_string(),
            section => format!("{}.{}", section.name(), self.name),
        }
    }

    /// How the key is shown in tables: `learning_rate` for `[train]` keys, `model.path` otherwise.
    pub fn column_name(&self) -> String {
        match self.section {
            Section::Train | Section::Top => self.name.to_string(),
            _ => self.full_name(),
        }
    }
}

pub const ENCODINGS: &[&str] = &["utf8", "utf8-lossy"];
pub const UNKNOWN_LABEL_POLICIES: &[&str] = &["error", "drop"];
pub const DATA_FORMATS: &[&str] = &["csv", "tsv", "parquet", "jsonl"];
pub const CONFLICTING_LABEL_POLICIES: &[&str] = &["drop", "majority"];
pub const SELECTION_METRICS: &[&str] = &[
    "macro_f1",
    "accuracy",
    "loss",
    "micro_f1",
    "samples_f1",
    "subset_accuracy",
    "hamming_loss",
];
pub const LABEL_FORMATS: &[&str] = &["single", "multi"];
pub const CLASS_WEIGHTS: &[&str] = &["none", "balanced"];
pub const PRECISIONS: &[&str] = &["fp32", "bf16"];
pub const LEARNING_RATE_SCHEDULES: &[&str] =
    &["linear", "constant", "cosine", "polynomial", "inverse_sqrt"];
pub const WEIGHT_DECAY_SCOPES: &[&str] = &["standard", "all"];
/// The strings `freeze` takes besides an integer.
pub const FREEZE_WORDS: &[&str] = &["none", "embeddings"];

const FRACTION: ValueKind = ValueKind::Float {
    min: Bound::Inclusive(0.0),
    max: Bound::Exclusive(1.0),
};
const PROBABILITY: ValueKind = FRACTION;
const SEED: ValueKind = ValueKind::Integer {
    min: 0,
    max: i64::MAX,
};

macro_rules! key {
    ($section:ident, $name:literal, $kind:expr, $default:expr, grid: $grid:literal, hashed: $hashed:literal, $meaning:literal) => {
        Key {
            section: Section::$section,
            name: $name,
            kind: $kind,
            default: $default,
            gridded: $grid,
            hashed: $hashed,
            meaning: $meaning,
        }
    };
}

/// Every key of format version 1 except the tables `[labels]`, `[grid]` and `[[data.filter]]`,
/// whose shapes are free-form and checked by the parser.
pub static KEYS: &[Key] = &[
    key!(Top, "name", ValueKind::Name, Default::Required, grid: false, hashed: false,
        "The experiment's name, shown in plans and results."),
    key!(Top, "description", ValueKind::Text, Default::Absent, grid: false, hashed: false,
        "Free text for people."),
    key!(Data, "train", ValueKind::Path, Default::Required, grid: true, hashed: true,
        "The training data file (.csv .tsv .parquet .jsonl); its bytes are hashed."),
    key!(Data, "validation", ValueKind::Path, Default::Absent, grid: true, hashed: true,
        "A separate validation file; when absent, validation rows are split from `train`."),
    key!(Data, "test", ValueKind::Path, Default::Absent, grid: true, hashed: true,
        "A separate test file; when absent, `test_fraction` of `train` is held out."),
    key!(Data, "format", ValueKind::Choice(DATA_FORMATS), Default::Absent, grid: false, hashed: true,
        "The format of every data file; when absent, taken from each file's extension."),
    key!(Data, "text_column", ValueKind::Text, Default::Text("text"), grid: true, hashed: true,
        "The column holding the text to classify."),
    key!(Data, "label_column", ValueKind::Text, Default::Text("label"), grid: true, hashed: true,
        "The column holding the raw label (with `label_format = \"multi\"`: the example's label set)."),
    key!(Data, "text_pair_column", ValueKind::Text, Default::Absent, grid: true, hashed: true,
        "The column holding each example's second text: the model reads the pair as transformers' `tokenizer(text, text_pair)` gives it (BERT: `[CLS] a [SEP] b [SEP]` with token types 0 and 1; RoBERTa: `<s> a </s></s> b </s>`), truncated `longest_first` to `max_length`. Unset: one text per example."),
    key!(Data, "label_format", ValueKind::Choice(LABEL_FORMATS), Default::Text("single"), grid: true, hashed: true,
        "`single`: one label per example (softmax, cross-entropy). `multi`: a set of labels per example, possibly empty (a sigmoid per class, binary cross-entropy): a delimited string (`label_separator`), or a list of strings in JSON Lines and Parquet."),
    key!(Data, "label_separator", ValueKind::Text, Default::Text("|"), grid: true, hashed: true,
        "With `label_format = \"multi\"`: the character(s) between the labels of a text column's label set (`topic_a|topic_b`). List columns need none."),
    key!(Data, "encoding", ValueKind::Choice(ENCODINGS), Default::Text("utf8"), grid: true, hashed: true,
        "`utf8`: invalid UTF-8 is an error; `utf8-lossy`: invalid bytes become U+FFFD and are counted."),
    key!(Data, "drop_empty", ValueKind::Bool, Default::Bool(true), grid: true, hashed: true,
        "Drop rows whose text is empty after stripping whitespace."),
    key!(Data, "drop_duplicates", ValueKind::Bool, Default::Bool(true), grid: true, hashed: true,
        "Drop rows that repeat an earlier row's text and label."),
    key!(Data, "conflicting_labels", ValueKind::Choice(CONFLICTING_LABEL_POLICIES), Default::Text("drop"), grid: true, hashed: true,
        "The same text with different labels: `drop` every such row, or keep the `majority` label (ties: drop)."),
    key!(Data, "unknown_labels", ValueKind::Choice(UNKNOWN_LABEL_POLICIES), Default::Text("error"), grid: true, hashed: true,
        "Rows whose label is not in `[labels]`: `error` lists them, `drop` drops and counts them."),
    key!(Data, "validation_fraction", FRACTION, Default::Float(0.1), grid: true, hashed: true,
        "Share of `train` held out for validation when there is no `validation` file; must be above 0 then."),
    key!(Data, "test_fraction", FRACTION, Default::Float(0.0), grid: true, hashed: true,
        "Share of `train` held out for testing when there is no `test` file."),
    key!(Data, "split_seed", SEED, Default::Integer(0), grid: true, hashed: true,
        "Seed of the train/validation/test split."),
    key!(Data, "stratify", ValueKind::Bool, Default::Bool(true), grid: true, hashed: true,
        "Split each class in the same proportions."),
    key!(Data, "max_train_examples", ValueKind::Integer { min: 1, max: i64::MAX }, Default::Absent, grid: true, hashed: true,
        "Train on at most this many examples: a seeded (`split_seed`), stratified sample of the training split; validation and test are unaffected. Unset: all."),
    key!(Model, "path", ValueKind::Path, Default::Absent, grid: true, hashed: true,
        "A Hugging Face model directory (config.json, tokenizer, weights); its files are hashed, not its path. Set `path` or `hub`, not both."),
    key!(Model, "hub", ValueKind::Text, Default::Absent, grid: true, hashed: true,
        "A model by its Hugging Face id (`org/name`, or a legacy bare name such as `bert-base-uncased`), read offline from the local Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`, as huggingface_hub finds it); its files are hashed, not its name, so the same files by `hub` or by `path` give the same run hash."),
    key!(Model, "revision", ValueKind::Text, Default::Absent, grid: true, hashed: true,
        "With `hub`: the branch, tag or commit of the model in the cache (unset: `main`)."),
    key!(Model, "classifier_dropout", PROBABILITY, Default::FromModel("classifier_dropout, else hidden_dropout_prob; DistilBERT: seq_classif_dropout; DeBERTa: cls_dropout, else hidden_dropout_prob"), grid: true, hashed: true,
        "Dropout in the classification head, as the family's transformers `*ForSequenceClassification` (docs/model.md)."),
    key!(Model, "hidden_dropout", PROBABILITY, Default::FromModel("hidden_dropout_prob; DistilBERT: dropout"), grid: true, hashed: true,
        "Dropout on embeddings and on every encoder sub-layer's output."),
    key!(Model, "attention_dropout", PROBABILITY, Default::FromModel("attention_probs_dropout_prob; DistilBERT: attention_dropout"), grid: true, hashed: true,
        "Dropout on attention probabilities."),
    key!(Train, "max_length", ValueKind::Integer { min: 3, max: 1_000_000 }, Default::Integer(128), grid: true, hashed: true,
        "Tokens per text, [CLS] and [SEP] included; longer texts are truncated. At most the model's max_position_embeddings."),
    key!(Train, "batch_size", ValueKind::Integer { min: 1, max: 1_000_000 }, Default::Integer(16), grid: true, hashed: true,
        "Texts per forward pass."),
    key!(Train, "learning_rate", ValueKind::Float { min: Bound::Exclusive(0.0), max: Bound::Inclusive(1.0) }, Default::Float(2e-5), grid: true, hashed: true,
        "Peak learning rate of AdamW, reached at the end of the warmup; `learning_rate_schedule` shapes it afterwards."),
    key!(Train, "epochs", ValueKind::Integer { min: 1, max: 100_000 }, Default::Integer(3), grid: true, hashed: true,
        "Passes over the training split."),
    key!(Train, "learning_rate_schedule", ValueKind::Choice(LEARNING_RATE_SCHEDULES), Default::Text("linear"), grid: true, hashed: true,
        "After the warmup (when there is one; it rises linearly from 0): `linear` decays to 0 at the last step, `constant` stays at the peak (transformers' `constant_with_warmup`), `cosine` follows `cosine_cycles` half-waves of a cosine, `polynomial` decays as `polynomial_power` to `polynomial_end_learning_rate`, `inverse_sqrt` decays as 1/sqrt(step) over `inverse_sqrt_timescale`; transformers' formulas (`docs/model.md`)."),
    key!(Train, "cosine_cycles", ValueKind::Float { min: Bound::Exclusive(0.0), max: Bound::Unbounded }, Default::Float(0.5), grid: true, hashed: true,
        "`cosine` only: the number of cosine waves after the warmup; 0.5 decays from the peak to 0 once."),
    key!(Train, "polynomial_power", ValueKind::Float { min: Bound::Exclusive(0.0), max: Bound::Unbounded }, Default::Float(1.0), grid: true, hashed: true,
        "`polynomial` only: the power of the decay; 1 is linear."),
    key!(Train, "polynomial_end_learning_rate", ValueKind::Float { min: Bound::Inclusive(0.0), max: Bound::Exclusive(1.0) }, Default::Float(1e-7), grid: true, hashed: true,
        "`polynomial` only: the learning rate at the last step and after; below `learning_rate`."),
    key!(Train, "inverse_sqrt_timescale", ValueKind::Integer { min: 1, max: i64::MAX }, Default::Absent, grid: true, hashed: true,
        "`inverse_sqrt` only: the rate after the warmup is peak / sqrt((step + timescale - warmup) / timescale). Unset: the warmup steps, or 10,000 without a warmup."),
    key!(Train, "warmup_steps", ValueKind::Integer { min: 0, max: i64::MAX }, Default::Integer(0), grid: true, hashed: true,
        "Optimizer steps spent warming the learning rate up linearly from 0; not together with `warmup_ratio`."),
    key!(Train, "warmup_ratio", FRACTION, Default::Float(0.0), grid: true, hashed: true,
        "Share of the optimizer steps spent warming the learning rate up linearly from 0 (rounded up to whole steps); not together with `warmup_steps`."),
    key!(Train, "weight_decay", ValueKind::Float { min: Bound::Inclusive(0.0), max: Bound::Inclusive(1.0) }, Default::Float(0.01), grid: true, hashed: true,
        "Decoupled (AdamW) weight decay: each step multiplies a decayed parameter by 1 - learning rate x weight_decay. `weight_decay_scope` says which parameters decay."),
    key!(Train, "weight_decay_scope", ValueKind::Choice(WEIGHT_DECAY_SCOPES), Default::Text("standard"), grid: true, hashed: true,
        "`standard`: every weight matrix and embedding decays, no bias and no normalisation weight (LayerNorm, DistilBERT's `*_layer_norm`, ModernBERT's `*norm`: transformers' Trainer); `all`: every parameter, as a plain `torch.optim.AdamW(model.parameters())`."),
    key!(Train, "adam_beta1", ValueKind::Float { min: Bound::Inclusive(0.0), max: Bound::Exclusive(1.0) }, Default::Float(0.9), grid: true, hashed: true,
        "AdamW's decay rate of the first moment (the gradient's running mean)."),
    key!(Train, "adam_beta2", ValueKind::Float { min: Bound::Inclusive(0.0), max: Bound::Exclusive(1.0) }, Default::Float(0.999), grid: true, hashed: true,
        "AdamW's decay rate of the second moment (the squared gradient's running mean)."),
    key!(Train, "adam_epsilon", ValueKind::Float { min: Bound::Exclusive(0.0), max: Bound::Inclusive(1.0) }, Default::Float(1e-8), grid: true, hashed: true,
        "Added to AdamW's denominator (after the square root), as torch does."),
    key!(Train, "max_grad_norm", ValueKind::Float { min: Bound::Inclusive(0.0), max: Bound::Unbounded }, Default::Float(1.0), grid: true, hashed: true,
        "Clip the global gradient norm to this value; 0 turns clipping off."),
    key!(Train, "gradient_accumulation", ValueKind::Integer { min: 1, max: 100_000 }, Default::Integer(1), grid: true, hashed: true,
        "Batches whose gradients are summed before each optimizer step."),
    key!(Train, "label_smoothing", FRACTION, Default::Float(0.0), grid: true, hashed: true,
        "The training loss's target puts 1 - label_smoothing on the gold class and spreads label_smoothing evenly over all classes (torch's `CrossEntropyLoss(label_smoothing=...)`, class weights included). Validation and test losses stay plain cross-entropy, comparable across runs."),
    key!(Train, "layer_learning_rate_decay", ValueKind::Float { min: Bound::Exclusive(0.0), max: Bound::Inclusive(1.0) }, Default::Float(1.0), grid: true, hashed: true,
        "Layer-wise learning-rate decay: the classifier head and pooler train at the full rate, the top encoder layer at rate x factor, each layer below at one more factor, the embeddings at one more again. 1 turns it off."),
    key!(Train, "freeze", ValueKind::Freeze, Default::Text("none"), grid: true, hashed: true,
        "Parameters that keep their loaded values: `\"none\"`, `\"embeddings\"`, or an integer N >= 1: the embeddings and the lowest N encoder layers (at most the model's layers). Frozen tensors get no gradient and no optimizer state, and are saved unchanged."),
    key!(Train, "eval_every_steps", ValueKind::Integer { min: 0, max: i64::MAX }, Default::Integer(0), grid: true, hashed: true,
        "Validate every this many optimizer steps as well as after each epoch (one evaluation when both fall on the same step); 0 turns it off. Each evaluation is a row of metrics.csv and a candidate for the kept weights; `early_stopping_patience` then counts evaluations."),
    key!(Train, "early_stopping_patience", ValueKind::Integer { min: 0, max: 100_000 }, Default::Integer(0), grid: true, hashed: true,
        "Stop after this many evaluations without improvement of `selection_metric` (epochs; with `eval_every_steps`, every evaluation counts); 0 turns early stopping off."),
    key!(Train, "selection_metric", ValueKind::Choice(SELECTION_METRICS), Default::Text("macro_f1"), grid: true, hashed: true,
        "The validation metric that picks the evaluation (epoch, or step with `eval_every_steps`) whose weights a run keeps. `micro_f1`, `samples_f1`, `subset_accuracy` and `hamming_loss` (lower is better) are multi-label metrics; with multi-label, `accuracy` is `subset_accuracy`."),
    key!(Train, "class_weights", ValueKind::Choice(CLASS_WEIGHTS), Default::Text("none"), grid: true, hashed: true,
        "`balanced` weighs each class's loss by n_samples / (n_classes * class_count); with `label_format = \"multi\"`, each class's positive term by its negatives / positives (torch's `pos_weight`)."),
    key!(Train, "threshold", ValueKind::Float { min: Bound::Exclusive(0.0), max: Bound::Exclusive(1.0) }, Default::Float(0.5), grid: true, hashed: true,
        "With `label_format = \"multi\"`: a class is predicted when its sigmoid probability is at least this. An error with `\"single\"`."),
    key!(Train, "length_bucketing", ValueKind::Bool, Default::Bool(false), grid: true, hashed: true,
        "Group texts of similar length into batches (still shuffled, seeded) to pad less."),
    key!(Train, "precision", ValueKind::Choice(PRECISIONS), Default::Text("fp32"), grid: true, hashed: true,
        "`bf16`: matrix products take bf16 operands (rounded to nearest even) and sum in fp32; weights (fp32 master copies), gradients, optimizer, loss, softmax and LayerNorm stay fp32. On the CPU: the dense layers' products, on AVX512-BF16 (a run on a CPU without it fails with a message), about 1.5x faster training (`docs/performance.md`). On a GPU: the dense layers' and the attention's products, through cuBLAS."),
    key!(Train, "seed", SEED, Default::Integer(0), grid: true, hashed: true,
        "Seed of head initialisation, dropout masks and shuffling."),
    key!(Train, "device", ValueKind::Device, Default::Text("auto"), grid: false, hashed: false,
        "`auto` (the first GPU when built with `cuda` and one is present, else the CPU), `cpu`, `cuda` or `cuda:N`; `bertlab run --devices` overrides it. Where a run executes, not what it is: not hashed (run.json records the device)."),
];

pub const SEARCH_METHODS: &[&str] = &["random", "tpe"];
pub const PRUNER_METHODS: &[&str] = &["asha"];
/// The distributions of a `[search.space]` entry, and the modifiers they take.
pub const DISTRIBUTIONS: &[&str] = &["uniform", "log_uniform", "int", "choice"];
pub const DISTRIBUTION_MODIFIERS: &[&str] = &["step", "log"];

/// The keys of `[search]` and `[search.pruner]` (the table `[search.space]` has its own rules:
/// docs/search.md). None of them is a run setting: they decide which runs a search trains, and
/// every one but `trials` is part of the search's identity.
pub static SEARCH_KEYS: &[Key] = &[
    key!(Search, "method", ValueKind::Choice(SEARCH_METHODS), Default::Text("tpe"), grid: false, hashed: false,
        "`random`: every trial drawn at random from the space; `tpe`: random for `startup_trials` trials, then the Tree-structured Parzen Estimator (Optuna's TPE)."),
    key!(Search, "trials", ValueKind::Integer { min: 1, max: 100_000 }, Default::Required, grid: false, hashed: false,
        "How many trials the search runs in all, whatever each one's end (done, pruned, failed). Raising it later extends the same search: the first trials stay as they were."),
    key!(Search, "seed", SEED, Default::Integer(0), grid: false, hashed: false,
        "The search's own seed: which trials it proposes. `train.seed` stays a run setting."),
    key!(Search, "parallel", ValueKind::Integer { min: 1, max: 1000 }, Default::Integer(1), grid: false, hashed: false,
        "At most this many trials run at once: trial k is proposed from the results of trials 0..=k-parallel, so trials stay the same however many processes share the search (docs/search.md)."),
    key!(Search, "startup_trials", ValueKind::Integer { min: 0, max: 100_000 }, Default::Integer(10), grid: false, hashed: false,
        "TPE: this many random trials before the model proposes (Optuna's default, 10)."),
    key!(SearchPruner, "method", ValueKind::Choice(PRUNER_METHODS), Default::Required, grid: false, hashed: false,
        "`asha`: asynchronous successive halving. At each rung a trial continues only if its selection metric is among the top 1/`reduction_factor` of the trials it is compared with there; otherwise it ends `pruned`."),
    key!(SearchPruner, "min_epochs", ValueKind::Integer { min: 1, max: 100_000 }, Default::Integer(1), grid: false, hashed: false,
        "The first rung, in epochs; the next rungs are `min_epochs` x `reduction_factor`^i, below `train.epochs` (the last rung's ceiling)."),
    key!(SearchPruner, "reduction_factor", ValueKind::Integer { min: 2, max: 1000 }, Default::Integer(3), grid: false, hashed: false,
        "Keep the top 1/`reduction_factor` at each rung: rungs at 1, 3, 9, ... epochs for 3."),
];

/// Looks a `[search]` or `[search.pruner]` key up.
pub fn find_search(section: Section, name: &str) -> Option<&'static Key> {
    SEARCH_KEYS
        .iter()
        .find(|key| key.section == section && key.name == name)
}

/// The keys of one `[[data.filter]]` table.
pub const FILTER_KEYS: &[&str] = &["column", "min", "max", "values"];

/// Looks a key up by section and name.
pub fn find(section: Section, name: &str) -> Option<&'static Key> {
    KEYS.iter()
        .find(|key| key.section == section && key.name == name)
}

/// Looks a key up by its full name (`train.seed`, `name`).
pub fn find_full(full_name: &str) -> Option<&'static Key> {
    match full_name.split_once('.') {
        Some((section, name)) => find(Section::from_name(section)?, name),
        None => find(Section::Top, full_name),
    }
}

/// The names a section accepts, for did-you-mean hints and error messages.
pub fn names_in(section: Section) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = KEYS
        .iter()
        .chain(SEARCH_KEYS)
        .filter(|key| key.section == section)
        .map(|key| key.name)
        .collect();
    match section {
        Section::Top => names.extend(Section::TABLES.iter().map(|section| section.name())),
        Section::Data => names.push("filter"),
        Section::Search => names.extend(["space", "pruner"]),
        _ => {}
    }
    names
}

/// The closest candidate to a misspelt name, if any is close enough to be a likely typo.
pub fn closest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(wrong, candidate), candidate))
        .filter(|(similarity, _)| *similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// The reference table of docs/experiment-file.md, generated from [`KEYS`] so that the
/// documentation cannot drift from the parser (a test compares them).
pub fn markdown_reference() -> String {
    key_table(KEYS, true)
}

/// The reference table of `[search]` and `[search.pruner]` in docs/experiment-file.md.
pub fn markdown_search_reference() -> String {
    key_table(SEARCH_KEYS, false)
}

fn key_table(keys: &[Key], run_settings: bool) -> String {
    let mut out = String::from(if run_settings {
        "| key | type | default | sweepable | hashed | meaning |\n|---|---|---|---|---|---|\n"
    } else {
        "| key | type | default | meaning |\n|---|---|---|---|\n"
    });
    for key in keys {
        let kind = match key.kind {
            ValueKind::Text => "string".to_string(),
            ValueKind::Name => "string `[a-z0-9][a-z0-9._-]*`".to_string(),
            ValueKind::Path => "path".to_string(),
            ValueKind::Choice(choices) => choices
                .iter()
                .map(|choice| format!("`\"{choice}\"`"))
                .collect::<Vec<_>>()
                .join(" \\| "),
            ValueKind::Device => {
                "`\"auto\"` \\| `\"cpu\"` \\| `\"cuda\"` \\| `\"cuda:N\"`".to_string()
            }
            ValueKind::Bool => "boolean".to_string(),
            ValueKind::Integer { min, max } if max >= 1_000_000 || max == i64::MAX => {
                format!("integer >= {min}")
            }
            ValueKind::Integer { min, max } => format!("integer {min}..={max}"),
            ValueKind::Float { min, max } => {
                format!("float {}", describe_range(min, max))
            }
            ValueKind::Freeze => "`\"none\"` \\| `\"embeddings\"` \\| integer >= 1".to_string(),
        };
        let default = match key.default {
            Default::Required => "required".to_string(),
            Default::Absent => "unset".to_string(),
            Default::Bool(value) => format!("`{value}`"),
            Default::Integer(value) => format!("`{value}`"),
            Default::Float(value) => format!("`{}`", format_float(value)),
            // A `|` inside a cell ends it, even in code: GitHub's tables take `\|`.
            Default::Text(value) => format!("`\"{}\"`", value.replace('|', "\\|")),
            Default::FromModel(field) => format!("config.json `{field}`"),
        };
        let yes_no = |flag: bool| if flag { "yes" } else { "no" };
        let meaning = key.meaning.replace('|', "\\|");
        if run_settings {
            out.push_str(&format!(
                "| `{}` | {kind} | {default} | {} | {} | {meaning} |\n",
                key.full_name(),
                yes_no(key.gridded),
                yes_no(key.hashed),
            ));
        } else {
            out.push_str(&format!(
                "| `{}` | {kind} | {default} | {meaning} |\n",
                key.full_name()
            ));
        }
    }
    out
}

/// `[0, 1)`, `greater than 0`, `at least 0`.
pub fn describe_range(min: Bound, max: Bound) -> String {
    match (min, max) {
        (Bound::Inclusive(low), Bound::Unbounded) => format!("at least {}", format_float(low)),
        (Bound::Exclusive(low), Bound::Unbounded) => format!("greater than {}", format_float(low)),
        (Bound::Unbounded, Bound::Inclusive(high)) => format!("at most {}", format_float(high)),
        (Bound::Unbounded, Bound::Exclusive(high)) => format!("less than {}", format_float(high)),
        (Bound::Unbounded, Bound::Unbounded) => "any finite number".into(),
        (low, high) => {
            let (open, low) = match low {
                Bound::Inclusive(low) => ('[', low),
                Bound::Exclusive(low) => ('(', low),
                Bound::Unbounded => unreachable!(),
            };
            let (close, high) = match high {
                Bound::Inclusive(high) => (']', high),
                Bound::Exclusive(high) => (')', high),
                Bound::Unbounded => unreachable!(),
            };
            format!(
                "in {open}{}, {}{close}",
                format_float(low),
                format_float(high)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_round_trip() {
        for key in KEYS {
            let found = find_full(&key.full_name()).expect("every key is found by its full name");
            assert!(std::ptr::eq(found, key), "{}", key.full_name());
        }
    }

    #[test]
    fn names_are_unique_within_a_section() {
        for (i, a) in KEYS.iter().enumerate() {
            for b in &KEYS[i + 1..] {
                assert!(
                    !(a.section == b.section && a.name == b.name),
                    "{} is listed twice",
                    a.full_name()
                );
            }
        }
    }

    #[test]
    fn typos_find_the_intended_key() {
        let train = names_in(Section::Train);
        assert_eq!(
            closest("learing_rate", train.iter().copied()),
            Some("learning_rate")
        );
        assert_eq!(
            closest("batchsize", train.iter().copied()),
            Some("batch_size")
        );
        assert_eq!(closest("zzz", train.iter().copied()), None);
    }
}
