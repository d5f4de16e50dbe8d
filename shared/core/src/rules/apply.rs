//! Applying a compiled [`RuleSet`] to one raw-archive line: parse → global filters → type
//! lookup → JSON Schema → type filters → mappings (plus the lineage columns), giving exactly one
//! [`Outcome`]; and the rows' JSON view and the `caudal_rejects` row of a refused line.

use std::borrow::Cow;
use std::cell::OnceCell;

use serde_json::{Map, Value};

use super::compile::{EventRule, Filter, Root, Source};
use super::native::Vars;
use super::{
    Cell, ColumnType, EVENT_ID_COLUMN, Lineage, NULL_MARKER, Outcome, PRINCIPAL_COLUMN,
    RAW_KEY_COLUMN, Reject, Row, RuleSet, STANDARD_COLUMNS, clip, expr, source_text, types,
};
use crate::envelope::{Envelope, has_line_break};
use crate::raw::{DecodedLine, KinesisCoords, LineError};

impl RuleSet {
    /// Apply the rules to one raw-archive line (docs/CONTRACTS.md §2, without its newline).
    pub fn apply_line(&self, line: &[u8], lineage: &Lineage<'_>) -> Outcome {
        let parse_reject = |what: &str, e: &dyn std::fmt::Display| {
            Outcome::Rejected(Reject::new("parse", None, None, format!("{what}: {e}")))
        };
        let (kinesis, env) = match DecodedLine::parse(line) {
            Ok(d) => (d.kinesis, d.envelope),
            Err(LineError::Line(e)) => return parse_reject("not a raw-archive line", &e),
            Err(LineError::Envelope(e)) => return parse_reject("bad envelope", &e),
        };
        let identify = |mut r: Reject| {
            r.event_id = Some(env.id.to_string());
            r.event_type = Some(env.event_type.to_string());
            r.principal = env.principal.as_deref().map(str::to_owned);
            Outcome::Rejected(r)
        };
        let bytes = env.event_bytes();
        let (event, bytes) = match event_view(&env, bytes) {
            Ok(v) => v,
            Err(message) => return identify(Reject::new("parse", None, None, message)),
        };
        let rule = self.events.get(env.event_type.as_ref());
        let lc = LineCtx {
            event,
            event_bytes: &bytes,
            env: &env,
            kin: &kinesis,
            env_json: OnceCell::new(),
            kin_json: OnceCell::new(),
            uses: rule.map_or(self.global_uses, |r| r.uses),
        };
        // Declared after `lc`, which it borrows (dropped first).
        let sc: Scope<'_> = OnceCell::new();
        match self.route(rule, &lc, &sc, &bytes, lineage) {
            Ok(outcome) => outcome,
            Err(r) => identify(r),
        }
    }

