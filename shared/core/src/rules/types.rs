//! Warehouse column types, the typed [`Cell`] a value becomes, and the strict conversion between
//! them: a value that does not fit its column is an error naming why, never a silent truncation.

use std::fmt;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, UtcOffset};

/// Largest VARCHAR length Redshift accepts, in bytes.
pub const MAX_VARCHAR: u32 = 65_535;
/// Largest DECIMAL precision Redshift accepts.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// A Redshift column type the rules can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `SMALLINT` (i16).
    SmallInt,
    /// `INTEGER` (i32).
    Integer,
    /// `BIGINT` (i64).
    BigInt,
    /// `REAL` (f32).
    Real,
    /// `DOUBLE PRECISION` (f64).
    Double,
    /// `DECIMAL(precision, scale)`.
    Decimal {
        /// Total digits, 1–38.
        precision: u8,
        /// Digits after the point, 0–precision.
        scale: u8,
    },
    /// `BOOLEAN`.
    Boolean,
    /// `VARCHAR(n)`: `n` is a length in **bytes** (UTF-8), 1–65535.
    Varchar(u32),
    /// `DATE`.
    Date,
    /// `TIMESTAMPTZ` (microsecond precision).
    TimestampTz,
    /// `SUPER` (semi-structured JSON; `jsonb` on PostgreSQL).
    Super,
}

impl ColumnType {
    /// Parse a type name as written in the rules file (case-insensitive; common aliases such as
    /// `INT8`, `FLOAT8`, `NUMERIC(p,s)`, `TIMESTAMP WITH TIME ZONE` accepted).
    // About 80 lines on purpose: one flat match arm per type name, read as a table.
    pub fn parse(text: &str) -> Result<ColumnType, String> {
        let norm = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_uppercase();
        let (base, args) = match norm.find('(') {
            Some(open) => {
                let Some(inner) = norm[open + 1..].strip_suffix(')') else {
                    return Err(format!("malformed type {text:?}: unbalanced parenthesis"));
                };
                (norm[..open].trim_end(), Some(inner.trim()))
            }
            None => (norm.as_str(), None),
        };
        let no_args = |t: ColumnType| match args {
            None => Ok(t),
            Some(_) => Err(format!(
                "type {base} takes no length/precision (got {text:?})"
            )),
        };
        match base {
            "SMALLINT" | "INT2" => no_args(ColumnType::SmallInt),
            "INTEGER" | "INT" | "INT4" => no_args(ColumnType::Integer),
            "BIGINT" | "INT8" => no_args(ColumnType::BigInt),
            "REAL" | "FLOAT4" => no_args(ColumnType::Real),
            "DOUBLE PRECISION" | "FLOAT8" | "FLOAT" => no_args(ColumnType::Double),
            "BOOLEAN" | "BOOL" => no_args(ColumnType::Boolean),
            "DATE" => no_args(ColumnType::Date),
            "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => no_args(ColumnType::TimestampTz),
            "SUPER" => no_args(ColumnType::Super),
            "VARCHAR" | "CHARACTER VARYING" | "NVARCHAR" | "TEXT" => {
                let Some(arg) = args else {
                    return Err(format!(
                        "{base} needs a length in bytes, e.g. VARCHAR(256) (1..={MAX_VARCHAR})"
                    ));
                };
                let n = if arg == "MAX" {
                    MAX_VARCHAR
                } else {
                    arg.parse::<u32>()
                        .map_err(|_| format!("VARCHAR length {arg:?} is not a number"))?
                };
                if !(1..=MAX_VARCHAR).contains(&n) {
                    return Err(format!("VARCHAR length {n} out of range 1..={MAX_VARCHAR}"));
                }
                Ok(ColumnType::Varchar(n))
            }
            "DECIMAL" | "NUMERIC" => {
                let Some(arg) = args else {
                    return Err(format!(
                        "{base} needs a precision and scale, e.g. DECIMAL(12,2)"
                    ));
                };
                let mut parts = arg.split(',').map(str::trim);
                let p = parts.next().unwrap_or_default();
                let s = parts.next().unwrap_or("0");
                if parts.next().is_some() {
                    return Err(format!("{base}({arg}) has too many arguments"));
                }
                let precision: u8 = p
                    .parse()
                    .map_err(|_| format!("{base} precision {p:?} is not a number"))?;
                let scale: u8 = s
                    .parse()
                    .map_err(|_| format!("{base} scale {s:?} is not a number"))?;
                if !(1..=MAX_DECIMAL_PRECISION).contains(&precision) || scale > precision {
                    return Err(format!(
                        "{base}({precision},{scale}) out of range: precision 1..=38, scale 0..=precision"
                    ));
                }
                Ok(ColumnType::Decimal { precision, scale })
            }
            "CHAR" | "CHARACTER" | "NCHAR" | "BPCHAR" => Err(format!(
                "{base} is not supported (fixed-width, blank-padded): use VARCHAR(n)"
            )),
            "TIMESTAMP" | "TIMESTAMP WITHOUT TIME ZONE" => Err(format!(
                "{base} (without time zone) is not supported: use TIMESTAMPTZ"
            )),
            _ => Err(format!("unknown type name {text:?}")),
        }
    }

