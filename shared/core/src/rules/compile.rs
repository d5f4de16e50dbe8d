//! Compiling a rules file: the checked [`spec`](super::spec) becomes the compiled form a
//! [`RuleSet`] holds (tables with their lineage columns, the catch-all table, CEL filters, and
//! per event type its JSON Schema, filters and column mappings). Every problem is a
//! [`RulesError`] naming the place; the compiled form is what [`super::apply`] reads.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::spec::{EventSpec, FileSpec, FilterSpec, TableSpec, UnknownTypes};
use super::{
    Column, ColumnType, DEFAULT_CATCH_ALL_TABLE, Ident, MAX_COLUMNS, RuleSet, RulesError,
    STANDARD_COLUMNS, Table, enrich, expr, invalid,
};

// ---------------------------------------------------------------------------------------------
// Compiled form.

/// Kinesis coordinate fields a pointer or expression may read.
/// (`sub_sequence_number` is absent, so NULL, for a record that holds one event.)
const KINESIS_FIELDS: [&str; 5] = [
    "shard_id",
    "sequence_number",
    "arrival",
    "partition_key",
    "sub_sequence_number",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Root {
    Event,
    Envelope,
    Kinesis,
}

#[derive(Debug)]
pub(super) struct Pointer {
    pub(super) text: String,
    pub(super) root: Root,
    /// JSON pointer within the root ("" = the root itself).
    pub(super) rest: String,
    /// `rest`'s reference tokens, unescaped once here rather than on every line.
    tokens: Vec<String>,
}

impl Pointer {
    /// The value `rest` points at in `root`: what [`Value::pointer`] finds, without parsing
    /// the pointer again.
    pub(super) fn find<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.tokens.iter().try_fold(root, |at, token| match at {
            Value::Object(map) => map.get(token),
            Value::Array(list) => array_index(token).and_then(|i| list.get(i)),
            _ => None,
        })
    }
}

/// The reference tokens of a JSON pointer (RFC 6901) that starts with `/` or is empty.
fn pointer_tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// An array index as a pointer token writes it (as serde_json reads it: digits, no sign, no
/// leading zero).
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

#[derive(Debug)]
pub(super) enum Source {
    Pointer(Pointer),
    Expr(expr::Expr),
    Const(Value),
    Coalesce(Vec<Source>),
}

impl Source {
    pub(super) fn uses(&self, acc: &mut [bool; 3]) {
        let mut exprs = Vec::new();
        self.exprs(&mut exprs);
        for e in exprs {
            for (a, u) in acc.iter_mut().zip(e.uses) {
                *a |= u;
            }
        }
    }

