//! The command line: arguments, the stack, the context, then one command; what `main` runs,
//! and what the end-to-end tests run (the same code, with arguments).
//!
//! Exit codes: 0 done; 1 an error (printed); 2 something needs a person (`status`), does not
//! add up (`reconcile`), or was not finished (`redrive raw-failures`, `--wait`); 3 records lost
//! (`redrive raw-failures`); 130 interrupted (run the same command again to resume).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::announce::{self, Request};
use crate::archive::Selection;
use crate::run::{self, Checkpoint, Interrupt};
use crate::target::Stack;
use crate::{Ctx, queue, rawfail, status};
use caudal_core::command::Action;
use clap::{Args, Parser, Subcommand};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `caudal`'s arguments.
#[derive(Debug, Parser)]
#[command(
    name = "caudal",
    version,
    about = "Operate a caudal stack: status, reconcile, replay, redrive, reprocess"
)]
struct Cli {
    /// The local stack (`make local`), read from <run-dir>/stack.json.
    #[arg(long, global = true)]
    local: bool,
    /// The local stack's run directory.
    #[arg(long, global = true, default_value = ".local")]
    run_dir: PathBuf,
    /// A deployed stack's name (its outputs name every resource).
    #[arg(long, global = true)]
    stack: Option<String>,
    /// The stack's region (default: the standard AWS region settings; with --local, the home
    /// region).
    #[arg(long, global = true)]
    region: Option<String>,
    /// Replace or add a stack output (repeatable), e.g. --output LoaderQueueUrl=https://….
    #[arg(long = "output", global = true, value_parser = key_value)]
    outputs: Vec<(String, String)>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Where resumable operations keep their checkpoints.
    #[arg(long, global = true)]
    checkpoint_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Per stage: flow, lag, queues, rejects, reconciliation; exit code 2 when a person is needed.
    Status {
        /// Also write the dashboard page (one self-contained HTML file) here: flow per minute,
        /// latency, lag, rejects with samples, events per type per hour, reconciliation per
        /// raw object, queue depths.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Start of the page's window: RFC 3339, or a duration back from now (`90m`, `24h`;
        /// at most a day).
        #[arg(long, default_value = "60m", value_parser = time_arg, requires = "html")]
        since: OffsetDateTime,
    },
    /// The stream against the raw archive (per hour and per object), raw-invalid/ objects,
    /// failed batches, and the warehouse's reconciliation view; exit code 2 on a difference.
    Reconcile {
        /// Start of the window: RFC 3339, or a duration back from now (`90m`, `24h`, `7d`).
        #[arg(long, default_value = "24h", value_parser = time_arg)]
        since: OffsetDateTime,
    },
    /// Announce raw objects the ledger does not hold to the loader (lost notifications, a new
    /// environment, a backfill).
    Replay(Select),
    /// Load raw objects again with the loader's current rules (each object's rows, rejects and
    /// ledger row replaced in one transaction).
    Reprocess {
        #[command(flatten)]
        select: Select,
        /// Only objects with rejects.
        #[arg(long)]
        rejected_only: bool,
    },
    /// Move failed work back.
    #[command(subcommand)]
    Redrive(Redrive),
    /// Cost per million events, stage by stage, for the standard scenarios (no stack needed):
    /// from a dated price table and the benchmarks' measurements.
    Cost {
        /// The price table.
        #[arg(long, default_value = "cost/prices.yaml")]
        prices: PathBuf,
        /// The measurements (`make bench` writes them).
        #[arg(long, default_value = "cost/measured.yaml")]
        measured: PathBuf,
        /// Print the Markdown table docs/COST.md holds.
        #[arg(long)]
        markdown: bool,
        /// Write the table into this file between its markers (docs/COST.md).
        #[arg(long)]
        update: Option<PathBuf>,
    },
    /// Send tagged test events through the endpoint and wait until they are queryable; prints
    /// the ingest → queryable latency; exit code 2 when they are not within --timeout.
    Smoke {
        /// Events to send.
        #[arg(long, default_value_t = 5)]
        events: usize,
        /// Seconds to wait until they are queryable.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Bearer token, for a stack with AuthMode=JWT (or CAUDAL_SMOKE_TOKEN).
        #[arg(long)]
        token: Option<String>,
        /// Also wait until every event is a row of this table (e.g. the rules' catch-all
        /// table, unknown_events in the shipped rules).
        #[arg(long)]
        table: Option<String>,
        /// Print the request it would send (endpoint, auth mode, events); send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Redrive {
    /// The loader's dead-letter queue back to the loader's queue (the ledger makes a message
    /// that was already loaded a no-op).
    LoaderDlq {
        /// Print what would be moved; move nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The raw-writer's failed batches, read back from the stream while it keeps them and
    /// written by the raw-writer itself (same keys); records past the retention are reported
    /// lost.
    RawFailures {
        /// Read the ranges back and print what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Clear the failure records of batches with lost records too (after they are
        /// reported).
        #[arg(long)]
        accept_loss: bool,
    },
}

#[derive(Debug, Args)]
struct Select {
    /// Raw objects under this prefix (`raw/dt=2026-12-03/hr=07/`).
    #[arg(long)]
    prefix: Option<String>,
    /// Raw objects of the hours from this time (RFC 3339, or `6h` back from now)…
    #[arg(long, value_parser = time_arg)]
    from: Option<OffsetDateTime>,
    /// …to this one (default: now).
    #[arg(long, value_parser = time_arg)]
    to: Option<OffsetDateTime>,
    /// Print what would be announced, with counts; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Then wait (up to this many seconds) until the loader's queue is empty.
    #[arg(long)]
    wait: Option<u64>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not Key=Value"))
}

/// RFC 3339, or a duration back from now: `<n>m`, `<n>h`, `<n>d`.
fn time_arg(s: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?}: not RFC 3339 nor a duration like 90m, 24h, 7d"))?;
    let d = match unit {
        "m" => time::Duration::minutes(n),
        "h" => time::Duration::hours(n),
        "d" => time::Duration::days(n),
        _ => return Err(format!("{s:?}: a duration ends in m, h or d")),
    };
    Ok(OffsetDateTime::now_utc() - d)
}

async fn stack(cli: &Cli) -> anyhow::Result<Stack> {
    let s = if cli.local {
        Stack::local(&cli.run_dir, cli.region.as_deref())?
    } else if let Some(name) = &cli.stack {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &cli.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        Stack::deployed(&loader.load().await, name).await?
    } else {
        bail!(crate::target::TargetError::NoStack);
    };
    Ok(s.with_overrides(&cli.outputs))
}

fn print<T: serde::Serialize + std::fmt::Display>(json: bool, v: &T) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{v}");
    }
}

