//! Query filters and sorting (protocol section 5.7), evaluated over JSON views of users and channels.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset};
use presence_protocol::{JsonMap, SortParam};
use serde_json::Value;

use crate::error::Error;
use crate::presence::limits::{self, FilterTally};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Nor(Vec<Filter>),
    Field { field: String, cond: Condition },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Autocomplete(String),
    Query(String),
    Contains(Value),
}

/// Looks up a field of the object being filtered.
pub trait Fields {
    fn field(&self, name: &str) -> Option<&Value>;
}

impl Fields for JsonMap {
    fn field(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

impl Filter {
    /// Parses `filter_conditions`. `allowed` says which fields may be filtered on (`None`: any field).
    pub fn parse(raw: &JsonMap, allowed: Option<&[&str]>) -> Result<Filter, Error> {
        limits::check_filter_bytes(raw)?;
        Filter::parse_at(raw, allowed, 0, &mut FilterTally::default())
    }

    /// Parses a filter inside `depth` logical operators, counting what it holds into `tally`.
    fn parse_at(
        raw: &JsonMap,
        allowed: Option<&[&str]>,
        depth: usize,
        tally: &mut FilterTally,
    ) -> Result<Filter, Error> {
        let mut all = Vec::new();
        for (key, value) in raw {
            all.push(parse_entry(key, value, allowed, depth, tally)?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Filter::And(all)
        })
    }

    /// Whether the object passes the filter.
    pub fn matches(&self, obj: &impl Fields) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|f| f.matches(obj)),
            Filter::Or(any) => any.iter().any(|f| f.matches(obj)),
            Filter::Nor(none) => !none.iter().any(|f| f.matches(obj)),
            // An id is a name, not a time: it matches exactly, as the lookup by `id_candidates` does.
            Filter::Field { field, cond } => cond.holds(obj.field(field), field != "id"),
        }
    }

    /// Adds to `names` every field the filter reads (each once).
    fn add_fields(&self, names: &mut Vec<String>) {
        match self {
            Filter::And(all) | Filter::Or(all) | Filter::Nor(all) => {
                all.iter().for_each(|f| f.add_fields(names));
            }
            Filter::Field { field, .. } => add_name(names, field),
        }
    }
}

/// Every field a query with `filter` and `sort` reads, each once.
pub fn fields_read(filter: &Filter, sort: &[SortParam]) -> Vec<String> {
    let mut names = Vec::new();
    filter.add_fields(&mut names);
    for key in sort {
        add_name(&mut names, &key.field);
    }
    names
}

