//! The documentation cannot drift from the code: the key reference in docs/experiment-file.md is
//! the one generated from the schema, and the README's commands exist.

#[test]
fn experiment_file_reference_matches_the_schema() {
    let documented = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/experiment-file.md"
    ))
    .unwrap();
    let generated = bertlab::experiment::schema::markdown_reference();
    assert!(
        documented.contains(&generated),
        "docs/experiment-file.md must contain this table, generated from src/experiment/schema.rs:\n\n{generated}"
    );
}

#[test]
fn example_experiments_parse() {
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments");
    let mut count = 0;
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            bertlab::experiment::ExperimentFile::load(&path)
                .unwrap_or_else(|error| panic!("{error}"));
            count += 1;
        }
    }
    assert!(count > 0);
}

#[test]
fn search_reference_matches_the_schema() {
    let documented = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/experiment-file.md"
    ))
    .unwrap();
    let generated = bertlab::experiment::schema::markdown_search_reference();
    assert!(
        documented.contains(&generated),
        "docs/experiment-file.md must contain this table, generated from src/experiment/schema.rs:\n\n{generated}"
    );
}
