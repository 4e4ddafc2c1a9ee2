//! The admin API's JSON bodies: every input type the API parses (change sets, servers, roles, revert, undo,
//! import), then what the node does with a valid one before Raft: a change set is decided ([`decide`]: sizes,
//! names, preconditions, merge patches, schemas, references, unique MACs) against a small configuration and
//! applied to the projection; an import is planned against it and its blob list checked.
//!
//! Input: a request body.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tandem::node::api::fuzz::bodies;
use tandem_storage::{ChangeMeta, ChangeSet, Digest, Projection, decide};

/// The digest of the one blob the store holds (firmware and modules may reference it).
const BLOB: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

fn blob_size(digest: &Digest) -> Option<u64> {
    (digest.to_string() == BLOB).then_some(6)
}

/// A configuration with one document of each kind, so that references, patches and deletes have targets.
fn projection() -> &'static Projection {
    static PROJECTION: OnceLock<Projection> = OnceLock::new();
    PROJECTION.get_or_init(|| {
        let seed = ChangeSet::new(ChangeMeta { actor: "seed".into(), ..ChangeMeta::default() })
            .put("terminal_servers", "ts1", json!({"address": "10.0.0.5", "port": 3389}))
            .put("termcap", "m1", json!({"rows": 24}))
            .put("modules", "mod1", json!({"blob": BLOB}))
            .put("firmware", "fw1", json!({"version": "1.0", "blob": BLOB, "size": 6}))
            .put(
                "terminals",
                "t1",
                json!({"mac": "52:54:00:12:34:56", "firmware": "fw1", "terminal_servers": ["ts1"],
                       "model": "m1", "modules": ["mod1"]}),
            );
        let mut projection = Projection::new();
        let event = decide(&projection, &blob_size, &seed).expect("the seed configuration is valid");
        projection.apply(&event).expect("the seed event applies");
        projection
    })
}

fuzz_target!(|data: &[u8]| {
    let parsed = bodies(data);
    let current = projection();
    if let Some(change_set) = parsed.change_set {
        if let Ok(event) = decide(current, &blob_size, &change_set) {
            // An accepted event always applies: every replica would apply it.
            let mut next = current.clone();
            next.apply(&event).expect("an accepted event applies to the state it was decided against");
        }
    }
    if let Some(export) = parsed.export {
        let _ = export.missing_blobs(&blob_size);
        let plan = export.plan(current);
        let change_set = plan.change_set(ChangeMeta { actor: "fuzz".into(), ..ChangeMeta::default() });
        if let Ok(event) = decide(current, &blob_size, &change_set) {
            let mut next = current.clone();
            next.apply(&event).expect("an accepted import applies");
        }
    }
});
