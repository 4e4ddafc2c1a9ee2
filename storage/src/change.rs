//! Change sets: the only way configuration changes.
//!
//! A [`ChangeSet`] is a command: "make these document operations, atomically, if these preconditions hold".
//! It carries who asked (actor), why (reason), when (stamped once by the proposing node, so that every replica
//! records the same time and nothing reads the clock while applying) and an optional client request id (a
//! retried change set with the same id applies once).
//!
//! A change set is *decided* ([`crate::decide()`]) against the current state: accepted, it becomes an
//! [`crate::Event`] with the next [`Revision`]; rejected, it becomes a [`crate::Rejection`]. The same change set
//! decided against the same state gives the same answer on every replica.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration revision: 1, 2, 3 … with no gaps, one per accepted change set. Revision 0 is the empty
/// configuration before the first change. Independent of Raft log indexes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision after this one.
    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Names one document: a collection and an id within it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocKey {
    pub collection: String,
    pub id: String,
}

impl DocKey {
    pub fn new(collection: impl Into<String>, id: impl Into<String>) -> Self {
        DocKey { collection: collection.into(), id: id.into() }
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.collection, self.id)
    }
}

/// A JSON value that travels well in both of Tandem's encodings: as plain JSON in human-readable formats
/// (the HTTP API), and as its compact JSON text in binary ones (bincode in the Raft log and on disk), since
/// bincode cannot encode a self-describing value.
#[derive(Clone, Debug, PartialEq)]
pub struct Json(pub serde_json::Value);

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.0.serialize(serializer)
        } else {
            serializer.serialize_str(&self.0.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            serde_json::Value::deserialize(deserializer).map(Json)
        } else {
            let text = String::deserialize(deserializer)?;
            serde_json::from_str(&text).map(Json).map_err(serde::de::Error::custom)
        }
    }
}

impl From<serde_json::Value> for Json {
    fn from(value: serde_json::Value) -> Self {
        Json(value)
    }
}

/// Who made a change, why, when, from where, and under which client request id.
///
/// `token` and `source` were added after the first release: values of the earlier encoding are read
/// through [`crate::legacy`], and have neither.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMeta {
    /// Who asked: the person or tool the client names (`X-Tandem-Actor`, `tandem --actor`), else the token's
    /// name; or a tool (`sync`, `restore`).
    pub actor: String,
    /// Why, in the operator's words. May be empty.
    pub reason: String,
    /// Milliseconds since the Unix epoch, stamped by the proposing node.
    pub timestamp_ms: u64,
    /// A client-chosen id: a change set whose id was already accepted is answered with the earlier revision
    /// and appends nothing.
    pub request_id: Option<String>,
    /// The name of the API token that authorized the change (`local` on a node without tokens); `None` for
    /// changes made offline or recorded before tokens were.
    #[serde(default)]
    pub token: Option<String>,
    /// The address the change came from, as the receiving node saw it (`IP:port` of the API client).
    #[serde(default)]
    pub source: Option<String>,
}

/// One operation on one document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Create or replace a document.
    Put { collection: String, id: String, document: Json },
    /// Apply an RFC 7396 JSON merge patch to an existing document.
    Patch { collection: String, id: String, patch: Json },
    /// Delete an existing document.
    Delete { collection: String, id: String },
}

impl Operation {
    /// The document this operation touches.
    pub fn key(&self) -> DocKey {
        match self {
            Operation::Put { collection, id, .. }
            | Operation::Patch { collection, id, .. }
            | Operation::Delete { collection, id } => DocKey::new(collection, id),
        }
    }
}

/// A condition that must hold, before any operation of the change set, for it to be accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Precondition {
    /// The store is exactly at this revision (nothing changed since the client looked).
    StoreRevision { revision: Revision },
    /// The document exists and was last modified at this revision.
    DocumentRevision { collection: String, id: String, mod_revision: Revision },
    /// The document does not exist.
    MustNotExist { collection: String, id: String },
    /// The document exists.
    MustExist { collection: String, id: String },
}

/// One atomic configuration change: operations, preconditions, metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeSet {
    pub meta: ChangeMeta,
    pub preconditions: Vec<Precondition>,
    pub operations: Vec<Operation>,
}

impl ChangeSet {
    /// A change set with the given metadata and no operations yet.
    pub fn new(meta: ChangeMeta) -> Self {
        ChangeSet { meta, preconditions: Vec::new(), operations: Vec::new() }
    }

    /// Adds a put operation.
    pub fn put(mut self, collection: &str, id: &str, document: serde_json::Value) -> Self {
        self.operations.push(Operation::Put {
            collection: collection.into(),
            id: id.into(),
            document: Json(document),
        });
        self
    }

    /// Adds a merge-patch operation.
    pub fn patch(mut self, collection: &str, id: &str, patch: serde_json::Value) -> Self {
        self.operations.push(Operation::Patch {
            collection: collection.into(),
            id: id.into(),
            patch: Json(patch),
        });
        self
    }

    /// Adds a delete operation.
    pub fn delete(mut self, collection: &str, id: &str) -> Self {
        self.operations.push(Operation::Delete { collection: collection.into(), id: id.into() });
        self
    }

    /// Adds a precondition.
    pub fn require(mut self, precondition: Precondition) -> Self {
        self.preconditions.push(precondition);
        self
    }
}
