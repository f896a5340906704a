//! A battery of malformed experiment files through the real binary: each must exit with status 2,
//! print nothing on stdout, explain itself on stderr (file, line, column, the line, a caret, a
//! hint), and create nothing under the run store.

mod common;

use common::Workspace;

const HEAD: &str = "name = \"broken\"\n[data]\ntrain = \"../data/train.csv\"\n[model]\npath = \"../models/tiny\"\n";

/// (snapshot name, experiment text, extra arguments)
fn cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    vec![
        ("syntax", format!("{HEAD}[train\nlearning_rate = 1e-5\n"), vec![]),
        ("unknown_key", format!("{HEAD}[train]\nmax_length = 32\nlearing_rate = 2e-5\n"), vec![]),
        ("unknown_table", format!("{HEAD}[trian]\nepochs = 3\n"), vec![]),
        ("misplaced_key", format!("{HEAD}[train]\nmax_length = 32\nclassifier_dropout = 0.2\n"), vec![]),
        (
            "wrong_types",
            format!("{HEAD}[train]\nmax_length = 32\nbatch_size = \"16\"\nepochs = 3.0\nlength_bucketing = \"yes\"\n"),
            vec![],
        ),
        (
            "out_of_range",
            format!(
                "{HEAD}[train]\nmax_length = 32\nlearning_rate = 0\nbatch_size = 0\nepochs = 0\n[grid]\n\"data.validation_fraction\" = [0.1, 1.0]\n"
            ),
            vec![],
        ),
        ("not_finite", format!("{HEAD}[train]\nmax_length = 32\nlearning_rate = nan\nmax_grad_norm = inf\n"), vec![]),
        (
            "fractions_leave_no_training_data",
            "name = \"broken\"\n[data]\ntrain = \"../data/train.csv\"\nvalidation_fraction = 0.5\ntest_fraction = 0.5\n[model]\npath = \"../models/tiny\"\n[train]\nmax_length = 32\n".to_string(),
            vec![],
        ),
        ("max_length_above_model", format!("{HEAD}[train]\nmax_length = 100\n"), vec![]),
        ("default_max_length_above_model", HEAD.to_string(), vec![]),
        (
            "missing_files",
            "name = \"broken\"\n[data]\ntrain = \"../data/nope.csv\"\n[model]\npath = \"../models/none\"\n".to_string(),
            vec![],
        ),
        ("empty_grid_axis", format!("{HEAD}[train]\nmax_length = 32\n[grid]\nlearning_rate = []\n"), vec![]),
        (
            "grid_too_large",
            format!(
                "{HEAD}[train]\nmax_length = 32\n[grid]\nseed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nbatch_size = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nepochs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
            ),
            vec![],
        ),
        ("grid_over_max_runs", format!("{HEAD}[train]\nmax_length = 32\n[grid]\nseed = [0, 1, 2]\n"), vec!["--max-runs", "2"]),
        (
            "grid_keys",
            format!("{HEAD}[train]\nmax_length = 32\n[grid]\nlearning_rat = [1e-5]\nclassifier_dropout = [0.1]\n\"train.device\" = [\"cpu\"]\n"),
            vec![],
        ),
        ("labels_with_a_gap", format!("{HEAD}[train]\nmax_length = 32\n[labels]\npositive = 0\nnegative = 2\n"), vec![]),
        ("missing_required", "name = \"Broken Name\"\n[data]\ntext_column = \"tweet\"\n".to_string(), vec![]),
        (
            "validation_file_and_fraction",
            "name = \"broken\"\n[data]\ntrain = \"../data/train.csv\"\nvalidation = \"../data/train.csv\"\nvalidation_fraction = 0.2\n[model]\npath = \"../models/tiny\"\n[train]\nmax_length = 32\n".to_string(),
            vec![],
        ),
        (
            "recipe_conflicts",
            format!(
                "{HEAD}[train]\nmax_length = 32\nlearning_rate = 1e-4\nlearning_rate_schedule = \"polynomial\"\ncosine_cycles = 1.0\npolynomial_end_learning_rate = 1e-3\nwarmup_steps = 10\nwarmup_ratio = 0.1\n"
            ),
            vec![],
        ),
        (
            "freeze_values",
            format!("{HEAD}[train]\nmax_length = 32\nfreeze = 0\n[grid]\n\"train.freeze\" = [\"embeding\", 1.5]\n"),
            vec![],
        ),
        ("freeze_above_model_layers", format!("{HEAD}[train]\nmax_length = 32\nfreeze = 9\n"), vec![]),
        (
            "search_table_problems",
            format!(
                "{HEAD}[train]\nmax_length = 32\n[search]\nmethod = \"tpee\"\ntrials = 0\ntrails = 4\n[search.space]\nlearning_rate = {{ log_uniform = [0, 1e-3] }}\nbatch_size = {{ uniform = [8, 32] }}\nwarmup_ratio = {{ uniform = [0.0, 0.2], step = 0.5 }}\nselection_metric = {{ choice = [\"loss\"] }}\n\"model.hidden_dropout\" = {{ choice = [0.1, 0.1] }}\nseed = {{ int = [0, 3], log = true }}\nweight_decay = {{ normal = [0, 1] }}\nlearning_rat = {{ uniform = [1e-5, 1e-4] }}\n[search.pruner]\nmethod = \"asha\"\nreduction_factor = 1\n"
            ),
            vec![],
        ),
        (
            "search_beside_a_grid",
            format!(
                "{HEAD}[train]\nmax_length = 32\n[grid]\nseed = [0, 1]\n[search]\ntrials = 4\n[search.space]\nlearning_rate = {{ log_uniform = [1e-5, 1e-3] }}\n"
            ),
            vec![],
        ),
        (
            "search_rules_against_the_run",
            format!(
                "{HEAD}[train]\nmax_length = 32\nepochs = 3\nwarmup_steps = 10\n[search]\ntrials = 4\n[search.space]\nwarmup_ratio = {{ uniform = [0.0, 0.2] }}\nepochs = {{ int = [1, 3] }}\n[search.pruner]\nmethod = \"asha\"\nmin_epochs = 3\n"
            ),
            vec![],
        ),
        ("search_over_max_runs", format!("{HEAD}[train]\nmax_length = 32\n[search]\ntrials = 40\n[search.space]\nseed = {{ int = [0, 9] }}\n"), vec!["--max-runs", "10"]),
        (
            "multi_label_settings_with_one_label",
            "name = \"broken\"\n[data]\ntrain = \"../data/train.csv\"\nlabel_separator = \",\"\n[model]\npath = \"../models/tiny\"\n[train]\nmax_length = 32\nthreshold = 0.3\nselection_metric = \"hamming_loss\"\n".to_string(),
            vec![],
        ),
        (
            "multi_label_rules",
            "name = \"broken\"\n[data]\ntrain = \"../data/train.csv\"\nlabel_format = \"multi\"\nlabel_separator = \"\"\ntext_pair_column = \"text\"\n[model]\npath = \"../models/tiny\"\n[train]\nmax_length = 32\nlabel_smoothing = 0.1\n".to_string(),
            vec![],
        ),
        (
            "unknown_choice",
            format!("{HEAD}[train]\nmax_length = 32\nselection_metric = \"f1\"\ndevice = \"gpu\"\n"),
            vec![],
        ),
    ]
}

