//! The data stage on messy files the tests write: counts that add up step by step, clear errors
//! for broken data, seeded splits, and `bertlab data` through the real binary.

use std::path::{Path, PathBuf};

use bertlab::data::{self, DataError, PreparedData};
use bertlab::plan::fingerprint::Fingerprinter;
use bertlab::plan::{PlanOptions, plan};
use polars::prelude::*;

fn tiny_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny-bert")
        .display()
        .to_string()
}

struct Folder {
    directory: tempfile::TempDir,
}

impl Folder {
    fn new() -> Folder {
        Folder {
            directory: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.directory.path()
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// An experiment over `data_table` (the `[data]` keys) and the tiny fixture model.
    fn experiment(&self, data_table: &str, extra: &str) -> PathBuf {
        let text = format!(
            "name = \"data-test\"\n[data]\n{data_table}\n[model]\npath = \"{}\"\n[train]\nmax_length = 16\n{extra}",
            tiny_model()
        );
        self.write("experiment.toml", text.as_bytes())
    }

    fn prepare(&self, data_table: &str, extra: &str) -> anyhow::Result<PreparedData> {
        let experiment = self.experiment(data_table, extra);
        let planned = plan(
            &[experiment],
            &PlanOptions::default(),
            &mut Fingerprinter::new(None),
        )?;
        data::prepare(&planned.runs[0])
    }
}

fn data_error(result: anyhow::Result<PreparedData>) -> DataError {
    result
        .unwrap_err()
        .downcast::<DataError>()
        .expect("a data error")
}

/// 12 rows: padding, an empty text, an exact duplicate, a conflicting text, an unknown label,
/// invalid UTF-8, a low-confidence row.
const MESSY: &[u8] = b"text,label,confidence\n\
  good film  ,pos,0.9\n\
bad film,neg,0.8\n\
,pos,0.9\n\
good film,pos,0.95\n\
fine film,pos,0.7\n\
fine film,neg,0.7\n\
meh,meh,0.9\n\
caf\xe9 au lait,pos,0.9\n\
awful,neg,0.3\n\
great,pos,0.9\n\
terrible,neg,0.9\n\
nice,pos,0.9\n";

const LABELS: &str = "[labels]\nneg = 0\npos = 1\n";

const MESSY_DATA: &str = "train = \"messy.csv\"\nencoding = \"utf8-lossy\"\nunknown_labels = \"drop\"\nvalidation_fraction = 0.25\n\
[[data.filter]]\ncolumn = \"confidence\"\nmin = 0.6";

#[test]
fn every_step_is_counted_and_the_counts_add_up() {
    let folder = Folder::new();
    folder.write("messy.csv", MESSY);
    let prepared = folder.prepare(MESSY_DATA, LABELS).unwrap();
    let report = &prepared.report;
    let steps: Vec<(&str, usize, usize)> = report
        .steps
        .iter()
        .map(|step| (step.step.as_str(), step.rows_in, step.rows_out))
        .collect();
    assert_eq!(
        steps,
        [
            ("read", 12, 12),
            ("decode", 12, 12),
            ("select columns", 12, 12),
            ("filter confidence >= 0.6", 12, 11),
            ("strip whitespace", 11, 11),
            ("drop empty", 11, 10),
            ("drop duplicates", 10, 7),
            ("map labels", 7, 6),
            ("split", 6, 4),
        ]
    );
    for pair in report.steps.windows(2) {
        if pair[0].file == pair[1].file && pair[1].step != "split" {
            assert_eq!(
                pair[0].rows_out, pair[1].rows_in,
                "{} -> {}",
                pair[0].step, pair[1].step
            );
        }
    }
    assert_eq!(report.repaired_rows, 1);
    assert_eq!(report.conflicting_texts, 1);
    assert_eq!(report.conflict_examples[0].text, "fine film");
    assert_eq!(report.dropped_labels.get("\"meh\""), Some(&1));
    assert_eq!(prepared.classes, ["neg", "pos"]);
    assert_eq!(prepared.train.len() + prepared.validation.len(), 6);
    assert!(
        prepared
            .train
            .iter()
            .chain(&prepared.validation)
            .any(|example| example.text == "caf\u{fffd} au lait")
    );
    // Whitespace was stripped before deduplication: "  good film  " and "good film" are one text.
    let good: Vec<_> = prepared
        .train
        .iter()
        .chain(&prepared.validation)
        .filter(|example| example.text == "good film")
        .collect();
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].row, 1, "the first row is kept");
}

