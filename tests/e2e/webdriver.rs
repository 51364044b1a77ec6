//! Just enough of the W3C WebDriver protocol to drive Debian's headless
//! Chromium through `chromedriver`, as an operator's browser: open pages,
//! find, type, click, run a check, take screenshots.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key W3C WebDriver names a found element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    shots: PathBuf,
}

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Screenshots go
    /// to `shots`. Panics (never skips) when either is not installed.
    pub async fn start(shots: &Path) -> Browser {
        let driver_bin = find_program("SWITCHBOARD_CHROMEDRIVER", &["chromedriver"]).expect(
            "chromedriver is not installed: `apt-get install chromium chromium-driver` \
             (`make test` does), or set SWITCHBOARD_CHROMEDRIVER",
        );
        let chromium = find_program("SWITCHBOARD_CHROMIUM", &["chromium", "chromium-browser"])
            .expect("chromium is not installed: `apt-get install chromium chromium-driver`");
        let port = crate::harness::free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--lang=en-US"]
            }
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        std::fs::create_dir_all(shots).unwrap();
        Browser {
            driver,
            base,
            session,
            http,
            shots: shots.to_path_buf(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn call_ok(&self, method: &str, path: &str, body: Value) -> Value {
        let v = self.call(method, path, body).await;
        if let Some(err) = v.get("error") {
            panic!("WebDriver {method} {path}: {err} {}", v["message"]);
        }
        v
    }

    pub async fn goto(&self, url: &str) {
        self.call_ok("POST", "/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.call_ok("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    async fn find_now(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_string)
    }

    /// The first element matching `css`, waiting up to 15 s for it.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(id) = self.find_now(css).await {
                return Element { b: self, id };
            }
            assert!(
                Instant::now() < deadline,
                "no {css} on {}: {}",
                self.url().await,
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        self.find_now(css).await.is_some()
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        match self.find_now(css).await {
            Some(id) => Element { b: self, id }.text().await,
            None => String::new(),
        }
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub async fn run(&self, script: &str) -> Value {
        self.call_ok(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Runs `script` (a function body that calls its last argument, the
    /// callback, with the result) and waits for the callback.
    pub async fn run_async(&self, script: &str) -> Value {
        self.call_ok(
            "POST",
            "/execute/async",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// What the pages wrote to the browser's console since the last call
    /// (Chromium's log: script errors, Content-Security-Policy refusals).
    pub async fn console_log(&self) -> Vec<String> {
        let v = self
            .call_ok("POST", "/se/log", json!({"type": "browser"}))
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("{} {}", e["level"], e["message"]))
            .collect()
    }

    /// Whether a dialog (`alert`, `confirm`) is open.
    pub async fn alert_open(&self) -> bool {
        self.call("GET", "/alert/text", Value::Null)
            .await
            .get("error")
            .is_none()
    }

    /// Saves the page as `<shots>/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let v = self.call_ok("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Reloads until `css` holds `want` (the page's own refresh is slower).
    pub async fn reload_until(&self, css: &str, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.text(css).await.contains(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {want:?}: {:?}",
                self.text(css).await
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.call_ok("POST", "/refresh", json!({})).await;
        }
    }
}

impl Browser {
    /// Ends the session (and its Chromium).
    pub async fn quit(self) {
        let _ = self.call("DELETE", "", Value::Null).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub struct Element<'a> {
    b: &'a Browser,
    id: String,
}

impl Element<'_> {
    /// Clicks something that loads another page (a link, a form's button),
    /// and waits until the browser has left this one, so that what is
    /// looked for next is found on the new page.
    pub async fn open(&self) {
        let page = self.b.find("html").await.id;
        self.click().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self
                .b
                .call("GET", &format!("/element/{page}/name"), Value::Null)
                .await;
            if v.get("error").is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page never changed after a click"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self) {
        self.b
            .call_ok("POST", &format!("/element/{}/click", self.id), json!({}))
            .await;
    }

    /// Types `text` (for a file input: the file's path).
    pub async fn send(&self, text: &str) {
        self.b
            .call_ok(
                "POST",
                &format!("/element/{}/value", self.id),
                json!({ "text": text }),
            )
            .await;
    }

    pub async fn text(&self) -> String {
        self.b
            .call_ok("GET", &format!("/element/{}/text", self.id), Value::Null)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}
