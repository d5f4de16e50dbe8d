//! Deterministic S3 key naming — the one place keys are built.
//!
//! Keys come from the data itself (shard, sequence numbers, arrival hour, load id), never from the
//! wall clock or a random id, so a retried step overwrites its own object instead of adding a
//! copy. Every part that ends up in a key is validated to a URL-safe alphabet.

use time::OffsetDateTime;

/// Prefix of the raw archive (the loader's trigger prefix).
pub const RAW_PREFIX: &str = "raw/";
/// Prefix for records that are not valid envelopes.
pub const RAW_INVALID_PREFIX: &str = "raw-invalid/";
/// Prefix for staging files the loader COPYs from.
pub const STAGING_PREFIX: &str = "staging/";
/// Prefix for rejected records (with reasons).
pub const REJECTED_PREFIX: &str = "rejected/";
/// Prefix of spilled records (ingest-api writes them when Kinesis refuses; [`crate::spill`]).
pub const SPILL_PREFIX: &str = "spill/";

/// Width sequence numbers are zero-padded to, so keys sort in stream order. Kinesis sequence
/// numbers are decimal strings of up to 128 digits in the API model; today they are 56 digits.
pub const SEQ_WIDTH: usize = 64;

/// A key part that is not safe or not well-formed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// A shard id with characters outside `[A-Za-z0-9_-]`.
    #[error("invalid shard id {0:?}")]
    ShardId(String),
    /// A sequence number that is not 1–128 decimal digits.
    #[error("invalid sequence number {0:?}")]
    Sequence(String),
    /// A table name or load id with characters outside `[a-z0-9_-]`.
    #[error("invalid key part {0:?}")]
    Part(String),
    /// A key region that is not a region-like name (`[a-z][a-z0-9-]*`, at most 32 bytes).
    #[error("invalid key region {0:?}")]
    Region(String),
}

/// Checks a region named in raw keys ([`BatchId::region`]): an AWS region name's shape
/// ([`crate::config::is_region_name`]), so it cannot add a path segment or hide a `..`.
pub fn check_key_region(region: &str) -> Result<(), KeyError> {
    if crate::config::is_region_name(region) {
        Ok(())
    } else {
        Err(KeyError::Region(region.to_owned()))
    }
}

fn check_shard(shard_id: &str) -> Result<(), KeyError> {
    let ok = !shard_id.is_empty()
        && shard_id.len() <= 128
        && shard_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(KeyError::ShardId(shard_id.to_owned()))
    }
}

fn padded_seq(seq: &str) -> Result<String, KeyError> {
    if seq.is_empty() || seq.len() > 128 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(KeyError::Sequence(seq.to_owned()));
    }
    Ok(format!("{seq:0>SEQ_WIDTH$}"))
}

fn check_part(part: &str) -> Result<(), KeyError> {
    let ok = !part.is_empty()
        && part.len() <= 128
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KeyError::Part(part.to_owned()))
    }
}

/// The identity of one raw batch: everything its key is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchId<'a> {
    /// The region whose stream the batch came from, named in the key (`region=<r>/`) by every
    /// region but the warehouse's home region: two regions' streams have the same shard ids
    /// and may hand out the same sequence numbers, and the loader's ledger knows an object by
    /// its key alone. `None` (the home region, and every single-region stack) keeps the keys
    /// caudal always wrote, so turning on a second region renames nothing.
    pub region: Option<&'a str>,
    /// Shard the batch came from.
    pub shard_id: &'a str,
    /// First record's sequence number.
    pub first_seq: &'a str,
    /// Last record's sequence number.
    pub last_seq: &'a str,
    /// First record's approximate arrival time.
    pub first_arrival: OffsetDateTime,
}

/// `<prefix>dt=YYYY-MM-DD/hr=HH/`: the folder of the hour `at` (UTC) under `prefix` (`raw/`,
/// `raw-invalid/`, `spill/`), where every key of that hour starts.
pub fn hour_prefix(prefix: &str, at: OffsetDateTime) -> String {
    let t = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{prefix}dt={:04}-{:02}-{:02}/hr={:02}/",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour()
    )
}

