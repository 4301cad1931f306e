//! An agent's `summary_fields`: a JSON Schema object whose properties are the facts to take
//! from each call (name, reason for calling, callback number...). The subset understood is what
//! a hosted model's JSON mode and a small local model can both fill: each property has a `type`
//! of `string`, `number`, `integer` or `boolean`, and may have a `description` and an `enum`.
//! A value that does not fit its property is stored as `null`, never as written.

use serde_json::{Map, Value};

/// The most fields an agent may ask for.
pub const MAX_FIELDS: usize = 20;
/// The longest string value kept.
pub const MAX_VALUE_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    String,
    Number,
    Integer,
    Boolean,
}

/// One property of the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    pub name: String,
    pub kind: FieldKind,
    pub description: Option<String>,
    /// The values allowed, if the property has an `enum`.
    pub choices: Vec<Value>,
}

/// The properties of a `summary_fields` schema, by name; an error says what is wrong with it.
pub fn parse_schema(schema: &Value) -> Result<Vec<FieldSpec>, String> {
    let obj = schema
        .as_object()
        .ok_or("summary_fields must be a JSON Schema object")?;
    if let Some(t) = obj.get("type") {
        if t != "object" {
            return Err("summary_fields must have \"type\": \"object\"".into());
        }
    }
    let props = obj
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("summary_fields needs \"properties\"")?;
    if props.is_empty() || props.len() > MAX_FIELDS {
        return Err(format!(
            "summary_fields must have between 1 and {MAX_FIELDS} properties"
        ));
    }
    props
        .iter()
        .map(|(name, p)| {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(format!(
                    "summary_fields: property name `{}` must be letters, digits or _",
                    name.chars().take(64).collect::<String>()
                ));
            }
            let kind = match p.get("type").and_then(Value::as_str) {
                Some("string") => FieldKind::String,
                Some("number") => FieldKind::Number,
                Some("integer") => FieldKind::Integer,
                Some("boolean") => FieldKind::Boolean,
                _ => {
                    return Err(format!(
                        "summary_fields.{name}: \"type\" must be string, number, integer or boolean"
                    ))
                }
            };
            let description = match p.get("description") {
                None => None,
                Some(Value::String(d)) => Some(d.clone()),
                Some(_) => {
                    return Err(format!(
                        "summary_fields.{name}: \"description\" must be a string"
                    ))
                }
            };
            let choices = match p.get("enum") {
                None => Vec::new(),
                Some(Value::Array(v)) if !v.is_empty() => v.clone(),
                Some(_) => {
                    return Err(format!(
                        "summary_fields.{name}: \"enum\" must be a list of values"
                    ))
                }
            };
            let spec = FieldSpec {
                name: name.clone(),
                kind,
                description,
                choices,
            };
            if let Some(bad) = spec.choices.iter().find(|c| spec.fit(c).is_none()) {
                return Err(format!(
                    "summary_fields.{name}: enum value {bad} is not of its type"
                ));
            }
            Ok(spec)
        })
        .collect()
}

impl FieldSpec {
    /// The value as the property takes it, or `None` when it does not fit. Numbers written
    /// as text ("42") and yes/no words are taken for their types; strings are trimmed and cut
    /// to [`MAX_VALUE_CHARS`].
    pub fn fit(&self, value: &Value) -> Option<Value> {
        let v = match (self.kind, value) {
            (_, Value::Null) => return None,
            (FieldKind::String, Value::String(s)) => {
                let s = s.trim();
                if s.is_empty() {
                    return None;
                }
                Value::String(s.chars().take(MAX_VALUE_CHARS).collect())
            }
            (FieldKind::String, Value::Number(n)) => Value::String(n.to_string()),
            (FieldKind::Number, Value::Number(_)) => value.clone(),
            (FieldKind::Number, Value::String(s)) => {
                let n: f64 = s.trim().replace(',', "").parse().ok()?;
                serde_json::Number::from_f64(n).map(Value::Number)?
            }
            (FieldKind::Integer, Value::Number(n)) => match n.as_i64() {
                Some(i) => Value::from(i),
                None => {
                    let f = n.as_f64()?;
                    if f.fract() != 0.0 || f.abs() > 9.0e15 {
                        return None;
                    }
                    Value::from(f as i64)
                }
            },
            (FieldKind::Integer, Value::String(s)) => {
                Value::from(s.trim().replace(',', "").parse::<i64>().ok()?)
            }
            (FieldKind::Boolean, Value::Bool(_)) => value.clone(),
            (FieldKind::Boolean, Value::String(s)) => {
                match s.trim().trim_end_matches('.').to_ascii_lowercase().as_str() {
                    "yes" | "true" => Value::Bool(true),
                    "no" | "false" => Value::Bool(false),
                    _ => return None,
                }
            }
            _ => return None,
        };
        if self.choices.is_empty() {
            return Some(v);
        }
        // An enum of strings matches without regard to case, and gives the written choice.
        self.choices
            .iter()
            .find(|c| match (c, &v) {
                (Value::String(c), Value::String(s)) => c.eq_ignore_ascii_case(s),
                (c, v) => *c == v,
            })
            .cloned()
    }

