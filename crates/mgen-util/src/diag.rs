//! Diagnostics: the one error type of every stage, rendered only by
//! codespan-reporting.
//!
//! Invariants: every user-facing failure is a [`Diagnostic`] with a stable
//! [`Code`] (listed in `docs/diagnostics.md`); labels point into files held by
//! a [`Sources`] map; rendering never panics, even for spans that run past
//! the end of a file (they are clamped).

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label as CsLabel, Severity};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term;
use std::ops::Range;

/// A file in the [`Sources`] map.
pub type FileId = usize;

/// The source files a run has read, for rendering diagnostics.
#[derive(Default)]
pub struct Sources {
    files: SimpleFiles<String, String>,
    lens: Vec<usize>,
}

impl Sources {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file and returns its id.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let text = text.into();
        self.lens.push(text.len());
        self.files.add(name.into(), text)
    }

    /// The text of a file.
    pub fn text(&self, id: FileId) -> &str {
        self.files
            .get(id)
            .map(|f| f.source().as_str())
            .unwrap_or("")
    }

    /// The name of a file.
    pub fn name(&self, id: FileId) -> &str {
        self.files.get(id).map(|f| f.name().as_str()).unwrap_or("?")
    }

    /// 1-based line and column of a byte offset (columns count characters).
    pub fn line_col(&self, id: FileId, offset: usize) -> (usize, usize) {
        let text = self.text(id);
        let mut off = offset.min(text.len());
        while !text.is_char_boundary(off) {
            off -= 1;
        }
        let before = &text[..off];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        (line, before[line_start..].chars().count() + 1)
    }

    /// The byte offset of a 1-based line and column, if the file has them.
    pub fn offset_of(&self, id: FileId, line: usize, col: usize) -> Option<usize> {
        let text = self.text(id);
        let line_start = if line == 1 {
            0
        } else {
            text.match_indices('\n').nth(line.checked_sub(2)?)?.0 + 1
        };
        let rest = &text[line_start..];
        let end = rest.find('\n').unwrap_or(rest.len());
        let col_off = rest[..end]
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(end))
            .nth(col.checked_sub(1)?)?;
        Some(line_start + col_off)
    }

    /// The length in bytes of the line holding `offset`.
    pub fn line_len_at(&self, id: FileId, offset: usize) -> usize {
        let text = self.text(id);
        let o = offset.min(text.len());
        let start = text.as_bytes()[..o]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let end = text.as_bytes()[o..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| o + i)
            .unwrap_or(text.len());
        end - start
    }

    fn clamp(&self, id: FileId, span: &Range<usize>) -> Range<usize> {
        let len = self.lens.get(id).copied().unwrap_or(0);
        let text = self.text(id);
        let fix = |mut o: usize| {
            o = o.min(len);
            while !text.is_char_boundary(o) {
                o -= 1;
            }
            o
        };
        let s = fix(span.start);
        let e = fix(span.end.max(span.start));
        s..e
    }
}

/// Stable diagnostic codes. The number never changes meaning; see
/// `docs/diagnostics.md` for one example of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// A file could not be read.
    E001,
    /// The file is not valid UTF-8.
    E002,
    /// A character that starts no token.
    E003,
    /// An unterminated string or comment.
    E004,
    /// A syntax error: unexpected token.
    E005,
    /// Unexpected end of file.
    E006,
    /// Nesting too deep or a file too large to parse.
    E007,
    /// A name declared twice.
    E010,
    /// A reference to an unknown name.
    E011,
    /// A name of the wrong kind (e.g. a task's base that is not a model).
    E012,
    /// An attribute given twice.
    E013,
    /// An unknown attribute, block or budget metric.
    E014,
    /// A required attribute or declaration is missing.
    E015,
    /// A value of the wrong form.
    E016,
    /// A value out of range or inconsistent with another.
    E017,
    /// A unit that does not fit the attribute.
    E018,
    /// A size over the limits mgen allocates for.
    E019,
    /// Too many or too few declarations of a kind.
    E020,
    /// A construct not allowed in this kind of file.
    E021,
    /// A weights checkpoint cannot be read.
    E201,
    /// A checkpoint is not a valid safetensors file (truncated, a header that lies).
    E202,
    /// A checkpoint lacks a tensor the model needs.
    E203,
    /// A tensor has the wrong shape.
    E204,
    /// A tensor has an unsupported dtype.
    E205,
    /// `config.json` disagrees with the declaration.
    E206,
    /// An inputs file cannot be read or is malformed.
    E207,
    /// A request does not fit the model (token id out of range, too long).
    E208,
    /// A tokenizer is needed but missing or failing.
    E209,
    /// The textual IR's weights do not match its declarations.
    E210,
    /// A checkpoint tensor holds a non-finite value (NaN or infinity).
    E211,
    /// A matrix larger than the whole machine.
    E301,
    /// Malformed assembly (`.masm`).
    E302,
    /// A malformed or tampered program directory.
    E303,
    /// A program fails at run time (names the instruction).
    E304,
    /// A malformed textual-IR definition.
    E101,
    /// A textual-IR reference to an undefined node or parameter.
    E102,
    /// An IR invariant broken (verifier).
    E103,
    /// An unknown pass or pipeline name.
    E104,
    /// Writing an output failed.
    E105,
    /// An impossible pipeline: a pass needs a result no earlier pass provides.
    E106,
    /// An internal error: mgen broke one of its own invariants (a bug, not
    /// bad input; see [`Diagnostic::internal`]).
    E900,
}

