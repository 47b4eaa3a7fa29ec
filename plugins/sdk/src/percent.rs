//! Percent-decoding of URL path text: one strict decoder for the plugins and the workers.

use std::borrow::Cow;

/// Why percent-encoded text does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PercentError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

/// `my%20table` -> `my table`. A `+` stays a `+`: it means a space in form bodies only.
pub fn percent_decode(text: &str) -> Result<String, PercentError> {
    let b = text.as_bytes();
    let bad_escape = b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !b
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        return Err(PercentError::BadEscape);
    }
    percent_encoding::percent_decode(b)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| PercentError::NotUtf8)
}

/// A request path with its percent-encoded non-ASCII characters decoded (`/caf%C3%A9` is
/// `/café`), for patterns and globs written as people write paths, which clients always
/// send encoded; `None` when it has none, or when they are not UTF-8. ASCII escapes stay
/// as they are (`%2F` is no `/`, `%25` no `%`), so the path keeps its segments.
pub fn decode_non_ascii(path: &str) -> Option<String> {
    // Runs on every path that has a rule or public route to match: one scan for the
    // common case, a path without `%`.
    if !path.bytes().any(|b| b == b'%') {
        return None;
    }
    let b = path.as_bytes();
    let high = |i: usize| {
        let hex = b.get(i + 1..i + 3).filter(|_| b[i] == b'%')?;
        let digit = |c: u8| (c as char).to_digit(16);
        let v = digit(hex[0])? * 16 + digit(hex[1])?;
        u8::try_from(v).ok().filter(|v| *v >= 0x80)
    };
    let first = (0..b.len()).find(|&i| high(i).is_some())?;
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..first]);
    let mut i = first;
    while i < b.len() {
        if let Some(v) = high(i) {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `text` with its non-ASCII characters (and controls) percent-encoded: a path built from
/// what [`decode_non_ascii`] gave, as a request target carries it.
pub fn encode_non_ascii(text: &str) -> Cow<'_, str> {
    percent_encoding::utf8_percent_encode(text, percent_encoding::CONTROLS).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_only() {
        assert_eq!(decode_non_ascii("/caf%C3%A9/x"), Some("/café/x".into()));
        assert_eq!(
            decode_non_ascii("/caf%c3%a9%2F%20"),
            Some("/café%2F%20".into())
        );
        for none in ["/plain", "/a%20b%2F", "/bad%FF", "/%C3", "/%"] {
            assert_eq!(decode_non_ascii(none), None, "{none}");
        }
        // Stray `%`s around an escape stay as they are.
        assert_eq!(decode_non_ascii("/%zz%C3%A9x%"), Some("/%zzéx%".into()));
        assert_eq!(encode_non_ascii("/café/%2F"), "/caf%C3%A9/%2F");
        assert_eq!(encode_non_ascii("/plain"), "/plain");
    }

    #[test]
    fn decodes_strictly() {
        assert_eq!(percent_decode("my%20table+%C3%A9"), Ok("my table+é".into()));
        assert_eq!(percent_decode("plain"), Ok("plain".into()));
        for bad in ["%", "%2", "%zz", "a%+1", "%%41"] {
            assert_eq!(percent_decode(bad), Err(PercentError::BadEscape), "{bad}");
        }
        assert_eq!(percent_decode("%FF"), Err(PercentError::NotUtf8));
    }
}
