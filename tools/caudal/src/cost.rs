//! `caudal cost`: what a million events cost, stage by stage, from a dated price table
//! (`cost/prices.yaml`) and the benchmarks' measurements (`cost/measured.yaml`, written by
//! `make bench`). Pure arithmetic: no AWS call.
//!
//! The stages: the HTTP API; the ingest function; the Kinesis stream in both capacity modes
//! (the cheaper is used and named); the raw-writer with its S3 objects; the lake (Firehose);
//! the S3 notifications through SQS; the loader with its staging objects; CloudWatch Logs. The
//! Redshift compute that runs the loads is listed apart (the Data API itself is free), and so
//! is S3 storage, which is paid per month kept.
//!
//! Every figure that is not a price or a measurement is in the price file's `assumptions`,
//! named, so a reader can see and change it: service latencies a Lambda function waits for
//! (billed as duration), envelope overhead, log volume, and the template's defaults.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A dated price table (USD, one region).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Prices {
    /// When the figures were taken.
    pub date: String,
    /// Their region.
    pub region: String,
    /// Where they come from and how far they were checked.
    pub source: String,
    /// HTTP API: per million requests, metered in `request_unit_bytes` increments.
    pub api_per_million_requests: f64,
    /// The HTTP API's metering increment (512 KB).
    pub api_request_unit_bytes: f64,
    /// Lambda arm64 per GB-second.
    pub lambda_per_gb_second: f64,
    /// Lambda per million requests.
    pub lambda_per_million_requests: f64,
    /// Kinesis on-demand per stream-hour.
    pub kinesis_od_per_stream_hour: f64,
    /// Kinesis on-demand per GB written (each record rounded up to `kinesis_od_rounding_bytes`).
    pub kinesis_od_per_gb_in: f64,
    /// Kinesis on-demand per GB read.
    pub kinesis_od_per_gb_out: f64,
    /// On-demand record rounding (1 KB).
    pub kinesis_od_rounding_bytes: f64,
    /// Kinesis provisioned per shard-hour.
    pub kinesis_shard_hour: f64,
    /// Kinesis provisioned per million PUT payload units.
    pub kinesis_per_million_put_units: f64,
    /// A PUT payload unit (25 KB).
    pub kinesis_put_unit_bytes: f64,
    /// Firehose Direct PUT per GB (each record rounded up to `firehose_rounding_bytes`).
    pub firehose_per_gb: f64,
    /// Firehose record rounding (5 KB).
    pub firehose_rounding_bytes: f64,
    /// S3 Standard PUT per 1,000.
    pub s3_per_1000_put: f64,
    /// S3 Standard GET per 1,000.
    pub s3_per_1000_get: f64,
    /// S3 Standard per GB-month.
    pub s3_per_gb_month: f64,
    /// SQS standard per million requests (64 KB chunks).
    pub sqs_per_million_requests: f64,
    /// CloudWatch Logs per GB ingested.
    pub logs_per_gb: f64,
    /// Redshift Serverless per RPU-hour.
    pub redshift_per_rpu_hour: f64,
    /// Everything else the model needs.
    pub assumptions: Assumptions,
}

