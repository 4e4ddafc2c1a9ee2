//! Property: the store's configuration is exactly the fold of its history, at every revision, live and after
//! reopening from disk.
//!
//! Proptest generates scenarios: up to 40 change sets of puts, merge patches and deletes on a small key space
//! (a free-form `notes` collection and the built-in `terminal_servers` and `terminals` collections), grouped
//! into `Store::apply` batches of one to four, with occasional preconditions and request ids drawn from a small
//! pool. The key space is small on purpose, so that many change sets are rejected: duplicate MACs, references
//! to servers that do not exist (`ts3` never does), deletes of referenced or missing documents, invalid
//! documents, failed preconditions, empty change sets, and repeated request ids answered as duplicates.
//!
//! Every scenario runs against a real [`Store`] (sled in a temporary directory, a random checkpoint interval
//! of 1 to 4 so that checkpoints are written and used), and in lockstep against a shadow [`Projection`] driven
//! by the pure [`decide`] and [`Projection::apply`], which records the projection and the event of every
//! revision as it is reached, even in the middle of a batch. The store is closed and reopened once in the
//! middle of the scenario and once at the end. The test checks that:
//!
//! - (a) replaying every event of `Store::events` into `Projection::new()` gives exactly `Store::projection`
//!   (documents, revision, and the derived MAC and reference indexes);
//! - (b) `Store::state_at(n)` equals the projection recorded right after revision `n`, for every `n`;
//! - (c) a store reopened from disk has the same projection, indexes and history as before it was closed, and
//!   decides the rest of the scenario exactly like the shadow;
//! - (d) every outcome is the one the shadow expects: accepted change sets get consecutive revisions, rejected
//!   and duplicate ones append nothing, and the history is exactly revisions `1..=revision` with no gaps (on
//!   disk too: `Store::open` refuses a store whose last event is not its revision).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use tandem_storage::collections::{self, TERMINAL_SERVERS, TERMINALS};
use tandem_storage::{
    ChangeMeta, ChangeSet, Command, DocKey, Event, HistoryFilter, Mac, Outcome, Precondition, Projection,
    Revision, Store, StoreOptions, decide,
};

/// The free-form collection.
const NOTES: &str = "notes";
/// The MACs terminals choose from: three MACs for four terminals, so duplicates are common.
const MACS: [[u8; 6]; 3] = [[0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2], [0x52, 0x54, 0, 0, 0, 3]];

#[derive(Clone, Copy, Debug)]
enum Coll {
    Notes,
    Servers,
    Terminals,
}

impl Coll {
    fn name(self) -> &'static str {
        match self {
            Coll::Notes => NOTES,
            Coll::Servers => TERMINAL_SERVERS,
            Coll::Terminals => TERMINALS,
        }
    }

    /// Four notes, three servers (`ts3` is referenced but never created), four terminals.
    fn id(self, n: u8) -> String {
        match self {
            Coll::Notes => format!("n{}", n % 4),
            Coll::Servers => format!("ts{}", n % 3),
            Coll::Terminals => format!("t{}", n % 4),
        }
    }

    fn key(self, n: u8) -> DocKey {
        DocKey::new(self.name(), self.id(n))
    }
}

/// Every key a scenario can create or reference.
fn universe() -> Vec<DocKey> {
    let mut keys: Vec<DocKey> = (0..4).map(|n| Coll::Notes.key(n)).collect();
    keys.extend((0..4).map(|n| DocKey::new(TERMINAL_SERVERS, format!("ts{n}"))));
    keys.extend((0..4).map(|n| Coll::Terminals.key(n)));
    keys
}

#[derive(Clone, Debug)]
enum OpPlan {
    Put { coll: Coll, id: u8, seed: u8 },
    Patch { coll: Coll, id: u8, seed: u8 },
    Delete { coll: Coll, id: u8 },
}

/// A precondition; revisions are relative to the state the change set is decided against.
#[derive(Clone, Debug)]
enum PrePlan {
    StoreRevision { delta: i8 },
    DocumentRevision { coll: Coll, id: u8, delta: i8 },
    MustExist { coll: Coll, id: u8 },
    MustNotExist { coll: Coll, id: u8 },
}

#[derive(Clone, Debug)]
struct ChangePlan {
    ops: Vec<OpPlan>,
    precondition: Option<PrePlan>,
    request: Option<u8>,
}

#[derive(Clone, Debug)]
struct Scenario {
    checkpoint_interval: u64,
    batches: Vec<Vec<ChangePlan>>,
    /// The store is closed and reopened after this many batches.
    reopen_after: usize,
}

