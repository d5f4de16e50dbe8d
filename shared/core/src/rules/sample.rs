//! Sample lines for `rules test` and benchmarks: a plain client event wrapped into the
//! raw-archive line the pipeline would have written, and telling the two apart.

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::raw::KinesisCoords;

/// Wrap a plain client event (one JSON object with a string `type`) into a synthetic raw-archive
/// line, as the pipeline would have written it — for `rules test` and benchmarks. `n` makes the
/// generated id unique when the event has no string `id`.
pub fn wrap_client_event(
    event: &[u8],
    n: u64,
    received_at: OffsetDateTime,
) -> Result<Vec<u8>, String> {
    let v: Value = serde_json::from_slice(event).map_err(|e| format!("not JSON: {e}"))?;
    let event_type = v
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("a plain client event needs a non-empty string field `type`")?;
    let generated = format!("sample-{n:08}");
    let (id, id_generated) = match v.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => (id, false),
        _ => (generated.as_str(), true),
    };
    let env = crate::envelope::encode(
        &crate::envelope::EventRef {
            id,
            id_generated,
            event_type,
            raw: event,
        },
        &crate::envelope::RequestMeta {
            request_id: "rules-test".into(),
            received_at: Some(crate::envelope::format_timestamp(received_at)),
            source_ip: Some("192.0.2.10".into()),
            user_agent: Some("caudal-rules-test/1.0".into()),
            principal: None,
            stage: Some("local".into()),
        },
    );
    let coords = KinesisCoords {
        shard_id: "shardId-000000000000".into(),
        sequence_number: format!("{n:056}").into(),
        arrival: crate::envelope::format_timestamp(received_at).into(),
        partition_key: id.to_owned().into(),
        sub_sequence_number: None,
    };
    let mut out = Vec::with_capacity(env.len() + 200);
    crate::raw::write_line(&mut out, &coords, &env).map_err(|e| e.to_string())?;
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    Ok(out)
}

/// True when `line` looks like a raw-archive line (an object with `kinesis` and `envelope`)
/// rather than a plain client event.
pub fn is_raw_line(line: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        kinesis: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        envelope: Option<&'a serde_json::value::RawValue>,
    }
    serde_json::from_slice::<Probe<'_>>(line)
        .is_ok_and(|p| p.kinesis.is_some() && p.envelope.is_some())
}