/// Figures the model assumes, each named where it is used.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Assumptions {
    /// Envelope bytes beyond the event (ids, type, times, request id, IP, user agent).
    pub envelope_overhead_bytes: f64,
    /// Raw line bytes beyond the envelope (Kinesis coordinates).
    pub raw_line_overhead_bytes: f64,
    /// Wall time ingest waits for PutRecords, per request (ms).
    pub put_records_ms: f64,
    /// Wall time the raw-writer waits for S3 and Firehose, per batch (ms).
    pub raw_writer_io_ms: f64,
    /// Wall time the loader waits for S3 and the Data API, per load (ms).
    pub loader_io_ms: f64,
    /// Redshift compute per load transaction (s) at the base capacity.
    pub redshift_seconds_per_load: f64,
    /// Redshift Serverless base capacity (RPUs).
    pub redshift_base_rpus: f64,
    /// Provisioned streams are sized to this share of a shard's limits.
    pub shard_utilization: f64,
    /// Log bytes per ingest request (its summary line, metric line and Lambda's own lines).
    pub log_bytes_per_request: f64,
    /// Log bytes per raw-writer batch.
    pub log_bytes_per_batch: f64,
    /// Log bytes per load.
    pub log_bytes_per_load: f64,
    /// Staging objects per load (tables × parts, manifests).
    pub staging_objects_per_load: f64,
    /// Template defaults: memory of ingest, raw-writer and loader (MB).
    pub memory_mb: [f64; 3],
    /// Template default: RawWriterBatchSize (records).
    pub raw_writer_batch_size: f64,
    /// Template default: RawWriterBatchWindowSeconds.
    pub raw_writer_window_s: f64,
    /// Template default: LoaderBatchSize (objects).
    pub loader_batch_size: f64,
    /// Template default: LoaderBatchWindowSeconds.
    pub loader_window_s: f64,
    /// Template default: KinesisPackBytes.
    pub pack_target_bytes: f64,
    /// Template default: LoaderConcurrency (the loader's reserved concurrency).
    pub loader_concurrency: f64,
    /// Memory sizing: a function's memory is at least its measured peak times this (allocator
    /// slack, inputs larger than the benchmark's).
    pub memory_headroom: f64,
    /// Memory sizing: the most CPU time (ms) the ingest core may add to a client's wait for
    /// the largest body the defaults accept (`MAX_BODY_BYTES`).
    pub ingest_cpu_budget_ms: f64,
    /// Memory sizing: the most CPU time (ms) the raw-writer may spend on a full batch (Lambda's
    /// 6 MB payload); a shard's 1 MB/s of writes takes over 4 s to fill one.
    pub raw_writer_cpu_budget_ms: f64,
    /// Memory sizing: the event rate (events/s) the loaders at `loader_concurrency` must keep
    /// up with.
    pub loader_design_rate: f64,
    /// Memory sizing: the share of a loader's time its CPU may take; the rest is its waits for
    /// S3 and the Data API.
    pub loader_cpu_busy: f64,
}

/// What the benchmarks measured (`make bench` writes it).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Measured {
    /// When, and on what machine.
    pub date: String,
    /// The machine.
    pub machine: String,
    /// Ingest core CPU per event (parse, validate, envelope, pack), µs, 500 B events.
    pub ingest_us_per_event: f64,
    /// Raw-writer CPU per KB of record data (decode, unpack, raw lines, compression), µs.
    pub raw_writer_us_per_kb: f64,
    /// Compressed / uncompressed size of raw objects with the default codec.
    pub compression_ratio: f64,
    /// Loader CPU per event (rules and staging CSV), µs.
    pub loader_us_per_event: f64,
    /// Ingest core CPU per KB of request body, µs (the same run as `ingest_us_per_event`).
    pub ingest_us_per_kb: f64,
    /// Ingest peak resident memory (MB) for the largest request the defaults accept.
    pub ingest_peak_mb: f64,
    /// Raw-writer peak resident memory (MB) for a full 6 MB batch.
    pub raw_writer_peak_mb: f64,
    /// Loader peak resident memory (MB) staging the raw object of a full 6 MB batch.
    pub loader_peak_mb: f64,
}

/// One scenario: rate, event size, events per request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Events per second.
    pub rate: f64,
    /// Bytes per event.
    pub event_bytes: f64,
    /// Events per request.
    pub per_request: f64,
}

/// Which Kinesis capacity mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// On-demand.
    OnDemand,
    /// Provisioned, sized by the model.
    Provisioned,
}

/// Cost per million events of one scenario, per stage (USD).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Events per second.
    pub rate: f64,
    /// Bytes per event.
    pub event_bytes: f64,
    /// Events per request.
    pub per_request: f64,
    /// HTTP API.
    pub api: f64,
    /// Ingest function.
    pub ingest: f64,
    /// The cheaper stream mode.
    pub mode: Mode,
    /// Kinesis in that mode.
    pub kinesis: f64,
    /// Kinesis in the other mode.
    pub kinesis_other: f64,
    /// Provisioned shards the model sized.
    pub shards: f64,
    /// Kinesis records per request (packing).
    pub records_per_request: f64,
    /// Raw-writer function and its S3 PUTs.
    pub raw: f64,
    /// Firehose.
    pub lake: f64,
    /// Notifications (SQS), the loader function, its S3 reads and staging writes.
    pub staged: f64,
    /// CloudWatch Logs.
    pub logs: f64,
    /// Sum of the above (Kinesis in the cheaper mode).
    pub total: f64,
    /// Redshift Serverless compute for the loads (apart).
    pub redshift: f64,
    /// S3 storage of the raw archive, per month kept (apart).
    pub storage_per_month: f64,
}