    /// The CEL expressions this source evaluates (a coalesce's, in order), appended to `out`.
    pub(super) fn exprs<'s>(&'s self, out: &mut Vec<&'s expr::Expr>) {
        match self {
            Source::Expr(e) => out.push(e),
            Source::Coalesce(list) => list.iter().for_each(|s| s.exprs(out)),
            Source::Pointer(_) | Source::Const(_) => {}
        }
    }

    pub(super) fn path(&self) -> Option<String> {
        match self {
            Source::Pointer(p) => Some(p.text.clone()),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(super) struct Mapping {
    pub(super) column: usize,
    pub(super) source: Source,
    pub(super) steps: Vec<enrich::Step>,
}

#[derive(Debug)]
pub(super) struct Filter {
    pub(super) name: String,
    pub(super) expr: expr::Expr,
}

#[derive(Debug)]
pub(super) struct EventRule {
    pub(super) table: usize,
    pub(super) schema: Option<jsonschema::Validator>,
    pub(super) filters: Vec<Filter>,
    pub(super) mappings: Vec<Mapping>,
    /// CEL variables needed by this type's filters and mappings.
    pub(super) uses: [bool; 3],
}

fn parse_ident(at: &str, s: &str) -> Result<Ident, RulesError> {
    Ident::parse(s).map_err(|e| invalid(at, e.to_string()))
}

fn check_event_type_name(at: &str, name: &str) -> Result<(), RulesError> {
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
        return Err(invalid(
            at,
            "an event type name must be 1-128 bytes without control characters",
        ));
    }
    Ok(())
}

fn parse_pointer(at: &str, text: &str) -> Result<Pointer, RulesError> {
    let bad = |why: &str| invalid(at, format!("{text:?} {why}"));
    let Some(after) = text.strip_prefix('/') else {
        return Err(bad(
            "is not a JSON pointer (must start with /event, /envelope or /kinesis)",
        ));
    };
    let (first, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    let root = match first {
        "event" => Root::Event,
        "envelope" => Root::Envelope,
        "kinesis" => Root::Kinesis,
        _ => return Err(bad("must start with /event, /envelope or /kinesis")),
    };
    let fields: &[&str] = match root {
        Root::Event => &[],
        Root::Envelope => &super::native::ENVELOPE_MEMBERS,
        Root::Kinesis => &KINESIS_FIELDS,
    };
    if root != Root::Event {
        let field = rest.trim_start_matches('/').split('/').next().unwrap_or("");
        if !rest.is_empty() && !fields.contains(&field) {
            return Err(bad(&format!(
                "names an unknown field (known: {})",
                fields.join(", ")
            )));
        }
    }
    if rest.contains('~') {
        // `~0`/`~1` are the only valid escapes.
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(bad("has an invalid ~ escape (only ~0 and ~1)"));
            }
        }
    }
    Ok(Pointer {
        text: text.to_owned(),
        root,
        rest: rest.to_owned(),
        tokens: pointer_tokens(rest),
    })
}

fn compile_source(
    env: &cel::Env,
    at: &str,
    spec: &Value,
    allow_then: bool,
) -> Result<(Source, Vec<enrich::Step>), RulesError> {
    match spec {
        Value::String(s) => Ok((Source::Pointer(parse_pointer(at, s)?), Vec::new())),
        Value::Object(m) => compile_source_map(env, at, m, allow_then),
        other => Err(invalid(
            at,
            format!(
                "a mapping is a JSON pointer string or a map with from/expr/const/coalesce, got {other}"
            ),
        )),
    }
}

/// A mapping given as a map: exactly one of `from`, `expr`, `const`, `coalesce`, plus `then`
/// (enrichment steps) where `allow_then`.
fn compile_source_map(
    env: &cel::Env,
    at: &str,
    m: &Map<String, Value>,
    allow_then: bool,
) -> Result<(Source, Vec<enrich::Step>), RulesError> {
    let mut source = None;
    let mut steps = Vec::new();
    for (k, v) in m {
        let s = match k.as_str() {
            "from" => {
                let Value::String(p) = v else {
                    return Err(invalid(at, "`from` must be a JSON pointer string"));
                };
                Source::Pointer(parse_pointer(at, p)?)
            }
            "expr" => {
                let Value::String(src) = v else {
                    return Err(invalid(at, "`expr` must be a CEL expression string"));
                };
                Source::Expr(expr::Expr::compile(env, src).map_err(|e| invalid(at, e))?)
            }
            "const" => Source::Const(v.clone()),
            "coalesce" => {
                let Value::Array(items) = v else {
                    return Err(invalid(at, "`coalesce` must be a list of sources"));
                };
                if items.is_empty() {
                    return Err(invalid(at, "`coalesce` needs at least one source"));
                }
                let mut list = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let (s, _) = compile_source(env, &format!("{at}.coalesce[{i}]"), item, false)?;
                    list.push(s);
                }
                Source::Coalesce(list)
            }
            "then" if allow_then => {
                let Value::Array(items) = v else {
                    return Err(invalid(at, "`then` must be a list of enrichment steps"));
                };
                for (i, item) in items.iter().enumerate() {
                    steps.push(
                        enrich::Step::parse(item)
                            .map_err(|e| invalid(format!("{at}.then[{i}]"), e))?,
                    );
                }
                continue;
            }
            other => {
                return Err(invalid(
                    at,
                    format!(
                        "unknown key `{other}` (expected one of from, expr, const, coalesce{})",
                        if allow_then { ", then" } else { "" }
                    ),
                ));
            }
        };
        if source.replace(s).is_some() {
            return Err(invalid(
                at,
                "give exactly one of from, expr, const, coalesce",
            ));
        }
    }
    let source =
        source.ok_or_else(|| invalid(at, "give exactly one of from, expr, const, coalesce"))?;
    Ok((source, steps))
}