#[test]
fn majority_keeps_the_most_frequent_label_of_a_conflicting_text() {
    let folder = Folder::new();
    folder.write(
        "votes.csv",
        b"text,label\nx,a\nx,b\nx,b\ny,a\nz,a\nw,b\nv,b\nu,a\n",
    );
    let prepared = folder
        .prepare(
            "train = \"votes.csv\"\nconflicting_labels = \"majority\"\nvalidation_fraction = 0.2",
            "",
        )
        .unwrap();
    let all: Vec<_> = prepared.train.iter().chain(&prepared.validation).collect();
    let x: Vec<_> = all.iter().filter(|example| example.text == "x").collect();
    assert_eq!(x.len(), 1);
    assert_eq!(prepared.classes[x[0].class() as usize], "b");
    assert_eq!(x[0].row, 2);
}

#[test]
fn invalid_utf8_names_the_row_and_offers_the_lossy_setting() {
    let folder = Folder::new();
    folder.write("messy.csv", MESSY);
    let error = data_error(folder.prepare("train = \"messy.csv\"", ""));
    assert!(error.file.ends_with("messy.csv"));
    let offset = MESSY.iter().position(|byte| *byte == 0xe9).unwrap();
    assert_eq!(
        error.message,
        format!("row 8: invalid UTF-8 at byte offset {offset}")
    );
    assert!(error.help.unwrap().contains("encoding = \"utf8-lossy\""));
}

#[test]
fn a_missing_column_lists_the_columns_the_file_has() {
    let folder = Folder::new();
    folder.write("t.csv", b"tweet,sentiment\nhi,pos\n");
    let error = data_error(folder.prepare("train = \"t.csv\"", ""));
    assert_eq!(
        error.message,
        "has no text column `text`; its columns are `tweet`, `sentiment`"
    );
}

#[test]
fn unknown_labels_are_listed_with_counts_and_first_rows() {
    let folder = Folder::new();
    folder.write(
        "t.csv",
        b"text,label\na,pos\nb,neg\nc,neutral\nd,neutral\ne,\nf,pos\n",
    );
    let error = data_error(folder.prepare("train = \"t.csv\"", "[labels]\npos = 0\nneg = 1\n"));
    assert_eq!(
        error.message,
        "2 label values not in [labels]: \"neutral\": 2 rows (first: row 3, 4); (missing): 1 row (first: row 5)"
    );
    assert!(error.help.unwrap().contains("unknown_labels = \"drop\""));
}

#[test]
fn a_single_class_is_an_error_that_says_what_to_check() {
    let folder = Folder::new();
    folder.write("t.csv", b"text,label\na,pos\nb,pos\nc,pos\n");
    let error = data_error(folder.prepare("train = \"t.csv\"", ""));
    assert_eq!(
        error.message,
        "only one class (pos) remains after cleaning: a classifier needs at least two"
    );
}

#[test]
fn a_numeric_filter_on_text_names_the_row() {
    let folder = Folder::new();
    folder.write("t.csv", b"text,label,score\na,pos,1\nb,neg,high\n");
    let error = data_error(folder.prepare(
        "train = \"t.csv\"\n[[data.filter]]\ncolumn = \"score\"\nmin = 0.5",
        "",
    ));
    assert_eq!(
        error.message,
        "row 2: column `score` holds \"high\", not a number, so the filter `score >= 0.5` cannot compare it"
    );
}

