//! `bertlab compare`: the settings that differ between runs' specs, their figures side by side,
//! and validation macro-F1 per epoch; a pure function of the run files.

use crate::plan::spec::RunHash;
use crate::report::tables::text_table;
use crate::store::RunStore;
use crate::store::results_index::parameters_of;
use crate::store::run_files::{self, EpochRow, RunResult, read_metrics};

/// `bertlab compare`: the settings that differ between the runs, then their figures side by
/// side, then validation macro-F1 per epoch.
pub fn compare_text(store: &RunStore, hashes: &[RunHash]) -> anyhow::Result<String> {
    let mut headers = vec![String::new()];
    headers.extend(hashes.iter().map(|hash| hash.short().to_string()));
    let mut specs = Vec::new();
    for hash in hashes {
        let spec: serde_json::Value = serde_json::from_slice(&store.spec_bytes(hash)?)?;
        let mut parameters = parameters_of(&spec);
        parameters.push(("labels".into(), spec["labels"].clone()));
        specs.push(parameters);
    }
    let mut names: Vec<String> = Vec::new();
    for parameters in &specs {
        for (name, _) in parameters {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let value = |parameters: &[(String, serde_json::Value)], name: &str| {
        parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| match value {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "-".into())
    };
    let mut differing = Vec::new();
    for name in &names {
        let cells: Vec<String> = specs.iter().map(|spec| value(spec, name)).collect();
        if cells.iter().any(|cell| cell != &cells[0]) {
            let mut row = vec![name.clone()];
            row.extend(cells);
            differing.push(row);
        }
    }
    let mut out = String::from("settings that differ\n");
    if differing.is_empty() {
        out.push_str("(none: the specs differ only in their files' content)\n");
    } else {
        out.push_str(&text_table(&headers, &differing));
    }

    let mut figures: Vec<Vec<String>> = [
        "status",
        "kept epoch",
        "val_loss",
        "val_accuracy",
        "val_macro_f1",
        "test_accuracy",
        "test_macro_f1",
        "train_seconds",
        "samples/s",
    ]
    .iter()
    .map(|name| vec![name.to_string()])
    .collect();
    let mut curves: Vec<Vec<EpochRow>> = Vec::new();
    let mut results: Vec<Option<RunResult>> = Vec::new();
    for hash in hashes {
        let directory = store.run_directory(hash);
        figures[0].push(store.status(hash)?.to_string());
        let result = run_files::read_result(&directory).ok();
        let cells: Vec<String> = match &result {
            Some(result) => vec![
                format!("{}/{}", result.best_epoch, result.epochs_run),
                format!("{:.4}", result.validation.loss),
                format!("{:.4}", result.validation.accuracy),
                format!("{:.4}", result.validation.macro_f1),
                result
                    .test
                    .as_ref()
                    .map_or("-".into(), |test| format!("{:.4}", test.accuracy)),
                result
                    .test
                    .as_ref()
                    .map_or("-".into(), |test| format!("{:.4}", test.macro_f1)),
                format!("{:.0}", result.train_seconds),
                format!("{:.1}", result.train_samples_per_second),
            ],
            None => vec!["-".into(); 8],
        };
        for (row, cell) in figures[1..].iter_mut().zip(cells) {
            row.push(cell);
        }
        results.push(result);
        curves.push(read_metrics(&directory).unwrap_or_default());
    }
    // Multi-label runs: their own figures after the common ones.
    if results
        .iter()
        .flatten()
        .any(|result| result.validation.multi_label.is_some())
    {
        type Pick = fn(&RunResult) -> Option<f64>;
        let rows: [(&str, Pick); 4] = [
            ("val_micro_f1", |r| {
                r.validation.multi_label.as_ref().map(|f| f.micro_f1)
            }),
            ("val_samples_f1", |r| {
                r.validation.multi_label.as_ref().map(|f| f.samples_f1)
            }),
            ("val_hamming_loss", |r| {
                r.validation.multi_label.as_ref().map(|f| f.hamming_loss)
            }),
            ("test_micro_f1", |r| {
                r.test
                    .as_ref()
                    .and_then(|test| test.multi_label.as_ref())
                    .map(|f| f.micro_f1)
            }),
        ];
        let at = figures.len() - 2;
        for (offset, (name, pick)) in rows.into_iter().enumerate() {
            let mut row = vec![name.to_string()];
            row.extend(results.iter().map(|result| {
                result
                    .as_ref()
                    .and_then(pick)
                    .map_or("-".into(), |value| format!("{value:.4}"))
            }));
            figures.insert(at + offset, row);
        }
    }
    out.push_str("\nfigures (kept epoch)\n");
    out.push_str(&text_table(&headers, &figures));
    let epochs = curves.iter().map(Vec::len).max().unwrap_or(0);
    if epochs > 0 {
        let rows: Vec<Vec<String>> = (0..epochs)
            .map(|epoch| {
                let mut row = vec![format!("epoch {}", epoch + 1)];
                row.extend(curves.iter().map(|curve| {
                    curve
                        .get(epoch)
                        .map_or("-".into(), |row| format!("{:.4}", row.validation_macro_f1))
                }));
                row
            })
            .collect();
        out.push_str("\nvalidation macro-F1 per epoch\n");
        out.push_str(&text_table(&headers, &rows));
    }
    Ok(out)
}
