//! Keys (SPEC 7.2): a list of parts encoded byte-compatibly with the original, so an
//! existing `kv_entries` table can be reused and byte order is logical order.
//!
//! Parts are joined by 0x00. Each starts with a tag: 0x01 bytes, 0x02 UTF-8 string,
//! 0x03 f64 big-endian with the sign bit flipped (all bits for negatives), 0x04 bigint
//! (sign 0x01 negative / 0x02 positive, a length byte, the magnitude), 0x05 bool (0x01
//! false, 0x02 true). Inside string and bytes parts, 0x00 and 0xFF are escaped by 0xFF.

use std::fmt;

use base64::Engine;
use buntime_plugin_sdk::percent::{PercentError, percent_decode};
use num_bigint::{BigInt, Sign};
use serde_json::{Value as Json, json};

const TAG_BYTES: u8 = 0x01;
const TAG_STRING: u8 = 0x02;
const TAG_NUMBER: u8 = 0x03;
const TAG_BIGINT: u8 = 0x04;
const TAG_BOOL: u8 = 0x05;
const SEPARATOR: u8 = 0x00;
const ESCAPE: u8 = 0xFF;

pub const MAX_PARTS: usize = 20;
pub const MAX_PART_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum KeyPart {
    Bytes(Vec<u8>),
    String(String),
    Number(f64),
    BigInt(BigInt),
    Bool(bool),
}

/// A key: up to 20 parts of up to 1024 bytes each.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Key(pub Vec<KeyPart>);

impl Key {
    pub fn new(parts: Vec<KeyPart>) -> Result<Key, String> {
        let key = Key(parts);
        key.check_limits()?;
        Ok(key)
    }

    /// `["proxy", "rules", id]`-style keys from code.
    pub fn strings(parts: &[&str]) -> Key {
        Key(parts
            .iter()
            .map(|s| KeyPart::String(s.to_string()))
            .collect())
    }

    pub fn parts(&self) -> &[KeyPart] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn check_limits(&self) -> Result<(), String> {
        if self.0.len() > MAX_PARTS {
            return Err(format!(
                "Key has {} parts; at most {MAX_PARTS} are allowed",
                self.0.len()
            ));
        }
        for p in &self.0 {
            let n = match p {
                KeyPart::Bytes(b) => b.len(),
                KeyPart::String(s) => s.len(),
                KeyPart::BigInt(b) => b.to_bytes_be().1.len(),
                KeyPart::Number(_) | KeyPart::Bool(_) => 8,
            };
            if n > MAX_PART_BYTES {
                return Err(format!(
                    "Key part is {n} bytes; at most {MAX_PART_BYTES} are allowed"
                ));
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * self.0.len());
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(SEPARATOR);
            }
            encode_part(part, &mut out);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Key, String> {
        let mut parts = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let (part, used) = decode_part(&bytes[i..])?;
            parts.push(part);
            i += used;
            if i < bytes.len() {
                if bytes[i] != SEPARATOR {
                    return Err(format!("expected a separator at byte {i}"));
                }
                i += 1;
            }
        }
        Ok(Key(parts))
    }

    /// The half-open byte range of every key strictly below this one: the encoding
    /// followed by the separator. `None` for the empty key (everything).
    pub fn prefix_range(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.0.is_empty() {
            return None;
        }
        let enc = self.encode();
        let mut start = enc.clone();
        start.push(SEPARATOR);
        let mut end = enc;
        end.push(SEPARATOR + 1);
        Some((start, end))
    }

    /// Parts from JSON: strings, numbers, booleans, `{"__type":"bigint","value":"123"}`
    /// and `{"__type":"bytes","value":"<base64>"}`.
    pub fn from_json(v: &Json) -> Result<Key, String> {
        let items = v.as_array().ok_or("Key must be an array of parts")?;
        let parts = items
            .iter()
            .map(part_from_json)
            .collect::<Result<Vec<_>, _>>()?;
        Key::new(parts)
    }

    pub fn to_json(&self) -> Json {
        Json::Array(self.0.iter().map(part_to_json).collect())
    }