const GB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
const EVENTS: f64 = 1_000_000.0;
/// Lambda's Kinesis batch payload limit (the base64 text counts).
const LAMBDA_PAYLOAD_BYTES: f64 = 6.0 * 1000.0 * 1000.0;

/// Lambda gives a function CPU in proportion to its memory, one full vCPU at 1,769 MB (AWS
/// Lambda developer guide, "Configuring Lambda function memory"). caudal's handlers do their
/// CPU work on one thread, so memory past this buys no more speed.
pub const MB_PER_VCPU: f64 = 1769.0;

/// The share of one core that a function of `memory_mb` does its CPU work with: what turns a
/// benchmark's CPU time (measured on a full core) into billed duration.
pub fn cpu_share(memory_mb: f64) -> f64 {
    (memory_mb / MB_PER_VCPU).clamp(f64::MIN_POSITIVE, 1.0)
}

/// The cost of `invocations` that each wait `wait_s` and do `cpu_s` of full-core CPU work, at
/// `memory_mb`.
fn lambda(p: &Prices, invocations: f64, wait_s: f64, cpu_s: f64, memory_mb: f64) -> f64 {
    let seconds_each = wait_s + cpu_s / cpu_share(memory_mb);
    invocations
        * (p.lambda_per_million_requests / EVENTS
            + seconds_each * memory_mb / 1024.0 * p.lambda_per_gb_second)
}

/// The cost of one scenario.
pub fn row(p: &Prices, m: &Measured, s: Scenario) -> Row {
    let a = &p.assumptions;
    let envelope = s.event_bytes + a.envelope_overhead_bytes;
    let line = envelope + a.raw_line_overhead_bytes;
    let requests = EVENTS / s.per_request;
    let hours = EVENTS / s.rate / 3600.0;

    let body_units = (s.per_request * s.event_bytes / p.api_request_unit_bytes.max(1.0)).ceil();
    let api = requests * body_units * p.api_per_million_requests / EVENTS;
    let ingest = lambda(
        p,
        requests,
        a.put_records_ms / 1000.0,
        s.per_request * m.ingest_us_per_event / 1e6,
        a.memory_mb[0],
    );

    // Packing: a request's envelopes in records of at most the target.
    let request_bytes = s.per_request * envelope;
    let records_per_request = if s.per_request <= 1.0 || a.pack_target_bytes <= 0.0 {
        s.per_request
    } else {
        (request_bytes / a.pack_target_bytes).ceil().max(1.0)
    };
    let records = requests * records_per_request;
    let record_bytes = request_bytes / records_per_request;
    let on_demand = hours * p.kinesis_od_per_stream_hour
        + records
            * (record_bytes / p.kinesis_od_rounding_bytes).ceil()
            * p.kinesis_od_rounding_bytes
            / GB
            * p.kinesis_od_per_gb_in
        + EVENTS * envelope / GB * p.kinesis_od_per_gb_out;
    let records_per_s = s.rate / s.per_request * records_per_request;
    let load = (s.rate * envelope / MIB).max(records_per_s / 1000.0);
    let shards = (load / a.shard_utilization).ceil().max(1.0);
    let provisioned = shards * hours * p.kinesis_shard_hour
        + records
            * (record_bytes / p.kinesis_put_unit_bytes).ceil()
            * p.kinesis_per_million_put_units
            / EVENTS;
    let (mode, kinesis, kinesis_other) = if provisioned <= on_demand {
        (Mode::Provisioned, provisioned, on_demand)
    } else {
        (Mode::OnDemand, on_demand, provisioned)
    };

    // The raw-writer: per shard, a batch closes at the window, the batch size or the payload.
    let per_shard_window = records_per_s / shards * a.raw_writer_window_s;
    let payload_records = (LAMBDA_PAYLOAD_BYTES / (record_bytes * 4.0 / 3.0 + 300.0)).floor();
    let batch_records = per_shard_window
        .min(a.raw_writer_batch_size)
        .min(payload_records)
        .max(1.0);
    let batches = records / batch_records;
    let events_per_batch = EVENTS / batches;
    let raw_cpu_s = events_per_batch * envelope / 1024.0 * m.raw_writer_us_per_kb / 1e6;
    let raw = lambda(
        p,
        batches,
        a.raw_writer_io_ms / 1000.0,
        raw_cpu_s,
        a.memory_mb[1],
    ) + batches * p.s3_per_1000_put / 1000.0;

    let lake_bytes = (line * EVENTS).max(
        // The raw-writer packs lines into Firehose records; rounding only bites tiny batches.
        batches * p.firehose_rounding_bytes,
    );
    let lake = lake_bytes / GB * p.firehose_per_gb;

    // One raw object per batch: a notification (S3 → SQS: send, receive, delete), a GET, and
    // its share of a load.
    let objects_per_s = batches / (EVENTS / s.rate);
    let objects_per_load = (objects_per_s * a.loader_window_s)
        .min(a.loader_batch_size)
        .max(1.0);
    let loads = batches / objects_per_load;
    let loader_cpu_s = EVENTS / loads * m.loader_us_per_event / 1e6;
    let staged = batches * 3.0 * p.sqs_per_million_requests / EVENTS
        + batches * p.s3_per_1000_get / 1000.0
        + lambda(
            p,
            loads,
            a.loader_io_ms / 1000.0,
            loader_cpu_s,
            a.memory_mb[2],
        )
        + loads * a.staging_objects_per_load * (p.s3_per_1000_put + p.s3_per_1000_get) / 1000.0;

    let logs = (requests * a.log_bytes_per_request
        + batches * a.log_bytes_per_batch
        + loads * a.log_bytes_per_load)
        / GB
        * p.logs_per_gb;
    let total = api + ingest + kinesis + raw + lake + staged + logs;
    // Loads keep a Serverless workgroup busy for their seconds, billed per second with a
    // 60-second minimum each time it wakes: at one load a minute or more it never sleeps.
    let busy_hours = (loads * a.redshift_seconds_per_load.max(60.0)).min(EVENTS / s.rate) / 3600.0;
    let redshift = busy_hours * a.redshift_base_rpus * p.redshift_per_rpu_hour;
    let storage_per_month = EVENTS * line * m.compression_ratio / GB * p.s3_per_gb_month;
    Row {
        rate: s.rate,
        event_bytes: s.event_bytes,
        per_request: s.per_request,
        api,
        ingest,
        mode,
        kinesis,
        kinesis_other,
        shards,
        records_per_request,
        raw,
        lake,
        staged,
        logs,
        total,
        redshift,
        storage_per_month,
    }
}

