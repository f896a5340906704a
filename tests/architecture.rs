//! The house rules of docs/architecture.md, checked on the source: every stage uses only the
//! stages it may use, so dependencies flow one way; every stage's `mod.rs` says what it owns.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a stage may use.
enum Uses {
    /// Every stage listed before it.
    Below,
    /// These stages only.
    Only(&'static [&'static str]),
}

use Uses::{Below, Only};

/// The stages from the bottom up, and what each may use (docs/architecture.md, "What each folder
/// owns"). The model chain and the store chain meet in `train`.
const STAGES: &[(&str, Uses)] = &[
    ("support", Only(&[])),
    ("experiment", Below),
    ("plan", Below),
    ("data", Below),
    ("tokenize", Below),
    ("model", Only(&["support"])),
    ("metrics", Only(&["support", "experiment", "plan"])),
    ("store", Only(&["support", "experiment", "plan", "metrics"])),
    ("train", Below),
    ("search", Below),
    ("sweep", Below),
    ("report", Below),
    ("commands", Below),
];

/// The stages stage number `index` may use.
fn allowed(index: usize) -> Vec<&'static str> {
    match &STAGES[index].1 {
        Below => STAGES[..index].iter().map(|(stage, _)| *stage).collect(),
        Only(stages) => stages.to_vec(),
    }
}

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `.rs` files of a stage: its folder, or `src/<stage>.rs` for a one-file stage.
fn stage_files(stage: &str) -> Vec<PathBuf> {
    let folder = source_root().join(stage);
    if folder.is_dir() {
        let mut files = Vec::new();
        let mut pending = vec![folder];
        while let Some(folder) = pending.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|extension| extension == "rs") {
                    files.push(path);
                }
            }
        }
        files.sort();
        files
    } else {
        let file = source_root().join(format!("{stage}.rs"));
        assert!(
            file.is_file(),
            "stage {stage}: neither src/{stage}/ nor src/{stage}.rs"
        );
        vec![file]
    }
}

/// The top-level modules a file names through `crate::`, as `use crate::x::...`, a path in code
/// or a doc link, and inside `use crate::{x, y::z}`.
fn stages_named(text: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let identifier = |rest: &str| -> String {
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (index, _) in text.match_indices("crate::") {
        let rest = &text[index + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = identifier(item.trim());
                if !name.is_empty() {
                    named.insert(name);
                }
            }
        } else {
            let name = identifier(rest);
            if !name.is_empty() {
                named.insert(name);
            }
        }
    }
    named
}

#[test]
fn the_stage_names_find_every_form_of_a_path() {
    let text = "use crate::plan::spec::RunHash;\nuse crate::{data, store::RunStore};\n\
                /// [`x`](crate::model::encoder::Batch)\nlet a = crate::support::random::x();";
    let named: Vec<String> = stages_named(text).into_iter().collect();
    assert_eq!(named, ["data", "model", "plan", "store", "support"]);
}

#[test]
fn lib_rs_declares_exactly_the_stages() {
    let lib = std::fs::read_to_string(source_root().join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .map(|name| name.trim_end_matches(';'))
        .collect();
    let known: BTreeSet<&str> = STAGES.iter().map(|(stage, _)| *stage).collect();
    assert_eq!(
        declared, known,
        "src/lib.rs and this test's table (and docs/architecture.md) must list the same stages"
    );
}

#[test]
fn every_stage_uses_only_the_stages_below_it() {
    let known: BTreeSet<&str> = STAGES.iter().map(|(stage, _)| *stage).collect();
    let mut violations = Vec::new();
    for (index, (stage, _)) in STAGES.iter().enumerate() {
        let allowed = allowed(index);
        for name in &allowed {
            assert!(
                STAGES[..index].iter().any(|(below, _)| below == name),
                "the table lets {stage} use {name}, which is not below it"
            );
        }
        for file in stage_files(stage) {
            let text = std::fs::read_to_string(&file).unwrap();
            for named in stages_named(&text) {
                if named == *stage {
                    continue;
                }
                assert!(
                    known.contains(named.as_str()),
                    "{} names crate::{named}, which is not a stage",
                    file.display()
                );
                if !allowed.contains(&named.as_str()) {
                    violations.push(format!(
                        "{} ({stage}) uses crate::{named}",
                        file.strip_prefix(source_root()).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies must flow one way (docs/architecture.md):\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_stage_says_what_it_owns() {
    for (stage, _) in STAGES {
        let folder = source_root().join(stage);
        let entry = if folder.is_dir() {
            folder.join("mod.rs")
        } else {
            source_root().join(format!("{stage}.rs"))
        };
        let text = std::fs::read_to_string(&entry).unwrap();
        assert!(
            text.starts_with("//! "),
            "{} must start with a //! comment saying what the stage owns",
            entry.display()
        );
        let header: String = text
            .lines()
            .take_while(|line| line.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        for word in ["Uses", "Never"] {
            assert!(
                header.contains(word),
                "{}'s //! comment must say what the stage uses and never uses (no `{word}`)",
                entry.display()
            );
        }
    }
}
