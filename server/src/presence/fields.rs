//! Which user fields a write may touch, and applying a write (fields, invisibility) to a stored user.

use chrono::{DateTime, Utc};
use presence_protocol::user::RESERVED_USER_FIELDS;
use presence_protocol::JsonMap;
use serde_json::Value;

use crate::error::Error;
use crate::model::{PresenceAudience, UserRecord};

/// Fields only a server-side token may write.
const SERVER_ONLY_FIELDS: &[&str] = &["role", "teams"];

/// How a write reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteSource {
    /// `user_details` on connect: forbidden and malformed fields are dropped silently.
    Connect,
    /// A REST write with a user token.
    User,
    /// A REST write with a server token.
    Server,
}

fn reserved(user_id: &str, field: &str) -> Error {
    Error::input(format!("users[{user_id}].{field} is a reserved field"))
}

/// Checks one field of a REST write (`set` key, upsert key or `unset` name).
pub fn check_field(
    user_id: &str,
    field: &str,
    value: Option<&Value>,
    source: WriteSource,
) -> Result<(), Error> {
    if RESERVED_USER_FIELDS.contains(&field)
        || (source != WriteSource::Server && SERVER_ONLY_FIELDS.contains(&field))
    {
        return Err(reserved(user_id, field));
    }
    let Some(value) = value else { return Ok(()) };
    let ok = match field {
        "name" | "image" | "language" | "role" => value.is_string() || value.is_null(),
        "teams" => value
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string)),
        "invisible" => value.is_boolean(),
        "privacy_settings" if value.is_object() => return check_privacy_settings(user_id, value),
        "privacy_settings" => value.is_null(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::input(format!(
            "users[{user_id}].{field} has the wrong type"
        )))
    }
}

/// Checks `privacy_settings.presence` (Stream's `typing_indicators` and `read_receipts` beside it are stored as
/// given): an object, whose `visible_to` is one of [`PresenceAudience::VALUES`].
fn check_privacy_settings(user_id: &str, settings: &Value) -> Result<(), Error> {
    match settings.get("presence") {
        None | Some(Value::Null) => return Ok(()),
        Some(presence) if presence.is_object() => {}
        Some(_) => {
            return Err(Error::input(format!(
                "users[{user_id}].privacy_settings.presence must be an object"
            )))
        }
    }
    match PresenceAudience::of_settings(settings) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(v)) if PresenceAudience::parse(v).is_some() => Ok(()),
        Some(Value::String(v)) if v == "channel_members" => Err(Error::input(format!(
            "users[{user_id}].privacy_settings.presence.visible_to \"channel_members\" is not supported by \
             this server yet: use \"everyone\" or \"nobody\""
        ))),
        Some(other) => Err(Error::input(format!(
            "users[{user_id}].privacy_settings.presence.visible_to must be one of {}, not {other}",
            PresenceAudience::VALUES.map(|v| format!("\"{v}\"")).join(", ")
        ))),
    }
}

/// Fields only the user themselves reads (protocol §7.3): a change to them alone is no profile change for others.
const OWN_ONLY_FIELDS: &[&str] = &["privacy_settings"];

/// What a write changed: the profile others read, and the fields only the user reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    pub profile: bool,
    pub own: bool,
}

impl Changed {
    /// A write of `field` that `changed` it or not.
    pub fn field(field: &str, changed: bool) -> Changed {
        let own = OWN_ONLY_FIELDS.contains(&field);
        Changed {
            profile: changed && !own,
            own: changed && own,
        }
    }

    pub fn any(self) -> bool {
        self.profile || self.own
    }
}

impl std::ops::BitOrAssign for Changed {
    fn bitor_assign(&mut self, other: Changed) {
        self.profile |= other.profile;
        self.own |= other.own;
    }
}

/// Sets one field on a record; the caller has checked it (or the source is `Connect`, where bad fields are
/// skipped). Returns whether anything changed.
pub fn set_field(rec: &mut UserRecord, field: &str, value: &Value, source: WriteSource) -> bool {
    if field == "id"
        || check_field(&rec.id, field, Some(value), source).is_err()
        || field == "invisible"
    {
        return false;
    }
    match field {
        "role" => {
            let role = value.as_str().unwrap_or("user").to_string();
            std::mem::replace(&mut rec.role, role) != rec.role
        }
        "teams" => {
            let teams: Vec<String> = value
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            std::mem::replace(&mut rec.teams, teams) != rec.teams
        }
        _ if value.is_null() => rec.data.remove(field).is_some(),
        _ => rec.data.insert(field.to_string(), value.clone()).as_ref() != Some(value),
    }
}

/// Removes one field (`unset`). `invisible` is handled by the caller.
pub fn unset_field(rec: &mut UserRecord, field: &str) -> bool {
    match field {
        "role" => std::mem::replace(&mut rec.role, "user".to_string()) != "user",
        "teams" => !std::mem::take(&mut rec.teams).is_empty(),
        _ => rec.data.remove(field).is_some(),
    }
}

/// Replaces every writable field of a record with those of `obj` (upsert). `role` and `teams` are kept unless the
/// object names them; `invisible` is handled by the caller.
pub fn replace_fields(rec: &mut UserRecord, obj: &JsonMap, source: WriteSource) -> Changed {
    let before = rec.clone();
    rec.data.clear();
    for (field, value) in obj {
        set_field(rec, field, value, source);
    }
    // A profile field changed when one of either record's is not the other's.
    let profile = |a: &UserRecord, b: &UserRecord| {
        a.data
            .iter()
            .filter(|(k, _)| !OWN_ONLY_FIELDS.contains(&k.as_str()))
            .any(|(k, v)| b.data.get(k) != Some(v))
    };
    Changed {
        profile: rec.role != before.role
            || rec.teams != before.teams
            || profile(rec, &before)
            || profile(&before, rec),
        own: OWN_ONLY_FIELDS
            .iter()
            .any(|f| rec.data.get(*f) != before.data.get(*f)),
    }
}

/// The `invisible` value a write asks for: only an explicit boolean changes it.
pub fn requested_invisible(obj: &JsonMap) -> Option<bool> {
    obj.get("invisible").and_then(Value::as_bool)
}

/// Others' `last_active` once the user's hiding switched (`rec.hidden()` is the new state); `connected`: whether
/// others saw the user online (going hidden) or the user holds an open connection (coming back). Others keep
/// seeing the `last_active` of the moment hiding began, also after it ends while offline: whatever was stamped
/// meanwhile stays hidden. Coming back while connected is like connecting: active now.
pub fn switch_hidden(rec: &mut UserRecord, connected: bool, now: DateTime<Utc>) {
    if rec.hidden() {
        if connected {
            rec.last_active = Some(now);
        }
        rec.frozen_last_active = rec.last_active;
    } else {
        rec.last_active = if connected {
            Some(now)
        } else {
            rec.frozen_last_active
        };
        rec.frozen_last_active = None;
    }
}