    /// The steps after parsing, in order: global filters → type lookup (or the catch-all
    /// table) → JSON Schema → type filters → mappings. A refusal is returned as the error.
    fn route<'s>(
        &self,
        rule: Option<&EventRule>,
        lc: &'s LineCtx<'_>,
        sc: &Scope<'s>,
        bytes: &[u8],
        lineage: &Lineage<'_>,
    ) -> Result<Outcome, Reject> {
        if let Some(f) = self.dropping(&self.global_filters, lc, sc)? {
            return Ok(Outcome::Filtered {
                rule: f.name.clone(),
            });
        }
        let Some(rule) = rule else {
            return match self.catch_all {
                None => Err(Reject::new(
                    "unknown_type",
                    None,
                    None,
                    format!(
                        "event type {:?} is not in the rules file",
                        lc.env.event_type
                    ),
                )),
                Some(t) => self
                    .catch_all_row(t, lc, bytes, lineage)
                    .map(|row| Outcome::Rows(vec![row])),
            };
        };
        let event_type = lc.env.event_type.as_ref();
        self.validate(event_type, rule, &lc.event)?;
        if let Some(f) = self.dropping(&rule.filters, lc, sc)? {
            return Ok(Outcome::Filtered {
                rule: f.name.clone(),
            });
        }
        self.map_row(event_type, rule, lc, sc, lineage)
            .map(|row| Outcome::Rows(vec![row]))
    }

    /// The first of `filters` that drops the line, if any (they run in order; the first that
    /// cannot be evaluated refuses the line).
    fn dropping<'f, 's>(
        &self,
        filters: &'f [Filter],
        lc: &'s LineCtx<'_>,
        sc: &Scope<'s>,
    ) -> Result<Option<&'f Filter>, Reject> {
        for f in filters {
            if self.run_filter(f, lc, sc)? {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }

    /// Apply only the JSON Schema and known-type checks to one parsed client event (ingest-time
    /// validation). With a catch-all table, unknown types pass.
    pub fn check_event(&self, event_type: &str, event: &Value) -> Result<(), Reject> {
        match self.events.get(event_type) {
            None if self.catch_all.is_some() => Ok(()),
            None => Err(Reject::new(
                "unknown_type",
                None,
                None,
                format!("event type {event_type:?} is not in the rules file"),
            )),
            Some(rule) => self.validate(event_type, rule, event),
        }
    }

    fn validate(&self, event_type: &str, rule: &EventRule, event: &Value) -> Result<(), Reject> {
        let Some(schema) = &rule.schema else {
            return Ok(());
        };
        match schema.validate(event) {
            Ok(()) => Ok(()),
            Err(e) => Err(Reject::new(
                "schema",
                Some(event_type.to_owned()),
                Some(e.instance_path().as_str().to_owned()),
                e.to_string(),
            )),
        }
    }

    fn run_filter<'s>(
        &self,
        f: &Filter,
        lc: &'s LineCtx<'_>,
        sc: &Scope<'s>,
    ) -> Result<bool, Reject> {
        let fail = |msg: String| Reject::new("filter", Some(f.name.clone()), None, msg);
        match self.eval_expr(&f.expr, lc, sc).map_err(fail)? {
            Value::Bool(b) => Ok(b),
            other => Err(fail(format!(
                "filter `{}` returned {other}, not a boolean",
                f.name
            ))),
        }
    }

    /// Evaluate `e` on the line: natively when it can, else with the interpreter (whose scope
    /// is built then).
    fn eval_expr<'s>(
        &self,
        e: &expr::Expr,
        lc: &'s LineCtx<'_>,
        sc: &Scope<'s>,
    ) -> Result<Value, String> {
        let kinesis = || lc.kinesis_json();
        let vars = Vars {
            event: &lc.event,
            envelope: lc.env,
            kinesis: &kinesis,
        };
        e.eval_line(&vars, || self.scope(lc, sc))
    }

    /// The CEL scope of a line, built on first use (most lines of a type without expressions
    /// never pay for it).
    fn scope<'s, 'c>(&self, lc: &'s LineCtx<'_>, cell: &'c Scope<'s>) -> &'c cel::Context<'s, 's> {
        cell.get_or_init(|| {
            let ev = || &lc.event;
            let en = || lc.envelope_json();
            let ki = || lc.kinesis_json();
            expr::scope(&self.cel, lc.uses, [&ev, &en, &ki])
        })
    }

    fn eval_source<'v>(
        &self,
        s: &Source,
        lc: &'v LineCtx<'_>,
        sc: &Scope<'v>,
    ) -> Result<Cow<'v, Value>, String> {
        match s {
            Source::Const(v) => Ok(Cow::Owned(v.clone())),
            Source::Pointer(p) => {
                let root = match p.root {
                    Root::Event => &lc.event,
                    Root::Envelope => match super::native::envelope_pointer(lc.env, &p.rest) {
                        Some(v) => return Ok(Cow::Owned(v)),
                        None => lc.envelope_json(),
                    },
                    Root::Kinesis => lc.kinesis_json(),
                };
                Ok(p.find(root).map_or(Cow::Owned(Value::Null), Cow::Borrowed))
            }
            Source::Expr(e) => Ok(Cow::Owned(self.eval_expr(e, lc, sc)?)),
            Source::Coalesce(list) => {
                for s in list {
                    let v = self.eval_source(s, lc, sc)?;
                    if !v.is_null() {
                        return Ok(v);
                    }
                }
                Ok(Cow::Owned(Value::Null))
            }
        }
    }

    fn standard_cells(
        &self,
        lc: &LineCtx<'_>,
        lineage: &Lineage<'_>,
        event_type: &str,
    ) -> Result<[Cell; 8], Reject> {
        let mapping_err = |col: &str, msg: String| {
            Reject::new("mapping", Some(format!("{event_type}.{col}")), None, msg)
        };
        let id = lc.env.id.as_ref();
        if !crate::event::is_valid_id(id) {
            return Err(mapping_err(
                EVENT_ID_COLUMN,
                format!(
                    "event id is {} bytes, a control character or the NULL marker; ingest \
                     accepts 1-{} bytes without control characters",
                    id.len(),
                    crate::event::MAX_EVENT_ID_BYTES
                ),
            ));
        }
        if lc.env.event_type.len() > 128
            || lc.env.event_type.contains('\0')
            || lc.env.event_type == NULL_MARKER
        {
            return Err(mapping_err(
                "event_type",
                "event type longer than 128 bytes or contains NUL".into(),
            ));
        }
        let received_at = match lc.env.received_at.as_deref() {
            None => Cell::Null,
            Some(s) => Cell::Timestamp(
                types::parse_timestamp(s).map_err(|e| mapping_err("received_at", e))?,
            ),
        };
        let principal = match lc.env.principal.as_deref() {
            None => Cell::Null,
            Some(p) if crate::envelope::is_valid_principal(p) => Cell::Text(p.to_owned()),
            Some(p) => {
                return Err(mapping_err(
                    PRINCIPAL_COLUMN,
                    format!(
                        "principal is {} bytes or has control characters; at most {} bytes fit \
                         (ingest refuses such requests)",
                        p.len(),
                        crate::envelope::MAX_PRINCIPAL_BYTES
                    ),
                ));
            }
        };
        if lineage.raw_key.len() > 1024 {
            return Err(mapping_err(
                RAW_KEY_COLUMN,
                "raw object key longer than 1024 bytes".into(),
            ));
        }
        Ok([
            Cell::Text(id.to_owned()),
            Cell::Text(lc.env.event_type.to_string()),
            received_at,
            Cell::Text(lineage.raw_key.to_owned()),
            Cell::Int(i64::try_from(lineage.line).unwrap_or(i64::MAX)),
            Cell::Text(self.version.clone()),
            Cell::Timestamp(lineage.loaded_at),
            principal,
        ])
    }

    /// The source text of the number a mapping's source took verbatim from the event (a pointer
    /// into `/event`, or the coalesce member that gave the value), if it did.
    fn number_text<'v>(&self, s: &Source, lc: &'v LineCtx<'_>, sc: &Scope<'v>) -> Option<&'v str> {
        match s {
            Source::Pointer(p) if p.root == Root::Event => {
                source_text::number_at(lc.event_bytes, &p.rest)
            }
            Source::Coalesce(list) => {
                let first = list
                    .iter()
                    .find(|s| self.eval_source(s, lc, sc).is_ok_and(|v| !v.is_null()))?;
                self.number_text(first, lc, sc)
            }
            _ => None,
        }
    }

    fn map_row<'s>(
        &self,
        event_type: &str,
        rule: &EventRule,
        lc: &'s LineCtx<'_>,
        sc: &Scope<'s>,
        lineage: &Lineage<'_>,
    ) -> Result<Row, Reject> {
        let table = &self.tables[rule.table];
        let mut values = vec![Cell::Null; table.columns.len()];
        for m in &rule.mappings {
            let col = &table.columns[m.column];
            let fail = |msg: String| {
                Reject::new(
                    "mapping",
                    Some(format!("{event_type}.{}", col.name)),
                    m.source.path(),
                    format!("column `{}` ({}): {msg}", col.name, col.ty),
                )
            };
            let mut v = self.eval_source(&m.source, lc, sc).map_err(fail)?;
            for step in &m.steps {
                v = step.apply(v, &self.salt).map_err(fail)?;
            }
            let text = match (col.ty, &*v) {
                // The client's digits, never through f64 (`steps` may have computed the value).
                (ColumnType::Decimal { .. }, Value::Number(n))
                    if n.is_f64() && m.steps.is_empty() =>
                {
                    self.number_text(&m.source, lc, sc)
                }
                _ => None,
            };
            let cell = match text {
                Some(t) => types::convert_number_text(t, col.ty),
                None => types::convert(&v, col.ty),
            }
            .map_err(fail)?;
            if cell == Cell::Null && !col.nullable {
                return Err(fail("is NOT NULL but the value is missing/null".into()));
            }
            values[m.column] = cell;
        }
        // COPY applies no NULL marker to SUPER columns: a missing SUPER value loads as JSON null.
        for (v, c) in values.iter_mut().zip(&table.columns) {
            if c.ty == ColumnType::Super && *v == Cell::Null {
                *v = Cell::Super("null".to_owned());
            }
        }
        let std = self.standard_cells(lc, lineage, event_type)?;
        let first_std = table.columns.len() - STANDARD_COLUMNS.len();
        for (slot, cell) in values[first_std..].iter_mut().zip(std) {
            *slot = cell;
        }
        Ok(Row {
            table: rule.table,
            values,
        })
    }

    fn catch_all_row(
        &self,
        t: usize,
        lc: &LineCtx<'_>,
        bytes: &[u8],
        lineage: &Lineage<'_>,
    ) -> Result<Row, Reject> {
        let event_type = lc.env.event_type.as_ref();
        let payload = types::convert(&lc.event, ColumnType::Super).map_err(|e| {
            Reject::new(
                "mapping",
                Some(format!("{event_type}.payload")),
                None,
                format!("column `payload` (SUPER): {e}"),
            )
        })?;
        // Keep the client's exact bytes when they are one line (they always are valid JSON).
        let payload = match (payload, std::str::from_utf8(bytes)) {
            (Cell::Super(_), Ok(s)) if !has_line_break(bytes) => Cell::Super(s.to_owned()),
            (p, _) => p,
        };
        let mut values = Vec::with_capacity(1 + STANDARD_COLUMNS.len());
        values.push(payload);
        values.extend(self.standard_cells(lc, lineage, event_type)?);
        Ok(Row { table: t, values })
    }

    /// A row as JSON, `{"table": name, "values": {column: value, …}}` (for `rules test`).
    pub fn row_json(&self, row: &Row) -> Value {
        let Some(table) = self.tables.get(row.table) else {
            return Value::Null;
        };
        let values: Map<String, Value> = table
            .columns
            .iter()
            .zip(&row.values)
            .map(|(c, v)| (c.name.to_string(), v.to_json()))
            .collect();
        serde_json::json!({"table": table.name.as_str(), "values": values})
    }

    /// The `caudal_rejects` row for a refused line, in the column order of
    /// `warehouse/rejects.sql` (see [`REJECT_COLUMNS`]). The raw line is kept as text up to
    /// 65535 bytes; `raw_truncated` says when it was cut.
    pub fn reject_cells(&self, reject: &Reject, line: &[u8], lineage: &Lineage<'_>) -> Vec<Cell> {
        let text = |s: Option<&str>, max: usize| match s {
            None => Cell::Null,
            Some(s) => Cell::Text(clip(sanitize(s), max)),
        };
        let raw = String::from_utf8_lossy(line);
        let clean = sanitize(&raw);
        let truncated = clean.len() > 65_535 || clean != *line_str(line);
        vec![
            text(reject.event_id.as_deref(), 256),
            text(reject.event_type.as_deref(), 256),
            Cell::Text(clip(sanitize(lineage.raw_key), 1024)),
            Cell::Int(i64::try_from(lineage.line).unwrap_or(i64::MAX)),
            Cell::Text(clip(sanitize(&reject.code), 32)),
            text(reject.rule.as_deref(), 512),
            text(reject.path.as_deref(), 1024),
            Cell::Text(clip(sanitize(&reject.message), 4096)),
            Cell::Text(self.version.clone()),
            Cell::Timestamp(lineage.loaded_at),
            Cell::Text(clip(clean, 65_535)),
            Cell::Bool(truncated),
            text(
                reject.principal.as_deref(),
                crate::envelope::MAX_PRINCIPAL_BYTES,
            ),
        ]
    }
}

