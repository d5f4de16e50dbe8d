"""Drive Snowplow's real Python tracker (snowplow-tracker, pinned in requirements-dev.txt)
against a caudal endpoint, for the end-to-end test (tests/tests/e2e.rs, phase 8).

The tracker is used as an app would use it, changed only in its collector host. Two emitters:
one POSTs batches to /com.snowplowanalytics.snowplow/tp2, one sends each event as the GET /i
pixel. Between the tracker and caudal runs a small proxy that forwards every request but
answers the first POST and the first pixel with a 503 after caudal has taken them (a response
lost on the way back), so the tracker sends those events a second time. A third tracker sends
with an app id the stack does not list: caudal answers 400, the tracker does not retry.

Prints one JSON object: the event ids tracked per expected table, the wrong app's ids, the
failures the trackers reported, and what the proxy saw.

usage: snowplow_e2e.py API_URL APP_ID WRONG_APP_ID RUN
"""

import http.server
import json
import sys
import threading
import time
import urllib.parse
import urllib.request

from snowplow_tracker import (
    Emitter,
    PageView,
    SelfDescribing,
    SelfDescribingJson,
    StructuredEvent,
    Subject,
    Tracker,
)

POST_PATH = "/com.snowplowanalytics.snowplow/tp2"


class LosingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards requests to the API; the first answer of each route taken is replaced by a 503."""

    target = ""
    lock = threading.Lock()
    seen = []  # (method, path, caudal status, status sent back, event ids)

    def forward(self, method, body):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        req = urllib.request.Request(self.target + self.path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, answer, kind = r.status, r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            status, answer, kind = e.code, e.read(), e.headers.get("content-type", "")
        path = self.path.split("?", 1)[0]
        if method == "POST":
            ids = [e.get("eid") for e in json.loads(body)["data"]]
        else:
            query = urllib.parse.parse_qs(self.path.split("?", 1)[1] if "?" in self.path else "")
            ids = query.get("eid", [])
        with self.lock:
            lose = status == 200 and not any(s[1] == path and s[3] == 503 for s in self.seen)
            sent = 503 if lose else status
            self.seen.append((method, path, status, sent, ids))
        if lose:
            answer, kind = b'{"code":"unavailable"}', "application/json"
        self.send_response(sent)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.forward("POST", self.rfile.read(int(self.headers.get("content-length", 0))))

    def do_GET(self):  # noqa: N802
        self.forward("GET", None)

    def log_message(self, *args):
        pass


def drain(emitter, timeout=60):
    """Flush until the emitter holds no event, sends none and has no retry pending. Its retry
    timer flushes on its own thread and takes the events out of the store while it sends them,
    so the store alone can be empty while a send is still on its way: the emitter's lock is
    held for the whole send."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with emitter.lock:
            pending = emitter.event_store.size()
            retrying = emitter.retry_timer.is_active()
        if not pending and not retrying:
            return
        if retrying:
            time.sleep(0.1)
        else:
            emitter.flush()
    raise SystemExit("the emitter did not drain in %d s" % timeout)


def main():
    api, app_id, wrong_app, run = sys.argv[1:5]
    LosingProxy.target = api.rstrip("/")
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LosingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    port = proxy.server_address[1]

    failures = []

    def on_failure(name):
        return lambda ok, failed: failures.append("%s: %d sent, %d failed" % (name, ok, len(failed)))

    post = Emitter("127.0.0.1", protocol="http", port=port, method="post", batch_size=10,
                   on_failure=on_failure("post"), max_retry_delay_seconds=2)
    get = Emitter("127.0.0.1", protocol="http", port=port, method="get", batch_size=1,
                  on_failure=on_failure("get"), max_retry_delay_seconds=2)
    sent = {"snowplow_page_views": [], "snowplow_struct_events": [], "snowplow_link_clicks": [],
            "unknown_events": []}
    customer = SelfDescribingJson("iglu:com.acme/customer/jsonschema/1-0-0", {"tier": "gold"})
    for u in range(5):
        subject = Subject().set_user_id("%s-user-%d" % (run, u)).set_domain_user_id("%s-duid-%d" % (run, u))
        t = Tracker("%s-post" % run, post, subject=subject, app_id=app_id)
        sent["snowplow_page_views"].append(t.track(PageView(
            page_url="https://shop.example.com/p/%d?ref=mail&q=a+b" % u,
            page_title="Product %d — café" % u,
            referrer="https://search.example/",
            context=[customer])))
        sent["snowplow_struct_events"].append(t.track(StructuredEvent(
            category="cart", action="add", label="sku-%d" % u, value=2.5 + u)))
        sent["snowplow_link_clicks"].append(t.track(SelfDescribing(SelfDescribingJson(
            "iglu:com.snowplowanalytics.snowplow/link_click/jsonschema/1-0-1",
            {"targetUrl": "https://shop.example.com/sale/%d" % u, "elementId": "banner"}))))
        # A self-describing event the rules do not name: the catch-all table.
        sent["unknown_events"].append(t.track(SelfDescribing(SelfDescribingJson(
            "iglu:com.acme/video_played/jsonschema/1-0-0", {"seconds": u}))))
    drain(post)
    for u in range(3):
        subject = Subject().set_domain_user_id("%s-pixel-duid-%d" % (run, u))
        t = Tracker("%s-get" % run, get, subject=subject, app_id=app_id)
        sent["snowplow_page_views"].append(t.track(PageView(
            page_url="https://shop.example.com/pixel/%d" % u, page_title="Pixel %d" % u)))
        sent["snowplow_struct_events"].append(t.track(StructuredEvent(
            category="video", action="play", value=u, context=[customer])))
    drain(get)

    wrong_failures = []
    wrong_emitter = Emitter("127.0.0.1", protocol="http", port=port, method="post", batch_size=10,
                            on_failure=lambda ok, failed: wrong_failures.append(len(failed)))
    wrong = Tracker("%s-wrong" % run, wrong_emitter, app_id=wrong_app)
    wrong_ids = [wrong.track(StructuredEvent(category="cart", action="add")) for _ in range(3)]
    drain(wrong_emitter)
    proxy.shutdown()
    print(json.dumps({
        "sent": sent,
        "failures": failures,
        "wrong_app_ids": wrong_ids,
        "wrong_app_failures": wrong_failures,
        "proxy": LosingProxy.seen,
    }))


if __name__ == "__main__":
    main()
