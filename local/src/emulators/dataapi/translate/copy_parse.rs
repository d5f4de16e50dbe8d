//! Parsing a Redshift `COPY … FROM 's3://…'` into a validated [`CopyPlan`] (CSV only); an
//! option we cannot honour makes the statement [`Planned::Unsupported`], never ignored.

use std::fmt::Write as _;

use super::lex::{Kind, Token, quote_literal};
use super::{Planned, unsupported};

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
    /// REGION: where the source bucket is, when it is not the warehouse's region. Redshift
    /// refuses a bucket in another region without it (and with the wrong one).
    pub region: Option<String>,
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

/// A position in a COPY statement's significant tokens.
struct Cursor<'a> {
    toks: Vec<&'a Token>,
    p: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.toks.get(self.p).copied()
    }

    fn skip_as(&mut self) {
        if self.peek().is_some_and(|t| t.is_kw("AS")) {
            self.p += 1;
        }
    }

    /// `[AS] '…'`, consumed only if the string is there.
    fn string_arg(&mut self) -> Option<String> {
        self.skip_as();
        let v = self.peek().and_then(copy_string_value);
        if v.is_some() {
            self.p += 1;
        }
        v
    }

    /// `[AS] <number>`, consumed only if the number is there.
    fn number_arg(&mut self) -> Option<u64> {
        self.skip_as();
        let v = self
            .peek()
            .filter(|t| t.kind == Kind::Number)
            .and_then(|t| t.text.parse().ok());
        if v.is_some() {
            self.p += 1;
        }
        v
    }
}

/// Why a COPY cannot run locally: the statement's FAILED message.
type Refused = String;

pub(super) fn parse_copy(tokens: &[Token], sig: &[usize]) -> Planned {
    let mut c = Cursor {
        toks: sig.iter().map(|&i| &tokens[i]).collect(),
        p: 1, // past COPY
    };
    match copy_plan(&mut c) {
        Ok(plan) => Planned::Copy(plan),
        Err(message) => unsupported(message),
    }
}

/// `COPY <table> [(<columns>)] FROM '<s3 url>' <options>…`, validated.
fn copy_plan(c: &mut Cursor<'_>) -> Result<CopyPlan, Refused> {
    let table = copy_table(c)?;
    let columns = copy_columns(c)?;
    let (bucket, key) = copy_source(c)?;
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
        region: None,
    };
    let mut csv = false;
    while let Some(t) = c.peek() {
        if t.kind != Kind::Word {
            return Err(format!("COPY: unexpected '{}'", t.text));
        }
        let option = t.text.to_ascii_uppercase();
        c.p += 1;
        copy_option(c, &option, &mut plan, &mut csv)?;
    }
    if !csv {
        return Err(
            "COPY: only CSV sources are supported by the local Data API endpoint (add \
                    CSV or FORMAT AS CSV)"
                .into(),
        );
    }
    if plan.delimiter == plan.quote {
        return Err("COPY: DELIMITER and QUOTE must differ".into());
    }
    Ok(plan)
}

/// The table name: `ident (. ident)*`, as written.
fn copy_table(c: &mut Cursor<'_>) -> Result<String, Refused> {
    let mut table = String::new();
    loop {
        match c.peek() {
            Some(t) if matches!(t.kind, Kind::Word | Kind::QuotedIdent) => {
                table.push_str(&t.text);
                c.p += 1;
            }
            _ => return Err("COPY: expected a table name after COPY".into()),
        }
        if c.peek().is_some_and(|t| t.kind == Kind::Dot) {
            table.push('.');
            c.p += 1;
        } else {
            return Ok(table);
        }
    }
}

/// The optional `(col, …)` list.
fn copy_columns(c: &mut Cursor<'_>) -> Result<Option<Vec<Ident>>, Refused> {
    if !c.peek().is_some_and(|t| t.kind == Kind::LParen) {
        return Ok(None);
    }
    c.p += 1;
    let mut cols = Vec::new();
    loop {
        let Some(t) = c.peek() else {
            return Err("COPY: unterminated column list".into());
        };
        let Some(name) = ident_name(t) else {
            return Err(format!("COPY: unexpected '{}' in the column list", t.text));
        };
        cols.push(Ident {
            sql: t.text.clone(),
            name,
        });
        c.p += 1;
        match c.peek().map(|t| t.kind) {
            Some(Kind::Comma) => c.p += 1,
            Some(Kind::RParen) => {
                c.p += 1;
                return Ok(Some(cols));
            }
            _ => return Err("COPY: malformed column list".into()),
        }
    }
}

