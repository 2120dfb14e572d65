//! Front end: bytes → tokens (logos) → AST (lalrpop), with error recovery.
//!
//! [`parse`] never panics: invalid UTF-8, stray bytes, unterminated strings,
//! syntax errors, absurd nesting and huge files all become diagnostics. The
//! parser recovers at `;` inside blocks and at `}` between items, so one run
//! reports several errors.

pub mod ast;
pub mod lexer;

lalrpop_util::lalrpop_mod!(
    #[allow(clippy::all, clippy::pedantic, unused)]
    grammar,
    "/mgen.rs"
);

use crate::diag::{Code, Diagnostic, Diags, FileId, Sources};
use lalrpop_util::ParseError;
use lexer::{LexError, Tok};

/// Files larger than this are refused before they are read into a string.
pub const MAX_FILE_BYTES: usize = 64 << 20;
/// Brackets, parentheses and braces nested deeper than this are refused.
pub const MAX_NESTING: usize = 64;

/// Adds `bytes` to `sources` as file `name` and parses it. `mir` allows the
/// textual-IR `graph` item (and lists it in "expected" messages).
///
/// Returns the file id and, when there were no errors, the AST.
pub fn parse(
    sources: &mut Sources,
    name: &str,
    bytes: &[u8],
    mir: bool,
) -> (FileId, Result<ast::File, Diags>) {
    if bytes.len() > MAX_FILE_BYTES {
        let id = sources.add(name, "");
        let d = Diagnostic::error(
            Code::E007,
            format!(
                "`{name}` is {} bytes; mgen reads source files of at most {MAX_FILE_BYTES} bytes",
                bytes.len()
            ),
        );
        return (id, Err(d.into()));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.to_string(),
        Err(e) => {
            let lossy = String::from_utf8_lossy(bytes).into_owned();
            // Offsets up to the first bad byte are the same in the lossy text.
            let at = e.valid_up_to();
            let id = sources.add(name, lossy);
            let d = Diagnostic::error(Code::E002, "the file is not valid UTF-8")
                .at(id, at..at + 1, "this byte does not start a UTF-8 character")
                .help("mgen sources are UTF-8 text; was a binary file given by mistake?");
            return (id, Err(d.into()));
        }
    };
    let id = sources.add(name, text);
    let result = parse_text(id, sources.text(id), mir);
    (id, result)
}

