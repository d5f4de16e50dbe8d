//! `rules` — check, try and deploy a caudal rules file offline.
//!
//! ```text
//! rules check [--file rules/rules.yaml]
//! rules test FILE.ndjson [--file …] [--strict] [--csv-dir DIR]
//! rules ddl [--file …] [--schema public] [--existing columns.json]
//! ```
//!
//! * `check` validates and compiles the file and prints a summary.
//! * `test` runs each line of FILE through the rules. A line may be a raw-archive line
//!   (`{"kinesis":…,"envelope":…}`) or a plain client event (wrapped in a synthetic envelope
//!   from 192.0.2.10 with user agent `caudal-rules-test/1.0`). Stdout gets one JSON line per
//!   input line: `{"line":n,"outcome":"row","table":…,"values":{…}}`,
//!   `{"line":n,"outcome":"filtered","rule":…}` or
//!   `{"line":n,"outcome":"rejected","code":…,"rule":…,"path":…,"message":…}`; stderr a summary.
//!   `--csv-dir DIR` also writes the CSV the loader would `COPY` (`<table>.csv`,
//!   `caudal_rejects.csv`).
//! * `ddl` prints the statements for an empty schema, or with `--existing` (a JSON object
//!   `{"table": [{"name":…,"data_type":…,"character_maximum_length":…}, …]}` as read from
//!   `information_schema.columns` / `SVV_COLUMNS`) only the additive migration.
//!
//! Exit codes: 0 success (rejected lines are a normal outcome of `test`); 1 the rules file,
//! the input or a migration is invalid; 2 bad command line; 3 `test --strict` saw a rejected
//! line. All logic lives in `caudal_core::rules`; this binary only reads files and prints.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use caudal_core::rules::{
    ExistingColumn, Ident, Lineage, Outcome, Reject, RuleSet, is_raw_line, wrap_client_event,
};
use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "rules",
    version,
    about = "Check, test and deploy caudal rules files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate and compile the rules file.
    Check {
        /// Rules file.
        #[arg(long, default_value = "rules/rules.yaml")]
        file: PathBuf,
    },
    /// Run sample events (NDJSON: raw-archive lines or plain client events) through the rules.
    Test {
        /// NDJSON input.
        input: PathBuf,
        /// Rules file.
        #[arg(long, default_value = "rules/rules.yaml")]
        file: PathBuf,
        /// Exit with status 3 when any line is rejected.
        #[arg(long)]
        strict: bool,
        /// Also write the CSV the loader would COPY: `<table>.csv` per table and
        /// `caudal_rejects.csv` (uncompressed; see `caudal_core::rules::COPY_FORMAT_OPTIONS`).
        #[arg(long)]
        csv_dir: Option<PathBuf>,
    },
    /// Print CREATE TABLE / ALTER TABLE ADD COLUMN statements (Redshift dialect).
    Ddl {
        /// Rules file.
        #[arg(long, default_value = "rules/rules.yaml")]
        file: PathBuf,
        /// Target schema.
        #[arg(long, default_value = "public")]
        schema: String,
        /// Existing columns per table (JSON); prints only the additive migration.
        #[arg(long)]
        existing: Option<PathBuf>,
    },
}

fn load(file: &PathBuf) -> Result<RuleSet> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    RuleSet::from_yaml(&text)
        .with_context(|| format!("{} is not a usable rules file", file.display()))
}