/// `FROM 's3://bucket/key'` → (bucket, key).
fn copy_source(c: &mut Cursor<'_>) -> Result<(String, String), Refused> {
    if !c.peek().is_some_and(|t| t.is_kw("FROM")) {
        if c.peek().is_some_and(|t| t.is_kw("TO")) {
            return Err("COPY … TO is not supported by the local Data API endpoint".into());
        }
        return Err("COPY: expected FROM 's3://bucket/key'".into());
    }
    c.p += 1;
    let Some(source) = c.peek().and_then(copy_string_value) else {
        return Err(
            "COPY: only FROM 's3://bucket/key' sources are supported by the local Data \
                    API endpoint"
                .into(),
        );
    };
    let Some(url) = parse_s3_url(&source) else {
        return Err(format!(
            "COPY: source '{source}' is not an s3:// URL; only Amazon S3 sources are supported \
             locally"
        ));
    };
    c.p += 1;
    Ok(url)
}

/// One option after the source (its keyword already consumed), applied to `plan`.
fn copy_option(
    c: &mut Cursor<'_>,
    option: &str,
    plan: &mut CopyPlan,
    csv: &mut bool,
) -> Result<(), Refused> {
    match option {
        "MANIFEST" => plan.manifest = true,
        "IAM_ROLE"
        | "CREDENTIALS"
        | "ACCESS_KEY_ID"
        | "SECRET_ACCESS_KEY"
        | "SESSION_TOKEN"
        | "MASTER_SYMMETRIC_KEY" => access_option(c, option)?,
        "REGION" => {
            plan.region = Some(
                c.string_arg()
                    .ok_or_else(|| "COPY: REGION needs a quoted region name".to_owned())?,
            );
        }
        "FORMAT" | "CSV" | "QUOTE" | "DELIMITER" | "NULL" | "ENCODING" => {
            format_option(c, option, plan, csv)?;
        }
        "GZIP" => plan.compression = Some(Compression::Gzip),
        "ZSTD" => plan.compression = Some(Compression::Zstd),
        "EMPTYASNULL" | "BLANKSASNULL" | "TRUNCATECOLUMNS" | "ACCEPTINVCHARS" | "TIMEFORMAT"
        | "DATEFORMAT" | "IGNOREHEADER" | "MAXERROR" | "EXPLICIT_IDS" => {
            conversion_option(c, option, plan)?;
        }
        // Table statistics and compression analysis have no local meaning.
        "COMPUPDATE" | "STATUPDATE" => {
            if c.peek().is_some_and(|t| {
                ["ON", "OFF", "TRUE", "FALSE", "PRESET"]
                    .iter()
                    .any(|k| t.is_kw(k))
            }) {
                c.p += 1;
            }
        }
        "COMPROWS" => {
            if c.number_arg().is_none() {
                return Err("COPY: COMPROWS needs a number".into());
            }
        }
        // PostgreSQL rounds numeric input (ROUNDEC's behaviour).
        "ROUNDEC" => {}
        "BZIP2" | "LZOP" => {
            return Err(format!(
                "COPY: {option} compression is not supported locally (use GZIP or ZSTD)"
            ));
        }
        "JSON" | "AVRO" | "PARQUET" | "ORC" | "FIXEDWIDTH" | "SHAPEFILE" => {
            return Err(format!(
                "COPY: {option} is not supported by the local Data API endpoint (only CSV)"
            ));
        }
        _ => {
            return Err(format!(
                "COPY: option {option} is not supported by the local Data API endpoint"
            ));
        }
    }
    Ok(())
}

