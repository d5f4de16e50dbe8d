//! Redshift SQL → PostgreSQL 15, for what caudal's loader and migrations emit.
//!
//! Pure functions over a small tokenizer that understands `'…'` (and `E'…'`) strings, `"…"`
//! identifiers, `$tag$…$tag$` bodies, `--` and (nested) `/* */` comments, the `::` cast and
//! `:name` Data API parameters, so rewriting never touches text inside quotes or comments.
//!
//! The pipeline for one submitted SQL text is [`plan`]:
//! 1. tokenize; 2. replace `:name` parameters by escaped literals (a missing one is a
//!    [`ParamError`], which the API reports as a ValidationException); 3. split into
//!    statements at top-level `;`; 4. translate each statement: Redshift `COPY … FROM 's3://…'`
//!    becomes a [`CopyPlan`], DDL loses Redshift-only physical attributes, a few functions and
//!    types are renamed. Anything we cannot run faithfully becomes [`Planned::Unsupported`]
//!    with a message: the statement then FAILS, it is never silently skipped.

use std::collections::HashMap;
use std::fmt::Write as _;

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
    fn new(kind: Kind, text: impl Into<String>) -> Token {
        Token {
            kind,
            text: text.into(),
        }
    }

    fn is_trivia(&self) -> bool {
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

/// One statement ready to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Plain SQL for PostgreSQL.
    Sql(String),
    /// A Redshift COPY from S3, executed by streaming the objects into `COPY … FROM STDIN`.
    Copy(CopyPlan),
    /// Cannot be run faithfully: the statement FAILS with this message.
    Unsupported(String),
}

impl Planned {
    /// Whether this statement is transaction control (BEGIN/COMMIT/…), which decides whether
    /// we may wrap a multi-statement text in our own transaction.
    pub fn is_transaction_control(&self) -> bool {
        let Planned::Sql(sql) = self else {
            return false;
        };
        let first = sql
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        matches!(
            first.as_str(),
            "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE"
        )
    }
}

/// Tokenizes, substitutes parameters, splits and translates one submitted SQL text.
/// Only parameter errors are returned as `Err` (they are the caller's mistake, reported
/// synchronously); everything else is a plan whose statements may be `Unsupported`.
pub fn plan(sql: &str, params: &[(String, String)]) -> Result<Vec<Planned>, ParamError> {
    let tokens = match tokenize(sql) {
        Ok(t) => t,
        Err(e) => return Ok(vec![Planned::Unsupported(e.to_string())]),
    };
    let tokens = substitute_params(tokens, params)?;
    Ok(split_statements(tokens)
        .into_iter()
        .map(translate_statement)
        .collect())
}

/// Translates one statement (no top-level `;`).
pub fn translate_statement(tokens: Vec<Token>) -> Planned {
    let sig: Vec<usize> = significant(&tokens);
    let Some(&first) = sig.first() else {
        return Planned::Unsupported("empty statement".into());
    };
    let kw = tokens[first].text.to_ascii_uppercase();
    let second = sig.get(1).map(|&i| tokens[i].text.to_ascii_uppercase());
    match kw.as_str() {
        "UNLOAD" => {
            return Planned::Unsupported(
                "UNLOAD is not supported by the local Data API endpoint: PostgreSQL cannot \
                 write query results to S3"
                    .into(),
            );
        }
        "COPY" => return parse_copy(&tokens, &sig),
        "CREATE"
            if second.as_deref() == Some("INDEX")
                || (second.as_deref() == Some("UNIQUE")
                    && sig.get(2).is_some_and(|&i| tokens[i].is_kw("INDEX"))) =>
        {
            return Planned::Unsupported(
                "CREATE INDEX is not supported: Amazon Redshift has no indexes (sort keys and \
                 zone maps instead)"
                    .into(),
            );
        }
        "CREATE" | "ALTER" | "DROP"
            if matches!(
                second.as_deref(),
                Some("EXTERNAL" | "LIBRARY" | "DATASHARE")
            ) =>
        {
            return Planned::Unsupported(format!(
                "{kw} {} is Redshift-only and not supported by the local Data API endpoint",
                second.unwrap_or_default()
            ));
        }
        _ => {}
    }
    let is_create = kw == "CREATE";
    Planned::Sql(render(&rewrite(tokens, is_create)))
}

fn significant(tokens: &[Token]) -> Vec<usize> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.is_trivia())
        .map(|(i, _)| i)
        .collect()
}

const ENCODINGS: &[&str] = &[
    "RAW",
    "AZ64",
    "BYTEDICT",
    "DELTA",
    "DELTA32K",
    "LZO",
    "MOSTLY8",
    "MOSTLY16",
    "MOSTLY32",
    "RUNLENGTH",
    "TEXT255",
    "TEXT32K",
    "ZSTD",
    "AUTO",
];
const DISTSTYLES: &[&str] = &["AUTO", "EVEN", "KEY", "ALL"];