fn check(file: &PathBuf) -> Result<()> {
    let rs = load(file)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ok: {}", file.display())?;
    writeln!(out, "version: {}", rs.version())?;
    for t in rs.tables() {
        let mapped = t.columns.iter().filter(|c| !c.standard).count();
        let kind = if t.catch_all {
            " [catch-all for unknown event types]"
        } else {
            ""
        };
        writeln!(
            out,
            "table {}: {} columns + {} lineage{kind}",
            t.name,
            mapped,
            t.columns.len() - mapped
        )?;
    }
    for e in rs.event_types() {
        let table = rs.event_table(e).map_or("?", |t| t.name.as_str());
        writeln!(out, "event {e} -> {table}")?;
    }
    writeln!(out, "filters: {}", rs.filter_names().join(", "))?;
    let exprs = rs.expressions();
    let interpreted: Vec<&str> = exprs
        .iter()
        .filter(|(_, native)| !native)
        .map(|(source, _)| *source)
        .collect();
    writeln!(
        out,
        "CEL: {} expression(s), {} native, {} through the interpreter (several times slower)",
        exprs.len(),
        exprs.len() - interpreted.len(),
        interpreted.len()
    )?;
    for source in interpreted {
        writeln!(out, "  interpreted: {source}")?;
    }
    writeln!(
        out,
        "unknown types: {}",
        if rs.has_catch_all() {
            "catch_all"
        } else {
            "reject"
        }
    )?;
    Ok(())
}

/// CSV files per table (and for rejects), created on first use.
struct CsvOut {
    dir: PathBuf,
    files: BTreeMap<String, std::io::BufWriter<std::fs::File>>,
}

impl CsvOut {
    /// CSV files in `dir` (created if missing), one per table, opened on first use.
    fn create(dir: &PathBuf) -> Result<CsvOut> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(CsvOut {
            dir: dir.clone(),
            files: BTreeMap::new(),
        })
    }

    /// The `caudal_rejects` row of a refused line (a plain client event as the raw line it
    /// was wrapped into).
    fn write_reject(
        &mut self,
        rs: &RuleSet,
        r: &Reject,
        line: &[u8],
        n: u64,
        lineage: &Lineage<'_>,
    ) -> Result<()> {
        let raw_line = if is_raw_line(line) {
            line.to_vec()
        } else {
            wrap_client_event(line, n, lineage.loaded_at).unwrap_or_else(|_| line.to_vec())
        };
        let cells = rs.reject_cells(r, &raw_line, lineage);
        caudal_core::rules::write_csv_cells(self.writer("caudal_rejects")?, &cells)?;
        Ok(())
    }

    fn writer(&mut self, name: &str) -> Result<&mut std::io::BufWriter<std::fs::File>> {
        if !self.files.contains_key(name) {
            let path = self.dir.join(format!("{name}.csv"));
            let f = std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            self.files
                .insert(name.to_owned(), std::io::BufWriter::new(f));
        }
        self.files.get_mut(name).context("csv writer")
    }
}

/// What the rules make of one input line: a raw-archive line as is, a plain client event
/// wrapped into one first (`n` is its line number).
fn outcome_of(rs: &RuleSet, line: &[u8], n: u64, lineage: &Lineage<'_>) -> Outcome {
    if is_raw_line(line) {
        rs.apply_line(line, lineage)
    } else {
        match wrap_client_event(line, n, lineage.loaded_at) {
            Ok(wrapped) => rs.apply_line(&wrapped, lineage),
            Err(e) => Outcome::Rejected(Reject {
                code: "parse".into(),
                rule: None,
                path: None,
                message: format!("neither a raw-archive line nor a client event: {e}"),
                event_id: None,
                event_type: None,
                principal: None,
            }),
        }
    }
}

/// The summary line on stderr: totals, and per table / filter / reject code.
fn print_summary(
    lines: u64,
    rows: &BTreeMap<String, u64>,
    filtered: &BTreeMap<String, u64>,
    rejected: &BTreeMap<String, u64>,
) {
    let fmt = |m: &BTreeMap<String, u64>| {
        let total: u64 = m.values().sum();
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if parts.is_empty() {
            total.to_string()
        } else {
            format!("{total} ({})", parts.join(", "))
        }
    };
    eprintln!(
        "{lines} lines: rows {}; filtered {}; rejected {}",
        fmt(rows),
        fmt(filtered),
        fmt(rejected)
    );
}