/// How one function's memory size follows from the measurements: the smallest size that holds
/// its measured peak with headroom and does its largest unit of CPU work within its budget, at
/// the share of a core that memory buys ([`cpu_share`]). Smallest because every caudal
/// function waits on I/O for most of its billed time: below one vCPU the CPU part of the bill
/// is the same at any size (half the share, twice the seconds), while the waits cost in
/// proportion to memory.
#[derive(Debug, Clone, Serialize)]
pub struct Sizing {
    /// The function (its binary name).
    pub function: &'static str,
    /// Its measured peak resident memory (MB).
    pub peak_mb: f64,
    /// What its CPU budget covers.
    pub work: &'static str,
    /// That work's CPU time on a full core (ms).
    pub cpu_ms: f64,
    /// The time it may take (ms).
    pub budget_ms: f64,
    /// The size that follows (MB): a multiple of [`MEMORY_STEP_MB`], at least Lambda's 128.
    pub derived_mb: f64,
    /// The template's size (`assumptions.memory_mb`).
    pub template_mb: f64,
}

/// Memory sizes are derived in steps of this (Lambda takes any MB from 128 to 10,240).
pub const MEMORY_STEP_MB: f64 = 64.0;

/// Lambda's smallest memory size.
const MIN_MEMORY_MB: f64 = 128.0;

/// Lambda's Kinesis batch payload limit, as record data: the payload carries it base64-encoded.
const BATCH_RECORD_KB: f64 = LAMBDA_PAYLOAD_BYTES * 3.0 / 4.0 / 1024.0;

fn sizing(
    function: &'static str,
    peak_mb: f64,
    work: &'static str,
    cpu_ms: f64,
    budget_ms: f64,
    headroom: f64,
    template_mb: f64,
) -> Sizing {
    let for_memory = peak_mb * headroom;
    let for_cpu = cpu_ms / budget_ms.max(f64::MIN_POSITIVE) * MB_PER_VCPU;
    let need = for_memory.max(for_cpu).max(MIN_MEMORY_MB);
    Sizing {
        function,
        peak_mb,
        work,
        cpu_ms,
        budget_ms,
        derived_mb: (need / MEMORY_STEP_MB).ceil() * MEMORY_STEP_MB,
        template_mb,
    }
}

