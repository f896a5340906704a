//! The run hash of a fixture spec, pinned as literals: canonicalisation or hashing must never
//! change by accident, since every stored run is named by its hash. If this test fails, a change
//! altered what existing runs are called; that needs a new spec version, not a new literal.

use bertlab::plan::fingerprint::Fingerprinter;
use bertlab::plan::{PlanOptions, plan};

const EXPERIMENT: &str = r#"name = "pinned"
[data]
train = "data.csv"
encoding = "utf8-lossy"
[[data.filter]]
column = "confidence"
min = 0.6
[[data.filter]]
column = "lang"
values = ["en", "de", "en"]
[labels]
positive = 0
negative = 1
[model]
path = "model"
[train]
max_length = 64
learning_rate = 0.00003
seed = 7
"#;

fn fixture() -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    let root = folder.path();
    std::fs::write(
        root.join("data.csv"),
        "text,label,confidence,lang\nhi,positive,1,en\nbye,negative,0.9,en\n",
    )
    .unwrap();
    std::fs::create_dir(root.join("model")).unwrap();
    std::fs::write(
        root.join("model/config.json"),
        r#"{"model_type": "bert", "max_position_embeddings": 512, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}"#,
    )
    .unwrap();
    std::fs::write(root.join("model/vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\n").unwrap();
    std::fs::write(
        root.join("model/model.safetensors"),
        b"not read while planning",
    )
    .unwrap();
    std::fs::write(root.join("experiment.toml"), EXPERIMENT).unwrap();
    folder
}

const CANONICAL: &str = r#"{"bertlab_spec":1,"data":{"conflicting_labels":"drop","drop_duplicates":true,"drop_empty":true,"encoding":"utf8-lossy","filters":[{"column":"confidence","min":0.6},{"column":"lang","values":["de","en"]}],"label_column":"label","split_seed":0,"stratify":true,"test":null,"test_fraction":0.0,"text_column":"text","train":{"format":"csv","sha256":"b819110e7e6b5f9a873bf7889ec1c1fef8b63530daaf14f571604a85d88cbb9f","size":64},"unknown_labels":"error","validation":null,"validation_fraction":0.1},"labels":{"negative":1,"positive":0},"model":{"attention_dropout":0.1,"classifier_dropout":0.1,"files":{"config.json":{"sha256":"4bacffc70d0daf42a25b3c5ca36f0358bf446dbc96e93aa24ea82df1f943b536","size":119},"model.safetensors":{"sha256":"b701935059759a27437e2648459fb34822435f9bcf16703381283dde6f8042c5","size":23},"vocab.txt":{"sha256":"c4b8e11215f047171c3b588b2e0b06b81e3937afeb929b234026ef802be5ebdf","size":24}},"hidden_dropout":0.1},"train":{"batch_size":16,"class_weights":"none","early_stopping_patience":0,"epochs":3,"gradient_accumulation":1,"learning_rate":3e-5,"length_bucketing":false,"max_grad_norm":1.0,"max_length":64,"precision":"fp32","seed":7,"selection_metric":"macro_f1","warmup_ratio":0.0,"weight_decay":0.01}}"#;
const HASH: &str = "ad162dce61b0bc5fc5d257fcada8cfa401b8283ea446f3b7dc908f2f7fc33de5";

#[test]
fn the_fixture_spec_has_a_fixed_canonical_form_and_hash() {
    let folder = fixture();
    let planned = plan(
        &[folder.path().join("experiment.toml")],
        &PlanOptions::default(),
        &mut Fingerprinter::new(None),
    )
    .unwrap();
    assert_eq!(planned.runs.len(), 1);
    let run = &planned.runs[0];
    let canonical = String::from_utf8(run.spec.canonical_bytes()).unwrap();
    assert_eq!(canonical, CANONICAL);
    assert_eq!(run.hash.as_str(), HASH);
}

/// The plan of the fixture with `extra` lines appended to its `[train]` table.
fn plan_with(extra: &str) -> bertlab::plan::PlannedRun {
    plan_with_data("", extra)
}

