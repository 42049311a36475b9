//! The driver's batching, group commit, undo and carry, on a store that fails on command and a manual clock.

use presence_protocol::codes::error_code;

use super::driver::{Driver, Input, Settled, StoreState, TIMEOUT_BACKUP};
use super::log::{Entry, LogPos};
use super::testkit::{self, *};
use crate::presence::command::Command;
use crate::presence::{Ending, Engine};

fn driver(clock: &mut ManualClock) -> Driver {
    use super::driver::Clock;
    Driver::new(
        Engine::new(config(), Vec::new(), Vec::new()),
        "",
        false,
        StoreState::default(),
        clock.now(),
    )
}

/// One command of the local log, settled alone.
fn settle_one(
    driver: &mut Driver,
    store: &mut FakeStore,
    clock: &mut ManualClock,
    command: impl Into<Command>,
) -> Settled {
    driver.settle(
        vec![Input::Entry(local(command.into(), None))],
        store,
        clock,
    )
}

fn users(driver: &Driver) -> Vec<(String, bool)> {
    testkit::users(driver.engine())
}

fn user(id: &str, online: bool) -> (String, bool) {
    (id.to_string(), online)
}

/// Answers every caller of a settled batch as the thread would.
fn answer_all(settled: Settled) {
    for (pending, failure, undone) in settled.answers {
        let _ = pending.answer(failure.as_ref(), undone);
    }
}

#[test]
fn a_batch_commits_once_and_answers_every_caller() {
    let (mut clock, mut store) = (ManualClock::new(), FakeStore::default());
    let mut driver = driver(&mut clock);
    let mut answers = Vec::new();
    let batch = ["a", "b", "c", "d"]
        .into_iter()
        .map(|id| {
            let (pending, rx) = waiting(upsert(id));
            answers.push(rx);
            Input::Entry(local(upsert(id).into(), Some(pending)))
        })
        .collect();
    let settled = driver.settle(batch, &mut store, &mut clock);
    assert_eq!(store.commits.len(), 1, "one transaction for the batch");
    assert_eq!(store.saved(), ["a", "b", "c", "d"]);
    assert_eq!(settled.answers.len(), 4);
    answer_all(settled);
    for mut rx in answers {
        let users = rx.try_recv().unwrap().unwrap();
        assert_eq!(users.len(), 1);
    }
}

#[test]
fn a_refused_write_undoes_only_the_request_that_made_it() {
    let (mut clock, mut store) = (ManualClock::new(), FakeStore::default());
    let mut driver = driver(&mut clock);
    let (mut batch, mut answers) = (Vec::new(), Vec::new());
    for id in ["a", "poison", "b"] {
        let (pending, rx) = waiting(upsert(id));
        answers.push(rx);
        batch.push(Input::Entry(local(upsert(id).into(), Some(pending))));
    }
    answer_all(driver.settle(batch, &mut store, &mut clock));
    assert_eq!(
        store.saved(),
        ["a", "b"],
        "each committed alone after the refusal"
    );
    assert_eq!(users(&driver), [user("a", false), user("b", false)]);
    let results: Vec<_> = answers
        .iter_mut()
        .map(|rx| rx.try_recv().unwrap())
        .collect();
    assert!(results[0].is_ok() && results[2].is_ok());
    let refused = results[1].as_ref().expect_err("the refused write fails");
    assert_eq!(refused.code(), error_code::INTERNAL);
    assert!(
        refused.message().contains("database"),
        "{}",
        refused.message()
    );
    assert!(
        !driver.store_failing(),
        "a refused write is not a failing database"
    );
    assert!(clock.pauses.is_empty(), "a refusal is not tried again");
}

#[test]
fn a_database_that_is_down_undoes_the_requests_keeps_the_facts_and_carries_their_writes() {
    let (mut clock, mut store) = (ManualClock::new(), FakeStore::default());
    let mut driver = driver(&mut clock);
    answer_all(settle_one(
        &mut driver,
        &mut store,
        &mut clock,
        connect("c1", "u"),
    ));
    store.down = true;
    let (pending, mut answer) = waiting(upsert("x"));
    let settled = driver.settle(
        vec![
            Input::Entry(local(upsert("x").into(), Some(pending))),
            Input::Entry(local(disconnect("c1", Ending::Explicit), None)),
        ],
        &mut store,
        &mut clock,
    );
    assert_eq!(
        clock.pauses,
        [200, 600].map(std::time::Duration::from_millis),
        "three tries over about a second"
    );
    assert!(
        !settled.orders.is_empty(),
        "the connection that ended is forgotten by its socket"
    );
    answer_all(settled);
    let failed = answer
        .try_recv()
        .unwrap()
        .expect_err("nothing can be written");
    assert_eq!(failed.code(), error_code::INTERNAL);
    assert_eq!(
        users(&driver),
        [user("u", false)],
        "the upsert is undone, the disconnect stays"
    );
    assert!(driver.store_failing());

    // Nothing commits; the driver looks again once the recheck is due, and then stores what waited.
    store.down = false;
    let due = driver.next_deadline(true).expect("a recheck is due");
    assert!(driver
        .look_at_failing_store(&mut store, &mut clock)
        .is_none());
    clock.now = due;
    let settled = driver.look_at_failing_store(&mut store, &mut clock);
    assert!(settled.is_some(), "the carried writes are settled");
    assert_eq!(store.touches(), ["u"], "the disconnect's stamp is stored");
    assert!(!driver.store_failing());
    assert!(driver.next_deadline(true).is_none());
}

