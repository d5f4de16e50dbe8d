"""Drive Segment's real Python SDK (segment-analytics-python, pinned in requirements-dev.txt)
against a caudal endpoint, for the end-to-end test (tests/tests/e2e.rs, phase 7).

The SDK is used as an app would use it, changed only in `host` (and its retry count and upload
interval, so the test is quick). Between the SDK and caudal runs a small proxy that forwards
every request but answers the first batch with a 503 after caudal has taken it — a response
lost on the way back — so the SDK's retry sends those messages a second time.

Prints one JSON object: the message ids sent per expected table, the errors the SDK reported,
and what the proxy saw.

usage: segment_e2e.py API_URL WRITE_KEY WRONG_KEY RUN
"""

import http.server
import json
import sys
import threading
import urllib.request

from segment.analytics.client import Client


class LosingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards POSTs to the API; the first /v1/batch answer is replaced by a 503."""

    target = ""
    lock = threading.Lock()
    seen = []  # (path, caudal status, status sent back)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        req = urllib.request.Request(self.target + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, answer = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, answer = e.code, e.read()
        with self.lock:
            lose = self.path == "/v1/batch" and status == 200 and not any(
                s[2] == 503 for s in self.seen
            )
            sent = 503 if lose else status
            self.seen.append((self.path, status, sent))
        if lose:
            answer = json.dumps({"code": "unavailable", "message": "lost on the way back"}).encode()
        self.send_response(sent)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main():
    api, key, wrong_key, run = sys.argv[1:5]
    LosingProxy.target = api.rstrip("/")
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LosingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    host = "http://127.0.0.1:%d" % proxy.server_address[1]

    errors = []
    client = Client(
        key,
        host=host,
        gzip=True,
        max_retries=4,
        upload_interval=0.05,
        on_error=lambda e, batch: errors.append("%s (%d messages)" % (e, len(batch))),
    )
    sent = {"segment_identifies": [], "segment_order_completed": [], "segment_pages": [], "unknown_events": []}
    for u in range(5):
        user = "%s-user-%d" % (run, u)
        mid = "%s-identify-%d" % (run, u)
        client.identify(user, {"email": " User%d@Example.COM " % u, "plan": "pro"}, message_id=mid)
        sent["segment_identifies"].append(mid)
        mid = "%s-order-%d" % (run, u)
        client.track(user, "Order Completed",
                     {"order_id": "%s-A-%d" % (run, u), "revenue": 19.9 + u, "currency": "eur"},
                     message_id=mid)
        sent["segment_order_completed"].append(mid)
        mid = "%s-page-%d" % (run, u)
        client.page(anonymous_id="%s-anon-%d" % (run, u), name="Shoes",
                    properties={"url": "https://shop.example.com/shoes?u=%d" % u, "title": "Shoes"},
                    message_id=mid)
        sent["segment_pages"].append(mid)
        mid = "%s-viewed-%d" % (run, u)
        client.track(user, "Product Viewed", {"sku": "shoe-%d" % u}, message_id=mid)
        sent["unknown_events"].append(mid)
    client.flush()
    client.join()

    wrong_errors = []
    wrong = Client(
        wrong_key,
        host=host,
        max_retries=4,
        upload_interval=0.05,
        on_error=lambda e, batch: wrong_errors.append(getattr(e, "status", str(e))),
    )
    wrong_ids = []
    for u in range(3):
        mid = "%s-wrongkey-%d" % (run, u)
        wrong.track("%s-user-%d" % (run, u), "Order Completed",
                    {"order_id": "%s-W-%d" % (run, u), "revenue": 1, "currency": "eur"}, message_id=mid)
        wrong_ids.append(mid)
    wrong.flush()
    wrong.join()
    proxy.shutdown()
    print(json.dumps({
        "sent": sent,
        "errors": errors,
        "wrong_key_ids": wrong_ids,
        "wrong_key_errors": wrong_errors,
        "proxy": LosingProxy.seen,
    }))


if __name__ == "__main__":
    main()
