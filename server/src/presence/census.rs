//! How many records carry each custom field name, so a query can tell a sort on a field some record has from a
//! sort on a name no record has (a typo, most often), which it refuses. Kept in a persistent map, like the records
//! it counts, so copying it costs O(1).

use imbl::HashMap;
use presence_protocol::JsonMap;

#[derive(Clone, Default)]
pub(super) struct FieldCensus(HashMap<String, usize>);

impl FieldCensus {
    /// Counts the fields of a record coming in.
    pub fn add(&mut self, data: &JsonMap) {
        for key in data.keys() {
            *self.0.entry(key.clone()).or_insert(0) += 1;
        }
    }

    /// Uncounts the fields of a record going out (or about to change).
    pub fn remove(&mut self, data: &JsonMap) {
        for key in data.keys() {
            if let Some(n) = self.0.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    self.0.remove(key);
                }
            }
        }
    }

    /// Whether any record carries `field`.
    pub fn carries(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }
}

#[cfg(test)]
mod tests {
    use super::FieldCensus;
    use presence_protocol::JsonMap;
    use serde_json::json;

    fn map(v: serde_json::Value) -> JsonMap {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_field_is_carried_while_one_record_has_it() {
        let mut census = FieldCensus::default();
        let (a, b) = (map(json!({"mood": 1, "x": 2})), map(json!({"mood": 3})));
        census.add(&a);
        census.add(&b);
        census.remove(&a);
        assert!(census.carries("mood"));
        assert!(!census.carries("x"));
        census.remove(&b);
        assert!(!census.carries("mood"));
    }
}
