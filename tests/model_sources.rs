//! Where models come from, through the real binary: a directory of any supported family plans
//! and trains; an unsupported one (another `model_type`, a decoder, a sequence too long for
//! RoBERTa's positions) is refused at plan time with the file, the value and the families
//! bertlab trains, before any run directory exists; `model.hub` reads a Hugging Face cache laid
//! out exactly as huggingface_hub lays it out (refs, snapshots, symlinks into blobs), offline,
//! giving the same run hash as the same files by path.

mod common;

use std::path::{Path, PathBuf};

use common::reference::FAMILIES;
use common::{Output, Workspace};
use serde_json::Value;
use sha2::{Digest, Sha256};

const COMMIT_MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
const COMMIT_V2: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn copy_directory(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// Puts the files of `model` into `cache` as huggingface_hub does: content-addressed blobs,
/// `snapshots/<commit>/<file>` symlinks to `../../blobs/<sha256>`, `refs/<revision>` holding
/// the commit and a newline.
fn cache_model(cache: &Path, id: &str, revision: &str, commit: &str, model: &Path) {
    let folder = cache.join(format!("models--{}", id.replace('/', "--")));
    let snapshot = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(folder.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    for entry in std::fs::read_dir(model).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let blob: String = Sha256::digest(&bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        std::fs::write(folder.join("blobs").join(&blob), &bytes).unwrap();
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(&blob),
            snapshot.join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let reference = folder.join("refs").join(revision);
    std::fs::create_dir_all(reference.parent().unwrap()).unwrap();
    std::fs::write(reference, format!("{commit}\n")).unwrap();
}

/// The binary in the workspace with the given Hugging Face variables (the others removed).
fn bertlab(workspace: &Workspace, args: &[&str], environment: &[(&str, PathBuf)]) -> Output {
    let mut command = workspace.command(args);
    command
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .env_remove("HF_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", workspace.path().join("home"));
    for (name, value) in environment {
        command.env(name, value);
    }
    workspace.output(command)
}

/// A workspace with the tiny fixture of every family beside BERT under `models/`, and an
/// experiment for each (`experiments/<family>.toml`).
fn families_workspace() -> Workspace {
    let workspace = Workspace::new();
    for family in FAMILIES {
        copy_directory(
            &fixture(&format!("tiny-{family}")),
            &workspace.path().join("models").join(family),
        );
        workspace.experiment(
            &format!("{family}.toml"),
            &experiment(&format!("path = \"../models/{family}\""), ""),
        );
    }
    workspace
}

fn plan_hashes(
    workspace: &Workspace,
    experiment: &str,
    environment: &[(&str, PathBuf)],
) -> Vec<String> {
    let ran = bertlab(
        workspace,
        &["plan", experiment, "--format", "json"],
        environment,
    );
    assert_eq!(ran.status, Some(0), "{}", ran.stderr);
    serde_json::from_str::<Value>(&ran.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["hash"].as_str().unwrap().to_string())
        .collect()
}

fn experiment(model: &str, train: &str) -> String {
    format!(
        "name = \"sources\"\n\n[data]\ntrain = \"../data/train.csv\"\n\n[model]\n{model}\n\n[train]\nmax_length = 32\nepochs = 1\nbatch_size = 8\n{train}"
    )
}

#[test]
fn a_model_by_hub_name_is_the_same_run_as_its_files_by_path() {
    let workspace = Workspace::new();
    let cache = workspace.path().join("hub-cache");
    let tiny = workspace.path().join("models/tiny");
    cache_model(&cache, "acme/tiny-bert", "main", COMMIT_MAIN, &tiny);
    // Another revision: the same model with other weights.
    let other = workspace.path().join("models/other");
    common::tiny_bert(&other, 2);
    cache_model(&cache, "acme/tiny-bert", "v2", COMMIT_V2, &other);
    // A legacy bare name.
    cache_model(&cache, "tiny-bert-legacy", "main", COMMIT_MAIN, &tiny);
    let environment = [("HF_HUB_CACHE", cache.clone())];

    workspace.experiment("path.toml", &experiment("path = \"../models/tiny\"", ""));
    workspace.experiment("hub.toml", &experiment("hub = \"acme/tiny-bert\"", ""));
    workspace.experiment("legacy.toml", &experiment("hub = \"tiny-bert-legacy\"", ""));
    workspace.experiment(
        "commit.toml",
        &experiment(
            &format!("hub = \"acme/tiny-bert\"\nrevision = \"{COMMIT_MAIN}\""),
            "",
        ),
    );
    workspace.experiment("other.toml", &experiment("path = \"../models/other\"", ""));
    workspace.experiment(
        "revisions.toml",
        &experiment(
            "hub = \"acme/tiny-bert\"",
            "\n[grid]\n\"model.revision\" = [\"main\", \"v2\"]\n",
        ),
    );
    let by_path = plan_hashes(&workspace, "experiments/path.toml", &environment);
    assert_eq!(
        plan_hashes(&workspace, "experiments/hub.toml", &environment),
        by_path
    );
    assert_eq!(
        plan_hashes(&workspace, "experiments/legacy.toml", &environment),
        by_path
    );
    assert_eq!(
        plan_hashes(&workspace, "experiments/commit.toml", &environment),
        by_path
    );
    let other = plan_hashes(&workspace, "experiments/other.toml", &environment);
    assert_ne!(other, by_path);
    assert_eq!(
        plan_hashes(&workspace, "experiments/revisions.toml", &environment),
        [by_path[0].clone(), other[0].clone()],
        "a grid over revisions is a grid over their files"
    );

    // HF_HOME/hub when HF_HUB_CACHE is unset; ~/.cache/huggingface/hub when neither is set.
    let home_cache = workspace.path().join("hf-home");
    std::fs::rename(&cache, home_cache.join("hub")).unwrap_or_else(|_| {
        std::fs::create_dir_all(&home_cache).unwrap();
        std::fs::rename(&cache, home_cache.join("hub")).unwrap();
    });
    assert_eq!(
        plan_hashes(
            &workspace,
            "experiments/hub.toml",
            &[("HF_HOME", home_cache.clone())]
        ),
        by_path
    );
    let default_cache = workspace.path().join("home/.cache/huggingface");
    std::fs::create_dir_all(&default_cache).unwrap();
    std::fs::rename(home_cache.join("hub"), default_cache.join("hub")).unwrap();
    assert_eq!(
        plan_hashes(&workspace, "experiments/hub.toml", &[]),
        by_path
    );

    // A trained run records the name, the revision and the commit it resolved to.
    let ran = bertlab(&workspace, &["run", "experiments/hub.toml"], &[]);
    assert_eq!(ran.status, Some(0), "{}", ran.stderr);
    let short = &by_path[0][..12];
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace.path().join("runs").join(short).join("run.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["provenance"]["model_hub"],
        serde_json::json!({"id": "acme/tiny-bert", "revision": "main", "commit": COMMIT_MAIN})
    );
    let shown = bertlab(&workspace, &["show", short], &[]);
    assert!(
        shown
            .stdout
            .contains("acme/tiny-bert at main (commit 0123456789ab)"),
        "{}",
        shown.stdout
    );
}

#[test]
fn a_model_missing_from_the_cache_says_where_bertlab_looked_and_how_to_download_it() {
    let workspace = Workspace::new();
    let cache = workspace.path().join("hub-cache");
    cache_model(
        &cache,
        "acme/tiny-bert",
        "main",
        COMMIT_MAIN,
        &workspace.path().join("models/tiny"),
    );
    let environment = [("HF_HUB_CACHE", cache.clone())];
    workspace.experiment(
        "missing.toml",
        &experiment("hub = \"acme/other-model\"", ""),
    );
    workspace.experiment(
        "revision.toml",
        &experiment("hub = \"acme/tiny-bert\"\nrevision = \"v9\"", ""),
    );
    let ran = bertlab(
        &workspace,
        &["plan", "experiments/missing.toml"],
        &environment,
    );
    assert_eq!(ran.status, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(
            "model acme/other-model is not in the Hugging Face cache at [WORKSPACE]/hub-cache"
        ),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("hf download acme/other-model"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("missing.toml"), "{}", ran.stderr);

    let ran = bertlab(
        &workspace,
        &["plan", "experiments/revision.toml"],
        &environment,
    );
    assert_eq!(ran.status, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("v9"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("main"),
        "the refs that exist: {}",
        ran.stderr
    );
    assert!(
        ran.stderr
            .contains("hf download acme/tiny-bert --revision v9"),
        "{}",
        ran.stderr
    );
    assert!(!workspace.store_exists());
}

/// A directory of each family plans; another `model_type`, a decoder, a kind of position the
/// encoder does not compute, and `max_length` beyond RoBERTa's usable positions are refused at
/// plan time, naming the file and what was found.
#[test]
fn unsupported_models_are_refused_at_plan_time() {
    let workspace = families_workspace();
    for family in FAMILIES {
        let path = workspace
            .path()
            .join("experiments")
            .join(format!("{family}.toml"));
        let planned = bertlab::plan::plan(
            &[path],
            &bertlab::plan::PlanOptions::default(),
            &mut bertlab::plan::fingerprint::Fingerprinter::new(None),
        )
        .unwrap_or_else(|error| panic!("{family}: {error}"));
        let options = &planned.runs[0].spec.model.options;
        // The family's own defaults: DistilBERT's `seq_classif_dropout` is 0.2, ModernBERT's
        // dropouts are all 0.
        let (classifier, hidden) = match family {
            "distilbert" => (0.2, 0.1),
            "modernbert" | "modernbert-mean" => (0.0, 0.0),
            _ => (0.1, 0.1),
        };
        assert_eq!(options.classifier_dropout, classifier, "{family}");
        assert_eq!(options.hidden_dropout, hidden, "{family}");
    }

    let edit = |name: &str, change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let folder = workspace.path().join("models").join(name);
        copy_directory(&workspace.path().join("models/tiny"), &folder);
        let path = folder.join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        change(config.as_object_mut().unwrap());
        std::fs::write(&path, config.to_string()).unwrap();
    };
    edit("gpt", &|config| {
        config.insert("model_type".into(), "gpt2".into());
    });
    edit("decoder", &|config| {
        config.insert(
            "architectures".into(),
            serde_json::json!(["BertLMHeadModel"]),
        );
        config.insert("is_decoder".into(), true.into());
    });
    edit("relative", &|config| {
        config.insert("position_embedding_type".into(), "relative_key".into());
    });
    // DeBERTa-v2-xlarge's convolution after the first layer.
    let folder = workspace.path().join("models/convolution");
    copy_directory(&workspace.path().join("models/deberta-v2"), &folder);
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap())
            .unwrap();
    config["conv_kernel_size"] = 3.into();
    std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
    workspace.experiment(
        "convolution.toml",
        &experiment("path = \"../models/convolution\"", ""),
    );
    workspace.experiment("gpt.toml", &experiment("path = \"../models/gpt\"", ""));
    workspace.experiment(
        "relative.toml",
        &experiment("path = \"../models/relative\"", ""),
    );
    workspace.experiment(
        "decoder.toml",
        &experiment("path = \"../models/decoder\"", ""),
    );
    workspace.experiment(
        "long.toml",
        &experiment("path = \"../models/roberta\"", "")
            .replace("max_length = 32", "max_length = 65"),
    );
    for name in ["gpt", "decoder", "relative", "long", "convolution"] {
        let ran = bertlab(
            &workspace,
            &["plan", &format!("experiments/{name}.toml")],
            &[],
        );
        assert_eq!(ran.status, Some(2), "{name}: {}", ran.stderr);
        assert!(!workspace.store_exists(), "{name}");
        insta::assert_snapshot!(format!("refused_{name}"), ran.stderr);
    }
}

/// Each family trains end to end from its directory, and its saved model keeps its family.
#[test]
fn every_family_trains_end_to_end() {
    let workspace = families_workspace();
    for family in FAMILIES {
        let ran = bertlab(
            &workspace,
            &["run", &format!("experiments/{family}.toml")],
            &[],
        );
        assert_eq!(ran.status, Some(0), "{family}: {}", ran.stderr);
    }
    let directories = common::run_directories(&workspace.path().join("runs"));
    assert_eq!(directories.len(), FAMILIES.len());
    let mut families: Vec<String> = directories
        .iter()
        .map(|directory| {
            let config: Value = serde_json::from_str(
                &std::fs::read_to_string(directory.join("model/config.json")).unwrap(),
            )
            .unwrap();
            assert!(directory.join("predictions.csv").is_file());
            config["model_type"].as_str().unwrap().to_string()
        })
        .collect();
    families.sort();
    assert_eq!(
        families,
        [
            "deberta-v2",
            "deberta-v2",
            "distilbert",
            "electra",
            "modernbert",
            "modernbert",
            "roberta",
            "xlm-roberta"
        ]
    );
}
