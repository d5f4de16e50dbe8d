//! CSV for Redshift `COPY … CSV` (and PostgreSQL `COPY … (FORMAT csv)` in the local stack).
//!
//! Encoding, per cell:
//!
//! | cell | written as |
//! |---|---|
//! | NULL (non-SUPER column) | the marker [`NULL_MARKER`], **unquoted** |
//! | NULL in a SUPER column | `null`, unquoted (Redshift applies no NULL marker to SUPER; the JSON null loads as a SUPER null) |
//! | VARCHAR | always double-quoted, `"` doubled (RFC 4180) — so `""` is the empty string |
//! | SUPER | its JSON text, double-quoted |
//! | integers, DECIMAL, floats | plain (`-12`, `19.99`, `1.5e-7`) |
//! | BOOLEAN | `true` / `false` |
//! | DATE | `YYYY-MM-DD` |
//! | TIMESTAMPTZ | ISO 8601 UTC with microseconds, `2026-11-25T19:55:17.123456Z` |
//!
//! Why a marker rather than "empty unquoted field = NULL": Redshift's COPY loads an empty
//! VARCHAR field as an empty string unless `EMPTYASNULL`, and with `EMPTYASNULL` it turns real
//! empty strings into NULL too; whether a quoted `""` escapes `NULL AS ''` is not documented.
//! A marker that never appears unquoted for any other value — every text is quoted, and a text
//! equal to the marker is refused by the mapping — keeps NULL and `''` apart on both engines
//! without relying on quote-sensitivity. Rows end with `\n`; quoted fields may contain line
//! breaks, which both engines accept inside quotes.

use std::io::{self, Write};

use super::Row;
use super::types::{Cell, format_date, format_timestamp};
use crate::null_marker::NULL_MARKER;

/// The `COPY` options that match [`write_csv_row`], for files written gzip-compressed:
/// `COPY t FROM 's3://…/manifest' IAM_ROLE '…' MANIFEST <COPY_FORMAT_OPTIONS>`.
///
/// `DATEFORMAT 'YYYY-MM-DD'` and `TIMEFORMAT 'auto'` read what we write; `EMPTYASNULL` and
/// `BLANKSASNULL` must **not** be added (they would turn real empty strings into NULL).
/// PostgreSQL equivalent: `(FORMAT csv, NULL '~caudal~null~')` on the decompressed stream.
pub const COPY_FORMAT_OPTIONS: &str =
    "FORMAT AS CSV NULL AS '~caudal~null~' ZSTD DATEFORMAT 'YYYY-MM-DD' TIMEFORMAT 'auto'";

/// The codec of the staging CSV parts COPY reads with [`COPY_FORMAT_OPTIONS`]: zstd level 1,
/// several times cheaper to write than gzip-6 (the loader's largest cost per event after the
/// rules) and as small on this CSV. Redshift COPY reads it (`ZSTD`), and so does the local
/// stack's COPY.
pub const STAGING_CODEC: crate::codec::Codec = crate::codec::Codec::Zstd { level: 1 };

fn quoted<W: Write>(w: &mut W, s: &str) -> io::Result<()> {
    w.write_all(b"\"")?;
    let mut rest = s.as_bytes();
    while let Some(i) = rest.iter().position(|b| *b == b'"') {
        w.write_all(&rest[..=i])?;
        w.write_all(b"\"")?;
        rest = &rest[i + 1..];
    }
    w.write_all(rest)?;
    w.write_all(b"\"")
}

/// Write one CSV record (with its `\n`) for an arbitrary list of cells (e.g.
/// [`super::RuleSet::reject_cells`]).
pub fn write_csv_cells<W: Write>(w: &mut W, cells: &[Cell]) -> io::Result<()> {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        match cell {
            Cell::Null => w.write_all(NULL_MARKER.as_bytes())?,
            Cell::Int(n) => write!(w, "{n}")?,
            Cell::Float(x) => match serde_json::Number::from_f64(*x) {
                // serde_json prints the shortest round-tripping form.
                Some(n) => write!(w, "{n}")?,
                None => w.write_all(NULL_MARKER.as_bytes())?,
            },
            Cell::Decimal(d) => w.write_all(d.as_bytes())?,
            Cell::Bool(b) => w.write_all(if *b { b"true" } else { b"false" })?,
            Cell::Text(s) => quoted(w, s)?,
            Cell::Date(d) => w.write_all(format_date(*d).as_bytes())?,
            Cell::Timestamp(t) => match crate::warehouse::timestamp_bytes(*t) {
                Some(b) => w.write_all(&b)?,
                None => w.write_all(format_timestamp(*t).as_bytes())?,
            },
            Cell::Super(json) => quoted(w, json)?,
        }
    }
    w.write_all(b"\n")
}

/// Write one row as a CSV record (with its `\n`); see the module docs for the encoding and
/// [`COPY_FORMAT_OPTIONS`] for the matching `COPY` options.
pub fn write_csv_row<W: Write>(w: &mut W, row: &Row) -> io::Result<()> {
    write_csv_cells(w, &row.values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_csv_reader() {
        let t = time::macros::datetime!(2026-11-25 19:55:17.123456 UTC);
        let cells = vec![
            Cell::Text("plain".into()),
            Cell::Text(String::new()),
            Cell::Null,
            Cell::Text("a \"quoted\", comma\nnew line".into()),
            Cell::Int(-42),
            Cell::Float(1.5e-7),
            Cell::Decimal("19.90".into()),
            Cell::Bool(true),
            Cell::Date(t.date()),
            Cell::Timestamp(t),
            Cell::Super("{\"k\":\"v,\\\"x\\\"\"}".into()),
        ];
        let mut out = Vec::new();
        write_csv_cells(&mut out, &cells).unwrap();
        write_csv_cells(&mut out, &[Cell::Text("second".into())]).unwrap();

        let mut rdr = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&out[..]);
        let records: Vec<::csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 2);
        let r = &records[0];
        assert_eq!(&r[0], "plain");
        assert_eq!(&r[1], "");
        assert_eq!(&r[2], NULL_MARKER);
        assert_eq!(&r[3], "a \"quoted\", comma\nnew line");
        assert_eq!(&r[4], "-42");
        assert_eq!(&r[5], "1.5e-7");
        assert_eq!(&r[6], "19.90");
        assert_eq!(&r[7], "true");
        assert_eq!(&r[8], "2026-11-25");
        assert_eq!(&r[9], "2026-11-25T19:55:17.123456Z");
        let back: serde_json::Value = serde_json::from_str(&r[10]).unwrap();
        assert_eq!(back, serde_json::json!({"k": "v,\"x\""}));
        assert_eq!(&records[1][0], "second");
    }

    #[test]
    fn null_and_empty_string_differ_on_the_wire() {
        let mut out = Vec::new();
        write_csv_cells(&mut out, &[Cell::Null, Cell::Text(String::new())]).unwrap();
        assert_eq!(out, b"~caudal~null~,\"\"\n");
        assert!(COPY_FORMAT_OPTIONS.contains("NULL AS '~caudal~null~'"));
        assert!(!COPY_FORMAT_OPTIONS.contains("EMPTYASNULL"));
        let keyword = format!(" {} ", STAGING_CODEC.copy_keyword());
        assert!(
            COPY_FORMAT_OPTIONS.contains(&keyword),
            "{COPY_FORMAT_OPTIONS}"
        );
        assert!(!COPY_FORMAT_OPTIONS.contains(" GZIP "));
    }
}
