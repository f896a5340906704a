//! `bertlab report`: one self-contained HTML page (the results table, learning curves drawn as
//! SVG with plotters, the confusion matrix of the best run, each search's picture), plus `curves.svg` in every run
//! directory. Everything here is a pure function from run files to text.

use plotters::prelude::*;

use crate::report::tables::count_of;
use crate::store::RunStore;
use crate::store::results_index::RunRow;
use crate::store::run_files::{self, EpochRow, read_metrics};

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One chart: a line per series `(label, points)`.
pub fn line_chart_svg(
    title: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 360)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let points = series.iter().flat_map(|(_, points)| points.iter());
        let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in points {
            if y.is_finite() {
                x_max = x_max.max(x);
                y_min = y_min.min(y);
                y_max = y_max.max(y);
            }
        }
        if !y_min.is_finite() {
            (y_min, y_max) = (0.0, 1.0);
        }
        let margin = ((y_max - y_min) * 0.1).max(1e-3);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5f64..x_max + 0.5, (y_min - margin)..(y_max + margin))
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_label)
            .x_labels(x_max as usize + 1)
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .light_line_style(RGBColor(245, 245, 245))
            .draw()
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        for (index, (label, points)) in series.iter().enumerate() {
            let color = COLORS[index % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|error| anyhow::anyhow!("{error}"))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&point| Circle::new(point, 3, color.filled())),
                )
                .map_err(|error| anyhow::anyhow!("{error}"))?;
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|error| anyhow::anyhow!("{error}"))?;
        }
        root.present().map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    Ok(svg)
}

