//! Documents: `GET /v1/docs/{collection}`, `GET`, `PUT` and `DELETE /v1/docs/{collection}/{id}`.

use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::json;
use tandem_cluster::node::ClusterNode;
use tandem_storage::limits::MAX_CHANGE_SET_BYTES;
use tandem_storage::{ChangeSet, DocKey, Operation, Precondition, Revision, StoredDocument};

use super::routes::Call;
use super::{meta_from, query_number, query_value, read_error, write};
use crate::http::{ApiError, Body, json_response, parse_json, read_body};

/// `PUT /v1/docs/{collection}/{id}`: create or replace a document.
pub async fn put(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let (collection, id) = (call.param(0), call.param(1));
    let body = read_body(
        call.request.into_body(),
        MAX_CHANGE_SET_BYTES + 4096,
        call.state.limits.http.body_read_timeout,
    )
    .await?;
    let document: serde_json::Value = parse_json(&body)?;
    let mut change = ChangeSet::new(meta_from(&call.query, &call.caller));
    change.operations.push(Operation::Put {
        collection: collection.to_string(),
        id: id.to_string(),
        document: document.into(),
    });
    add_document_preconditions(&mut change, &collection, &id, &call.query)?;
    write(call.state, change).await
}

/// `DELETE /v1/docs/{collection}/{id}`.
pub async fn delete(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let (collection, id) = (call.param(0), call.param(1));
    let mut change = ChangeSet::new(meta_from(&call.query, &call.caller));
    change.operations.push(Operation::Delete { collection: collection.to_string(), id: id.to_string() });
    add_document_preconditions(&mut change, &collection, &id, &call.query)?;
    write(call.state, change).await
}

/// `GET /v1/docs/{collection}`, `local` or `linearizable`.
pub async fn list(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    read_barrier(&call.state.node, &call.query).await?;
    list_documents(&call.state.node, &call.param(0))
}

/// `GET /v1/docs/{collection}/{id}`, now or `at` a revision, `local` or `linearizable`.
pub async fn get(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    get_document(&call.state.node, &call.param(0), &call.param(1), &call.query).await
}

/// The `consistency` of a read: `local` (default) reads this node's replica as it is; `linearizable` first
/// waits until it has applied everything committed before the request, on any data node or mirror
/// ([`ClusterNode::linearizable_barrier`]).
async fn read_barrier(node: &ClusterNode, query: &[(String, String)]) -> Result<(), ApiError> {
    match query_value(query, "consistency").unwrap_or("local") {
        "local" => Ok(()),
        "linearizable" => node.linearizable_barrier().await.map(|_| ()).map_err(read_error),
        other => Err(ApiError::bad_request(format!(
            "consistency must be 'local' or 'linearizable', not '{other}'"
        ))),
    }
}

/// One document as the API shows it.
#[derive(Debug, Serialize)]
struct DocumentView {
    collection: String,
    id: String,
    create_revision: Revision,
    mod_revision: Revision,
    version: u64,
    document: serde_json::Value,
}

impl DocumentView {
    fn new(key: &DocKey, document: &StoredDocument) -> Self {
        DocumentView {
            collection: key.collection.clone(),
            id: key.id.clone(),
            create_revision: document.create_revision,
            mod_revision: document.mod_revision,
            version: document.version,
            document: document.value(),
        }
    }
}

fn add_document_preconditions(
    change: &mut ChangeSet,
    collection: &str,
    id: &str,
    query: &[(String, String)],
) -> Result<(), ApiError> {
    if let Some(mod_revision) = query_number(query, "if_mod_revision")? {
        change.preconditions.push(Precondition::DocumentRevision {
            collection: collection.into(),
            id: id.into(),
            mod_revision: Revision(mod_revision),
        });
    }
    if query_value(query, "if_absent").is_some() {
        change
            .preconditions
            .push(Precondition::MustNotExist { collection: collection.into(), id: id.into() });
    }
    if let Some(revision) = query_number(query, "if_revision")? {
        change.preconditions.push(Precondition::StoreRevision { revision: Revision(revision) });
    }
    Ok(())
}

/// Refuses a collection name (and document id) that no document could have, before reading anything.
fn check_names(collection: &str, id: Option<&str>) -> Result<(), ApiError> {
    tandem_storage::collections::check_collection_name(collection)
        .and_then(|()| id.map_or(Ok(()), tandem_storage::collections::check_document_id))
        .map_err(|rejection| ApiError::bad_request(rejection.to_string()))
}

fn list_documents(node: &ClusterNode, collection: &str) -> Result<Response<Body>, ApiError> {
    check_names(collection, None)?;
    let store = node.read_store()?;
    let documents: Vec<DocumentView> = store
        .projection()
        .collection(collection)
        .map(|(key, document)| DocumentView::new(key, document))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"revision": store.revision(), "documents": documents})))
}

async fn get_document(
    node: &ClusterNode,
    collection: &str,
    id: &str,
    query: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    check_names(collection, Some(id))?;
    read_barrier(node, query).await?;
    let key = DocKey::new(collection, id);
    let store = node.read_store()?;
    if let Some(at) = query_number(query, "at")? {
        let document = store.get_at(&key, Revision(at)).map_err(super::storage_error)?;
        return match document {
            Some(document) => Ok(json_response(
                StatusCode::OK,
                &json!({"revision": at, "document": DocumentView::new(&key, &document)}),
            )),
            None => Err(ApiError::not_found(format!("{key} did not exist at revision {at}"))),
        };
    }
    match store.get(&key) {
        Some(document) => Ok(json_response(
            StatusCode::OK,
            &json!({"revision": store.revision(), "document": DocumentView::new(&key, document)}),
        )),
        None => Err(ApiError::not_found(format!("{key} does not exist (at revision {})", store.revision()))),
    }
}
