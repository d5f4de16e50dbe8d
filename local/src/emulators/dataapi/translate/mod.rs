//! Redshift SQL → PostgreSQL 15, for what caudal's loader and migrations emit.
//!
//! Pure functions over a small tokenizer that understands `'…'` (and `E'…'`) strings, `"…"`
//! identifiers, `$tag$…$tag$` bodies, `--` and (nested) `/* */` comments, the `::` cast and
//! `:name` Data API parameters, so rewriting never touches text inside quotes or comments.
//!
//! The pipeline for one submitted SQL text is [`plan`]:
//! 1. tokenize; 2. replace `:name` parameters by escaped literals (a missing one is a
//!    [`ParamError`], which the API reports as a ValidationException); 3. split into
//!    statements at top-level `;` — these three in `lex`; 4. translate each statement:
//!    Redshift `COPY … FROM 's3://…'` becomes a [`CopyPlan`] (`copy_parse`), anything else is
//!    rewritten (`rewrite`): DDL loses Redshift-only physical attributes, a few functions and
//!    types are renamed. Anything we cannot run faithfully becomes [`Planned::Unsupported`]
//!    with a message: the statement then FAILS, it is never silently skipped.

mod copy_parse;
mod lex;
mod rewrite;

pub use copy_parse::{Compression, CopyPlan, Ident, parse_s3_url};
pub use lex::{
    Kind, LexError, ParamError, Token, quote_ident, quote_literal, render, split_statements,
    substitute_params, tokenize,
};

use copy_parse::parse_copy;
use rewrite::rewrite;

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

pub(super) fn significant(tokens: &[Token]) -> Vec<usize> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.is_trivia())
        .map(|(i, _)| i)
        .collect()
}

pub(super) fn unsupported(msg: impl Into<String>) -> Planned {
    Planned::Unsupported(msg.into())
}

#[cfg(test)]
mod tests;