/// The sig range `(from, to)` of a key constraint starting at sig position `k` (`PRIMARY KEY`,
/// `UNIQUE`, `FOREIGN KEY … REFERENCES …`, a column's `REFERENCES …`), with its `CONSTRAINT
/// name` and the comma that separates a table constraint from its neighbours.
///
/// Redshift accepts these and never enforces them (they inform the planner); PostgreSQL would
/// enforce them, so a duplicate key that Redshift stores would fail here and hide the bug.
fn key_constraint(
    tokens: &[Token],
    sig: &[usize],
    k: usize,
    matching: impl Fn(usize) -> Option<usize>,
) -> Option<(usize, usize)> {
    let at = |j: usize| sig.get(j).map(|&i| &tokens[i]);
    let is = |j: usize, kind: Kind| at(j).is_some_and(|t| t.kind == kind);
    // Past an optional parenthesised column list that starts at sig position `j`.
    let past_parens = |j: usize| {
        if is(j, Kind::LParen) {
            matching(j)
        } else {
            j.checked_sub(1)
        }
    };
    // Past `REFERENCES name[.name] [(cols)]` whose keyword is at `j`.
    let past_references = |j: usize| {
        let mut e = j + 1;
        if !at(e).is_some_and(|t| matches!(t.kind, Kind::Word | Kind::QuotedIdent)) {
            return None;
        }
        while is(e + 1, Kind::Dot) && at(e + 2).is_some() {
            e += 2;
        }
        past_parens(e + 1)
    };
    let t = at(k)?;
    let end = if t.is_kw("PRIMARY") && at(k + 1).is_some_and(|n| n.is_kw("KEY")) {
        past_parens(k + 2)?
    } else if t.is_kw("UNIQUE") {
        past_parens(k + 1)?
    } else if t.is_kw("FOREIGN") && at(k + 1).is_some_and(|n| n.is_kw("KEY")) {
        let cols = past_parens(k + 2)?;
        if at(cols + 1).is_some_and(|n| n.is_kw("REFERENCES")) {
            past_references(cols + 1)?
        } else {
            cols
        }
    } else if t.is_kw("REFERENCES") {
        past_references(k)?
    } else {
        return None;
    };
    let mut from = k;
    if k >= 2 && at(k - 2).is_some_and(|c| c.is_kw("CONSTRAINT")) {
        from = k - 2;
    }
    let mut to = end;
    // A table constraint is an element of the column list: take one separating comma with it.
    if from > 0 && is(from - 1, Kind::Comma) {
        from -= 1;
    } else if from > 0 && is(from - 1, Kind::LParen) && is(to + 1, Kind::Comma) {
        to += 1;
    }
    Some((from, to))
}