fn write_parquet(path: &Path, frame: &mut DataFrame) {
    let file = std::fs::File::create(path).unwrap();
    ParquetWriter::new(file).finish(frame).unwrap();
}

#[test]
fn parquet_and_json_lines_are_read_with_their_types() {
    let folder = Folder::new();
    let texts: Vec<String> = (0..20).map(|index| format!("text {index}")).collect();
    let labels: Vec<i64> = (0..20).map(|index| index % 2).collect();
    let mut frame = df!("text" => texts.clone(), "label" => labels.clone()).unwrap();
    write_parquet(&folder.path().join("t.parquet"), &mut frame);
    let prepared = folder.prepare("train = \"t.parquet\"", "").unwrap();
    assert_eq!(
        prepared.classes,
        ["0", "1"],
        "numeric labels are compared as text"
    );
    assert_eq!(prepared.train.len() + prepared.validation.len(), 20);

    let mut numeric = df!("text" => labels.clone(), "label" => labels).unwrap();
    write_parquet(&folder.path().join("numeric.parquet"), &mut numeric);
    let error = data_error(folder.prepare("train = \"numeric.parquet\"", ""));
    assert_eq!(
        error.message,
        "its text column `text` holds i64, not text; point `text_column` at the column of texts"
    );

    let lines: String = (0..10)
        .map(|index| {
            format!(
                "{{\"text\": \"line {index}\", \"label\": {}}}\n",
                index % 2 == 0
            )
        })
        .collect();
    folder.write("t.jsonl", lines.as_bytes());
    let prepared = folder.prepare("train = \"t.jsonl\"", "").unwrap();
    assert_eq!(prepared.classes, ["false", "true"]);
}

#[test]
fn separate_validation_files_report_leakage() {
    let folder = Folder::new();
    folder.write("train.csv", b"text,label\na,x\nb,y\nc,x\nd,y\n");
    folder.write("valid.csv", b"text,label\na,x\ne,y\n");
    let prepared = folder
        .prepare("train = \"train.csv\"\nvalidation = \"valid.csv\"", "")
        .unwrap();
    assert_eq!(prepared.train.len(), 4);
    assert_eq!(prepared.validation.len(), 2);
    assert_eq!(prepared.report.leaked_validation, 1);
    assert!(
        prepared
            .report
            .warnings
            .iter()
            .any(|warning| warning.contains("also occur in train"))
    );
}

#[test]
fn the_data_command_reports_each_data_setup_and_writes_nothing() {
    let folder = Folder::new();
    folder.write("messy.csv", MESSY);
    folder.experiment(
        MESSY_DATA,
        &format!("{LABELS}[grid]\nseed = [0, 1]\n\"data.split_seed\" = [0, 1]\n"),
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bertlab"))
        .args(["data", "experiment.toml"])
        .current_dir(folder.path())
        .env("BERTLAB_CACHE_DIR", folder.path().join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("data setup 1 of 2: 2 runs ("),
        "{stdout}"
    );
    assert!(stdout.contains("\ndata setup 2 of 2: 2 runs ("), "{stdout}");
    assert!(stdout.contains("drop duplicates"), "{stdout}");
    assert!(
        stdout.contains("token lengths of 4 training texts"),
        "{stdout}"
    );
    assert!(!folder.path().join("runs").exists());
}

/// The real corpus (in the tier that has the example assets): strict decoding stops at a row and
/// offers the lossy setting; lossy decoding with `confidence >= 0.6` gives counts that add up.
#[test]
fn the_example_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/data/tweets.csv");
    if !corpus.is_file() {
        assert!(
            std::env::var_os("BERTLAB_REQUIRE_ASSETS").is_none(),
            "run scripts/fetch-assets.sh"
        );
        eprintln!("skipped: no example assets (run scripts/fetch-assets.sh)");
        return;
    }
    let folder = Folder::new();
    let train = format!(
        "train = \"{}\"\nlabel_column = \"sentiment\"",
        corpus.display()
    );
    let error = data_error(folder.prepare(&train, ""));
    assert!(error.message.starts_with("row "), "{}", error.message);
    assert!(error.help.unwrap().contains("utf8-lossy"));

    let lossy = format!(
        "{train}\nencoding = \"utf8-lossy\"\n[[data.filter]]\ncolumn = \"confidence\"\nmin = 0.6"
    );
    let prepared = folder.prepare(&lossy, "").unwrap();
    let report = &prepared.report;
    // 38,158 data rows: negative 16,186 + neutral 15,018 + positive 6,954.
    assert_eq!(report.steps[0].rows_in, 38_158);
    assert_eq!(report.repaired_rows, 4_934);
    for pair in report.steps.windows(2) {
        if pair[1].step != "split" {
            assert_eq!(
                pair[0].rows_out, pair[1].rows_in,
                "{} -> {}",
                pair[0].step, pair[1].step
            );
        }
    }
    assert_eq!(prepared.classes, ["negative", "neutral", "positive"]);
    let total: usize = report.class_counts.values().flatten().sum();
    assert_eq!(
        total,
        report
            .steps
            .iter()
            .find(|step| step.step == "map labels")
            .unwrap()
            .rows_out
    );
    eprintln!("{:#?}", report.steps);
}

