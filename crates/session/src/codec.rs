//! How session values become hash fields, and back.
//!
//! The layout is the NestJS design's: one hash field per attribute, the value
//! as a plain string. So a session `{ count: 3 }` is the hash `count => "3"`,
//! which a Nest node reads with `hGetAll` and `parseInt` unchanged.
//!
//! - strings are stored as they are, with no quotes;
//! - numbers and booleans as their decimal / `true` / `false` text;
//! - anything structured (arrays, maps, structs) as compact JSON;
//! - `None` / `null` is not stored at all.
//!
//! Reading goes by the type asked for: a field read as a `String` is taken as
//! it is; read as a number, a bool or a structure, it is parsed as JSON. So
//! `"42"` reads back as the string `"42"` or the number `42`, whichever the
//! caller asked for, and a string that merely looks like JSON stays a string.

use std::collections::HashMap;

use serde::de::value::{MapDeserializer, StrDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::Value;

/// The fields of one session, as stored.
pub type SessionFields = HashMap<String, String>;

/// Why a value could not become fields, or fields a value.
pub(crate) type CodecError = serde_json::Error;

/// Encodes one value as the string stored in its field; `None` for a null,
/// which is not stored.
///
/// # Errors
///
/// If `T`'s `Serialize` fails, for example a map with non-string keys.
pub(crate) fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Option<String>, CodecError> {
    Ok(field_text(serde_json::to_value(value)?))
}

/// Decodes one stored field as a `T`, by the rules in the module docs.
///
/// # Errors
///
/// If the text is not a valid `T`.
pub(crate) fn decode_value<T: DeserializeOwned>(raw: &str) -> Result<T, CodecError> {
    T::deserialize(FieldValue(raw))
}

/// Encodes a whole value (a struct or a map) as fields.
///
/// # Errors
///
/// If `value` is not a struct or map, or its `Serialize` fails.
pub(crate) fn encode_fields<T: Serialize + ?Sized>(
    value: &T,
) -> Result<Vec<(String, String)>, CodecError> {
    match serde_json::to_value(value)? {
        Value::Object(map) => Ok(map
            .into_iter()
            .filter_map(|(field, value)| field_text(value).map(|text| (field, text)))
            .collect()),
        other => Err(de::Error::custom(format!(
            "a session value must be a struct or a map of fields, not {}",
            kind_of(&other)
        ))),
    }
}

/// Decodes all fields of a session as one typed value, like the NestJS
/// design's `getSession<T>`. Fields that `T` does not name are ignored.
///
/// # Errors
///
/// If a field `T` needs is missing or does not parse as its type.
pub(crate) fn decode_fields<T: DeserializeOwned>(fields: &SessionFields) -> Result<T, CodecError> {
    let entries = fields
        .iter()
        .map(|(field, value)| (field.as_str(), FieldValue(value.as_str())));
    T::deserialize(MapDeserializer::<_, CodecError>::new(entries))
}

fn field_text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text),
        // Numbers print in decimal, booleans as true/false, the rest as JSON.
        other => Some(other.to_string()),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

/// One stored field, read according to the type the caller asks for.
#[derive(Clone, Copy)]
struct FieldValue<'de>(&'de str);

impl<'de> IntoDeserializer<'de, CodecError> for FieldValue<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// Runs one `deserialize_*` method on the field parsed as JSON, and requires
/// that the JSON ends there.
macro_rules! as_json {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
            let mut json = serde_json::Deserializer::from_str(self.0);
            let value = (&mut json).$method(visitor)?;
            json.end()?;
            Ok(value)
        }
    )*};
}