/// The recipe keys enter a spec only at a non-default value: written at their defaults, the
/// fixture keeps its pinned hash; each at another value changes the hash and shows in the spec.
#[test]
fn recipe_keys_at_their_defaults_keep_every_hash() {
    let defaults = "learning_rate_schedule = \"linear\"\nwarmup_steps = 0\nadam_beta1 = 0.9\n\
                    adam_beta2 = 0.999\nadam_epsilon = 1e-8\nweight_decay_scope = \"standard\"\n\
                    label_smoothing = 0.0\nlayer_learning_rate_decay = 1.0\nfreeze = \"none\"\n\
                    eval_every_steps = 0\n";
    let run = plan_with(defaults);
    assert_eq!(
        String::from_utf8(run.spec.canonical_bytes()).unwrap(),
        CANONICAL
    );
    assert_eq!(run.hash.as_str(), HASH);
    for schedule_defaults in [
        "learning_rate_schedule = \"cosine\"\ncosine_cycles = 0.5\n",
        "learning_rate_schedule = \"polynomial\"\npolynomial_power = 1.0\npolynomial_end_learning_rate = 1e-7\n",
    ] {
        let with = plan_with(schedule_defaults);
        let without = plan_with(schedule_defaults.lines().next().unwrap());
        assert_eq!(with.hash, without.hash, "{schedule_defaults}");
    }
    let changes = [
        (
            "learning_rate_schedule = \"constant\"\n",
            "\"learning_rate_schedule\":\"constant\"",
        ),
        (
            "learning_rate_schedule = \"cosine\"\ncosine_cycles = 1.5\n",
            "\"cosine_cycles\":1.5",
        ),
        (
            "learning_rate_schedule = \"polynomial\"\npolynomial_power = 2\n",
            "\"polynomial_power\":2.0",
        ),
        (
            "learning_rate_schedule = \"polynomial\"\npolynomial_end_learning_rate = 1e-6\n",
            "\"polynomial_end_learning_rate\":1e-6",
        ),
        (
            "learning_rate_schedule = \"inverse_sqrt\"\ninverse_sqrt_timescale = 100\n",
            "\"inverse_sqrt_timescale\":100",
        ),
        ("warmup_steps = 50\n", "\"warmup_steps\":50"),
        ("adam_beta1 = 0.8\n", "\"adam_beta1\":0.8"),
        ("adam_beta2 = 0.98\n", "\"adam_beta2\":0.98"),
        ("adam_epsilon = 1e-6\n", "\"adam_epsilon\":1e-6"),
        (
            "weight_decay_scope = \"all\"\n",
            "\"weight_decay_scope\":\"all\"",
        ),
        ("label_smoothing = 0.1\n", "\"label_smoothing\":0.1"),
        (
            "layer_learning_rate_decay = 0.9\n",
            "\"layer_learning_rate_decay\":0.9",
        ),
        ("freeze = \"embeddings\"\n", "\"freeze\":\"embeddings\""),
        ("freeze = 3\n", "\"freeze\":3"),
        ("eval_every_steps = 100\n", "\"eval_every_steps\":100"),
    ];
    let mut hashes = std::collections::HashSet::new();
    for (lines, shown) in changes {
        let run = plan_with(lines);
        let canonical = String::from_utf8(run.spec.canonical_bytes()).unwrap();
        assert!(canonical.contains(shown), "{lines}: {canonical}");
        assert_ne!(run.hash.as_str(), HASH, "{lines}");
        assert!(
            hashes.insert(run.hash.clone()),
            "{lines}: a hash seen before"
        );
        // What the spec holds reads back as the same settings.
        let read: bertlab::plan::spec::RunSpec =
            serde_json::from_slice(&run.spec.canonical_bytes()).unwrap();
        assert_eq!(read.train, run.spec.train, "{lines}");
    }
}

/// The plan of the fixture with `data` lines added to its `[data]` table and `train` lines to
/// its `[train]` table.
fn plan_with_data(data: &str, train: &str) -> bertlab::plan::PlannedRun {
    let experiment = EXPERIMENT.replacen(
        "encoding = \"utf8-lossy\"\n",
        &format!("encoding = \"utf8-lossy\"\n{data}"),
        1,
    );
    assert!(
        EXPERIMENT.contains("encoding = \"utf8-lossy\"\n"),
        "the data table is there"
    );
    let folder = fixture();
    std::fs::write(
        folder.path().join("experiment.toml"),
        format!("{experiment}{train}"),
    )
    .unwrap();
    let mut planned = plan(
        &[folder.path().join("experiment.toml")],
        &PlanOptions::default(),
        &mut Fingerprinter::new(None),
    )
    .unwrap_or_else(|error| panic!("{data} {train}: {error}"));
    planned.runs.remove(0)
}

/// The task keys of pairs and label sets enter a spec only at a non-default value: the single
/// label format written out keeps the pinned hash; a multi-label spec with the default separator
/// and threshold written out equals one without them; a pair column, the multi format, another
/// separator and another threshold each change the hash and show in the spec.
#[test]
fn task_keys_at_their_defaults_keep_every_hash() {
    let single = plan_with_data("label_format = \"single\"\n", "");
    assert_eq!(
        String::from_utf8(single.spec.canonical_bytes()).unwrap(),
        CANONICAL
    );
    assert_eq!(single.hash.as_str(), HASH);
    let multi = plan_with_data("label_format = \"multi\"\n", "");
    let written = plan_with_data(
        "label_format = \"multi\"\nlabel_separator = \"|\"\n",
        "threshold = 0.5\n",
    );
    assert_eq!(multi.hash, written.hash);
    let mut hashes = std::collections::HashSet::from([single.hash.clone(), multi.hash.clone()]);
    assert_eq!(hashes.len(), 2, "the multi format changes the hash");
    let canonical = String::from_utf8(multi.spec.canonical_bytes()).unwrap();
    assert!(
        canonical.contains("\"label_format\":\"multi\""),
        "{canonical}"
    );
    for (data, train, shown) in [
        (
            "text_pair_column = \"second\"\n",
            "",
            "\"text_pair_column\":\"second\"",
        ),
        (
            "label_format = \"multi\"\nlabel_separator = \";\"\n",
            "",
            "\"label_separator\":\";\"",
        ),
        (
            "label_format = \"multi\"\n",
            "threshold = 0.3\n",
            "\"threshold\":0.3",
        ),
    ] {
        let run = plan_with_data(data, train);
        let canonical = String::from_utf8(run.spec.canonical_bytes()).unwrap();
        assert!(canonical.contains(shown), "{data}{train}: {canonical}");
        assert!(
            hashes.insert(run.hash.clone()),
            "{data}{train}: a hash seen before"
        );
        let read: bertlab::plan::spec::RunSpec =
            serde_json::from_slice(&run.spec.canonical_bytes()).unwrap();
        assert_eq!(
            read.train, run.spec.train,
            "{data}{train}: the spec reads back"
        );
        assert_eq!(
            read.data.options.text_pair_column,
            run.spec.data.options.text_pair_column
        );
        assert_eq!(
            read.data.options.label_format,
            run.spec.data.options.label_format
        );
        assert_eq!(
            read.data.options.label_separator,
            run.spec.data.options.label_separator
        );
    }
}