#[test]
fn the_preprocessing_cache_is_shared_by_runs_that_differ_only_in_training() {
    use bertlab::tokenize::preprocess::{CacheUse, cache_key, preprocess_cached};
    let folder = Folder::new();
    folder.write("messy.csv", MESSY);
    let experiment = folder.experiment(
        MESSY_DATA,
        &format!(
            "{LABELS}[grid]\nseed = [0, 1]\nlearning_rate = [1e-5, 2e-5]\nmax_length = [8, 16]\n"
        ),
    );
    let planned = plan(
        &[experiment],
        &PlanOptions::default(),
        &mut Fingerprinter::new(None),
    )
    .unwrap();
    assert_eq!(planned.runs.len(), 8);
    let keys: std::collections::BTreeSet<String> = planned.runs.iter().map(cache_key).collect();
    assert_eq!(keys.len(), 2, "one entry per max_length");

    let cache = folder.path().join("cache");
    let (first, used) = preprocess_cached(&planned.runs[0], Some(&cache)).unwrap();
    assert_eq!(used, CacheUse::Miss);
    assert!(first.train.ids.iter().all(|ids| ids.len() <= 8));
    // Two runners at once: both succeed with the same data.
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = planned.runs[1..3]
            .iter()
            .map(|run| scope.spawn(|| preprocess_cached(run, Some(&cache)).unwrap()))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    for (data, _) in &results {
        assert_eq!(data.train.ids.len(), first.train.ids.len());
    }
    let same_key = planned
        .runs
        .iter()
        .find(|run| run.settings.train.max_length == 8 && run.hash != planned.runs[0].hash)
        .unwrap();
    let (again, used) = preprocess_cached(same_key, Some(&cache)).unwrap();
    assert_eq!(used, CacheUse::Hit);
    assert_eq!(again, first);

    // A damaged entry is recomputed.
    let entry = cache.join(format!("{}.json", cache_key(&planned.runs[0])));
    std::fs::write(&entry, b"{ broken").unwrap();
    let (repaired, used) = preprocess_cached(&planned.runs[0], Some(&cache)).unwrap();
    assert_eq!(used, CacheUse::Miss);
    assert_eq!(repaired, first);
}

#[test]
fn a_file_of_empty_texts_says_which_step_removed_every_row() {
    let folder = Folder::new();
    folder.write("t.csv", b"text,label\n   ,pos\n,neg\n");
    let error = data_error(folder.prepare("train = \"t.csv\"", ""));
    assert_eq!(
        error.message,
        "no rows are left to train on: `drop empty` removed every row"
    );
    folder.write("header.csv", b"text,label\n");
    let error = data_error(folder.prepare("train = \"header.csv\"", ""));
    assert_eq!(
        error.message,
        "no rows are left to train on: the file has no data rows"
    );
}

