//! k8s-pb messages to the JSON the same object has on the wire as JSON.
//!
//! Go's protobuf encoding writes every non-pointer field, zero or not, while
//! its JSON encoding leaves empty ones out (`omitempty`). Absent and empty
//! strings, empty lists and maps, and zero times are therefore left out;
//! numbers and booleans are kept as sent (a `0` may be meaningful:
//! `gracePeriodSeconds: 0`). Messages stay objects even when empty
//! (`emptyDir: {}` selects a volume type).

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as openapi_meta;
use k8s_pb as pb;
use serde_json::{Map, Value, json};

/// The JSON value of a protobuf value.
pub(crate) trait Json {
    fn json(&self) -> Result<Value, String>;
}

/// A field of a message: `None` when it is left out.
pub(crate) trait FieldJson {
    fn field_json(&self) -> Result<Option<Value>, String>;
}

impl<T: Json> FieldJson for Option<T> {
    fn field_json(&self) -> Result<Option<Value>, String> {
        let Some(v) = self else { return Ok(None) };
        Ok(match v.json()? {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            other => Some(other),
        })
    }
}

impl<T: Json> FieldJson for Vec<T> {
    fn field_json(&self) -> Result<Option<Value>, String> {
        if self.is_empty() {
            return Ok(None);
        }
        Ok(Some(Value::Array(
            self.iter().map(Json::json).collect::<Result<_, _>>()?,
        )))
    }
}

impl<T: Json> FieldJson for BTreeMap<String, T> {
    fn field_json(&self) -> Result<Option<Value>, String> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut m = Map::new();
        for (k, v) in self {
            m.insert(k.clone(), v.json()?);
        }
        Ok(Some(Value::Object(m)))
    }
}

impl Json for String {
    fn json(&self) -> Result<Value, String> {
        Ok(Value::String(self.clone()))
    }
}

impl Json for bool {
    fn json(&self) -> Result<Value, String> {
        Ok(Value::Bool(*self))
    }
}

impl Json for i32 {
    fn json(&self) -> Result<Value, String> {
        Ok(json!(self))
    }
}

impl Json for i64 {
    fn json(&self) -> Result<Value, String> {
        Ok(json!(self))
    }
}

impl Json for f64 {
    fn json(&self) -> Result<Value, String> {
        serde_json::Number::from_f64(*self)
            .map(Value::Number)
            .ok_or_else(|| format!("{self} is not a JSON number"))
    }
}

/// `bytes` fields are base64 in JSON (Secret `data`).
impl Json for Vec<u8> {
    fn json(&self) -> Result<Value, String> {
        Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(self)))
    }
}

impl<T: Json> Json for Box<T> {
    fn json(&self) -> Result<Value, String> {
        (**self).json()
    }
}

/// Adds the fields of an inlined (Go embedded) message to its parent's object.
pub(crate) fn inline(out: &mut Map<String, Value>, field: Option<Value>) {
    if let Some(Value::Object(m)) = field {
        out.extend(m);
    }
}

/// `impl Json` for messages whose JSON form is an object of their fields:
/// `Type { rust_field => "jsonName", inlined_field => .., }`. Every field
/// must be listed (the destructuring fails to compile otherwise), so a field
/// is never dropped silently.
macro_rules! messages {
    ($($ty:path { $($f:ident => $how:tt,)* })*) => {
        $(impl $crate::apiserver::http::protobuf::json::Json for $ty {
            fn json(&self) -> Result<serde_json::Value, String> {
                let $ty { $($f: _,)* } = self;
                #[allow(unused_mut)]
                let mut out = serde_json::Map::new();
                $(messages!(@field self out $f $how);)*
                Ok(serde_json::Value::Object(out))
            }
        })*
    };
    (@field $self:ident $out:ident $f:ident ..) => {
        $crate::apiserver::http::protobuf::json::inline(
            &mut $out,
            $crate::apiserver::http::protobuf::json::FieldJson::field_json(&$self.$f)
                .map_err(|e| format!("{}: {e}", stringify!($f)))?,
        );
    };
    (@field $self:ident $out:ident $f:ident $name:literal) => {
        if let Some(v) = $crate::apiserver::http::protobuf::json::FieldJson::field_json(&$self.$f)
            .map_err(|e| format!("{}: {e}", $name))?
        {
            $out.insert($name.into(), v);
        }
    };
}

include!("messages.rs");

