//! The Prometheus side of Tandem against real programs: `promtool` lints every node's `/metrics` and the
//! shipped `docs/prometheus/` files (any lint fails the test), and a real Prometheus server scrapes a pair with
//! a witness, loads the shipped alerts and fires "partner unreachable" when a data node is killed.
//!
//! Both come from Debian's `prometheus` package, which `scripts/test.sh` installs; without `promtool` or
//! `prometheus` on the PATH each test prints "skipped: …" and passes. The server listens on a free port of
//! 127.0.0.1 with its storage in a temporary directory, so a Prometheus service installed beside it (port 9090)
//! is neither used nor disturbed.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{free_port, pair_with_witness};
use serde_json::Value;

/// The shipped Prometheus files.
fn shipped(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/prometheus").join(file)
}

/// Prints a line past the test harness's output capture (like `harness/lazyfs.rs`): skips and timings show
/// in a normal `cargo test` run.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `name` on the PATH, or None after saying why `test` is skipped.
fn tool_or_skip(test: &str, name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        say(&format!(
            "prometheus::{test}: skipped: `{name}` is not on the PATH (Debian package `prometheus`; \
             scripts/test.sh installs it)"
        ));
    }
    found
}

/// Runs `program args` with `stdin`; returns (success, stdout + stderr).
fn run(program: &Path, args: &[&str], stdin: &[u8]) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// `GET url` with curl: (status, body).
fn get(url: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--max-time", "10", url])
        .output()
        .expect("curl (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// `POST url` with a JSON body: the status.
fn post_json(url: &str, body: &str) -> u16 {
    let output = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .args(["-H", "Content-Type: application/json", "--data-binary", body, url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn promtool_finds_no_lint_in_the_metrics_the_rules_or_the_config() {
    let test = "promtool_finds_no_lint_in_the_metrics_the_rules_or_the_config";
    let Some(promtool) = tool_or_skip(test, "promtool") else { return };
    let started = Instant::now();

    // The shipped files, every lint on and fatal. `check config` also loads the rule file it names.
    let rules = shipped("alerts.yml");
    let config = shipped("prometheus.yml");
    for args in [
        ["check", "rules", "--lint=all", "--lint-fatal", rules.to_str().unwrap()],
        ["check", "config", "--lint=all", "--lint-fatal", config.to_str().unwrap()],
    ] {
        let (ok, out) = run(&promtool, &args, b"");
        assert!(ok, "promtool {args:?} failed:\n{out}");
        assert!(
            !out.contains("WARNING") && !out.to_lowercase().contains("lint"),
            "promtool {args:?}:\n{out}"
        );
    }

    // A pair with a witness that has done some of everything, so that every labelled family has a series:
    // writes (committed and rejected), a configured terminal that reports, boot requests, peer figures.
    let root = tempfile::tempdir().unwrap();
    let (a, b, w) = pair_with_witness(root.path());
    a.ok(&["put", "terminals", "t1", r#"{"mac": "52:54:00:00:00:01"}"#]);
    a.ok(&["put", "terminals", "t2", r#"{"mac": "52:54:00:00:00:02"}"#]);
    assert!(!a.cli(&["put", "terminals", "t3", r#"{"mac": "nope"}"#]).status.success());
    b.ok(&["put", "notes", "n1", "{}"]);
    let revision = a.status()["revision"].clone();
    b.wait_status("b has every change", Duration::from_secs(20), |s| s["revision"] == revision);
    for node in [&a, &b] {
        let status = post_json(
            &format!("http://{}/boot/v1/status/52:54:00:00:00:01", node.boot),
            r#"{"state": "green"}"#,
        );
        assert_eq!(status, 204, "heartbeat to {}", node.name);
        let (status, _) = get(&format!("http://{}/boot/v1/config/52:54:00:00:00:01", node.boot));
        assert_eq!(status, 200, "boot config from {}", node.name);
    }

    for node in [&a, &b, &w] {
        let (status, text) = get(&format!("{}/metrics", node.url()));
        assert_eq!(status, 200, "{}: /metrics", node.name);
        let (ok, out) = run(&promtool, &["check", "metrics"], text.as_bytes());
        assert!(
            ok && out.trim().is_empty(),
            "promtool check metrics on {}'s /metrics:\n{out}\n{text}",
            node.name
        );
        // One spelling of a node id: the decimal of `tandem status`.
        let id = node.status()["id"].as_u64().unwrap();
        let info = format!("tandem_node_info{{id=\"{id}\",name=\"{}\",role=\"{}\"}} 1", node.name, node.role);
        assert!(text.contains(&info), "{}: no `{info}` in\n{text}", node.name);
    }
    let (_, leader) = get(&format!("{}/metrics", a.url()));
    for family in [
        "tandem_raft_peer_reachable{peer=\"b\",role=\"data\"} 1",
        "tandem_raft_peer_reachable{peer=\"w\",role=\"witness\"} 1",
        "tandem_raft_peer_lag_seconds{peer=\"b\"}",
        "tandem_raft_peer_lag_entries{peer=\"b\"}",
        "tandem_boot_requests_total{",
        "tandem_api_requests_total{",
        "tandem_proposals_total{result=\"rejected\"} 1",
        "tandem_terminals_offline 1",
        "tandem_raft_leader_changes_total",
    ] {
        assert!(leader.contains(family), "the leader's /metrics has no `{family}`:\n{leader}");
    }
    let (_, follower) = get(&format!("{}/metrics", b.url()));
    assert!(follower.contains("tandem_raft_peer_reachable{peer=\"a\",role=\"data\"} 1"), "{follower}");
    say(&format!("prometheus::{test}: {:.1} s", started.elapsed().as_secs_f64()));
}

/// A `prometheus` server process, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `binary` on `dir/prometheus.yml` with its storage in `dir/data`, on a free port of 127.0.0.1, and
    /// waits (bounded) until it is ready.
    fn start(binary: &Path, dir: &Path) -> Prometheus {
        let address = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn prometheus");
        let mut server = Prometheus { child, url: format!("http://{address}"), log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(&format!("{}/-/ready", server.url)).0 != 200 {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", server.log_text());
            }
            assert!(Instant::now() < deadline, "prometheus not ready within 30 s:\n{}", server.log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn api(&self, path: &str) -> Value {
        let (status, body) = get(&format!("{}/api/v1/{path}", self.url));
        assert_eq!(status, 200, "GET /api/v1/{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The alerts named `name`, as `/api/v1/alerts` lists them (pending and firing).
    fn alerts(&self, name: &str) -> Vec<Value> {
        let all = self.api("alerts")["data"]["alerts"].as_array().cloned().unwrap_or_default();
        all.into_iter().filter(|alert| alert["labels"]["alertname"] == name).collect()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped alerts.yml with the `for:` of alert `name` replaced by `window` (exactly one line changes).
fn alerts_with_window(name: &str, window: &str) -> String {
    let text = std::fs::read_to_string(shipped("alerts.yml")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let start =
        lines.iter().position(|l| l.trim() == format!("- alert: {name}")).expect("the alert is shipped");
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim().starts_with("- alert:"))
        .map_or(lines.len(), |i| start + 1 + i);
    let line =
        lines[start..end].iter().position(|l| l.trim().starts_with("for:")).expect("the alert has a for:");
    let indent = lines[start + line].len() - lines[start + line].trim_start().len();
    lines[start + line] = format!("{}for: {window}", " ".repeat(indent));
    lines.join("\n") + "\n"
}

#[test]
fn prometheus_fires_partner_unreachable_when_a_data_node_is_killed() {
    let test = "prometheus_fires_partner_unreachable_when_a_data_node_is_killed";
    const ALERT: &str = "TandemPartnerUnreachable";
    let Some(binary) = tool_or_skip(test, "prometheus") else { return };
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let (mut a, b, w) = pair_with_witness(root.path());

    // The shipped rules, but the alert's `for: 1m` shortened to 5 s (the only change), and 1 s scrape and
    // evaluation intervals, so the test takes seconds; the expression, labels and annotations are the shipped
    // ones.
    let dir = root.path().join("prometheus");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("alerts.yml"), alerts_with_window(ALERT, "5s")).unwrap();
    let targets: Vec<String> = [&a, &b, &w].iter().map(|node| format!("\"{}\"", node.api)).collect();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - alerts.yml\n\
             scrape_configs:\n  - job_name: tandem\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let prometheus = Prometheus::start(&binary, &dir);

    // Every node scraped, and the partner alert quiet, before anything is killed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let targets =
            prometheus.api("targets")["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        let up = targets.iter().filter(|t| t["health"] == "up").count();
        if up == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 targets not up within 30 s: {targets:#?}\n{}",
            prometheus.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let rules = prometheus.api("rules")["data"]["groups"].to_string();
    assert!(rules.contains(ALERT), "prometheus did not load the alert: {rules}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(prometheus.alerts(ALERT), Vec::<Value>::new(), "the alert is active before any node died");

    // The leader dies; the survivors elect a new one, which reports `a` unreachable.
    a.kill();
    let killed = Instant::now();
    let (mut pending_after, mut firing) = (None, None);
    while killed.elapsed() < Duration::from_secs(60) {
        for alert in prometheus.alerts(ALERT) {
            assert_eq!(alert["labels"]["peer"], "a", "only `a` is down: {alert:#}");
            match alert["state"].as_str() {
                Some("pending") => pending_after = pending_after.or(Some(killed.elapsed())),
                Some("firing") => firing = Some((killed.elapsed(), alert)),
                other => panic!("alert state {other:?}"),
            }
        }
        if firing.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let Some((after, alert)) = firing else {
        panic!(
            "{ALERT} did not fire within 60 s of killing a (pending after {pending_after:?}); b: {:#}\n{}",
            b.status(),
            prometheus.log_text()
        );
    };
    assert!(after >= Duration::from_secs(5), "fired {after:?} after the kill, before its 5 s `for:` window");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert:#}");
    assert_eq!(alert["labels"]["job"], "tandem", "{alert:#}");
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("data node a "), "{alert:#}");
    say(&format!(
        "prometheus::{test}: pending {:.1} s and firing {:.1} s after the kill ({:.1} s in all)",
        pending_after.unwrap_or_default().as_secs_f64(),
        after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
    drop((b, w));
}

/// The value of the sample `series` (name and labels as written) in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The survivor of a pair without witness has no leader and no quorum: it reports its partner unreachable
/// (`tandem_raft_peer_reachable` 0, from its vote requests) and itself degraded, as `tandem status` does, and
/// the metrics stay lint-free. The follower of a healthy pair reports its leader reachable.
#[test]
fn the_survivor_of_a_pair_reports_its_partner_unreachable() {
    let root = tempfile::tempdir().unwrap();
    let (mut a, b) = harness::pair(root.path());
    b.wait_status("b follows a", Duration::from_secs(20), |s| s["leader_name"] == "a");
    let (_, text) = get(&format!("{}/metrics", b.url()));
    assert_eq!(sample(&text, "tandem_raft_peer_reachable{peer=\"a\",role=\"data\"}"), Some(1.0), "{text}");
    let (_, text) = get(&format!("{}/metrics", a.url()));
    assert_eq!(sample(&text, "tandem_raft_peer_reachable{peer=\"b\",role=\"data\"}"), Some(1.0), "{text}");
    assert!(sample(&text, "tandem_raft_peer_lag_seconds{peer=\"b\"}").is_some(), "{text}");

    a.kill();
    let status = b.wait_status("b degraded, a unreachable", Duration::from_secs(20), |s| {
        s["degraded"] == true && s["peers"][0]["reachable"] == false
    });
    assert_eq!(status["peers"][0]["name"], "a", "{status:#}");
    let (_, text) = get(&format!("{}/metrics", b.url()));
    assert_eq!(sample(&text, "tandem_raft_peer_reachable{peer=\"a\",role=\"data\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "tandem_node_degraded"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "tandem_raft_has_leader"), Some(0.0), "{text}");
    let page = b.ok(&["status"]);
    let row = page.lines().find(|line| line.starts_with("a ")).unwrap_or_default();
    assert_eq!(row.split_whitespace().nth(3), Some("no"), "the status page shows a unreachable:\n{page}");
    if let Some(promtool) = tool_or_skip("the_survivor_of_a_pair_reports_its_partner_unreachable", "promtool")
    {
        let (ok, out) = run(&promtool, &["check", "metrics"], text.as_bytes());
        assert!(ok && out.trim().is_empty(), "promtool check metrics on the survivor:\n{out}\n{text}");
    }
}

/// Every query of the Grafana dashboard is valid PromQL: each becomes a recording rule (with the dashboard's
/// `$instance` variable set to "all") and `promtool check rules` parses them all.
#[test]
fn promtool_parses_every_query_of_the_grafana_dashboard() {
    let test = "promtool_parses_every_query_of_the_grafana_dashboard";
    let Some(promtool) = tool_or_skip(test, "promtool") else { return };
    let dashboard: Value = serde_json::from_str(include_str!("../docs/grafana/tandem.json")).unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut count = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().replace("$instance", ".*");
            rules.push_str(&format!(
                "      - record: dashboard:query_{count}\n        expr: {}\n",
                serde_json::json!(expr)
            ));
            count += 1;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let (ok, output) = run(&promtool, &["check", "rules", file.to_str().unwrap()], b"");
    assert!(ok, "promtool rejects a dashboard query:\n{output}\n{rules}");
    assert!(output.contains(&format!("{count} rules found")), "{output}");
}