#[test]
fn stamps_waiting_for_the_database_keep_only_the_last_of_each_user() {
    let (mut clock, mut store) = (ManualClock::new(), FakeStore::default());
    let mut driver = driver(&mut clock);
    settle_one(&mut driver, &mut store, &mut clock, connect("c1", "u"));
    store.down = true;
    for _ in 0..3 {
        clock.advance_ms(1000);
        driver.settle(vec![Input::Shutdown], &mut store, &mut clock);
    }
    store.down = false;
    clock.advance_ms(2000);
    driver.look_at_failing_store(&mut store, &mut clock);
    assert_eq!(
        store.touches(),
        ["u"],
        "one stamp per user, not one per try"
    );
}

#[test]
fn entries_of_a_shared_log_stay_applied_whatever_the_database_says() {
    let (mut clock, mut store) = (ManualClock::new(), FakeStore::default());
    let mut driver = driver(&mut clock);
    let shared = |command: Command, pending, seq| {
        Box::new(Entry {
            pos: LogPos(1, seq),
            now: None,
            command: Some(command),
            own: true,
            shared: true,
            pending,
        })
    };
    // A write the database refuses: applied on every node, so here too; its caller hears it is not stored.
    let (pending, mut refused) = waiting(upsert("poison"));
    answer_all(driver.settle(
        vec![Input::Entry(shared(
            upsert("poison").into(),
            Some(pending),
            1,
        ))],
        &mut store,
        &mut clock,
    ));
    assert!(refused.try_recv().unwrap().is_err());
    // A database that is down: the writes wait, the caller is answered.
    store.down = true;
    let (pending, mut waited) = waiting(upsert("y"));
    answer_all(driver.settle(
        vec![Input::Entry(shared(upsert("y").into(), Some(pending), 2))],
        &mut store,
        &mut clock,
    ));
    assert!(waited.try_recv().unwrap().is_ok());
    assert_eq!(users(&driver), [user("poison", false), user("y", false)]);
    store.down = false;
    clock.advance_ms(2000);
    driver.look_at_failing_store(&mut store, &mut clock);
    assert_eq!(store.saved(), ["y"]);
    assert_eq!(
        store.commits[0][0].pos,
        Some((1, 2)),
        "stamped with its log position"
    );
}

#[test]
fn a_shared_store_commits_only_this_node_s_entries() {
    let (mut clock, mut store) = (ManualClock::new(), FakeStore::default());
    store.shared = true;
    let mut driver = Driver::new(
        Engine::new(config(), Vec::new(), Vec::new()),
        "n1:",
        true,
        StoreState::default(),
        clock.now,
    );
    let entry = |id: &str, own: bool, seq| {
        Input::Entry(Box::new(Entry {
            pos: LogPos(5, seq),
            now: None,
            command: Some(upsert(id).into()),
            own,
            shared: true,
            pending: None,
        }))
    };
    driver.settle(
        vec![entry("theirs", false, 1), entry("mine", true, 2)],
        &mut store,
        &mut clock,
    );
    assert_eq!(store.saved(), ["mine"]);
    assert_eq!(users(&driver).len(), 2, "both applied");
}

#[test]
fn the_end_of_a_grace_window_is_asked_for_once_in_time_then_again_if_it_is_not_applied() {
    let (mut clock, mut store) = (ManualClock::new(), FakeStore::default());
    let mut driver = driver(&mut clock);
    settle_one(&mut driver, &mut store, &mut clock, connect("c1", "u"));
    settle_one(
        &mut driver,
        &mut store,
        &mut clock,
        disconnect("c1", Ending::Abnormal),
    );
    let due = clock.now + chrono::TimeDelta::milliseconds(GRACE_MS);
    assert_eq!(driver.next_deadline(true), Some(due));
    assert_eq!(driver.next_deadline(false), Some(due + TIMEOUT_BACKUP));
    assert!(!driver.ask_timeout(due - chrono::TimeDelta::milliseconds(1), true));
    assert!(!driver.ask_timeout(due, false), "a backup waits");
    assert!(driver.ask_timeout(due, true));
    assert!(!driver.ask_timeout(due, true), "asked once");
    assert_eq!(driver.next_deadline(true), Some(due + TIMEOUT_BACKUP));
    assert!(
        driver.ask_timeout(due + TIMEOUT_BACKUP, true),
        "asked again"
    );
    assert_eq!(
        users(&driver),
        [user("u", true)],
        "online until the end is applied"
    );
    clock.now = due + TIMEOUT_BACKUP;
    settle_one(&mut driver, &mut store, &mut clock, Command::Timeout);
    assert_eq!(users(&driver), [user("u", false)]);
    assert_eq!(driver.next_deadline(true), None);
}
