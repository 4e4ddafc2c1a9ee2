//! [`StoreContent`]: boot paths resolved against this node's own replica of the store.
//!
//! Every boot server (HTTP, TFTP) asks one question — "what are the bytes of `config/{mac}`?" — and this module
//! answers it from the node's [`SharedStore`], under a read lock held only for lookups. Nothing here goes
//! through consensus: a follower, a mirror, or a node whose peers are all down answers from what it has
//! applied. The only thing a node refuses to serve is *nothing trustworthy*: until it has been in sync with its
//! cluster at least once (the injected readiness check), every path is [`BootError::NotReady`] (HTTP `503`
//! with `Retry-After`, which iPXE and the `tandem boot` client retry, never `404`, which they would believe).
//!
//! ## What each path resolves to
//!
//! | path | body | ETag (`"sha256-…"`) |
//! |---|---|---|
//! | `config/{mac}` | the merged boot document below, canonical JSON | digest of the body |
//! | `firmware/{name}` | the firmware document's `blob`, streamed | the blob's digest |
//! | `blobs/{sha256}` | any committed blob, streamed | the blob's digest |
//! | `ipxe/{mac}` | an iPXE script booting the terminal's firmware with failover | digest of the body |
//! | (entry, [`BootContent::open_ipxe_entry`]) | an iPXE script chaining to `ipxe/${mac}` with failover | digest of the body |
//!
//! ## The boot document
//!
//! A terminal needs everything about itself in one fetch, so `config/{mac}` follows every reference of the
//! terminal document and inlines it (`null` / `[]` where the terminal has none):
//!
//! ```json
//! {
//!   "firmware": {"name": "fw1", "version": "1.2", "digest": "…", "size": 1048576,
//!                "url": "/boot/v1/firmware/fw1", "blob_url": "/boot/v1/blobs/…",
//!                "kernel": {"digest": "…", "size": 123, "url": "/boot/v1/blobs/…"},
//!                "initrd": {"digest": "…", "size": 456, "url": "/boot/v1/blobs/…"},
//!                "cmdline": "quiet"},
//!   "format": 1,
//!   "mac": "52:54:00:12:34:56",
//!   "model": "hmi-15",
//!   "modules": [{"id": "scanner", "digest": "…", "size": 42, "parameters": {"port": "COM1"},
//!                "url": "/boot/v1/blobs/…"}],
//!   "revision": 12,
//!   "settings": {"kiosk": true},
//!   "terminal": "line-3-hmi",
//!   "terminal_servers": [{"id": "ts1", "address": "10.0.0.5", "port": 3389}],
//!   "termcap": {"screen": "1920x1080"}
//! }
//! ```
//!
//! - `terminal_servers` keep every field of their documents (so `address`, `port` and whatever an installation
//!   adds), plus `id`, in the terminal's order; `termcap` is the model's document as stored.
//! - Sizes come from the committed blobs, not from what a document claims. URLs are relative
//!   (`/boot/v1/…`): a client resolves them against the server that answered, so the document is the same on
//!   every node.
//! - `revision` is the store revision the document was built at.
//!
//! **Same bytes on every node.** The body is canonical JSON — compact, object keys sorted at every level (see
//! [`canonical_json`]) — and is a function of the store's content at that revision only: no node names, no
//! addresses, no clock. Two nodes at the same revision therefore serve identical bytes, so the content-hash
//! ETag is identical too and a terminal's `If-None-Match` works against either server of a pair.
//!
//! Because the bytes depend on the revision only, each terminal's document is built once per revision and then
//! served from a small cache (emptied when the revision moves), so answering `config/{mac}` again costs a map
//! lookup and a copy of about a kilobyte, not parsing and merging half a dozen documents.
//!
//! iPXE scripts are the exception by design: they list the boot servers with *this* node first (the terminal
//! just reached it, so it is the best bet), so each node's script, and its ETag, differs. They are tiny.
//!
//! ## The iPXE scripts
//!
//! iPXE reads no server list from DHCP, so failover is written into the script ([`ipxe_script`],
//! [`ipxe_entry_script`]): each boot server in turn, every fetch with `--timeout` (without it iPXE waits
//! forever on a server that accepts the connection and never answers), and when all fail the script waits
//! and starts again — a plant terminal should come up by itself once a server is back. The firmware is
//! fetched by digest (`/boot/v1/blobs/…`), so every server in the chain serves exactly the bytes this script
//! was written for. When no boot server address is known (or none is usable — `0.0.0.0` is not an address a
//! terminal can reach), the script uses relative URLs, which iPXE resolves against the server it got the
//! script from.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_cluster::node::StoreLockPoisoned;