/// Column names of `caudal_rejects`, in order (matches [`RuleSet::reject_cells`] and
/// `warehouse/rejects.sql`).
pub const REJECT_COLUMNS: [&str; 13] = [
    "event_id",
    "event_type",
    "raw_key",
    "raw_line",
    "code",
    "rule",
    "path",
    "message",
    "rule_version",
    "loaded_at",
    "raw_text",
    "raw_truncated",
    "principal",
];

fn line_str(line: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(line)
}

/// Text safe for the warehouse: no NUL, never the NULL marker.
fn sanitize(s: &str) -> String {
    let s = s.replace('\0', "\u{FFFD}");
    if s == NULL_MARKER { format!("{s} ") } else { s }
}

/// The lazily built CEL scope of one line.
type Scope<'s> = OnceCell<cel::Context<'s, 's>>;

/// The event the rules read, parsed, and its JSON text: the client's bytes, or for a Snowplow
/// event (a tracker's name → value pairs, or a pixel's query string) its
/// [`crate::snowplow::view`].
fn event_view<'b>(
    env: &Envelope<'_>,
    bytes: Cow<'b, [u8]>,
) -> Result<(Value, Cow<'b, [u8]>), String> {
    if env.protocol.as_deref() == Some(crate::snowplow::PROTOCOL) {
        let view = crate::snowplow::view(&bytes).map_err(|e| e.to_string())?;
        let text = serde_json::to_vec(&view).map_err(|e| e.to_string())?;
        return Ok((view, Cow::Owned(text)));
    }
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok((v, bytes)),
        Err(e) => Err(format!("event is not JSON: {e}")),
    }
}

/// Per-line evaluation state: the parsed event plus lazily built JSON/CEL views.
struct LineCtx<'a> {
    event: Value,
    /// The event's JSON text as the rules read it (numbers for `DECIMAL` columns are read
    /// here): the client's bytes, or for a Snowplow event its view written out again (its
    /// values are strings as sent; numbers inside a decoded `ue_px`/`cx` are written as
    /// `f64`s, so beyond 17 significant digits a `DECIMAL` column sees them rounded).
    event_bytes: &'a [u8],
    env: &'a Envelope<'a>,
    kin: &'a KinesisCoords<'a>,
    env_json: OnceCell<Value>,
    kin_json: OnceCell<Value>,
    uses: [bool; 3],
}

impl LineCtx<'_> {
    fn envelope_json(&self) -> &Value {
        self.env_json
            .get_or_init(|| super::native::envelope_json(self.env))
    }

    fn kinesis_json(&self) -> &Value {
        self.kin_json
            .get_or_init(|| serde_json::to_value(self.kin).unwrap_or(Value::Null))
    }
}