fn parse_text(id: FileId, text: &str, mir: bool) -> Result<ast::File, Diags> {
    let (tokens, lex_errors) = lexer::lex(text);
    let mut diags = Diags::default();
    for (err, span) in lex_errors {
        let d = match err {
            LexError::Unexpected => {
                let what = &text[span.clone()];
                let shown: String = what.chars().take(8).collect();
                Diagnostic::error(
                    Code::E003,
                    format!("unexpected character `{}`", shown.escape_debug()),
                )
                .at(id, span, "not part of any token")
            }
            LexError::UnterminatedString => Diagnostic::error(Code::E004, "unterminated string")
                .at(id, span, "this string has no closing `\"` on its line"),
            LexError::UnterminatedComment => Diagnostic::error(
                Code::E004,
                "unterminated block comment",
            )
            .at(id, span, "this `/*` has no matching `*/`"),
        };
        diags.push(d);
    }
    // Refuse absurd nesting before the parser builds (and later drops) a deep tree.
    let mut depth = 0usize;
    for (l, tok, r) in &tokens {
        match tok {
            Tok::LBrace | Tok::LParen | Tok::LBracket => {
                depth += 1;
                if depth > MAX_NESTING {
                    diags.push(
                        Diagnostic::error(
                            Code::E007,
                            format!("nesting deeper than {MAX_NESTING} levels"),
                        )
                        .at(id, *l..*r, "too deep here"),
                    );
                    return Err(diags);
                }
            }
            Tok::RBrace | Tok::RParen | Tok::RBracket => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let mut recovered = Vec::new();
    let parser = grammar::FileParser::new();
    let result = parser.parse(&mut recovered, tokens.iter().cloned());
    for r in recovered {
        diags.push(parse_error(id, text, &tokens, r.error, mir));
    }
    match result {
        Ok(file) => {
            if diags.is_empty() {
                Ok(file)
            } else {
                Err(diags)
            }
        }
        Err(e) => {
            diags.push(parse_error(id, text, &tokens, e, mir));
            Err(diags)
        }
    }
}

fn expected_list(expected: &[String], mir: bool) -> String {
    let mut names: Vec<String> = Vec::new();
    for e in expected {
        let name = match e.as_str() {
            "Ident" => "a name".to_string(),
            "Number" => "a number".to_string(),
            "Str" => "a string".to_string(),
            "NodeRef" if mir => "a node `%N`".to_string(),
            "ParamRef" if mir => "a parameter `$N`".to_string(),
            "NodeRef" | "ParamRef" => continue,
            "\"graph\"" if !mir => continue,
            "\"×\"" => continue,
            q if q.starts_with('"') && q.ends_with('"') && q.len() >= 2 => {
                format!("`{}`", &q[1..q.len() - 1])
            }
            other => other.to_string(),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    match names.len() {
        0 => String::new(),
        1 => format!("expected {}", names[0]),
        n if n <= 8 => format!("expected one of {}", names.join(", ")),
        _ => format!("expected one of {}, …", names[..8].join(", ")),
    }
}

fn parse_error(
    id: FileId,
    text: &str,
    tokens: &[lexer::Spanned<'_>],
    e: ParseError<usize, Tok<'_>, ()>,
    mir: bool,
) -> Diagnostic {
    match e {
        ParseError::UnrecognizedEof { location, expected } => {
            let at = location.min(text.len());
            let mut d = Diagnostic::error(Code::E006, "unexpected end of file").at(
                id,
                at..at,
                expected_list(&expected, mir),
            );
            if expected.iter().any(|x| x == "\"}\"") {
                d = d.help("a block is not closed: add the missing `}`");
            }
            d
        }
        ParseError::UnrecognizedToken {
            token: (l, tok, r),
            expected,
        } => {
            let mut d = Diagnostic::error(Code::E005, format!("unexpected {}", tok.describe())).at(
                id,
                l..r,
                expected_list(&expected, mir),
            );
            // A missing `;` at the end of a line is the usual cause: find the
            // line break just before the error (or before the token before it,
            // as in `max_seq = 16 <newline> weights = ...`, read as `16 weights`).
            let idx = tokens.partition_point(|t| t.0 < l);
            let gap_has_newline =
                |a: usize, b: usize| text.get(a..b).is_some_and(|g| g.contains('\n'));
            let at = if idx >= 1
                && gap_has_newline(tokens[idx - 1].2, l)
                && expected.iter().any(|x| x == "\";\"")
            {
                Some(tokens[idx - 1].2)
            } else if idx >= 2
                && matches!(tok, Tok::Eq)
                && gap_has_newline(tokens[idx - 2].2, tokens[idx - 1].0)
            {
                Some(tokens[idx - 2].2)
            } else {
                None
            };
            if let Some(at) = at {
                d = d
                    .also(id, at..at, "perhaps a `;` is missing here")
                    .help("every attribute ends with `;`");
            }
            if !mir && matches!(tok, Tok::Graph) {
                d = d.note("`graph` blocks belong in textual-IR (.mir) files");
            }
            d
        }
        ParseError::ExtraToken { token: (l, tok, r) } => Diagnostic::error(
            Code::E005,
            format!("unexpected {}", tok.describe()),
        )
        .at(id, l..r, "extra token"),
        ParseError::InvalidToken { location } => {
            Diagnostic::error(Code::E003, "invalid token").at(id, location..location + 1, "here")
        }
        ParseError::User { .. } => Diagnostic::error(Code::E005, "syntax error"),
    }
}