    /// The type's name as the schema writes it.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            FieldKind::String => "string",
            FieldKind::Number => "number",
            FieldKind::Integer => "integer",
            FieldKind::Boolean => "boolean",
        }
    }

    /// What the model is asked for: the description, else the name in words.
    pub fn question(&self) -> String {
        match &self.description {
            Some(d) if !d.trim().is_empty() => d.trim().to_string(),
            _ => self.name.replace('_', " "),
        }
    }
}

/// Every field of `specs` from `answer` (a model's JSON object), `null` where it is missing or
/// does not fit; keys not in the schema are dropped.
pub fn fit_all(specs: &[FieldSpec], answer: Option<&Map<String, Value>>) -> Value {
    let mut out = Map::new();
    for s in specs {
        let v = answer
            .and_then(|a| a.get(&s.name))
            .and_then(|v| s.fit(v))
            .unwrap_or(Value::Null);
        out.insert(s.name.clone(), v);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "name": {"type": "string", "description": "The caller's name"},
            "party_size": {"type": "integer"},
            "deposit": {"type": "number"},
            "urgent": {"type": "boolean"},
            "topic": {"type": "string", "enum": ["booking", "complaint"]}
        }})
    }

    #[test]
    fn a_schema_gives_its_properties_in_order() {
        let specs = parse_schema(&schema()).unwrap();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["deposit", "name", "party_size", "topic", "urgent"]);
        assert_eq!(specs[1].question(), "The caller's name");
        assert_eq!(specs[2].question(), "party size");
    }

    #[test]
    fn bad_schemas_are_refused_with_the_reason() {
        for (schema, why) in [
            (json!("name"), "JSON Schema object"),
            (json!({"type": "array"}), "\"type\": \"object\""),
            (json!({"type": "object"}), "needs \"properties\""),
            (json!({"properties": {}}), "between 1 and 20"),
            (
                json!({"properties": {"a b": {"type": "string"}}}),
                "letters",
            ),
            (
                json!({"properties": {"a": {"type": "object"}}}),
                "string, number",
            ),
            (
                json!({"properties": {"a": {"type": "integer", "enum": ["x"]}}}),
                "not of its type",
            ),
            (
                json!({"properties": {"a": {"type": "string", "description": 3}}}),
                "description",
            ),
        ] {
            let err = parse_schema(&schema).unwrap_err();
            assert!(err.contains(why), "{schema}: {err}");
        }
        let many: Map<String, Value> = (0..21)
            .map(|i| (format!("f{i}"), json!({"type": "string"})))
            .collect();
        assert!(parse_schema(&json!({"properties": many})).is_err());
    }

    #[test]
    fn answers_are_fitted_to_their_types_or_null() {
        let specs = parse_schema(&schema()).unwrap();
        let answer = json!({
            "name": "  Ada Lovelace ",
            "party_size": "4",
            "deposit": 12.5,
            "urgent": "yes",
            "topic": "Booking",
            "extra": "dropped"
        });
        let fitted = fit_all(&specs, answer.as_object());
        assert_eq!(
            fitted,
            json!({"name": "Ada Lovelace", "party_size": 4, "deposit": 12.5, "urgent": true,
                   "topic": "booking"})
        );
        let wrong = json!({"name": "", "party_size": 2.5, "deposit": "lots", "urgent": "maybe",
                           "topic": "weather"});
        let fitted = fit_all(&specs, wrong.as_object());
        assert!(
            fitted.as_object().unwrap().values().all(Value::is_null),
            "{fitted}"
        );
        assert_eq!(fit_all(&specs, None)["name"], Value::Null);
    }
}