/// Token-level rewrite of DDL attributes, types and functions.
fn rewrite(tokens: Vec<Token>, is_create: bool) -> Vec<Token> {
    let sig = significant(&tokens);
    // Position in `sig` of each token index, to look ahead over trivia.
    let mut drop = vec![false; tokens.len()];
    let mut replace: HashMap<usize, String> = HashMap::new();
    let mut append: HashMap<usize, String> = HashMap::new();
    let text_at = |k: usize| sig.get(k).map(|&i| &tokens[i]);
    // Index (in sig) of the `)` matching the `(` at sig position k.
    let matching = |k: usize| -> Option<usize> {
        let mut depth = 0i32;
        for (j, &i) in sig.iter().enumerate().skip(k) {
            match tokens[i].kind {
                Kind::LParen => depth += 1,
                Kind::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(j);
                    }
                }
                _ => {}
            }
        }
        None
    };
    let mut k = 0;
    while k < sig.len() {
        let t = &tokens[sig[k]];
        let next = text_at(k + 1);
        let prev_is_dot = k > 0 && tokens[sig[k - 1]].kind == Kind::Dot;
        let next_is_paren = next.is_some_and(|n| n.kind == Kind::LParen);
        // Drops the tokens from sig position `from` to `to`, with the trivia between them.
        let mut drop_range = |from: usize, to: usize| {
            for d in &mut drop[sig[from]..=sig[to]] {
                *d = true;
            }
        };
        if t.kind != Kind::Word || prev_is_dot {
            k += 1;
            continue;
        }
        if is_create && let Some((from, to)) = key_constraint(&tokens, &sig, k, matching) {
            drop_range(from, to);
            k = to + 1;
            continue;
        }
        if is_create {
            if t.is_kw("DISTSTYLE") && next.is_some_and(|n| DISTSTYLES.iter().any(|s| n.is_kw(s))) {
                drop_range(k, k + 1);
                k += 2;
                continue;
            }
            if t.is_kw("ENCODE") && next.is_some_and(|n| ENCODINGS.iter().any(|s| n.is_kw(s))) {
                drop_range(k, k + 1);
                k += 2;
                continue;
            }
            if t.is_kw("BACKUP") && next.is_some_and(|n| n.is_kw("YES") || n.is_kw("NO")) {
                drop_range(k, k + 1);
                k += 2;
                continue;
            }
            if t.is_kw("DISTKEY") || t.is_kw("SORTKEY") {
                let from = if k > 0
                    && (tokens[sig[k - 1]].is_kw("COMPOUND")
                        || tokens[sig[k - 1]].is_kw("INTERLEAVED"))
                {
                    k - 1
                } else {
                    k
                };
                let to = if next_is_paren {
                    matching(k + 1).unwrap_or(k)
                } else if t.is_kw("SORTKEY") && next.is_some_and(|n| n.is_kw("AUTO")) {
                    k + 1
                } else {
                    k
                };
                drop_range(from, to);
                k = to + 1;
                continue;
            }
            if t.is_kw("IDENTITY")
                && next_is_paren
                && let Some(close) = matching(k + 1)
            {
                // IDENTITY(seed, step) → GENERATED BY DEFAULT AS IDENTITY (START WITH seed
                // INCREMENT BY step); Redshift lets COPY and INSERT supply explicit values.
                let inner: Vec<&Token> = sig[k + 2..close].iter().map(|&i| &tokens[i]).collect();
                let parts: Vec<String> = inner
                    .split(|t| t.kind == Kind::Comma)
                    .map(|p| p.iter().map(|t| t.text.as_str()).collect::<String>())
                    .collect();
                if let [seed, step] = parts.as_slice() {
                    drop_range(k, close);
                    replace.insert(
                        sig[k],
                        format!(
                            "GENERATED BY DEFAULT AS IDENTITY (START WITH {seed} INCREMENT BY {step})"
                        ),
                    );
                    drop[sig[k]] = false;
                    k = close + 1;
                    continue;
                }
            }
        }
        if t.is_kw("SUPER") && !next_is_paren {
            replace.insert(sig[k], "jsonb".into());
        } else if (t.is_kw("VARCHAR") || t.is_kw("NVARCHAR") || t.is_kw("VARYING"))
            && next_is_paren
            && text_at(k + 2).is_some_and(|m| m.is_kw("MAX"))
            && text_at(k + 3).is_some_and(|c| c.kind == Kind::RParen)
        {
            // VARCHAR(MAX) → text; CHARACTER VARYING(MAX) → CHARACTER VARYING (unbounded).
            let word = if t.is_kw("VARYING") {
                "VARYING"
            } else {
                "text"
            };
            replace.insert(sig[k], word.into());
            drop_range(k + 1, k + 3);
            k += 4;
            continue;
        } else if t.is_kw("GETDATE")
            && next_is_paren
            && text_at(k + 2).is_some_and(|c| c.kind == Kind::RParen)
        {
            replace.insert(sig[k], "now()".into());
            drop_range(k + 1, k + 2);
            k += 3;
            continue;
        } else if t.is_kw("SYSDATE") && !next_is_paren {
            replace.insert(sig[k], "now()".into());
        } else if t.is_kw("NVL") && next_is_paren {
            replace.insert(sig[k], "coalesce".into());
        } else if (t.is_kw("JSON_PARSE") || t.is_kw("JSON_SERIALIZE"))
            && next_is_paren
            && let Some(close) = matching(k + 1)
        {
            let cast = if t.is_kw("JSON_PARSE") {
                "::jsonb"
            } else {
                "::text"
            };
            replace.insert(sig[k], String::new());
            append.insert(sig[close], cast.into());
        }
        k += 1;
    }
    tokens
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop[*i])
        .map(|(i, mut t)| {
            if let Some(r) = replace.remove(&i) {
                t.text = r;
            }
            if let Some(a) = append.remove(&i) {
                t.text.push_str(&a);
            }
            t
        })
        .collect()
}

/// Compression of the COPY source objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// GZIP (multi-member allowed).
    Gzip,
    /// Zstandard (multi-frame allowed).
    Zstd,
}

/// A column named in a COPY column list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// As written (safe to paste back into SQL: it came from the tokenizer).
    pub sql: String,
    /// The name it denotes (unquoted and lower-cased, or the quoted text).
    pub name: String,
}

/// A parsed and validated Redshift `COPY … FROM 's3://…'` (CSV only).
#[derive(Debug, Clone, PartialEq)]
pub struct CopyPlan {
    /// The target table as written (e.g. `public."Events"`).
    pub table: String,
    /// The explicit column list, if any.
    pub columns: Option<Vec<Ident>>,
    /// Source bucket.
    pub bucket: String,
    /// Source key (an object, a prefix, or the manifest).
    pub key: String,
    /// Whether `key` is a manifest.
    pub manifest: bool,
    /// Compression of every data object.
    pub compression: Option<Compression>,
    /// Field delimiter (default `,`).
    pub delimiter: char,
    /// CSV quote character (default `"`).
    pub quote: char,
    /// The null string (default: empty, unquoted).
    pub null_as: String,
    /// EMPTYASNULL: empty character fields, quoted or not, load as NULL.
    pub empty_as_null: bool,
    /// BLANKSASNULL: whitespace-only character fields load as NULL.
    pub blanks_as_null: bool,
    /// TRUNCATECOLUMNS: character values are cut to the column's length.
    pub truncate_columns: bool,
    /// ACCEPTINVCHARS: the byte that replaces each byte of invalid UTF-8.
    pub accept_inv_chars: Option<u8>,
    /// IGNOREHEADER: lines skipped at the start of **each** object.
    pub ignore_header: u64,
    /// EXPLICIT_IDS: without a column list, identity columns are loaded from the data too.
    pub explicit_ids: bool,
}