    /// The canonical SQL spelling (Redshift dialect).
    pub fn sql(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::SmallInt => f.write_str("SMALLINT"),
            ColumnType::Integer => f.write_str("INTEGER"),
            ColumnType::BigInt => f.write_str("BIGINT"),
            ColumnType::Real => f.write_str("REAL"),
            ColumnType::Double => f.write_str("DOUBLE PRECISION"),
            ColumnType::Decimal { precision, scale } => write!(f, "DECIMAL({precision},{scale})"),
            ColumnType::Boolean => f.write_str("BOOLEAN"),
            ColumnType::Varchar(n) => write!(f, "VARCHAR({n})"),
            ColumnType::Date => f.write_str("DATE"),
            ColumnType::TimestampTz => f.write_str("TIMESTAMPTZ"),
            ColumnType::Super => f.write_str("SUPER"),
        }
    }
}

/// One typed value of an output row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Any integer column.
    Int(i64),
    /// REAL / DOUBLE PRECISION (always finite).
    Float(f64),
    /// DECIMAL in canonical text (`-12.50`: exactly `scale` fraction digits).
    Decimal(String),
    /// BOOLEAN.
    Bool(bool),
    /// VARCHAR (already checked against the column's byte length).
    Text(String),
    /// DATE.
    Date(Date),
    /// TIMESTAMPTZ, normalised to UTC.
    Timestamp(OffsetDateTime),
    /// SUPER as JSON text.
    Super(String),
}

impl Cell {
    /// The value as JSON (for `rules test` output and debugging): timestamps as RFC 3339,
    /// decimals as strings, SUPER as the parsed JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(i) => Value::from(*i),
            Cell::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Cell::Decimal(d) => Value::String(d.clone()),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Text(s) => Value::String(s.clone()),
            Cell::Date(d) => Value::String(format_date(*d)),
            Cell::Timestamp(t) => Value::String(format_timestamp(*t)),
            Cell::Super(s) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        }
    }
}

pub(crate) use crate::warehouse::{format_date, format_timestamp};

/// Parse an RFC 3339 timestamp (with an offset; no offset is ambiguous and refused).
pub(crate) fn parse_timestamp(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 timestamp with offset: {e}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

fn to_integer(v: &Value, min: i64, max: i64) -> Result<i64, String> {
    let n = match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i
            } else if n.is_u64() {
                return Err(format!("{n} is out of range {min}..={max}"));
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // Integral floats (e.g. `42.0`) carry no lost information; anything else would.
                if f.fract() != 0.0 || !(-9.2e18..=9.2e18).contains(&f) {
                    return Err(format!("{n} is not an integer"));
                }
                f as i64
            }
        }
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("string {s:?} is not an integer"))?,
        other => return Err(format!("a {} is not an integer", kind(other))),
    };
    if n < min || n > max {
        return Err(format!("{n} is out of range {min}..={max}"));
    }
    Ok(n)
}

