//! The HTTP API emulator's unit tests: route precedence, the payload 2.0 event, responses.

use caudal_core::codec::Codec;

use super::*;
use crate::emulators::lambda::Handler;
use std::time::Duration;

fn route(key: &str) -> Route {
    let (method, path) = match key.split_once(' ') {
        Some((m, p)) => ((m != "ANY").then(|| m.to_owned()), Some(p.to_owned())),
        None => (None, None),
    };
    Route {
        route_key: key.to_owned(),
        method,
        path,
        function: "F".into(),
    }
}

fn bound(key: &str, h: impl Handler + 'static) -> BoundRoute {
    BoundRoute {
        route: route(key),
        function: Arc::new(LocalFunction::detached(
            key,
            Duration::from_secs(2),
            Arc::new(h),
        )),
    }
}

fn echo() -> impl Handler {
    |ev: Value, _ctx: lambda_runtime::Context| async move {
        Ok(json!({"statusCode": 200, "body": ev.to_string()}))
    }
}

/// Serve `api` on a loopback port: its address, and a future that stops the server.
async fn serving(api: Arc<Api>) -> (SocketAddr, impl Future<Output = ()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = crate::shutdown::channel();
    let server = tokio::spawn(serve(listener, api, shutdown.wait()));
    (addr, async move {
        trigger.fire();
        server.await.unwrap().unwrap();
    })
}

#[test]
fn routes_follow_api_gateway_precedence() {
    let routes = vec![
        bound("$default", echo()),
        bound("ANY /v1/{proxy+}", echo()),
        bound("GET /v1/items/{id}", echo()),
        bound("GET /v1/items/special", echo()),
        bound("POST /v1/events", echo()),
    ];
    let key = |m: &str, p: &str| match_route(&routes, m, p).map(|(r, _)| r.route.route_key.clone());
    assert_eq!(
        key("POST", "/v1/events").as_deref(),
        Some("POST /v1/events")
    );
    assert_eq!(
        key("GET", "/v1/events").as_deref(),
        Some("ANY /v1/{proxy+}")
    );
    assert_eq!(
        key("GET", "/v1/items/special").as_deref(),
        Some("GET /v1/items/special")
    );
    assert_eq!(
        key("GET", "/v1/items/7").as_deref(),
        Some("GET /v1/items/{id}")
    );
    assert_eq!(
        key("DELETE", "/v1/items/7").as_deref(),
        Some("ANY /v1/{proxy+}")
    );
    assert_eq!(key("GET", "/elsewhere").as_deref(), Some("$default"));
    let (_, params) = match_route(&routes, "PUT", "/v1/a/b/c").unwrap();
    assert_eq!(params["proxy"], "a/b/c");
    let (_, params) = match_route(&routes, "GET", "/v1/items/42").unwrap();
    assert_eq!(params["id"], "42");
    let only_post = vec![bound("POST /v1/events", echo())];
    assert!(match_route(&only_post, "GET", "/v1/events").is_none());
    assert!(match_route(&only_post, "POST", "/v1/events/x").is_none());
}

fn sample_event(headers: HeaderMap, body: &[u8], query: &str) -> Value {
    let api = Api::new(vec![], "HttpApi", "123456789012");
    let req = RequestParts {
        method: "POST",
        path: "/v1/events",
        raw_query: query,
        headers: &headers,
        body,
        source_ip: "127.0.0.1".into(),
        protocol: "HTTP/1.1".into(),
        domain_name: "127.0.0.1:3000",
    };
    let now = OffsetDateTime::from_unix_timestamp(1_764_100_517).unwrap();
    api_gateway_v2_event(&api, &route("POST /v1/events"), &BTreeMap::new(), &req, now)
}