fn coll() -> impl Strategy<Value = Coll> {
    prop_oneof![Just(Coll::Notes), Just(Coll::Servers), Just(Coll::Terminals)]
}

fn op() -> impl Strategy<Value = OpPlan> {
    prop_oneof![
        6 => (coll(), any::<u8>(), any::<u8>()).prop_map(|(coll, id, seed)| OpPlan::Put { coll, id, seed }),
        3 => (coll(), any::<u8>(), any::<u8>()).prop_map(|(coll, id, seed)| OpPlan::Patch { coll, id, seed }),
        1 => (coll(), any::<u8>()).prop_map(|(coll, id)| OpPlan::Delete { coll, id }),
    ]
}

fn precondition() -> impl Strategy<Value = PrePlan> {
    prop_oneof![
        (-1i8..=1).prop_map(|delta| PrePlan::StoreRevision { delta }),
        (coll(), any::<u8>(), -1i8..=1).prop_map(|(coll, id, delta)| PrePlan::DocumentRevision {
            coll,
            id,
            delta
        }),
        (coll(), any::<u8>()).prop_map(|(coll, id)| PrePlan::MustExist { coll, id }),
        (coll(), any::<u8>()).prop_map(|(coll, id)| PrePlan::MustNotExist { coll, id }),
    ]
}

fn change() -> impl Strategy<Value = ChangePlan> {
    let ops = prop_oneof![1 => Just(Vec::new()), 80 => prop::collection::vec(op(), 1..3)];
    (ops, prop::option::weighted(0.2, precondition()), prop::option::weighted(0.3, 0u8..6))
        .prop_map(|(ops, precondition, request)| ChangePlan { ops, precondition, request })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1u64..5, prop::collection::vec(change(), 1..=40), prop::collection::vec(1usize..=4, 40), any::<Index>())
        .prop_map(|(checkpoint_interval, changes, sizes, reopen)| {
            let mut batches = Vec::new();
            let mut rest = changes.as_slice();
            for size in sizes {
                if rest.is_empty() {
                    break;
                }
                let (batch, tail) = rest.split_at(size.min(rest.len()));
                batches.push(batch.to_vec());
                rest = tail;
            }
            let reopen_after = reopen.index(batches.len() + 1);
            Scenario { checkpoint_interval, batches, reopen_after }
        })
}

/// A MAC in one of the three accepted spellings.
fn mac_text(which: u8, form: u8) -> String {
    let mac = Mac(MACS[which as usize % MACS.len()]);
    match form % 3 {
        0 => mac.to_string(),
        1 => mac.to_string().replace(':', "-").to_uppercase(),
        _ => mac.to_string().replace(':', ""),
    }
}

fn document(coll: Coll, seed: u8, state: &Projection) -> Value {
    match coll {
        Coll::Notes => match seed % 4 {
            0 => json!(seed),
            1 => json!(format!("note {seed}")),
            2 => json!({"a": seed, "b": {"c": seed % 3}}),
            _ => json!([seed, null, {"x": true}]),
        },
        Coll::Servers => {
            let port = if seed.is_multiple_of(8) { 0 } else { 1000 + u64::from(seed) }; // port 0 is invalid
            json!({"address": format!("10.0.0.{}", seed % 4), "port": port})
        }
        Coll::Terminals => {
            if seed.is_multiple_of(13) {
                return json!({"settings": {}}); // no MAC: invalid
            }
            // Mostly servers that exist; now and then `ts3`, which never does.
            let servers: Vec<String> = (0..seed / 9 % 3)
                .map(|i| {
                    if seed % 10 == 1 {
                        "ts3".into()
                    } else {
                        existing_id(Coll::Servers, seed / 2 + i, state)
                    }
                })
                .collect();
            json!({"mac": mac_text(seed % 3, seed / 3), "terminal_servers": servers})
        }
    }
}

fn patch(coll: Coll, seed: u8) -> Value {
    match coll {
        Coll::Notes => match seed % 3 {
            0 => json!({"a": seed}),
            1 => json!({"b": null}),
            _ => json!({"b": {"d": seed}}),
        },
        Coll::Servers => match seed % 3 {
            0 => json!({"port": if seed.is_multiple_of(8) { 70_000 } else { 2000 + u64::from(seed) }}),
            1 => json!({"address": format!("10.0.1.{seed}")}),
            _ => json!({"port": null}),
        },
        Coll::Terminals => match seed % 4 {
            0 => json!({"mac": mac_text(seed / 4, seed / 12)}),
            1 => json!({"terminal_servers": [format!("ts{}", seed / 4 % 4)]}),
            2 => json!({"settings": {"kiosk": seed.is_multiple_of(2)}}),
            _ => json!({"terminal_servers": null}),
        },
    }
}

