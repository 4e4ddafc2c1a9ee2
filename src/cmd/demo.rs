//! `tandem demo`: a pair with a witness on loopback in one command, to try failover by hand.
//!
//! Starts three `tandem serve` processes of this very binary (data nodes `a` and `b`, witness `w`) on free
//! ports of 127.0.0.1, with data directories and a generated cluster secret (mode 0600) in a new temporary
//! directory; forms the cluster through `a`'s API as `tandem servers add` would; writes some configuration
//! (a terminal server, three terminals, a small firmware image and a change with a reason, so the history has
//! something to show); boots terminal `t1` with the boot client so it counts as online; then prints the
//! addresses and the commands to try, and waits. Ctrl-C (or SIGTERM) stops the three nodes and removes the
//! directory (`--keep` keeps it). Killing a node by hand is part of the demo: the others go on.
//!
//! With `--json` the addresses and process ids are printed as one JSON line once everything is ready (for
//! scripts and tests).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use hyper::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::error::CmdError;
use crate::client::boot::{BootOptions, Protocol};
use crate::client::firmware::Firmware;
use crate::client::{ApiClient, Progress};
use crate::http::free_port;

/// Options of `tandem demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to put the three data directories (default: a new temporary directory, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the directory when the demo stops.
    #[arg(long)]
    pub keep: bool,
}

/// One node of the demo: its addresses and, once started, its process.
struct DemoNode {
    name: &'static str,
    role: &'static str,
    api: String,
    peer: String,
    boot: String,
    tftp: String,
    child: Option<Child>,
}

impl DemoNode {
    fn new(name: &'static str, role: &'static str) -> Result<Self, CmdError> {
        let port = || free_port().map_err(|e| CmdError::failed(format!("no free port on 127.0.0.1: {e}")));
        Ok(DemoNode {
            name,
            role,
            api: format!("127.0.0.1:{}", port()?),
            peer: format!("127.0.0.1:{}", port()?),
            boot: format!("127.0.0.1:{}", port()?),
            tftp: format!("127.0.0.1:{}", port()?),
            child: None,
        })
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(&self.api, None).with_timeout(Duration::from_secs(10))
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Starts `tandem serve` for this node and waits (bounded) until its API answers.
    async fn start(&mut self, root: &Path, secret_file: &Path) -> Result<(), CmdError> {
        let exe =
            std::env::current_exe().map_err(|e| CmdError::failed(format!("cannot find this binary: {e}")))?;
        let log = std::fs::File::create(root.join(format!("{}.log", self.name)))
            .map_err(|e| CmdError::failed(format!("cannot create the log of {}: {e}", self.name)))?;
        let log_err = log.try_clone().map_err(|e| CmdError::failed(e.to_string()))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(root.join(self.name))
            .args(["--name", self.name, "--role", self.role, "--api", &self.api, "--peer", &self.peer])
            .args(["--boot", &self.boot, "--tftp", &self.tftp])
            .arg("--cluster-secret-file")
            .arg(secret_file)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true);
        if self.name != "a" {
            command.arg("--join");
        }
        self.child =
            Some(command.spawn().map_err(|e| CmdError::failed(format!("starting {}: {e}", self.name)))?);
        for _ in 0..200 {
            if let Ok((200, _)) = self.client().send(Method::GET, "/v1/node", None).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(CmdError::failed(format!(
            "{} did not answer within 10 s; see {}",
            self.name,
            root.join(format!("{}.log", self.name)).display()
        )))
    }

    /// Stops the node (SIGKILL: its data directory goes away with the demo) and reaps it.
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// Runs `tandem demo`.
pub async fn run(args: &DemoArgs, json: bool) -> Result<(), CmdError> {
    let (root, temporary) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CmdError::failed(format!("cannot create {}: {e}", dir.display())))?;
            (dir.clone(), None)
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("tandem-demo-")
                .tempdir()
                .map_err(|e| CmdError::failed(format!("cannot create a temporary directory: {e}")))?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    let mut nodes =
        [DemoNode::new("a", "data")?, DemoNode::new("b", "data")?, DemoNode::new("w", "witness")?];
    let outcome = run_nodes(&root, &mut nodes, json).await;
    for node in &mut nodes {
        node.stop().await;
    }
    match temporary {
        Some(dir) if args.keep => {
            let kept = dir.keep();
            eprintln!("demo stopped; its directory is kept: {}", kept.display());
        }
        Some(dir) => {
            drop(dir);
            eprintln!("demo stopped; its directory is removed");
        }
        None => eprintln!("demo stopped; its directory is kept: {}", root.display()),
    }
    outcome
}

/// Starts and seeds the cluster, prints how to use it, and waits for Ctrl-C or SIGTERM.
async fn run_nodes(root: &Path, nodes: &mut [DemoNode; 3], json: bool) -> Result<(), CmdError> {
    let secret_file = root.join("cluster-secret");
    write_secret(&secret_file)?;
    for node in nodes.iter_mut() {
        node.start(root, &secret_file).await?;
    }
    form_cluster(nodes).await?;
    seed(root, nodes).await?;
    print_ready(root, nodes, json);
    wait_for_stop().await;
    Ok(())
}

/// A random 32-hex-digit cluster secret in a file of mode 0600.
fn write_secret(path: &Path) -> Result<(), CmdError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let secret: String = (0..16).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CmdError::failed(format!("cannot write {}: {e}", path.display())))?;
    writeln!(file, "{secret}").map_err(|e| CmdError::failed(format!("cannot write {}: {e}", path.display())))
}

