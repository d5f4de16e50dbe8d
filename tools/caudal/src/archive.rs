//! The raw archive: which raw objects a command is about (`--prefix`, or `--from`/`--to` by
//! the hour folders the raw-writer's keys start with), listed from S3 in key order.

use caudal_core::keys::{RAW_PREFIX, hour_prefix};
use time::{Duration, OffsetDateTime};

/// Why the objects could not be listed. Listing is retried by the SDK; what is left is
/// permanent for this run (permissions, a missing bucket) or a bad selection.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The selection is not usable.
    #[error("{0}")]
    Selection(String),
    /// S3 refused or failed.
    #[error("listing s3://{bucket}/{prefix}: {reason}")]
    List {
        /// Bucket.
        bucket: String,
        /// Prefix.
        prefix: String,
        /// Why.
        reason: String,
    },
}

/// Which raw objects: one prefix under `raw/` (or `raw-invalid/`), or the hours from `from` to
/// `to` (inclusive, by the hour the batch's first record arrived, which the key names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Keys starting with this.
    Prefix(String),
    /// Keys of these hours.
    Hours {
        /// First hour.
        from: OffsetDateTime,
        /// Last hour (inclusive).
        to: OffsetDateTime,
    },
}

/// At most this many hours in one `--from`/`--to` selection (a year).
pub const MAX_HOURS: i64 = 24 * 366;

impl Selection {
    /// The selection `--prefix` or `--from`/`--to` describe.
    pub fn new(
        prefix: Option<&str>,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
    ) -> Result<Selection, ArchiveError> {
        match (prefix, from, to) {
            (Some(p), None, None) => {
                if !p.starts_with(RAW_PREFIX) {
                    return Err(ArchiveError::Selection(format!(
                        "--prefix {p:?} must start with {RAW_PREFIX}"
                    )));
                }
                Ok(Selection::Prefix(p.to_owned()))
            }
            (None, Some(from), to) => {
                let to = to.unwrap_or_else(OffsetDateTime::now_utc);
                if to < from {
                    return Err(ArchiveError::Selection(format!(
                        "--to {to} is before --from {from}"
                    )));
                }
                if (to - from).whole_hours() > MAX_HOURS {
                    return Err(ArchiveError::Selection(format!(
                        "--from … --to spans more than {MAX_HOURS} hours; split it"
                    )));
                }
                Ok(Selection::Hours { from, to })
            }
            (None, None, Some(_)) => Err(ArchiveError::Selection("--to needs --from".into())),
            (None, None, None) => Err(ArchiveError::Selection(
                "say which raw objects: --prefix raw/dt=…/ or --from <time> [--to <time>]".into(),
            )),
            (Some(_), _, _) => Err(ArchiveError::Selection(
                "--prefix and --from/--to exclude each other".into(),
            )),
        }
    }

    /// The prefixes to list, in key order, under `root` (`raw/` or `raw-invalid/`).
    pub fn prefixes(&self, root: &str) -> Vec<String> {
        match self {
            Selection::Prefix(p) => vec![format!("{root}{}", &p[RAW_PREFIX.len()..])],
            Selection::Hours { from, to } => hour_prefixes(root, *from, *to),
        }
    }
}

/// A character after every character of the key alphabet (`[A-Za-z0-9/=._-]`): `p + KEY_END`
/// is above every key starting with `p`.
pub const KEY_END: &str = "~";

impl Selection {
    /// The range of keys under `root` the selection covers: (lowest, above the highest).
    pub fn key_range(&self, root: &str) -> (String, String) {
        let p = self.prefixes(root);
        let lo = p.first().cloned().unwrap_or_else(|| root.to_owned());
        let hi = format!("{}{KEY_END}", p.last().map_or(root, String::as_str));
        (lo, hi)
    }
}

/// `root`'s hour folders from the hour of `from` to the hour of `to`, inclusive.
pub fn hour_prefixes(root: &str, from: OffsetDateTime, to: OffsetDateTime) -> Vec<String> {
    let mut out = Vec::new();
    let Some(mut t) = from
        .replace_minute(0)
        .ok()
        .and_then(|t| t.replace_second(0).ok())
    else {
        return out;
    };
    t = t.replace_nanosecond(0).unwrap_or(t);
    while t <= to {
        out.push(hour_prefix(root, t));
        t += Duration::HOUR;
    }
    out
}

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: i64,
    /// Last modified.
    pub modified: Option<OffsetDateTime>,
}

/// Every object under `prefixes` in `bucket`, in key order (prefixes are listed in order).
pub async fn list(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefixes: &[String],
) -> Result<Vec<Listed>, ArchiveError> {
    let mut out = Vec::new();
    for prefix in prefixes {
        let mut token: Option<String> = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| ArchiveError::List {
                    bucket: bucket.to_owned(),
                    prefix: prefix.clone(),
                    reason: caudal_aws::call_error(&e).to_string(),
                })?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(Listed {
                        key: k.to_owned(),
                        size: o.size().unwrap_or(0),
                        modified: o
                            .last_modified()
                            .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok()),
                    });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn hours_cover_from_to_inclusive_by_the_hour() {
        let p = hour_prefixes(
            RAW_PREFIX,
            datetime!(2026-12-02 22:59:59 UTC),
            datetime!(2026-12-03 01:00:00 UTC),
        );
        assert_eq!(
            p,
            [
                "raw/dt=2026-12-02/hr=22/",
                "raw/dt=2026-12-02/hr=23/",
                "raw/dt=2026-12-03/hr=00/",
                "raw/dt=2026-12-03/hr=01/"
            ]
        );
        let one = hour_prefixes(
            "raw-invalid/",
            datetime!(2026-12-03 07:10 UTC),
            datetime!(2026-12-03 07:50 UTC),
        );
        assert_eq!(one, ["raw-invalid/dt=2026-12-03/hr=07/"]);
    }

    #[test]
    fn selections_are_one_prefix_or_a_time_range() {
        let t = datetime!(2026-12-03 07:00 UTC);
        let s = Selection::new(Some("raw/dt=2026-12-03/"), None, None).unwrap();
        assert_eq!(s.prefixes("raw-invalid/"), ["raw-invalid/dt=2026-12-03/"]);
        assert_eq!(s.prefixes(RAW_PREFIX), ["raw/dt=2026-12-03/"]);
        assert!(Selection::new(Some("staging/"), None, None).is_err());
        assert!(Selection::new(Some("raw/"), Some(t), None).is_err());
        assert!(Selection::new(None, None, Some(t)).is_err());
        assert!(Selection::new(None, None, None).is_err());
        assert!(Selection::new(None, Some(t), Some(t - Duration::HOUR)).is_err());
        assert!(Selection::new(None, Some(t - Duration::days(367)), Some(t)).is_err());
        assert_eq!(
            Selection::new(None, Some(t), Some(t))
                .unwrap()
                .prefixes(RAW_PREFIX),
            ["raw/dt=2026-12-03/hr=07/"]
        );
        let hours = Selection::new(None, Some(t), Some(t + Duration::HOUR)).unwrap();
        assert_eq!(
            hours.key_range(RAW_PREFIX),
            (
                "raw/dt=2026-12-03/hr=07/".to_owned(),
                "raw/dt=2026-12-03/hr=08/~".to_owned()
            )
        );
        assert!("raw/dt=2026-12-03/hr=08/shardId-0/9-9.ndjson.gz" < "raw/dt=2026-12-03/hr=08/~");
        assert!("raw/dt=2026-12-03/hr=08/region=us-west-2/x" < "raw/dt=2026-12-03/hr=08/~");
    }
}
