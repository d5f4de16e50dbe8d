//! Start-up: each function's bootstrap from process start to its first request for work
//! (`GET /2018-06-01/runtime/invocation/next`, what Lambda reports as Init Duration) against a
//! minimal runtime API, next to the floor of a hello-world `lambda_runtime` binary
//! (`hello-lambda`), with criterion; plus each process's resident memory at that moment.
//!
//! `make bench` builds the three functions' release binaries first (native, not the arm64
//! deploy artifact; `scripts/smoke-artifacts.sh` times those under qemu). Prints init time
//! per function and its ratio to the floor against the target (≤ 2×), and the init `VmHWM`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::Criterion;
use testkit::bench::{mean_ns, report};

/// Environment variables: (name, value).
type Vars = &'static [(&'static str, &'static str)];

/// Each function with the configuration its cold start requires (names as in template.yaml).
const FUNCTIONS: [(&str, Vars); 3] = [
    (
        "ingest-api",
        &[
            ("STREAM_NAME", "caudal-events"),
            ("SPILL_BUCKET", "caudal-raw"),
        ],
    ),
    (
        "raw-writer",
        &[
            ("RAW_BUCKET", "caudal-raw"),
            ("FIREHOSE_STREAM_NAME", "caudal-lake"),
            (
                "LAKE_RETRY_QUEUE_URL",
                "https://sqs.us-east-1.amazonaws.com/123456789012/lake-retry",
            ),
        ],
    ),
    (
        "rules-loader",
        &[
            ("STAGING_BUCKET", "caudal-staging"),
            ("COPY_ROLE_ARN", "arn:aws:iam::123456789012:role/copy"),
            ("REDSHIFT_WORKGROUP", "caudal"),
            ("REDSHIFT_DATABASE", "dev"),
        ],
    ),
];

fn release_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || testkit::bench::workspace_root().join("target"),
        PathBuf::from,
    );
    target.join("release").join(name)
}

/// One cold start: the time until the first `/next`, and `VmHWM` (KiB) then.
fn start_once(bin: &Path, env: &[(&str, &str)]) -> Result<(Duration, u64), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "startup-bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let result = loop {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let took = started.elapsed();
                let hwm = testkit::bench::vm_hwm_kib(Some(child.id()));
                let mut head = [0u8; 64];
                let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                let n = conn.read(&mut head).unwrap_or(0);
                let _ = conn
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n");
                break if head[..n].starts_with(b"GET /2018-06-01/runtime/invocation/next") {
                    Ok((took, hwm))
                } else {
                    Err(format!(
                        "first request was {:?}",
                        String::from_utf8_lossy(&head[..n])
                    ))
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut s) = child.stderr.take() {
                        let _ = s.read_to_string(&mut err);
                    }
                    break Err(format!("exited during init ({status}): {err}"));
                }
                if started.elapsed() > Duration::from_secs(10) {
                    break Err("no /next within 10 s".to_owned());
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn main() {
    let mut c = Criterion::default()
        .output_directory(&testkit::bench::criterion_dir())
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let hello = PathBuf::from(env!("CARGO_BIN_EXE_hello-lambda"));
    let mut runs: Vec<(&str, PathBuf, Vars)> = vec![("hello-lambda", hello, &[])];
    for (name, env) in FUNCTIONS {
        let bin = release_binary(name);
        if bin.is_file() {
            runs.push((name, bin, env));
        } else {
            eprintln!(
                "{} missing: cargo build --release -p {name} (make bench does)",
                bin.display()
            );
        }
    }
    let mut memory = Vec::new();
    let mut g = c.benchmark_group("startup");
    for (name, bin, env) in &runs {
        // Fail loudly before measuring: a function that cannot start has no start-up time.
        match start_once(bin, env) {
            Ok((_, hwm)) => memory.push((*name, hwm)),
            Err(e) => panic!("{name}: {e}"),
        }
        g.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| start_once(bin, env).map_or(Duration::ZERO, |(d, _)| d))
                    .sum()
            });
        });
    }
    g.finish();
    c.final_summary();

    println!("\nstart-up to the first /next, against hello-lambda:");
    let Some(floor) = mean_ns("startup", "hello-lambda") else {
        return;
    };
    println!("hello-lambda: {:.1} ms", floor / 1e6);
    for (name, hwm) in &memory {
        if *name == "hello-lambda" {
            println!("  init memory hello-lambda: {:.1} MB", *hwm as f64 / 1024.0);
            continue;
        }
        if let Some(ns) = mean_ns("startup", name) {
            println!(
                "{}",
                report(
                    &format!("{name} init / hello ({:.1} ms)", ns / 1e6),
                    ns / floor,
                    "×",
                    2.0,
                    false,
                )
            );
            println!("  init memory {name}: {:.1} MB", *hwm as f64 / 1024.0);
        }
    }
}