fn test(
    input: &PathBuf,
    file: &PathBuf,
    strict: bool,
    csv_dir: Option<&PathBuf>,
) -> Result<ExitCode> {
    let rs = load(file)?;
    let mut csv = csv_dir.map(CsvOut::create).transpose()?;
    let reader = std::io::BufReader::new(
        std::fs::File::open(input).with_context(|| format!("cannot read {}", input.display()))?,
    );
    let raw_key = format!("file:{}", input.display());
    let loaded_at = time::OffsetDateTime::now_utc();
    let mut out = std::io::stdout().lock();
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let mut filtered: BTreeMap<String, u64> = BTreeMap::new();
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = 0u64;
    for (i, line) in reader.split(b'\n').enumerate() {
        let n = i as u64 + 1;
        let mut line = line.with_context(|| format!("cannot read {}", input.display()))?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines += 1;
        let lineage = Lineage {
            raw_key: &raw_key,
            line: n,
            loaded_at,
        };
        let outcome = outcome_of(&rs, &line, n, &lineage);
        let record = match outcome {
            Outcome::Rows(rs_rows) => {
                for row in &rs_rows {
                    if let (Some(csv), Some(t)) = (csv.as_mut(), rs.tables().get(row.table)) {
                        caudal_core::rules::write_csv_row(csv.writer(t.name.as_str())?, row)?;
                    }
                    let mut v = rs.row_json(row);
                    *rows
                        .entry(v["table"].as_str().unwrap_or("?").to_owned())
                        .or_default() += 1;
                    v["line"] = json!(n);
                    v["outcome"] = json!("row");
                    writeln!(out, "{v}")?;
                }
                continue;
            }
            Outcome::Filtered { rule } => {
                *filtered.entry(rule.clone()).or_default() += 1;
                json!({"line": n, "outcome": "filtered", "rule": rule})
            }
            Outcome::Rejected(r) => {
                if let Some(csv) = csv.as_mut() {
                    csv.write_reject(&rs, &r, &line, n, &lineage)?;
                }
                *rejected.entry(r.code.clone()).or_default() += 1;
                json!({"line": n, "outcome": "rejected", "code": r.code, "rule": r.rule, "path": r.path,
                       "message": r.message, "event_id": r.event_id, "event_type": r.event_type})
            }
        };
        writeln!(out, "{record}")?;
    }
    if let Some(csv) = csv.as_mut() {
        for w in csv.files.values_mut() {
            w.flush()?;
        }
    }
    print_summary(lines, &rows, &filtered, &rejected);
    Ok(if strict && !rejected.is_empty() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn ddl(file: &PathBuf, schema: &str, existing: Option<&PathBuf>) -> Result<()> {
    let rs = load(file)?;
    let schema = Ident::parse(schema).context("--schema")?;
    let mut blocked = Vec::new();
    let statements = match existing {
        None => rs.ddl_create(&schema),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let existing: BTreeMap<String, Vec<ExistingColumn>> = serde_json::from_str(&text)
                .with_context(|| {
                    format!("{} is not {{\"table\": [columns…]}} JSON", path.display())
                })?;
            let plan = rs.ddl_migrate(&schema, &existing);
            blocked = plan.blocked;
            plan.statements
        }
    };
    let mut out = std::io::stdout().lock();
    for s in statements {
        writeln!(out, "{s};\n")?;
    }
    // The other tables' DDL is printed; tables in conflict need a person.
    if !blocked.is_empty() {
        let lines: Vec<String> = blocked.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "{} table(s) need a person:\n{}",
            lines.len(),
            lines.join("\n")
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Check { file } => check(file).map(|()| ExitCode::SUCCESS),
        Command::Test {
            input,
            file,
            strict,
            csv_dir,
        } => test(input, file, *strict, csv_dir.as_ref()),
        Command::Ddl {
            file,
            schema,
            existing,
        } => ddl(file, schema, existing.as_ref()).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
