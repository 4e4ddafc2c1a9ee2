//! Preview → confirm → apply: the one way a command changes the configuration on the operator's word.
//!
//! Revert, undo, import, sync and live restore all call an endpoint that takes `dry_run` and `if_revision`
//! (`POST /v1/revert`, `/v1/undo`, `/v1/import`):
//!
//! 1. [`preview`]: the dry run — the node computes the change set and answers it with the revision it was
//!    computed at;
//! 2. the caller's `decide` step: show the preview, ask (or take `--yes`), and do what must happen before the
//!    apply (sync and live restore upload the blobs the node lacks); `false` stops here;
//! 3. [`apply`]: the same request for real, with `if_revision` = the preview's revision. If anything changed
//!    in between, the node refuses (412) and nothing is written: [`FlowError::Moved`].

use hyper::Method;
use serde_json::{Value, json};

use super::api::{ApiClient, ClientError, Refusal};

/// Why a preview or an apply did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The dry run failed (unreachable, refused).
    #[error("{0}")]
    Preview(ClientError),
    /// The apply failed (unreachable, refused other than by a moved revision).
    #[error("{0}")]
    Apply(ClientError),
    /// The dry run answered no revision to apply at.
    #[error("the server's preview has no revision: {0}")]
    NoRevision(Value),
    /// The configuration changed between the preview and the apply: nothing was written.
    #[error("{message}\nhint: run the command again to see what it would change now")]
    Moved { preview: u64, now: Option<u64>, message: String },
}

/// A dry run's answer and the revision it was computed at.
#[derive(Debug, Clone)]
pub struct Preview {
    pub revision: u64,
    pub answer: Value,
}

impl Preview {
    /// The node says nothing would change.
    pub fn is_unchanged(&self) -> bool {
        self.answer["outcome"] == "unchanged"
    }
}

/// What [`preview_confirm_apply`] ended with.
#[derive(Debug)]
pub enum Flow {
    /// `decide` said no (a dry run, nothing to do, or the operator declined): nothing was applied.
    Stopped(Preview),
    /// Applied: the endpoint's answer.
    Applied { preview: Preview, answer: Value },
}

/// Step 1: `POST endpoint` with `dry_run: true`.
pub async fn preview(client: &ApiClient, endpoint: &str, mut body: Value) -> Result<Preview, FlowError> {
    body["dry_run"] = json!(true);
    let answer = client.call(Method::POST, endpoint, Some(body)).await.map_err(FlowError::Preview)?;
    match answer["revision"].as_u64() {
        Some(revision) => Ok(Preview { revision, answer }),
        None => Err(FlowError::NoRevision(answer)),
    }
}

/// Step 3: `POST endpoint` with `dry_run: false` and `if_revision` = the preview's revision.
pub async fn apply(client: &ApiClient, endpoint: &str, mut body: Value, at: u64) -> Result<Value, FlowError> {
    body["dry_run"] = json!(false);
    body["if_revision"] = json!(at);
    let (status, now, bytes) =
        client.send_raw(Method::POST, endpoint, Some(body)).await.map_err(FlowError::Apply)?;
    let answer: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).chars().take(500).collect()));
    match status {
        200..=299 => Ok(answer),
        412 => {
            let message = answer["message"].as_str().unwrap_or("the configuration changed since the preview");
            Err(FlowError::Moved { preview: at, now, message: message.to_string() })
        }
        _ => Err(FlowError::Apply(ClientError::Refused(Refusal::from_answer(status, answer)))),
    }
}

/// The whole flow: preview, `decide` (show, confirm, prepare; `Ok(false)` stops), apply at the preview's
/// revision.
pub async fn preview_confirm_apply<E: From<FlowError>>(
    client: &ApiClient,
    endpoint: &str,
    body: Value,
    decide: impl AsyncFnOnce(&Preview) -> Result<bool, E>,
) -> Result<Flow, E> {
    let preview = preview(client, endpoint, body.clone()).await?;
    if !decide(&preview).await? {
        return Ok(Flow::Stopped(preview));
    }
    let answer = apply(client, endpoint, body, preview.revision).await?;
    Ok(Flow::Applied { preview, answer })
}