async fn announce_cmd(
    cli: &Cli,
    ctx: &Ctx,
    action: Action,
    select: &Select,
    rejected_only: bool,
) -> anyhow::Result<u8> {
    let selection = Selection::new(select.prefix.as_deref(), select.from, select.to)?;
    let verb = match action {
        Action::Load => "replay",
        Action::Reprocess => "reprocess",
    };
    let args = [
        ctx.resources.loader_queue.as_str(),
        &format!("{selection:?}"),
        if rejected_only { "rejected" } else { "all" },
    ];
    let dir = cli
        .checkpoint_dir
        .clone()
        .unwrap_or_else(run::default_state_dir);
    let checkpoint = Checkpoint::open(&dir, &run::operation_name(verb, &args));
    if let Some(after) = &checkpoint.after
        && !select.dry_run
    {
        eprintln!(
            "resuming after {after} (checkpoint {})",
            checkpoint.path().display()
        );
    }
    let req = Request {
        action,
        selection,
        rejected_only,
        dry_run: select.dry_run,
    };
    let report = announce::run(ctx, &req, &checkpoint, &Interrupt::watch()).await?;
    print(cli.json, &report);
    if let (Some(secs), false) = (select.wait, select.dry_run) {
        let left = announce::wait_for_loader(ctx, Duration::from_secs(secs)).await?;
        if left > 0 {
            eprintln!("the loader's queue still holds {left} message(s) after {secs} s");
            return Ok(2);
        }
        eprintln!("the loader's queue is empty");
    }
    Ok(if report.interrupted { 130 } else { 0 })
}