fn shift(revision: Revision, delta: i8) -> Revision {
    Revision(revision.0.saturating_add_signed(i64::from(delta)))
}

/// Mostly the id of a document that exists in `state` (a patch or delete of a missing document is rejected,
/// which is worth testing but not most of the time).
fn existing_id(coll: Coll, id: u8, state: &Projection) -> String {
    let existing: Vec<&DocKey> = state.collection(coll.name()).map(|(key, _)| key).collect();
    if id.is_multiple_of(4) || existing.is_empty() {
        return coll.id(id);
    }
    existing[usize::from(id / 4) % existing.len()].id.clone()
}

/// Builds the change set of a plan; relative revisions are resolved against `state`.
fn build(plan: &ChangePlan, number: usize, state: &Projection) -> ChangeSet {
    let mut change_set = ChangeSet::new(ChangeMeta {
        actor: "proptest".into(),
        reason: format!("change {number}"),
        timestamp_ms: 1_700_000_000_000 + number as u64,
        request_id: plan.request.map(|r| format!("request-{r}")),
        ..ChangeMeta::default()
    });
    for op in &plan.ops {
        change_set = match *op {
            OpPlan::Put { coll, id, seed } => {
                change_set.put(coll.name(), &coll.id(id), document(coll, seed, state))
            }
            OpPlan::Patch { coll, id, seed } => {
                change_set.patch(coll.name(), &existing_id(coll, id, state), patch(coll, seed))
            }
            OpPlan::Delete { coll, id } => change_set.delete(coll.name(), &existing_id(coll, id, state)),
        };
    }
    if let Some(precondition) = &plan.precondition {
        let precondition = match *precondition {
            PrePlan::StoreRevision { delta } => {
                Precondition::StoreRevision { revision: shift(state.revision(), delta) }
            }
            PrePlan::DocumentRevision { coll, id, delta } => {
                let current = state.get(&coll.key(id)).map_or(Revision(1), |doc| doc.mod_revision);
                Precondition::DocumentRevision {
                    collection: coll.name().into(),
                    id: coll.id(id),
                    mod_revision: shift(current, delta),
                }
            }
            PrePlan::MustExist { coll, id } => {
                Precondition::MustExist { collection: coll.name().into(), id: coll.id(id) }
            }
            PrePlan::MustNotExist { coll, id } => {
                Precondition::MustNotExist { collection: coll.name().into(), id: coll.id(id) }
            }
        };
        change_set = change_set.require(precondition);
    }
    change_set
}

/// Checks that the derived indexes of `projection` (terminals by MAC, referrers, links) are exactly what its
/// documents say, so that two equal projections also decide alike.
fn check_indexes(projection: &Projection, context: &str) {
    let mut referrers: BTreeMap<DocKey, BTreeSet<DocKey>> = BTreeMap::new();
    let mut macs: BTreeMap<Mac, String> = BTreeMap::new();
    for (key, document) in projection.documents() {
        let links = collections::links_of(&key.collection, &document.value());
        assert_eq!(projection.links(key), Some(&links), "{context}: links of {key}");
        if let Some(mac) = links.mac {
            assert!(macs.insert(mac, key.id.clone()).is_none(), "{context}: MAC {mac} is not unique");
        }
        for (_, collection, id) in &links.documents {
            referrers.entry(DocKey::new(*collection, id.as_str())).or_default().insert(key.clone());
        }
    }
    for mac in MACS.map(Mac) {
        let found = projection.terminal_by_mac(mac).map(|(id, _)| id.to_string());
        assert_eq!(found, macs.get(&mac).cloned(), "{context}: terminal by MAC {mac}");
    }
    for key in universe().iter().chain(referrers.keys()) {
        let found: BTreeSet<DocKey> = projection.referrers(key).cloned().collect();
        assert_eq!(found, referrers.get(key).cloned().unwrap_or_default(), "{context}: referrers of {key}");
    }
}

/// The expected side of the test: the pure decision and projection, with every revision recorded.
struct Shadow {
    projection: Projection,
    /// `states[n]` is the projection right after revision `n` (`states[0]` is empty).
    states: Vec<Projection>,
    /// `events[n - 1]` is the event of revision `n`.
    events: Vec<Event>,
    requests: HashMap<String, Revision>,
}

impl Shadow {
    fn new() -> Self {
        Shadow {
            projection: Projection::new(),
            states: vec![Projection::new()],
            events: Vec::new(),
            requests: HashMap::new(),
        }
    }

