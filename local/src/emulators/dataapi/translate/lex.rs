//! The tokenizer, `:name` parameter substitution and statement splitting: the lexical layer
//! every later step relies on to never touch text inside quotes or comments.

use std::collections::HashMap;

/// A lexical token; `text` is the exact source text so `render` round-trips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What the token is.
    pub kind: Kind,
    /// The exact text.
    pub text: String,
}

/// Token kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Whitespace.
    Space,
    /// `-- …` or `/* … */`.
    Comment,
    /// `'…'`, `E'…'` (prefix included).
    Str,
    /// `"…"`.
    QuotedIdent,
    /// `$tag$ … $tag$`.
    Dollar,
    /// A keyword or unquoted identifier.
    Word,
    /// A numeric literal.
    Number,
    /// A Data API `:name` placeholder (text includes the colon).
    Param,
    /// `;`.
    Semicolon,
    /// `(`.
    LParen,
    /// `)`.
    RParen,
    /// `,`.
    Comma,
    /// `.`.
    Dot,
    /// Any other operator or punctuation (`::` is one token).
    Op,
}

impl Token {
    pub(super) fn new(kind: Kind, text: impl Into<String>) -> Token {
        Token {
            kind,
            text: text.into(),
        }
    }

    pub(super) fn is_trivia(&self) -> bool {
        matches!(self.kind, Kind::Space | Kind::Comment)
    }

    /// Whether this is the keyword `kw` (ASCII case-insensitive, unquoted).
    pub fn is_kw(&self, kw: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(kw)
    }
}

/// A lexical error: the SQL cannot be tokenized (e.g. an unterminated string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error: {what} starting at character {at}")]
pub struct LexError {
    what: &'static str,
    at: usize,
}

/// A parameter problem: reported to the caller as a ValidationException (permanent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The SQL references `:name` but no parameter has that name.
    #[error("no value was provided for parameter :{0}")]
    Missing(String),
    /// The same name was given twice.
    #[error("parameter {0} is specified more than once")]
    Duplicate(String),
    /// A name that cannot appear as a placeholder.
    #[error("invalid parameter name '{0}': use letters, digits and underscores")]
    BadName(String),
    /// A value PostgreSQL cannot hold in a string literal.
    #[error("the value of parameter {0} contains a NUL character")]
    NulInValue(String),
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Splits `sql` into tokens; concatenating their texts gives `sql` back.
// Long on purpose: one character-level state machine; split up, its states would scatter.
pub fn tokenize(sql: &str) -> Result<Vec<Token>, LexError> {
    let chars: Vec<(usize, char)> = sql.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let byte = |i: usize| chars.get(i).map_or(sql.len(), |&(b, _)| b);
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let start = i;
        let kind = if c.is_whitespace() {
            while at(i).is_some_and(char::is_whitespace) {
                i += 1;
            }
            Kind::Space
        } else if c == '-' && at(i + 1) == Some('-') {
            while at(i).is_some_and(|c| c != '\n') {
                i += 1;
            }
            Kind::Comment
        } else if c == '/' && at(i + 1) == Some('*') {
            // PostgreSQL block comments nest.
            let mut depth = 0usize;
            loop {
                match (at(i), at(i + 1)) {
                    (Some('/'), Some('*')) => {
                        depth += 1;
                        i += 2;
                    }
                    (Some('*'), Some('/')) => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    }
                    (Some(_), _) => i += 1,
                    (None, _) => {
                        return Err(LexError {
                            what: "unterminated /* comment",
                            at: start,
                        });
                    }
                }
            }
            Kind::Comment
        } else if c == '\'' || ((c == 'E' || c == 'e') && at(i + 1) == Some('\'')) {
            let backslash = c != '\'';
            i += if backslash { 2 } else { 1 };
            loop {
                match at(i) {
                    Some('\\') if backslash => i += 2,
                    Some('\'') if at(i + 1) == Some('\'') => i += 2,
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                    None => {
                        return Err(LexError {
                            what: "unterminated quoted string",
                            at: start,
                        });
                    }
                }
            }
            Kind::Str
        } else if c == '"' {
            i += 1;
            loop {
                match at(i) {
                    Some('"') if at(i + 1) == Some('"') => i += 2,
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                    None => {
                        return Err(LexError {
                            what: "unterminated quoted identifier",
                            at: start,
                        });
                    }
                }
            }
            Kind::QuotedIdent
        } else if c == '$' && dollar_tag_len(&chars, i).is_some() {
            let len = dollar_tag_len(&chars, i).unwrap_or(1);
            let tag: String = chars[i..i + len].iter().map(|&(_, c)| c).collect();
            i += len;
            loop {
                if at(i).is_none() {
                    return Err(LexError {
                        what: "unterminated dollar-quoted string",
                        at: start,
                    });
                }
                let candidate: String = chars[i..(i + len).min(chars.len())]
                    .iter()
                    .map(|&(_, c)| c)
                    .collect();
                if candidate == tag {
                    i += len;
                    break;
                }
                i += 1;
            }
            Kind::Dollar
        } else if is_ident_start(c) {
            while at(i).is_some_and(is_ident_char) {
                i += 1;
            }
            Kind::Word
        } else if c.is_ascii_digit() || (c == '.' && at(i + 1).is_some_and(|c| c.is_ascii_digit()))
        {
            while at(i).is_some_and(|c| c.is_ascii_digit() || c == '.') {
                i += 1;
            }
            if at(i).is_some_and(|c| c == 'e' || c == 'E')
                && (at(i + 1).is_some_and(|c| c.is_ascii_digit())
                    || (at(i + 1).is_some_and(|c| c == '+' || c == '-')
                        && at(i + 2).is_some_and(|c| c.is_ascii_digit())))
            {
                i += 2;
                while at(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
            }
            Kind::Number
        } else if c == ':' && at(i + 1) == Some(':') {
            i += 2;
            Kind::Op
        } else if c == ':' && at(i + 1).is_some_and(is_ident_start) {
            i += 1;
            while at(i).is_some_and(|c| c.is_alphanumeric() || c == '_') {
                i += 1;
            }
            Kind::Param
        } else {
            i += 1;
            match c {
                ';' => Kind::Semicolon,
                '(' => Kind::LParen,
                ')' => Kind::RParen,
                ',' => Kind::Comma,
                '.' => Kind::Dot,
                _ => Kind::Op,
            }
        };
        out.push(Token::new(kind, &sql[byte(start)..byte(i)]));
    }
    Ok(out)
}

