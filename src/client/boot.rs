//! The boot client behind `tandem boot`: it plays the terminal. Servers that fail are reported to a
//! `notice` callback (the command prints them on stderr).
//!
//! It takes the server list the way DHCP option 066 hands it to thin-client loaders ("10.0.0.1 10.0.0.2",
//! primary first, `0.0.0.0` meaning "none"), tries each server in order with a timeout, fetches the
//! terminal's boot document and its firmware (over HTTP or TFTP), verifies the firmware's size and SHA-256
//! against the document, writes both to the output directory, and sends a heartbeat to every listed server
//! that answers (terminals report to every server). It says which server served it and at which revision, and
//! fails with a clear message when none could.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest as _, Sha256};
use tandem_storage::Mac;
use tokio::net::UdpSocket;

/// How the client fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Tftp,
}

/// What `tandem boot` was asked to do (see `crate::cmd::boot` for each option's meaning).
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Boot servers as DHCP option 066 gives them: `"HOST[:PORT] HOST[:PORT]"`, primary first; 0.0.0.0 = none.
    pub servers: String,
    /// The terminal's MAC address.
    pub mac: String,
    /// Seconds to wait for each server (connect, and each read) before trying the next.
    pub timeout: u64,
    pub protocol: Protocol,
    /// Where to write `config.json` and the firmware.
    pub out: PathBuf,
    /// The HTTP port of the servers, for heartbeats when booting over TFTP.
    pub http_port: u16,
}

/// What a successful boot fetched.
#[derive(Debug)]
pub struct BootResult {
    pub server: String,
    pub revision: u64,
    pub firmware: Option<(String, String)>,
}

/// Parses an option-066 server list; adds the protocol's default port where none is given.
pub fn parse_servers(list: &str, default_port: u16) -> Result<Vec<String>> {
    let mut servers = Vec::new();
    for item in list.split([' ', ',']).filter(|s| !s.is_empty()) {
        let host = item.split(':').next().unwrap_or("");
        if host == "0.0.0.0" {
            continue;
        }
        if host.is_empty() {
            bail!("'{item}' is not a server address (use HOST or HOST:PORT)");
        }
        servers.push(if item.contains(':') { item.to_string() } else { format!("{item}:{default_port}") });
    }
    Ok(servers)
}

