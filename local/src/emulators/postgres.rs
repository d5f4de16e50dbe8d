//! A throw-away PostgreSQL 15 server for the local stack and its tests.
//!
//! [`Postgres::start`] initialises a data directory (once), starts the server on a free loopback
//! port and creates the `dev` database that stands in for the Redshift database. Dropping the
//! handle stops the server (`pg_ctl stop -m fast`), so no postgres outlives the process that
//! started it — unless that process is killed with SIGKILL.
//!
//! PostgreSQL refuses to run as root. When this process is root, `initdb` and `pg_ctl` run
//! through `setpriv` as the unprivileged `postgres` user (present wherever the Debian server
//! package is installed) or, failing that, a `caudal-pg` system user created with `useradd`.
//! That user must be able to reach the data directory: use a directory under `/tmp`, not
//! under `/root`.
//!
//! The server runs with `fsync=off`: a crash of the machine can lose local data, which is fine
//! for a development stack and makes loads several times faster.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The database the local stack uses in place of the Redshift database.
pub const DATABASE: &str = "dev";
/// The superuser created by `initdb` (trust authentication on loopback only).
pub const USER: &str = "caudal";
/// The fallback unprivileged account created when running as root without a `postgres` user.
const FALLBACK_OS_USER: &str = "caudal-pg";

/// Why the local PostgreSQL could not be started or stopped. All variants are permanent for
/// the call that returned them: retrying without changing the machine gives the same result,
/// except [`PostgresError::Start`], which can be a lost race for the chosen port.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// No `initdb`/`pg_ctl` found via `pg_config --bindir`, /usr/lib/postgresql/15/bin or PATH.
    #[error("PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql-15")]
    BinariesNotFound,
    /// A filesystem or process-spawn error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A PostgreSQL tool exited unsuccessfully.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line (program and arguments).
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (and stdout), trimmed.
        stderr: String,
    },
    /// Running as root and no unprivileged user could be found or created.
    #[error("running as root and no unprivileged user to run postgres as: {0}")]
    NoUnprivilegedUser(String),
    /// The unprivileged user cannot use the data directory (e.g. it is under /root).
    #[error(
        "user {user} cannot write {dir}: choose a data directory it can reach (e.g. under /tmp)"
    )]
    DirNotAccessible {
        /// The OS user postgres runs as.
        user: String,
        /// The data directory.
        dir: PathBuf,
    },
    /// The server did not start on any of the ports tried; the last error is kept.
    #[error("postgres did not start after {attempts} attempts: {last}")]
    Start {
        /// How many ports were tried.
        attempts: u32,
        /// The last failure.
        last: Box<PostgresError>,
    },
}

impl PostgresError {
    /// Whether trying again can help (only a lost port race can).
    pub fn is_retryable(&self) -> bool {
        matches!(self, PostgresError::Start { .. })
    }
}

/// Result alias for this module.
pub type Result<T, E = PostgresError> = std::result::Result<T, E>;

/// The OS identity postgres runs as when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// A running PostgreSQL server; dropping it stops the server.
#[derive(Debug)]
pub struct Postgres {
    data_dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
    running: bool,
}

impl Postgres {
    /// Initialises `dir` as a data directory if needed, starts the server on a free loopback
    /// port and makes sure the [`DATABASE`] database exists. Blocking: async callers should
    /// use `tokio::task::spawn_blocking`.
    pub fn start(dir: &Path) -> Result<Postgres> {
        let bindir = find_bindir().ok_or(PostgresError::BinariesNotFound)?;
        let run_as = if running_as_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        std::fs::create_dir_all(dir).map_err(|source| PostgresError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let data_dir = dir.canonicalize().map_err(|source| PostgresError::Io {
            what: format!("resolving {}", dir.display()),
            source,
        })?;
        if let Some(user) = &run_as {
            prepare_dir_for(user, &data_dir)?;
        }
        let mut pg = Postgres {
            data_dir,
            bindir,
            port: 0,
            run_as,
            running: false,
        };
        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        const ATTEMPTS: u32 = 3;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            pg.port = free_port()?;
            match pg.pg_ctl_start() {
                Ok(()) => {
                    pg.running = true;
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(last) = last {
            return Err(PostgresError::Start {
                attempts: ATTEMPTS,
                last: Box::new(last),
            });
        }
        pg.ensure_database()?;
        tracing::info!(port = pg.port, dir = %pg.data_dir.display(), "postgres_started");
        Ok(pg)
    }

    /// The TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A libpq/tokio-postgres key-value connection string for the [`DATABASE`] database.
    pub fn connection_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname={DATABASE}",
            self.port
        )
    }

    /// The same as [`Postgres::connection_string`], as a tokio-postgres config.
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(USER)
            .dbname(DATABASE);
        config
    }

    /// A `psql` command line a human can paste to look at the data.
    pub fn psql_command(&self) -> String {
        format!(
            "{} -h 127.0.0.1 -p {} -U {USER} {DATABASE}",
            self.bindir.join("psql").display(),
            self.port
        )
    }