/// The three functions' memory sizes from the measurements and the budgets in `assumptions`.
pub fn memory_sizes(p: &Prices, m: &Measured) -> [Sizing; 3] {
    let a = &p.assumptions;
    let max_body_kb = caudal_core::limits::DEFAULT_MAX_BODY_BYTES as f64 / 1024.0;
    [
        sizing(
            "ingest-api",
            m.ingest_peak_mb,
            "the largest body (MAX_BODY_BYTES)",
            max_body_kb * m.ingest_us_per_kb / 1000.0,
            a.ingest_cpu_budget_ms,
            a.memory_headroom,
            a.memory_mb[0],
        ),
        sizing(
            "raw-writer",
            m.raw_writer_peak_mb,
            "a full 6 MB batch",
            BATCH_RECORD_KB * m.raw_writer_us_per_kb / 1000.0,
            a.raw_writer_cpu_budget_ms,
            a.memory_headroom,
            a.memory_mb[1],
        ),
        sizing(
            "rules-loader",
            m.loader_peak_mb,
            "1 s of traffic at the design rate, over LoaderConcurrency loaders",
            a.loader_design_rate * m.loader_us_per_event / 1000.0,
            1000.0 * a.loader_concurrency * a.loader_cpu_busy,
            a.memory_headroom,
            a.memory_mb[2],
        ),
    ]
}

/// The table's scenarios: 10 / 1,000 / 10,000 events/s × 0.5 / 1 / 4 KB × 1 / 10 / 100 per
/// request.
pub fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    for rate in [10.0, 1_000.0, 10_000.0] {
        for event_bytes in [512.0, 1024.0, 4096.0] {
            for per_request in [1.0, 10.0, 100.0] {
                out.push(Scenario {
                    rate,
                    event_bytes,
                    per_request,
                });
            }
        }
    }
    out
}

/// Why the inputs cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    /// A file cannot be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, CostError> {
    let err = |reason: String| CostError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))
}

/// Read the price table and the measurements.
pub fn inputs(prices: &Path, measured: &Path) -> Result<(Prices, Measured), CostError> {
    Ok((read(prices)?, read(measured)?))
}

fn usd(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.2}")
    } else if v >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

/// The table as Markdown (what docs/COST.md holds between its markers).
pub fn markdown(p: &Prices, m: &Measured, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "USD per million events, prices of {} ({}), measurements of {} ({}).\n",
        p.date, p.region, m.date, m.machine
    );
    out.push_str(
        "| events/s | event | per request | API | ingest | Kinesis (cheaper mode) | other mode | \
         raw-writer + S3 | lake | staged | logs | **total** | Redshift apart | S3 storage / month |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let mode = match r.mode {
            Mode::OnDemand => "on-demand".to_owned(),
            Mode::Provisioned => format!("provisioned, {} shard(s)", r.shards),
        };
        let _ = writeln!(
            out,
            "| {} | {} KB | {} | {} | {} | {} {mode} | {} | {} | {} | {} | {} | **{}** | {} | {} |",
            r.rate,
            r.event_bytes / 1024.0,
            r.per_request,
            usd(r.api),
            usd(r.ingest),
            usd(r.kinesis),
            usd(r.kinesis_other),
            usd(r.raw),
            usd(r.lake),
            usd(r.staged),
            usd(r.logs),
            usd(r.total),
            usd(r.redshift),
            usd(r.storage_per_month),
        );
    }
    out
}

/// The memory derivation as Markdown (what docs/COST.md holds between [`MEMORY_MARKERS`]).
pub fn memory_markdown(p: &Prices, m: &Measured) -> String {
    let a = &p.assumptions;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Measurements of {} ({}); headroom {}× the peak; one vCPU at {MB_PER_VCPU} MB.\n",
        m.date, m.machine, a.memory_headroom
    );
    out.push_str(
        "| function | peak | × headroom | CPU budget covers | CPU on a full core | budget | \
         share it needs | **derived** | template |\n",
    );
    out.push_str("|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
    for s in memory_sizes(p, m) {
        let _ = writeln!(
            out,
            "| {} | {:.1} MB | {:.0} MB | {} | {:.1} ms | {:.0} ms | {:.3} vCPU ({:.0} MB) | **{} MB** | {} MB |",
            s.function,
            s.peak_mb,
            s.peak_mb * a.memory_headroom,
            s.work,
            s.cpu_ms,
            s.budget_ms,
            s.cpu_ms / s.budget_ms,
            s.cpu_ms / s.budget_ms * MB_PER_VCPU,
            s.derived_mb,
            s.template_mb,
        );
    }
    out
}

