//! Data-driven tests of deciding and applying change sets, written as [goldenscript] scripts in
//! `storage/tests/scripts/`, each run against a real `Store` on sled in a temporary directory (with a
//! checkpoint every 3 events, so time travel crosses checkpoints).
//!
//! Each script is a list of blocks: commands, `---`, and the output they produced. To (re)generate the outputs
//! after changing a script or the store, run `UPDATE_GOLDENFILES=1 cargo test -p tandem-storage --test golden`,
//! then read the diff: it is the review. A new script file is picked up at the next build of this file (touch
//! it if cargo does not rebuild).
//!
//! # The command language
//!
//! Documents are named `COLLECTION/ID` (`terminals/t1`). JSON bodies are quoted with single quotes, so they
//! can hold double quotes: `'{"mac":"52:54:00:00:00:01"}'`.
//!
//! ## Writing
//!
//! - `change OPERATION... [OPTION...]`: proposes **one** change set made of the operations, in order:
//!   - `put C/ID JSON`: create or replace a document;
//!   - `patch C/ID JSON`: merge-patch (RFC 7396) an existing document;
//!   - `delete C/ID`: delete a document;
//!   - `put_many N C JSON`: put the same body as `C/d1` … `C/dN` (for the size limits).
//!
//!   Options (key=value, anywhere on the line):
//!   - metadata: `actor=NAME` (default `test`), `reason=TEXT`, `request=ID` (client request id),
//!     `timestamp=MS` (default 0: the store never reads the clock, so outputs are deterministic);
//!   - preconditions, each may repeat: `if_revision=N` (the store is at revision N), `if_mod=C/ID@N` (the
//!     document was last modified at N), `if_absent=C/ID` (must not exist), `if_exists=C/ID` (must exist).
//! - `put C/ID JSON [OPTION...]`, `patch C/ID JSON [OPTION...]`, `delete C/ID [OPTION...]`: shortcuts for a
//!   change set of one operation.
//! - `revert REV [OPTION...]`: computes the change set that brings the configuration back to revision REV
//!   (`Store::revert_to`), prints its operations, and applies it.
//!
//! A change set prints `accepted rN` followed by every document it changed (`C/ID vVERSION (created rA,
//! modified rB) BODY`, or `C/ID deleted`), `duplicate rN` (its request id was already accepted), or
//! `rejected: MESSAGE` (the `Display` of the `Rejection`, exactly what a client would read).
//!
//! ## Blobs
//!
//! - `blob NAME text=TEXT` or `blob NAME size=N [pattern=TEXT]`: uploads the text, or N bytes repeating the
//!   pattern (default `x`), with `Store::put_blob`; prints `NAME: sha256 DIGEST, N bytes`.
//! - `chunk UPLOAD INDEX DATA`, `commit UPLOAD (of=TEXT | digest=HEX) size=N [as=NAME]`, `abort UPLOAD`: the
//!   raw blob commands (`Command::BlobChunk`, `BlobCommit`, `BlobAbort`); `of=TEXT` commits with the
//!   digest of TEXT.
//!
//! ## Substitutions
//!
//! In document names, JSON bodies, option values and chunk data: `$NAME` becomes the digest of the blob NAME (from `blob` or
//! `commit … as=NAME`), `$NAME.size` its size, and `$(TEXT*N)` the TEXT repeated N times (e.g. `$(0*64)` is a
//! digest nobody uploaded, `$(x*50000)` a long string). There is no escape for a literal `$`.
//!
//! ## Reading
//!
//! - `get C/ID`: one document, or `C/ID not found`.
//! - `list [COLLECTION]`: the current documents (all collections if none given).
//! - `mac MAC`: the terminal with this MAC (any of the three accepted forms).
//! - `history [collection=C] [id=ID] [actor=NAME] [from=N] [to=N] [limit=N] [newest_first=true]`: events,
//!   each as `rN actor=… [at=MS] [request=…] [reason="…"]` and its document changes (`C/ID = BODY` or
//!   `C/ID deleted`).
//! - `state_at REV [COLLECTION]`: the configuration as it was at REV.
//! - `diff A B`: every document that differs between revisions A and B.
//! - `reopen`: closes the store and opens it again from disk, and checks that the configuration, the history
//!   and the blobs are exactly as before.
//!
//! Bodies longer than 120 characters are abbreviated as `first characters… (N bytes)`.
//!
//! After every script, the runner replays the whole history from revision 1 and checks that it gives exactly
//! the store's projection.

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

