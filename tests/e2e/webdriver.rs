//! Just enough of the W3C WebDriver protocol to drive Debian's headless Chromium through
//! `chromedriver`, over the reqwest the tests already use: open a page, click, type,
//! read the page's state with a script, take screenshots.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::processes::{TempDir, free_port};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long the page may take to show what a flow waits for.
const PATIENCE: Duration = Duration::from_secs(15);

/// A `chromedriver` process; the browsers it started die with it.
pub struct Driver {
    process: Child,
    url: String,
    http: reqwest::Client,
    profiles: TempDir,
}

impl Driver {
    /// Starts chromedriver and waits until it says it is ready. Panics when it cannot:
    /// a browser test that could not run a browser has failed.
    pub async fn start() -> Self {
        for program in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: install Debian's chromium and chromium-driver \
                 (apt-get install -y chromium chromium-driver)"
            );
        }
        let port = free_port();
        let process = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let driver = Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            profiles: TempDir::new(),
        };
        let started = Instant::now();
        loop {
            let status = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await;
            if let Ok(status) = status
                && let Ok(body) = status.json::<Value>().await
                && body["value"]["ready"] == true
            {
                return driver;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new headless Chromium with a profile of its own; `name` labels its screenshots.
    pub async fn browser(&self, name: &str, screenshots: &Path) -> Browser {
        let profile = self.profiles.join(name);
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=900,700".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            }}
        });
        let answer = call(
            &self.http,
            reqwest::Method::POST,
            &format!("{}/session", self.url),
            Some(capabilities),
        )
        .await
        .unwrap_or_else(|error| panic!("Chromium did not start: {error}"));
        let id = answer["sessionId"]
            .as_str()
            .expect("a WebDriver session id")
            .to_owned();
        std::fs::create_dir_all(screenshots).expect("the screenshot directory");
        Browser {
            http: self.http.clone(),
            session: format!("{}/session/{id}", self.url),
            name: name.to_owned(),
            screenshots: screenshots.to_path_buf(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium outlives a killed chromedriver: end every browser of this driver,
        // found by its profile directory.
        let _ = std::process::Command::new("pkill")
            .arg("-f")
            .arg(self.profiles.0.display().to_string())
            .status();
        let _ = self.process.start_kill();
    }
}

/// One browser window, as one person at their computer.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    name: String,
    screenshots: PathBuf,
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.post("url", json!({ "url": url })).await;
    }

    /// Reloads the page, as a person pressing F5.
    pub async fn reload(&self) {
        self.post("refresh", json!({})).await;
    }

    /// Clicks the element `css` selects, as a mouse does.
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.post(&format!("element/{element}/click"), json!({}))
            .await;
    }

    /// Types `text` into the element `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.post(&format!("element/{element}/value"), json!({ "text": text }))
            .await;
    }

    /// Runs `script` (a function body; `return` gives the answer) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.post("execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// Waits until `script`'s answer is `expected`. On timeout: a screenshot, then a
    /// panic saying what a person would have seen.
    pub async fn wait_for(&self, what: &str, script: &str, expected: Value) {
        let started = Instant::now();
        loop {
            let seen = self.eval(script).await;
            if seen == expected {
                return;
            }
            if started.elapsed() > PATIENCE {
                let shot = self.screenshot(&format!("failed-{}", slug(what))).await;
                panic!(
                    "{}: waited {PATIENCE:?} for {what}: wanted {expected}, the page shows {seen} \
                     (screenshot {})",
                    self.name,
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the window into the test's screenshot directory.
    pub async fn screenshot(&self, label: &str) -> PathBuf {
        let data = call(
            &self.http,
            reqwest::Method::GET,
            &format!("{}/screenshot", self.session),
            None,
        )
        .await
        .expect("a screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 PNG"))
            .expect("base64 PNG");
        let path = self.screenshots.join(format!("{}-{label}.png", self.name));
        std::fs::write(&path, png).expect("the screenshot is written");
        path
    }

    pub async fn close(self) {
        let _ = call(&self.http, reqwest::Method::DELETE, &self.session, None).await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .post("element", json!({ "using": "css selector", "value": css }))
            .await;
        found
            .as_object()
            .and_then(|element| element.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: no element {css}", self.name))
            .to_owned()
    }

    async fn post(&self, command: &str, body: Value) -> Value {
        call(
            &self.http,
            reqwest::Method::POST,
            &format!("{}/{command}", self.session),
            Some(body),
        )
        .await
        .unwrap_or_else(|error| panic!("{}: {command}: {error}", self.name))
    }
}

/// One WebDriver command: its `value`, or the driver's error.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut request = http.request(method, url).timeout(Duration::from_secs(60));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let answer: Value = response.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", answer["value"]));
    }
    Ok(answer["value"].clone())
}

fn slug(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}