/// The fast WordPiece path gives the tokenizers crate's ids on every text of the example corpus
/// it accepts (and it accepts most of them).
#[test]
fn the_fast_tokenizer_path_matches_on_the_whole_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("assets/data/tweets.csv");
    if !corpus.is_file() {
        assert!(
            std::env::var_os("BERTLAB_REQUIRE_ASSETS").is_none(),
            "run scripts/fetch-assets.sh"
        );
        eprintln!("skipped: no example assets (run scripts/fetch-assets.sh)");
        return;
    }
    let loaded =
        bertlab::tokenize::tokenizer::load(&root.join("assets/models/all-MiniLM-L6-v2")).unwrap();
    let fast = loaded
        .fast
        .as_ref()
        .expect("all-MiniLM-L6-v2 has a plain BERT tokenizer");
    let bytes = std::fs::read(&corpus).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let (mut accepted, mut total) = (0, 0);
    for record in reader.records() {
        let record = record.unwrap();
        let tweet = &record[2];
        total += 1;
        if let Some(ids) = fast.encode(tweet) {
            accepted += 1;
            let expected = loaded.tokenizer.encode_fast(tweet, true).unwrap();
            assert_eq!(ids, expected.get_ids(), "{tweet:?}");
        }
    }
    assert!(
        accepted * 10 > total * 8,
        "the fast path took only {accepted} of {total} texts"
    );
    eprintln!("fast path: {accepted} of {total} texts, all identical");
}

// ---- sentence pairs and label sets (issue 20) ----

fn example_texts(examples: &[data::Example]) -> Vec<(String, Option<String>)> {
    examples
        .iter()
        .map(|example| (example.text.clone(), example.text_pair.clone()))
        .collect()
}

#[test]
fn pairs_are_deduplicated_and_checked_for_leakage_as_pairs() {
    let folder = Folder::new();
    // Row 2 repeats row 1's pair; row 3 shares row 1's first text only; the validation file
    // holds row 1's pair again and a pair whose first text alone is in train.
    folder.write(
        "pairs.csv",
        b"premise,hypothesis,label\n a dog runs ,an animal moves,yes\na dog runs,an animal moves,yes\na dog runs,a cat sleeps,no\nthe sun,is hot,yes\nthe moon,is hot,no\n",
    );
    folder.write(
        "validation.csv",
        b"premise,hypothesis,label\na dog runs,an animal moves,yes\nthe sun,is cold,no\n",
    );
    let prepared = folder
        .prepare(
            "train = \"pairs.csv\"\nvalidation = \"validation.csv\"\ntext_column = \"premise\"\ntext_pair_column = \"hypothesis\"",
            "",
        )
        .unwrap();
    let pair = |a: &str, b: &str| (a.to_string(), Some(b.to_string()));
    assert_eq!(
        example_texts(&prepared.train),
        vec![
            pair("a dog runs", "an animal moves"),
            pair("a dog runs", "a cat sleeps"),
            pair("the sun", "is hot"),
            pair("the moon", "is hot"),
        ],
        "stripped, and only the repeated pair dropped"
    );
    assert_eq!(
        prepared.report.leaked_validation, 1,
        "the same pair, not the same first text"
    );
    assert!(
        prepared
            .report
            .warnings
            .iter()
            .any(|warning| warning.contains("1 validation and 0 test pairs")),
        "{:?}",
        prepared.report.warnings
    );
}