use serde_json::{Map, Value, json};
use tandem_cluster::SharedStore;
use tandem_storage::collections::{FIRMWARE, MODULES, TERMCAP, TERMINAL_SERVERS};
use tandem_storage::{Digest, DocKey, Mac, Store};

use super::{BootBody, BootContent, BootError, BootFile, BootPath};

/// The boot servers of the cluster, as terminals reach them (`host:port`, each node's advertised boot address),
/// this node first. Called for every iPXE script, so it should be cheap (read a cached membership).
pub type BootServers = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Whether this node has ever been in sync with its cluster (and so has something trustworthy to serve).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// The version of the boot document's shape; bumped only for incompatible changes.
pub const BOOT_DOCUMENT_FORMAT: u64 = 1;

/// How long iPXE waits for each fetch before trying the next server, by default.
pub const DEFAULT_IPXE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a script waits after every server failed before starting over.
pub const IPXE_RETRY_SECONDS: u64 = 10;

/// The URL prefix of every boot path over HTTP.
pub const HTTP_PREFIX: &str = "/boot/v1/";

/// Boot content served from the node's store. See the [module documentation](self).
pub struct StoreContent {
    store: SharedStore,
    boot_servers: BootServers,
    ready: Readiness,
    ipxe_timeout: Duration,
    config_cache: Mutex<ConfigCache>,
}

/// Boot documents already built at one revision: a terminal (or a benchmark) asking again gets the same bytes
/// without the documents being parsed, merged, serialized and hashed again. Emptied when the revision moves;
/// holds at most one entry per terminal of the configuration (unknown MACs are not cached).
#[derive(Default)]
struct ConfigCache {
    revision: u64,
    documents: HashMap<Mac, (Arc<[u8]>, String)>,
}

impl std::fmt::Debug for StoreContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreContent").field("ipxe_timeout", &self.ipxe_timeout).finish_non_exhaustive()
    }
}

impl StoreContent {
    /// Content over `store`, with iPXE failover across `boot_servers`. The node counts as ready (in sync);
    /// use [`StoreContent::with_readiness`] to say otherwise.
    pub fn new(store: SharedStore, boot_servers: BootServers) -> Self {
        StoreContent {
            store,
            boot_servers,
            ready: Arc::new(|| true),
            ipxe_timeout: DEFAULT_IPXE_TIMEOUT,
            config_cache: Mutex::new(ConfigCache::default()),
        }
    }

    /// Serves only while `ready()` is true; before, every path is [`BootError::NotReady`].
    pub fn with_readiness(mut self, ready: Readiness) -> Self {
        self.ready = ready;
        self
    }

