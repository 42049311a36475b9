//! The few fields of an object a query reads. A filter and its sort name a handful of fields; turning each of
//! 100,000 users into a whole JSON object to read them spent most of an unpinned query in allocation. [`pick`]
//! serializes a value the way `serde_json::to_value` does, but keeps only the entries named (and converts only
//! their values), so it holds exactly the entries the whole object would: skipped fields stay absent, and a
//! flattened entry overrides a field of the same name as it does there.

use presence_protocol::JsonMap;
use serde::ser::{self, Impossible, Serialize, SerializeMap, SerializeStruct, Serializer};
use serde_json::{Error, Value};

/// The entries of `value` (a struct or a map) whose names are in `wanted`, as `serde_json::to_value(value)`
/// holds them.
pub fn pick<T: Serialize + ?Sized>(value: &T, wanted: &[String]) -> Result<JsonMap, Error> {
    value.serialize(Picker { wanted })
}

struct Picker<'a> {
    wanted: &'a [String],
}

/// The entries taken so far, and the name of a map entry whose value comes next.
struct Entries<'a> {
    wanted: &'a [String],
    map: JsonMap,
    key: Option<String>,
}

impl Entries<'_> {
    fn wants(&self, name: &str) -> bool {
        self.wanted.iter().any(|w| w == name)
    }

    fn take<T: Serialize + ?Sized>(&mut self, name: String, value: &T) -> Result<(), Error> {
        self.map.insert(name, serde_json::to_value(value)?);
        Ok(())
    }
}

fn not_an_object() -> Error {
    ser::Error::custom("only objects have fields")
}

macro_rules! not_objects {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<JsonMap, Error> {
            Err(not_an_object())
        })*
    };
}

impl<'a> Serializer for Picker<'a> {
    type Ok = JsonMap;
    type Error = Error;
    type SerializeSeq = Impossible<JsonMap, Error>;
    type SerializeTuple = Impossible<JsonMap, Error>;
    type SerializeTupleStruct = Impossible<JsonMap, Error>;
    type SerializeTupleVariant = Impossible<JsonMap, Error>;
    type SerializeMap = Entries<'a>;
    type SerializeStruct = Entries<'a>;
    type SerializeStructVariant = Impossible<JsonMap, Error>;

    not_objects! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<JsonMap, Error> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<JsonMap, Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<JsonMap, Error> {
        Err(not_an_object())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(not_an_object())
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(not_an_object())
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(not_an_object())
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(not_an_object())
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Entries<'a>, Error> {
        Ok(Entries {
            wanted: self.wanted,
            map: JsonMap::new(),
            key: None,
        })
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Entries<'a>, Error> {
        self.serialize_map(None)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(not_an_object())
    }
}

impl SerializeMap for Entries<'_> {
    type Ok = JsonMap;
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        // JSON object keys are strings; `to_value` refuses any other (and so does this).
        match serde_json::to_value(key)? {
            Value::String(name) => {
                self.key = Some(name);
                Ok(())
            }
            _ => Err(ser::Error::custom("key must be a string")),
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        match self.key.take() {
            Some(name) if self.wants(&name) => self.take(name, value),
            Some(_) => Ok(()),
            None => Err(ser::Error::custom("a map value without its key")),
        }
    }

    fn end(self) -> Result<JsonMap, Error> {
        Ok(self.map)
    }
}

impl SerializeStruct for Entries<'_> {
    type Ok = JsonMap;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        if self.wants(name) {
            self.take(name.to_string(), value)?;
        }
        Ok(())
    }

    fn end(self) -> Result<JsonMap, Error> {
        Ok(self.map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_protocol::User;
    use serde_json::json;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// What `to_value` of the whole object holds under `wanted`.
    fn whole(value: &impl Serialize, wanted: &[String]) -> JsonMap {
        let Value::Object(all) = serde_json::to_value(value).unwrap() else {
            panic!("not an object");
        };
        all.into_iter()
            .filter(|(k, _)| wanted.contains(k))
            .collect()
    }

    #[test]
    fn picks_the_entries_the_whole_object_holds() {
        let user: User = serde_json::from_value(json!({
            "id": "alice", "name": "Alice", "online": true, "teams": ["red"], "last_active": "2024-05-01T10:00:00Z",
            "status": "busy", "score": 7, "nested": { "a": [1, 2] }, "nothing": null
        }))
        .unwrap();
        let wanted = names(&[
            "id",
            "online",
            "teams",
            "status",
            "score",
            "nested",
            "nothing",
            "image",
            "missing",
            "invisible",
        ]);
        let picked = pick(&user, &wanted).unwrap();
        assert_eq!(picked, whole(&user, &wanted));
        // Skipped (`None`) fields stay absent, as in the whole object.
        assert!(!picked.contains_key("image"));
        assert_eq!(picked["score"], json!(7));
        assert_eq!(picked.len(), 7);
    }

    #[test]
    fn a_custom_field_overrides_a_built_in_one_as_in_the_whole_object() {
        let mut user: User =
            serde_json::from_value(json!({ "id": "bob", "role": "user" })).unwrap();
        user.custom.insert("role".into(), json!("custom-role"));
        let wanted = names(&["role"]);
        assert_eq!(pick(&user, &wanted).unwrap(), whole(&user, &wanted));
    }

    #[test]
    fn nothing_wanted_is_an_empty_object_and_a_non_object_is_refused() {
        let user: User = serde_json::from_value(json!({ "id": "carol" })).unwrap();
        assert!(pick(&user, &[]).unwrap().is_empty());
        assert!(pick(&json!([1, 2]), &names(&["id"])).is_err());
        assert!(pick(&"text", &names(&["id"])).is_err());
        let map = json!({ "id": "x", "other": 1 });
        assert_eq!(
            pick(&map, &names(&["id"])).unwrap(),
            whole(&map, &names(&["id"]))
        );
    }
}
