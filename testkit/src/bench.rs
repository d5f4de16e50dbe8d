//! What the benchmarks share (`make bench`): criterion's output directory, the means criterion
//! measured read back from its estimates, one ratio line per figure a target is set for, and
//! the update of `cost/measured.yaml` that feeds `caudal cost`.
//!
//! criterion measures; this module only reads what it wrote
//! (`<dir>/<group>/<function>/new/estimates.json`), so the ratios print after the run and a
//! filtered run (`cargo bench -- <filter>`) prints the ratios of what it ran.

use std::path::{Path, PathBuf};

/// Where criterion writes its results: `$CARGO_TARGET_DIR/criterion`, else `target/criterion`
/// under the workspace root.
pub fn criterion_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("criterion"),
        None => workspace_root().join("target/criterion"),
    }
}

/// The workspace root (this crate sits one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// criterion's mean time per iteration of `group/function` in ns, if it ran.
pub fn mean_ns(group: &str, function: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(function)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// One figure against its target: `name  value unit  (target …: ratio, ok | MISSED)`.
/// `higher_is_better` says which side of the target passes.
pub fn report(name: &str, value: f64, unit: &str, target: f64, higher_is_better: bool) -> String {
    let ratio = value / target;
    let ok = if higher_is_better {
        value >= target
    } else {
        value <= target
    };
    format!(
        "{name:<48} {value:>10.2} {unit:<9} target {} {target} ({ratio:.2} of it): {}",
        if higher_is_better { "≥" } else { "≤" },
        if ok { "ok" } else { "MISSED" }
    )
}

/// Set `key: value` lines of `cost/measured.yaml` (keys must exist), with today's date and
/// this machine, so `caudal cost` computes with what was just measured.
pub fn record_measured(values: &[(&str, f64)]) -> std::io::Result<()> {
    let path = workspace_root().join("cost/measured.yaml");
    let text = std::fs::read_to_string(&path)?;
    let date = time_today();
    let machine = machine();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let key = line.split(':').next().unwrap_or_default().trim();
        let replaced = if key == "date" {
            Some(format!("date: \"{date}\""))
        } else if key == "machine" {
            Some(format!("machine: \"{machine}\""))
        } else {
            values
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(k, v)| format!("{k}: {}", round(*v)))
        };
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    std::fs::write(&path, out)
}

fn round(v: f64) -> String {
    // Three significant decimals are more than a benchmark's noise.
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn time_today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = i64::try_from(secs / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Peak resident memory (`VmHWM`, KiB) of process `pid`, or of this one (`None`); 0 when
/// `/proc` cannot tell.
pub fn vm_hwm_kib(pid: Option<u32>) -> u64 {
    let path = pid.map_or_else(
        || "/proc/self/status".to_owned(),
        |p| format!("/proc/{p}/status"),
    );
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// This process's peak resident memory in MB.
pub fn vm_hwm_mb() -> f64 {
    vm_hwm_kib(None) as f64 / 1024.0
}

/// The argument a benchmark binary runs its peak-memory child under.
pub const RSS_CHILD: &str = "rss-child";

/// Whether this process is the peak-memory child ([`run_rss_child`] started it).
pub fn is_rss_child() -> bool {
    std::env::args().any(|a| a == RSS_CHILD)
}

/// Run this benchmark binary again as the peak-memory child (peak RSS is per process, so it is
/// measured in a fresh one) and print its `peak RSS` lines; its stderr passes through.
pub fn run_rss_child() {
    match std::env::current_exe()
        .and_then(|exe| std::process::Command::new(exe).arg(RSS_CHILD).output())
    {
        Ok(out) => {
            // The child's stdout may carry a handler's EMF lines too; show only the figures.
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if line.starts_with("peak RSS") {
                    println!("{line}");
                }
            }
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Err(e) => eprintln!("could not run the RSS child: {e}"),
    }
}

/// CPU model and count, from /proc/cpuinfo.
pub fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    format!("{cores} × {model}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_say_which_side_of_the_target_passes() {
        assert!(report("x", 1.9, "×", 2.0, false).ends_with("(0.95 of it): ok"));
        assert!(report("x", 2.1, "×", 2.0, false).ends_with("MISSED"));
        assert!(
            report("x", 2.0, "×", 2.0, false).ends_with("ok"),
            "the target itself passes"
        );
        assert!(report("x", 250.0, "MB/s", 200.0, true).ends_with("(1.25 of it): ok"));
        assert!(report("x", 119.0, "MB/s", 200.0, true).ends_with("MISSED"));
        assert!(report("x", 200.0, "MB/s", 200.0, true).ends_with("ok"));
    }

    #[test]
    fn dates_and_rounding() {
        let d = time_today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"), "{d}");
        assert_eq!(round(2.5), "2.5");
        assert_eq!(round(40.0), "40");
        assert_eq!(round(0.123_456), "0.1235");
    }
}