    /// The per-fetch timeout written into iPXE scripts (at least 1 ms; default 5 s).
    pub fn with_ipxe_timeout(mut self, timeout: Duration) -> Self {
        self.ipxe_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    fn check_ready(&self) -> Result<(), BootError> {
        if (self.ready)() {
            Ok(())
        } else {
            Err(BootError::NotReady("this node has not been in sync with its cluster yet".into()))
        }
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Store>, BootError> {
        self.store.read().map_err(|_| BootError::Internal(StoreLockPoisoned.to_string()))
    }

    fn servers(&self) -> Vec<String> {
        usable_servers((self.boot_servers)())
    }

    /// The merged boot document of the terminal with `mac`, and the revision it reflects.
    pub fn boot_document(&self, mac: Mac) -> Result<(Value, u64), BootError> {
        self.check_ready()?;
        let store = self.read()?;
        Ok((boot_document(&store, mac)?, store.revision().0))
    }

    fn open_config(&self, mac: Mac) -> Result<BootFile, BootError> {
        let cached = |bytes: &Arc<[u8]>, etag: &str, revision: u64| BootFile {
            size: bytes.len() as u64,
            etag: etag.to_string(),
            content_type: "application/json",
            revision,
            body: BootBody::Bytes(bytes.to_vec()),
        };
        let (bytes, revision) = {
            let store = self.read()?;
            let revision = store.revision().0;
            let cache = self.cache();
            if cache.revision == revision
                && let Some((bytes, etag)) = cache.documents.get(&mac)
            {
                return Ok(cached(bytes, etag, revision));
            }
            drop(cache);
            (canonical_json(&boot_document(&store, mac)?).into_bytes(), revision)
        };
        let file = generated(bytes, "application/json", revision);
        if let BootBody::Bytes(bytes) = &file.body {
            let mut cache = self.cache();
            if cache.revision < revision {
                *cache = ConfigCache { revision, documents: HashMap::new() };
            }
            // A document built at an older revision than the cache's is served, never cached.
            if cache.revision == revision {
                cache.documents.insert(mac, (Arc::from(bytes.as_slice()), file.etag.clone()));
            }
        }
        Ok(file)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ConfigCache> {
        // Every update leaves the cache consistent, so a panic elsewhere cannot have broken it.
        self.config_cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open_ipxe(&self, mac: Mac) -> Result<BootFile, BootError> {
        self.check_ready()?;
        let (terminal, firmware, revision) = {
            let store = self.read()?;
            let (id, terminal) = find_terminal(&store, mac)?;
            let name = terminal.get("firmware").and_then(Value::as_str).ok_or_else(|| {
                BootError::NotFound(format!("terminal {id} ({mac}) has no firmware to boot"))
            })?;
            (id, firmware_reference(&store, name)?, store.revision().0)
        };
        let servers = self.servers();
        let script = ipxe_script(
            &IpxeBoot { mac, terminal: &terminal, revision, firmware: &firmware },
            &servers,
            self.ipxe_timeout,
        );
        Ok(generated(script.into_bytes(), "text/plain", revision))
    }

    fn open_blob(&self, digest: &Digest, content_type: &'static str) -> Result<BootFile, BootError> {
        let store = self.read()?;
        let reader = store
            .open_blob(digest)
            .ok_or_else(|| BootError::NotFound(format!("no blob has digest {digest}")))?;
        Ok(BootFile {
            size: reader.size(),
            etag: etag_of(digest),
            content_type,
            revision: store.revision().0,
            body: BootBody::Blob(reader),
        })
    }

    fn open_firmware(&self, name: &str) -> Result<BootFile, BootError> {
        let digest = {
            let store = self.read()?;
            let document = store
                .get(&DocKey::new(FIRMWARE, name))
                .ok_or_else(|| BootError::NotFound(format!("no firmware is named {name}")))?
                .value();
            blob_field(&document, "blob", &format!("firmware {name}"))?
                .ok_or_else(|| BootError::Internal(format!("firmware {name} has no blob")))?
        };
        self.open_blob(&digest, firmware_content_type(name))
    }
}

impl BootContent for StoreContent {
    fn open(&self, path: &BootPath) -> Result<BootFile, BootError> {
        self.check_ready()?;
        match path {
            BootPath::Config(mac) => self.open_config(*mac),
            BootPath::Ipxe(mac) => self.open_ipxe(*mac),
            BootPath::Firmware(name) => self.open_firmware(name),
            BootPath::Blob(digest) => self.open_blob(digest, "application/octet-stream"),
        }
    }

    fn open_ipxe_entry(&self) -> Result<BootFile, BootError> {
        self.check_ready()?;
        let revision = self.read()?.revision().0;
        let script = ipxe_entry_script(&self.servers(), self.ipxe_timeout);
        Ok(generated(script.into_bytes(), "text/plain", revision))
    }
}

/// A generated (small, in-memory) file with its content-hash ETag.
fn generated(bytes: Vec<u8>, content_type: &'static str, revision: u64) -> BootFile {
    BootFile {
        size: bytes.len() as u64,
        etag: etag_of(&Digest::of(&bytes)),
        content_type,
        revision,
        body: BootBody::Bytes(bytes),
    }
}

/// The strong ETag of content with this digest: `"sha256-<64 hex digits>"` (quotes included).
pub fn etag_of(digest: &Digest) -> String {
    format!("\"sha256-{digest}\"")
}

/// `application/efi` for names ending in `.efi` (UEFI HTTP Boot picks the image type from it), else
/// `application/octet-stream`.
pub fn firmware_content_type(name: &str) -> &'static str {
    if name.to_ascii_lowercase().ends_with(".efi") { "application/efi" } else { "application/octet-stream" }
}

/// JSON text with no whitespace and object keys sorted at every level, so that equal values always give equal
/// bytes (and equal ETags), whatever order the value was built in.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The terminal with `mac`: its id and document (an object).
fn find_terminal(store: &Store, mac: Mac) -> Result<(String, Map<String, Value>), BootError> {
    let (id, document) = store
        .projection()
        .terminal_by_mac(mac)
        .ok_or_else(|| BootError::NotFound(format!("no terminal has MAC {mac}")))?;
    match document.value() {
        Value::Object(object) => Ok((id.to_string(), object)),
        _ => Err(BootError::Internal(format!("terminal {id} is not a JSON object"))),
    }
}

/// A referenced document, which must exist (the store refuses dangling references, so a missing one is a
/// broken store, not a missing file).
fn referenced(store: &Store, collection: &str, id: &str, by: &str) -> Result<Value, BootError> {
    store.get(&DocKey::new(collection, id)).map(|document| document.value()).ok_or_else(|| {
        BootError::Internal(format!("{by} references {collection}/{id}, which does not exist"))
    })
}

/// The ids listed in a reference-list field of the terminal (`terminal_servers`, `modules`).
fn id_list<'a>(terminal: &'a Map<String, Value>, field: &str) -> impl Iterator<Item = &'a str> {
    terminal.get(field).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
}

/// Parses the digest in `document[field]`, if the field is there.
fn blob_field(document: &Value, field: &str, what: &str) -> Result<Option<Digest>, BootError> {
    match document.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_str()
            .and_then(|text| Digest::parse(text).ok())
            .map(Some)
            .ok_or_else(|| BootError::Internal(format!("{what}: field '{field}' is not a sha256 digest"))),
    }
}