    /// A key path from a URL: `users/42/posts`; each segment percent-decoded, integer
    /// segments become numbers.
    pub fn from_path(path: &str) -> Result<Key, String> {
        let trimmed = path.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(Key(Vec::new()));
        }
        let mut parts = Vec::new();
        for seg in trimmed.split('/') {
            let text = percent_decode(seg).map_err(|e| match e {
                PercentError::BadEscape => "Invalid percent-encoding in key path",
                PercentError::NotUtf8 => "Key path is not UTF-8",
            })?;
            if text.is_empty() {
                return Err("Key path has an empty segment".into());
            }
            parts.push(match integer(&text) {
                Some(n) => KeyPart::Number(n),
                None => KeyPart::String(text),
            });
        }
        Key::new(parts)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

fn encode_part(part: &KeyPart, out: &mut Vec<u8>) {
    match part {
        KeyPart::Bytes(b) => {
            out.push(TAG_BYTES);
            escape(b, out);
        }
        KeyPart::String(s) => {
            out.push(TAG_STRING);
            escape(s.as_bytes(), out);
        }
        KeyPart::Number(n) => {
            out.push(TAG_NUMBER);
            let bits = n.to_bits();
            // Non-negative: flip the sign bit; negative: flip every bit. (-0.0 >= 0.0 holds,
            // as in JavaScript.)
            let flipped = if *n >= 0.0 { bits ^ (1 << 63) } else { !bits };
            out.extend_from_slice(&flipped.to_be_bytes());
        }
        KeyPart::BigInt(b) => {
            let (sign, magnitude) = b.to_bytes_be();
            out.push(TAG_BIGINT);
            out.push(if sign == Sign::Minus { 0x01 } else { 0x02 });
            out.push(magnitude.len() as u8);
            out.extend_from_slice(&magnitude);
        }
        KeyPart::Bool(b) => {
            out.push(TAG_BOOL);
            out.push(if *b { 0x02 } else { 0x01 });
        }
    }
}

fn escape(data: &[u8], out: &mut Vec<u8>) {
    for &b in data {
        if b == SEPARATOR || b == ESCAPE {
            out.push(ESCAPE);
        }
        out.push(b);
    }
}

/// Decodes one part at the start of `bytes`; returns it and the bytes it used.
fn decode_part(bytes: &[u8]) -> Result<(KeyPart, usize), String> {
    let tag = *bytes.first().ok_or("empty key part")?;
    let data = &bytes[1..];
    match tag {
        TAG_BYTES | TAG_STRING => {
            let mut raw = Vec::new();
            let mut i = 0;
            while i < data.len() {
                match data[i] {
                    ESCAPE if i + 1 < data.len() => {
                        raw.push(data[i + 1]);
                        i += 2;
                    }
                    SEPARATOR => break,
                    b => {
                        raw.push(b);
                        i += 1;
                    }
                }
            }
            let part = if tag == TAG_BYTES {
                KeyPart::Bytes(raw)
            } else {
                KeyPart::String(String::from_utf8(raw).map_err(|_| "string part is not UTF-8")?)
            };
            Ok((part, 1 + i))
        }
        TAG_NUMBER => {
            let raw: [u8; 8] = data
                .get(..8)
                .and_then(|s| s.try_into().ok())
                .ok_or("Invalid number encoding")?;
            let bits = u64::from_be_bytes(raw);
            let original = if bits & (1 << 63) != 0 {
                bits ^ (1 << 63)
            } else {
                !bits
            };
            Ok((KeyPart::Number(f64::from_bits(original)), 9))
        }
        TAG_BIGINT => {
            if data.len() < 2 {
                return Err("Invalid bigint encoding".into());
            }
            let len = data[1] as usize;
            let magnitude = data.get(2..2 + len).ok_or("Invalid bigint encoding")?;
            let sign = if data[0] == 0x01 {
                Sign::Minus
            } else {
                Sign::Plus
            };
            Ok((
                KeyPart::BigInt(BigInt::from_bytes_be(sign, magnitude)),
                3 + len,
            ))
        }
        TAG_BOOL => {
            let b = *data.first().ok_or("Invalid bool encoding")?;
            Ok((KeyPart::Bool(b == 0x02), 2))
        }
        other => Err(format!("Unknown type tag: {other}")),
    }
}

fn part_from_json(v: &Json) -> Result<KeyPart, String> {
    Ok(match v {
        Json::String(s) => KeyPart::String(s.clone()),
        Json::Number(n) => KeyPart::Number(n.as_f64().ok_or("number out of range")?),
        Json::Bool(b) => KeyPart::Bool(*b),
        Json::Object(m) => {
            let value = m.get("value").and_then(Json::as_str);
            match (m.get("__type").and_then(Json::as_str), value) {
                (Some("bigint"), Some(text)) => {
                    let n = BigInt::parse_bytes(text.trim().as_bytes(), 10)
                        .ok_or_else(|| format!("Invalid bigint key part: {text:?}"))?;
                    if n.to_bytes_be().1.len() > 255 {
                        return Err("bigint key part is too large".into());
                    }
                    KeyPart::BigInt(n)
                }
                (Some("bytes"), Some(b64)) => KeyPart::Bytes(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|_| "bytes key part must be base64".to_string())?,
                ),
                _ => return Err(format!("Invalid key part: {v}")),
            }
        }
        _ => return Err(format!("Invalid key part: {v}")),
    })
}