impl<'de> Deserializer<'de> for FieldValue<'de> {
    type Error = CodecError;

    // Untyped targets (serde_json::Value, HashMap<String, Value>): JSON when
    // the text is JSON, else the plain string.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        if serde_json::from_str::<de::IgnoredAny>(self.0).is_ok() {
            let mut json = serde_json::Deserializer::from_str(self.0);
            json.deserialize_any(visitor)
        } else {
            visitor.visit_borrowed_str(self.0)
        }
    }

    // Strings are stored without quotes: take the text as it is.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_borrowed_str(self.0)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_borrowed_str(self.0)
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_borrowed_str(self.0)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_borrowed_str(self.0)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_borrowed_bytes(self.0.as_bytes())
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_borrowed_bytes(self.0.as_bytes())
    }

    // A stored field is never null (nulls are not stored), so it is Some.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_some(self)
    }

    // `struct UserId(String)` reads like a String.
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_newtype_struct(self)
    }

    // A unit variant is stored as its bare name (`Admin`); other variants as JSON.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        if self.0.starts_with('{') || self.0.starts_with('"') {
            let mut json = serde_json::Deserializer::from_str(self.0);
            let value = json.deserialize_enum(name, variants, visitor)?;
            json.end()?;
            Ok(value)
        } else {
            let bare: StrDeserializer<'_, CodecError> = self.0.into_deserializer();
            bare.deserialize_enum(name, variants, visitor)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        let mut json = serde_json::Deserializer::from_str(self.0);
        let value = json.deserialize_unit_struct(name, visitor)?;
        json.end()?;
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        let mut json = serde_json::Deserializer::from_str(self.0);
        let value = json.deserialize_tuple(len, visitor)?;
        json.end()?;
        Ok(value)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        let mut json = serde_json::Deserializer::from_str(self.0);
        let value = json.deserialize_tuple_struct(name, len, visitor)?;
        json.end()?;
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        let mut json = serde_json::Deserializer::from_str(self.0);
        let value = json.deserialize_struct(name, fields, visitor)?;
        json.end()?;
        Ok(value)
    }

    as_json!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
    );

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn values_round_trip_as_plain_text_or_json() {
        assert_eq!(encode_value(&3).expect("encodes").as_deref(), Some("3"));
        assert_eq!(
            encode_value(&"plain").expect("round trip").as_deref(),
            Some("plain")
        );
        assert_eq!(
            encode_value(&vec![1, 2]).expect("round trip").as_deref(),
            Some("[1,2]")
        );
        assert_eq!(encode_value(&None::<u8>).expect("round trip"), None);
        assert_eq!(decode_value::<u64>("3").expect("round trip"), 3);
        assert_eq!(decode_value::<String>("3").expect("round trip"), "3");
        assert_eq!(
            decode_value::<Vec<u8>>("[1,2]").expect("round trip"),
            vec![1, 2]
        );
        assert!(decode_value::<u64>("three").is_err());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Role {
        Admin,
        Guest,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Profile {
        user: String,
        count: u64,
        active: bool,
        role: Role,
        tags: Vec<String>,
        nickname: Option<String>,
        balance: f64,
    }

    fn sample() -> Profile {
        Profile {
            user: "42".into(),
            count: 7,
            active: true,
            role: Role::Admin,
            tags: vec!["a".into(), "b\"c".into()],
            nickname: None,
            balance: -1.5,
        }
    }

    fn as_map(fields: Vec<(String, String)>) -> SessionFields {
        fields.into_iter().collect()
    }

    #[test]
    fn plain_values_are_stored_as_plain_strings() {
        let fields = as_map(encode_fields(&sample()).expect("encodes"));
        assert_eq!(fields["user"], "42");
        assert_eq!(fields["count"], "7");
        assert_eq!(fields["active"], "true");
        assert_eq!(fields["role"], "Admin");
        assert_eq!(fields["tags"], r#"["a","b\"c"]"#);
        assert_eq!(fields["balance"], "-1.5");
        assert!(!fields.contains_key("nickname"), "None is not stored");
    }

    #[test]
    fn a_struct_round_trips_through_fields() {
        let fields = as_map(encode_fields(&sample()).expect("encodes"));
        let back: Profile = decode_fields(&fields).expect("decodes");
        assert_eq!(back, sample());
    }

    #[test]
    fn a_nest_style_count_field_reads_as_a_number() {
        #[derive(Deserialize)]
        struct Counter {
            count: i64,
        }
        let fields = SessionFields::from([("count".to_owned(), "12".to_owned())]);
        assert_eq!(
            decode_fields::<Counter>(&fields).expect("decodes").count,
            12
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_ones_are_errors() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct NeedsUser {
            user: String,
        }
        let fields = SessionFields::from([("count".to_owned(), "1".to_owned())]);
        let error = decode_fields::<NeedsUser>(&fields).expect_err("user is missing");
        assert!(error.to_string().contains("user"), "{error}");
    }

    #[test]
    fn a_string_that_looks_like_json_stays_a_string() {
        assert_eq!(
            decode_value::<String>("\"quoted\"").expect("decodes"),
            "\"quoted\""
        );
        assert_eq!(decode_value::<String>("[1]").expect("decodes"), "[1]");
        assert_eq!(
            encode_value("\"quoted\"").expect("encodes").as_deref(),
            Some("\"quoted\"")
        );
    }

    #[test]
    fn non_numbers_and_trailing_garbage_are_errors_not_panics() {
        assert!(decode_value::<u64>("12abc").is_err());
        assert!(decode_value::<u64>("").is_err());
        assert!(decode_value::<u8>("300").is_err());
        assert!(decode_value::<bool>("yes").is_err());
        assert!(decode_value::<Vec<u8>>("[1,2").is_err());
        assert!(decode_value::<Role>("Nobody").is_err());
    }

    #[test]
    fn untyped_reads_take_json_when_it_is_json() {
        let fields = SessionFields::from([
            ("n".to_owned(), "3".to_owned()),
            ("s".to_owned(), "hello".to_owned()),
        ]);
        let values: HashMap<String, Value> = decode_fields(&fields).expect("decodes");
        assert_eq!(values["n"], Value::from(3));
        assert_eq!(values["s"], Value::from("hello"));
    }

    #[test]
    fn only_maps_can_be_a_whole_session() {
        assert!(encode_fields(&3).is_err());
        assert!(encode_fields(&vec![1]).is_err());
        assert!(encode_fields(&"text").is_err());
    }
}
