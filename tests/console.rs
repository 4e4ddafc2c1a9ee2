//! The operator console in a real browser: Debian's `chromium`, headless, driven by `chromedriver` over
//! WebDriver (fantoccini), against a real pair with a witness started by the harness.
//!
//! One test walks the console as an operator would, on node `b` (the follower, so that killing the leader
//! does not take the page's own node away). First, without a browser: `GET /` is public and carries the
//! Content-Security-Policy and `nosniff` headers, the witness answers its one-line page, data needs a token.
//! Then in the browser:
//! 1. log in with an admin token; the Cluster page lists a, b and w, with a as leader;
//! 2. a configured terminal shows offline, then green within one poll after a heartbeat to b's boot port;
//! 3. on the History page, "Undo this change" shows the CLI's preview, asks for a reason, and the new event
//!    appears with that reason; the configuration is back (checked with the CLI); a change made with the CLI
//!    appears without a reload (the page follows `/v1/watch`); the collection filter narrows the list;
//! 4. log out, log in with a reader token: no write button on any page, and a write forged from the page
//!    (`fetch` with the reader's token) is refused with 403 and changes nothing;
//! 5. the leader is killed: within 5 s the page shows b as leader and the degraded banner naming a;
//! 6. b is killed too: the page says its node is not answering and offers a's console.
//!
//! With `TANDEM_CONSOLE_SCREENSHOTS=DIR` (relative to the crate) the test saves a PNG of each page there
//! (`docs/console/` holds the committed ones). Without `chromium` and `chromedriver` on the PATH it runs the
//! checks without a browser, prints "skipped: …" for the rest and passes (`scripts/test.sh` installs them).
//! Every wait is bounded.

mod harness;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// One browser test at a time: each runs a cluster and a chromium, and two of those at once on a 2-core machine
/// starve the nodes' Raft timers (a seeding write then fails with "quorum lost").
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ADMIN: &str = "console-admin-secret-0123";
const READER: &str = "console-reader-secret-012";

/// Every node's config: the same tokens, and a backup schedule into one shared directory (the leader writes).
fn config(backups: &std::path::Path) -> String {
    format!(
        "[[tokens]]\nname = \"ada\"\nrole = \"admin\"\nsecret = \"{ADMIN}\"\n\n\
         [[tokens]]\nname = \"eve\"\nrole = \"reader\"\nsecret = \"{READER}\"\n\n\
         [backup]\ndir = \"{}\"\ninterval = \"3s\"\nretention = 5\n",
        backups.display()
    )
}

/// A program on the PATH.
fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// `chromedriver` on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(binary: &PathBuf) -> Driver {
        let port = harness::free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port} within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, chromium: &PathBuf) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--lang=en-US"],
        },
    });
    let Value::Object(capabilities) = capabilities else { unreachable!() };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

/// Runs `script` (a function body) in the page and returns its value.
async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.unwrap_or(Value::Null)
}