/// Normalise a decimal literal (optional sign, digits, optional fraction, optional exponent) to
/// `scale` fraction digits, refusing anything that would need rounding or overflow `precision`.
fn to_decimal(text: &str, precision: u8, scale: u8) -> Result<String, String> {
    let bad = || format!("{text:?} is not a decimal number");
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (t, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
        || exp.abs() > 400
    {
        return Err(bad());
    }
    // digits = int_part ++ frac_part, with the point `point` digits from the left.
    let mut digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    let mut point = int_part.len() as i64 + i64::from(exp);
    while point < 1 {
        digits.insert(0, b'0');
        point += 1;
    }
    while (digits.len() as i64) < point {
        digits.push(b'0');
    }
    let point = point as usize;
    let (ip, fp) = digits.split_at(point);
    let frac_trimmed = std::str::from_utf8(fp).unwrap_or("").trim_end_matches('0');
    if frac_trimmed.len() > usize::from(scale) {
        return Err(format!(
            "{text} has more than {scale} digits after the point (would need rounding)"
        ));
    }
    let int_trimmed = std::str::from_utf8(ip)
        .unwrap_or("")
        .trim_start_matches('0');
    let max_int = usize::from(precision - scale);
    if int_trimmed.len() > max_int {
        return Err(format!(
            "{text} has more than {max_int} digits before the point"
        ));
    }
    let mut out = String::with_capacity(int_trimmed.len() + usize::from(scale) + 3);
    let is_zero = int_trimmed.is_empty() && frac_trimmed.is_empty();
    if neg && !is_zero {
        out.push('-');
    }
    out.push_str(if int_trimmed.is_empty() {
        "0"
    } else {
        int_trimmed
    });
    if scale > 0 {
        out.push('.');
        out.push_str(frac_trimmed);
        for _ in frac_trimmed.len()..usize::from(scale) {
            out.push('0');
        }
    }
    Ok(out)
}

/// Convert a JSON number given by its source text to a cell of type `ty`: a `DECIMAL` takes
/// exactly these digits; any other type converts the number as [`convert`] does.
pub fn convert_number_text(text: &str, ty: ColumnType) -> Result<Cell, String> {
    match ty {
        ColumnType::Decimal { precision, scale } => {
            to_decimal(text, precision, scale).map(Cell::Decimal)
        }
        _ => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Number(_)) => convert(&v, ty),
            _ => Err(format!("{text:?} is not a number")),
        },
    }
}