/// Credentials and region concern real AWS; the local S3 client has its own. Checked for
/// shape only.
fn access_option(c: &mut Cursor<'_>, option: &str) -> Result<(), Refused> {
    if option == "IAM_ROLE" {
        if c.peek().is_some_and(|t| t.is_kw("DEFAULT")) {
            c.p += 1;
        } else if c.string_arg().is_none() {
            return Err("COPY: IAM_ROLE needs 'arn:…' or DEFAULT".into());
        }
        return Ok(());
    }
    if c.string_arg().is_none() {
        return Err(format!("COPY: {option} needs a quoted value"));
    }
    if option == "MASTER_SYMMETRIC_KEY" {
        return Err("COPY: client-side encrypted sources are not supported locally".into());
    }
    Ok(())
}

/// The data format options: CSV, its quote, delimiter and null string, the encoding.
fn format_option(
    c: &mut Cursor<'_>,
    option: &str,
    plan: &mut CopyPlan,
    csv: &mut bool,
) -> Result<(), Refused> {
    match option {
        "FORMAT" => {
            c.skip_as();
            match c.peek() {
                Some(f) if f.is_kw("CSV") => {
                    *csv = true;
                    c.p += 1;
                }
                Some(f) => {
                    return Err(format!(
                        "COPY: FORMAT {} is not supported by the local Data API endpoint (only \
                         CSV)",
                        f.text
                    ));
                }
                None => return Err("COPY: FORMAT needs a format name".into()),
            }
        }
        "CSV" => *csv = true,
        "QUOTE" => match c.string_arg().map(|s| s.chars().collect::<Vec<_>>()) {
            Some(ch) if ch.len() == 1 => plan.quote = ch[0],
            _ => return Err("COPY: QUOTE needs a single character".into()),
        },
        "DELIMITER" => match c.string_arg().map(|s| s.chars().collect::<Vec<_>>()) {
            Some(ch) if ch.len() == 1 => plan.delimiter = ch[0],
            _ => {
                return Err("COPY: DELIMITER needs a single character (multi-character \
                            delimiters are not supported locally)"
                    .into());
            }
        },
        "NULL" => match c.string_arg() {
            Some(s) => plan.null_as = s,
            None => return Err("COPY: NULL AS needs a quoted string".into()),
        },
        // "ENCODING"
        _ => {
            c.skip_as();
            match c.peek() {
                Some(e) if e.is_kw("UTF8") => c.p += 1,
                _ => return Err("COPY: only ENCODING UTF8 is supported locally".into()),
            }
        }
    }
    Ok(())
}

/// The data conversion options: empty and blank fields, truncation, invalid characters,
/// time and date formats, header lines, error tolerance, identity columns.
fn conversion_option(c: &mut Cursor<'_>, option: &str, plan: &mut CopyPlan) -> Result<(), Refused> {
    match option {
        "EMPTYASNULL" => plan.empty_as_null = true,
        "BLANKSASNULL" => plan.blanks_as_null = true,
        "TRUNCATECOLUMNS" => plan.truncate_columns = true,
        "ACCEPTINVCHARS" => {
            let save = c.p;
            match c.string_arg() {
                Some(s) if s.len() == 1 && s.is_ascii() && s != "\0" => {
                    plan.accept_inv_chars = Some(s.as_bytes()[0]);
                }
                Some(_) => return Err("COPY: ACCEPTINVCHARS needs one ASCII character".into()),
                None => {
                    c.p = save;
                    plan.accept_inv_chars = Some(b'?');
                }
            }
        }
        "TIMEFORMAT" | "DATEFORMAT" => match c.string_arg() {
            Some(f) if format_ok(&f) => {}
            Some(f) => {
                return Err(format!(
                    "COPY: {option} '{f}' is not supported locally (use 'auto' or an ISO 8601 \
                     format)"
                ));
            }
            None => return Err(format!("COPY: {option} needs a quoted format")),
        },
        "IGNOREHEADER" => match c.number_arg() {
            Some(n) => plan.ignore_header = n,
            None => return Err("COPY: IGNOREHEADER needs a number".into()),
        },
        "MAXERROR" => match c.number_arg() {
            Some(0) => {}
            Some(_) => {
                return Err(
                    "COPY: MAXERROR above 0 is not supported locally (PostgreSQL cannot \
                            skip bad rows)"
                        .into(),
                );
            }
            None => return Err("COPY: MAXERROR needs a number".into()),
        },
        // "EXPLICIT_IDS"
        _ => plan.explicit_ids = true,
    }
    Ok(())
}