fn add_name(names: &mut Vec<String>, name: &str) {
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

impl Filter {
    /// When every object passing the filter must have one of a few `id`s (`id: x`, `id: {$in: [...]}`, possibly
    /// inside `$and`), those ids, deduplicated; `None` when the filter does not pin `id`.
    pub fn id_candidates(&self) -> Option<Vec<&str>> {
        self.pinned("id")
    }

    /// When every object passing the filter must have one of a few values of the string `field` (`field: x`,
    /// `field: {$in: [...]}`, possibly inside `$and`), those values, deduplicated; `None` when it does not pin it.
    pub fn pinned(&self, field: &str) -> Option<Vec<&str>> {
        let mut ids: Vec<&str> = match self {
            Filter::Field { field: name, cond } if name == field => match cond {
                Condition::Eq(Value::String(id)) => vec![id.as_str()],
                Condition::In(values) => values.iter().filter_map(Value::as_str).collect(),
                _ => return None,
            },
            Filter::And(all) => all
                .iter()
                .filter_map(|f| f.pinned(field))
                .min_by_key(Vec::len)?,
            _ => return None,
        };
        ids.sort_unstable();
        ids.dedup();
        Some(ids)
    }
}

fn parse_entry(
    key: &str,
    value: &Value,
    allowed: Option<&[&str]>,
    depth: usize,
    tally: &mut FilterTally,
) -> Result<Filter, Error> {
    let mut sub_filters = |min: usize| -> Result<Vec<Filter>, Error> {
        limits::check_filter_depth(depth + 1)?;
        let items = value
            .as_array()
            .ok_or_else(|| Error::input(format!("{key} expects an array of filters")))?;
        if items.len() < min {
            return Err(Error::input(format!(
                "{key} expects at least {min} filter(s)"
            )));
        }
        limits::check_filter_width(key, items.len())?;
        items
            .iter()
            .map(|item| match item {
                Value::Object(map) => Filter::parse_at(map, allowed, depth + 1, tally),
                _ => Err(Error::input(format!("{key} expects an array of objects"))),
            })
            .collect()
    };
    match key {
        "$and" => return Ok(Filter::And(sub_filters(1)?)),
        "$or" => return Ok(Filter::Or(sub_filters(2)?)),
        "$nor" => return Ok(Filter::Nor(sub_filters(1)?)),
        _ if key.starts_with('$') => {
            return Err(Error::input(format!("unknown logical operator {key}")))
        }
        _ => {}
    }
    if let Some(allowed) = allowed {
        if !allowed.contains(&key) {
            return Err(Error::input(format!(
                "field {key} is not supported in this filter"
            )));
        }
    }
    let field = key.to_string();
    let Value::Object(ops) = value else {
        tally.condition()?;
        return Ok(Filter::Field {
            field,
            cond: Condition::Eq(value.clone()),
        });
    };
    if ops.is_empty() || !ops.keys().all(|k| k.starts_with('$')) {
        // A plain object value compares as a whole.
        tally.condition()?;
        return Ok(Filter::Field {
            field,
            cond: Condition::Eq(value.clone()),
        });
    }
    let mut conds = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        tally.condition()?;
        let mut list = || -> Result<Vec<Value>, Error> {
            let items = arg
                .as_array()
                .ok_or_else(|| Error::input(format!("operator {op} on {key} expects an array")))?;
            limits::check_in_values(op, key, items.len())?;
            tally.values(items.len())?;
            Ok(items.clone())
        };
        let text = || -> Result<String, Error> {
            let text = arg
                .as_str()
                .ok_or_else(|| Error::input(format!("operator {op} on {key} expects a string")))?;
            limits::check_search_text(op, key, text)?;
            Ok(text.to_string())
        };
        let cond = match op.as_str() {
            "$eq" => Condition::Eq(arg.clone()),
            "$ne" => Condition::Ne(arg.clone()),
            "$gt" => Condition::Gt(arg.clone()),
            "$gte" => Condition::Gte(arg.clone()),
            "$lt" => Condition::Lt(arg.clone()),
            "$lte" => Condition::Lte(arg.clone()),
            "$in" => Condition::In(list()?),
            "$nin" => Condition::Nin(list()?),
            "$exists" => Condition::Exists(arg.as_bool().ok_or_else(|| {
                Error::input(format!("operator $exists on {key} expects a boolean"))
            })?),
            "$autocomplete" => Condition::Autocomplete(text()?.to_lowercase()),
            "$q" => Condition::Query(text()?.to_lowercase()),
            "$contains" => Condition::Contains(arg.clone()),
            _ => {
                return Err(Error::input(format!(
                    "unknown operator {op} on field {key}"
                )))
            }
        };
        conds.push(Filter::Field {
            field: field.clone(),
            cond,
        });
    }
    Ok(if conds.len() == 1 {
        conds.remove(0)
    } else {
        Filter::And(conds)
    })
}

impl Condition {
    /// Whether `actual` passes; with `instants`, two RFC 3339 strings naming the same instant are equal.
    fn holds(&self, actual: Option<&Value>, instants: bool) -> bool {
        let equal = |a: &Value, b: &Value| equal(a, b, instants);
        let present = actual.filter(|v| !v.is_null());
        match self {
            Condition::Exists(want) => present.is_some() == *want,
            Condition::Ne(v) => present.is_none_or(|a| !equal(a, v)),
            Condition::Nin(vs) => present.is_none_or(|a| !vs.iter().any(|v| equal(a, v))),
            Condition::Eq(Value::Null) => present.is_none(),
            _ => {
                let Some(a) = present else { return false };
                match self {
                    Condition::Eq(v) => equal(a, v),
                    Condition::In(vs) => vs.iter().any(|v| equal(a, v)),
                    Condition::Gt(v) => compare(a, v) == Some(Ordering::Greater),
                    Condition::Gte(v) => {
                        matches!(compare(a, v), Some(Ordering::Greater | Ordering::Equal))
                    }
                    Condition::Lt(v) => compare(a, v) == Some(Ordering::Less),
                    Condition::Lte(v) => {
                        matches!(compare(a, v), Some(Ordering::Less | Ordering::Equal))
                    }
                    Condition::Autocomplete(prefix) => a.as_str().is_some_and(|s| {
                        s.to_lowercase()
                            .split(|c: char| !c.is_alphanumeric())
                            .any(|word| word.starts_with(prefix.as_str()))
                            || s.to_lowercase().starts_with(prefix.as_str())
                    }),
                    Condition::Query(q) => a.as_str().is_some_and(|s| {
                        let s = s.to_lowercase();
                        q.split_whitespace().all(|term| s.contains(term))
                    }),
                    Condition::Contains(v) => a
                        .as_array()
                        .is_some_and(|items| items.iter().any(|item| equal(item, v))),
                    Condition::Ne(_) | Condition::Nin(_) | Condition::Exists(_) => false,
                }
            }
        }
    }
}