/// Runs the boot: the first server that serves the whole boot wins.
pub async fn boot(args: &BootOptions, notice: &mut dyn FnMut(&str)) -> Result<BootResult> {
    let mac = Mac::parse(&args.mac)?;
    let default_port = match args.protocol {
        Protocol::Http => 7080,
        Protocol::Tftp => 6969,
    };
    let servers = parse_servers(&args.servers, default_port)?;
    if servers.is_empty() {
        bail!("no boot server given (the list was empty or only 0.0.0.0)");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut failures = Vec::new();
    let mut result = None;
    for server in &servers {
        match boot_from(server, mac, args.protocol, timeout, &args.out).await {
            Ok(booted) => {
                result = Some(booted);
                break;
            }
            Err(error) => {
                notice(&format!("{server}: {error:#}"));
                failures.push(format!("{server}: {error:#}"));
            }
        }
    }
    let Some(result) = result else {
        bail!("no boot server could boot terminal {mac}: {}", failures.join("; "));
    };
    // Terminals report to every server.
    for server in &servers {
        let http = match args.protocol {
            Protocol::Http => server.clone(),
            Protocol::Tftp => {
                format!("{}:{}", server.rsplit_once(':').map_or(server.as_str(), |(h, _)| h), args.http_port)
            }
        };
        // The console's Terminals page shows this detail: which server the terminal booted from, and at which
        // revision of the configuration.
        let detail = format!("booted from {} at revision {}", result.server, result.revision);
        let body = serde_json::json!({"state": "green", "detail": detail});
        let url = format!("/boot/v1/status/{mac}");
        let client = super::ApiClient::new(&plain_http(&http), None).with_timeout(timeout);
        if let Err(error) = client.send_raw(hyper::Method::POST, &url, Some(body)).await {
            notice(&format!("heartbeat to {http} failed: {error}"));
        }
    }
    Ok(result)
}

async fn boot_from(
    server: &str,
    mac: Mac,
    protocol: Protocol,
    timeout: Duration,
    out: &Path,
) -> Result<BootResult> {
    let config = match protocol {
        Protocol::Http => http_get(server, &format!("/boot/v1/config/{mac}"), timeout).await?,
        Protocol::Tftp => tftp_get(server, &format!("config/{mac}"), timeout, None).await?,
    };
    let document: serde_json::Value =
        serde_json::from_slice(&config).context("the boot document is not valid JSON")?;
    let revision = document["revision"].as_u64().unwrap_or(0);
    let mut firmware = None;
    if let Some(name) = document["firmware"]["name"].as_str() {
        let digest =
            document["firmware"]["digest"].as_str().ok_or_else(|| anyhow!("the firmware has no digest"))?;
        let size =
            document["firmware"]["size"].as_u64().ok_or_else(|| anyhow!("the firmware has no size"))?;
        let path = out.join(format!("firmware-{name}"));
        let partial = out.join(format!("firmware-{name}.partial"));
        let mut file =
            std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let mut hasher = Sha256::new();
        let bytes = match protocol {
            Protocol::Http => http_get(server, &format!("/boot/v1/firmware/{name}"), timeout).await?,
            Protocol::Tftp => tftp_get(server, &format!("firmware/{name}"), timeout, Some(size)).await?,
        };
        hasher.update(&bytes);
        file.write_all(&bytes)?;
        file.sync_all()?;
        let actual = hex_digest(hasher);
        if bytes.len() as u64 != size || actual != digest {
            let _ = std::fs::remove_file(&partial);
            bail!(
                "firmware {name} failed verification: {} bytes with sha256 {actual}, expected {size} bytes with {digest}",
                bytes.len()
            );
        }
        std::fs::rename(&partial, &path)?;
        firmware = Some((name.to_string(), digest.to_string()));
    }
    std::fs::write(out.join("config.json"), &config)?;
    Ok(BootResult { server: server.to_string(), revision, firmware })
}

/// A boot server's URL: a bare `HOST:PORT` is always plain HTTP, as terminals speak it (even when the CLI was
/// given `--ca-cert`, which makes bare API addresses mean HTTPS).
fn plain_http(server: &str) -> String {
    if server.contains("://") { server.to_string() } else { format!("http://{server}") }
}

fn hex_digest(hasher: Sha256) -> String {
    tandem_storage::Digest::from(hasher).to_string()
}

async fn http_get(server: &str, path: &str, timeout: Duration) -> Result<Vec<u8>> {
    let client = super::ApiClient::new(&plain_http(server), None).with_timeout(timeout);
    let (status, _, body) = client.send_raw(hyper::Method::GET, path, None).await?;
    if status != 200 {
        bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
    }
    Ok(body.to_vec())
}

/// A minimal TFTP read (RFC 1350 + blksize/tsize options), enough to play a terminal.
async fn tftp_get(server: &str, file: &str, timeout: Duration, expected: Option<u64>) -> Result<Vec<u8>> {
    let addr: SocketAddr = tokio::net::lookup_host(server)
        .await
        .with_context(|| format!("resolving {server}"))?
        .next()
        .ok_or_else(|| anyhow!("{server} resolves to nothing"))?;
    let socket = UdpSocket::bind(if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await?;
    let mut request = vec![0, 1];
    for part in [file, "octet", "blksize", "1468", "tsize", "0"] {
        request.extend_from_slice(part.as_bytes());
        request.push(0);
    }
    socket.send_to(&request, addr).await?;
    let mut block_size = 512usize;
    let mut data = Vec::new();
    let mut expected_block: u16 = 1;
    let mut peer: Option<SocketAddr> = None;
    let mut buffer = vec![0u8; 65536];
    let limit = expected.unwrap_or(u64::MAX).saturating_add(1 << 20);
    loop {
        let (n, from) = tokio::time::timeout(timeout, socket.recv_from(&mut buffer))
            .await
            .map_err(|_| anyhow!("no answer within {} s", timeout.as_secs()))??;
        if from.ip() != addr.ip() || peer.is_some_and(|p| p != from) {
            continue;
        }
        peer = Some(from);
        let packet = &buffer[..n];
        if packet.len() < 4 {
            bail!("malformed TFTP packet");
        }
        match u16::from_be_bytes([packet[0], packet[1]]) {
            6 => {
                for pair in packet[2..].split(|b| *b == 0).collect::<Vec<_>>().chunks(2) {
                    if let [name, value] = pair
                        && name.eq_ignore_ascii_case(b"blksize")
                    {
                        block_size =
                            std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(512);
                    }
                }
                socket.send_to(&[0, 4, 0, 0], from).await?;
            }
            3 => {
                let block = u16::from_be_bytes([packet[2], packet[3]]);
                if block == expected_block {
                    data.extend_from_slice(&packet[4..]);
                    if data.len() as u64 > limit {
                        bail!("the server sent more bytes than the file holds");
                    }
                    expected_block = expected_block.wrapping_add(1);
                }
                socket.send_to(&[0, 4, packet[2], packet[3]], from).await?;
                if block == expected_block.wrapping_sub(1) && packet.len() - 4 < block_size {
                    return Ok(data);
                }
            }
            5 => bail!("TFTP error: {}", String::from_utf8_lossy(&packet[4..]).trim_end_matches('\0')),
            other => bail!("unexpected TFTP packet of type {other}"),
        }
    }
}
