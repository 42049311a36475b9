//! Input limits (protocol section 10): how much one request or one user may make the server hold or look at. Each
//! check runs in time linear in its input and refuses with an input error (code 4) that names the limit.

use std::collections::HashSet;
use std::io;

use presence_protocol::ids::{is_user_id, MAX_USER_ID_LEN};
use presence_protocol::{JsonMap, Pagination};
use serde_json::Value;

use crate::error::Error;

/// Largest serialized custom data of a user or a channel: 5 KB, as Stream caps it.
pub const MAX_CUSTOM_DATA_BYTES: usize = 5 * 1024;
/// Most members one channel request may name.
pub const MAX_MEMBERS_PER_REQUEST: usize = 100;
/// Most values of one `$in` or `$nin`.
pub const MAX_IN_VALUES: usize = 1000;
/// Largest `limit` of a page of watchers.
pub const MAX_WATCHERS_LIMIT: u64 = 100;
/// Largest `offset` of any page.
pub const MAX_OFFSET: u64 = 1000;
/// Deepest nesting of `$and` / `$or` / `$nor` in a filter.
pub const MAX_FILTER_DEPTH: usize = 10;
/// Most conditions (one per field operator) in one filter: the SDK's own filters hold one to five, hand-written
/// app filters a few dozen; each is evaluated for every user an unpinned query looks at.
pub const MAX_FILTER_CONDITIONS: usize = 100;
/// Most sub-filters of one `$and` / `$or` / `$nor` (an empty sub-filter holds no condition, so the condition count
/// alone would not bound them).
pub const MAX_FILTER_WIDTH: usize = 50;
/// Most `$in` / `$nin` values in one filter, every list together: one full list pinning ids, and as much again.
pub const MAX_FILTER_VALUES: usize = 2 * MAX_IN_VALUES;
/// Longest `$q` / `$autocomplete` text in characters: a search box's input, not a document.
pub const MAX_SEARCH_CHARS: usize = 100;
/// Most words of one `$q`, each a substring search in the field of every user looked at.
pub const MAX_SEARCH_TERMS: usize = 10;
/// Largest filter serialized as JSON: 1,000 ids of 64 characters fit with room to spare.
pub const MAX_FILTER_BYTES: usize = 128 * 1024;

/// Counts the bytes written to it and keeps none.
struct ByteCount(usize);

impl io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The length of `data` serialized as a JSON object, without building the text.
pub(crate) fn serialized_len(data: &JsonMap) -> usize {
    let mut count = ByteCount(0);
    // Writing a JSON map into a sink that cannot fail does not fail.
    let _ = serde_json::to_writer(&mut count, data);
    count.0
}

/// Checks a custom data map against the 5 KB cap; `what` says whose data it is.
fn check_custom_data(what: &str, data: &JsonMap) -> Result<(), Error> {
    let len = serialized_len(data);
    if len > MAX_CUSTOM_DATA_BYTES {
        return Err(Error::input(format!(
            "{what} custom data is {len} bytes serialized, over the limit of 5 KB ({MAX_CUSTOM_DATA_BYTES} bytes)"
        )));
    }
    Ok(())
}

/// A user's stored fields after a write (name, image, language, privacy_settings and custom fields): ≤ 5 KB.
pub fn check_user_data(user_id: &str, data: &JsonMap) -> Result<(), Error> {
    check_custom_data(&format!("users[{user_id}]"), data)
}

/// A channel's custom data as it would be stored: ≤ 5 KB.
pub fn check_channel_data(data: &JsonMap) -> Result<(), Error> {
    check_custom_data("channel", data)
}

/// Member ids named by channel data (`data.members`: strings or `{user_id}` objects), at most 100, in the order
/// given with repeats dropped. The count is checked before anything else is looked at.
pub fn member_ids(data: &JsonMap) -> Result<Vec<String>, Error> {
    let Some(raw) = data.get("members") else {
        return Ok(Vec::new());
    };
    let items = member_array("data.members", raw)?;
    if items.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(Error::input(format!(
            "data.members names {} members, over the limit of {MAX_MEMBERS_PER_REQUEST} per request",
            items.len()
        )));
    }
    user_ids_of("data.members", items)
}