/// The markers around the cost table in docs/COST.md.
pub const TABLE_MARKERS: (&str, &str) = ("<!-- cost-table -->\n", "<!-- /cost-table -->");

/// The markers around the memory derivation in docs/COST.md.
pub const MEMORY_MARKERS: (&str, &str) = ("<!-- memory-table -->\n", "<!-- /memory-table -->");

/// `doc` with the text between `markers` replaced by `table`, or `None` without them.
pub fn replace_table(doc: &str, markers: (&str, &str), table: &str) -> Option<String> {
    let (open, close) = markers;
    let start = doc.find(open)? + open.len();
    let end = start + doc[start..].find(close)?;
    Some(format!("{}{table}{}", &doc[..start], &doc[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn shipped() -> (Prices, Measured) {
        inputs(
            &repo().join("cost/prices.yaml"),
            &repo().join("cost/measured.yaml"),
        )
        .unwrap()
    }

    fn at(rate: f64, kb: f64, per_request: f64) -> Row {
        let (p, m) = shipped();
        row(
            &p,
            &m,
            Scenario {
                rate,
                event_bytes: kb * 1024.0,
                per_request,
            },
        )
    }

    #[test]
    fn the_target_holds_at_1000_per_second_in_batches_of_100() {
        let r = at(1000.0, 1.0, 100.0);
        assert!(r.total <= 0.10, "{r:?}");
        assert_eq!(r.mode, Mode::Provisioned);
        assert_eq!(
            r.records_per_request, 6.0,
            "128 KB of envelopes in 25 KB records"
        );
    }

    #[test]
    fn stages_scale_the_way_the_services_bill() {
        // Per request: ten times fewer requests, ten times less API.
        let one = at(1000.0, 1.0, 1.0);
        let ten = at(1000.0, 1.0, 10.0);
        assert!((one.api / ten.api - 10.0).abs() < 1e-9);
        // A single event per request is one record: no packing.
        assert_eq!(one.records_per_request, 1.0);
        // At 10 events/s a stream's hours dominate: the fixed cost per million is large.
        let slow = at(10.0, 1.0, 100.0);
        assert!(slow.kinesis > 10.0 * at(10_000.0, 1.0, 100.0).kinesis);
        // On-demand rounds every record up to 1 KB: 0.5 KB single events pay for 1 KB.
        let (p, m) = shipped();
        let half = row(
            &p,
            &m,
            Scenario {
                rate: 10_000.0,
                event_bytes: 256.0,
                per_request: 1.0,
            },
        );
        let od = if half.mode == Mode::OnDemand {
            half.kinesis
        } else {
            half.kinesis_other
        };
        let hours = EVENTS / 10_000.0 / 3600.0;
        let data_in = od
            - hours * p.kinesis_od_per_stream_hour
            - EVENTS * (256.0 + p.assumptions.envelope_overhead_bytes) / GB
                * p.kinesis_od_per_gb_out;
        assert!((data_in - EVENTS * 1024.0 / GB * p.kinesis_od_per_gb_in).abs() < 1e-9);
        // The total is the sum of the stages.
        let r = at(1000.0, 4.0, 10.0);
        let sum = r.api + r.ingest + r.kinesis + r.raw + r.lake + r.staged + r.logs;
        assert!((r.total - sum).abs() < 1e-12);
        assert!(r.kinesis <= r.kinesis_other);
    }

    #[test]
    fn docs_cost_md_holds_the_table_of_the_shipped_inputs() {
        let (p, m) = shipped();
        let rows: Vec<Row> = scenarios().into_iter().map(|s| row(&p, &m, s)).collect();
        assert_eq!(rows.len(), 27);
        let table = markdown(&p, &m, &rows);
        let memory = memory_markdown(&p, &m);
        let doc = std::fs::read_to_string(repo().join("docs/COST.md")).unwrap();
        let stale =
            "docs/COST.md is out of date: run `cargo run -p caudal -- cost --update docs/COST.md`";
        assert_eq!(
            replace_table(&doc, TABLE_MARKERS, &table).as_deref(),
            Some(doc.as_str()),
            "{stale}"
        );
        assert_eq!(
            replace_table(&doc, MEMORY_MARKERS, &memory).as_deref(),
            Some(doc.as_str()),
            "{stale}"
        );
    }

    /// The template's memory sizes are the derived ones, and the model computes with them.
    #[test]
    fn the_template_memory_sizes_follow_from_the_measurements() {
        let (p, m) = shipped();
        let names = caudal_local::stack::template::LocalNames::local("http://127.0.0.1:4566");
        // The template needs one Redshift target; neither changes a function's memory.
        let target = [("RedshiftWorkgroup".to_owned(), "caudal".to_owned())];
        let model = caudal_local::stack::template::Model::load(
            &repo().join("template.yaml"),
            &target,
            &names,
        )
        .unwrap();
        for (i, s) in memory_sizes(&p, &m).iter().enumerate() {
            let f = model.function_by_binary(s.function).unwrap();
            assert_eq!(
                f64::from(f.memory_mb),
                s.derived_mb,
                "{}: template.yaml MemorySize is not the derived size ({s:?}); \
                 see docs/COST.md, Memory sizes",
                s.function
            );
            assert_eq!(
                p.assumptions.memory_mb[i], s.derived_mb,
                "cost/prices.yaml memory_mb"
            );
        }
        assert_eq!(
            model
                .parameters
                .get("LoaderConcurrency")
                .map(String::as_str),
            Some(format!("{}", p.assumptions.loader_concurrency).as_str()),
            "cost/prices.yaml loader_concurrency is the template's default"
        );
    }

    #[test]
    fn sizes_are_the_smallest_that_hold_the_peak_and_meet_the_cpu_budget() {
        // Memory-bound: 100 MB × 2 = 200 → 256.
        let s = sizing("f", 100.0, "w", 1.0, 1000.0, 2.0, 0.0);
        assert_eq!(s.derived_mb, 256.0);
        // CPU-bound: 10 ms of work in 20 ms needs half a vCPU, 884.5 MB → 896.
        let s = sizing("f", 10.0, "w", 10.0, 20.0, 2.0, 0.0);
        assert_eq!(s.derived_mb, 896.0);
        // On the step: exactly 192 MB stays 192.
        assert_eq!(sizing("f", 96.0, "w", 0.0, 1.0, 2.0, 0.0).derived_mb, 192.0);
        // Never below Lambda's 128 MB.
        assert_eq!(sizing("f", 1.0, "w", 0.0, 1.0, 2.0, 0.0).derived_mb, 128.0);
    }

    #[test]
    fn cpu_work_takes_longer_at_a_smaller_share_and_waits_cost_by_memory() {
        let (p, _) = shipped();
        assert_eq!(cpu_share(MB_PER_VCPU), 1.0);
        assert_eq!(
            cpu_share(4.0 * MB_PER_VCPU),
            1.0,
            "one thread: no gain past one vCPU"
        );
        assert!((cpu_share(MB_PER_VCPU / 4.0) - 0.25).abs() < 1e-12);
        // Below one vCPU, CPU work costs the same at any size; a wait costs by memory.
        let gb_s = |wait: f64, cpu: f64, mb: f64| {
            (lambda(&p, 1.0, wait, cpu, mb) - p.lambda_per_million_requests / EVENTS)
                / p.lambda_per_gb_second
        };
        assert!((gb_s(0.0, 1.0, 256.0) - gb_s(0.0, 1.0, 512.0)).abs() < 1e-9);
        assert!((gb_s(0.0, 1.0, 256.0) - MB_PER_VCPU / 1024.0).abs() < 1e-9);
        assert!((gb_s(1.0, 0.0, 512.0) - 2.0 * gb_s(1.0, 0.0, 256.0)).abs() < 1e-9);
    }

    #[test]
    fn the_table_is_replaced_between_its_markers_only() {
        let doc = "intro\n<!-- cost-table -->\nold\n<!-- /cost-table -->\nafter\n";
        assert_eq!(
            replace_table(doc, TABLE_MARKERS, "new\n").unwrap(),
            "intro\n<!-- cost-table -->\nnew\n<!-- /cost-table -->\nafter\n"
        );
        assert_eq!(replace_table(doc, MEMORY_MARKERS, "x"), None);
        assert_eq!(replace_table("no markers", TABLE_MARKERS, "x"), None);
        assert_eq!(
            replace_table("<!-- cost-table -->\nopen only", TABLE_MARKERS, "x"),
            None
        );
    }
}
