//! `caudal-local`: run the whole pipeline on this machine (see docs/LOCAL.md).
//!
//! ```text
//! caudal-local up [--once] [--run-dir .local] [--template template.yaml] [--rules rules/rules.yaml]
//!                 [--api-port N] [--events-dir events] [--param NAME=VALUE]... [--no-samples]
//!                 [--isolation snapshot|serializable] [--chaos SPEC] [--second-region REGION]
//! caudal-local reset [--run-dir .local]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use caudal_local::cli::report;
use caudal_local::cli::traffic;
use caudal_local::stack::{self, Stack, StackOptions};
use clap::{Parser, Subcommand};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Parser, Debug)]
#[command(
    name = "caudal-local",
    version,
    about = "The caudal pipeline on one machine: no AWS account, no Docker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the stack, post the sample events, wait until they are loaded, print the counts,
    /// then keep running until Ctrl-C (or exit with --once).
    Up(Box<UpArgs>),
    /// Stop anything a previous run left behind and delete the run directory.
    Reset {
        /// Run directory.
        #[arg(long, default_value = ".local")]
        run_dir: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct UpArgs {
    /// Exit after printing the counts (for scripts and CI); the exit code is 1 when the
    /// pipeline did not settle or the reconciliation found differences.
    #[arg(long)]
    once: bool,
    /// Run directory: warehouse data and logs.
    #[arg(long, default_value = ".local")]
    run_dir: PathBuf,
    /// The SAM template to run.
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Rules file (sets the template's RulesFile parameter).
    #[arg(long, default_value = "rules/rules.yaml")]
    rules: PathBuf,
    /// Port of the HTTP API (default: a free port).
    #[arg(long)]
    api_port: Option<u16>,
    /// Port of the live dashboard page (default: a free port; the URL is printed).
    #[arg(long)]
    dashboard_port: Option<u16>,
    /// Directory of `ingest-api-*.json` request samples to post.
    #[arg(long, default_value = "events")]
    events_dir: PathBuf,
    /// Template parameter override, e.g. `--param RawWriterBatchSize=500` (repeatable).
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Do not post the sample events.
    #[arg(long)]
    no_samples: bool,
    /// How long to wait for the samples to be loaded, in seconds.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
    /// Isolation level of the warehouse database: `snapshot` (Redshift's default) or
    /// `serializable`.
    #[arg(long, default_value = "snapshot", value_parser = parse_isolation)]
    isolation: caudal_local::emulators::dataapi::Isolation,
    /// Inject AWS's failures once the stack is up: comma-separated KEY=VALUE items, or `on`
    /// for the defaults (`on,kill=0.1` changes one). Rates are 0-1:
    /// `s3` (503 SlowDown/ServiceUnavailable, 500 after a write), `kinesis` (throttled calls,
    /// failed PutRecords entries, 500 after a write), `firehose` (ServiceUnavailable calls,
    /// FailedPutCount entries), `dataapi` (statements FAILED or stopped part way and rolled
    /// back), `delay` (statements delayed by `delay-ms=MIN-MAX`), `kill` (invocations killed
    /// part way); `dup-notify=N` delivers every S3 notification N times to concurrent loader
    /// workers; `visibility=S` caps SQS visibility timeouts (seconds); `seed=N`.
    /// `on` =
    /// s3=0.05,kinesis=0.05,firehose=0.1,dataapi=0.05,delay=0.1,delay-ms=100-2000,kill=0.02,dup-notify=3,visibility=20,seed=42.
    /// Chaos runs the loader with 4 workers
    /// (LoaderConcurrency) unless --param says otherwise. See docs/LOCAL.md.
    #[arg(long, value_name = "SPEC", value_parser = parse_chaos)]
    chaos: Option<caudal_local::emulators::chaos::ChaosConfig>,
    /// Run a second ingest region too (e.g. `us-west-2`): its own HTTP API, stream, raw
    /// archive and functions in that moto region, loading into the one warehouse as a
    /// deployed second region does (docs/AVAILABILITY.md). The samples go to the home region.
    #[arg(long, value_name = "REGION")]
    second_region: Option<String>,
}

fn parse_chaos(s: &str) -> Result<caudal_local::emulators::chaos::ChaosConfig, String> {
    caudal_local::emulators::chaos::ChaosConfig::parse(s).map_err(|e| e.to_string())
}

fn parse_isolation(s: &str) -> Result<caudal_local::emulators::dataapi::Isolation, String> {
    caudal_local::emulators::dataapi::Isolation::parse(s)
        .ok_or_else(|| format!("expected snapshot or serializable, got {s:?}"))
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

/// Logs go to `<run-dir>/logs/stack.log` (RUST_LOG, default info); warnings also to stderr.
fn init_logging(run_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = run_dir.join("logs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("stack.log");
    let file = std::fs::File::create(&path)?;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_filter(tracing_subscriber::EnvFilter::new(filter));
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(tracing_subscriber::filter::LevelFilter::WARN);
    tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .try_init()?;
    // The handlers' CloudWatch metric lines belong in the log, not on the console.
    caudal_core::telemetry::set_emf_sink(|line| tracing::info!(target: "emf", "{line}"));
    Ok(path)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Reset { run_dir } => stack::reset(&run_dir)
            .map(|()| {
                println!("removed {}", run_dir.display());
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
        Command::Up(args) => up(*args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caudal-local: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// Long on purpose: the `up` command's sequence (start, samples, report, wait), read top-down.
async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let log = init_logging(&args.run_dir)?;
    let samples_dir = args
        .rules
        .parent()
        .map(|p| p.join("samples"))
        .unwrap_or_else(|| "samples".into());
    let opts = StackOptions {
        run_dir: args.run_dir.clone(),
        template: args.template.clone(),
        rules: args.rules.is_file().then(|| args.rules.clone()),
        api_port: args.api_port,
        parameters: args.params.clone(),
        isolation: args.isolation,
        chaos: args.chaos.clone(),
        second_region: args.second_region.clone(),
    };
    println!(
        "caudal-local: starting moto, PostgreSQL, the Data API and the functions (logs: {})",
        log.display()
    );
    let stack = tokio::select! {
        s = Stack::start(opts) => s?,
        _ = shutdown_signal() => {
            println!("interrupted during start-up; everything started so far was stopped");
            return Ok(ExitCode::from(130));
        }
    };
    for w in &stack.model().warnings {
        println!("  note: {w}");
    }
    for r in stack.regions() {
        println!("  HTTP API      {}  ({})", r.api_url(), r.name());
    }
    println!("  Data API      {}", stack.data_api_url());
    println!("  AWS emulator  {} (moto)", stack.moto_endpoint());
    if let Some(c) = stack.chaos() {
        println!("  chaos         {}", c.config());
    }
    // The live page is read from stack.json like `caudal --local` reads it.
    let dashboard = match caudal::dashboard::spawn_local(stack.run_dir(), args.dashboard_port).await
    {
        Ok((url, task)) => {
            println!(
                "  Dashboard     {url}  (live; refreshes every {} s)",
                caudal::dashboard::LIVE_REFRESH_S
            );
            Some((url, task))
        }
        Err(e) => {
            println!("  Dashboard     not started: {e}");
            None
        }
    };

    let settled = tokio::select! {
        r = post_samples_and_wait(&stack, &args, &samples_dir) => Some(r),
        _ = shutdown_signal() => None,
    };
    let mut code = ExitCode::SUCCESS;
    match settled {
        None => {
            println!("interrupted; stopping");
            stack.stop().await?;
            return Ok(ExitCode::from(130));
        }
        Some(Err(e)) => {
            eprintln!("caudal-local: {e:#}");
            code = ExitCode::FAILURE;
        }
        Some(Ok(counts)) => {
            println!();
            print!("{counts}");
            if let Some(c) = stack.chaos() {
                println!("Faults injected");
                print!("{}", c.stats);
            }
            if !counts.reconciliation.mismatches.is_empty() {
                code = ExitCode::FAILURE;
            }
        }
    }
    println!();
    println!("Endpoint:   POST {}/v1/events", stack.api_url());
    println!(
        "  curl -s -XPOST {}/v1/events -H 'content-type: application/json' -d '{{\"type\":\"page_view\",\"ts\":\"2026-11-25T19:55:17Z\",\"page\":{{\"url\":\"https://example.com/\"}}}}'",
        stack.api_url()
    );
    let segment_keys = stack
        .model()
        .parameters
        .get("SegmentWriteKeys")
        .cloned()
        .unwrap_or_default();
    if !segment_keys.trim().is_empty() {
        // Never print a key someone passed in; the local default is no secret.
        let key = if segment_keys.split(',').any(|k| k.trim() == "caudal-local") {
            "caudal-local"
        } else {
            "one of --param SegmentWriteKeys"
        };
        println!(
            "Segment:    SDKs with host {} and write key {key} (docs/SDKS.md)",
            stack.api_url()
        );
    }
    let app_ids = stack
        .model()
        .parameters
        .get("SnowplowAppIds")
        .cloned()
        .unwrap_or_default();
    if !app_ids.trim().is_empty() {
        println!(
            "Snowplow:   trackers with collector {} and app ids {} (docs/SDKS.md)",
            stack.api_url(),
            app_ids.trim()
        );
    }
    println!("Warehouse:  {}", stack.psql_command());
    println!("  e.g.  SELECT * FROM caudal_reconciliation;  SELECT * FROM page_views LIMIT 10;");
    if let Some((url, _)) = &dashboard {
        println!("Dashboard:  {url}  (`caudal --local status --html report.html` writes it once)");
    }
    if args.once {
        stack.stop().await?;
        return Ok(code);
    }
    println!("Running until Ctrl-C.");
    shutdown_signal().await;
    println!("stopping…");
    if let Some((_, task)) = dashboard {
        task.abort();
    }
    stack.stop().await?;
    println!("stopped; nothing left running");
    Ok(code)
}

async fn post_samples_and_wait(
    stack: &Stack,
    args: &UpArgs,
    samples_dir: &std::path::Path,
) -> anyhow::Result<report::Counts> {
    if !args.no_samples {
        let requests = traffic::sample_requests(&args.events_dir, samples_dir)?;
        let t = traffic::send(stack.api_url(), &requests).await?;
        let statuses: Vec<String> = t.statuses.iter().map(|(s, n)| format!("{n}×{s}")).collect();
        println!(
            "Posted {} sample requests ({}): {} events accepted, {} rejected at the API, {} to retry",
            t.requests,
            statuses.join(", "),
            t.accepted,
            t.rejected,
            t.retry
        );
        println!("Waiting until everything is loaded…");
    }
    Ok(report::wait_until_loaded(stack, Duration::from_secs(args.timeout)).await?)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