/// The ids of a member update (`add_members`, `remove_members`; each strings or `{user_id}` objects), at most 100
/// in both lists together, each list in the order given with repeats dropped. The count is checked before anything
/// else is looked at; an id in both lists is refused.
pub fn member_changes(
    add: Option<&Value>,
    remove: Option<&Value>,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let add = add.map(|v| member_array("add_members", v)).transpose()?;
    let remove = remove
        .map(|v| member_array("remove_members", v))
        .transpose()?;
    let (add, remove) = (add.unwrap_or(&[]), remove.unwrap_or(&[]));
    let named = add.len() + remove.len();
    if named > MAX_MEMBERS_PER_REQUEST {
        return Err(Error::input(format!(
            "add_members and remove_members name {named} users, over the limit of {MAX_MEMBERS_PER_REQUEST} per \
             request: send them in several requests"
        )));
    }
    let (add, remove) = (
        user_ids_of("add_members", add)?,
        user_ids_of("remove_members", remove)?,
    );
    if add.is_empty() && remove.is_empty() {
        return Err(Error::input(
            "add_members or remove_members must name at least one user",
        ));
    }
    let adding: HashSet<&str> = add.iter().map(String::as_str).collect();
    if let Some(both) = remove.iter().find(|id| adding.contains(id.as_str())) {
        return Err(Error::input(format!(
            "user {both} is named in both add_members and remove_members"
        )));
    }
    Ok((add, remove))
}

fn member_array<'a>(field: &str, raw: &'a Value) -> Result<&'a [Value], Error> {
    raw.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| Error::input(format!("{field} must be an array")))
}