fn as_time(v: &Value) -> Option<DateTime<FixedOffset>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
}

/// Equality that treats two RFC 3339 strings naming the same instant as equal (with `instants`), and an array
/// field as equal to a value it contains (`teams: "red"`).
fn equal(a: &Value, b: &Value, instants: bool) -> bool {
    if instants {
        if let (Some(x), Some(y)) = (as_time(a), as_time(b)) {
            return x == y;
        }
    }
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        return x == y;
    }
    if let (Value::Array(items), false) = (a, b.is_array()) {
        return items.contains(b);
    }
    a == b
}

/// Ordered comparison of numbers, dates (as instants) and strings; `None` for values of different kinds.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (as_time(a), as_time(b)) {
        return Some(x.cmp(&y));
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// The rank of a value's type in the sort order, lowest first, as MongoDB orders BSON types: null, numbers,
/// strings, objects, arrays, booleans, dates. Strings that are RFC 3339 timestamps rank as dates, so instants are
/// only ever compared with instants (comparing them with plain strings as instants on one side and as text on the
/// other would break transitivity).
fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Number(_) => 1,
        Value::String(_) if as_time(v).is_some() => 6,
        Value::String(_) => 2,
        Value::Object(_) => 3,
        Value::Array(_) => 4,
        Value::Bool(_) => 5,
    }
}

/// A total order over every JSON value, for sorting: by type rank, then by value within the type (numbers
/// numerically, strings by code point, dates as instants, arrays and objects element by element). Unlike
/// [`compare`], it never declines, so `sort_by` gets the total order it requires (it may panic otherwise).
pub fn sort_cmp(a: &Value, b: &Value) -> Ordering {
    let by_rank = type_rank(a).cmp(&type_rank(b));
    if by_rank != Ordering::Equal {
        return by_rank;
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            // `-0.0` and `0.0` are equal JSON numbers (and `equal` matches them): they must tie here too.
            let key = |n: &serde_json::Number| {
                let f = n.as_f64().unwrap_or(0.0);
                if f == 0.0 {
                    0.0
                } else {
                    f
                }
            };
            key(x).total_cmp(&key(y))
        }
        (Value::String(x), Value::String(y)) => match (as_time(a), as_time(b)) {
            (Some(tx), Some(ty)) => tx.cmp(&ty),
            _ => x.cmp(y),
        },
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .map(|(x, y)| sort_cmp(x, y))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Value::Object(x), Value::Object(y)) => {
            let mut xs: Vec<(&String, &Value)> = x.iter().collect();
            let mut ys: Vec<(&String, &Value)> = y.iter().collect();
            xs.sort_unstable_by(|p, q| p.0.cmp(q.0));
            ys.sort_unstable_by(|p, q| p.0.cmp(q.0));
            xs.iter()
                .zip(&ys)
                .map(|((kx, vx), (ky, vy))| kx.cmp(ky).then_with(|| sort_cmp(vx, vy)))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| xs.len().cmp(&ys.len()))
        }
        _ => Ordering::Equal,
    }
}