fn compile_filters(
    env: &cel::Env,
    at: &str,
    specs: &[FilterSpec],
    names: &mut HashSet<String>,
) -> Result<Vec<Filter>, RulesError> {
    let mut out = Vec::with_capacity(specs.len());
    for (i, f) in specs.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let name = parse_ident(&here, &f.name)?.to_string();
        if !names.insert(name.clone()) {
            return Err(invalid(
                here,
                format!("filter name `{name}` is used twice (names must be unique in the file)"),
            ));
        }
        let expr = expr::Expr::compile(env, &f.drop_if)
            .map_err(|e| invalid(format!("{here} ({name})"), e))?;
        out.push(Filter { name, expr });
    }
    Ok(out)
}

fn standard_columns() -> impl Iterator<Item = Column> {
    STANDARD_COLUMNS.iter().filter_map(|(name, ty, nullable)| {
        Some(Column {
            name: Ident::parse(name).ok()?,
            ty: *ty,
            nullable: *nullable,
            standard: true,
        })
    })
}

/// OR the CEL variables `filters` read into `acc`.
fn add_filter_uses(acc: &mut [bool; 3], filters: &[Filter]) {
    for f in filters {
        for (a, u) in acc.iter_mut().zip(f.expr.uses) {
            *a |= u;
        }
    }
}

/// The declared tables, in name order, each with its lineage columns and keys checked.
fn compile_tables(specs: &BTreeMap<String, TableSpec>) -> Result<Vec<Table>, RulesError> {
    let mut tables = Vec::with_capacity(specs.len() + 1);
    if specs.is_empty() {
        return Err(invalid("tables", "at least one table is required"));
    }
    for (tname, t) in specs {
        tables.push(compile_table(tname, t)?);
    }
    Ok(tables)
}

fn compile_table(tname: &str, t: &TableSpec) -> Result<Table, RulesError> {
    let at = format!("tables.{tname}");
    let name = parse_ident(&at, tname)?;
    let mut columns: Vec<Column> = Vec::with_capacity(t.columns.len() + STANDARD_COLUMNS.len());
    for (i, c) in t.columns.iter().enumerate() {
        let cat = format!("{at}.columns[{i}]");
        let cname = parse_ident(&cat, &c.name)?;
        let cat = format!("{at}.columns.{cname}");
        if STANDARD_COLUMNS
            .iter()
            .any(|(s, _, _)| *s == cname.as_str())
        {
            return Err(invalid(
                cat,
                "is a reserved lineage column name (every table gets it automatically)",
            ));
        }
        if columns.iter().any(|x| x.name == cname) {
            return Err(invalid(cat, "duplicate column"));
        }
        let ty = ColumnType::parse(&c.ty).map_err(|e| invalid(&cat, e))?;
        columns.push(Column {
            name: cname,
            ty,
            nullable: c.nullable,
            standard: false,
        });
    }
    columns.extend(standard_columns());
    if columns.len() > MAX_COLUMNS {
        return Err(invalid(at, format!("more than {MAX_COLUMNS} columns")));
    }
    let mut table = Table {
        name,
        columns,
        dist_key: None,
        sort_key: Vec::new(),
        catch_all: false,
    };
    if let Some(dk) = &t.dist_key {
        let id = parse_ident(&format!("{at}.dist_key"), dk)?;
        if table.column_index(id.as_str()).is_none() {
            return Err(invalid(
                format!("{at}.dist_key"),
                format!("`{id}` is not a column of the table"),
            ));
        }
        table.dist_key = Some(id);
    }
    for sk in &t.sort_key {
        let id = parse_ident(&format!("{at}.sort_key"), sk)?;
        if table.column_index(id.as_str()).is_none() {
            return Err(invalid(
                format!("{at}.sort_key"),
                format!("`{id}` is not a column of the table"),
            ));
        }
        if table.sort_key.contains(&id) {
            return Err(invalid(
                format!("{at}.sort_key"),
                format!("`{id}` listed twice"),
            ));
        }
        table.sort_key.push(id);
    }
    Ok(table)
}