#[test]
fn an_empty_or_missing_pair_column_is_a_located_error() {
    let folder = Folder::new();
    folder.write(
        "pairs.csv",
        b"text,second,label\na,b,yes\nc,,no\nd,  ,yes\ne,f,no\n",
    );
    let error =
        data_error(folder.prepare("train = \"pairs.csv\"\ntext_pair_column = \"second\"", ""));
    assert!(error.file.ends_with("pairs.csv"), "{}", error.file);
    assert_eq!(
        error.message,
        "the pair column `second` (`text_pair_column`) is empty in 2 rows (first: row 2, 3)"
    );
    assert!(error.help.unwrap().contains("second text"));
    let missing = data_error(folder.prepare(
        "train = \"pairs.csv\"\ntext_pair_column = \"hypothesis\"",
        "",
    ));
    assert_eq!(
        missing.message,
        "has no text_pair column `hypothesis`; its columns are `text`, `second`, `label`"
    );
}

fn sets(prepared: &[data::Example], classes: &[String]) -> Vec<Vec<String>> {
    prepared
        .iter()
        .map(|example| match &example.gold {
            data::Gold::Set(set) => set
                .iter()
                .map(|&class| classes[class as usize].clone())
                .collect(),
            data::Gold::Class(_) => panic!("a single label in multi-label data"),
        })
        .collect()
}

const TAGS_CSV: &[u8] = b"text,tags\nrust and python,code|python\n\"stocks fall, markets\",  finance \nnothing here,\nbrexit vote,politics|finance|politics\nfree code,code\ncats,\n";

#[test]
fn label_sets_are_read_from_a_delimited_column_a_json_list_and_a_parquet_list() {
    let folder = Folder::new();
    folder.write("tags.csv", TAGS_CSV);
    let expected = vec![
        vec!["code", "python"],
        vec!["finance"],
        vec![],
        vec!["finance", "politics"],
        vec!["code"],
        vec![],
    ];
    let expected: Vec<Vec<String>> = expected
        .into_iter()
        .map(|set| set.into_iter().map(String::from).collect())
        .collect();
    let multi = "label_column = \"tags\"\nlabel_format = \"multi\"\nvalidation_fraction = 0.5\nstratify = false\ndrop_duplicates = false";
    let from_csv = folder
        .prepare(&format!("train = \"tags.csv\"\n{multi}"), "")
        .unwrap();
    assert_eq!(from_csv.classes, ["code", "finance", "politics", "python"]);
    let mut all: Vec<_> = from_csv
        .train
        .iter()
        .chain(&from_csv.validation)
        .cloned()
        .collect();
    all.sort_by_key(|example| example.row);
    assert_eq!(
        sets(&all, &from_csv.classes),
        expected,
        "trimmed, sorted, repeats dropped"
    );
    let empty = from_csv.report.empty_label_sets.clone().unwrap();
    assert_eq!(
        empty.iter().sum::<usize>(),
        2,
        "the empty sets are examples, counted"
    );
    // JSON Lines lists, and a Parquet list column, give the same sets.
    folder.write(
        "tags.jsonl",
        br#"{"text": "rust and python", "tags": ["code", "python"]}
{"text": "stocks fall, markets", "tags": [" finance "]}
{"text": "nothing here", "tags": []}
{"text": "brexit vote", "tags": ["politics", "finance", "politics"]}
{"text": "free code", "tags": ["code"]}
{"text": "cats", "tags": null}
"#,
    );
    let from_jsonl = folder
        .prepare(&format!("train = \"tags.jsonl\"\n{multi}"), "")
        .unwrap();
    let mut all: Vec<_> = from_jsonl
        .train
        .iter()
        .chain(&from_jsonl.validation)
        .cloned()
        .collect();
    all.sort_by_key(|example| example.row);
    assert_eq!(sets(&all, &from_jsonl.classes), expected);
    let mut frame = df!(
        "text" => ["rust and python", "stocks fall, markets", "nothing here", "brexit vote", "free code", "cats"],
    )
    .unwrap();
    let lists: Vec<Series> = expected
        .iter()
        .map(|set| Series::new("".into(), set.clone()))
        .collect();
    frame
        .with_column(Series::new("tags".into(), lists).into_column())
        .unwrap();
    write_parquet(&folder.path().join("tags.parquet"), &mut frame);
    let from_parquet = folder
        .prepare(&format!("train = \"tags.parquet\"\n{multi}"), "")
        .unwrap();
    let mut all: Vec<_> = from_parquet
        .train
        .iter()
        .chain(&from_parquet.validation)
        .cloned()
        .collect();
    all.sort_by_key(|example| example.row);
    assert_eq!(sets(&all, &from_parquet.classes), expected);
}

