//! Target `filter`: the query filter and sort parser and the sort comparator of the server.
//!
//! Input: a JSON document read as a `queryUsers` payload with test values beside it,
//! `{"filter_conditions": {..}, "sort": [{"field": "..", "direction": 1}], "values": [..]}`; any JSON is taken,
//! what is missing is skipped. Properties:
//! - `Filter::parse` of any object (`filter_conditions` and every object of the document) gives a filter or an
//!   input error (code 4); `matches` of every object of the document gives an answer.
//! - `sort_cmp` is a total order over the values of the document (the first `MAX_VALUES`, `values` first, each
//!   followed by its parts): reflexive, antisymmetric, transitive, values it ties compare alike with every other
//!   value, and values equal as JSON tie. `compare` (range filters) is antisymmetric.
//! - `check_sort` accepts the sort or refuses it with code 4; `sort_order` with an accepted sort is a total order
//!   over the document's objects, and sorting them by it gives an ordered list.
//! - The engine's `query_users` over users made of the document's objects answers (at most `limit` users) or
//!   refuses with code 4, and answers the same when the filter is put under `$or` (which pins no ids, so the
//!   engine looks at every user rather than only at the ids the filter names).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use presence_protocol::{JsonMap, QueryUsersPayload, SortParam};
use presence_server::auth::Caller;
use presence_server::fuzzing::{check_sort, compare, sort_cmp, sort_order, Config, Engine, Filter};
use serde_json::Value;

/// How many values the order properties look at (the checks are cubic in it).
const MAX_VALUES: usize = 12;

pub fn check(data: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let values = values_of(&doc);
    let objects: Vec<&JsonMap> = values.iter().filter_map(|v| v.as_object()).collect();

    let mut filters = Vec::new();
    if let Some(raw) = doc.get("filter_conditions").and_then(Value::as_object) {
        filters.push(raw);
    }
    filters.extend(objects.iter().copied());
    for raw in filters {
        match Filter::parse(raw, None) {
            Ok(filter) => {
                for obj in &objects {
                    let _ = filter.matches(*obj);
                }
            }
            Err(e) => assert_eq!(e.code(), 4, "a bad filter is an input error: {e}"),
        }
    }

    assert_total_order(&values, sort_cmp, "sort_cmp");
    for a in &values {
        for b in &values {
            assert_eq!(
                compare(a, b),
                compare(b, a).map(Ordering::reverse),
                "compare is antisymmetric: {a} vs {b}"
            );
            if a == b {
                assert_eq!(
                    sort_cmp(a, b),
                    Ordering::Equal,
                    "equal values tie: {a} vs {b}"
                );
            }
        }
    }

    if let Some(sort) = doc
        .get("sort")
        .and_then(|s| serde_json::from_value::<Vec<SortParam>>(s.clone()).ok())
    {
        match check_sort(&sort, None) {
            Ok(()) => {
                let order = |a: &&JsonMap, b: &&JsonMap| sort_order(&sort, *a, *b);
                assert_total_order(&objects, order, "sort_order");
                let mut sorted = objects.clone();
                sorted.sort_by(order);
                for pair in sorted.windows(2) {
                    assert_ne!(
                        order(&pair[0], &pair[1]),
                        Ordering::Greater,
                        "sorted by sort_order"
                    );
                }
            }
            Err(e) => assert_eq!(e.code(), 4, "a bad sort is an input error: {e}"),
        }
    }

    query_users(&doc, &objects);
}

/// The values the order properties look at: those of `values` (each followed by its parts), then the document's.
fn values_of(doc: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(Value::Array(items)) = doc.get("values") {
        for item in items {
            walk(item, &mut out);
        }
    }
    walk(doc, &mut out);
    out
}

fn walk(v: &Value, out: &mut Vec<Value>) {
    if out.len() >= MAX_VALUES {
        return;
    }
    out.push(v.clone());
    match v {
        Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
        Value::Object(map) => map.values().for_each(|item| walk(item, out)),
        _ => {}
    }
}

/// Reflexive, antisymmetric, transitive (strictly so when one step is strict), and ties interchangeable.
fn assert_total_order<T: std::fmt::Debug>(
    items: &[T],
    cmp: impl Fn(&T, &T) -> Ordering,
    name: &str,
) {
    for a in items {
        assert_eq!(cmp(a, a), Ordering::Equal, "{name} is reflexive: {a:?}");
        for b in items {
            let ab = cmp(a, b);
            assert_eq!(
                ab,
                cmp(b, a).reverse(),
                "{name} is antisymmetric: {a:?} vs {b:?}"
            );
            for c in items {
                let (bc, ac) = (cmp(b, c), cmp(a, c));
                if ab == Ordering::Equal {
                    assert_eq!(ac, bc, "{name}: ties compare alike: {a:?} = {b:?} vs {c:?}");
                }
                if ab != Ordering::Greater && bc != Ordering::Greater {
                    let want = if ab == Ordering::Less || bc == Ordering::Less {
                        Ordering::Less
                    } else {
                        Ordering::Equal
                    };
                    assert_eq!(ac, want, "{name} is transitive: {a:?} <= {b:?} <= {c:?}");
                }
            }
        }
    }
}

/// The engine's `query_users`, over users upserted from the document's objects (id `u<n>` unless they name one).
fn query_users(doc: &Value, objects: &[&JsonMap]) {
    let Ok(payload) = serde_json::from_value::<QueryUsersPayload>(doc.clone()) else {
        return;
    };
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let mut engine = Engine::new(
        Config {
            offline_grace: std::time::Duration::from_secs(5),
            watch_implies_presence: false,
            max_connections_per_user: 2,
            max_channels_per_user: 1000,
            last_active_refresh: std::time::Duration::from_secs(15 * 60),
            max_follows_per_connection: 5000,
            distinct_channel_key: presence_server::fuzzing::distinct_channel_key(""),
            webhook_url: None,
            webhook_events: Vec::new(),
        },
        Vec::new(),
        Vec::new(),
    );
    for (n, obj) in objects.iter().enumerate() {
        let id = match obj.get("id") {
            Some(Value::String(id)) => id.clone(),
            _ => format!("u{n}"),
        };
        let mut obj = (*obj).clone();
        obj.insert("id".into(), Value::String(id.clone()));
        let users = BTreeMap::from([(id, obj)]);
        if let Err(e) = engine.upsert_users(&Caller::Server, &users, now) {
            assert_eq!(e.code(), 4, "a bad user is an input error: {e}");
        }
    }
    let answer = engine.view().query_users(&Caller::Server, &payload);
    match &answer {
        Ok(users) => {
            let limit = payload.limit.unwrap_or(30);
            assert!(users.len() as u64 <= limit, "at most limit users");
        }
        Err(e) => assert_eq!(e.code(), 4, "a bad query is an input error: {e}"),
    }
    // The same filter under `$or` pins no id, so every user is looked at: the answer must be the same.
    let mut scan = payload.clone();
    let both = Value::Object(payload.filter_conditions.clone());
    scan.filter_conditions =
        JsonMap::from_iter([("$or".to_string(), Value::Array(vec![both.clone(), both]))]);
    let scanned = engine.view().query_users(&Caller::Server, &scan);
    let ids = |answer: &Result<Vec<presence_protocol::User>, _>| {
        answer
            .as_ref()
            .ok()
            .map(|users| users.iter().map(|u| u.id.clone()).collect::<Vec<_>>())
    };
    assert_eq!(
        ids(&answer),
        ids(&scanned),
        "a filter pinning ids finds what a full scan finds"
    );
    let _ = engine.poll_deliveries();
    let _ = engine.poll_writes();
}