use goldenscript::Context;
use serde_json::Value;
use tandem_storage::{
    ChangeMeta, ChangeSet, Command, DiffKind, Digest, DocKey, Event, HistoryFilter, Mac, Operation, Outcome,
    Precondition, Projection, Revision, Store, StoreOptions, StoredDocument,
};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

test_each_file::test_each_path! { in "storage/tests/scripts" as scripts => run_script }

fn run_script(path: &Path) {
    let mut runner = StoreRunner::new().expect("opening the store");
    goldenscript::run(&mut runner, path).expect("running the script");
}

/// The script commands (see the module documentation).
#[derive(goldenscript::Command)]
enum Cmd {
    Change {
        #[arg(optional)]
        operations: Vec<String>,
        #[arg(optional)]
        options: Vec<(String, String)>,
    },
    Put {
        key: String,
        document: String,
        #[arg(optional)]
        options: Vec<(String, String)>,
    },
    Patch {
        key: String,
        patch: String,
        #[arg(optional)]
        options: Vec<(String, String)>,
    },
    Delete {
        key: String,
        #[arg(optional)]
        options: Vec<(String, String)>,
    },
    Revert {
        revision: u64,
        #[arg(optional)]
        options: Vec<(String, String)>,
    },
    Blob {
        name: String,
        #[arg(key)]
        text: Option<String>,
        #[arg(key)]
        size: Option<usize>,
        #[arg(key)]
        pattern: Option<String>,
    },
    Chunk {
        upload: u64,
        index: u32,
        data: String,
    },
    Commit {
        upload: u64,
        #[arg(key)]
        of: Option<String>,
        #[arg(key)]
        digest: Option<String>,
        #[arg(key)]
        size: u64,
        #[arg(key = "as")]
        name: Option<String>,
    },
    Abort {
        upload: u64,
    },
    Get {
        key: String,
    },
    List {
        collection: Option<String>,
    },
    Mac {
        mac: String,
    },
    History {
        #[arg(key)]
        collection: Option<String>,
        #[arg(key)]
        id: Option<String>,
        #[arg(key)]
        actor: Option<String>,
        #[arg(key)]
        from: Option<u64>,
        #[arg(key)]
        to: Option<u64>,
        #[arg(key)]
        limit: Option<usize>,
        #[arg(key, optional)]
        newest_first: bool,
    },
    StateAt {
        revision: u64,
        collection: Option<String>,
    },
    Diff {
        from: u64,
        to: u64,
    },
    Reopen,
}

/// What `reopen` compares: the projection, the history and the blobs.
type Everything = (Projection, Vec<Event>, Vec<(Digest, u64)>);

/// Runs scripts against one store in a temporary directory.
struct StoreRunner {
    dir: tempfile::TempDir,
    store: Option<Store>,
    /// Blobs named by the script: digest and size.
    blobs: HashMap<String, (Digest, u64)>,
    /// Upload ids for `blob` (the raw `chunk` commands choose their own, keep them small).
    next_upload: u64,
}

fn options() -> StoreOptions {
    StoreOptions { checkpoint_interval: 3 }
}