async fn main_inner(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Cost {
        prices,
        measured,
        markdown,
        update,
    } = &cli.command
    {
        return cost_cmd(cli.json, prices, measured, *markdown, update.as_deref());
    }
    let stack = stack(&cli).await?;
    let ctx = Ctx::new(&stack).await.context("reading the stack")?;
    match &cli.command {
        Command::Status { html, since } => {
            let s = status::status(&ctx).await?;
            if let Some(path) = html {
                let name = cli.stack.clone().unwrap_or_else(|| "local".to_owned());
                let d = crate::dashboard::gather(&ctx, &name, *since).await?;
                std::fs::write(path, crate::dashboard::render(&d, None))
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            print(cli.json, &s);
            Ok(if s.problems.is_empty() { 0 } else { 2 })
        }
        Command::Reconcile { since } => {
            let r = status::reconcile(&ctx, *since).await?;
            print(cli.json, &r);
            Ok(if r.off { 2 } else { 0 })
        }
        Command::Cost { .. } => unreachable_cost(),
        Command::Replay(select) => announce_cmd(&cli, &ctx, Action::Load, select, false).await,
        Command::Reprocess {
            select,
            rejected_only,
        } => announce_cmd(&cli, &ctx, Action::Reprocess, select, *rejected_only).await,
        Command::Smoke {
            events,
            timeout,
            token,
            table,
            dry_run,
        } => {
            if *dry_run {
                let (body, ids) =
                    crate::smoke::events("dry-run", (*events).max(1), OffsetDateTime::now_utc());
                println!(
                    "would POST {} event(s) to {}v1/events (AuthMode {}), then wait up to {timeout} s:\n{body}",
                    ids.len(),
                    ctx.resources.api_url,
                    ctx.resources.auth_mode.as_deref().unwrap_or("NONE"),
                );
                return Ok(0);
            }
            let table = match table {
                Some(t) => Some(
                    caudal_core::rules::Ident::parse(t)
                        .map_err(|e| anyhow::anyhow!("--table {t:?}: {e}"))?,
                ),
                None => None,
            };
            let opts = crate::smoke::Options {
                events: *events,
                timeout: Duration::from_secs(*timeout),
                token: token
                    .clone()
                    .or_else(|| std::env::var("CAUDAL_SMOKE_TOKEN").ok()),
                table,
            };
            let sdk = stack.sdk_config().await;
            let r = crate::smoke::smoke(&ctx, &sdk, &opts).await?;
            print(cli.json, &r);
            Ok(if r.passed { 0 } else { 2 })
        }
        Command::Redrive(Redrive::RawFailures {
            dry_run,
            accept_loss,
        }) => {
            let function = ctx
                .resources
                .raw_writer
                .clone()
                .ok_or(crate::target::TargetError::Missing("RawWriterFunctionName"))?;
            let bar = run::progress(0, "failed batches");
            let report = rawfail::redrive(
                &ctx,
                &ctx.clients.lambda,
                &function,
                *dry_run,
                *accept_loss,
                &bar,
                &Interrupt::watch(),
            )
            .await?;
            bar.finish_and_clear();
            print(cli.json, &report);
            Ok(if report.interrupted {
                130
            } else if report.lost() > 0 {
                3
            } else if report.complete() || *dry_run {
                0
            } else {
                2
            })
        }
        Command::Redrive(Redrive::LoaderDlq { dry_run }) => {
            let r = &ctx.resources;
            if *dry_run {
                let d = queue::depth(&ctx.clients.sqs, &r.loader_dlq).await?;
                let sample = queue::peek(&ctx.clients.sqs, &r.loader_dlq).await?;
                println!("would move {} message(s) to the loader's queue", d.total());
                for b in sample {
                    println!("  {}", queue::describe(&b));
                }
                return Ok(0);
            }
            let bar = run::progress(0, "moving");
            let interrupt = Interrupt::watch();
            let moved = queue::redrive(
                &ctx.clients.sqs,
                &r.loader_dlq,
                &r.loader_queue,
                &bar,
                &interrupt,
            )
            .await?;
            bar.finish_and_clear();
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&moved).unwrap_or_default()
                );
            } else {
                println!(
                    "moved {} of {} message(s) from the loader's dead-letter queue to its queue{}",
                    moved.moved,
                    moved.found,
                    if moved.interrupted {
                        " (interrupted)"
                    } else {
                        ""
                    }
                );
            }
            Ok(if moved.interrupted { 130 } else { 0 })
        }
    }
}

/// Runs `caudal` with `args` (the first is the program name): its exit code. Errors are
/// printed to stderr.
/// `cost` returns before the stack is read.
fn unreachable_cost() -> anyhow::Result<u8> {
    bail!("cost needs no stack and is run before one is read")
}

fn cost_cmd(
    json: bool,
    prices: &std::path::Path,
    measured: &std::path::Path,
    markdown: bool,
    update: Option<&std::path::Path>,
) -> anyhow::Result<u8> {
    let (p, m) = crate::cost::inputs(prices, measured)?;
    let rows: Vec<crate::cost::Row> = crate::cost::scenarios()
        .into_iter()
        .map(|s| crate::cost::row(&p, &m, s))
        .collect();
    if let Some(path) = update {
        let doc =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let table = crate::cost::markdown(&p, &m, &rows);
        let Some(doc) = crate::cost::replace_table(&doc, crate::cost::TABLE_MARKERS, &table) else {
            bail!("{} has no cost-table markers", path.display());
        };
        let memory = crate::cost::memory_markdown(&p, &m);
        let Some(new) = crate::cost::replace_table(&doc, crate::cost::MEMORY_MARKERS, &memory)
        else {
            bail!("{} has no memory-table markers", path.display());
        };
        std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "caudal cost: cost table and memory sizes written into {}",
            path.display()
        );
        return Ok(0);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        // The Markdown table reads well in a terminal too; --markdown prints it alone.
        if !markdown {
            println!(
                "caudal cost: {} and {}\n",
                prices.display(),
                measured.display()
            );
        }
        print!("{}", crate::cost::markdown(&p, &m, &rows));
        if !markdown {
            println!("\nmemory sizes that follow from the measurements:\n");
            print!("{}", crate::cost::memory_markdown(&p, &m));
        }
    }
    Ok(0)
}

pub async fn run<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    match main_inner(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caudal: {e:#}");
            1
        }
    }
}