/// The user ids of `field`'s items (strings or `{user_id}` objects), checked, in order, repeats dropped.
fn user_ids_of(field: &str, items: &[Value]) -> Result<Vec<String>, Error> {
    let mut seen = HashSet::with_capacity(items.len());
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let id = match item {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o
                .get("user_id")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::input(format!("{field} objects need a user_id")))?,
            _ => {
                return Err(Error::input(format!(
                    "{field} must hold user ids or {{user_id}} objects"
                )))
            }
        };
        check_user_id(&format!("{field} user ids"), id)?;
        if seen.insert(id) {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// A user id as written or named (upsert, partial update, connect, channel members): 1 to 255 characters
/// without control characters, so that no store is ever handed one it cannot hold.
pub fn check_user_id(what: &str, id: &str) -> Result<(), Error> {
    if is_user_id(id) {
        return Ok(());
    }
    let len = id.chars().count();
    Err(Error::input(if len == 0 || len > MAX_USER_ID_LEN {
        format!("{what} must be 1 to {MAX_USER_ID_LEN} characters, got {len}")
    } else {
        format!("{what} must not contain control characters")
    }))
}

/// A page of `field` (`watchers`) in a channel query: `limit` ≤ 100, `offset` ≤ 1,000, refused beyond.
pub fn check_page(field: &str, page: Option<Pagination>) -> Result<(), Error> {
    let Some(page) = page else { return Ok(()) };
    if page.limit.is_some_and(|l| l > MAX_WATCHERS_LIMIT) {
        return Err(Error::input(format!(
            "{field}.limit must be at most {MAX_WATCHERS_LIMIT}"
        )));
    }
    if page.offset.is_some_and(|o| o > MAX_OFFSET) {
        return Err(Error::input(format!(
            "{field}.offset must be at most {MAX_OFFSET}"
        )));
    }
    Ok(())
}

/// One `$in` / `$nin` list: at most 1,000 values.
pub fn check_in_values(op: &str, field: &str, len: usize) -> Result<(), Error> {
    if len > MAX_IN_VALUES {
        return Err(Error::input(format!(
            "operator {op} on {field} has {len} values, over the limit of {MAX_IN_VALUES}"
        )));
    }
    Ok(())
}

/// The nesting of a logical operator at `depth` (1 for one at the top of the filter): at most 10.
pub fn check_filter_depth(depth: usize) -> Result<(), Error> {
    if depth > MAX_FILTER_DEPTH {
        return Err(Error::input(format!(
            "filter nesting ($and/$or/$nor) is limited to {MAX_FILTER_DEPTH} levels"
        )));
    }
    Ok(())
}

/// A filter's JSON: at most 128 KB, checked before it is parsed.
pub fn check_filter_bytes(raw: &JsonMap) -> Result<(), Error> {
    let len = serialized_len(raw);
    if len > MAX_FILTER_BYTES {
        return Err(Error::input(format!(
            "filter_conditions is {len} bytes serialized, over the limit of {MAX_FILTER_BYTES} bytes"
        )));
    }
    Ok(())
}

/// One `$and` / `$or` / `$nor` with `len` sub-filters: at most 50.
pub fn check_filter_width(op: &str, len: usize) -> Result<(), Error> {
    if len > MAX_FILTER_WIDTH {
        return Err(Error::input(format!(
            "{op} has {len} filters, over the limit of {MAX_FILTER_WIDTH}"
        )));
    }
    Ok(())
}

/// The text of one `$q` / `$autocomplete`: at most 100 characters, and a `$q` at most 10 words.
pub fn check_search_text(op: &str, field: &str, text: &str) -> Result<(), Error> {
    let chars = text.chars().count();
    if chars > MAX_SEARCH_CHARS {
        return Err(Error::input(format!(
            "operator {op} on {field} has {chars} characters, over the limit of {MAX_SEARCH_CHARS}"
        )));
    }
    let terms = text.split_whitespace().count();
    if op == "$q" && terms > MAX_SEARCH_TERMS {
        return Err(Error::input(format!(
            "operator {op} on {field} has {terms} words, over the limit of {MAX_SEARCH_TERMS}"
        )));
    }
    Ok(())
}

/// What one filter holds so far, counted while it is parsed so an oversized filter is refused before it is built.
#[derive(Debug, Default)]
pub struct FilterTally {
    conditions: usize,
    values: usize,
}

impl FilterTally {
    /// Counts one more condition: at most 100 in a filter.
    pub fn condition(&mut self) -> Result<(), Error> {
        self.conditions += 1;
        if self.conditions > MAX_FILTER_CONDITIONS {
            return Err(Error::input(format!(
                "filter has more than {MAX_FILTER_CONDITIONS} conditions, over the limit"
            )));
        }
        Ok(())
    }

    /// Counts the values of one more `$in` / `$nin` list: at most 2,000 in a filter.
    pub fn values(&mut self, len: usize) -> Result<(), Error> {
        self.values += len;
        if self.values > MAX_FILTER_VALUES {
            return Err(Error::input(format!(
                "filter has more than {MAX_FILTER_VALUES} $in/$nin values in all, over the limit"
            )));
        }
        Ok(())
    }
}

/// How many channels each user has created, kept as channels are created (and counted once from storage at
/// start), so the cap is one lookup per creation. A persistent map, so copying the engine stays O(1).
#[derive(Debug, Clone, Default)]
pub struct ChannelQuota {
    created: imbl::HashMap<String, usize>,
}

impl ChannelQuota {
    /// Counts one more channel created by `creator` (none for channels a server token created).
    pub fn count(&mut self, creator: Option<&str>) {
        if let Some(user_id) = creator {
            *self.created.entry(user_id.to_string()).or_default() += 1;
        }
    }

    /// Whether `user_id` may create one more channel when each user may create `max`.
    pub fn check(&self, user_id: &str, max: usize) -> Result<(), Error> {
        let created = self.created.get(user_id).copied().unwrap_or(0);
        if created >= max {
            return Err(Error::input(format!(
                "user {user_id} has created {created} channels, the limit of channels per user is {max}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialized_len_is_the_length_of_the_json_text() {
        let data = json!({ "name": "Zoë", "n": [1, 2.5, null], "o": { "k": "\"quoted\"" } });
        let map = data.as_object().unwrap();
        assert_eq!(
            serialized_len(map),
            serde_json::to_string(map).unwrap().len()
        );
    }
}
