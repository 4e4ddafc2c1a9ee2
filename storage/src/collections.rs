//! The built-in collections and what a valid document in each looks like.
//!
//! | collection | required | optional | references |
//! |---|---|---|---|
//! | `terminals` | `mac` (unique) | `model`, `firmware`, `terminal_servers`, `modules`, `settings` | `model` → `termcap`, `firmware` → `firmware`, `terminal_servers[]` → `terminal_servers`, `modules[]` → `modules` |
//! | `terminal_servers` | `address` | `port` (1-65535) | |
//! | `firmware` | `version`, `blob` | `size`, `kernel`, `initrd`, `cmdline` | `blob`, `kernel`, `initrd` → blobs |
//! | `modules` | `blob` | `parameters` (object) | `blob` → blob |
//! | `termcap` | (any object) | | |
//!
//! Documents of built-in collections are JSON objects; unknown fields are kept (so newer tools can add fields).
//! Any other collection is free-form: any JSON value.
//!
//! [`inspect`] is used in two places: when deciding a change set, where every problem is a rejection; and when
//! replaying events or loading documents, where it only extracts the [`Links`] (indexes must be rebuilt even if
//! validation rules changed since the event was accepted).

use serde_json::Value;

use crate::digest::Digest;
use crate::limits::{MAX_COLLECTION_NAME, MAX_DOCUMENT_ID};
use crate::mac::Mac;
use crate::rejection::Rejection;

pub const TERMINALS: &str = "terminals";
pub const TERMINAL_SERVERS: &str = "terminal_servers";
pub const FIRMWARE: &str = "firmware";
pub const MODULES: &str = "modules";
pub const TERMCAP: &str = "termcap";

/// The built-in collections, validated at append time.
pub const BUILT_IN: [&str; 5] = [TERMINALS, TERMINAL_SERVERS, FIRMWARE, MODULES, TERMCAP];

/// What a document points at: the indexes are built from these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Links {
    /// The terminal's MAC address (terminals only).
    pub mac: Option<Mac>,
    /// Referenced documents: (field, collection, id).
    pub documents: Vec<(String, &'static str, String)>,
    /// Referenced blobs: (field, digest, size the document claims).
    pub blobs: Vec<(String, Digest, Option<u64>)>,
}