#[test]
fn gzip_bodies_are_base64_and_parse_as_lambda_http_requests() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Content-Type",
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert("Content-Encoding", HeaderValue::from_static("gzip"));
    headers.insert("User-Agent", HeaderValue::from_static("curl/8"));
    headers.append("X-Multi", HeaderValue::from_static("a"));
    headers.append("X-Multi", HeaderValue::from_static("b"));
    headers.insert("Cookie", HeaderValue::from_static("s=1; t=2"));
    let body = Codec::default()
        .compress(b"{\"type\":\"a\"}\n{\"type\":\"b\"}\n")
        .unwrap();
    let ev = sample_event(headers, &body, "dry%20run=1&x=a&x=b");

    assert_eq!(ev["version"], "2.0");
    assert_eq!(ev["routeKey"], "POST /v1/events");
    assert_eq!(ev["rawQueryString"], "dry%20run=1&x=a&x=b");
    assert_eq!(ev["queryStringParameters"]["dry run"], "1");
    assert_eq!(ev["queryStringParameters"]["x"], "a,b");
    assert_eq!(ev["headers"]["x-multi"], "a,b");
    assert_eq!(ev["headers"]["content-encoding"], "gzip");
    assert!(ev["headers"].get("cookie").is_none());
    assert_eq!(ev["cookies"], json!(["s=1", "t=2"]));
    assert_eq!(ev["isBase64Encoded"], true);
    let rc = &ev["requestContext"];
    assert_eq!(rc["stage"], "$default");
    assert_eq!(rc["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(rc["http"]["userAgent"], "curl/8");
    assert_eq!(rc["timeEpoch"], 1_764_100_517_000i64);
    assert_eq!(rc["time"], "25/Nov/2025:19:55:17 +0000");

    // The typed event and lambda_http (what the ingest handler uses) both accept it, and
    // lambda_http hands the handler the original gzip bytes.
    let typed: aws_lambda_events::apigw::ApiGatewayV2httpRequest =
        serde_json::from_value(ev.clone()).unwrap();
    assert_eq!(
        typed.request_context.http.source_ip.as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(typed.request_context.stage.as_deref(), Some("$default"));
    let req = lambda_http::request::from_str(&ev.to_string()).unwrap();
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(req.uri().path(), "/v1/events");
    assert_eq!(req.body().as_ref(), body.as_slice());
    use lambda_http::RequestExt as _;
    assert_eq!(req.query_string_parameters().all("x"), Some(vec!["a", "b"]));
}

#[test]
fn text_bodies_stay_text() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    let ev = sample_event(headers, br#"[{"type":"a"}]"#, "");
    assert_eq!(ev["isBase64Encoded"], false);
    assert_eq!(ev["body"], r#"[{"type":"a"}]"#);
    assert!(ev.get("queryStringParameters").is_none());
    // Invalid UTF-8 is never passed as text.
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(
        sample_event(headers, &[0xff, 0xfe], "")["isBase64Encoded"],
        true
    );
    // No body: no `body` field.
    assert!(
        sample_event(HeaderMap::new(), b"", "")
            .get("body")
            .is_none()
    );
}

#[tokio::test]
async fn function_output_becomes_the_http_response() {
    let r = http_response(&json!({
        "statusCode": 207,
        "headers": {"content-type": "application/json", "x-a": "1"},
        "multiValueHeaders": {"x-b": ["1", "2"]},
        "cookies": ["c=1"],
        "body": B64.encode(b"\x00binary"),
        "isBase64Encoded": true
    }))
    .unwrap();
    assert_eq!(r.status(), 207);
    assert_eq!(r.headers()["x-a"], "1");
    assert_eq!(r.headers().get_all("x-b").iter().count(), 2);
    assert_eq!(r.headers()["set-cookie"], "c=1");
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    assert_eq!(&body[..], b"\x00binary");

    let r = http_response(&json!({"ok": true})).unwrap();
    assert_eq!(r.status(), 200);
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    assert_eq!(&body[..], br#"{"ok":true}"#);

    assert!(http_response(&json!({"statusCode": 1000})).is_err());
    assert!(
        http_response(&json!({"statusCode": 200, "body": "***", "isBase64Encoded": true})).is_err()
    );
}

#[tokio::test]
async fn the_server_invokes_functions_and_maps_failures_like_api_gateway() {
    let routes = vec![
        bound("POST /v1/events", echo()),
        bound(
            "GET /v1/fail",
            |_: Value, _: lambda_runtime::Context| async { Err("nope".into()) },
        ),
        bound(
            "GET /v1/slow",
            |_: Value, _: lambda_runtime::Context| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(Value::Null)
            },
        ),
    ];
    let api = Arc::new(Api::new(routes, "HttpApi", "123456789012"));
    let (addr, stop) = serving(api.clone()).await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    let gz = Codec::default().compress(b"{\"type\":\"x\"}").unwrap();
    let resp = client
        .post(format!("{base}/v1/events?a=1"))
        .header("content-encoding", "gzip")
        .header("content-type", "application/json")
        .body(gz.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("apigw-requestid"));
    let ev: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(ev["isBase64Encoded"], true);
    assert_eq!(B64.decode(ev["body"].as_str().unwrap()).unwrap(), gz);
    assert_eq!(ev["rawQueryString"], "a=1");
    assert_eq!(ev["requestContext"]["http"]["sourceIp"], "127.0.0.1");

    let resp = client.get(format!("{base}/v1/fail")).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"message":"Internal Server Error"}"#
    );
    let resp = client.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client.get(format!("{base}/v1/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let too_big = vec![b'x'; MAX_REQUEST_BYTES + 1];
    let resp = client
        .post(format!("{base}/v1/events"))
        .body(too_big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    let stats = api.stats.snapshot();
    assert_eq!(stats[&("POST /v1/events".to_owned(), 200)], 1);
    assert_eq!(stats[&("GET /v1/fail".to_owned(), 500)], 1);
    assert_eq!(stats[&("(no route)".to_owned(), 404)], 1);
    stop.await;
}

fn cors(origins: &str) -> Cors {
    Cors {
        allow_origins: caudal_core::cors::AllowedOrigins::parse(origins).unwrap(),
        allow_methods: vec!["GET".into(), "POST".into()],
        allow_headers: vec!["content-type".into(), "authorization".into()],
        expose_headers: vec!["retry-after".into()],
        max_age: Some(7200),
        allow_credentials: false,
    }
}

#[tokio::test]
async fn with_cors_preflights_are_answered_and_only_allowed_origins_get_headers() {
    // The function sets a CORS header of its own, which API Gateway ignores.
    let echo_with_acao = |ev: Value, _ctx: lambda_runtime::Context| async move {
        Ok(json!({
            "statusCode": 202,
            "headers": {"access-control-allow-origin": "*", "x-kept": "1"},
            "body": ev.to_string()
        }))
    };
    let routes = vec![bound("POST /v1/events", echo_with_acao)];
    let api = Arc::new(
        Api::new(routes, "HttpApi", "123456789012").with_cors(Some(cors("https://shop.example"))),
    );
    let (addr, stop) = serving(api.clone()).await;
    let url = format!("http://{addr}/v1/events");
    let client = reqwest::Client::new();
    let preflight = |origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };

    let ok = preflight("https://shop.example").await.unwrap();
    assert_eq!(ok.status(), 204);
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "content-type,authorization"
    );
    assert_eq!(h["access-control-max-age"], "7200");
    assert!(!h.contains_key("access-control-allow-credentials"));

    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 204);
    assert!(
        !refused
            .headers()
            .keys()
            .any(|k| k.as_str().starts_with("access-control-")),
        "no CORS headers: the browser refuses the request"
    );

    // An OPTIONS that is not a preflight has no route.
    let plain = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 404);

    let post = |origin: Option<&str>| {
        let mut r = client
            .post(&url)
            .header("content-type", "text/plain;charset=UTF-8")
            .body(r#"{"type":"a"}"#);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let allowed = post(Some("https://shop.example")).await.unwrap();
    assert_eq!(allowed.status(), 202);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example",
        "the configured value replaces the function's *"
    );
    assert_eq!(
        allowed.headers()["access-control-expose-headers"],
        "retry-after"
    );
    assert_eq!(allowed.headers()["x-kept"], "1");
    let ev: Value = serde_json::from_str(&allowed.text().await.unwrap()).unwrap();
    assert_eq!(ev["headers"]["origin"], "https://shop.example");
    assert_eq!(ev["isBase64Encoded"], false, "text/plain is passed as text");

    // Another origin still reaches the function (API Gateway does not block it); it only
    // gets no CORS headers, and the function's own are gone.
    for origin in [Some("https://evil.example"), None] {
        let r = post(origin).await.unwrap();
        assert_eq!(r.status(), 202);
        assert!(
            !r.headers()
                .keys()
                .any(|k| k.as_str().starts_with("access-control-")),
            "{origin:?}"
        );
    }
    let stats = api.stats.snapshot();
    assert_eq!(stats[&("(preflight)".to_owned(), 204)], 2);
    assert_eq!(stats[&("POST /v1/events".to_owned(), 202)], 3);
    stop.await;
}

#[tokio::test]
async fn without_cors_a_preflight_has_no_route() {
    let api = Arc::new(Api::new(
        vec![bound("POST /v1/events", echo())],
        "HttpApi",
        "123456789012",
    ));
    let (addr, stop) = serving(api).await;
    let r = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("http://{addr}/v1/events"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    stop.await;
}
