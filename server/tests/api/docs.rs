//! API documentation in a real browser (api.md §4.4): the coordinator runs in-process on 127.0.0.1:0, ChromeDriver
//! on a free port drives headless Chromium through fantoccini. `/docs` and `/redoc` must render the document (waited
//! for by element, never by a fixed sleep) with no Content-Security-Policy refusal of our own files, and each
//! screenshot lands in the test's temp dir and in `target/screenshots/`. `/openapi.json`, the asset table and the
//! `api_docs_enabled: false` answers are checked over plain HTTP. Self-contained: it needs none of the shared
//! harness. Without `/usr/bin/chromedriver` the browser test fails and says what to install.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use dffmpeg_coordinator::app::{self, Application};
use dffmpeg_coordinator::config::Config;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Upper bound for a page to render; only turns a hang into a failure that names what did not appear.
const RENDER_TIMEOUT: Duration = Duration::from_secs(60);

/// Every client route of api.md §2 the document must list, with its method.
const CLIENT_ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/docs"),
    ("get", "/docs/{asset}"),
    ("get", "/redoc"),
    ("get", "/redoc/{asset}"),
    ("get", "/openapi.json"),
    ("post", "/jobs/submit"),
    ("get", "/jobs"),
    ("get", "/jobs/{job_id}/status"),
    ("post", "/jobs/{job_id}/cancel"),
    ("post", "/jobs/{job_id}/client_heartbeat"),
    ("get", "/jobs/{job_id}/logs"),
    ("get", "/poll/jobs/{job_id}"),
    ("get", "/jobs/{job_id}/events"),
    ("post", "/jobs/{job_id}/stdin"),
    ("get", "/workers"),
    ("get", "/workers/{worker_id}"),
    ("post", "/admin/janitor"),
    ("get", "/worker/ws"),
];

/// The coordinator, in-process, with its own store in a temp dir.
struct Coordinator {
    base: String,
    signals: mpsc::Sender<String>,
    server: JoinHandle<Result<(), app::Error>>,
    dir: tempfile::TempDir,
}

impl Coordinator {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Coordinator {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path());
        tweak(&mut config);
        let app = Application::build(config, false)
            .await
            .expect("building the coordinator");
        let addr: SocketAddr = app.local_addr();
        // Kept open for the whole test: the coordinator stops at the first message or when every sender is gone.
        let (signals, rx) = mpsc::channel(4);
        let server = tokio::spawn(app.run(rx));
        Coordinator {
            base: format!("http://{addr}"),
            signals,
            server,
            dir,
        }
    }

    async fn stop(self) {
        self.signals.send("SIGTERM".to_owned()).await.unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the coordinator stops within 10 s")
            .unwrap();
        result.expect("the coordinator stops cleanly");
    }
}

/// A ChromeDriver process on a free port, killed when dropped.
struct ChromeDriver {
    url: String,
    _process: Child,
}

