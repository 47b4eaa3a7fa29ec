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

#[cfg(test)]
mod tests {
    use super::*;

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
