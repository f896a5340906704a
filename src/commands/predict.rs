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
        Some(path) => predict::read_texts(path, &options.text_column)?,
        None if options.texts.is_empty() => {
            anyhow::bail!(
                "nothing to predict: give --text TEXT (repeatable) or --input FILE --output FILE"
            )
        }
        None => options.texts.clone(),
    };
    let started = std::time::Instant::now();
    let references: Vec<&str> = texts.iter().map(String::as_str).collect();
    let predictions = predictor.predict(&references, options.batch_size)?;
    let seconds = started.elapsed().as_secs_f64();
    match &options.output {
        Some(path) => {
            let extension = path
                .extension()
                .map(|extension| extension.to_string_lossy().to_ascii_lowercase());
            let bytes = match extension.as_deref() {
                Some("csv") => predict::predictions_csv(&texts, &predictor.classes, &predictions),
                Some("jsonl") | Some("ndjson") => {
                    predict::predictions_jsonl(&texts, &predictor.classes, &predictions)
                }
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
            let rows: Vec<Vec<String>> = texts
                .iter()
                .zip(&predictions)
                .map(|(text, prediction)| {
                    let mut row = vec![predictor.classes[prediction.class as usize].clone()];
                    row.extend(prediction.probabilities.iter().map(|p| format!("{p:.4}")));
                    row.push(text.clone());
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
