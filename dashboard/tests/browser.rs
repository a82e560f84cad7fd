//! The pages in a real headless browser (Debian's chromium, driven through
//! chromedriver by fantoccini) against a real worker, beat, RabbitMQ and
//! PostgreSQL: each page shows real data, a new task appears without a
//! reload, an action is refused without the token and done with it, and
//! the pages fit a phone's width. Screenshots go to docs/screenshots/
//! (see [`shot`]).

use crate::support;

use celeriac_beat::schedule::entry::Entry;
use celeriac_beat::schedule::store::Store;
use celeriac_beat::trigger::TriggerSpec;
use celeriac_common::diagnostics::ECHO;
use celeriac_common::testing::process::{sibling_bin, spawn_beat};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{TOKEN, stack};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free port, killed when dropped.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn driver() -> Driver {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists(),
        "{CHROMEDRIVER} missing: run scripts/ensure-services.sh chromium"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let d = Driver(child, port);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not listen on {port}");
}

async fn browser(d: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": CHROMIUM, "args": ["--headless=new", "--no-sandbox",
            "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,760"]}),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.1))
        .await
        .expect("a chromium session")
}

async fn wait_css(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            let url = c.current_url().await.ok();
            let html = c.source().await.unwrap_or_default();
            panic!("no {css} on {url:?}: {e}\n{html}")
        }
    }
}

/// The text of `css`, read again if the page redrew it meanwhile (live
/// updates replace elements between finding and reading them).
async fn text_css(c: &Client, css: &str) -> String {
    for _ in 0..20 {
        match wait_css(c, css).await.text().await {
            Ok(text) => return text,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
            Err(e) => panic!("cannot read {css}: {e}"),
        }
    }
    panic!("{css} kept being redrawn");
}

/// Clicks `css`, again if the page redrew it meanwhile (live updates).
async fn click_css(c: &Client, css: &str) {
    for _ in 0..20 {
        match wait_css(c, css).await.click().await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
            Err(e) => panic!("cannot click {css}: {e}"),
        }
    }
    panic!("{css} kept being redrawn");
}

/// Saves a screenshot: into docs/screenshots/ when that one is missing or
/// `CELERIAC_UPDATE_SCREENSHOTS` is set (so that a test run does not
/// rewrite the committed pictures), else beside the test's other files.
async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    let update = std::env::var_os("CELERIAC_UPDATE_SCREENSHOTS").is_some();
    let dir = if update || !docs.join(name).exists() {
        docs
    } else {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    };
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    std::fs::write(dir.join(name), png).expect("screenshot saved");
}

async fn toast_says(c: &Client, needle: &str) {
    for _ in 0..100 {
        let t = c
            .find(Locator::Id("toast"))
            .await
            .expect("toast")
            .text()
            .await
            .unwrap_or_default();
        if t.contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the toast never said {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_real_data_update_live_and_guard_actions() {
    let s = stack("dash-ui", Some(TOKEN), true).await;
    let store = Store::new(
        s.client
            .backend()
            .await
            .expect("backend")
            .connection()
            .clone(),
    );
    let every = serde_json::from_value::<TriggerSpec>(json!({"type": "interval", "seconds": 1}));
    let nightly =
        serde_json::from_value::<TriggerSpec>(json!({"type": "cron", "expr": "0 3 * * *"}));
    let now = chrono::Utc::now();
    store
        .add(
            &Entry::new("heartbeat-job", ECHO, every.expect("spec")),
            now,
        )
        .await
        .expect("add");
    store
        .add(
            &Entry::new("nightly-report", ECHO, nightly.expect("spec")),
            now,
        )
        .await
        .expect("add");
    let beat = spawn_beat(sibling_bin("celeriac-beat"), &s.config, &[]);
    for i in 0..3 {
        s.run(ECHO, vec![json!(i), json!("hello")]).await;
    }
    let failed = s.run("celeriac.fail", vec![json!("disk full")]).await;
    let later = s
        .client
        .send_task(
            ECHO,
            vec![],
            Default::default(),
            celeriac::ApplyOptions::new().countdown(Duration::from_secs(600)),
        )
        .await
        .expect("sent");

    let d = driver().await;
    let c = browser(&d).await;
    let page = |p: &str| s.url(p);

    c.goto(&page("/")).await.expect("overview");
    wait_css(&c, "#counts .card").await;
    wait_css(&c, ".chart svg polyline").await;
    shot(&c, "overview.png").await;

    c.goto(&page("/workers")).await.expect("workers");
    wait_css(&c, &format!("tr.alive[data-host=\"{}\"]", s.hostname)).await;
    shot(&c, "workers.png").await;

    c.goto(&page("/queues")).await.expect("queues");
    wait_css(
        &c,
        &format!("tr[data-queue=\"{}\"]", s.config.default_queue),
    )
    .await;

    // A task sent after the page loaded shows up without a reload.
    c.goto(&page("/tasks")).await.expect("tasks");
    wait_css(&c, &format!("tr[data-id=\"{failed}\"]")).await;
    wait_css(&c, "#live.on").await;
    let fresh = s.run(ECHO, vec![json!("live")]).await;
    wait_css(&c, &format!("tr[data-id=\"{fresh}\"]")).await;
    shot(&c, "tasks.png").await;

    // Revoke: refused without the token, done with it.
    c.goto(&page(&format!("/tasks/{}", later.id())))
        .await
        .expect("task page");
    click_css(&c, "button[data-act$=\"/revoke\"]").await;
    toast_says(&c, "refused (401)").await;
    c.execute(
        &format!("sessionStorage.setItem('celeriac-dashboard-token', '{TOKEN}')"),
        vec![],
    )
    .await
    .expect("token set");
    click_css(&c, "button[data-act$=\"/revoke\"]").await;
    wait_css(&c, "h1 .badge.s-REVOKED").await;

    c.goto(&page(&format!("/tasks/{failed}")))
        .await
        .expect("failed task");
    let error = text_css(&c, "#error").await;
    assert!(
        error.contains("TaskFailed") && error.contains("disk full"),
        "{error}"
    );
    shot(&c, "task.png").await;

    // Schedules: the leader, runs in the grid, pause.
    c.goto(&page("/schedules")).await.expect("schedules");
    wait_css(&c, "tr[data-name=\"heartbeat-job\"] .grid a.s-SUCCESS").await;
    let leader = text_css(&c, "#leader").await;
    assert!(!leader.starts_with("No beat"), "{leader}");
    click_css(
        &c,
        "tr[data-name=\"nightly-report\"] button[data-act$=\"/pause\"]",
    )
    .await;
    wait_css(&c, "tr[data-name=\"nightly-report\"] .s-paused").await;
    shot(&c, "schedules.png").await;

    // A phone's width: the page does not overflow sideways.
    c.set_window_size(390, 800).await.expect("resize");
    c.goto(&page("/tasks")).await.expect("tasks");
    wait_css(&c, "tr[data-id]").await;
    let width = c
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .expect("width");
    assert!(
        width.as_u64().is_some_and(|w| w <= 400),
        "page is {width} px wide"
    );
    shot(&c, "tasks-phone.png").await;

    c.close().await.expect("closed");
    beat.terminate();
    s.stop().await;
}