/// `{"digest", "size", "url"}` of a committed blob.
fn blob_reference(store: &Store, digest: &Digest, what: &str) -> Result<Map<String, Value>, BootError> {
    let size = store.blob_size(digest).ok_or_else(|| {
        BootError::Internal(format!("{what} references blob {digest}, which is not stored"))
    })?;
    let mut reference = Map::new();
    reference.insert("digest".into(), json!(digest.to_string()));
    reference.insert("size".into(), json!(size));
    reference.insert("url".into(), json!(format!("{HTTP_PREFIX}blobs/{digest}")));
    Ok(reference)
}

/// The firmware reference of the boot document (see the module documentation).
fn firmware_reference(store: &Store, name: &str) -> Result<Value, BootError> {
    let what = format!("firmware {name}");
    let document = referenced(store, FIRMWARE, name, "the terminal")?;
    let digest = blob_field(&document, "blob", &what)?
        .ok_or_else(|| BootError::Internal(format!("{what} has no blob")))?;
    let blob = blob_reference(store, &digest, &what)?;
    let mut reference = Map::new();
    reference.insert("name".into(), json!(name));
    reference.insert("version".into(), document.get("version").cloned().unwrap_or(Value::Null));
    reference.insert("digest".into(), blob["digest"].clone());
    reference.insert("size".into(), blob["size"].clone());
    reference.insert("url".into(), json!(format!("{HTTP_PREFIX}firmware/{name}")));
    reference.insert("blob_url".into(), blob["url"].clone());
    for field in ["kernel", "initrd"] {
        if let Some(digest) = blob_field(&document, field, &what)? {
            reference.insert(field.into(), Value::Object(blob_reference(store, &digest, &what)?));
        }
    }
    if let Some(cmdline) = document.get("cmdline").and_then(Value::as_str) {
        reference.insert("cmdline".into(), json!(cmdline));
    }
    Ok(Value::Object(reference))
}