/// A run's `curves.svg`: training and validation loss per epoch.
pub fn run_curves_svg(rows: &[EpochRow]) -> anyhow::Result<String> {
    let points = |pick: fn(&EpochRow) -> f64| -> Vec<(f64, f64)> {
        rows.iter()
            .map(|row| (row.epoch as f64, pick(row)))
            .collect()
    };
    line_chart_svg(
        "loss per epoch",
        "loss",
        &[
            ("train".into(), points(|row| row.train_loss)),
            ("validation".into(), points(|row| row.validation_loss)),
        ],
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The HTML page: a results table (`headers`, `cells`), validation macro-F1 and loss curves of
/// every done run, and the confusion matrix of the best run.
pub fn report_html(
    store: &RunStore,
    rows: &[RunRow],
    headers: &[String],
    cells: &[Vec<String>],
    searches: &[crate::search::SearchRecord],
) -> anyhow::Result<String> {
    let mut f1_series = Vec::new();
    let mut loss_series = Vec::new();
    for row in rows {
        if row.result.is_none() {
            continue;
        }
        let metrics = read_metrics(&store.run_directory(&row.hash)).unwrap_or_default();
        let label = row.hash.short()[..8].to_string();
        f1_series.push((
            label.clone(),
            metrics
                .iter()
                .map(|epoch| (epoch.epoch as f64, epoch.validation_macro_f1))
                .collect(),
        ));
        loss_series.push((
            label,
            metrics
                .iter()
                .map(|epoch| (epoch.epoch as f64, epoch.validation_loss))
                .collect(),
        ));
    }
    let best = rows
        .iter()
        .filter_map(|row| row.result.as_ref().map(|result| (row, result)))
        .max_by(|a, b| a.1.validation.macro_f1.total_cmp(&b.1.validation.macro_f1));

    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>bertlab report</title>\n<style>\n\
         body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }\n\
         table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }\n\
         th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }\n\
         th { background: #f3f3f3; }\n\
         td.text, th.text { text-align: left; font-family: monospace; }\n\
         .charts { display: flex; flex-wrap: wrap; gap: 1em; }\n\
         .table-box { max-width: 100%; overflow-x: auto; margin: 1em 0; }\n\
         .table-box table { margin: 0; }\n\
         </style>\n</head>\n<body>\n<h1>bertlab report</h1>\n",
    );
    html.push_str(&format!(
        "<p>{} in <code>{}</code>, generated {}.</p>\n<h2>Results</h2>\n<div class=\"table-box\">\n<table>\n<tr>",
        count_of(rows.len(), "run"),
        escape(&store.root().display().to_string()),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    for header in headers {
        html.push_str(&format!("<th>{}</th>", escape(header)));
    }
    html.push_str("</tr>\n");
    for row in cells {
        html.push_str("<tr>");
        for (index, cell) in row.iter().enumerate() {
            let class = if index < 3 { " class=\"text\"" } else { "" };
            html.push_str(&format!("<td{class}>{}</td>", escape(cell)));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n</div>\n");
    if !f1_series.is_empty() {
        html.push_str("<h2>Learning curves</h2>\n<div class=\"charts\">\n");
        html.push_str(&line_chart_svg(
            "validation macro-F1",
            "macro-F1",
            &f1_series,
        )?);
        html.push_str(&line_chart_svg("validation loss", "loss", &loss_series)?);
        html.push_str("</div>\n");
    }
    if let Some((row, result)) = best {
        let classes: Vec<String> =
            crate::model::checkpoint::labels_of(&crate::model::config::ModelConfig::load(
                &store
                    .run_directory(&row.hash)
                    .join(run_files::MODEL_DIRECTORY)
                    .join("config.json"),
            )?)
            .unwrap_or_else(|| {
                (0..result.validation.per_class.len())
                    .map(|index| index.to_string())
                    .collect()
            });
        if let Some(figures) = &result.validation.multi_label {
            html.push_str(&format!(
                "<h2>Per-class decisions of the best run</h2>\n<p>Run <code>{}</code>, validation split at the kept epoch {} (multi-label: micro-F1 {:.4}, macro-F1 {:.4}, subset accuracy {:.4}, Hamming loss {:.4}); each class decided on its own.</p>\n<div class=\"table-box\">\n<table>\n<tr><th>class</th><th>true positives</th><th>false positives</th><th>false negatives</th><th>true negatives</th><th>F1</th></tr>\n",
                row.hash.short(),
                result.best_epoch,
                figures.micro_f1,
                result.validation.macro_f1,
                figures.subset_accuracy,
                figures.hamming_loss
            ));
            for ((class, counts), metrics) in classes
                .iter()
                .zip(&figures.class_counts)
                .zip(&result.validation.per_class)
            {
                html.push_str(&format!(
                    "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td></tr>\n",
                    escape(class),
                    counts.true_positives,
                    counts.false_positives,
                    counts.false_negatives,
                    counts.true_negatives,
                    metrics.f1
                ));
            }
            html.push_str("</table>\n</div>\n");
        }
        if result.validation.multi_label.is_none() {
            html.push_str(&format!(
            "<h2>Confusion matrix of the best run</h2>\n<p>Run <code>{}</code>, validation split at the kept epoch {} (macro-F1 {:.4}); rows: gold, columns: predicted.</p>\n<div class=\"table-box\">\n<table>\n<tr><th></th>",
            row.hash.short(),
            result.best_epoch,
            result.validation.macro_f1
        ));
            for class in &classes {
                html.push_str(&format!("<th>{}</th>", escape(class)));
            }
            html.push_str("</tr>\n");
            for (gold, counts) in classes.iter().zip(&result.validation.confusion) {
                let total: usize = counts.iter().sum::<usize>().max(1);
                html.push_str(&format!("<tr><th>{}</th>", escape(gold)));
                for count in counts {
                    let shade = 255 - (*count as f64 / total as f64 * 160.0) as u8;
                    html.push_str(&format!(
                        "<td style=\"background: rgb({shade},{shade},255)\">{count}</td>"
                    ));
                }
                html.push_str("</tr>\n");
            }
            html.push_str("</table>\n</div>\n");
        }
    }
    for record in searches {
        html.push_str(&format!(
            "<h2>Search {} of {}</h2>\n<p>{}</p>\n<div class=\"charts\">\n",
            &record.search[..12],
            escape(&record.experiment),
            escape(&crate::report::search::search_summary(record))
        ));
        for chart in crate::report::search::search_charts_svg(record)? {
            html.push_str(&chart);
        }
        html.push_str("</div>\n<div class=\"table-box\">\n<pre>");
        html.push_str(&escape(&crate::report::search::search_table(record)));
        html.push_str("</pre>\n</div>\n");
    }
    html.push_str("</body>\n</html>\n");
    Ok(html)
}