#[test]
fn malformed_experiment_files_are_explained_and_nothing_is_written() {
    let workspace = Workspace::new();
    for (name, text, extra) in cases() {
        let file = format!("{name}.toml");
        workspace.experiment(&file, &text);
        let path = format!("experiments/{file}");
        let mut args = vec!["plan", path.as_str()];
        args.extend(extra);
        let output = workspace.bertlab(&args);
        assert_eq!(output.status, Some(2), "{name}: {}", output.stderr);
        assert_eq!(output.stdout, "", "{name}");
        assert!(
            !workspace.store_exists(),
            "{name}: the run store was created"
        );
        insta::assert_snapshot!(name, output.stderr);
    }
}

#[test]
fn problems_in_several_files_are_all_reported() {
    let workspace = Workspace::new();
    workspace.experiment(
        "a.toml",
        &format!("{HEAD}[train]\nmax_length = 32\nbatch_size = 0\n"),
    );
    workspace.experiment(
        "b.toml",
        &format!("{HEAD}[train]\nmax_length = 32\nepochs = 0\n"),
    );
    let output = workspace.bertlab(&["plan", "experiments/a.toml", "experiments/b.toml"]);
    assert_eq!(output.status, Some(2));
    assert!(
        output.stderr.contains("experiments/a.toml:8:14"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("experiments/b.toml:8:10"),
        "{}",
        output.stderr
    );
}

#[test]
fn a_missing_experiment_file_names_the_path() {
    let workspace = Workspace::new();
    let output = workspace.bertlab(&["plan", "experiments/nope.toml"]);
    assert_eq!(output.status, Some(2));
    assert_eq!(
        output.stderr,
        "error: cannot read experiment file experiments/nope.toml\n  caused by: No such file or directory (os error 2)\n"
    );
}

#[test]
fn warnings_do_not_stop_the_plan() {
    let workspace = Workspace::new();
    workspace.experiment(
        "w.toml",
        &format!("{HEAD}[train]\nmax_length = 32\nseed = 4\n[grid]\nseed = [1, 2]\n"),
    );
    let output = workspace.bertlab(&["plan", "experiments/w.toml"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    insta::assert_snapshot!(output.stderr);
}