impl CopyPlan {
    /// Whether the load needs a text staging table (options PostgreSQL's COPY lacks).
    pub fn needs_staging(&self) -> bool {
        self.blanks_as_null || self.truncate_columns
    }

    /// The `WITH (…)` options of the PostgreSQL `COPY … FROM STDIN`, given the (already
    /// quoted) character columns of the target.
    ///
    /// Redshift's empty-field rules, mapped: an empty CHAR/VARCHAR field loads as `''` unless
    /// EMPTYASNULL (then quoted or not it is NULL: `FORCE_NULL`); an empty field of any other
    /// type loads as NULL. With the default null string (empty) PostgreSQL already reads an
    /// unquoted empty field as NULL, so character columns get `FORCE_NOT_NULL`.
    pub fn pg_options(&self, text_columns: &[String]) -> String {
        let mut out = String::from("FORMAT csv");
        let _ = write!(
            out,
            ", DELIMITER {}",
            quote_literal(&self.delimiter.to_string())
        );
        let _ = write!(out, ", QUOTE {}", quote_literal(&self.quote.to_string()));
        let _ = write!(out, ", NULL {}", quote_literal(&self.null_as));
        if !text_columns.is_empty() {
            if self.empty_as_null {
                let _ = write!(out, ", FORCE_NULL ({})", text_columns.join(", "));
            } else if self.null_as.is_empty() {
                let _ = write!(out, ", FORCE_NOT_NULL ({})", text_columns.join(", "));
            }
        }
        out
    }
}

fn unsupported(msg: impl Into<String>) -> Planned {
    Planned::Unsupported(msg.into())
}