/// Checks a collection name: 1-64 characters of `a-z 0-9 _ -`, starting with a letter.
pub fn check_collection_name(name: &str) -> Result<(), Rejection> {
    let bad = |reason: &str| Rejection::InvalidName {
        what: "collection name".into(),
        name: name.chars().take(80).collect(),
        reason: reason.into(),
    };
    if name.is_empty() || name.len() > MAX_COLLECTION_NAME {
        return Err(bad("must be 1 to 64 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(bad("must start with a lower-case letter"));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
        return Err(bad("may only contain a-z, 0-9, '_' and '-'"));
    }
    Ok(())
}

/// Checks a document id: 1-128 characters of `A-Z a-z 0-9 . _ -`, not starting with '.'.
pub fn check_document_id(id: &str) -> Result<(), Rejection> {
    let bad = |reason: &str| Rejection::InvalidName {
        what: "document id".into(),
        name: id.chars().take(160).collect(),
        reason: reason.into(),
    };
    if id.is_empty() || id.len() > MAX_DOCUMENT_ID {
        return Err(bad("must be 1 to 128 characters"));
    }
    if id.starts_with('.') {
        return Err(bad("must not start with '.'"));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return Err(bad("may only contain A-Z, a-z, 0-9, '.', '_' and '-'"));
    }
    Ok(())
}

/// Validates `value` as a document of `collection` and returns its links, or the first problem found.
pub fn inspect(collection: &str, value: &Value) -> Result<Links, String> {
    let mut links = Links::default();
    let schema: &[Field] = match collection {
        TERMINALS => TERMINAL_FIELDS,
        TERMINAL_SERVERS => TERMINAL_SERVER_FIELDS,
        FIRMWARE => FIRMWARE_FIELDS,
        MODULES => MODULE_FIELDS,
        TERMCAP => &[],
        _ => return Ok(links),
    };
    let Some(object) = value.as_object() else {
        return Err(format!("a {collection} document must be a JSON object, not {}", kind_of(value)));
    };
    for field in schema {
        let Some(value) = object.get(field.name) else {
            if field.required {
                return Err(format!("missing required field '{}'", field.name));
            }
            continue;
        };
        let wrong_type =
            || format!("field '{}' must be {}, not {}", field.name, field.kind.describe(), kind_of(value));
        match field.kind {
            Kind::Text => {
                value.as_str().ok_or_else(wrong_type)?;
            }
            Kind::Object => {
                value.as_object().ok_or_else(wrong_type)?;
            }
            Kind::Port => {
                let port = value.as_u64().ok_or_else(wrong_type)?;
                if !(1..=65535).contains(&port) {
                    return Err(format!("field '{}' must be a port number 1-65535, not {port}", field.name));
                }
            }
            Kind::Size => {
                value.as_u64().ok_or_else(wrong_type)?;
            }
            Kind::Mac => {
                let text = value.as_str().ok_or_else(wrong_type)?;
                links.mac = Some(Mac::parse(text).map_err(|e| format!("field 'mac': {e}"))?);
            }
            Kind::Reference(target) => {
                let id = value.as_str().ok_or_else(wrong_type)?;
                links.documents.push((field.name.into(), target, id.into()));
            }
            Kind::References(target) => {
                let items = value.as_array().ok_or_else(wrong_type)?;
                for (i, item) in items.iter().enumerate() {
                    let id = item.as_str().ok_or_else(|| {
                        format!(
                            "field '{}[{i}]' must be a {target} id (text), not {}",
                            field.name,
                            kind_of(item)
                        )
                    })?;
                    links.documents.push((format!("{}[{i}]", field.name), target, id.into()));
                }
            }
            Kind::Blob => {
                let text = value.as_str().ok_or_else(wrong_type)?;
                let digest = Digest::parse(text).map_err(|e| format!("field '{}': {e}", field.name))?;
                let size =
                    if field.name == "blob" { object.get("size").and_then(Value::as_u64) } else { None };
                links.blobs.push((field.name.into(), digest, size));
            }
        }
    }
    Ok(links)
}

/// Extracts links leniently (ignoring what does not validate): for replay and loading.
pub fn links_of(collection: &str, value: &Value) -> Links {
    if !BUILT_IN.contains(&collection) {
        return Links::default();
    }
    inspect(collection, value).unwrap_or_default()
}

/// Extracts links from a document's JSON text, quickly: replay and loading call this for every document
/// version, so it parses only the fields that carry links (falling back to [`links_of`] when the typed parse
/// fails). For every document that [`inspect`] accepts, the result is the same as `inspect`'s.
pub fn links_of_text(collection: &str, body: &str) -> Links {
    let fast = match collection {
        TERMINALS => serde_json::from_str::<TerminalFields>(body).ok().and_then(|t| t.links()),
        FIRMWARE | MODULES => serde_json::from_str::<BlobFields>(body).ok().and_then(|b| b.links(collection)),
        TERMINAL_SERVERS | TERMCAP => Some(Links::default()),
        _ => return Links::default(),
    };
    fast.unwrap_or_else(|| {
        serde_json::from_str(body).map(|value| links_of(collection, &value)).unwrap_or_default()
    })
}

#[derive(serde::Deserialize)]
struct TerminalFields<'a> {
    #[serde(borrow)]
    mac: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    firmware: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    terminal_servers: Option<Vec<std::borrow::Cow<'a, str>>>,
    #[serde(borrow, default)]
    modules: Option<Vec<std::borrow::Cow<'a, str>>>,
}

impl TerminalFields<'_> {
    fn links(self) -> Option<Links> {
        let mut links = Links { mac: Some(Mac::parse(&self.mac).ok()?), ..Links::default() };
        if let Some(model) = self.model {
            links.documents.push(("model".into(), TERMCAP, model.into_owned()));
        }
        if let Some(firmware) = self.firmware {
            links.documents.push(("firmware".into(), FIRMWARE, firmware.into_owned()));
        }
        for (field, target, ids) in [
            ("terminal_servers", TERMINAL_SERVERS, self.terminal_servers),
            ("modules", MODULES, self.modules),
        ] {
            for (i, id) in ids.into_iter().flatten().enumerate() {
                links.documents.push((format!("{field}[{i}]"), target, id.into_owned()));
            }
        }
        Some(links)
    }
}

#[derive(serde::Deserialize)]
struct BlobFields<'a> {
    #[serde(borrow)]
    blob: std::borrow::Cow<'a, str>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(borrow, default)]
    kernel: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    initrd: Option<std::borrow::Cow<'a, str>>,
}

impl BlobFields<'_> {
    fn links(self, collection: &str) -> Option<Links> {
        let mut links = Links::default();
        links.blobs.push(("blob".into(), Digest::parse(&self.blob).ok()?, self.size));
        if collection == FIRMWARE {
            for (field, digest) in [("kernel", self.kernel), ("initrd", self.initrd)] {
                if let Some(digest) = digest {
                    links.blobs.push((field.into(), Digest::parse(&digest).ok()?, None));
                }
            }
        }
        Some(links)
    }
}