/// Convert a JSON value to a cell of type `ty`. `Null` stays `Cell::Null` (nullability is the
/// caller's check). Errors say what did not fit, for a `mapping` reject.
// About 80 lines on purpose: one match arm per column type, read as a table.
pub fn convert(v: &Value, ty: ColumnType) -> Result<Cell, String> {
    if v.is_null() {
        return Ok(Cell::Null);
    }
    match ty {
        ColumnType::SmallInt => to_integer(v, i16::MIN.into(), i16::MAX.into()).map(Cell::Int),
        ColumnType::Integer => to_integer(v, i32::MIN.into(), i32::MAX.into()).map(Cell::Int),
        ColumnType::BigInt => to_integer(v, i64::MIN, i64::MAX).map(Cell::Int),
        ColumnType::Real | ColumnType::Double => {
            let f = match v {
                Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number"))?,
                Value::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("string {s:?} is not a number"))?,
                other => return Err(format!("a {} is not a number", kind(other))),
            };
            if !f.is_finite() || (ty == ColumnType::Real && f.abs() > f64::from(f32::MAX)) {
                return Err(format!("{f} does not fit {ty}"));
            }
            Ok(Cell::Float(f))
        }
        ColumnType::Decimal { precision, scale } => match v {
            Value::Number(n) => to_decimal(&n.to_string(), precision, scale).map(Cell::Decimal),
            Value::String(s) => to_decimal(s, precision, scale).map(Cell::Decimal),
            other => Err(format!("a {} is not a decimal number", kind(other))),
        },
        ColumnType::Boolean => match v {
            Value::Bool(b) => Ok(Cell::Bool(*b)),
            other => Err(format!("a {} is not a boolean", kind(other))),
        },
        ColumnType::Varchar(n) => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => serde_json::to_string(other).map_err(|e| e.to_string())?,
            };
            if s.contains('\0') {
                return Err(
                    "text contains a NUL character, which the warehouse cannot store".into(),
                );
            }
            if s.len() > n as usize {
                return Err(format!(
                    "text is {} bytes, longer than VARCHAR({n}) (never truncated)",
                    s.len()
                ));
            }
            if s == crate::null_marker::NULL_MARKER {
                return Err("text equals the CSV NULL marker and would load as NULL".into());
            }
            Ok(Cell::Text(s))
        }
        ColumnType::Date => match v {
            Value::String(s) => {
                let fmt = time::macros::format_description!("[year]-[month]-[day]");
                Date::parse(s, fmt)
                    .map(Cell::Date)
                    .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))
            }
            other => Err(format!("a {} is not a date", kind(other))),
        },
        ColumnType::TimestampTz => match v {
            Value::String(s) => {
                parse_timestamp(s).map(|t| Cell::Timestamp(t.to_offset(UtcOffset::UTC)))
            }
            other => Err(format!("a {} is not an RFC 3339 timestamp", kind(other))),
        },
        ColumnType::Super => {
            if contains_nul(v) {
                return Err(
                    "JSON contains a NUL character, which the warehouse cannot store".into(),
                );
            }
            serde_json::to_string(v)
                .map(Cell::Super)
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_types_and_aliases() {
        assert_eq!(
            ColumnType::parse("varchar(256)").unwrap(),
            ColumnType::Varchar(256)
        );
        assert_eq!(
            ColumnType::parse("VARCHAR(MAX)").unwrap(),
            ColumnType::Varchar(65535)
        );
        assert_eq!(
            ColumnType::parse("double  precision").unwrap(),
            ColumnType::Double
        );
        assert_eq!(ColumnType::parse("int8").unwrap(), ColumnType::BigInt);
        assert_eq!(
            ColumnType::parse("numeric(12, 2)").unwrap(),
            ColumnType::Decimal {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(
            ColumnType::parse("timestamp with time zone").unwrap(),
            ColumnType::TimestampTz
        );
        assert_eq!(ColumnType::Double.to_string(), "DOUBLE PRECISION");
        assert_eq!(
            ColumnType::Decimal {
                precision: 12,
                scale: 2
            }
            .sql(),
            "DECIMAL(12,2)"
        );
    }

    #[test]
    fn refuses_bad_types() {
        assert!(
            ColumnType::parse("VARCHAR")
                .unwrap_err()
                .contains("needs a length")
        );
        assert!(
            ColumnType::parse("VARCHAR(0)")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            ColumnType::parse("VARCHAR(70000)")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            ColumnType::parse("STRING")
                .unwrap_err()
                .contains("unknown type name")
        );
        assert!(
            ColumnType::parse("BIGINT(3)")
                .unwrap_err()
                .contains("takes no")
        );
        assert!(ColumnType::parse("DECIMAL(5,6)").is_err());
        assert!(
            ColumnType::parse("TIMESTAMP")
                .unwrap_err()
                .contains("TIMESTAMPTZ")
        );
        assert!(ColumnType::parse("VARCHAR(10").is_err());
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(convert(&json!(42), ColumnType::BigInt), Ok(Cell::Int(42)));
        assert_eq!(convert(&json!(42.0), ColumnType::BigInt), Ok(Cell::Int(42)));
        assert_eq!(convert(&json!("-7"), ColumnType::BigInt), Ok(Cell::Int(-7)));
        assert!(
            convert(&json!(4.5), ColumnType::BigInt)
                .unwrap_err()
                .contains("not an integer")
        );
        assert!(
            convert(&json!(70000), ColumnType::SmallInt)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(convert(&json!(u64::MAX), ColumnType::BigInt).is_err());
        assert!(convert(&json!(true), ColumnType::Integer).is_err());
        assert!(convert(&json!("12abc"), ColumnType::Integer).is_err());
    }

    #[test]
    fn varchar_counts_bytes_and_never_truncates() {
        assert_eq!(
            convert(&json!("héllo"), ColumnType::Varchar(6)),
            Ok(Cell::Text("héllo".into()))
        );
        let e = convert(&json!("héllo!"), ColumnType::Varchar(6)).unwrap_err();
        assert!(e.contains("7 bytes"), "{e}");
        assert_eq!(
            convert(&json!(12), ColumnType::Varchar(5)),
            Ok(Cell::Text("12".into()))
        );
        assert_eq!(
            convert(&json!({"a":1}), ColumnType::Varchar(50)),
            Ok(Cell::Text("{\"a\":1}".into()))
        );
        assert!(convert(&json!("a\u{0}b"), ColumnType::Varchar(50)).is_err());
        assert!(
            convert(
                &json!(crate::null_marker::NULL_MARKER),
                ColumnType::Varchar(50)
            )
            .is_err()
        );
        assert_eq!(
            convert(&json!(""), ColumnType::Varchar(5)),
            Ok(Cell::Text(String::new()))
        );
    }

    #[test]
    fn decimals_never_round() {
        let d = ColumnType::Decimal {
            precision: 6,
            scale: 2,
        };
        assert_eq!(convert(&json!(19.99), d), Ok(Cell::Decimal("19.99".into())));
        assert_eq!(convert(&json!(5), d), Ok(Cell::Decimal("5.00".into())));
        assert_eq!(
            convert(&json!("-0.5"), d),
            Ok(Cell::Decimal("-0.50".into()))
        );
        assert_eq!(
            convert(&json!("1.5e2"), d),
            Ok(Cell::Decimal("150.00".into()))
        );
        assert_eq!(
            convert(&json!("-0.00"), d),
            Ok(Cell::Decimal("0.00".into()))
        );
        assert_eq!(
            convert(&json!("2.50000"), d),
            Ok(Cell::Decimal("2.50".into()))
        );
        assert!(convert(&json!(1.234), d).unwrap_err().contains("rounding"));
        assert!(
            convert(&json!(12345), d)
                .unwrap_err()
                .contains("before the point")
        );
        assert!(convert(&json!("1.2.3"), d).is_err());
        assert!(convert(&json!("abc"), d).is_err());
        assert!(convert(&json!("."), d).is_err());
    }

    #[test]
    fn floats_bools_dates_timestamps_super() {
        assert_eq!(
            convert(&json!(1.5), ColumnType::Double),
            Ok(Cell::Float(1.5))
        );
        assert!(convert(&json!("x"), ColumnType::Double).is_err());
        assert!(convert(&json!(1e300), ColumnType::Real).is_err());
        assert_eq!(
            convert(&json!(true), ColumnType::Boolean),
            Ok(Cell::Bool(true))
        );
        assert!(convert(&json!("true"), ColumnType::Boolean).is_err());
        assert_eq!(
            convert(&json!("2026-02-28"), ColumnType::Date),
            Ok(Cell::Date(time::macros::date!(2026 - 02 - 28)))
        );
        assert!(convert(&json!("2026-02-30"), ColumnType::Date).is_err());
        let Ok(Cell::Timestamp(t)) = convert(
            &json!("2026-11-25T21:55:17.5+02:00"),
            ColumnType::TimestampTz,
        ) else {
            panic!("timestamp");
        };
        assert_eq!(format_timestamp(t), "2026-11-25T19:55:17.500000Z");
        assert!(convert(&json!("2026-11-25T19:55:17"), ColumnType::TimestampTz).is_err());
        assert!(convert(&json!(1_700_000_000), ColumnType::TimestampTz).is_err());
        assert_eq!(
            convert(&json!({"a":[1,"x"]}), ColumnType::Super),
            Ok(Cell::Super("{\"a\":[1,\"x\"]}".into()))
        );
        assert!(convert(&json!({"a":"\u{0}"}), ColumnType::Super).is_err());
        assert_eq!(convert(&Value::Null, ColumnType::BigInt), Ok(Cell::Null));
    }
}