/// Append the catch-all table when unknown types go to one; its index.
fn add_catch_all(
    tables: &mut Vec<Table>,
    unknown_types: UnknownTypes,
    catch_all_table: &Option<String>,
) -> Result<Option<usize>, RulesError> {
    match (unknown_types, catch_all_table) {
        (UnknownTypes::Reject, Some(_)) => Err(invalid(
            "catch_all_table",
            "is set but unknown_types is `reject`; set unknown_types: catch_all or remove it",
        )),
        (UnknownTypes::Reject, None) => Ok(None),
        (UnknownTypes::CatchAll, name) => {
            let name = parse_ident(
                "catch_all_table",
                name.as_deref().unwrap_or(DEFAULT_CATCH_ALL_TABLE),
            )?;
            if tables.iter().any(|t| t.name == name) {
                return Err(invalid(
                    "catch_all_table",
                    format!("`{name}` is also declared under tables"),
                ));
            }
            let mut columns = vec![Column {
                name: parse_ident("catch_all_table", "payload")?,
                ty: ColumnType::Super,
                nullable: false,
                standard: false,
            }];
            columns.extend(standard_columns());
            let sort_key = vec![parse_ident("catch_all_table", "received_at")?];
            tables.push(Table {
                name,
                columns,
                dist_key: None,
                sort_key,
                catch_all: true,
            });
            Ok(Some(tables.len() - 1))
        }
    }
}

/// One [`EventRule`] per declared event type. `filter_names` holds the names used so far
/// (filter names are unique in the file).
fn compile_events(
    cel: &cel::Env,
    specs: &BTreeMap<String, EventSpec>,
    tables: &[Table],
    global_uses: [bool; 3],
    filter_names: &mut HashSet<String>,
) -> Result<HashMap<String, EventRule>, RulesError> {
    if specs.is_empty() {
        return Err(invalid("events", "at least one event type is required"));
    }
    let mut events = HashMap::with_capacity(specs.len());
    for (etype, e) in specs {
        let rule = compile_event(cel, etype, e, tables, global_uses, filter_names)?;
        events.insert(etype.clone(), rule);
    }
    Ok(events)
}

fn compile_event(
    cel: &cel::Env,
    etype: &str,
    e: &EventSpec,
    tables: &[Table],
    global_uses: [bool; 3],
    filter_names: &mut HashSet<String>,
) -> Result<EventRule, RulesError> {
    let at = format!("events.{etype}");
    check_event_type_name(&at, etype)?;
    let table = tables
        .iter()
        .position(|t| !t.catch_all && t.name.as_str() == e.table)
        .ok_or_else(|| {
            invalid(
                format!("{at}.table"),
                format!("`{}` is not declared under tables", e.table),
            )
        })?;
    let schema = match &e.schema {
        None => None,
        Some(s) => Some(
            jsonschema::options()
                .should_validate_formats(true)
                .build(s)
                .map_err(|err| {
                    invalid(
                        format!("{at}.schema"),
                        format!("invalid JSON Schema: {err}"),
                    )
                })?,
        ),
    };
    let filters = compile_filters(cel, &format!("{at}.filters"), &e.filters, filter_names)?;
    let mappings = compile_mappings(cel, &at, e, &tables[table])?;
    let mut uses = global_uses;
    add_filter_uses(&mut uses, &filters);
    for m in &mappings {
        m.source.uses(&mut uses);
    }
    Ok(EventRule {
        table,
        schema,
        filters,
        mappings,
        uses,
    })
}