struct Field {
    name: &'static str,
    required: bool,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Object,
    Port,
    Size,
    Mac,
    Reference(&'static str),
    References(&'static str),
    Blob,
}

impl Kind {
    fn describe(self) -> String {
        match self {
            Kind::Text => "text".into(),
            Kind::Object => "an object".into(),
            Kind::Port => "a port number".into(),
            Kind::Size => "a non-negative integer".into(),
            Kind::Mac => "a MAC address (text)".into(),
            Kind::Reference(target) => format!("a {target} id (text)"),
            Kind::References(target) => format!("a list of {target} ids"),
            Kind::Blob => "a sha256 digest (text)".into(),
        }
    }
}

const fn required(name: &'static str, kind: Kind) -> Field {
    Field { name, required: true, kind }
}

const fn optional(name: &'static str, kind: Kind) -> Field {
    Field { name, required: false, kind }
}

const TERMINAL_FIELDS: &[Field] = &[
    required("mac", Kind::Mac),
    optional("model", Kind::Reference(TERMCAP)),
    optional("firmware", Kind::Reference(FIRMWARE)),
    optional("terminal_servers", Kind::References(TERMINAL_SERVERS)),
    optional("modules", Kind::References(MODULES)),
    optional("settings", Kind::Object),
];

const TERMINAL_SERVER_FIELDS: &[Field] = &[required("address", Kind::Text), optional("port", Kind::Port)];

const FIRMWARE_FIELDS: &[Field] = &[
    required("version", Kind::Text),
    required("blob", Kind::Blob),
    optional("size", Kind::Size),
    optional("kernel", Kind::Blob),
    optional("initrd", Kind::Blob),
    optional("cmdline", Kind::Text),
];

const MODULE_FIELDS: &[Field] = &[required("blob", Kind::Blob), optional("parameters", Kind::Object)];

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() => "a number",
        Value::Number(n) if n.is_i64() => "a negative number",
        Value::Number(_) => "a number with a fraction or exponent",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terminal_links_are_extracted() {
        let links = inspect(
            TERMINALS,
            &json!({"mac": "52-54-00-12-34-56", "firmware": "fw1", "terminal_servers": ["ts1", "ts2"], "model": "m1"}),
        )
        .unwrap();
        assert_eq!(links.mac.unwrap().to_string(), "52:54:00:12:34:56");
        assert_eq!(links.documents.len(), 4);
        assert_eq!(
            links.documents[2],
            ("terminal_servers[0]".to_string(), TERMINAL_SERVERS, "ts1".to_string())
        );
    }

    #[test]
    fn fast_link_extraction_agrees_with_inspect() {
        let digest = "ab".repeat(32);
        let documents = [
            (TERMINALS, json!({"mac": "52-54-00-12-34-56"})),
            (
                TERMINALS,
                json!({"mac": "525400123456", "model": "m", "firmware": "f", "terminal_servers": ["a", "b"],
                       "modules": ["x"], "settings": {"k": 1}, "extra": [1, 2]}),
            ),
            (
                FIRMWARE,
                json!({"version": "1", "blob": digest, "size": 5, "kernel": digest, "cmdline": "quiet"}),
            ),
            (MODULES, json!({"blob": digest, "parameters": {"a": "b"}})),
            (TERMINAL_SERVERS, json!({"address": "h", "port": 1})),
            (TERMCAP, json!({"screen": "1080p"})),
            ("free", json!([1, "two"])),
        ];
        for (collection, value) in documents {
            let want = inspect(collection, &value).unwrap();
            assert_eq!(links_of_text(collection, &value.to_string()), want, "{value}");
        }
    }

    #[test]
    fn wrong_types_are_named() {
        let err = inspect(TERMINALS, &json!({"mac": 5})).unwrap_err();
        assert_eq!(err, "field 'mac' must be a MAC address (text), not a number");
        let err = inspect(TERMINAL_SERVERS, &json!({"address": "a", "port": 70000})).unwrap_err();
        assert!(err.contains("1-65535"), "{err}");
        let err = inspect(FIRMWARE, &json!([])).unwrap_err();
        assert_eq!(err, "a firmware document must be a JSON object, not a list");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_collection_name("line-3_hmi").is_ok());
        assert!(check_collection_name("Line").is_err());
        assert!(check_collection_name("").is_err());
        assert!(check_document_id("line-3-hmi.v2").is_ok());
        assert!(check_document_id("../etc").is_err());
        assert!(check_document_id("a b").is_err());
    }
}