impl Code {
    pub fn as_str(self) -> String {
        format!("{self:?}")
    }
}

/// One label: a span in a file with a message.
#[derive(Debug, Clone)]
pub struct Label {
    pub file: FileId,
    pub span: Range<usize>,
    pub message: String,
    pub primary: bool,
}

/// A diagnostic: code, message, labels, notes and help lines.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub labels: Vec<Label>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// An internal error (E900): a broken invariant of mgen's own, never
    /// bad input. It says so, so that it is reported rather than worked
    /// around.
    pub fn internal(message: impl Into<String>) -> Self {
        Diagnostic::error(Code::E900, message).note(
            "this is a bug in mgen (an internal error, not a problem with your input): please report it with the command and the files it read",
        )
    }

    /// The primary label.
    pub fn at(mut self, file: FileId, span: Range<usize>, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            file,
            span,
            message: message.into(),
            primary: true,
        });
        self
    }

    /// A secondary label.
    pub fn also(mut self, file: FileId, span: Range<usize>, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            file,
            span,
            message: message.into(),
            primary: false,
        });
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.notes.push(format!("help: {}", help.into()));
        self
    }

    /// Renders with codespan-reporting; `color` adds ANSI colours. A label
    /// on a line longer than [`MAX_SHOWN_LINE`] bytes is shown as
    /// `file:line:col` only, so a huge line is never copied to the terminal.
    pub fn render(&self, sources: &Sources, color: bool) -> String {
        if self
            .labels
            .iter()
            .any(|l| sources.line_len_at(l.file, l.span.start) > MAX_SHOWN_LINE)
        {
            let mut out = format!("error[{}]: {}\n", self.code.as_str(), self.message);
            for l in &self.labels {
                let (line, col) = sources.line_col(l.file, l.span.start);
                out.push_str(&format!(
                    "  --> {}:{line}:{col}: {} (line too long to show)\n",
                    sources.name(l.file),
                    l.message
                ));
            }
            for n in &self.notes {
                out.push_str(&format!("  = {n}\n"));
            }
            out.push('\n');
            return out;
        }
        let labels = self
            .labels
            .iter()
            .map(|l| {
                let span = sources.clamp(l.file, &l.span);
                if l.primary {
                    CsLabel::primary(l.file, span).with_message(&l.message)
                } else {
                    CsLabel::secondary(l.file, span).with_message(&l.message)
                }
            })
            .collect();
        let d = CsDiagnostic::new(Severity::Error)
            .with_code(self.code.as_str())
            .with_message(&self.message)
            .with_labels(labels)
            .with_notes(self.notes.clone());
        let config = term::Config::default();
        let out = if color {
            let mut buf = termcolor::Buffer::ansi();
            let styles = term::Styles::default();
            let mut w = term::StylesWriter::new(&mut buf, &styles);
            term::emit_to_write_style(&mut w, &config, &sources.files, &d)
                .map(|_| String::from_utf8_lossy(buf.as_slice()).into_owned())
        } else {
            term::emit_into_string(&config, &sources.files, &d)
        };
        out.unwrap_or_else(|_| format!("error[{}]: {}\n", self.code.as_str(), self.message))
    }
}

/// Lines longer than this are not reproduced in diagnostics.
pub const MAX_SHOWN_LINE: usize = 4096;

/// How many diagnostics one run reports before it stops listing them.
pub const MAX_REPORTED: usize = 25;

/// A list of diagnostics collected by a stage.
#[derive(Debug, Default, Clone)]
pub struct Diags(pub Vec<Diagnostic>);

impl Diags {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn extend(&mut self, other: Diags) {
        self.0.extend(other.0);
    }

    /// Drops repeats: a diagnostic with the same code, message, labels and
    /// notes as an earlier one (one bad file used by several tasks is
    /// reported once). The first of each is kept, in order.
    pub fn dedup(&mut self) {
        let mut seen = std::collections::HashSet::new();
        self.0.retain(|d| {
            let labels: Vec<_> = d
                .labels
                .iter()
                .map(|l| (l.file, l.span.clone(), l.message.clone(), l.primary))
                .collect();
            seen.insert((d.code, d.message.clone(), labels, d.notes.clone()))
        });
    }

    /// Renders them all (at most [`MAX_REPORTED`]) with a closing count.
    pub fn render(&self, sources: &Sources, color: bool) -> String {
        let mut out = String::new();
        for d in self.0.iter().take(MAX_REPORTED) {
            out.push_str(&d.render(sources, color));
        }
        if self.0.len() > MAX_REPORTED {
            out.push_str(&format!(
                "note: {} more errors not shown\n",
                self.0.len() - MAX_REPORTED
            ));
        }
        match self.0.len() {
            0 => {}
            1 => out.push_str("error: could not continue because of the error above\n"),
            n => out.push_str(&format!(
                "error: could not continue because of {n} errors\n"
            )),
        }
        out
    }
}

impl From<Diagnostic> for Diags {
    fn from(d: Diagnostic) -> Self {
        Diags(vec![d])
    }
}

/// The result type of every fallible stage.
pub type Result<T> = std::result::Result<T, Diags>;

#[cfg(test)]
mod internal_tests {
    use super::*;

    #[test]
    fn an_internal_error_has_its_own_code_and_says_it_is_a_bug() {
        let d = Diagnostic::internal("a placement that does not check");
        assert_eq!(d.code, Code::E900);
        assert_eq!(d.code.as_str(), "E900");
        assert!(d.notes.iter().any(|n| n.contains("this is a bug in mgen")));
    }
}