/// `<prefix>dt=YYYY-MM-DD/hr=HH/[region=<r>/]<shard-id>/<first-seq>-<last-seq>.ndjson<suffix>`.
fn batch_key(prefix: &str, b: &BatchId<'_>, suffix: &str) -> Result<String, KeyError> {
    check_shard(b.shard_id)?;
    let region = match b.region {
        Some(r) => {
            check_key_region(r)?;
            format!("region={r}/")
        }
        None => String::new(),
    };
    let first = padded_seq(b.first_seq)?;
    let last = padded_seq(b.last_seq)?;
    Ok(format!(
        "{}{region}{}/{first}-{last}.ndjson{suffix}",
        hour_prefix(prefix, b.first_arrival),
        b.shard_id
    ))
}

/// What a `raw/` or `raw-invalid/` key names ([`raw_key`]'s inverse, but for the arrival
/// time, of which the key keeps the hour only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchKey {
    /// `raw/` or `raw-invalid/`.
    pub prefix: &'static str,
    /// `region=<r>/`, when the key names one.
    pub region: Option<String>,
    /// Shard.
    pub shard_id: String,
    /// First record's sequence number (as padded in the key).
    pub first_seq: String,
    /// Last record's sequence number (as padded in the key).
    pub last_seq: String,
}

/// Parses a batch key (`None` for anything else: spill objects, hand-made keys).
pub fn parse_batch_key(key: &str) -> Option<BatchKey> {
    let (prefix, rest) = [RAW_PREFIX, RAW_INVALID_PREFIX]
        .into_iter()
        .find_map(|p| key.strip_prefix(p).map(|r| (p, r)))?;
    let mut parts: Vec<&str> = rest.split('/').collect();
    let file = parts.pop()?;
    let (dt, hr) = (parts.first()?, parts.get(1)?);
    if !dt.starts_with("dt=") || !hr.starts_with("hr=") {
        return None;
    }
    let (region, shard) = match &parts[2..] {
        [shard] => (None, *shard),
        [region, shard] => (Some(region.strip_prefix("region=")?.to_owned()), *shard),
        _ => return None,
    };
    check_shard(shard).ok()?;
    let (range, _) = file.split_once(".ndjson")?;
    let (first, last) = range.split_once('-')?;
    padded_seq(first).ok()?;
    padded_seq(last).ok()?;
    Some(BatchKey {
        prefix,
        region,
        shard_id: shard.to_owned(),
        first_seq: first.to_owned(),
        last_seq: last.to_owned(),
    })
}

/// Key of the raw object for a batch; `suffix` is the codec suffix (`.gz`, `.zst`).
pub fn raw_key(b: &BatchId<'_>, suffix: &str) -> Result<String, KeyError> {
    batch_key(RAW_PREFIX, b, suffix)
}

/// Key of the sibling `raw-invalid/` object for a batch.
pub fn raw_invalid_key(b: &BatchId<'_>, suffix: &str) -> Result<String, KeyError> {
    batch_key(RAW_INVALID_PREFIX, b, suffix)
}

/// Key of a spill object: `spill/dt=YYYY-MM-DD/hr=HH/<id as 32 hex>.ndjson`, the hour being
/// when it was spilled. Unlike the other keys it names a fresh id: every spill is a new object
/// (written with `If-None-Match`), and the drain derives deterministic raw keys from the id.
pub fn spill_key(id: crate::spill::SpillId, at: OffsetDateTime) -> String {
    format!("{}{}.ndjson", hour_prefix(SPILL_PREFIX, at), id.hex())
}