    /// What the store must answer to `change_set`, advancing the shadow if it is accepted.
    fn expect(&mut self, change_set: &ChangeSet) -> Outcome {
        let request_id = change_set.meta.request_id.clone();
        if let Some(revision) = request_id.as_ref().and_then(|id| self.requests.get(id)) {
            return Outcome::Duplicate { revision: *revision };
        }
        match decide(&self.projection, &|_| None, change_set) {
            Err(rejection) => Outcome::Rejected(rejection),
            Ok(event) => {
                let revision = event.revision;
                assert_eq!(revision, self.projection.revision().next(), "decide skipped a revision");
                self.projection.apply(&event).unwrap();
                self.states.push(self.projection.clone());
                self.events.push(event);
                if let Some(id) = request_id {
                    self.requests.insert(id, revision);
                }
                Outcome::Accepted { revision }
            }
        }
    }
}

fn open(dir: &std::path::Path, checkpoint_interval: u64) -> Store {
    Store::open_with(dir, StoreOptions { checkpoint_interval }).expect("the store opens")
}

/// Every check of the property on the store as it is now.
fn check_store(store: &Store, shadow: &Shadow, context: &str) {
    let revision = store.revision();
    assert_eq!(revision, shadow.projection.revision(), "{context}: revision");
    assert_eq!(store.projection(), &shadow.projection, "{context}: projection");
    check_indexes(store.projection(), &format!("{context}, live projection"));

    // (d) The history is exactly 1..=revision, and it is what the shadow decided.
    let history = store.history(&HistoryFilter::default()).unwrap();
    let revisions: Vec<u64> = history.iter().map(|event| event.revision.0).collect();
    assert_eq!(revisions, (1..=revision.0).collect::<Vec<_>>(), "{context}: the history has gaps");
    assert_eq!(history, shadow.events, "{context}: history");
    assert_eq!(store.event(revision.next()).unwrap(), None, "{context}: an event past the revision");
    assert!(store.state_at(revision.next()).is_err(), "{context}: a state past the revision");

    // (a) Replaying the whole history from scratch gives the projection.
    let mut replayed = Projection::new();
    for event in store.events(Revision(1), revision) {
        replayed.apply(&event.unwrap()).unwrap();
    }
    assert_eq!(&replayed, store.projection(), "{context}: replay");
    check_indexes(&replayed, &format!("{context}, replayed"));

    // (b) Every revision's state is the one recorded when it was reached.
    for (n, recorded) in shadow.states.iter().enumerate() {
        let state = store.state_at(Revision(n as u64)).unwrap();
        assert_eq!(&state, recorded, "{context}: state at revision {n}");
        check_indexes(&state, &format!("{context}, state at {n}"));
    }
}

fn run(scenario: &Scenario) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), scenario.checkpoint_interval);
    let mut shadow = Shadow::new();
    let mut number = 0;
    for (b, plans) in scenario.batches.iter().enumerate() {
        if b == scenario.reopen_after {
            check_store(&store, &shadow, "before the reopen");
            drop(store);
            store = open(dir.path(), scenario.checkpoint_interval);
            check_store(&store, &shadow, "after the reopen");
        }
        let mut commands = Vec::new();
        let mut expected = Vec::new();
        for plan in plans {
            number += 1;
            let change_set = build(plan, number, &shadow.projection);
            expected.push(shadow.expect(&change_set));
            commands.push(Command::Change(change_set));
        }
        let before = store.revision();
        let outcomes = store.apply(&commands, None).unwrap();
        assert_eq!(outcomes, expected, "batch {b}: outcomes");
        // (d) Accepted change sets take consecutive revisions; nothing else appends anything.
        let accepted: Vec<Revision> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Outcome::Accepted { revision } => Some(*revision),
                _ => None,
            })
            .collect();
        let want: Vec<Revision> = (1..=accepted.len() as u64).map(|i| Revision(before.0 + i)).collect();
        assert_eq!(accepted, want, "batch {b}: accepted revisions are not consecutive");
        assert_eq!(store.revision(), Revision(before.0 + accepted.len() as u64), "batch {b}: revision");
        assert_eq!(store.projection(), &shadow.projection, "batch {b}: projection");
    }
    check_store(&store, &shadow, "at the end");

    // (c) Reopening from disk gives the same projection and history.
    let projection = store.projection().clone();
    let history = store.history(&HistoryFilter::default()).unwrap();
    drop(store);
    let store = open(dir.path(), scenario.checkpoint_interval);
    assert_eq!(store.projection(), &projection, "reopened: projection");
    assert_eq!(store.history(&HistoryFilter::default()).unwrap(), history, "reopened: history");
    check_store(&store, &shadow, "reopened at the end");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 2048,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn history_replays_to_the_projection_at_every_revision(scenario in scenario()) {
        run(&scenario);
    }
}
