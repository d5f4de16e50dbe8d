//! Enrichment steps applied to a mapped value before type conversion (`then:` in the rules
//! file). Every step lets `null` through untouched except `default`, so a missing optional field
//! stays NULL instead of failing.

use std::borrow::Cow;
use std::net::IpAddr;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::types::{format_date, parse_timestamp};

/// One enrichment step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Strip leading and trailing white space.
    Trim,
    /// Lower-case (Unicode).
    Lower,
    /// Upper-case (Unicode).
    Upper,
    /// Pseudonymise: hex SHA-256 of `salt ++ value` (strings as is, other values as JSON text).
    Sha256,
    /// RFC 3339 timestamp → UTC calendar date `YYYY-MM-DD`.
    Date,
    /// RFC 3339 timestamp → UTC hour 0–23.
    Hour,
    /// RFC 3339 timestamp → ISO day of week, 1 (Monday) … 7 (Sunday), in UTC.
    DayOfWeek,
    /// IPv4 → /24 network address, IPv6 → /48 network address.
    IpTruncate,
    /// Epoch milliseconds → RFC 3339 UTC timestamp.
    FromEpochMs,
    /// Epoch seconds → RFC 3339 UTC timestamp.
    FromEpochS,
    /// Replace `null` with this constant (the last resort of a coalesce).
    Default(Value),
}

/// The string a text step reads (no copy).
fn text(v: &Value) -> Result<&str, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format!("expects a string, got {other}")),
    }
}

/// Names accepted in `then:`, for messages.
pub(crate) const STEP_NAMES: &str = "trim, lower, upper, sha256, date, hour, day_of_week, ip_truncate, from_epoch_ms, from_epoch_s, {default: <value>}";

impl Step {
    /// Parse one entry of a `then:` list: a bare name or a one-key map (`{default: 0}`).
    pub fn parse(spec: &Value) -> Result<Step, String> {
        match spec {
            Value::String(name) => Ok(match name.as_str() {
                "trim" => Step::Trim,
                "lower" => Step::Lower,
                "upper" => Step::Upper,
                "sha256" => Step::Sha256,
                "date" => Step::Date,
                "hour" => Step::Hour,
                "day_of_week" => Step::DayOfWeek,
                "ip_truncate" => Step::IpTruncate,
                "from_epoch_ms" => Step::FromEpochMs,
                "from_epoch_s" => Step::FromEpochS,
                "default" => return Err("`default` needs a value: write {default: <value>}".into()),
                other => {
                    return Err(format!(
                        "unknown enrichment `{other}` (known: {STEP_NAMES})"
                    ));
                }
            }),
            Value::Object(m) if m.len() == 1 => match m.iter().next() {
                Some((k, v)) if k == "default" => Ok(Step::Default(v.clone())),
                Some((k, _)) => Err(format!("unknown enrichment `{k}` (known: {STEP_NAMES})")),
                None => Err("empty enrichment".into()),
            },
            other => Err(format!(
                "an enrichment must be a name or {{default: <value>}}, got {other}"
            )),
        }
    }

    /// Apply the step.
    pub fn apply<'a>(&self, v: Cow<'a, Value>, salt: &str) -> Result<Cow<'a, Value>, String> {
        if v.is_null() {
            return Ok(match self {
                Step::Default(d) => Cow::Owned(d.clone()),
                _ => v,
            });
        }
        Ok(Cow::Owned(match self {
            Step::Default(_) => return Ok(v),
            Step::Trim => match v.as_ref() {
                Value::String(s) if s.trim().len() == s.len() => return Ok(v),
                other => Value::String(text(other)?.trim().to_owned()),
            },
            Step::Lower => Value::String(text(&v)?.to_lowercase()),
            Step::Upper => Value::String(text(&v)?.to_uppercase()),
            Step::Sha256 => {
                let mut h = Sha256::new();
                h.update(salt.as_bytes());
                match v.as_ref() {
                    Value::String(s) => h.update(s.as_bytes()),
                    other => h.update(other.to_string().as_bytes()),
                }
                Value::String(hex::encode(h.finalize()))
            }
            Step::Date | Step::Hour | Step::DayOfWeek => {
                let t = parse_timestamp(text(&v)?)?.to_offset(time::UtcOffset::UTC);
                match self {
                    Step::Date => Value::String(format_date(t.date())),
                    Step::Hour => Value::from(t.hour()),
                    _ => Value::from(t.weekday().number_from_monday()),
                }
            }
            Step::IpTruncate => {
                let s = text(&v)?;
                let ip: IpAddr = s
                    .trim()
                    .parse()
                    .map_err(|_| format!("{s:?} is not an IP address"))?;
                Value::String(truncate_ip(ip).to_string())
            }
            Step::FromEpochMs | Step::FromEpochS => {
                let n = v
                    .as_i64()
                    .ok_or_else(|| format!("expects an integer epoch, got {v}"))?;
                let nanos = i128::from(n)
                    * if *self == Step::FromEpochMs {
                        1_000_000
                    } else {
                        1_000_000_000
                    };
                let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
                    .map_err(|_| format!("epoch {n} is out of range"))?;
                Value::String(super::types::format_timestamp(t))
            }
        }))
    }
}