/// The merged boot document of the terminal with `mac` (see the module documentation).
fn boot_document(store: &Store, mac: Mac) -> Result<Value, BootError> {
    let (id, terminal) = find_terminal(store, mac)?;
    let by = format!("terminal {id}");
    let model = terminal.get("model").and_then(Value::as_str);
    let termcap = match model {
        Some(model) => referenced(store, TERMCAP, model, &by)?,
        None => Value::Null,
    };
    let mut terminal_servers = Vec::new();
    for server in id_list(&terminal, "terminal_servers") {
        let mut resolved = match referenced(store, TERMINAL_SERVERS, server, &by)? {
            Value::Object(object) => object,
            _ => return Err(BootError::Internal(format!("terminal server {server} is not a JSON object"))),
        };
        resolved.insert("id".into(), json!(server));
        terminal_servers.push(Value::Object(resolved));
    }
    let mut modules = Vec::new();
    for module in id_list(&terminal, "modules") {
        let what = format!("module {module}");
        let document = referenced(store, MODULES, module, &by)?;
        let digest = blob_field(&document, "blob", &what)?
            .ok_or_else(|| BootError::Internal(format!("{what} has no blob")))?;
        let mut resolved = blob_reference(store, &digest, &what)?;
        resolved.insert("id".into(), json!(module));
        resolved
            .insert("parameters".into(), document.get("parameters").cloned().unwrap_or_else(|| json!({})));
        modules.push(Value::Object(resolved));
    }
    let firmware = match terminal.get("firmware").and_then(Value::as_str) {
        Some(name) => firmware_reference(store, name)?,
        None => Value::Null,
    };
    Ok(json!({
        "format": BOOT_DOCUMENT_FORMAT,
        "revision": store.revision().0,
        "mac": mac.to_string(),
        "terminal": id,
        "settings": terminal.get("settings").cloned().unwrap_or_else(|| json!({})),
        "model": model,
        "termcap": termcap,
        "terminal_servers": terminal_servers,
        "modules": modules,
        "firmware": firmware,
    }))
}

/// Keeps the addresses a terminal can use in a URL, in order, once each: `host:port` made of letters, digits,
/// `.`, `-`, `_`, `:`, `[`, `]` (anything else could break the script's syntax), and not an unspecified address
/// (`0.0.0.0`, `[::]`), which a node binds but a terminal cannot reach.
pub fn usable_servers(servers: Vec<String>) -> Vec<String> {
    let mut usable: Vec<String> = Vec::new();
    for server in servers {
        let server = server.trim();
        let safe =
            !server.is_empty() && server.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
        let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
        let unspecified = matches!(host, "0.0.0.0" | "[::]" | "::" | "[0:0:0:0:0:0:0:0]");
        if safe && !unspecified && !usable.iter().any(|s| s == server) {
            usable.push(server.to_string());
        }
    }
    usable
}

/// What an iPXE boot script boots.
#[derive(Debug)]
pub struct IpxeBoot<'a> {
    pub mac: Mac,
    pub terminal: &'a str,
    pub revision: u64,
    /// The firmware reference, as in the boot document.
    pub firmware: &'a Value,
}

/// The base URLs of `servers` (`http://host:port`), or one empty base (relative URLs) when there are none.
fn bases(servers: &[String]) -> Vec<String> {
    if servers.is_empty() {
        vec![String::new()]
    } else {
        servers.iter().map(|s| format!("http://{s}")).collect()
    }
}

