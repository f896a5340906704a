//! `bertlab predict HASH`: a finished run's model on texts given on the command line or in a file;
//! a table on stdout, or a CSV / JSON Lines file.

use std::io::Write;

use crate::commands::Outcome;
use crate::report::tables;
use crate::store::RunStore;

/// `bertlab predict`.
pub fn execute(
    store: &RunStore,
    options: &crate::commands::cli::PredictArgs,
) -> anyhow::Result<Outcome> {
    use crate::train::predict::{self, Predictor};

    let hash = store.resolve(&options.hash)?;
    let predictor = Predictor::load(&store.run_directory(&hash))?;
    let texts: Vec<String> = match &options.input {
        Some(path) => predict::read_texts(path, &options.text_column, "--text-column")?,
        None if options.texts.is_empty() => {
            anyhow::bail!(
                "nothing to predict: give --text TEXT (repeatable) or --input FILE --output FILE"
            )
        }
        None => options.texts.clone(),
    };
    let text_pairs: Option<Vec<String>> = match (&options.input, &options.text_pair_column) {
        (Some(path), Some(column)) => {
            Some(predict::read_texts(path, column, "--text-pair-column")?)
        }
        _ if !options.text_pairs.is_empty() => Some(options.text_pairs.clone()),
        _ => None,
    };
    let started = std::time::Instant::now();
    let references: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pair_references: Option<Vec<&str>> = text_pairs
        .as_ref()
        .map(|pairs| pairs.iter().map(String::as_str).collect());
    let predictions =
        predictor.predict(&references, pair_references.as_deref(), options.batch_size)?;
    let seconds = started.elapsed().as_secs_f64();
    let separator = predictor.label_separator.as_str();
    match &options.output {
        Some(path) => {
            let extension = path
                .extension()
                .map(|extension| extension.to_string_lossy().to_ascii_lowercase());
            let bytes = match extension.as_deref() {
                Some("csv") => predict::predictions_csv(
                    &texts,
                    text_pairs.as_deref(),
                    &predictor.classes,
                    separator,
                    &predictions,
                ),
                Some("jsonl") | Some("ndjson") => predict::predictions_jsonl(
                    &texts,
                    text_pairs.as_deref(),
                    &predictor.classes,
                    predictor.threshold.is_some(),
                    &predictions,
                ),
                _ => anyhow::bail!(
                    "{}: write predictions to a .csv or .jsonl file",
                    path.display()
                ),
            };
            crate::support::atomic_file::write(path, &bytes)?;
        }
        None => {
            let mut headers = vec!["predicted".to_string()];
            headers.extend(predictor.classes.iter().cloned());
            headers.push("text".into());
            if text_pairs.is_some() {
                headers.push("text_pair".into());
            }
            let rows: Vec<Vec<String>> = texts
                .iter()
                .zip(&predictions)
                .enumerate()
                .map(|(index, (text, prediction))| {
                    let names = prediction.names(&predictor.classes, separator);
                    let mut row = vec![if names.is_empty() {
                        "(none)".to_string()
                    } else {
                        names
                    }];
                    row.extend(prediction.probabilities.iter().map(|p| format!("{p:.4}")));
                    row.push(text.clone());
                    if let Some(pairs) = &text_pairs {
                        row.push(pairs[index].clone());
                    }
                    row
                })
                .collect();
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(tables::text_table(&headers, &rows).as_bytes())?;
        }
    }
    eprintln!(
        "predicted {} with run {} in {:.2} s ({:.1} texts/s)",
        tables::count_of(texts.len(), "text"),
        hash.short(),
        seconds,
        texts.len() as f64 / seconds.max(1e-9)
    );
    Ok(Outcome::Success)
}
