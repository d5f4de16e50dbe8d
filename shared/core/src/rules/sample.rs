//! Sample lines for `rules test` and benchmarks: a plain client event wrapped into the
//! raw-archive line the pipeline would have written, and telling the two apart.

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::raw::KinesisCoords;

/// Event `i` of the benchmarks' mix, which follows the shipped rules file (`rules/rules.yaml`):
/// 55 % page views, 15 % purchases, 10 % sign-ups, 15 % searches, 2 % internal test traffic
/// (filtered), 2 % schema-invalid purchases (rejected), 1 % an unknown type (catch-all).
pub fn bench_event(i: u64) -> String {
    let ts = format!(
        "2026-11-25T{:02}:{:02}:{:02}.{:03}Z",
        (i / 3600) % 24,
        (i / 60) % 60,
        i % 60,
        i % 1000
    );
    match i % 100 {
        0..=54 => format!(
            r#"{{"type":"page_view","id":"pv-{i}","ts":"{ts}","user_id":"user-{u}","session_id":"sess-{s}","page":{{"url":"https://shop.example.com/products/{i}?utm_source=news&ref=abc","title":"  Product {i} - Example Shop ","referrer":"https://www.google.com/search?q=shoes"}},"device":{{"mobile":{m}}}}}"#,
            u = i % 5000,
            s = i % 20000,
            m = i.is_multiple_of(3)
        ),
        55..=69 => format!(
            r#"{{"type":"purchase","id":"po-{i}","ts":"{ts}","order_id":"order-{i}","user_id":"user-{u}","email":" User{u}@Example.com ","currency":"eur","amount":{a}.{c:02},"coupon":"bf24","items":[{{"sku":"sku-{k}","qty":2,"price":10.5}},{{"sku":"sku-{k2}","qty":1}}]}}"#,
            u = i % 5000,
            a = i % 900,
            c = i % 100,
            k = i % 300,
            k2 = (i + 7) % 300
        ),
        70..=79 => format!(
            r#"{{"type":"signup","id":"su-{i}","ts":"{ts}","user_id":"user-{i}","email":"New.User{i}@Mail.Example.org","plan":"pro","country":"de","marketing_opt_in":true}}"#
        ),
        80..=94 => format!(
            r#"{{"type":"search","id":"se-{i}","ts":"{ts}","user_id":"user-{u}","session_id":"sess-{s}","query":"  Red Running Shoes {q} ","result_count":{r}}}"#,
            u = i % 5000,
            s = i % 20000,
            q = i % 50,
            r = i % 40
        ),
        95..=96 => format!(
            r#"{{"type":"page_view","id":"t-{i}","test":true,"ts":"{ts}","page":{{"url":"https://x/"}}}}"#
        ),
        97..=98 => format!(
            r#"{{"type":"purchase","id":"bad-{i}","ts":"{ts}","order_id":"o-{i}","currency":"EURO","amount":-1}}"#
        ),
        _ => format!(
            r#"{{"type":"newsletter_open","id":"nl-{i}","ts":"{ts}","campaign":"nov-{c}"}}"#,
            c = i % 7
        ),
    }
}

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
            event_time: None,
        },
        &crate::envelope::RequestMeta {
            request_id: "rules-test".into(),
            received_at: Some(crate::envelope::format_timestamp(received_at)),
            source_ip: Some("192.0.2.10".into()),
            user_agent: Some("caudal-rules-test/1.0".into()),
            principal: None,
            stage: Some("local".into()),
            protocol: None,
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