impl ChromeDriver {
    async fn start(log: &Path) -> ChromeDriver {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "the browser test needs {CHROMEDRIVER} and {CHROMIUM}: install them with \
             `apt-get install chromium chromium-driver` (or run .ci/run, which does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap();
        let process = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {CHROMEDRIVER}: {err}"));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{url}/status")).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|status| status["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{CHROMEDRIVER} did not answer /status on port {port} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ChromeDriver {
            url,
            _process: process,
        }
    }

    /// A headless Chromium session with its own profile directory; browser console messages are kept.
    async fn session(&self, profile: &Path) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1024",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::rustls()
            .unwrap()
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("opening a Chromium session through chromedriver")
    }

    /// The browser console messages since the last call (chromedriver's log endpoint).
    async fn console(&self, client: &Client) -> Vec<String> {
        let session = client.session_id().await.unwrap().unwrap();
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.url))
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| {
                        format!(
                            "{} {}",
                            entry["level"].as_str().unwrap_or("?"),
                            entry["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `target/screenshots/`, next to cargo's `target/tmp`.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Width and height from a PNG's IHDR, after checking the signature and that the file ends with IEND.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 33, "not a PNG: {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    assert_eq!(&png[12..16], b"IHDR", "the first chunk is not IHDR");
    assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND", "no IEND chunk");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (width, height)
}

/// Saves a screenshot of the page in `dir` and in `target/screenshots/`, and checks it shows something: a blank
/// 1280×1024 page compresses to about 10 KB, a rendered one to well over 50 KB.
async fn screenshot(client: &Client, dir: &Path, name: &str) {
    let png = client.screenshot().await.unwrap();
    let (width, height) = png_size(&png);
    assert!(
        width >= 800 && height >= 600,
        "{name}: screenshot only {width}×{height}"
    );
    assert!(
        png.len() > 50 * 1024,
        "{name}: screenshot of {} bytes looks blank",
        png.len()
    );
    std::fs::write(dir.join(name), &png).unwrap();
    std::fs::write(screenshot_dir().join(name), &png).unwrap();
}

/// Console messages that show the page broke: any error (a refused or missing file, an uncaught exception) or any
/// CSP report, except the one cross-origin image ReDoc's bundle tries (cdn.redoc.ly), which the policy refuses by
/// design and the bundle then hides.
fn problems(messages: &[String]) -> Vec<&String> {
    messages
        .iter()
        .filter(|message| {
            message.starts_with("SEVERE") || message.contains("Content Security Policy")
        })
        .filter(|message| !message.contains("'https://cdn.redoc.ly/redoc/logo-mini"))
        .collect()
}

async fn wait_for(client: &Client, css: &str, what: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(RENDER_TIMEOUT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("{what} ({css}) did not appear: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_and_redoc_render_the_document_in_chromium() {
    let coordinator = Coordinator::start(|_| {}).await;
    let work = coordinator.dir.path().join("browser");
    std::fs::create_dir_all(&work).unwrap();
    let driver = ChromeDriver::start(&work.join("chromedriver.log")).await;
    let client = driver.session(&work.join("profile")).await;
    // Chromium outlives a killed chromedriver, so the session is closed even when a check fails.
    let outcome = AssertUnwindSafe(check_pages(&driver, &client, &coordinator.base, &work))
        .catch_unwind()
        .await;
    let closed = client.close().await;
    drop(driver);
    coordinator.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    closed.expect("closing the Chromium session");
}

/// What the browser test checks on `/docs` and `/redoc`.
async fn check_pages(driver: &ChromeDriver, client: &Client, base: &str, work: &Path) {
    // Swagger UI: the operation block of /jobs/submit exists only once the document is fetched and rendered.
    client.goto(&format!("{base}/docs")).await.unwrap();
    let submit = wait_for(
        client,
        "#operations-jobs-jobs_submit .opblock-summary",
        "Swagger UI's operation block for POST /jobs/submit",
    )
    .await;
    let summary = submit.text().await.unwrap();
    assert!(summary.contains("/jobs/submit"), "{summary}");
    submit.click().await.unwrap();
    let responses = wait_for(
        client,
        "#operations-jobs-jobs_submit .responses-table",
        "the expanded responses of POST /jobs/submit",
    )
    .await;
    let table = responses.text().await.unwrap();
    assert!(table.contains("idempotency_conflict"), "{table}");
    client
        .execute(
            "document.getElementById('operations-jobs-jobs_submit').scrollIntoView()",
            Vec::new(),
        )
        .await
        .unwrap();
    screenshot(client, work, "docs-swagger.png").await;
    let console = driver.console(client).await;
    assert!(problems(&console).is_empty(), "/docs: {console:#?}");

    // ReDoc: the overview's title, then the operation page of /jobs/submit (hash routing stays on /redoc).
    client.goto(&format!("{base}/redoc")).await.unwrap();
    let title = wait_for(
        client,
        "h1[data-component-name='Typography/H1']",
        "ReDoc's rendered title",
    )
    .await;
    let title = title.text().await.unwrap();
    assert!(title.contains("dffmpeg coordinator"), "{title}");
    screenshot(client, work, "docs-redoc.png").await;
    client
        .goto(&format!("{base}/redoc#/jobs/jobs_submit"))
        .await
        .unwrap();
    let heading = wait_for(
        client,
        "h2[data-component-name='Typography/H2'] a[href='#/jobs/jobs_submit']",
        "ReDoc's operation heading for POST /jobs/submit",
    )
    .await;
    let label = heading
        .attr("aria-label")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(label.contains("Create a job"), "{label}");
    screenshot(client, work, "docs-redoc-submit.png").await;
    // Search runs on an index ReDoc builds in the page: it must work under the policy too.
    wait_for(
        client,
        "[data-testid='search-trigger']",
        "ReDoc's search box",
    )
    .await
    .click()
    .await
    .unwrap();
    wait_for(
        client,
        "[data-testid='search-dialog'] input",
        "ReDoc's search input",
    )
    .await
    .send_keys("client_heartbeat")
    .await
    .unwrap();
    let hit = wait_for(
        client,
        "[data-testid='search-dialog'] [data-component-name='Search/SearchItem']",
        "a ReDoc search result",
    )
    .await;
    let hit = hit.text().await.unwrap();
    assert!(hit.contains("client_heartbeat"), "{hit}");
    let console = driver.console(client).await;
    assert!(problems(&console).is_empty(), "/redoc: {console:#?}");
}

#[tokio::test]
async fn openapi_json_lists_every_client_route_and_assets_are_served_by_name() {
    let coordinator = Coordinator::start(|_| {}).await;
    let base = &coordinator.base;
    let http = reqwest::Client::new();

    let response = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    assert_eq!(document["info"]["title"], "dffmpeg coordinator");
    assert_eq!(document["info"]["version"], protocol::VERSION);
    for (method, path) in CLIENT_ROUTES {
        assert!(
            document["paths"][*path][*method].is_object(),
            "{method} {path} is not in /openapi.json"
        );
    }

    for (path, content_type) in [
        ("/docs", "text/html; charset=utf-8"),
        (
            "/docs/swagger-ui-bundle.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/docs/swagger-initializer.js",
            "text/javascript; charset=utf-8",
        ),
        ("/docs/swagger-ui.css", "text/css; charset=utf-8"),
        ("/docs/favicon-32x32.png", "image/png"),
        ("/redoc", "text/html; charset=utf-8"),
        ("/redoc/init.js", "text/javascript; charset=utf-8"),
        (
            "/redoc/redoc.standalone.js",
            "text/javascript; charset=utf-8",
        ),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], content_type, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{path}");
    }
    let page = http
        .get(format!("{base}/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("src=\"/docs/swagger-initializer.js\""),
        "{page}"
    );

    for path in [
        "/docs/nope.js",
        "/docs/index.html",
        "/docs/..%2Fopenapi.json",
        "/docs/%2e%2e%2fopenapi.json",
        "/redoc/package.json",
        "/redoc/README.md",
        "/docs/",
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"detail": "Not Found", "code": "not_found"}),
            "{path}"
        );
    }
    coordinator.stop().await;
}

#[tokio::test]
async fn api_docs_disabled_turns_every_docs_route_off() {
    let coordinator = Coordinator::start(|config| config.api_docs_enabled = false).await;
    let http = reqwest::Client::new();
    for path in [
        "/docs",
        "/docs/swagger-ui.css",
        "/redoc",
        "/redoc/init.js",
        "/openapi.json",
    ] {
        let response = http
            .get(format!("{}{path}", coordinator.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"detail": "API docs disabled", "code": "api_docs_disabled"}),
            "{path}"
        );
    }
    coordinator.stop().await;
}
