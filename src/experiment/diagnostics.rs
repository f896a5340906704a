//! Problems found in an input file, located by byte span, and their rendering with file, line,
//! column, the source line and a caret (through `codespan-reporting`).
//!
//! Library code collects [`Problem`]s into an [`InputError`]; `main` renders it once, with colour
//! only when stderr is a terminal and `NO_COLOR` is unset.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, Chars, Config};

/// A value together with where it was written, when it was written at all.
#[derive(Clone, Debug, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub span: Option<Range<usize>>,
}

impl<T> Located<T> {
    pub fn new(value: T, span: Option<Range<usize>>) -> Self {
        Located { value, span }
    }
}

/// One thing wrong with an input file.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub message: String,
    pub span: Option<Range<usize>>,
    /// Text shown under the caret.
    pub label: Option<String>,
    /// A suggestion: what to write instead.
    pub help: Option<String>,
}

impl Problem {
    pub fn new(message: impl Into<String>, span: Option<Range<usize>>) -> Self {
        Problem {
            message: message.into(),
            span,
            label: None,
            help: None,
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
}

/// The source text of an input file, shared by the problems found in it.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: Arc<str>,
}

impl Source {
    pub fn new(path: &Path, text: impl Into<Arc<str>>) -> Self {
        Source {
            path: path.to_path_buf(),
            text: text.into(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }
}

/// Everything wrong with one input file. Nothing has been written when this is returned.
#[derive(Debug)]
pub struct InputError {
    pub source: Source,
    pub problems: Vec<Problem>,
}

impl InputError {
    pub fn new(source: Source, problems: Vec<Problem>) -> Self {
        InputError { source, problems }
    }

    /// Renders every problem as an error; `color` adds ANSI colours.
    pub fn render(&self, color: bool) -> String {
        let mut out = render_problems(&self.source, &self.problems, Severity::Error, color);
        let count = self.problems.len();
        if count > 1 {
            out.push_str(&format!(
                "{count} problems in {}\n",
                self.source.path.display()
            ));
        }
        out
    }
}

/// How a problem is headed: `error:` or `warning:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// Renders problems of one file with file, line, column, source line and caret.
pub fn render_problems(
    source: &Source,
    problems: &[Problem],
    severity: Severity,
    color: bool,
) -> String {
    {
        let file = SimpleFile::new(source.path.display().to_string(), &*source.text);
        let config = Config {
            chars: Chars::ascii(),
            ..Config::default()
        };
        let mut out = Vec::new();
        for problem in problems {
            let diagnostic = to_diagnostic(problem, source, severity);
            let result = if color {
                let mut writer = term::termcolor::Ansi::new(&mut out);
                term::emit_to_write_style(&mut writer, &config, &file, &diagnostic)
            } else {
                term::emit_to_io_write(&mut out, &config, &file, &diagnostic)
            };
            if result.is_err() {
                // A span outside the file cannot be drawn: fall back to the message alone.
                out.extend_from_slice(format!("error: {}\n", problem.message).as_bytes());
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn to_diagnostic(problem: &Problem, source: &Source, severity: Severity) -> Diagnostic<()> {
    let diagnostic = match severity {
        Severity::Error => Diagnostic::error(),
        Severity::Warning => Diagnostic::warning(),
    };
    let mut diagnostic = diagnostic.with_message(problem.message.clone());
    match &problem.span {
        Some(span) => {
            let end = span.end.min(source.text.len());
            let start = span.start.min(end);
            let mut label = Label::primary((), start..end);
            if let Some(text) = &problem.label {
                label = label.with_message(text.clone());
            }
            diagnostic = diagnostic.with_labels(vec![label]);
        }
        None => {
            let mut note = format!("in {}", source.path.display());
            if let Some(text) = &problem.label {
                note.push_str(": ");
                note.push_str(text);
            }
            diagnostic = diagnostic.with_notes(vec![note]);
        }
    }
    if let Some(help) = &problem.help {
        diagnostic.notes.push(format!("help: {help}"));
    }
    diagnostic
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.render(false).trim_end())
    }
}

impl std::error::Error for InputError {}

/// The problems of several input files, each rendered on its own.
#[derive(Debug)]
pub struct InputErrors(pub Vec<InputError>);

impl InputErrors {
    pub fn render(&self, color: bool) -> String {
        self.0.iter().map(|error| error.render(color)).collect()
    }
}

impl fmt::Display for InputErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.render(false).trim_end())
    }
}

impl std::error::Error for InputErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let source = Source::new(Path::new("x.toml"), "a = 1\nbé = 2\n");
        assert_eq!(source.line_column(0), (1, 1));
        assert_eq!(source.line_column(6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(source.line_column(9), (2, 3));
    }

    #[test]
    fn rendering_shows_file_line_column_and_caret() {
        let source = Source::new(Path::new("exp.toml"), "[train]\nlearing_rate = 2e-5\n");
        let error = InputError::new(
            source,
            vec![
                Problem::new("unknown key `learing_rate` in [train]", Some(8..20))
                    .label("unknown key")
                    .help("did you mean `learning_rate`?"),
            ],
        );
        let text = error.render(false);
        assert!(text.contains("exp.toml:2:1"), "{text}");
        assert!(text.contains("learing_rate = 2e-5"), "{text}");
        assert!(text.contains("^^^^^^^^^^^^ unknown key"), "{text}");
        assert!(
            text.contains("help: did you mean `learning_rate`?"),
            "{text}"
        );
    }
}