fn timestamp(seconds: Option<i64>, nanos: Option<i32>) -> Result<Option<k8s_openapi::jiff::Timestamp>, String> {
    let (s, n) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
    if s == 0 && n == 0 {
        // Go writes the zero time as an empty message.
        return Ok(None);
    }
    k8s_openapi::jiff::Timestamp::new(s, n)
        .map(Some)
        .map_err(|e| format!("time {s}s {n}ns: {e}"))
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

impl Json for pb::apimachinery::pkg::apis::meta::v1::Time {
    fn json(&self) -> Result<Value, String> {
        match timestamp(self.seconds, self.nanos)? {
            Some(t) => to_value(openapi_meta::Time(t)),
            None => Ok(Value::Null),
        }
    }
}

impl Json for pb::apimachinery::pkg::apis::meta::v1::MicroTime {
    fn json(&self) -> Result<Value, String> {
        match timestamp(self.seconds, self.nanos)? {
            Some(t) => to_value(openapi_meta::MicroTime(t)),
            None => Ok(Value::Null),
        }
    }
}

/// A Go `time.Duration` string (`1h2m3.5s`, `150ms`) of nanoseconds.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let fraction = |value: u64, unit: u64| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = unit.ilog10() as usize;
            let frac = format!("{rest:0digits$}");
            format!("{whole}.{}", frac.trim_end_matches('0'))
        }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", fraction(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", fraction(n, 1_000_000));
    }
    let secs = n / 1_000_000_000;
    let sub = n % 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let s = fraction(s * 1_000_000_000 + sub, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

impl Json for pb::apimachinery::pkg::apis::meta::v1::Duration {
    fn json(&self) -> Result<Value, String> {
        Ok(Value::String(go_duration(self.duration.unwrap_or(0))))
    }
}

/// Raw JSON carried as bytes (`FieldsV1`, `RawExtension`).
fn raw_json(raw: Option<&Vec<u8>>) -> Result<Value, String> {
    match raw {
        None => Ok(Value::Null),
        Some(b) if b.is_empty() => Ok(Value::Null),
        Some(b) => serde_json::from_slice(b).map_err(|e| format!("embedded raw object is not JSON: {e}")),
    }
}

impl Json for pb::apimachinery::pkg::apis::meta::v1::FieldsV1 {
    fn json(&self) -> Result<Value, String> {
        raw_json(self.raw.as_ref())
    }
}

impl Json for pb::apimachinery::pkg::runtime::RawExtension {
    fn json(&self) -> Result<Value, String> {
        raw_json(self.raw.as_ref())
    }
}

/// Named string slices (`Verbs`, `ExtraValue`) are messages with `items` in
/// protobuf and plain arrays in JSON.
macro_rules! string_lists {
    ($($ty:path),*) => {
        $(impl Json for $ty {
            fn json(&self) -> Result<Value, String> {
                Ok(json!(self.items))
            }
        })*
    };
}

string_lists!(
    pb::apimachinery::pkg::apis::meta::v1::Verbs,
    pb::api::authorization::v1::ExtraValue,
    pb::api::authentication::v1::ExtraValue
);

impl Json for pb::apimachinery::pkg::api::resource::Quantity {
    fn json(&self) -> Result<Value, String> {
        Ok(Value::String(self.string.clone().unwrap_or_default()))
    }
}

impl Json for pb::apimachinery::pkg::util::intstr::IntOrString {
    fn json(&self) -> Result<Value, String> {
        match self.r#type.unwrap_or(0) {
            0 => Ok(json!(self.int_val.unwrap_or(0))),
            1 => Ok(json!(self.str_val.clone().unwrap_or_default())),
            t => Err(format!("IntOrString of unknown type {t}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_prints_them() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(150_000_000), "150ms");
        assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(go_duration(60_000_000_000), "1m0s");
        assert_eq!(go_duration(-2_000_000_000), "-2s");
    }

    #[test]
    fn special_types() {
        use pb::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
        let t = Time {
            seconds: Some(1_700_000_000),
            nanos: Some(0),
        };
        assert_eq!(t.json().unwrap(), json!("2023-11-14T22:13:20Z"));
        assert_eq!(Time::default().json().unwrap(), Value::Null);
        let mt = MicroTime {
            seconds: Some(1_700_000_000),
            nanos: Some(5_000),
        };
        assert_eq!(mt.json().unwrap(), json!("2023-11-14T22:13:20.000005Z"));
        let q = pb::apimachinery::pkg::api::resource::Quantity {
            string: Some("100m".into()),
        };
        assert_eq!(q.json().unwrap(), json!("100m"));
        let port = |t, i, s: &str| pb::apimachinery::pkg::util::intstr::IntOrString {
            r#type: Some(t),
            int_val: Some(i),
            str_val: Some(s.into()),
        };
        assert_eq!(port(0, 8080, "").json().unwrap(), json!(8080));
        assert_eq!(port(1, 0, "http").json().unwrap(), json!("http"));
        assert!(port(7, 0, "").json().unwrap_err().contains("unknown type 7"));
        let raw = pb::apimachinery::pkg::runtime::RawExtension {
            raw: Some(b"{not json".to_vec()),
        };
        assert!(raw.json().unwrap_err().contains("not JSON"));
    }
}