/// The id a spill object's key names ([`spill_key`]'s inverse on the id; the date parts are
/// checked for shape only).
pub fn parse_spill_key(key: &str) -> Result<crate::spill::SpillId, crate::spill::SpillError> {
    let bad = || crate::spill::SpillError::Key(key.to_owned());
    let rest = key.strip_prefix(SPILL_PREFIX).ok_or_else(bad)?;
    let mut parts = rest.split('/');
    let (Some(dt), Some(hr), Some(file), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let dt_ok = dt.strip_prefix("dt=").is_some_and(|d| {
        d.len() == 10 && d.split('-').map(|p| p.len()).eq([4, 2, 2]) && d.split('-').all(digits)
    });
    let hr_ok = hr
        .strip_prefix("hr=")
        .is_some_and(|h| h.len() == 2 && digits(h));
    let id = file
        .strip_suffix(".ndjson")
        .and_then(crate::spill::SpillId::from_hex);
    match (dt_ok, hr_ok, id) {
        (true, true, Some(id)) => Ok(id),
        _ => Err(bad()),
    }
}

/// A load id derived from the inputs of a load — where it loads to (`scope`: warehouse,
/// database and schema) and the raw keys with their ETags — so a retried load of the same
/// objects into the same place reuses the same staging paths and the same Data API
/// `ClientToken`, while the same objects loaded into another schema or warehouse (a second
/// deployment sharing the staging bucket, a reference load) are a different load.
pub fn load_id<'a>(scope: &str, objects: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    use sha2::{Digest, Sha256};
    let mut items: Vec<(&str, &str)> = objects.into_iter().collect();
    items.sort_unstable();
    let mut h = Sha256::new();
    h.update(scope.as_bytes());
    h.update([0]);
    for (key, etag) in items {
        h.update(key.as_bytes());
        h.update([0]);
        h.update(etag.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// `staging/<table>/<load-id>/part-NNNN.csv<suffix>`.
pub fn staging_part_key(
    table: &str,
    load_id: &str,
    part: u32,
    suffix: &str,
) -> Result<String, KeyError> {
    check_part(table)?;
    check_part(load_id)?;
    Ok(format!(
        "{STAGING_PREFIX}{table}/{load_id}/part-{part:04}.csv{suffix}"
    ))
}

/// `staging/<table>/<load-id>/manifest.json` — the COPY manifest listing the parts.
pub fn staging_manifest_key(table: &str, load_id: &str) -> Result<String, KeyError> {
    check_part(table)?;
    check_part(load_id)?;
    Ok(format!("{STAGING_PREFIX}{table}/{load_id}/manifest.json"))
}

/// `staging/load-descriptors/<load-id>.json` — what one load submits (its SQL and counts),
/// written after its staging files so a retried load re-submits byte-identical SQL. The `-` in
/// the folder name keeps it apart from every table folder (table names are identifiers).
pub fn load_descriptor_key(load_id: &str) -> Result<String, KeyError> {
    check_part(load_id)?;
    Ok(format!("{STAGING_PREFIX}load-descriptors/{load_id}.json"))
}

/// `rejected/<load-id>/rejects.ndjson<suffix>` — rejected records of one load, with reasons.
pub fn rejected_key(load_id: &str, suffix: &str) -> Result<String, KeyError> {
    check_part(load_id)?;
    Ok(format!("{REJECTED_PREFIX}{load_id}/rejects.ndjson{suffix}"))
}

/// Decode an S3 event notification key: URL-encoded, with `+` for a space (bytes that are not
/// UTF-8 become U+FFFD).
pub fn decode_notification_key(key: &str) -> String {
    String::from_utf8_lossy(&form_bytes(key)).into_owned()
}

/// Decode one part of an `application/x-www-form-urlencoded` text (a query string's name or
/// value): `+` is a space, then percent escapes; `None` when the bytes are not UTF-8.
pub fn form_decode(part: &str) -> Option<String> {
    String::from_utf8(form_bytes(part)).ok()
}

/// The bytes of a form-encoded part: `+` → space, then `%XX` → its byte.
fn form_bytes(part: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(&part.replace('+', " ")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn batch_keys_parse_back() {
        let t = time::macros::datetime!(2026-12-03 07:20:00 UTC);
        for region in [None, Some("us-west-2")] {
            let b = BatchId {
                region,
                shard_id: "shardId-000000000001",
                first_seq: "4960",
                last_seq: "4999",
                first_arrival: t,
            };
            for (key, prefix) in [
                (raw_key(&b, ".gz").unwrap(), RAW_PREFIX),
                (raw_invalid_key(&b, ".zst").unwrap(), RAW_INVALID_PREFIX),
            ] {
                let p = parse_batch_key(&key).unwrap();
                assert_eq!(p.prefix, prefix);
                assert_eq!(p.region.as_deref(), region);
                assert_eq!(p.shard_id, "shardId-000000000001");
                assert_eq!(p.first_seq.trim_start_matches('0'), "4960");
                assert_eq!(p.last_seq.trim_start_matches('0'), "4999");
            }
        }
        for bad in [
            "raw/x.ndjson.gz",
            "staging/dt=2026-12-03/hr=07/s/1-2.ndjson.gz",
            "raw/dt=2026-12-03/hr=07/s/1-2.csv",
            "raw/dt=2026-12-03/hr=07/s/12.ndjson.gz",
            "raw/dt=2026-12-03/hr=07/s/a-2.ndjson.gz",
            "raw/dt=2026-12-03/hr=07/us-west-2/s/1-2.ndjson.gz",
            "raw/dt=2026-12-03/hr=07/a/b/c/1-2.ndjson.gz",
            "raw/day=2026-12-03/hr=07/s/1-2.ndjson.gz",
            "raw/dt=2026-12-03/h=07/s/1-2.ndjson.gz",
            "raw/dt=2026-12-03/hr=07/s p/1-2.ndjson.gz",
        ] {
            assert_eq!(parse_batch_key(bad), None, "{bad}");
        }
    }

    use super::*;

    #[test]
    fn spill_keys_name_the_hour_and_the_id_and_parse_back() {
        let id = crate::spill::SpillId::new();
        let at = time::macros::datetime!(2026-12-02 23:59:59.999 -01:00);
        let key = spill_key(id, at);
        assert_eq!(
            key,
            format!("spill/dt=2026-12-03/hr=00/{}.ndjson", id.hex())
        );
        assert_eq!(parse_spill_key(&key), Ok(id));
        let hex = id.hex();
        for bad in [
            format!("raw/dt=2026-12-03/hr=00/{hex}.ndjson"),
            format!("spill/dt=2026-12-03/hr=00/{hex}.ndjson.gz"),
            format!("spill/dt=2026-12-03/hr=00/{hex}"),
            format!("spill/dt=2026-12-03/hr=0/{hex}.ndjson"),
            format!("spill/dt=2026-12-3/hr=00/{hex}.ndjson"),
            format!("spill/dt=2026-1203/hr=00/{hex}.ndjson"),
            format!("spill/dt=2026-12-0x/hr=00/{hex}.ndjson"),
            format!("spill/dt=2026-12-03/hr=0x/{hex}.ndjson"),
            format!("spill/dt=2026-12-03/{hex}.ndjson"),
            format!("spill/dt=2026-12-03/hr=00/x/{hex}.ndjson"),
            format!("spill/date=2026-12-03/hr=00/{hex}.ndjson"),
            format!("spill/dt=2026-12-03/hour=00/{hex}.ndjson"),
            "spill/dt=2026-12-03/hr=00/abc.ndjson".to_owned(),
        ] {
            assert!(parse_spill_key(&bad).is_err(), "{bad}");
        }
    }

    fn batch<'a>(first: &'a str, last: &'a str) -> BatchId<'a> {
        BatchId {
            region: None,
            shard_id: "shardId-000000000002",
            first_seq: first,
            last_seq: last,
            first_arrival: time::macros::datetime!(2026-11-05 07:59:59.999 UTC),
        }
    }

    #[test]
    fn raw_key_is_deterministic_and_padded() {
        let k = raw_key(&batch("495", "497"), ".gz").unwrap();
        assert_eq!(
            k,
            format!(
                "raw/dt=2026-11-05/hr=07/shardId-000000000002/{}495-{}497.ndjson.gz",
                "0".repeat(61),
                "0".repeat(61)
            )
        );
        assert_eq!(k, raw_key(&batch("495", "497"), ".gz").unwrap());
        assert!(
            raw_invalid_key(&batch("495", "497"), ".zst")
                .unwrap()
                .starts_with("raw-invalid/dt=2026-11-05/hr=07/")
        );
    }

    #[test]
    fn a_key_region_is_a_segment_of_its_own_and_keeps_the_rest() {
        let home = raw_key(&batch("495", "497"), ".gz").unwrap();
        let mut b = batch("495", "497");
        b.region = Some("eu-west-1");
        let other = raw_key(&b, ".gz").unwrap();
        assert_ne!(home, other);
        assert_eq!(
            other,
            home.replace("hr=07/shardId", "hr=07/region=eu-west-1/shardId")
        );
        assert_eq!(
            raw_invalid_key(&b, ".gz").unwrap(),
            other.replacen("raw/", "raw-invalid/", 1)
        );
    }

    #[test]
    fn key_regions_are_region_names_only() {
        for ok in [
            "us-east-1",
            "eu-west-1",
            "us-gov-west-1",
            "a",
            &"a".repeat(32),
        ] {
            assert_eq!(check_key_region(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "US-EAST-1",
            "1us",
            "-us",
            "us/east",
            "us..1",
            "us_east",
            &"a".repeat(33),
        ] {
            let mut b = batch("1", "2");
            b.region = Some(bad);
            assert_eq!(
                raw_key(&b, ".gz"),
                Err(KeyError::Region(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn raw_keys_sort_in_stream_order() {
        let a = raw_key(&batch("99", "120"), ".gz").unwrap();
        let b = raw_key(&batch("121", "1000"), ".gz").unwrap();
        assert!(a < b);
    }

    #[test]
    fn raw_key_uses_utc_hour_of_first_arrival() {
        let mut b = batch("1", "2");
        b.first_arrival = time::macros::datetime!(2026-11-05 01:30 +02:00);
        assert!(
            raw_key(&b, ".gz")
                .unwrap()
                .starts_with("raw/dt=2026-11-04/hr=23/")
        );
    }

    #[test]
    fn keys_are_url_safe() {
        let k = raw_key(&batch("1", "2"), ".gz").unwrap();
        assert!(
            k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"/=-_.".contains(&c)),
            "{k}"
        );
    }

    #[test]
    fn hostile_parts_are_refused() {
        let mut b = batch("1", "2");
        b.shard_id = "../etc";
        assert!(matches!(raw_key(&b, ".gz"), Err(KeyError::ShardId(_))));
        assert!(matches!(
            raw_key(&batch("12a", "2"), ".gz"),
            Err(KeyError::Sequence(_))
        ));
        assert!(matches!(
            raw_key(&batch("", "2"), ".gz"),
            Err(KeyError::Sequence(_))
        ));
        assert!(matches!(
            staging_part_key("Users; drop", "abc", 1, ".gz"),
            Err(KeyError::Part(_))
        ));
        assert!(matches!(rejected_key("a/b", ".gz"), Err(KeyError::Part(_))));
    }

    #[test]
    fn load_id_is_order_independent_and_etag_sensitive() {
        let a = load_id("wg/dev/s", [("raw/a", "e1"), ("raw/b", "e2")]);
        assert_eq!(a, load_id("wg/dev/s", [("raw/b", "e2"), ("raw/a", "e1")]));
        assert_ne!(a, load_id("wg/dev/s", [("raw/a", "e1"), ("raw/b", "e3")]));
        assert_ne!(a, load_id("wg/dev/t", [("raw/a", "e1"), ("raw/b", "e2")]));
        assert_eq!(a.len(), 32);
        assert_eq!(
            staging_part_key("page_views", &a, 3, ".gz").unwrap(),
            format!("staging/page_views/{a}/part-0003.csv.gz")
        );
        assert_eq!(
            staging_manifest_key("page_views", &a).unwrap(),
            format!("staging/page_views/{a}/manifest.json")
        );
    }

    #[test]
    fn notification_keys_are_decoded() {
        assert_eq!(
            decode_notification_key("raw/dt%3D2026-11-05/a+b%2Bc.gz"),
            "raw/dt=2026-11-05/a b+c.gz"
        );
    }
}