impl StoreRunner {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = Store::open_with(dir.path(), options())?;
        Ok(StoreRunner { dir, store: Some(store), blobs: HashMap::new(), next_upload: 1_000_000 })
    }

    fn store(&mut self) -> &mut Store {
        self.store.as_mut().expect("the store is open")
    }

    /// Expands `$NAME`, `$NAME.size` and `$(TEXT*N)` (see the module documentation).
    fn expand(&self, text: &str) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(inner) = rest.strip_prefix('(') {
                let end = inner.find(')').ok_or("unclosed $(")?;
                let (piece, count) = inner[..end].rsplit_once('*').ok_or("expected $(TEXT*COUNT)")?;
                out.push_str(&piece.repeat(count.parse()?));
                rest = &inner[end + 1..];
            } else {
                let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                let name = &rest[..len];
                let (digest, size) = self.blobs.get(name).ok_or_else(|| format!("no blob named '{name}'"))?;
                rest = &rest[len..];
                match rest.strip_prefix(".size") {
                    Some(after) => {
                        out.push_str(&size.to_string());
                        rest = after;
                    }
                    None => out.push_str(&digest.to_string()),
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn json(&self, text: &str) -> Result<Value> {
        let text = self.expand(text)?;
        serde_json::from_str(&text).map_err(|e| format!("bad JSON {text:?}: {e}").into())
    }

    /// Parses the operations of a `change` command.
    fn operations(&self, words: &[String]) -> Result<Vec<Operation>> {
        let mut operations = Vec::new();
        let mut words = words.iter();
        while let Some(verb) = words.next() {
            let mut next = |what: &str| words.next().ok_or_else(|| format!("missing {what} after '{verb}'"));
            match verb.as_str() {
                "put" => {
                    let (collection, id) = split_key(&self.expand(next("document name")?)?)?;
                    let document = self.json(next("document")?)?.into();
                    operations.push(Operation::Put { collection, id, document });
                }
                "patch" => {
                    let (collection, id) = split_key(&self.expand(next("document name")?)?)?;
                    let patch = self.json(next("patch")?)?.into();
                    operations.push(Operation::Patch { collection, id, patch });
                }
                "delete" => {
                    let (collection, id) = split_key(&self.expand(next("document name")?)?)?;
                    operations.push(Operation::Delete { collection, id });
                }
                "put_many" => {
                    let count: usize = next("count")?.parse()?;
                    let collection = self.expand(next("collection")?)?;
                    let document = self.json(next("document")?)?;
                    for i in 1..=count {
                        operations.push(Operation::Put {
                            collection: collection.clone(),
                            id: format!("d{i}"),
                            document: document.clone().into(),
                        });
                    }
                }
                other => {
                    return Err(format!("unknown operation '{other}' (put, patch, delete, put_many)").into());
                }
            }
        }
        Ok(operations)
    }

    /// Builds the metadata and preconditions of a change set from its options.
    fn change_set(&self, options: &[(String, String)]) -> Result<ChangeSet> {
        let mut change_set = ChangeSet::new(ChangeMeta { actor: "test".into(), ..ChangeMeta::default() });
        for (key, value) in options {
            let value = self.expand(value)?;
            let meta = &mut change_set.meta;
            match key.as_str() {
                "actor" => meta.actor = value,
                "reason" => meta.reason = value,
                "request" => meta.request_id = Some(value),
                "timestamp" => meta.timestamp_ms = value.parse()?,
                "if_revision" => change_set
                    .preconditions
                    .push(Precondition::StoreRevision { revision: Revision(value.parse()?) }),
                "if_mod" => {
                    let (key, revision) =
                        value.rsplit_once('@').ok_or("expected if_mod=COLLECTION/ID@REVISION")?;
                    let (collection, id) = split_key(key)?;
                    change_set.preconditions.push(Precondition::DocumentRevision {
                        collection,
                        id,
                        mod_revision: Revision(revision.parse()?),
                    });
                }
                "if_absent" => {
                    let (collection, id) = split_key(&value)?;
                    change_set.preconditions.push(Precondition::MustNotExist { collection, id });
                }
                "if_exists" => {
                    let (collection, id) = split_key(&value)?;
                    change_set.preconditions.push(Precondition::MustExist { collection, id });
                }
                other => return Err(format!("unknown option '{other}'").into()),
            }
        }
        Ok(change_set)
    }

    /// Applies a change set and describes the outcome.
    fn apply(&mut self, change_set: ChangeSet) -> Result<String> {
        let outcome = self.store().apply_change_set(change_set)?;
        let mut output = String::new();
        match outcome {
            Outcome::Accepted { revision } => {
                writeln!(output, "accepted r{revision}")?;
                let event = self.store().event(revision)?.ok_or("the accepted event is missing")?;
                let store = self.store();
                for change in &event.changes {
                    match store.get(&change.key) {
                        Some(document) => writeln!(output, "  {}", describe(&change.key, document))?,
                        None => writeln!(output, "  {} deleted", change.key)?,
                    }
                }
            }
            Outcome::Duplicate { revision } => writeln!(output, "duplicate r{revision}")?,
            Outcome::Rejected(rejection) => writeln!(output, "rejected: {rejection}")?,
            other => return Err(format!("unexpected outcome {other:?}").into()),
        }
        Ok(output)
    }

    /// Applies one raw command and describes the outcome.
    fn apply_command(&mut self, command: Command) -> Result<String> {
        let outcome = self.store().apply(&[command], None)?.remove(0);
        self.store().durable()?;
        Ok(match outcome {
            Outcome::ChunkStored { upload, size } => format!("upload {upload} holds {size} bytes"),
            Outcome::BlobCommitted { digest, size } => format!("committed sha256 {digest}, {size} bytes"),
            Outcome::UploadAborted { upload } => format!("upload {upload} aborted"),
            Outcome::Rejected(rejection) => format!("rejected: {rejection}"),
            other => return Err(format!("unexpected outcome {other:?}").into()),
        })
    }

    /// Everything `reopen` compares: revision, projection, history, blobs.
    fn everything(&mut self) -> Result<Everything> {
        let store = self.store();
        let history = store.history(&HistoryFilter::default())?;
        let blobs = store.blobs().map(|(digest, size)| (*digest, size)).collect();
        Ok((store.projection().clone(), history, blobs))
    }
}

impl goldenscript::Runner for StoreRunner {
    type Command = Cmd;

    fn run(&mut self, command: &Cmd, _context: &Context) -> Result<String> {
        let mut output = String::new();
        match command {
            Cmd::Change { operations, options } => {
                let mut change_set = self.change_set(options)?;
                change_set.operations = self.operations(operations)?;
                output = self.apply(change_set)?;
            }
            Cmd::Put { key, document, options } => {
                let words = ["put".to_string(), key.clone(), document.clone()];
                let mut change_set = self.change_set(options)?;
                change_set.operations = self.operations(&words)?;
                output = self.apply(change_set)?;
            }
            Cmd::Patch { key, patch, options } => {
                let words = ["patch".to_string(), key.clone(), patch.clone()];
                let mut change_set = self.change_set(options)?;
                change_set.operations = self.operations(&words)?;
                output = self.apply(change_set)?;
            }
            Cmd::Delete { key, options } => {
                let words = ["delete".to_string(), key.clone()];
                let mut change_set = self.change_set(options)?;
                change_set.operations = self.operations(&words)?;
                output = self.apply(change_set)?;
            }
            Cmd::Revert { revision, options } => {
                let template = self.change_set(options)?;
                let revert = self.store().revert_to(Revision(*revision), template.meta)?;
                let Some(mut change_set) = revert else {
                    return Ok(format!("nothing to revert: the configuration is as it was at r{revision}"));
                };
                change_set.preconditions.extend(template.preconditions);
                writeln!(output, "revert to r{revision}:")?;
                for precondition in &change_set.preconditions {
                    writeln!(output, "  require {}", describe_precondition(precondition))?;
                }
                for operation in &change_set.operations {
                    match operation {
                        Operation::Put { document, .. } => writeln!(
                            output,
                            "  put {} {}",
                            operation.key(),
                            abbreviate(&document.0.to_string())
                        )?,
                        Operation::Patch { patch, .. } => writeln!(
                            output,
                            "  patch {} {}",
                            operation.key(),
                            abbreviate(&patch.0.to_string())
                        )?,
                        Operation::Delete { .. } => writeln!(output, "  delete {}", operation.key())?,
                    }
                }
                output.push_str(&self.apply(change_set)?);
            }
            Cmd::Blob { name, text, size, pattern } => {
                let bytes = match (text, size) {
                    (Some(text), None) => self.expand(text)?.into_bytes(),
                    (None, Some(size)) => {
                        let pattern = pattern.as_deref().unwrap_or("x").as_bytes();
                        if pattern.is_empty() {
                            return Err("the pattern must not be empty".into());
                        }
                        pattern.iter().copied().cycle().take(*size).collect()
                    }
                    _ => return Err("give text=TEXT or size=N".into()),
                };
                let upload = self.next_upload;
                self.next_upload += 1;
                match self.store().put_blob(upload, bytes.as_slice())? {
                    Ok((digest, size)) => {
                        self.blobs.insert(name.clone(), (digest, size));
                        writeln!(output, "{name}: sha256 {digest}, {size} bytes")?;
                    }
                    Err(rejection) => writeln!(output, "rejected: {rejection}")?,
                }
            }
            Cmd::Chunk { upload, index, data } => {
                let data = self.expand(data)?.into_bytes();
                output = self.apply_command(Command::BlobChunk { upload: *upload, chunk: *index, data })?;
            }
            Cmd::Commit { upload, of, digest, size, name } => {
                let digest = match (of, digest) {
                    (Some(text), None) => Digest::of(self.expand(text)?.as_bytes()),
                    (None, Some(hex)) => Digest::parse(&self.expand(hex)?)?,
                    _ => return Err("give of=TEXT or digest=HEX".into()),
                };
                let command = Command::BlobCommit { upload: *upload, digest, size: *size };
                output = self.apply_command(command)?;
                if let (Some(name), Some(size)) = (name, self.store().blob_size(&digest)) {
                    self.blobs.insert(name.clone(), (digest, size));
                }
            }
            Cmd::Abort { upload } => output = self.apply_command(Command::BlobAbort { upload: *upload })?,
            Cmd::Get { key } => {
                let (collection, id) = split_key(&self.expand(key)?)?;
                let key = DocKey::new(collection, id);
                match self.store().get(&key) {
                    Some(document) => writeln!(output, "{}", describe(&key, document))?,
                    None => writeln!(output, "{key} not found")?,
                }
            }
            Cmd::List { collection } => {
                let store = self.store();
                output = list(store.projection(), collection.as_deref());
            }
            Cmd::Mac { mac } => {
                let mac = Mac::parse(mac)?;
                match self.store().projection().terminal_by_mac(mac) {
                    Some((id, document)) => {
                        writeln!(output, "{mac} → {}", describe(&DocKey::new("terminals", id), document))?
                    }
                    None => writeln!(output, "no terminal has MAC {mac}")?,
                }
            }
            Cmd::History { collection, id, actor, from, to, limit, newest_first } => {
                let filter = HistoryFilter {
                    collection: collection.clone(),
                    id: id.clone(),
                    actor: actor.clone(),
                    from: from.map(Revision),
                    to: to.map(Revision),
                    limit: *limit,
                    newest_first: *newest_first,
                    ..HistoryFilter::default()
                };
                let events = self.store().history(&filter)?;
                if events.is_empty() {
                    writeln!(output, "no events")?;
                }
                for event in events {
                    output.push_str(&describe_event(&event));
                }
            }
            Cmd::StateAt { revision, collection } => {
                let projection = self.store().state_at(Revision(*revision))?;
                writeln!(output, "at r{}:", projection.revision())?;
                output.push_str(&list(&projection, collection.as_deref()));
            }
            Cmd::Diff { from, to } => {
                let entries = self.store().diff(Revision(*from), Revision(*to))?;
                if entries.is_empty() {
                    writeln!(output, "no differences")?;
                }
                for entry in entries {
                    let body = |document: &Option<StoredDocument>| {
                        document.as_ref().map(|d| abbreviate(&d.body)).unwrap_or_default()
                    };
                    match entry.kind() {
                        DiffKind::Created => {
                            writeln!(output, "created {} {}", entry.key, body(&entry.after))?
                        }
                        DiffKind::Changed => writeln!(
                            output,
                            "changed {} {} → {}",
                            entry.key,
                            body(&entry.before),
                            body(&entry.after)
                        )?,
                        DiffKind::Deleted => {
                            writeln!(output, "deleted {} (was {})", entry.key, body(&entry.before))?
                        }
                    }
                }
            }
            Cmd::Reopen => {
                let before = self.everything()?;
                drop(self.store.take());
                self.store = Some(Store::open_with(self.dir.path(), options())?);
                let after = self.everything()?;
                if before != after {
                    return Err(format!(
                        "the reopened store differs:\nbefore: {before:#?}\nafter: {after:#?}"
                    )
                    .into());
                }
                let store = self.store();
                writeln!(
                    output,
                    "reopened at r{}: {} documents, {} events, {} blobs, all as before",
                    store.revision(),
                    store.projection().len(),
                    after.1.len(),
                    after.2.len()
                )?;
            }
        }
        Ok(output)
    }

    /// Replaying the whole history must give exactly the store's projection.
    fn end_script(&mut self) -> Result<()> {
        let store = self.store();
        let mut replayed = Projection::new();
        for event in store.events(Revision(1), store.revision()) {
            replayed.apply(&event?)?;
        }
        if &replayed != store.projection() {
            return Err("replaying the history does not give the store's projection".into());
        }
        Ok(())
    }
}

/// Splits `COLLECTION/ID` at the first `/` (the store then judges both names).
fn split_key(text: &str) -> Result<(String, String)> {
    let (collection, id) =
        text.split_once('/').ok_or_else(|| format!("expected COLLECTION/ID, got {text:?}"))?;
    Ok((collection.to_string(), id.to_string()))
}

/// Shortens long bodies so outputs stay readable.
fn abbreviate(text: &str) -> String {
    const LIMIT: usize = 120;
    if text.chars().count() <= LIMIT {
        return text.to_string();
    }
    let head: String = text.chars().take(60).collect();
    format!("{head}… ({} bytes)", text.len())
}

fn describe(key: &DocKey, document: &StoredDocument) -> String {
    format!(
        "{key} v{} (created r{}, modified r{}) {}",
        document.version,
        document.create_revision,
        document.mod_revision,
        abbreviate(&document.body)
    )
}

fn describe_precondition(precondition: &Precondition) -> String {
    match precondition {
        Precondition::StoreRevision { revision } => format!("store at r{revision}"),
        Precondition::DocumentRevision { collection, id, mod_revision } => {
            format!("{collection}/{id} modified at r{mod_revision}")
        }
        Precondition::MustNotExist { collection, id } => format!("{collection}/{id} absent"),
        Precondition::MustExist { collection, id } => format!("{collection}/{id} exists"),
    }
}

fn describe_event(event: &Event) -> String {
    let meta = &event.meta;
    let mut output = format!("r{} actor={}", event.revision, abbreviate(&meta.actor));
    if meta.timestamp_ms != 0 {
        let _ = write!(output, " at={}", meta.timestamp_ms);
    }
    if let Some(request) = &meta.request_id {
        let _ = write!(output, " request={}", abbreviate(request));
    }
    if !meta.reason.is_empty() {
        let _ = write!(output, " reason={:?}", abbreviate(&meta.reason));
    }
    output.push('\n');
    for change in &event.changes {
        let _ = match &change.after {
            Some(body) => writeln!(output, "  {} = {}", change.key, abbreviate(body)),
            None => writeln!(output, "  {} deleted", change.key),
        };
    }
    output
}

fn list(projection: &Projection, collection: Option<&str>) -> String {
    let mut output = String::new();
    let documents: Vec<(&DocKey, &StoredDocument)> = match collection {
        Some(collection) => projection.collection(collection).collect(),
        None => projection.documents().collect(),
    };
    if documents.is_empty() {
        output.push_str("no documents\n");
    }
    for (key, document) in documents {
        let _ = writeln!(output, "{}", describe(key, document));
    }
    output
}