/// Value of a Redshift string literal in a COPY option: Redshift processes backslash escapes
/// there (`DELIMITER '\t'` is a tab).
fn copy_string_value(token: &Token) -> Option<String> {
    if token.kind != Kind::Str {
        return None;
    }
    let body = token
        .text
        .strip_prefix(['E', 'e'])
        .unwrap_or(&token.text)
        .strip_prefix('\'')?
        .strip_suffix('\'')?
        .replace("''", "'");
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(d @ '0'..='7') => {
                let mut v = d.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(x) => {
                            v = v * 8 + x;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Some(out)
}

fn ident_name(token: &Token) -> Option<String> {
    match token.kind {
        Kind::Word => Some(token.text.to_lowercase()),
        Kind::QuotedIdent => Some(token.text[1..token.text.len() - 1].replace("\"\"", "\"")),
        _ => None,
    }
}

/// Parses an S3 URL `s3://bucket/key…` into bucket and key (key may be empty: a prefix).
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

/// Time/date formats PostgreSQL's input parser already reads the way Redshift would.
fn format_ok(value: &str) -> bool {
    let v = value.to_ascii_uppercase();
    v == "AUTO"
        || matches!(
            v.as_str(),
            "YYYY-MM-DD"
                | "YYYY-MM-DD HH:MI:SS"
                | "YYYY-MM-DDTHH:MI:SS"
                | "YYYY-MM-DD HH24:MI:SS"
                | "YYYY-MM-DD HH:MI:SS.SSS"
                | "YYYY-MM-DD HH:MI:SS.US"
                | "YYYY-MM-DDTHH:MI:SS.SSS"
                | "YYYY-MM-DD HH:MI:SSOF"
                | "YYYY-MM-DDTHH:MI:SSOF"
        )
}

fn parse_copy(tokens: &[Token], sig: &[usize]) -> Planned {
    let toks: Vec<&Token> = sig.iter().map(|&i| &tokens[i]).collect();
    let mut p = 1; // past COPY
    // Table name: ident (. ident)*
    let mut table = String::new();
    loop {
        match toks.get(p) {
            Some(t) if matches!(t.kind, Kind::Word | Kind::QuotedIdent) => {
                table.push_str(&t.text);
                p += 1;
            }
            _ => return unsupported("COPY: expected a table name after COPY"),
        }
        if toks.get(p).is_some_and(|t| t.kind == Kind::Dot) {
            table.push('.');
            p += 1;
        } else {
            break;
        }
    }
    let mut columns = None;
    if toks.get(p).is_some_and(|t| t.kind == Kind::LParen) {
        p += 1;
        let mut cols = Vec::new();
        loop {
            let Some(t) = toks.get(p) else {
                return unsupported("COPY: unterminated column list");
            };
            let Some(name) = ident_name(t) else {
                return unsupported(format!("COPY: unexpected '{}' in the column list", t.text));
            };
            cols.push(Ident {
                sql: t.text.clone(),
                name,
            });
            p += 1;
            match toks.get(p).map(|t| t.kind) {
                Some(Kind::Comma) => p += 1,
                Some(Kind::RParen) => {
                    p += 1;
                    break;
                }
                _ => return unsupported("COPY: malformed column list"),
            }
        }
        columns = Some(cols);
    }
    if !toks.get(p).is_some_and(|t| t.is_kw("FROM")) {
        if toks.get(p).is_some_and(|t| t.is_kw("TO")) {
            return unsupported("COPY … TO is not supported by the local Data API endpoint");
        }
        return unsupported("COPY: expected FROM 's3://bucket/key'");
    }
    p += 1;
    let Some(source) = toks.get(p).and_then(|t| copy_string_value(t)) else {
        return unsupported(
            "COPY: only FROM 's3://bucket/key' sources are supported by the local Data API \
             endpoint",
        );
    };
    let Some((bucket, key)) = parse_s3_url(&source) else {
        return unsupported(format!(
            "COPY: source '{source}' is not an s3:// URL; only Amazon S3 sources are supported \
             locally"
        ));
    };
    p += 1;
    let mut plan = CopyPlan {
        table,
        columns,
        bucket,
        key,
        manifest: false,
        compression: None,
        delimiter: ',',
        quote: '"',
        null_as: String::new(),
        empty_as_null: false,
        blanks_as_null: false,
        truncate_columns: false,
        accept_inv_chars: None,
        ignore_header: 0,
        explicit_ids: false,
    };
    let mut csv = false;
    let skip_as = |p: &mut usize| {
        if toks.get(*p).is_some_and(|t| t.is_kw("AS")) {
            *p += 1;
        }
    };
    while let Some(t) = toks.get(p) {
        if t.kind != Kind::Word {
            return unsupported(format!("COPY: unexpected '{}'", t.text));
        }
        let option = t.text.to_ascii_uppercase();
        p += 1;
        let string_arg = |p: &mut usize| -> Option<String> {
            skip_as(p);
            let v = toks.get(*p).and_then(|t| copy_string_value(t));
            if v.is_some() {
                *p += 1;
            }
            v
        };
        let number_arg = |p: &mut usize| -> Option<u64> {
            skip_as(p);
            let v = toks
                .get(*p)
                .filter(|t| t.kind == Kind::Number)
                .and_then(|t| t.text.parse().ok());
            if v.is_some() {
                *p += 1;
            }
            v
        };
        match option.as_str() {
            "MANIFEST" => plan.manifest = true,
            // Credentials and region concern real AWS; the local S3 client has its own.
            "IAM_ROLE" => {
                if toks.get(p).is_some_and(|t| t.is_kw("DEFAULT")) {
                    p += 1;
                } else if string_arg(&mut p).is_none() {
                    return unsupported("COPY: IAM_ROLE needs 'arn:…' or DEFAULT");
                }
            }
            "CREDENTIALS"
            | "ACCESS_KEY_ID"
            | "SECRET_ACCESS_KEY"
            | "SESSION_TOKEN"
            | "REGION"
            | "MASTER_SYMMETRIC_KEY" => {
                if string_arg(&mut p).is_none() {
                    return unsupported(format!("COPY: {option} needs a quoted value"));
                }
                if option == "MASTER_SYMMETRIC_KEY" {
                    return unsupported(
                        "COPY: client-side encrypted sources are not supported locally",
                    );
                }
            }
            "FORMAT" => {
                skip_as(&mut p);
                match toks.get(p) {
                    Some(f) if f.is_kw("CSV") => {
                        csv = true;
                        p += 1;
                    }
                    Some(f) => {
                        return unsupported(format!(
                            "COPY: FORMAT {} is not supported by the local Data API endpoint \
                             (only CSV)",
                            f.text
                        ));
                    }
                    None => return unsupported("COPY: FORMAT needs a format name"),
                }
            }
            "CSV" => csv = true,
            "QUOTE" => match string_arg(&mut p).map(|s| s.chars().collect::<Vec<_>>()) {
                Some(c) if c.len() == 1 => plan.quote = c[0],
                _ => return unsupported("COPY: QUOTE needs a single character"),
            },
            "DELIMITER" => match string_arg(&mut p).map(|s| s.chars().collect::<Vec<_>>()) {
                Some(c) if c.len() == 1 => plan.delimiter = c[0],
                _ => {
                    return unsupported(
                        "COPY: DELIMITER needs a single character (multi-character delimiters \
                         are not supported locally)",
                    );
                }
            },
            "NULL" => match string_arg(&mut p) {
                Some(s) => plan.null_as = s,
                None => return unsupported("COPY: NULL AS needs a quoted string"),
            },
            "GZIP" => plan.compression = Some(Compression::Gzip),
            "ZSTD" => plan.compression = Some(Compression::Zstd),
            "EMPTYASNULL" => plan.empty_as_null = true,
            "BLANKSASNULL" => plan.blanks_as_null = true,
            "TRUNCATECOLUMNS" => plan.truncate_columns = true,
            "ACCEPTINVCHARS" => {
                let save = p;
                match string_arg(&mut p) {
                    Some(s) if s.len() == 1 && s.is_ascii() && s != "\0" => {
                        plan.accept_inv_chars = Some(s.as_bytes()[0]);
                    }
                    Some(_) => {
                        return unsupported("COPY: ACCEPTINVCHARS needs one ASCII character");
                    }
                    None => {
                        p = save;
                        plan.accept_inv_chars = Some(b'?');
                    }
                }
            }
            "TIMEFORMAT" | "DATEFORMAT" => match string_arg(&mut p) {
                Some(f) if format_ok(&f) => {}
                Some(f) => {
                    return unsupported(format!(
                        "COPY: {option} '{f}' is not supported locally (use 'auto' or an ISO \
                         8601 format)"
                    ));
                }
                None => return unsupported(format!("COPY: {option} needs a quoted format")),
            },
            "IGNOREHEADER" => match number_arg(&mut p) {
                Some(n) => plan.ignore_header = n,
                None => return unsupported("COPY: IGNOREHEADER needs a number"),
            },
            "MAXERROR" => match number_arg(&mut p) {
                Some(0) => {}
                Some(_) => {
                    return unsupported(
                        "COPY: MAXERROR above 0 is not supported locally (PostgreSQL cannot skip \
                         bad rows)",
                    );
                }
                None => return unsupported("COPY: MAXERROR needs a number"),
            },
            "ENCODING" => {
                skip_as(&mut p);
                match toks.get(p) {
                    Some(e) if e.is_kw("UTF8") => p += 1,
                    _ => return unsupported("COPY: only ENCODING UTF8 is supported locally"),
                }
            }
            // Table statistics and compression analysis have no local meaning.
            "COMPUPDATE" | "STATUPDATE" => {
                if toks.get(p).is_some_and(|t| {
                    ["ON", "OFF", "TRUE", "FALSE", "PRESET"]
                        .iter()
                        .any(|k| t.is_kw(k))
                }) {
                    p += 1;
                }
            }
            "COMPROWS" => {
                if number_arg(&mut p).is_none() {
                    return unsupported("COPY: COMPROWS needs a number");
                }
            }
            // PostgreSQL rounds numeric input (ROUNDEC's behaviour).
            "ROUNDEC" => {}
            "EXPLICIT_IDS" => plan.explicit_ids = true,
            "BZIP2" | "LZOP" => {
                return unsupported(format!(
                    "COPY: {option} compression is not supported locally (use GZIP or ZSTD)"
                ));
            }
            "JSON" | "AVRO" | "PARQUET" | "ORC" | "FIXEDWIDTH" | "SHAPEFILE" => {
                return unsupported(format!(
                    "COPY: {option} is not supported by the local Data API endpoint (only CSV)"
                ));
            }
            _ => {
                return unsupported(format!(
                    "COPY: option {option} is not supported by the local Data API endpoint"
                ));
            }
        }
    }
    if !csv {
        return unsupported(
            "COPY: only CSV sources are supported by the local Data API endpoint (add CSV or \
             FORMAT AS CSV)",
        );
    }
    if plan.delimiter == plan.quote {
        return unsupported("COPY: DELIMITER and QUOTE must differ");
    }
    Planned::Copy(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(s: &str) -> String {
        match plan(s, &[]).expect("no params").as_slice() {
            [Planned::Sql(s)] => s.clone(),
            other => panic!("expected one SQL statement, got {other:?}"),
        }
    }

    fn copy(s: &str) -> CopyPlan {
        match plan(s, &[]).expect("no params").as_slice() {
            [Planned::Copy(c)] => c.clone(),
            other => panic!("expected a COPY, got {other:?}"),
        }
    }

    fn unsupported_msg(s: &str) -> String {
        match plan(s, &[]).expect("no params").as_slice() {
            [Planned::Unsupported(m)] => m.clone(),
            other => panic!("expected unsupported, got {other:?}"),
        }
    }

    fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn tokenize_round_trips_and_classifies() {
        let s = "SELECT 'it''s', E'a\\'b', \"we\"\"ird\", $f$ ; :x $f$, x::int, :p -- c ;\n/* a /* b */ ; */ 1.5e3";
        let toks = tokenize(s).expect("lexes");
        assert_eq!(render(&toks), s);
        let kinds: Vec<Kind> = toks
            .iter()
            .filter(|t| !t.is_trivia())
            .map(|t| t.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Word,
                Kind::Str,
                Kind::Comma,
                Kind::Str,
                Kind::Comma,
                Kind::QuotedIdent,
                Kind::Comma,
                Kind::Dollar,
                Kind::Comma,
                Kind::Word,
                Kind::Op,
                Kind::Word,
                Kind::Comma,
                Kind::Param,
                Kind::Number
            ]
        );
    }

    #[test]
    fn tokenize_rejects_unterminated() {
        assert!(tokenize("select 'abc").is_err());
        assert!(tokenize("select \"abc").is_err());
        assert!(tokenize("select /* x").is_err());
        assert!(tokenize("select $a$ x").is_err());
        // A positional $1 is not a dollar quote.
        assert!(tokenize("select $1").is_ok());
    }

    #[test]
    fn params_become_escaped_literals_only_outside_quotes() {
        let p = params(&[("id", "o'brien'); DROP TABLE t; --"), ("n", "5")]);
        let out = plan(
            "SELECT ':id', \":id\", x::text FROM t WHERE a = :id AND b = :n -- :id\n",
            &p,
        )
        .expect("params ok");
        let [Planned::Sql(s)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(
            s,
            "SELECT ':id', \":id\", x::text FROM t WHERE a =  'o''brien''); DROP TABLE t; --'  AND b =  '5'  -- :id\n"
        );
        // The injected text stays inside one literal: one statement, not two.
        assert_eq!(split_statements(tokenize(s).expect("lexes")).len(), 1);
    }

    #[test]
    fn param_literal_cannot_fuse_with_neighbours() {
        let p = params(&[("x", "\\' or 1=1")]);
        let out = plan("SELECT E:x, :x'tail'", &p).expect("ok");
        let [Planned::Sql(s)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(s, "SELECT E '\\'' or 1=1' ,  '\\'' or 1=1' 'tail'");
    }

    #[test]
    fn param_errors() {
        assert_eq!(
            plan("select :missing", &[]),
            Err(ParamError::Missing("missing".into()))
        );
        assert_eq!(
            plan("select :a", &params(&[("a", "1"), ("a", "2")])),
            Err(ParamError::Duplicate("a".into()))
        );
        assert_eq!(
            plan("select :a", &params(&[("a", "x\0y")])),
            Err(ParamError::NulInValue("a".into()))
        );
        assert_eq!(
            plan("select 1", &params(&[("a b", "1")])),
            Err(ParamError::BadName("a b".into()))
        );
    }

    #[test]
    fn split_keeps_semicolons_in_strings_and_bodies() {
        let out = plan(
            "insert into t values ('a;b'); create function f() returns int as $$ select 1; $$ language sql; ;  -- trailing\n",
            &[],
        )
        .expect("ok");
        assert_eq!(out.len(), 2, "{out:?}");
    }

    #[test]
    fn ddl_loses_redshift_attributes() {
        let out = sql(
            "CREATE TABLE IF NOT EXISTS public.events (\n  id VARCHAR(64) NOT NULL ENCODE zstd,\n  user_id BIGINT DISTKEY,\n  payload SUPER,\n  note VARCHAR(MAX) ENCODE lzo,\n  ts TIMESTAMPTZ SORTKEY,\n  encode text, backup boolean\n) DISTSTYLE KEY DISTKEY(user_id) COMPOUND SORTKEY(ts, id) BACKUP NO",
        );
        let compact = out.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            compact,
            "CREATE TABLE IF NOT EXISTS public.events ( id VARCHAR(64) NOT NULL , user_id BIGINT , payload jsonb, note text , ts TIMESTAMPTZ , encode text, backup boolean )"
        );
        let out = sql(
            "create temp table s (like public.events) interleaved sortkey (a) diststyle even sortkey auto",
        );
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>().join(" "),
            "create temp table s (like public.events)"
        );
    }

    #[test]
    fn key_constraints_are_informational_as_in_redshift() {
        let compact = |s: &str| sql(s).split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            compact(
                "CREATE TABLE l (raw_key VARCHAR(1024) NOT NULL, etag VARCHAR(256), PRIMARY KEY \
                 (raw_key)) SORTKEY (raw_key)"
            ),
            "CREATE TABLE l (raw_key VARCHAR(1024) NOT NULL, etag VARCHAR(256))"
        );
        assert_eq!(
            compact(
                "create table t (id int primary key, u int unique, p int references o (id), \
                 q int constraint fk references s.o, constraint pk primary key (id, u), \
                 unique (u), foreign key (p) references o (id), v int not null)"
            ),
            "create table t (id int , u int , p int , q int , v int not null)"
        );
        assert_eq!(
            compact("create table t (primary key (a), a int, b int)"),
            "create table t ( a int, b int)"
        );
        // Only in CREATE: a column called `references` elsewhere is quoted, and DML is untouched.
        assert_eq!(
            compact("select unique_id from t where primary_key = 1"),
            "select unique_id from t where primary_key = 1"
        );
    }

    #[test]
    fn indexes_do_not_exist_in_redshift() {
        for s in ["CREATE INDEX i ON t (a)", "create unique index i on t (a)"] {
            assert!(unsupported_msg(s).contains("no indexes"), "{s}");
        }
        assert_eq!(
            sql("create table index_log (a int)"),
            "create table index_log (a int)"
        );
    }

    #[test]
    fn identity_becomes_generated() {
        let out = sql("create table t (id bigint identity(1, 1), v int)");
        assert_eq!(
            out,
            "create table t (id bigint GENERATED BY DEFAULT AS IDENTITY (START WITH 1 INCREMENT BY 1), v int)"
        );
    }

    #[test]
    fn functions_and_types_are_mapped_outside_ddl_too() {
        assert_eq!(
            sql(
                "SELECT GETDATE(), sysdate, JSON_PARSE('{\"a\":1}') -> 'a', x::super, NVL(a, 'sysdate'), 'getdate()' FROM t"
            ),
            "SELECT now(), now(), ('{\"a\":1}')::jsonb -> 'a', x::jsonb, coalesce(a, 'sysdate'), 'getdate()' FROM t"
        );
        assert_eq!(
            sql("select json_parse(json_serialize(p)) from t"),
            "select ((p)::text)::jsonb from t"
        );
        // DDL attribute words are left alone outside CREATE.
        assert_eq!(sql("select distkey from t"), "select distkey from t");
        // encode() the function is not the ENCODE attribute.
        assert_eq!(
            sql("create table t as select encode(b, 'hex') from u"),
            "create table t as select encode(b, 'hex') from u"
        );
    }

    #[test]
    fn unload_and_external_fail_clearly() {
        assert!(
            unsupported_msg("UNLOAD ('select 1') TO 's3://b/k' IAM_ROLE 'x'")
                .contains("UNLOAD is not supported")
        );
        assert!(unsupported_msg("create external table s.t (a int)").contains("Redshift-only"));
        assert!(unsupported_msg("select 'oops").contains("unterminated quoted string"));
    }

    #[test]
    fn copy_manifest_csv_gzip() {
        let c = copy(
            "COPY public.\"Events\" (id, \"Payload\", ts) FROM 's3://stage/manifests/m1.json' \
             IAM_ROLE 'arn:aws:iam::123:role/r' MANIFEST FORMAT AS CSV GZIP TIMEFORMAT 'auto' \
             DATEFORMAT AS 'auto' EMPTYASNULL IGNOREHEADER 1 REGION 'us-east-1' \
             ACCEPTINVCHARS COMPUPDATE OFF STATUPDATE OFF DELIMITER '\\t' NULL AS '\\\\N'",
        );
        assert_eq!(c.table, "public.\"Events\"");
        let cols = c.columns.clone().expect("columns");
        assert_eq!(
            cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["id", "Payload", "ts"]
        );
        assert_eq!(
            (c.bucket.as_str(), c.key.as_str()),
            ("stage", "manifests/m1.json")
        );
        assert!(c.manifest && c.empty_as_null && !c.needs_staging());
        assert_eq!(c.compression, Some(Compression::Gzip));
        assert_eq!(c.ignore_header, 1);
        assert_eq!(c.accept_inv_chars, Some(b'?'));
        assert_eq!(c.delimiter, '\t');
        assert_eq!(c.null_as, "\\N");
        assert_eq!(
            c.pg_options(&["\"Payload\"".into()]),
            "FORMAT csv, DELIMITER '\t', QUOTE '\"', NULL '\\N', FORCE_NULL (\"Payload\")"
        );
    }

    #[test]
    fn copy_source_from_a_parameter() {
        let out = plan(
            "COPY t FROM :src IAM_ROLE :role MANIFEST CSV",
            &params(&[("src", "s3://b/m.json"), ("role", "arn:aws:iam::1:role/r")]),
        )
        .expect("ok");
        let [Planned::Copy(c)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!((c.bucket.as_str(), c.key.as_str()), ("b", "m.json"));
        assert!(c.manifest);
    }

    #[test]
    fn copy_prefix_defaults() {
        let c = copy(
            "copy t from 's3://b/raw/' credentials 'aws_iam_role=x' csv zstd quote as '''' truncatecolumns blanksasnull",
        );
        assert!(!c.manifest && c.needs_staging());
        assert_eq!(c.columns, None);
        assert_eq!(c.key, "raw/");
        assert_eq!(c.quote, '\'');
        assert_eq!(c.compression, Some(Compression::Zstd));
        assert_eq!(
            c.pg_options(&[]),
            "FORMAT csv, DELIMITER ',', QUOTE '''', NULL ''"
        );
        // Without EMPTYASNULL an empty character field is '' (Redshift), not NULL.
        assert_eq!(
            c.pg_options(&["c".into()]),
            "FORMAT csv, DELIMITER ',', QUOTE '''', NULL '', FORCE_NOT_NULL (c)"
        );
    }

    #[test]
    fn copy_rejects_what_it_cannot_honour() {
        for (sql, needle) in [
            (
                "copy t from 's3://b/k' json 'auto'",
                "JSON is not supported",
            ),
            ("copy t from 's3://b/k' format as parquet", "FORMAT parquet"),
            ("copy t from 's3://b/k'", "only CSV"),
            ("copy t from 's3://b/k' csv bzip2", "BZIP2"),
            ("copy t from 's3://b/k' csv maxerror 10", "MAXERROR"),
            (
                "copy t from 's3://b/k' csv timeformat 'epochsecs'",
                "TIMEFORMAT 'epochsecs'",
            ),
            ("copy t from 's3://b/k' csv fillrecord", "FILLRECORD"),
            (
                "copy t from 'dynamodb://tbl' readratio 50",
                "not an s3:// URL",
            ),
            ("copy t to stdout", "COPY … TO"),
            ("copy t from stdin", "only FROM 's3://"),
            (
                "copy t from 's3://b/k' csv delimiter '||'",
                "single character",
            ),
        ] {
            let msg = unsupported_msg(sql);
            assert!(msg.contains(needle), "{sql}: {msg}");
        }
    }

    #[test]
    fn transaction_control_detection() {
        let p = plan("begin; insert into t values (1); commit", &[]).expect("ok");
        assert_eq!(
            p.iter()
                .map(Planned::is_transaction_control)
                .collect::<Vec<_>>(),
            [true, false, true]
        );
    }

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_s3_url("s3://b/a/b c"),
            Some(("b".into(), "a/b c".into()))
        );
        assert_eq!(parse_s3_url("s3://b"), Some(("b".into(), String::new())));
        assert_eq!(parse_s3_url("s3:///k"), None);
        assert_eq!(parse_s3_url("https://b/k"), None);
    }
}
