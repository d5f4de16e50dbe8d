//! A real browser for the end-to-end tests: Debian's `chromium`, headless, driven over the W3C
//! WebDriver protocol by `chromedriver` (both installed by `scripts/ensure-tools.sh`), and a
//! page server so scripts run in a page of a chosen origin.
//!
//! Only what the tests need: start a session, open a URL, run an async script in the page and
//! get its result. No WebDriver crate: the protocol is a handful of JSON calls.

// Included by several test crates (`#[path]`), each using part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A user agent of an ordinary desktop Chrome. Headless Chromium says `HeadlessChrome`, which
/// the shipped rules' `drop_bots` filter drops, as it should for a crawler.
pub const DESKTOP_CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn find(names: &[&str]) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    for name in names {
        for dir in path.split(':') {
            let p = std::path::Path::new(dir).join(name);
            if p.is_file() {
                return p.display().to_string();
            }
        }
    }
    panic!(
        "none of {names:?} on PATH: scripts/ensure-tools.sh installs chromium and chromium-driver"
    )
}

impl Browser {
    /// Start chromedriver and one headless Chromium session with `user_agent`.
    pub async fn start(user_agent: &str) -> Browser {
        let port = free_port();
        let driver = Command::new(find(&["chromedriver"]))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if ready.is_some_and(|v| v["value"]["ready"] == true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": find(&["chromium", "chromium-browser"]),
                // No network but loopback: Chromium's own start-up lookups (updates, sync,
                // safe browsing) would otherwise wait on DNS timeouts on a machine without
                // internet, which made a session take seconds to minutes.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run",
                         "--disable-component-update", "--disable-extensions",
                         "--disable-sync", "--disable-background-networking",
                         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
                         format!("--user-agent={user_agent}")]
            }
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .timeout(Duration::from_secs(180))
            .send()
            .await
            .expect("a new Chromium session within 3 minutes")
            .json()
            .await
            .expect("session JSON");
        let id = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Browser {
            driver,
            base: format!("{base}/session/{id}"),
            http,
        }
    }

    async fn call(&self, path: &str, body: Value) -> Value {
        let v: Value = self
            .http
            .post(format!("{}/{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("webdriver JSON");
        assert!(
            v["value"].get("error").is_none(),
            "webdriver {path}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    /// Open `url` and wait for it to load.
    pub async fn goto(&self, url: &str) {
        self.call("url", json!({ "url": url })).await;
    }

    /// Run `script` in the page as an async function body (`await` allowed) with `args` as
    /// `args`; its `return` value is the result.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; const args = arguments[0];\n\
             (async () => {{ {script} }})().then(done, e => done({{error: String(e)}}));"
        );
        self.call(
            "execute/async",
            json!({ "script": wrapped, "args": [args] }),
        )
        .await
    }

    /// Resize the window to `width` × `height` CSS pixels (what a screenshot shows).
    pub async fn resize(&self, width: u32, height: u32) {
        self.call("window/rect", json!({ "width": width, "height": height }))
            .await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v: Value = self
            .http
            .get(format!("{}/screenshot", self.base))
            .send()
            .await
            .expect("webdriver screenshot")
            .json()
            .await
            .expect("webdriver JSON");
        let b64 = v["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no screenshot: {v}"));
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("screenshot base64")
    }

    /// End the session and chromedriver.
    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.base).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Serve one small HTML page for every GET on a loopback port, forever (a test's lifetime):
/// scripts run in it get the page's origin, `http://127.0.0.1:{port}` or
/// `http://localhost:{port}` (two origins, one server). `scripts` are files served as
/// JavaScript at their paths (`/sp.js` → a tracker's bundle). Returns the port.
pub fn serve_page(scripts: Vec<(&'static str, std::path::PathBuf)>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("page server binds");
    let port = listener.local_addr().expect("page server address").port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split(' ').nth(1).unwrap_or("/");
            let script = scripts.iter().find(|(p, _)| *p == path);
            let (kind, body) = match script {
                Some((_, file)) => (
                    "application/javascript",
                    std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
                ),
                None => (
                    "text/html",
                    b"<!doctype html><title>shop</title><p>a page that tracks".to_vec(),
                ),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    port
}
