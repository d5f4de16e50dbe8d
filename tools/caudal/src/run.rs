//! Long operations: a progress bar on stderr, Ctrl-C that stops after the current step instead
//! of in the middle of one, and a checkpoint file so running the same command again resumes
//! after the last object done.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

/// Set when the user pressed Ctrl-C (or the process got SIGTERM).
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Watches for Ctrl-C from now on.
    pub fn watch() -> Interrupt {
        let i = Interrupt::default();
        let flag = i.0.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\ninterrupted: finishing the current step, then stopping (run the same command again to resume)"
                );
                flag.store(true, Ordering::SeqCst);
            }
        });
        i
    }

    /// Whether to stop now.
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Stop (tests).
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A progress bar over `len` items (hidden when stderr is not a terminal).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar
}

/// Where an operation records how far it got: the last key done, in key order.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
    /// The last key done by an earlier run of the same command (resume after it).
    pub after: Option<String>,
}

impl Checkpoint {
    /// The checkpoint of operation `name` (a file name: the command and a hash of what it was
    /// asked) in `dir`, with what an earlier run left.
    pub fn open(dir: &Path, name: &str) -> Checkpoint {
        let path = dir.join(format!("{name}.checkpoint"));
        let after = std::fs::read_to_string(&path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        Checkpoint { path, after }
    }

    /// Records `key` as the last one done.
    pub fn save(&self, key: &str) -> std::io::Result<()> {
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&self.path, key)
    }

    /// The operation finished: nothing to resume.
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A stable name for an operation and its arguments (the checkpoint's file name).
pub fn operation_name(command: &str, args: &[&str]) -> String {
    // FNV-1a: stable across runs and builds, unlike the std hasher's seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for a in args {
        for b in a.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{command}-{h:016x}")
}

/// The default checkpoint folder: `$XDG_STATE_HOME/caudal`, else `~/.local/state/caudal`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("caudal");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/caudal")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_resume_after_the_last_key_and_clear() {
        let dir = std::env::temp_dir().join(format!("caudal-ckpt-{}", std::process::id()));
        let name = operation_name("replay", &["raw/dt=2026-12-03/", "stack-a"]);
        assert_eq!(
            name,
            operation_name("replay", &["raw/dt=2026-12-03/", "stack-a"])
        );
        assert_ne!(
            name,
            operation_name("replay", &["raw/dt=2026-12-03/", "stack-b"])
        );
        assert_ne!(
            operation_name("replay", &["ab", "c"]),
            operation_name("replay", &["a", "bc"])
        );
        let c = Checkpoint::open(&dir, &name);
        assert_eq!(c.after, None);
        c.save("raw/k1").unwrap();
        assert_eq!(
            Checkpoint::open(&dir, &name).after.as_deref(),
            Some("raw/k1")
        );
        c.clear();
        assert_eq!(Checkpoint::open(&dir, &name).after, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
