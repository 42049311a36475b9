//! The driver over a store that can fail: a write the database refuses fails only the request that made it, a
//! database that does not work fails every request of the batch and shows in the hub's failing parts until a
//! commit succeeds again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use presence_protocol::codes::error_code;
use presence_protocol::JsonMap;

use super::sockets::Sockets;
use super::testkit::{self, Failure};
use super::{Hub, LogChoice};
use crate::model::{Caller, Write};
use crate::presence::{Delivery, SocketOrder};
use crate::store::{Snapshot, Stamped, Store, StoreError};

/// Bounds every wait of these tests.
const PATIENCE: Duration = Duration::from_secs(10);

/// A store that refuses any batch saving the user `poison` (as PostgreSQL refuses a key too large for its
/// index), fails every batch while `down`, and can hold its next commit until released.
#[derive(Clone, Default)]
struct FakeStore {
    saved: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
    /// When set, the next commit waits for a message on it.
    gate: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
}

impl FakeStore {
    fn saved(&self) -> Vec<String> {
        self.saved.lock().unwrap().clone()
    }
}

impl Store for FakeStore {
    fn commit(&mut self, writes: &[Stamped]) -> Result<(), StoreError> {
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.recv_timeout(PATIENCE);
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Write(Arc::new(Failure("connection refused"))));
        }
        let ids: Vec<String> = writes
            .iter()
            .filter_map(|w| match &w.write {
                Write::SaveUser(u) => Some(u.id.clone()),
                _ => None,
            })
            .collect();
        if ids.iter().any(|id| id == "poison") {
            return Err(StoreError::Refused(Arc::new(Failure(
                "index row size exceeds btree maximum",
            ))));
        }
        self.saved.lock().unwrap().extend(ids);
        Ok(())
    }
}

/// No connection is held here.
struct NoSockets;

impl Sockets for NoSockets {
    fn publish(&self, _: Vec<Delivery>) {}
    fn carry_out(&self, _: Vec<SocketOrder>) {}
    fn close_all(&self, _: u16) {}
    fn frames_sent(&self) -> u64 {
        0
    }
}

fn start(store: &FakeStore) -> Arc<Hub> {
    Hub::start(
        testkit::config(),
        Snapshot::default(),
        Box::new(store.clone()),
        Arc::new(NoSockets),
        LogChoice::Local,
    )
    .expect("the hub starts")
}

/// Of `ids`, those the hub knows.
async fn known(hub: &Hub, ids: &[&str]) -> Vec<String> {
    let payload = serde_json::from_value(serde_json::json!({
        "filter_conditions": { "id": { "$in": ids } },
        "limit": 100,
    }))
    .unwrap();
    let users = hub
        .query_users(&Caller::Server, None, &payload)
        .await
        .unwrap();
    let mut ids: Vec<String> = users.into_iter().map(|u| u.id).collect();
    ids.sort();
    ids
}

fn one_user(id: &str) -> BTreeMap<String, JsonMap> {
    let mut data = JsonMap::new();
    data.insert("name".into(), id.into());
    BTreeMap::from([(id.to_string(), data)])
}

/// Queues one upsert per id while the store holds a commit, so they all land in the next batch; returns their
/// answers by id.
async fn upserts_in_one_batch(
    hub: &Arc<Hub>,
    store: &FakeStore,
    ids: Vec<String>,
) -> BTreeMap<String, Result<(), crate::error::Error>> {
    let (release, gate) = mpsc::channel();
    *store.gate.lock().unwrap() = Some(gate);
    // This upsert's commit holds the thread until released.
    let holder = {
        let hub = Arc::clone(hub);
        tokio::spawn(async move { hub.upsert_users(&Caller::Server, &one_user("holder")).await })
    };
    tokio::time::timeout(PATIENCE, async {
        while store.gate.lock().unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the store takes the first commit");
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let hub = Arc::clone(hub);
            tokio::spawn(async move {
                let answer = hub.upsert_users(&Caller::Server, &one_user(&id)).await;
                (id, answer.map(|_| ()))
            })
        })
        .collect();
    // Let every upsert reach the hub's queue before the held commit ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.send(()).unwrap();
    let mut answers = BTreeMap::new();
    for task in tasks {
        let (id, answer) = tokio::time::timeout(PATIENCE, task)
            .await
            .expect("an answer in time")
            .unwrap();
        answers.insert(id, answer);
    }
    let _ = tokio::time::timeout(PATIENCE, holder).await;
    answers
}

#[tokio::test]
async fn a_refused_write_fails_only_its_own_request_in_a_batch() {
    let store = FakeStore::default();
    let hub = start(&store);
    let mut ids: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    ids.insert(7, "poison".to_string());
    let answers = upserts_in_one_batch(&hub, &store, ids).await;

    let poison = answers["poison"]
        .as_ref()
        .expect_err("the refused write fails");
    assert_eq!(poison.code(), error_code::INTERNAL);
    assert!(
        poison.message().contains("database"),
        "{}",
        poison.message()
    );
    for i in 0..20 {
        let id = format!("user-{i}");
        assert!(answers[&id].is_ok(), "{id}: {:?}", answers[&id]);
        assert!(store.saved().contains(&id), "{id} is stored");
    }
    assert!(!store.saved().contains(&"poison".to_string()));
    assert_eq!(
        known(&hub, &["user-0", "user-19", "poison"]).await,
        vec!["user-0", "user-19"],
        "the refused upsert is undone, the others are not"
    );
    assert!(
        hub.failing_parts().is_empty(),
        "a refused write is not a failing database"
    );
}

#[tokio::test]
async fn a_database_that_fails_every_write_fails_the_batch_and_shows_until_it_works() {
    let store = FakeStore::default();
    let hub = start(&store);
    store.down.store(true, Ordering::SeqCst);
    let failed = hub
        .upsert_users(&Caller::Server, &one_user("alice"))
        .await
        .expect_err("nothing can be written");
    assert_eq!(failed.code(), error_code::INTERNAL);
    assert!(known(&hub, &["alice"]).await.is_empty());
    assert_eq!(hub.failing_parts(), vec!["database"]);
    hub.flush().await.expect("nothing to write");
    assert_eq!(
        hub.failing_parts(),
        vec!["database"],
        "a batch without writes says nothing of the database"
    );

    store.down.store(false, Ordering::SeqCst);
    tokio::time::timeout(PATIENCE, async {
        while !hub.failing_parts().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the hub sees the database work again without a write");
    hub.upsert_users(&Caller::Server, &one_user("alice"))
        .await
        .expect("written once the database works");
}