/// IPv4 keeps 24 bits, IPv6 48: enough for geography and abuse analysis, not a person.
pub(crate) fn truncate_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return truncate_ip(IpAddr::V4(v4));
            }
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(step: &str, v: Value) -> Result<Value, String> {
        let s = Step::parse(&json!(step))?;
        s.apply(Cow::Owned(v), "pepper").map(Cow::into_owned)
    }

    #[test]
    fn text_steps() {
        assert_eq!(run("trim", json!("  a b \n")), Ok(json!("a b")));
        assert_eq!(run("lower", json!("ÄbC")), Ok(json!("äbc")));
        assert_eq!(run("upper", json!("abc")), Ok(json!("ABC")));
        assert!(
            run("lower", json!(12))
                .unwrap_err()
                .contains("expects a string")
        );
        assert_eq!(run("lower", Value::Null), Ok(Value::Null));
    }

    #[test]
    fn sha256_is_salted_and_stable() {
        // sha256("pepper" ++ "a@example.com")
        let expected = hex::encode(Sha256::digest(b"peppera@example.com"));
        assert_eq!(run("sha256", json!("a@example.com")), Ok(json!(expected)));
        let unsalted = Step::Sha256
            .apply(Cow::Owned(json!("a@example.com")), "")
            .unwrap()
            .into_owned();
        assert_ne!(unsalted, json!(expected));
        assert_eq!(
            run("sha256", json!(42)),
            Ok(json!(hex::encode(Sha256::digest(b"pepper42"))))
        );
    }

    #[test]
    fn date_parts_are_utc() {
        // 23:30 at -02:00 is 01:30 UTC the next day, a Saturday.
        let t = json!("2026-11-27T23:30:00-02:00");
        assert_eq!(run("date", t.clone()), Ok(json!("2026-11-28")));
        assert_eq!(run("hour", t.clone()), Ok(json!(1)));
        assert_eq!(run("day_of_week", t), Ok(json!(6)));
        assert!(run("hour", json!("yesterday")).is_err());
    }

    #[test]
    fn ip_truncation() {
        assert_eq!(
            run("ip_truncate", json!("203.0.113.77")),
            Ok(json!("203.0.113.0"))
        );
        assert_eq!(
            run("ip_truncate", json!("2001:db8:abcd:12:1:2:3:4")),
            Ok(json!("2001:db8:abcd::"))
        );
        assert_eq!(
            run("ip_truncate", json!("::ffff:198.51.100.9")),
            Ok(json!("198.51.100.0"))
        );
        assert!(run("ip_truncate", json!("not-an-ip")).is_err());
    }

    #[test]
    fn epochs_and_default() {
        assert_eq!(
            run("from_epoch_ms", json!(1_764_100_517_123_i64)),
            Ok(json!("2025-11-25T19:55:17.123000Z"))
        );
        assert_eq!(
            run("from_epoch_s", json!(0)),
            Ok(json!("1970-01-01T00:00:00.000000Z"))
        );
        assert!(run("from_epoch_s", json!("x")).is_err());
        let d = Step::parse(&json!({"default": "unknown"})).unwrap();
        assert_eq!(
            d.apply(Cow::Owned(Value::Null), "").unwrap().into_owned(),
            json!("unknown")
        );
        assert_eq!(
            d.apply(Cow::Owned(json!("x")), "").unwrap().into_owned(),
            json!("x")
        );
    }

    #[test]
    fn bad_step_specs() {
        assert!(
            Step::parse(&json!("lowercase"))
                .unwrap_err()
                .contains("unknown enrichment")
        );
        assert!(
            Step::parse(&json!("default"))
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(Step::parse(&json!({"frobnicate": 1})).is_err());
        assert!(Step::parse(&json!(3)).is_err());
    }
}