/// Adds b and w through a's API, as `tandem servers add` does.
async fn form_cluster(nodes: &[DemoNode; 3]) -> Result<(), CmdError> {
    let leader = nodes[0].client();
    for node in &nodes[1..] {
        let info = node.client().call(Method::GET, "/v1/node", None).await?;
        let body = json!({"id": info["id"], "name": node.name, "role": node.role, "peer_addr": info["peer_addr"],
                          "api_addr": info["api_addr"], "boot_addr": info["boot_addr"]});
        leader.call(Method::POST, "/v1/cluster/servers", Some(body)).await?;
    }
    Ok(())
}

/// Progress of the demo's firmware upload: none shown.
struct Quiet;

impl Progress for Quiet {
    fn advance(&self, _bytes: u64) {}
}

/// Writes the demo configuration (each step a change with a reason, so the history tells the story) and boots
/// terminal t1 once.
async fn seed(root: &Path, nodes: &[DemoNode; 3]) -> Result<(), CmdError> {
    let a = nodes[0].client();
    let put = async |path: &str, reason: &str, document: Value| -> Result<(), CmdError> {
        let path = format!("/v1/docs/{path}?reason={}", crate::http::percent_encode(reason));
        a.call(Method::PUT, &path, Some(document)).await.map(|_| ()).map_err(CmdError::from)
    };
    let image = root.join("thin-os-1.0.img");
    let bytes: Vec<u8> = (0..256 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&image, bytes)
        .map_err(|e| CmdError::failed(format!("cannot write the demo image: {e}")))?;
    let firmware = Firmware {
        name: "thin-os".into(),
        file: image,
        version: "1.0".into(),
        kernel: None,
        initrd: None,
        cmdline: None,
        reason: "demo: the firmware every terminal boots".into(),
    };
    crate::client::firmware::add(&a, &firmware, Arc::new(Quiet)).await?;
    put(
        "terminal_servers/rds1",
        "demo: the line's session host",
        json!({"address": "10.0.0.50", "port": 3389}),
    )
    .await?;
    for (i, line) in [(1, "line 1"), (2, "line 2"), (3, "packaging")] {
        let document = json!({"mac": format!("02:00:00:00:00:0{i}"), "firmware": "thin-os",
                              "terminal_servers": ["rds1"], "settings": {"location": line}});
        put(&format!("terminals/t{i}"), &format!("demo: new terminal on {line}"), document).await?;
    }
    put(
        "terminals/t3",
        "demo: packaging gets full HD",
        json!({"mac": "02:00:00:00:00:03", "firmware": "thin-os", "terminal_servers": ["rds1"],
               "settings": {"location": "packaging", "resolution": "1920x1080"}}),
    )
    .await?;
    let boot = BootOptions {
        servers: format!("{} {}", nodes[0].boot, nodes[1].boot),
        mac: "02:00:00:00:00:01".into(),
        timeout: 5,
        protocol: Protocol::Http,
        out: root.join("t1-boot"),
        http_port: 7080,
    };
    crate::client::boot::boot(&boot, &mut |_| {})
        .await
        .map_err(|e| CmdError::failed(format!("the demo terminal t1 did not boot: {e}")))?;
    Ok(())
}

/// Prints the addresses and what to try (or, with `--json`, one JSON line).
fn print_ready(root: &Path, nodes: &[DemoNode; 3], json: bool) {
    if json {
        let members: Vec<Value> = nodes
            .iter()
            .map(|n| {
                json!({"name": n.name, "role": n.role, "api": format!("http://{}", n.api), "boot": n.boot,
                            "tftp": n.tftp, "pid": n.pid()})
            })
            .collect();
        let console = format!("http://{}/", nodes[1].api);
        println!("{}", json!({"ready": true, "dir": root, "nodes": members, "console": console}));
        return;
    }
    let [a, b, w] = nodes;
    println!("Tandem demo: a pair with a witness on 127.0.0.1 (data in {})\n", root.display());
    for n in nodes {
        println!(
            "  {:<2} {:<8} API http://{:<21} boot http://{:<21} pid {}",
            n.name,
            n.role,
            n.api,
            n.boot,
            n.pid().map_or("-".into(), |p| p.to_string())
        );
    }
    println!(
        "\nConsole (open in a browser; no token on this loopback demo): http://{}/ (b's; a's is http://{}/)",
        b.api, a.api
    );
    println!(
        "\nTry, in another shell:\n\
         \x20 tandem --server http://{a} status                  # mode full+witness, terminal t1 online\n\
         \x20 tandem --server http://{a} history                 # who changed what, and why\n\
         \x20 tandem --server http://{b} put notes hello '{{\"hi\": 1}}' --reason \"from b\"   # b forwards to the leader\n\
         \x20 kill {a_pid}                                    # a dies: b (or w) takes over within a second; the console shows it\n\
         \x20 tandem --server http://{b} status                  # new leader, degraded: a unreachable\n\
         \x20 tandem boot --servers \"{a_boot} {b_boot}\" --mac 02:00:00:00:00:02   # a terminal boots from whoever answers\n\
         \x20 curl http://{b}/metrics                            # what Prometheus scrapes\n\
         \nCtrl-C stops all three and removes the directory (--keep keeps it). Witness: http://{w}.",
        a = a.api,
        b = b.api,
        w = w.api,
        a_pid = a.pid().map_or("<pid of a>".into(), |p| p.to_string()),
        a_boot = a.boot,
        b_boot = b.boot,
    );
}

/// Waits for Ctrl-C or SIGTERM.
async fn wait_for_stop() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