/// Checks a sort: directions are 1 or -1, and, with `known`, every field is one it knows (a built-in field, or a
/// custom field some record has). A sort on a field no record has would order nothing, so it is refused: most
/// often it is a misspelt name.
pub fn check_sort(sort: &[SortParam], known: Option<&dyn Fn(&str) -> bool>) -> Result<(), Error> {
    for key in sort {
        if key.direction != 1 && key.direction != -1 {
            return Err(Error::input(format!(
                "sort direction for {} must be 1 or -1",
                key.field
            )));
        }
        if let Some(known) = known {
            if !known(&key.field) {
                return Err(Error::input(format!(
                    "sorting by {} is not supported: it is not a built-in field and no record has it as a \
                     custom field",
                    key.field
                )));
            }
        }
    }
    Ok(())
}

/// Orders two objects by the sort keys; objects missing a key sort after those that have it, in either direction.
pub fn sort_order(sort: &[SortParam], a: &impl Fields, b: &impl Fields) -> Ordering {
    for key in sort {
        let (x, y) = (a.field(&key.field), b.field(&key.field));
        let ord = match (x.filter(|v| !v.is_null()), y.filter(|v| !v.is_null())) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => {
                let ord = sort_cmp(x, y);
                if key.direction < 0 {
                    ord.reverse()
                } else {
                    ord
                }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonMap {
        v.as_object().cloned().unwrap()
    }

    fn parse(v: Value) -> Result<Filter, Error> {
        Filter::parse(&obj(v), None)
    }

    #[test]
    fn a_filter_names_every_field_it_reads_once() {
        let filter = parse(json!({
            "role": "user",
            "$or": [{ "score": { "$gt": 3 } }, { "$nor": [{ "name": { "$q": "bo" } }, { "role": "admin" }] }],
            "$and": [{ "teams": { "$contains": "red" } }]
        }))
        .unwrap();
        // A sort key the filter reads too is named once.
        let sort = [SortParam {
            field: "teams".to_string(),
            direction: 1,
        }];
        let mut names = fields_read(&filter, &sort);
        names.sort();
        assert_eq!(names, ["name", "role", "score", "teams"]);
        // Reading only those fields decides as reading the whole object does.
        let bob =
            obj(json!({"id":"bob","role":"user","score":5,"teams":["red"],"name":"Bob","age":30}));
        let only: JsonMap = bob
            .iter()
            .filter(|(k, _)| names.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert!(filter.matches(&bob));
        assert_eq!(filter.matches(&only), filter.matches(&bob));
    }

    #[test]
    fn operators_select_what_they_say() {
        let bob = obj(
            json!({"id":"bob","name":"Bob Marley","age":30,"teams":["red"],"last_active":"2024-05-01T10:00:00.5Z"}),
        );
        let yes = [
            json!({"id":"bob"}),
            json!({"id":{"$in":["x","bob"]}}),
            json!({"id":{"$nin":["x"]}}),
            json!({"age":{"$gt":29,"$lte":30}}),
            json!({"name":{"$autocomplete":"mar"}}),
            json!({"name":{"$q":"bob"}}),
            json!({"teams":{"$contains":"red"}}),
            json!({"status":{"$exists":false}}),
            json!({"last_active":{"$gt":"2024-05-01T10:00:00Z"}}),
            json!({"$or":[{"id":"x"},{"age":30}]}),
            json!({"$nor":[{"id":"x"}]}),
            json!({"role":{"$ne":"admin"}}),
        ];
        for f in yes {
            assert!(parse(f.clone()).unwrap().matches(&bob), "{f}");
        }
        let no = [
            json!({"id":"alice"}),
            json!({"age":{"$lt":30}}),
            json!({"name":{"$autocomplete":"xyz"}}),
            json!({"last_active":{"$lt":"2024-05-01T10:00:00Z"}}),
            json!({"$and":[{"id":"bob"},{"age":31}]}),
        ];
        for f in no {
            assert!(!parse(f.clone()).unwrap().matches(&bob), "{f}");
        }
    }

    #[test]
    fn filters_pinning_id_name_their_candidates() {
        let ids = |v: Value| {
            parse(v)
                .unwrap()
                .id_candidates()
                .map(|ids| ids.into_iter().map(str::to_string).collect::<Vec<_>>())
        };
        assert_eq!(ids(json!({"id":"bob"})), Some(vec!["bob".to_string()]));
        assert_eq!(
            ids(json!({"id":{"$in":["b","a","b"]},"online":true})),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            ids(json!({"$and":[{"id":{"$in":["a","b"]}},{"id":"a"}]})),
            Some(vec!["a".to_string()])
        );
        assert_eq!(ids(json!({"$or":[{"id":"a"},{"id":"b"}]})), None);
        assert_eq!(ids(json!({"id":{"$ne":"a"}})), None);
        assert_eq!(ids(json!({"name":"a"})), None);
        // Any string field may be pinned: a channel recovery names its cids.
        let cids =
            parse(json!({"cid":{"$in":["messaging:b","messaging:a"]},"type":"messaging"})).unwrap();
        assert_eq!(cids.pinned("cid"), Some(vec!["messaging:a", "messaging:b"]));
        assert_eq!(cids.pinned("id"), None);
    }

    #[test]
    fn bad_filters_are_input_errors() {
        for f in [
            json!({"id":{"$regex":"b"}}),
            json!({"$or":[{"id":"a"}]}),
            json!({"$xor":[]}),
            json!({"id":{"$in":"bob"}}),
            json!({"status":{"$exists":"yes"}}),
        ] {
            assert_eq!(parse(f.clone()).unwrap_err().code(), 4, "{f}");
        }
    }

    #[test]
    fn sort_puts_missing_last_and_respects_direction() {
        let a = obj(json!({"id":"a","n":1}));
        let b = obj(json!({"id":"b","n":2}));
        let c = obj(json!({"id":"c"}));
        let desc = [SortParam {
            field: "n".into(),
            direction: -1,
        }];
        let mut v = [&a, &c, &b];
        v.sort_by(|x, y| sort_order(&desc, *x, *y));
        let ids: Vec<_> = v.iter().map(|o| o["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["b", "a", "c"]);
    }

    /// Values of every type, with ties across representations (1 and 1.0, two spellings of one instant).
    fn mixed_values() -> Vec<Value> {
        vec![
            json!(null),
            json!(-3),
            json!(0),
            json!(1),
            json!(1.0),
            json!(2.5),
            json!(u64::MAX),
            json!(""),
            json!("a"),
            json!("B"),
            json!("2024-05-01"),
            json!("2024-05-01T10:00:00Z"),
            json!("2024-05-01T12:00:00+02:00"),
            json!("2024-05-01T10:00:00.5Z"),
            json!("1999-12-31T23:59:59Z"),
            json!(true),
            json!(false),
            json!([]),
            json!([1]),
            json!([1, "a"]),
            json!(["a"]),
            json!({}),
            json!({"a": 1}),
            json!({"a": "1"}),
            json!({"b": 0}),
            json!({"a": 1, "b": 2}),
        ]
    }

    #[test]
    fn sort_cmp_is_a_total_order_over_mixed_types() {
        let values = mixed_values();
        for a in &values {
            assert_eq!(sort_cmp(a, a), Ordering::Equal, "reflexive: {a}");
            for b in &values {
                let ab = sort_cmp(a, b);
                assert_eq!(ab, sort_cmp(b, a).reverse(), "antisymmetric: {a} vs {b}");
                for c in &values {
                    let bc = sort_cmp(b, c);
                    if ab != Ordering::Greater && bc != Ordering::Greater {
                        let ac = sort_cmp(a, c);
                        assert_ne!(ac, Ordering::Greater, "transitive: {a} <= {b} <= {c}");
                        if ab == Ordering::Less || bc == Ordering::Less {
                            assert_eq!(
                                ac,
                                Ordering::Less,
                                "transitive: {a} <= {b} <= {c}, one strict"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sort_cmp_ranks_types_then_values() {
        let ordered = [
            json!(null),
            json!(-3),
            json!(2.5),
            json!("B"),
            json!("a"),
            json!({"a": 1}),
            json!([1]),
            json!(false),
            json!(true),
            json!("1999-12-31T23:59:59Z"),
            json!("2024-05-01T10:00:00Z"),
        ];
        for pair in ordered.windows(2) {
            assert_eq!(
                sort_cmp(&pair[0], &pair[1]),
                Ordering::Less,
                "{} < {}",
                pair[0],
                pair[1]
            );
        }
        // The same instant in two spellings ties; so do 1 and 1.0.
        assert_eq!(
            sort_cmp(
                &json!("2024-05-01T10:00:00Z"),
                &json!("2024-05-01T12:00:00+02:00")
            ),
            Ordering::Equal
        );
        assert_eq!(sort_cmp(&json!(1), &json!(1.0)), Ordering::Equal);
    }
}
