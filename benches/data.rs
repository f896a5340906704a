//! The whole data pipeline on the example corpus, as `scripts/bench_data_pandas.py` does it in
//! Python: read, decode (lossy), filter confidence >= 0.6, strip, drop empty, drop duplicates,
//! map labels, split, and tokenize every split at max_length 128.
//!
//!     scripts/fetch-assets.sh
//!     cargo bench --bench data
//!     python3 scripts/bench_data_pandas.py     # needs pandas and transformers
//!
//! Prints each run's time from process start to tokenized splits, and the median.

use std::path::Path;
use std::time::Instant;

use bertlab::data;
use bertlab::plan::fingerprint::Fingerprinter;
use bertlab::plan::{PlanOptions, plan};
use bertlab::tokenize::tokenizer;

const RUNS: usize = 7;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let experiment = root.join("experiments/tweets-sentiment.toml");
    if !root.join("assets/data/tweets.csv").is_file() {
        anyhow::bail!("the example assets are missing: run scripts/fetch-assets.sh");
    }
    let mut seconds = Vec::new();
    for run in 0..RUNS {
        let start = Instant::now();
        let planned = plan(
            std::slice::from_ref(&experiment),
            &PlanOptions::default(),
            &mut Fingerprinter::new(None),
        )?;
        let first = &planned.runs[0];
        let prepared = data::prepare(first)?;
        let cleaned = start.elapsed().as_secs_f64();
        let loaded = tokenizer::load(&first.settings.model_path)?;
        let mut tokens = 0;
        for split in [&prepared.train, &prepared.validation, &prepared.test] {
            let texts: Vec<&str> = split.iter().map(|example| example.text.as_str()).collect();
            tokens += tokenizer::encode_all(&loaded, &texts, 128)?
                .iter()
                .map(Vec::len)
                .sum::<usize>();
        }
        let total = start.elapsed().as_secs_f64();
        println!(
            "run {run}: {:.3} s (clean and split {:.3} s, tokenize {:.3} s); {} + {} + {} texts, {tokens} tokens",
            total,
            cleaned,
            total - cleaned,
            prepared.train.len(),
            prepared.validation.len(),
            prepared.test.len()
        );
        seconds.push(total);
    }
    seconds.sort_by(f64::total_cmp);
    println!(
        "median {:.3} s from start to tokenized splits",
        seconds[RUNS / 2]
    );
    Ok(())
}