fn part_to_json(p: &KeyPart) -> Json {
    match p {
        KeyPart::String(s) => Json::String(s.clone()),
        KeyPart::Number(n) => number_json(*n),
        KeyPart::Bool(b) => Json::Bool(*b),
        KeyPart::BigInt(b) => json!({"__type": "bigint", "value": b.to_string()}),
        KeyPart::Bytes(b) => {
            json!({"__type": "bytes", "value": base64::engine::general_purpose::STANDARD.encode(b)})
        }
    }
}

/// Whole numbers print as integers (`42`, not `42.0`).
pub fn number_json(n: f64) -> Json {
    const SAFE: f64 = 9_007_199_254_740_991.0;
    if n.fract() == 0.0 && n.abs() <= SAFE {
        Json::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
    }
}

/// A URL segment the original reads as a number: `-?\d+` within JavaScript's safe
/// integers (2^53 - 1, 16 digits: microsecond timestamps are numbers there), `-0` as
/// negative zero, which encodes apart from `0`. Others stay strings.
fn integer(text: &str) -> Option<f64> {
    const MAX_SAFE: u64 = (1 << 53) - 1;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Leading zeros count for nothing (`007` is 7), so a long run of them is fine.
    let magnitude = digits.parse::<u64>().ok().filter(|&n| n <= MAX_SAFE)? as f64;
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(parts: Vec<KeyPart>) -> Key {
        Key::new(parts).unwrap()
    }

    fn s(x: &str) -> KeyPart {
        KeyPart::String(x.into())
    }

    fn n(x: f64) -> KeyPart {
        KeyPart::Number(x)
    }

    fn big(x: &str) -> KeyPart {
        KeyPart::BigInt(x.parse().unwrap())
    }

    #[test]
    fn exact_bytes_of_each_part_type() {
        assert_eq!(k(vec![s("ab")]).encode(), vec![0x02, b'a', b'b']);
        assert_eq!(
            k(vec![KeyPart::Bytes(vec![1, 0, 0xFF])]).encode(),
            vec![0x01, 1, 0xFF, 0, 0xFF, 0xFF]
        );
        assert_eq!(
            k(vec![n(1.0)]).encode(),
            vec![0x03, 0xBF, 0xF0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            k(vec![n(-1.0)]).encode(),
            vec![0x03, 0x40, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        );
        assert_eq!(
            k(vec![big("258")]).encode(),
            vec![0x04, 0x02, 0x02, 0x01, 0x02]
        );
        assert_eq!(k(vec![big("-1")]).encode(), vec![0x04, 0x01, 0x01, 0x01]);
        assert_eq!(k(vec![big("0")]).encode(), vec![0x04, 0x02, 0x01, 0x00]);
        assert_eq!(
            k(vec![KeyPart::Bool(false), KeyPart::Bool(true)]).encode(),
            vec![0x05, 0x01, 0x00, 0x05, 0x02]
        );
        assert_eq!(
            k(vec![s("a"), s("b")]).encode(),
            vec![0x02, b'a', 0x00, 0x02, b'b']
        );
        assert!(Key::default().encode().is_empty());
    }

    #[test]
    fn every_part_type_round_trips() {
        let key = k(vec![
            s("users"),
            n(123.0),
            n(-100.5),
            big("9007199254740993"),
            big("-123456789012345678901234567890"),
            big("0"),
            KeyPart::Bool(true),
            KeyPart::Bool(false),
            KeyPart::Bytes(vec![0, 1, 0xFF, 0xFE, 0]),
            s("hello\u{0}world\u{FF}ÿ"),
            s(""),
        ]);
        assert_eq!(Key::decode(&key.encode()).unwrap(), key);
    }

    #[test]
    fn escaping_keeps_separators_out_of_parts() {
        let tricky = k(vec![s("a\u{0}b"), KeyPart::Bytes(vec![0xFF, 0x00])]);
        let enc = tricky.encode();
        assert_eq!(
            enc,
            vec![
                0x02, b'a', 0xFF, 0x00, b'b', 0x00, 0x01, 0xFF, 0xFF, 0xFF, 0x00
            ]
        );
        assert_eq!(Key::decode(&enc).unwrap(), tricky);
        // The original's decoder: an escape byte takes the next byte whatever it is.
        assert_eq!(Key::decode(&[0x02, 0xFF, b'x']).unwrap(), k(vec![s("x")]));
    }

    fn assert_sorted(keys: &[Key]) {
        for pair in keys.windows(2) {
            assert!(
                pair[0].encode() < pair[1].encode(),
                "{} !< {}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn byte_order_is_logical_order() {
        let nums = [
            -1e300, -100.0, -1.5, -1.0, -0.001, 0.0, 0.001, 1.0, 1.5, 100.0, 1e300,
        ];
        assert_sorted(
            &nums
                .iter()
                .map(|x| k(vec![s("num"), n(*x)]))
                .collect::<Vec<_>>(),
        );
        let strs = ["", "a", "aa", "ab", "b", "z", "é"];
        assert_sorted(
            &strs
                .iter()
                .map(|x| k(vec![s("str"), s(x)]))
                .collect::<Vec<_>>(),
        );
        // Part types sort by tag.
        assert_sorted(&[
            k(vec![KeyPart::Bytes(vec![9])]),
            k(vec![s("a")]),
            k(vec![n(0.0)]),
            k(vec![big("1")]),
            k(vec![KeyPart::Bool(false)]),
            k(vec![KeyPart::Bool(true)]),
        ]);
    }

    #[test]
    fn a_prefix_covers_whole_parts_only() {
        let (start, end) = k(vec![s("cnt")]).prefix_range().unwrap();
        let inside = |key: Key| {
            let e = key.encode();
            e >= start && e < end
        };
        assert!(inside(k(vec![s("cnt"), n(1.0)])));
        assert!(inside(k(vec![s("cnt"), s("x"), s("y")])));
        assert!(inside(k(vec![s("cnt"), KeyPart::Bytes(vec![])])));
        assert!(
            !inside(k(vec![s("cnt")])),
            "the prefix itself is not below itself"
        );
        assert!(
            !inside(k(vec![s("cnt2")])),
            "a longer string is not a child"
        );
        assert!(!inside(k(vec![s("cnt\u{0}x")])));
        assert!(!inside(k(vec![s("cn")])));
        assert!(!inside(k(vec![s("posts"), n(1.0)])));
        assert!(Key::default().prefix_range().is_none());
    }

    #[test]
    fn malformed_bytes_are_errors() {
        assert_eq!(Key::decode(&[0x00]).unwrap_err(), "Unknown type tag: 0");
        assert_eq!(
            Key::decode(&[0xFF, 1, 2]).unwrap_err(),
            "Unknown type tag: 255"
        );
        assert_eq!(
            Key::decode(&[0x03, 1, 2, 3, 4]).unwrap_err(),
            "Invalid number encoding"
        );
        assert_eq!(
            Key::decode(&[0x04, 0x01]).unwrap_err(),
            "Invalid bigint encoding"
        );
    }

    #[test]
    fn limits() {
        assert!(Key::new(vec![s("x"); 20]).is_ok());
        assert!(
            Key::new(vec![s("x"); 21])
                .unwrap_err()
                .contains("at most 20")
        );
        assert!(Key::new(vec![s(&"x".repeat(1024))]).is_ok());
        assert!(
            Key::new(vec![s(&"x".repeat(1025))])
                .unwrap_err()
                .contains("at most 1024")
        );
    }

    #[test]
    fn json_and_url_forms() {
        let key = Key::from_json(&json!(["a", 1, 2.5, true, {"__type":"bigint","value":"-5"}, {"__type":"bytes","value":"AP8="}])).unwrap();
        assert_eq!(key.parts()[4], big("-5"));
        assert_eq!(key.parts()[5], KeyPart::Bytes(vec![0, 255]));
        assert_eq!(
            key.to_json(),
            json!(["a", 1, 2.5, true, {"__type":"bigint","value":"-5"}, {"__type":"bytes","value":"AP8="}])
        );
        assert!(Key::from_json(&json!("a")).is_err());
        assert!(Key::from_json(&json!([null])).is_err());
        assert!(Key::from_json(&json!([{"__type":"bigint","value":"x"}])).is_err());

        let p = Key::from_path("users/42/a%2Fb/-7/007x").unwrap();
        assert_eq!(
            p.parts(),
            &[s("users"), n(42.0), s("a/b"), n(-7.0), s("007x")]
        );
        // As JavaScript's Number(): safe integers (16 digits too) are numbers, larger
        // ones strings; `-0` is negative zero, whose encoding differs from `0`'s.
        let p = Key::from_path("1764258000000000/9007199254740991/9007199254740992/-0/0").unwrap();
        assert_eq!(
            p.parts(),
            &[
                n(1764258000000000.0),
                n(9007199254740991.0),
                s("9007199254740992"),
                n(-0.0),
                n(0.0)
            ]
        );
        assert_ne!(
            Key::from_path("-0").unwrap().encode(),
            Key::from_path("0").unwrap().encode()
        );
        assert!(Key::from_path("").unwrap().is_empty());
        assert!(Key::from_path("a//b").is_err());
        assert!(Key::from_path("a/%zz").is_err());
    }
}