/// Length in chars of a `$tag$` opener at `i`, if there is one (`$1` is not).
fn dollar_tag_len(chars: &[(usize, char)], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if chars.get(j).is_some_and(|&(_, c)| c.is_ascii_digit()) {
        return None;
    }
    while let Some(&(_, c)) = chars.get(j) {
        if c == '$' {
            return Some(j - i + 1);
        }
        if !(c.is_alphanumeric() || c == '_') {
            return None;
        }
        j += 1;
    }
    None
}

/// Concatenates token texts.
pub fn render(tokens: &[Token]) -> String {
    tokens.iter().map(|t| t.text.as_str()).collect()
}

/// A PostgreSQL string literal holding exactly `value` (standard_conforming_strings is on in
/// PostgreSQL ≥ 9.1, so only the quote needs doubling).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A quoted identifier holding exactly `name`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Replaces every `:name` with the escaped literal of its value. The literal is padded with
/// spaces so it can never fuse with a neighbouring token (`E:x` or `:x'…'`).
pub fn substitute_params(
    tokens: Vec<Token>,
    params: &[(String, String)],
) -> Result<Vec<Token>, ParamError> {
    let mut map = HashMap::new();
    for (name, value) in params {
        if name.is_empty()
            || !name.chars().next().is_some_and(is_ident_start)
            || !name.chars().all(|c| c.is_alphanumeric() || c == '_')
        {
            return Err(ParamError::BadName(name.clone()));
        }
        if value.contains('\0') {
            return Err(ParamError::NulInValue(name.clone()));
        }
        if map.insert(name.as_str(), value.as_str()).is_some() {
            return Err(ParamError::Duplicate(name.clone()));
        }
    }
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        if t.kind != Kind::Param {
            out.push(t);
            continue;
        }
        let name = &t.text[1..];
        let value = map
            .get(name)
            .ok_or_else(|| ParamError::Missing(name.to_string()))?;
        out.push(Token::new(Kind::Space, " "));
        out.push(Token::new(Kind::Str, quote_literal(value)));
        out.push(Token::new(Kind::Space, " "));
    }
    Ok(out)
}

/// Splits at top-level `;`, dropping statements that hold only whitespace and comments.
pub fn split_statements(tokens: Vec<Token>) -> Vec<Vec<Token>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for t in tokens {
        if t.kind == Kind::Semicolon {
            out.push(std::mem::take(&mut current));
        } else {
            current.push(t);
        }
    }
    out.push(current);
    out.retain(|s: &Vec<Token>| s.iter().any(|t| !t.is_trivia()));
    out
}