/// Makes a kernel command line safe to put on an iPXE command line: control characters (a newline would start
/// a new command) become spaces, and the tokens iPXE treats as command separators (`||`, `&&`, `;`) are
/// dropped. iPXE settings (`${ip}`) are left for iPXE to expand.
pub fn ipxe_safe_cmdline(cmdline: &str) -> String {
    let spaced: String = cmdline.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    spaced
        .split_whitespace()
        .filter(|token| !matches!(*token, "||" | "&&" | ";"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Text safe for an iPXE `echo` or comment: printable ASCII, no `$` (iPXE would expand it).
fn ipxe_text(text: &str) -> String {
    text.chars().map(|c| if (c.is_ascii_graphic() && c != '$') || c == ' ' { c } else { '?' }).collect()
}

/// The per-terminal iPXE script: boots the firmware from the first server that delivers it.
///
/// With a `kernel` in the firmware document, each server gets a block that frees what an earlier attempt
/// loaded, fetches the kernel (with the `cmdline`, plus `initrd=initrd` when there is an initrd, the name
/// iPXE gives it for EFI kernels) and the initrd, and boots; any failure jumps to the next server's block.
/// Without one, the firmware blob itself is chained (an EFI application, an iPXE script, a bzImage…), and the
/// servers are a single `chain … || chain …` line. Every fetch carries `--timeout`.
pub fn ipxe_script(boot: &IpxeBoot<'_>, servers: &[String], timeout: Duration) -> String {
    let timeout_ms = timeout.as_millis().max(1);
    let firmware = boot.firmware;
    let text = |field: &str| firmware.get(field).and_then(Value::as_str).unwrap_or("");
    let url_of = |field: &str| firmware.get(field).and_then(|b| b.get("url")).and_then(Value::as_str);
    let cmdline = ipxe_safe_cmdline(text("cmdline"));
    let bases = bases(servers);
    let mut script = String::new();
    let _ = writeln!(script, "#!ipxe");
    let _ = writeln!(
        script,
        "# Tandem boot script for terminal {} ({}) at revision {}: firmware {} version {}.",
        ipxe_text(boot.terminal),
        boot.mac,
        boot.revision,
        ipxe_text(text("name")),
        ipxe_text(
            &firmware
                .get("version")
                .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
                .unwrap_or_default()
        ),
    );
    let _ = writeln!(
        script,
        "# Each boot server is tried in turn, every fetch with a {timeout_ms} ms timeout; when all fail, the script \
         waits {IPXE_RETRY_SECONDS} s and starts over."
    );
    let _ = writeln!(script, ":start");
    match url_of("kernel") {
        Some(kernel) => {
            let initrd = url_of("initrd");
            for (i, base) in bases.iter().enumerate() {
                let next = if i + 1 < bases.len() { format!("server-{}", i + 2) } else { "failed".into() };
                let mut args = String::new();
                if initrd.is_some() {
                    args.push_str(" initrd=initrd");
                }
                if !cmdline.is_empty() {
                    args.push(' ');
                    args.push_str(&cmdline);
                }
                let _ = writeln!(script, ":server-{}", i + 1);
                let _ = writeln!(script, "imgfree");
                let _ = writeln!(script, "kernel --timeout {timeout_ms} {base}{kernel}{args} || goto {next}");
                if let Some(initrd) = initrd {
                    let _ = writeln!(
                        script,
                        "initrd --timeout {timeout_ms} --name initrd {base}{initrd} || goto {next}"
                    );
                }
                let _ = writeln!(script, "boot || goto {next}");
            }
        }
        None => {
            let image = text("blob_url");
            let args = if cmdline.is_empty() { String::new() } else { format!(" {cmdline}") };
            let chain: Vec<String> = bases
                .iter()
                .map(|base| format!("chain --timeout {timeout_ms} {base}{image}{args}"))
                .collect();
            let _ = writeln!(script, "{} || goto failed", chain.join(" || "));
        }
    }
    let _ = writeln!(script, ":failed");
    let _ = writeln!(
        script,
        "echo Tandem: no boot server delivered the firmware of terminal {}, retrying in {IPXE_RETRY_SECONDS} s",
        ipxe_text(boot.terminal)
    );
    let _ = writeln!(script, "sleep {IPXE_RETRY_SECONDS}");
    let _ = writeln!(script, "goto start");
    script
}

/// The generic entry script (`/boot/v1/ipxe`): chains to the terminal's own script, `ipxe/${mac:hexhyp}`,
/// trying each server in turn with `--timeout`, and starts over after a pause when all fail (an unknown
/// terminal thus comes up by itself once an operator adds it).
pub fn ipxe_entry_script(servers: &[String], timeout: Duration) -> String {
    let timeout_ms = timeout.as_millis().max(1);
    let bases = bases(servers);
    let chain: Vec<String> = bases
        .iter()
        .map(|base| format!("chain --timeout {timeout_ms} {base}{HTTP_PREFIX}ipxe/${{mac:hexhyp}}"))
        .collect();
    let mut script = String::new();
    let _ = writeln!(script, "#!ipxe");
    let _ = writeln!(
        script,
        "# Tandem entry script: chains to this terminal's own boot script, trying each boot server in turn with a \
         {timeout_ms} ms timeout; when all fail, it waits {IPXE_RETRY_SECONDS} s and starts over."
    );
    let _ = writeln!(script, ":start");
    let _ = writeln!(script, "{} || goto failed", chain.join(" || "));
    let _ = writeln!(script, "exit");
    let _ = writeln!(script, ":failed");
    let _ = writeln!(
        script,
        "echo Tandem: no boot server has a boot script for ${{mac}}, retrying in {IPXE_RETRY_SECONDS} s"
    );
    let _ = writeln!(script, "sleep {IPXE_RETRY_SECONDS}");
    let _ = writeln!(script, "goto start");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = json!({"b": 1, "a": {"z": [3, {"y": null, "x": "é\n"}], "c": 2.5}});
        assert_eq!(canonical_json(&value), r#"{"a":{"c":2.5,"z":[3,{"x":"é\n","y":null}]},"b":1}"#);
        let round: Value = serde_json::from_str(&canonical_json(&value)).unwrap();
        assert_eq!(round, value);
    }

    #[test]
    fn only_reachable_safe_addresses_are_used_once_each() {
        let servers = usable_servers(vec![
            "10.0.0.1:8080".into(),
            "0.0.0.0:8080".into(),
            "[::]:8080".into(),
            "10.0.0.1:8080".into(),
            "evil host:80".into(),
            "a||b:1".into(),
            "".into(),
            "[fd00::2]:8080".into(),
            "boot-b.plant.local:80".into(),
        ]);
        assert_eq!(servers, vec!["10.0.0.1:8080", "[fd00::2]:8080", "boot-b.plant.local:80"]);
    }

    #[test]
    fn command_lines_cannot_inject_ipxe_commands() {
        assert_eq!(
            ipxe_safe_cmdline("quiet\nshell || reboot ; x&&y ip=${ip}"),
            "quiet shell reboot x&&y ip=${ip}"
        );
    }

    fn firmware(kernel: bool) -> Value {
        let d = "ab".repeat(32);
        let mut value = json!({"name": "fw1", "version": "1.2", "digest": d, "size": 5,
            "url": "/boot/v1/firmware/fw1", "blob_url": format!("/boot/v1/blobs/{d}"), "cmdline": "quiet"});
        if kernel {
            value["kernel"] = json!({"digest": "k", "size": 1, "url": "/boot/v1/blobs/kk"});
            value["initrd"] = json!({"digest": "i", "size": 1, "url": "/boot/v1/blobs/ii"});
        }
        value
    }

    #[test]
    fn kernel_scripts_try_every_server_with_a_timeout() {
        let firmware = firmware(true);
        let boot =
            IpxeBoot { mac: Mac([0x52, 0x54, 0, 1, 2, 3]), terminal: "t1", revision: 7, firmware: &firmware };
        let script = ipxe_script(&boot, &["a:1".into(), "b:2".into()], Duration::from_secs(5));
        assert!(script.starts_with("#!ipxe\n"), "{script}");
        for line in [
            ":server-1",
            "kernel --timeout 5000 http://a:1/boot/v1/blobs/kk initrd=initrd quiet || goto server-2",
            "initrd --timeout 5000 --name initrd http://a:1/boot/v1/blobs/ii || goto server-2",
            "boot || goto server-2",
            ":server-2",
            "kernel --timeout 5000 http://b:2/boot/v1/blobs/kk initrd=initrd quiet || goto failed",
            "boot || goto failed",
            ":failed",
            "goto start",
        ] {
            assert!(script.lines().any(|l| l == line), "missing {line:?} in\n{script}");
        }
    }

    #[test]
    fn chain_scripts_are_one_failover_line_or_relative_without_servers() {
        let firmware = firmware(false);
        let boot =
            IpxeBoot { mac: Mac([0x52, 0x54, 0, 1, 2, 3]), terminal: "t1", revision: 7, firmware: &firmware };
        let d = "ab".repeat(32);
        let script = ipxe_script(&boot, &["a:1".into(), "b:2".into()], Duration::from_millis(2500));
        let want = format!(
            "chain --timeout 2500 http://a:1/boot/v1/blobs/{d} quiet || chain --timeout 2500 http://b:2/boot/v1/blobs/{d} quiet || goto failed"
        );
        assert!(script.lines().any(|l| l == want), "{script}");
        let relative = ipxe_script(&boot, &[], Duration::from_secs(5));
        assert!(
            relative
                .lines()
                .any(|l| l == format!("chain --timeout 5000 /boot/v1/blobs/{d} quiet || goto failed"))
        );
        let entry = ipxe_entry_script(&["a:1".into()], Duration::from_secs(5));
        assert!(
            entry
                .lines()
                .any(|l| l == "chain --timeout 5000 http://a:1/boot/v1/ipxe/${mac:hexhyp} || goto failed")
        );
    }
}