/// Polls `script` (a function body returning a value) until `check` holds, at most `timeout`; returns the
/// value and how long it took, or panics with the last value and what it waited for.
async fn wait_js(
    client: &Client,
    what: &str,
    timeout: Duration,
    script: &str,
    check: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let value = js(client, script).await;
        if check(&value) {
            return (value, started.elapsed());
        }
        if started.elapsed() > timeout {
            let page = js(client, "return document.body.innerText").await;
            panic!(
                "the console did not show {what} within {timeout:?}; last: {value}; the page:\n{}",
                page.as_str().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(client: &Client, css: &str) {
    client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

async fn log_in(client: &Client, token: &str) {
    wait_js(
        client,
        "the login form",
        Duration::from_secs(10),
        "return !document.getElementById('login').hidden",
        |v| v.as_bool() == Some(true),
    )
    .await;
    client.find(Locator::Id("token")).await.unwrap().send_keys(token).await.unwrap();
    click(client, "#login-form button[type=submit]").await;
    wait_js(
        client,
        "the pages after login",
        Duration::from_secs(10),
        "return !document.getElementById('nav').hidden",
        |v| v.as_bool() == Some(true),
    )
    .await;
}

/// Saves a screenshot as `NAME.png` when `TANDEM_CONSOLE_SCREENSHOTS` names a directory.
async fn screenshot(client: &Client, name: &str) {
    let Ok(dir) = std::env::var("TANDEM_CONSOLE_SCREENSHOTS") else { return };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Let the last poll's redraw settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = client.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// `GET path` on `address` without a token; the whole answer, head and body.
fn http_get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// A terminal's heartbeat, as a terminal sends it: `POST /boot/v1/status/{mac}` on the boot port.
fn heartbeat(boot: &str, mac: &str, body: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(boot).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        stream,
        "POST /boot/v1/status/{mac} HTTP/1.1\r\nHost: {boot}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_cluster_live_and_writes_only_with_a_writer_token() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let config = config(&backups);
    let (mut a, mut b, w) = tokio::task::block_in_place(|| {
        harness::pair_with_witness_configured(root.path(), |node| node.with_config(&config).with_token(ADMIN))
    });
    let revision = tokio::task::block_in_place(|| {
        let image = root.path().join("thin-os.img");
        std::fs::write(&image, vec![7u8; 64 * 1024]).unwrap();
        let image = image.display().to_string();
        a.ok(&["firmware", "add", "thin-os", &image, "--version", "1.0", "--reason", "the line's firmware"]);
        a.ok(&[
            "put",
            "terminals",
            "t1",
            r#"{"mac": "02:00:00:00:00:01", "firmware": "thin-os", "settings": {"location": "line 1"}}"#,
            "--reason",
            "a terminal on line 1",
        ]);
        a.ok(&["put", "notes", "welcome", r#"{"text": "hello"}"#, "--reason", "first note"]);
        a.ok(&["put", "notes", "welcome", r#"{"text": "changed by mistake"}"#, "--reason", "edit to undo"]);
        let revision = a.status()["revision"].as_u64().unwrap();
        b.wait_status("b applies the seed", Duration::from_secs(10), |s| {
            s["revision"].as_u64() == Some(revision)
        });
        revision
    });

    // Without a browser: the shell is public and locked down, its files are served, a witness says what it is.
    let shell = http_get(&b.api, "/");
    assert!(shell.starts_with("HTTP/1.1 200"), "{shell}");
    let head = shell.to_lowercase();
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self';"), "{shell}");
    assert!(head.contains("x-content-type-options: nosniff"), "{shell}");
    assert!(shell.contains(r#"<script src="/console/console.js" defer></script>"#), "{shell}");
    assert!(http_get(&b.api, "/console/console.js").starts_with("HTTP/1.1 200"));
    assert!(http_get(&b.api, "/console/secret.txt").starts_with("HTTP/1.1 404"));
    let witness = http_get(&w.api, "/");
    assert!(witness.contains("a Tandem witness") && !witness.contains("<script"), "{witness}");
    assert!(http_get(&b.api, "/v1/terminals").starts_with("HTTP/1.1 401"), "data needs a token");

    let (Some(chromium), Some(chromedriver)) = (program("chromium"), program("chromedriver")) else {
        eprintln!(
            "console: skipped the browser: chromium and chromedriver are not installed (scripts/test.sh installs them)"
        );
        return;
    };
    let driver = Driver::start(&chromedriver);
    let client = browser(&driver, &chromium).await;
    let console = format!("http://{}/", b.api);

    // 1. Log in; the Cluster page shows the pair and the witness, and who leads.
    client.goto(&console).await.unwrap();
    log_in(&client, ADMIN).await;
    let (members, _) = wait_js(
        &client,
        "a, b and w with leader a",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#members tbody tr')].map(r => r.dataset.member + ':' + r.dataset.leader).sort()",
        |v| v == &json!(["a:true", "b:false", "w:false"]),
    )
    .await;
    assert_eq!(members.as_array().unwrap().len(), 3);
    let summary = js(&client, "return document.getElementById('cluster-summary').textContent").await;
    assert!(summary.as_str().unwrap().contains("full+witness"), "{summary}");
    let shell = js(&client, "return document.getElementById('who').textContent").await;
    assert_eq!(shell, "ada (admin)");
    screenshot(&client, "cluster").await;
    client.set_window_size(390, 844).await.unwrap();
    screenshot(&client, "cluster-phone").await;
    client.set_window_size(1280, 800).await.unwrap();

    // 2. Terminals: offline until its heartbeat reaches b, then green.
    click(&client, "#nav a[data-page=terminals]").await;
    let row =
        "const r = document.querySelector('#terminals tr[data-terminal=t1]'); return r && r.dataset.status";
    wait_js(&client, "t1 offline", Duration::from_secs(10), row, |v| v == "offline").await;
    // The terminal boots from b with the real boot client, which then sends its heartbeat.
    let boot = tokio::task::block_in_place(|| {
        let out = root.path().join("t1-boot");
        Command::new(harness::tandem_bin())
            .args(["boot", "--servers", &b.boot, "--mac", "02:00:00:00:00:01", "--out"])
            .arg(&out)
            .output()
            .unwrap()
    });
    assert!(boot.status.success(), "{boot:?}");
    let (_, took) = wait_js(&client, "t1 green", Duration::from_secs(10), row, |v| v == "green").await;
    eprintln!("console: t1 turned green {took:?} after its heartbeat");
    let report =
        js(&client, "return document.querySelector('#terminals tr[data-terminal=t1]').textContent").await;
    let booted = format!("booted from {} at revision {revision}", b.boot);
    assert!(report.as_str().unwrap().contains(&booted), "{report}");
    assert!(took < Duration::from_secs(5), "t1 turned green after {took:?}");
    let counts = js(&client, "return document.getElementById('terminal-counts').textContent").await;
    assert!(counts.as_str().unwrap().contains("Green1"), "{counts}");
    screenshot(&client, "terminals").await;
    // A terminal that reports trouble turns red (its own word), with its report shown.
    let status = heartbeat(&b.boot, "02:00:00:00:00:01", r#"{"state": "red", "detail": "no RDP session"}"#);
    assert_eq!(status, 204, "heartbeat answer");
    wait_js(&client, "t1 red", Duration::from_secs(10), row, |v| v == "red").await;
    let report =
        js(&client, "return document.querySelector('#terminals tr[data-terminal=t1]').textContent").await;
    assert!(report.as_str().unwrap().contains("no RDP session"), "{report}");

    // 3. History: undo the last change from the page, with the CLI's preview and a reason.
    click(&client, "#nav a[data-page=history]").await;
    let undo = format!("#history tr[data-revision='{revision}'] button[data-action=undo]");
    wait_js(
        &client,
        "the change to undo",
        Duration::from_secs(10),
        &format!("return !!document.querySelector(\"{undo}\")"),
        |v| v.as_bool() == Some(true),
    )
    .await;
    click(&client, &undo).await;
    let (preview, _) = wait_js(
        &client,
        "the undo preview",
        Duration::from_secs(10),
        "const d = document.getElementById('confirm'); return d.open ? document.getElementById('confirm-preview').textContent : null",
        |v| v.is_string(),
    )
    .await;
    let preview = preview.as_str().unwrap();
    assert!(
        preview.starts_with(&format!(
            "Undo the change set of revision {revision}, computed at revision {revision}:"
        )),
        "{preview}"
    );
    assert!(preview.contains("0 created, 1 changed, 0 deleted\n  ~ welcome"), "{preview}");
    client
        .find(Locator::Id("confirm-reason"))
        .await
        .unwrap()
        .send_keys("undo from the console")
        .await
        .unwrap();
    screenshot(&client, "history-undo-preview").await;
    click(&client, "#confirm-apply").await;
    let new_row = format!(
        "const r = document.querySelector(\"#history tr[data-revision='{}'] .reason\"); return r && r.textContent",
        revision + 1
    );
    wait_js(&client, "the undo's new event", Duration::from_secs(10), &new_row, |v| {
        v == "undo from the console"
    })
    .await;
    let (note, last) = tokio::task::block_in_place(|| {
        (a.json(&["get", "notes", "welcome"]), a.history().last().cloned().unwrap())
    });
    assert_eq!(note["document"]["document"]["text"], "hello", "{note}");
    assert_eq!(
        (last["revision"].as_u64(), last["actor"].as_str()),
        (Some(revision + 1), Some("ada")),
        "{last}"
    );
    // The field-level diff of the undo.
    click(&client, &format!("#history tr[data-revision='{}'] button[data-action=diff]", revision + 1)).await;
    let (diff, _) = wait_js(
        &client,
        "the undo's diff",
        Duration::from_secs(10),
        "const d = document.querySelector('#detail .diff-doc[data-document=\"notes/welcome\"]'); return d && d.textContent",
        |v| v.is_string(),
    )
    .await;
    assert!(diff.as_str().unwrap().contains("~ text\"changed by mistake\"\"hello\""), "{diff}");
    screenshot(&client, "history").await;
    // A change made elsewhere (the CLI, on a) appears without reloading: the page follows /v1/watch.
    tokio::task::block_in_place(|| {
        a.ok(&["put", "notes", "elsewhere", r#"{"text": "from the CLI"}"#, "--reason", "made with the CLI"])
    });
    let watched = format!(
        "const r = document.querySelector(\"#history tr[data-revision='{}'] .reason\"); return r && r.textContent",
        revision + 2
    );
    wait_js(&client, "the CLI's change, live", Duration::from_secs(5), &watched, |v| {
        v == "made with the CLI"
    })
    .await;
    // The history filters: one collection.
    client.find(Locator::Id("hf-collection")).await.unwrap().send_keys("terminals").await.unwrap();
    click(&client, "#history-filter button[type=submit]").await;
    wait_js(
        &client,
        "only the terminals' changes",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#history tbody tr[data-revision] td.mono')].map(c => c.textContent)",
        |v| v == &json!(["terminals/t1"]),
    )
    .await;
    click(&client, "#hf-clear").await;

    // The other pages render their data.
    click(&client, "#nav a[data-page=backups]").await;
    wait_js(
        &client,
        "the backup cards",
        Duration::from_secs(10),
        "return document.querySelector('#backup-cards [data-field=outcome] .value')?.textContent",
        |v| v.as_str().is_some_and(|text| text.starts_with("another node leads")),
    )
    .await;
    // "Back up now" streams GET /v1/backup with the token and hands the file to the browser.
    click(&client, "#backup-now").await;
    wait_js(
        &client,
        "the downloaded backup",
        Duration::from_secs(10),
        "return document.getElementById('backup-progress').textContent",
        |v| v.as_str().is_some_and(|text| text.starts_with("Downloaded ")),
    )
    .await;
    screenshot(&client, "backups").await;
    click(&client, "#nav a[data-page=boot]").await;
    wait_js(
        &client,
        "the boot counters",
        Duration::from_secs(10),
        "return [document.querySelector('#boot-cards [data-field=heartbeats] .value')?.textContent,
                 document.querySelector('#boot-firmware tr[data-firmware=thin-os]')?.textContent]",
        |v| {
            v[0] == "2" && v[1].as_str().is_some_and(|row| row.contains("64.0 KiB") && row.contains("stored"))
        },
    )
    .await;
    screenshot(&client, "boot").await;

    // 4. A reader: no write button anywhere, and a forged write is refused by the API.
    click(&client, "#logout").await;
    log_in(&client, READER).await;
    assert_eq!(js(&client, "return document.getElementById('who').textContent").await, "eve (reader)");
    for page in ["history", "backups", "cluster"] {
        click(&client, &format!("#nav a[data-page={page}]")).await;
        if page == "history" {
            wait_js(
                &client,
                "the history as a reader",
                Duration::from_secs(10),
                "return document.querySelectorAll('#history tbody tr[data-revision]').length",
                |v| v.as_u64() >= Some(4),
            )
            .await;
        }
        let buttons = js(&client, "return document.querySelectorAll('[data-write], button[data-action=undo], button[data-action=revert]').length").await;
        assert_eq!(buttons, 0, "write buttons shown to a reader on {page}");
    }
    let forged = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/v1/undo', {method: 'POST', headers: {'Authorization': 'Bearer ' + sessionStorage.getItem('tandem-console-token'),
                   'Content-Type': 'application/json'}, body: JSON.stringify({revision: 1, reason: 'forged'})})
               .then(r => r.json().then(body => done([r.status, body.code])), e => done(String(e)));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(forged, json!([403, "forbidden"]));
    let after = tokio::task::block_in_place(|| a.status()["revision"].as_u64());
    assert_eq!(after, Some(revision + 2), "the forged write changed something");

    // 5. Kill the leader: the page on b shows b leading and the degraded state, within 5 s.
    tokio::task::block_in_place(|| a.kill());
    let (_, took) = wait_js(
        &client,
        "b as leader and the degraded banner naming a",
        Duration::from_secs(10),
        "const banner = document.getElementById('degraded');
         const leader = document.querySelector('#cluster-summary [data-field=leader] .value');
         return [leader && leader.textContent, !banner.hidden && banner.textContent.includes('a (data) unreachable')]",
        |v| v == &json!(["b", true]),
    )
    .await;
    eprintln!("console: the page showed the new leader and the degraded state {took:?} after the kill");
    assert!(took <= Duration::from_secs(5), "the page showed the failover after {took:?}");
    screenshot(&client, "cluster-degraded").await;

    // 6. Kill the page's own node: it says so and offers the partner's console.
    tokio::task::block_in_place(|| b.kill());
    let (partner, _) = wait_js(
        &client,
        "that b is not answering",
        Duration::from_secs(10),
        "const banner = document.getElementById('unreachable'); const link = banner.querySelector('a[data-partner=a]');
         return !banner.hidden && link ? link.getAttribute('href') : null",
        |v| v.is_string(),
    )
    .await;
    assert_eq!(partner, json!(format!("http://{}/", a.api)));
    screenshot(&client, "node-down").await;

    client.close().await.unwrap();
    drop(w);
}

/// A mirror serves the console too: it shows the mirrored mode, refuses the write its page asks for with the
/// API's message naming the primary, and when the primary dies it says so with the command that promotes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_console_refuses_writes_and_offers_the_promotion_when_the_primary_dies() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let config = config(&backups);
    let (mut p, m) = tokio::task::block_in_place(|| {
        let mut p = harness::Node::new(root.path(), "p", "data").with_config(&config).with_token(ADMIN);
        let mut m = harness::Node::new(root.path(), "m", "mirror").with_config(&config).with_token(ADMIN);
        p.start(false);
        m.start(true);
        p.add(&m);
        p.ok(&["put", "notes", "n1", r#"{"text": "one"}"#, "--reason", "a note"]);
        m.wait_status("m applies the note", Duration::from_secs(10), |s| s["revision"].as_u64() == Some(1));
        (p, m)
    });
    let (Some(chromium), Some(chromedriver)) = (program("chromium"), program("chromedriver")) else {
        eprintln!("console: skipped the mirror's browser test: chromium and chromedriver are not installed");
        return;
    };
    let driver = Driver::start(&chromedriver);
    let client = browser(&driver, &chromium).await;
    client.goto(&format!("http://{}/", m.api)).await.unwrap();
    log_in(&client, ADMIN).await;
    wait_js(
        &client,
        "the mirrored mode with p leading",
        Duration::from_secs(10),
        "return [document.querySelector('#cluster-summary [data-field=mode] .value')?.textContent,
                 document.querySelector('#cluster-summary [data-field=leader] .value')?.textContent]",
        |v| v == &json!(["mirrored", "p"]),
    )
    .await;

    // The page offers the undo (an admin may write), the preview works, the apply is refused by the mirror.
    click(&client, "#nav a[data-page=history]").await;
    let undo = "#history tr[data-revision='1'] button[data-action=undo]";
    wait_js(
        &client,
        "the change",
        Duration::from_secs(10),
        &format!("return !!document.querySelector(\"{undo}\")"),
        |v| v.as_bool() == Some(true),
    )
    .await;
    click(&client, undo).await;
    wait_js(
        &client,
        "the preview",
        Duration::from_secs(10),
        "return document.getElementById('confirm').open",
        |v| v.as_bool() == Some(true),
    )
    .await;
    client.find(Locator::Id("confirm-reason")).await.unwrap().send_keys("try on the mirror").await.unwrap();
    click(&client, "#confirm-apply").await;
    let primary = "send changes to the primary p";
    wait_js(
        &client,
        "the mirror's refusal",
        Duration::from_secs(10),
        "return document.getElementById('confirm-error').textContent",
        |v| v.as_str().is_some_and(|text| text.contains(primary)),
    )
    .await;
    click(&client, "#confirm-cancel").await;
    assert_eq!(tokio::task::block_in_place(|| p.status()["revision"].as_u64()), Some(1));

    // The primary dies: the mirror keeps serving and says how to promote it (its page probes the primary with a
    // linearizable read every 5 s; the read gives up after 5 s).
    click(&client, "#nav a[data-page=cluster]").await;
    tokio::task::block_in_place(|| p.kill());
    wait_js(
        &client,
        "the promotion command",
        Duration::from_secs(20),
        "const banner = document.getElementById('degraded'); return !banner.hidden && banner.textContent",
        |v| {
            v.as_str().is_some_and(|text| {
                text.contains("promote this mirror") && text.contains("--force-standalone")
            })
        },
    )
    .await;
    screenshot(&client, "mirror-primary-down").await;
    client.close().await.unwrap();
    drop(m);
}