/// The column mappings of one event type into its table `tdef`; every NOT NULL column must
/// have one.
fn compile_mappings(
    cel: &cel::Env,
    at: &str,
    e: &EventSpec,
    tdef: &Table,
) -> Result<Vec<Mapping>, RulesError> {
    let mut mappings = Vec::with_capacity(e.columns.len());
    for (col, mspec) in &e.columns {
        let cat = format!("{at}.columns.{col}");
        let idx = tdef
            .column_index(col)
            .filter(|i| !tdef.columns[*i].standard)
            .ok_or_else(|| {
                invalid(
                    &cat,
                    format!("table `{}` has no mappable column `{col}`", tdef.name),
                )
            })?;
        let (source, steps) = compile_source(cel, &cat, mspec, true)?;
        mappings.push(Mapping {
            column: idx,
            source,
            steps,
        });
    }
    for c in tdef.columns.iter().filter(|c| !c.standard && !c.nullable) {
        if !e.columns.contains_key(c.name.as_str()) {
            return Err(invalid(
                format!("{at}.columns"),
                format!(
                    "NOT NULL column `{}` of table `{}` has no mapping",
                    c.name, tdef.name
                ),
            ));
        }
    }
    Ok(mappings)
}

impl RuleSet {
    /// Parse + validate + compile a rules file (YAML). Every problem is a [`RulesError`] that
    /// names the place (event type, column, rule).
    pub fn from_yaml(text: &str) -> Result<RuleSet, RulesError> {
        let spec = FileSpec::parse(text)?;
        let cel = expr::environment().map_err(|e| invalid("cel", e))?;
        let version = hex::encode(Sha256::digest(text.as_bytes()));
        let mut tables = compile_tables(&spec.tables)?;
        let catch_all = add_catch_all(&mut tables, spec.unknown_types, &spec.catch_all_table)?;
        let mut filter_names = HashSet::new();
        let global_filters = compile_filters(&cel, "filters", &spec.filters, &mut filter_names)?;
        let mut global_uses = [false; 3];
        add_filter_uses(&mut global_uses, &global_filters);
        let events = compile_events(&cel, &spec.events, &tables, global_uses, &mut filter_names)?;
        Ok(RuleSet {
            version,
            tables,
            events,
            global_filters,
            global_uses,
            catch_all,
            salt: spec.pii_salt.unwrap_or_default(),
            cel,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A compiled pointer finds what serde_json's `Value::pointer` finds.
    #[test]
    fn pointers_find_what_serde_json_finds() {
        let doc = json!({"a": {"b/c": [10, {"~d": 2}], "": 3, "0": 4}, "l": [1, 2]});
        for rest in [
            "",
            "/a",
            "/a/b~1c",
            "/a/b~1c/0",
            "/a/b~1c/1/~0d",
            "/a/",
            "/a/0",
            "/l/1",
            "/l/01",
            "/l/+1",
            "/l/2",
            "/l/-1",
            "/missing",
            "/a/b~1c/x",
            "/l/1/x",
            "/a/b~1c/00",
        ] {
            let p = Pointer {
                text: format!("/event{rest}"),
                root: Root::Event,
                rest: rest.to_owned(),
                tokens: pointer_tokens(rest),
            };
            assert_eq!(p.find(&doc), doc.pointer(rest), "{rest:?}");
        }
    }
}