#[test]
fn unknown_labels_inside_sets_are_listed_or_dropped_from_the_set() {
    let folder = Folder::new();
    folder.write("tags.csv", TAGS_CSV);
    let data = "train = \"tags.csv\"\nlabel_column = \"tags\"\nlabel_format = \"multi\"\nvalidation_fraction = 0.5\nstratify = false";
    let labels = "[labels]\ncode = 0\nfinance = 1\npolitics = 2\n";
    let error = data_error(folder.prepare(data, labels));
    assert_eq!(
        error.message,
        "1 label value not in [labels] (inside label sets): \"python\": 1 row (first: row 1)"
    );
    assert!(
        error
            .help
            .unwrap()
            .contains("drop those labels from their sets (the rows stay)")
    );
    let dropped = folder
        .prepare(&format!("{data}\nunknown_labels = \"drop\""), labels)
        .unwrap();
    let mut all: Vec<_> = dropped
        .train
        .iter()
        .chain(&dropped.validation)
        .cloned()
        .collect();
    all.sort_by_key(|example| example.row);
    assert_eq!(all.len(), 6, "no row is dropped");
    assert_eq!(
        sets(&all[..1], &dropped.classes),
        vec![vec!["code".to_string()]]
    );
    assert_eq!(dropped.report.dropped_labels.get("\"python\""), Some(&1));
}

#[test]
fn a_separator_that_never_occurs_is_a_warning_naming_the_setting() {
    let folder = Folder::new();
    folder.write(
        "tags.csv",
        b"text,tags\na,\"code,python\"\nb,finance\nc,\"politics,finance\"\nd,code\n",
    );
    let prepared = folder
        .prepare(
            "train = \"tags.csv\"\nlabel_column = \"tags\"\nlabel_format = \"multi\"\nvalidation_fraction = 0.5\nstratify = false",
            "",
        )
        .unwrap();
    let warning = prepared
        .report
        .warnings
        .iter()
        .find(|warning| warning.contains("label_separator"))
        .expect("a separator warning");
    assert!(warning.contains("tags.csv"), "{warning}");
    assert!(
        warning.contains("probably the wrong separator"),
        "{warning}"
    );
    assert!(warning.contains("(the labels hold `,` in 2)"), "{warning}");
    let fixed = folder
        .prepare(
            "train = \"tags.csv\"\nlabel_column = \"tags\"\nlabel_format = \"multi\"\nlabel_separator = \",\"\nvalidation_fraction = 0.5\nstratify = false",
            "",
        )
        .unwrap();
    assert!(
        !fixed
            .report
            .warnings
            .iter()
            .any(|warning| warning.contains("label_separator"))
    );
    assert_eq!(fixed.classes, ["code", "finance", "politics", "python"]);
}

#[test]
fn a_list_column_of_non_strings_is_an_error_naming_the_row() {
    let folder = Folder::new();
    folder.write(
        "tags.jsonl",
        b"{\"text\": \"a\", \"tags\": []}\n{\"text\": \"b\", \"tags\": [1, 2]}\n{\"text\": \"c\", \"tags\": [3]}\n",
    );
    let error = data_error(folder.prepare(
        "train = \"tags.jsonl\"\nlabel_column = \"tags\"\nlabel_format = \"multi\"",
        "",
    ));
    assert!(error.file.ends_with("tags.jsonl"), "{}", error.file);
    assert!(
        error
            .message
            .starts_with("row 2: the label column `tags` holds a list of i64"),
        "{}",
        error.message
    );
    // The same list column read as one label per row says to switch the format.
    let single = data_error(folder.prepare("train = \"tags.jsonl\"\nlabel_column = \"tags\"", ""));
    assert!(
        single.message.contains("set label_format = \"multi\""),
        "{}",
        single.message
    );
}

