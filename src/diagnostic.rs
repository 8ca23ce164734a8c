//! Problems found in a file the user wrote, reported as `FILE:LINE:COLUMN: message`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one file, with a 1-based line and column where they are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    /// A problem located by a byte span of `text` (the file's contents).
    pub fn at_span(file: &Path, text: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let (line, column) = span.map_or((1, 1), |s| line_column(text, s.start));
        Self { file: file.to_path_buf(), line, column, message: message.into() }
    }

    /// A problem with the file as a whole (missing, unreadable).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), line: 1, column: 1, message: message.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    // Back off to a char boundary so that slicing never panics on a span inside a character.
    let offset = (0..=offset).rev().find(|&o| text.is_char_boundary(o)).unwrap_or(0);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A list of diagnostics that is itself an error, printed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Collects the problems of one file the user wrote, located in its text, so that every problem
/// is reported at once (the configuration and the reply file are both checked this way).
pub struct Collector<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    errors: Vec<Diagnostic>,
}

impl<'a> Collector<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Collector { path, text, errors: Vec::new() }
    }

    /// A problem at a byte span of the text; None (or an empty span at 0, which is what a value
    /// that was not in the file carries) is the file as a whole.
    pub fn error_at(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let span = span.filter(|s| !(s.is_empty() && s.start == 0));
        self.errors.push(Diagnostic::at_span(self.path, self.text, span, message));
    }

    /// A problem with a value read from the file.
    pub fn error<T>(&mut self, at: &toml::Spanned<T>, message: impl Into<String>) {
        self.error_at(Some(at.span()), message);
    }

    /// Where `needle` is written inside the value at `at` (for a placeholder in a long text), else
    /// the value itself. Escapes can make the raw text differ; then the value's start will do.
    pub fn span_within<T>(&self, at: &toml::Spanned<T>, needle: &str) -> Range<usize> {
        let span = at.span();
        match self.text.get(span.clone()).and_then(|raw| raw.find(needle)) {
            Some(p) => span.start + p..span.start + p + needle.len(),
            None => span,
        }
    }

    /// `value` if no problem was found, else every problem, in the order they were found.
    pub fn finish<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.errors.is_empty() { Ok(value) } else { Err(Diagnostics(self.errors)) }
    }

    /// Like `finish`, with the problems in file order (stable: problems at one place keep theirs).
    pub fn finish_in_file_order<T>(mut self, value: T) -> Result<T, Diagnostics> {
        self.errors.sort_by_key(|d| (d.line, d.column));
        self.finish(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_column(text, 9), (2, 3));
        // An offset inside a character or past the end does not panic.
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(line_column(text, 999), (3, 1));
    }
}
