//! # testkit — emulator processes for tests and the local stack
//!
//! One place that knows how to start `moto_server` (S3, Kinesis, Firehose, SQS emulation) on a
//! free loopback port, wait until it answers, build SDK configuration pointing at it, and kill it
//! when dropped — so no test or local-stack run leaves a process behind, even when it panics.
//!
//! The binary is found through the `MOTO_SERVER` environment variable (the Makefile sets it to the
//! pinned venv's copy), then `moto_server` on `PATH`.
//!
//! [`bench`] holds what the benchmarks share (criterion's results read back, ratio lines, the
//! measurements `caudal cost` uses).

pub mod bench;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why an emulator could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The executable is missing.
    #[error("cannot find {0}: install the dev tools (`make tools`) or set MOTO_SERVER")]
    NotFound(String),
    /// Spawning or probing failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The process started but never answered.
    #[error("{0} did not become ready within {1:?}")]
    NotReady(String, Duration),
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for local processes).
pub fn free_port() -> Result<u16, StartError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|source| StartError::Io {
        what: "binding a free port".into(),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| StartError::Io {
            what: "reading the bound port".into(),
            source,
        })
}

/// Locate an executable: `env_var` if set, else `name` on `PATH`.
pub fn find_executable(env_var: &str, name: &str) -> Result<PathBuf, StartError> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(StartError::NotFound(p.display().to_string()));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| StartError::NotFound(name.to_owned()))
}

/// A running moto server; killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Start moto on a free port, logging to `log` (or discarding output when `None`).
    pub fn start(log: Option<&Path>) -> Result<Moto, StartError> {
        let exe = find_executable("MOTO_SERVER", "moto_server")?;
        let port = free_port()?;
        let (out, err) = match log {
            Some(path) => {
                let f = std::fs::File::create(path).map_err(|source| StartError::Io {
                    what: format!("creating {}", path.display()),
                    source,
                })?;
                let f2 = f.try_clone().map_err(|source| StartError::Io {
                    what: "cloning log handle".into(),
                    source,
                })?;
                (Stdio::from(f), Stdio::from(f2))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| StartError::Io {
                what: format!("spawning {}", exe.display()),
                source,
            })?;
        let mut moto = Moto { child, port };
        moto.wait_ready(Duration::from_secs(30))?;
        Ok(moto)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), StartError> {
        let start = Instant::now();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(StartError::Io {
                    what: "moto_server exited during start-up".into(),
                    source: std::io::Error::other(status.to_string()),
                });
            }
            if http_ok(addr, "/moto-api/") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(StartError::NotReady("moto_server".into(), timeout))
    }

    /// The moto_server process id (the local stack records it to clean up after a crash).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SDK configuration pointing every service at this moto (test credentials, us-east-1).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.endpoint()).await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SDK configuration pointing every service at `endpoint` with static test credentials, in
/// us-east-1. S3 clients built from it still need `force_path_style(true)`.
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    sdk_config_in(endpoint, "us-east-1").await
}

/// The same in `region` (moto keeps each region's streams, queues and delivery streams apart;
/// S3 buckets are one namespace, as in AWS).
pub async fn sdk_config_in(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region.to_owned()))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "testkit",
        ))
        .load()
        .await
}

/// True when a plain HTTP GET of `path` answers with any status line.
fn http_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && buf.starts_with(b"HTTP/1."))
}

/// A rules fix, as an operator would deploy one, applied to the shipped `rules/rules.yaml`
/// text: the purchases' currency is lower-cased instead of upper-cased (a mapping change),
/// page views of `/healthz` are no longer filtered (the filter now matches `/health-check`), and
/// search queries longer than 5 characters are rejected (a schema change). No table's DDL
/// changes. Panics when the shipped file no longer has a line it changes (the fixture must then
/// follow the file).
pub fn rules_fix(shipped: &str) -> String {
    let changes = [
        (
            "currency: {from: /event/currency, then: [upper]}",
            "currency: {from: /event/currency, then: [lower]}",
        ),
        (
            "drop_if: \"event.page.url.contains('/healthz')\"",
            "drop_if: \"event.page.url.contains('/health-check')\"",
        ),
        (
            "query: {type: string, minLength: 1}",
            "query: {type: string, minLength: 1, maxLength: 5}",
        ),
    ];
    let mut text = shipped.to_owned();
    for (from, to) in changes {
        assert!(
            text.contains(from),
            "rules/rules.yaml no longer has {from:?}"
        );
        text = text.replacen(from, to, 1);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable() {
        let p = free_port().unwrap();
        assert!(TcpListener::bind(("127.0.0.1", p)).is_ok());
    }

    #[test]
    fn missing_override_is_reported_by_path() {
        let err = find_executable("TESTKIT_DOES_NOT_EXIST_VAR", "definitely-not-a-binary-xyz")
            .unwrap_err();
        assert!(matches!(err, StartError::NotFound(name) if name == "definitely-not-a-binary-xyz"));
    }

    #[test]
    fn moto_starts_answers_and_stops() {
        // Needs moto_server (the Makefile puts the pinned venv on PATH / sets MOTO_SERVER).
        let moto = Moto::start(None).expect("moto_server must be installed for the test suite");
        let addr = SocketAddr::from(([127, 0, 0, 1], moto.port()));
        assert!(http_ok(addr, "/moto-api/"));
        drop(moto);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!http_ok(addr, "/moto-api/"));
    }
}