    /// Stops the server (`pg_ctl stop -m fast`, waiting until it is down). Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let data = self.data_dir.display().to_string();
        self.run_tool(
            "pg_ctl",
            &["stop", "-D", &data, "-m", "fast", "-w", "-t", "30"],
        )?;
        self.running = false;
        tracing::info!(port = self.port, "postgres_stopped");
        Ok(())
    }

    fn initdb(&self) -> Result<()> {
        let data = self.data_dir.display().to_string();
        self.run_tool(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                // The data directory is disposable; skipping the final fsync saves seconds.
                "--no-sync",
            ],
        )
        .map(|_| ())
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let data = self.data_dir.display().to_string();
        let log = self.data_dir.join("server.log").display().to_string();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port, data
        );
        self.run_tool(
            "pg_ctl",
            &[
                "start", "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts,
            ],
        )
        .map(|_| ())
    }

    fn ensure_database(&self) -> Result<()> {
        let port = self.port.to_string();
        let conn = ["-h", "127.0.0.1", "-p", &port, "-U", USER];
        let mut args: Vec<&str> = conn.to_vec();
        let probe = format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'");
        args.extend(["-XtAc", &probe, "postgres"]);
        let out = self.run_client("psql", &args)?;
        if String::from_utf8_lossy(&out.stdout).trim() != "1" {
            let mut args: Vec<&str> = conn.to_vec();
            args.push(DATABASE);
            self.run_client("createdb", &args)?;
        }
        Ok(())
    }

    /// Runs a server tool (initdb, pg_ctl) as the unprivileged user when we are root.
    fn run_tool(&self, tool: &str, args: &[&str]) -> Result<Output> {
        let program = self.bindir.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .arg("--clear-groups")
                    .arg(&program);
                cmd
            }
            None => Command::new(&program),
        };
        cmd.args(args).current_dir(&self.data_dir);
        run(cmd, &format!("{} {}", program.display(), args.join(" ")))
    }

    /// Runs a client tool (psql, createdb) as ourselves: trust auth over loopback TCP.
    fn run_client(&self, tool: &str, args: &[&str]) -> Result<Output> {
        let program = self.bindir.join(tool);
        let mut cmd = Command::new(&program);
        cmd.args(args);
        run(cmd, &format!("{} {}", program.display(), args.join(" ")))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!(%error, port = self.port, "postgres_stop_failed");
        }
    }
}

fn run(mut cmd: Command, display: &str) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PostgresError::Io {
            what: format!("running {display}"),
            source,
        })?;
    if out.status.success() {
        return Ok(out);
    }
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        text.push_str(" | ");
        text.push_str(stdout.trim());
    }
    Err(PostgresError::Command {
        command: display.to_string(),
        status: out.status.to_string(),
        stderr: text,
    })
}

/// `pg_config --bindir`, then the Debian PostgreSQL 15 location, then PATH.
fn find_bindir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&dir) {
            return Some(dir);
        }
    }
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    if has_tools(&debian) {
        return Some(debian);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| has_tools(dir))
}

fn running_as_root() -> bool {
    // /proc/self belongs to the effective uid of the process reading it.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let mut fields = line.trim().split(':');
    let name = fields.next()?.to_string();
    let _password = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    (uid != 0).then_some(RunAs { name, uid, gid })
}

fn unprivileged_user() -> Result<RunAs> {
    if let Some(user) = lookup_user("postgres").or_else(|| lookup_user(FALLBACK_OS_USER)) {
        return Ok(user);
    }
    let mut cmd = Command::new("useradd");
    cmd.args([
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        FALLBACK_OS_USER,
    ]);
    run(cmd, &format!("useradd {FALLBACK_OS_USER}"))
        .map_err(|e| PostgresError::NoUnprivilegedUser(e.to_string()))?;
    lookup_user(FALLBACK_OS_USER).ok_or_else(|| {
        PostgresError::NoUnprivilegedUser(format!("{FALLBACK_OS_USER} not found after useradd"))
    })
}

/// Hands the data directory to `user` and checks that user can actually reach it.
fn prepare_dir_for(user: &RunAs, dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|source| PostgresError::Io {
        what: format!("reading {}", dir.display()),
        source,
    })?;
    if meta.uid() != user.uid {
        let mut cmd = Command::new("chown");
        cmd.arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(dir);
        run(cmd, &format!("chown -R {} {}", user.name, dir.display()))?;
    }
    let mut probe = Command::new("setpriv");
    probe
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--clear-groups")
        .args(["test", "-w"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match probe.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(_) => Err(PostgresError::DirNotAccessible {
            user: user.name.clone(),
            dir: dir.to_path_buf(),
        }),
        Err(source) => Err(PostgresError::Io {
            what: "running setpriv".into(),
            source,
        }),
    }
}

/// A port that was free a moment ago (the OS picks it; a race with another process is
/// possible, which is why [`Postgres::start`] tries a few).
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| PostgresError::Io {
            what: "binding a probe socket on 127.0.0.1".into(),
            source,
        })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| PostgresError::Io {
            what: "reading the probe socket's port".into(),
            source,
        })
}
