//! The `.mgen` / `.mir` lexer (logos).
//!
//! Invariants: every token carries its byte range in the source; comments and
//! white space never reach the parser; a byte sequence the lexer cannot read
//! becomes a [`LexError`] with a span and lexing goes on after it, so one run
//! reports every bad character (up to the diagnostic limit).

use logos::Logos;

/// A lexer-level error: what went wrong and where.
#[derive(Debug, Clone, PartialEq)]
pub enum LexError {
    /// A character that starts no token.
    Unexpected,
    /// A string literal with no closing quote on its line.
    UnterminatedString,
    /// A `/*` comment with no `*/`.
    UnterminatedComment,
}

/// Tokens of the language. Keywords are reserved; every other word is an
/// [`Tok::Ident`].
#[derive(Logos, Debug, Clone, PartialEq)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip(r"//[^\n]*", allow_greedy = true))]
pub enum Tok<'a> {
    #[token("hardware")]
    Hardware,
    #[token("model")]
    Model,
    #[token("task")]
    Task,
    #[token("workload")]
    Workload,
    #[token("graph")]
    Graph,
    #[token("keep")]
    Keep,

    #[regex(r"[A-Za-z_][A-Za-z0-9_]*", |l| l.slice())]
    Ident(&'a str),
    #[regex(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?", |l| l.slice())]
    Number(&'a str),
    #[regex(r#""([^"\\\n]|\\[^\n])*""#, |l| l.slice())]
    Str(&'a str),
    /// A string that reaches the end of its line without a closing quote.
    #[regex(r#""([^"\\\n]|\\[^\n])*"#, |l| l.slice(), priority = 1)]
    UnterminatedStr(&'a str),
    /// `%12`: a node of the textual IR.
    #[regex(r"%[0-9]+", |l| l.slice())]
    NodeRef(&'a str),
    /// `$3`: a parameter (weight tensor) of the textual IR.
    #[regex(r"\$[0-9]+", |l| l.slice())]
    ParamRef(&'a str),

    #[token("/*", block_comment)]
    BlockComment,

    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token("=")]
    Eq,
    #[token(";")]
    Semi,
    #[token(",")]
    Comma,
    #[token(":")]
    Colon,
    #[token("%")]
    Percent,
    #[token("-")]
    Minus,
    #[token(">=")]
    Ge,
    #[token("<=")]
    Le,
    #[token("×")]
    Times,
}

/// Skips a block comment; an unterminated one is reported by the caller as
/// [`LexError::UnterminatedComment`] (the token is kept so its span is known).
fn block_comment<'a>(lex: &mut logos::Lexer<'a, Tok<'a>>) -> logos::FilterResult<(), ()> {
    let rest = lex.remainder();
    match rest.find("*/") {
        Some(end) => {
            lex.bump(end + 2);
            logos::FilterResult::Skip
        }
        None => {
            lex.bump(rest.len());
            logos::FilterResult::Emit(())
        }
    }
}

impl Tok<'_> {
    /// How the token is named in "expected ..." messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier `{s}`"),
            Tok::Number(s) => format!("number `{s}`"),
            Tok::Str(s) => format!("string {s}"),
            Tok::UnterminatedStr(_) => "unterminated string".into(),
            Tok::NodeRef(s) | Tok::ParamRef(s) => format!("`{s}`"),
            Tok::BlockComment => "comment".into(),
            other => format!("`{}`", other.text()),
        }
    }

    fn text(&self) -> &str {
        match self {
            Tok::Hardware => "hardware",
            Tok::Model => "model",
            Tok::Task => "task",
            Tok::Workload => "workload",
            Tok::Graph => "graph",
            Tok::Keep => "keep",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Eq => "=",
            Tok::Semi => ";",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Percent => "%",
            Tok::Minus => "-",
            Tok::Ge => ">=",
            Tok::Le => "<=",
            Tok::Times => "×",
            Tok::Ident(s)
            | Tok::Number(s)
            | Tok::Str(s)
            | Tok::UnterminatedStr(s)
            | Tok::NodeRef(s)
            | Tok::ParamRef(s) => s,
            Tok::BlockComment => "/*",
        }
    }
}

/// A token with its byte range.
pub type Spanned<'a> = (usize, Tok<'a>, usize);

/// Lexes `src` completely: the good tokens, and the errors with their ranges.
pub fn lex(src: &str) -> (Vec<Spanned<'_>>, Vec<(LexError, std::ops::Range<usize>)>) {
    let mut toks = Vec::new();
    let mut errs = Vec::new();
    let mut lexer = Tok::lexer(src);
    while let Some(t) = lexer.next() {
        let span = lexer.span();
        match t {
            Ok(Tok::UnterminatedStr(_)) => errs.push((LexError::UnterminatedString, span)),
            Ok(Tok::BlockComment) => {
                errs.push((LexError::UnterminatedComment, span.start..span.start + 2))
            }
            Ok(tok) => toks.push((span.start, tok, span.end)),
            Err(()) => {
                // Merge a run of adjacent bad bytes into one error.
                match errs.last_mut() {
                    Some((LexError::Unexpected, r)) if r.end == span.start => r.end = span.end,
                    _ => errs.push((LexError::Unexpected, span)),
                }
            }
        }
    }
    (toks, errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_the_setup_table_forms() {
        let (t, e) =
            lex("crossbar = 128 x 128; adc = 1.67 pJ; keep agreement >= 99%; %3 $4 /* c */ \"s\"");
        assert!(e.is_empty(), "{e:?}");
        let kinds: Vec<_> = t.iter().map(|(_, k, _)| k.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                Tok::Ident("crossbar"),
                Tok::Eq,
                Tok::Number("128"),
                Tok::Ident("x"),
                Tok::Number("128"),
                Tok::Semi,
                Tok::Ident("adc"),
                Tok::Eq,
                Tok::Number("1.67"),
                Tok::Ident("pJ"),
                Tok::Semi,
                Tok::Keep,
                Tok::Ident("agreement"),
                Tok::Ge,
                Tok::Number("99"),
                Tok::Percent,
                Tok::Semi,
                Tok::NodeRef("%3"),
                Tok::ParamRef("$4"),
                Tok::Str("\"s\""),
            ]
        );
    }

    #[test]
    fn reports_bad_bytes_and_unterminated_forms() {
        let (_, e) = lex("a @@ b \"open\n/* never closed");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0], (LexError::Unexpected, 2..4));
        assert_eq!(e[1].0, LexError::UnterminatedString);
        assert_eq!(e[2].0, LexError::UnterminatedComment);
    }
}
