//! `tandem firmware add NAME FILE --version V [--kernel PATH --initrd PATH --cmdline TEXT]`: upload firmware
//! files as blobs (streamed from disk, never whole in memory, with a progress bar on a terminal), then create
//! or update the `firmware` document that names them, in one change set.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Options of `tandem firmware add`.
#[derive(clap::Args, Debug, Clone)]
pub struct FirmwareAddArgs {
    /// The firmware document's id (what terminals name in their `firmware` field).
    pub name: String,
    /// The firmware image.
    pub file: PathBuf,
    /// The image's version, shown in boot documents.
    #[arg(long)]
    pub version: String,
    /// A kernel for iPXE boots.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// An initrd for iPXE boots.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// The kernel command line for iPXE boots.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Why (recorded in the history; default "firmware NAME version V").
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Streams `path` to `POST /v1/blobs`; returns (digest, size).
async fn upload(server: &str, token: Option<&str>, path: &Path) -> Result<(String, u64)> {
    let file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().await?.len();
    let label = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bar = crate::terminal::byte_progress(size, &label);
    let progress = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
        chunk.map(|bytes: Bytes| {
            progress.inc(bytes.len() as u64);
            Frame::data(bytes)
        })
    });
    let body = BodyExt::boxed(StreamBody::new(stream));
    let base = if server.contains("://") { server.to_string() } else { format!("http://{server}") };
    let mut request = hyper::Request::post(format!("{}/v1/blobs", base.trim_end_matches('/')))
        .header("content-type", "application/octet-stream")
        .header("content-length", size);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let response = client.request(request.body(body)?).await.map_err(|e| {
        crate::client::ClientError::Unreachable { server: base.clone(), message: e.to_string() }
    })?;
    let status = response.status();
    let answer: Value =
        serde_json::from_slice(&response.into_body().collect().await?.to_bytes()).unwrap_or_default();
    bar.finish_and_clear();
    if !status.is_success() {
        bail!(
            "uploading {} failed ({status}): {}",
            path.display(),
            answer["message"].as_str().unwrap_or("?")
        );
    }
    let digest = answer["digest"].as_str().context("the server did not say the blob's digest")?.to_string();
    Ok((digest, answer["size"].as_u64().unwrap_or(size)))
}

/// Uploads the files and writes the firmware document; returns the API's answer.
pub async fn add(server: &str, token: Option<&str>, args: &FirmwareAddArgs) -> Result<Value> {
    let (digest, size) = upload(server, token, &args.file).await?;
    let mut document = json!({"version": args.version, "blob": digest, "size": size});
    for (field, path) in [("kernel", &args.kernel), ("initrd", &args.initrd)] {
        if let Some(path) = path {
            let (digest, _) = upload(server, token, path).await?;
            document[field] = json!(digest);
        }
    }
    if let Some(cmdline) = &args.cmdline {
        document["cmdline"] = json!(cmdline);
    }
    let change = json!({
        "reason": if args.reason.is_empty() { format!("firmware {} version {}", args.name, args.version) } else { args.reason.clone() },
        "operations": [{"put": {"collection": "firmware", "id": args.name, "document": document}}],
    });
    let client = crate::client::ApiClient::new(server, token.map(str::to_string));
    let (status, answer) = client.send(hyper::Method::POST, "/v1/changes", Some(change)).await?;
    if status != 200 {
        bail!("{}", answer["message"].as_str().unwrap_or("the firmware document was refused"));
    }
    Ok(
        json!({"outcome": answer["outcome"], "revision": answer["revision"], "firmware": args.name, "digest": digest, "size": size}),
    )
}