#[test]
fn label_sets_are_split_stratified_on_the_set() {
    let folder = Folder::new();
    let mut text = String::from("text,tags\n");
    // 40 rows of a|b, 40 of a, 20 of none: each set keeps its share in validation.
    for index in 0..100 {
        let tags = match index % 5 {
            0 | 1 => "a|b",
            2 | 3 => "a",
            _ => "",
        };
        text.push_str(&format!("text {index},{tags}\n"));
    }
    folder.write("tags.csv", text.as_bytes());
    let prepared = folder
        .prepare(
            "train = \"tags.csv\"\nlabel_column = \"tags\"\nlabel_format = \"multi\"\nvalidation_fraction = 0.2",
            "",
        )
        .unwrap();
    let count = |examples: &[data::Example], wanted: &[u32]| {
        examples
            .iter()
            .filter(|example| example.gold == data::Gold::Set(wanted.to_vec()))
            .count()
    };
    assert_eq!(prepared.validation.len(), 20);
    assert_eq!(
        [
            count(&prepared.validation, &[0, 1]),
            count(&prepared.validation, &[0]),
            count(&prepared.validation, &[])
        ],
        [8, 8, 4]
    );
    assert_eq!(prepared.report.empty_label_sets, Some(vec![16, 4, 0]));
    assert_eq!(prepared.report.class_counts["a"], vec![64, 16, 0]);
}

#[test]
fn rare_label_sets_share_a_stratum_instead_of_filling_validation() {
    let folder = Folder::new();
    let mut text = String::from("text,tags\n");
    for index in 0..90 {
        text.push_str(&format!(
            "common {index},{}\n",
            if index % 2 == 0 { "a" } else { "a|b" }
        ));
    }
    // 10 sets seen twice each: each alone would give 1 to validation and 1 to test.
    for set in 0..10 {
        for copy in 0..2 {
            text.push_str(&format!("rare {set} {copy},c{set}\n"));
        }
    }
    folder.write("tags.csv", text.as_bytes());
    let prepared = folder
        .prepare(
            "train = \"tags.csv\"\nlabel_column = \"tags\"\nlabel_format = \"multi\"\nvalidation_fraction = 0.1\ntest_fraction = 0.1",
            "",
        )
        .unwrap();
    assert_eq!(
        (
            prepared.train.len(),
            prepared.validation.len(),
            prepared.test.len()
        ),
        (86, 12, 12),
        "each stratum's 10%, rounded (45 -> 5, 45 -> 5, the rare 20 -> 2); apart, the rare sets would take 10 each"
    );
    let rare_in_train = prepared
        .train
        .iter()
        .filter(|example| example.text.starts_with("rare"))
        .count();
    assert_eq!(rare_in_train, 16, "the rare sets keep their share in train");
}

#[test]
fn one_class_is_enough_for_label_sets_but_not_for_one_label() {
    let folder = Folder::new();
    folder.write(
        "spam.csv",
        b"text,tags\nbuy now,spam\nhello friend,\ncheap pills,spam|ads\nsee you,\n",
    );
    let data = "train = \"spam.csv\"\nlabel_column = \"tags\"\nvalidation_fraction = 0.5\nstratify = false\nunknown_labels = \"drop\"";
    let prepared = folder
        .prepare(
            &format!("{data}\nlabel_format = \"multi\""),
            "[labels]\nspam = 0\n",
        )
        .unwrap();
    assert_eq!(prepared.classes, ["spam"]);
    assert_eq!(prepared.report.dropped_labels.get("\"ads\""), Some(&1));
    let error = folder
        .prepare(data, "[labels]\nspam = 0\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("a classifier needs at least 2"), "{error}");
    assert!(error.contains("label_format = \"multi\""), "{error}");
}
