//! Validators, conditional requests and byte ranges for the static worker (RFC 9110
//! sections 8.8, 13 and 14): a browser revalidates a file it has and gets `304` without
//! the body, and a media player asks for the part it needs.

use std::fs::Metadata;
use std::ops::RangeInclusive;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE};

/// A file's validators, from its size and modification time (as nginx makes them).
pub struct Validators {
    /// A strong entity tag, quotes included.
    pub etag: String,
    pub modified: SystemTime,
}

impl Validators {
    /// `encoding`: the content coding of a precompressed variant, named in its tag so
    /// that no two representations share one.
    pub fn of(meta: &Metadata, encoding: Option<&str>) -> Validators {
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let nanos = modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let len = meta.len();
        let etag = match encoding {
            Some(coding) => format!("\"{nanos:x}-{len:x}-{coding}\""),
            None => format!("\"{nanos:x}-{len:x}\""),
        };
        Validators { etag, modified }
    }

    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }

    /// Whether a GET or HEAD with `headers` can be answered `304 Not Modified`:
    /// `If-None-Match` decides when present (weak comparison), else `If-Modified-Since`.
    pub fn not_modified(&self, headers: &HeaderMap) -> bool {
        if let Some(tags) = headers.get(IF_NONE_MATCH) {
            let Ok(tags) = tags.to_str() else {
                return false;
            };
            return tags
                .split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag);
        }
        let since = headers
            .get(IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        // HTTP dates have whole seconds; a file changed within the second it was fetched
        // reads as modified.
        since.is_some_and(|since| whole_seconds(self.modified) <= whole_seconds(since))
    }

    /// Whether `If-Range`, when sent, still names this file: a strong entity tag equal to
    /// ours, or our exact `Last-Modified` date.
    fn range_still_applies(&self, headers: &HeaderMap) -> bool {
        match headers.get(IF_RANGE).map(|v| v.to_str()) {
            None => true,
            Some(Ok(v)) if v.starts_with('"') => v == self.etag,
            Some(Ok(v)) => httpdate::parse_http_date(v)
                .is_ok_and(|d| whole_seconds(d) == whole_seconds(self.modified)),
            Some(Err(_)) => false,
        }
    }
}

fn whole_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a GET's `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq)]
pub enum Part {
    /// No usable range: the whole file. A malformed header, a unit other than bytes, an
    /// `If-Range` that no longer matches and several ranges are all served whole, as RFC
    /// 9110 14.2 allows (several ranges would need a multipart body).
    Whole,
    /// One range, inclusive.
    Range(RangeInclusive<u64>),
    /// Nothing of the file is in the range: `416`.
    Unsatisfiable,
}

pub fn part(headers: &HeaderMap, size: u64, validators: &Validators) -> Part {
    let Some(range) = headers.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return Part::Whole;
    };
    if !validators.range_still_applies(headers) {
        return Part::Whole;
    }
    let Ok(parsed) = http_range_header::parse_range_header(range) else {
        return Part::Whole;
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => Part::Range(ranges[0].clone()),
        Ok(_) => Part::Whole,
        Err(_) => Part::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn validators() -> Validators {
        Validators {
            etag: "\"abc-10\"".into(),
            modified: UNIX_EPOCH + Duration::from_millis(1_700_000_000_500),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn revalidation() {
        let v = validators();
        let date = v.last_modified();
        assert_eq!(date, "Tue, 14 Nov 2023 22:13:20 GMT");
        for yes in [
            vec![("if-none-match", "\"abc-10\"")],
            vec![("if-none-match", "\"x\", W/\"abc-10\"")],
            vec![("if-none-match", "*")],
            vec![("if-modified-since", date.as_str())],
            vec![("if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT")],
        ] {
            assert!(v.not_modified(&headers(&yes)), "{yes:?}");
        }
        for no in [
            vec![],
            vec![("if-none-match", "\"abc-1\"")],
            // If-None-Match decides when both are sent.
            vec![
                ("if-none-match", "\"other\""),
                ("if-modified-since", date.as_str()),
            ],
            vec![("if-modified-since", "Tue, 14 Nov 2023 22:13:19 GMT")],
            vec![("if-modified-since", "yesterday")],
        ] {
            assert!(!v.not_modified(&headers(&no)), "{no:?}");
        }
    }

    #[test]
    fn ranges() {
        let v = validators();
        let date = v.last_modified();
        let part = |pairs: &[(&'static str, &str)]| part(&headers(pairs), 100, &v);
        assert_eq!(part(&[]), Part::Whole);
        assert_eq!(part(&[("range", "bytes=0-9")]), Part::Range(0..=9));
        assert_eq!(part(&[("range", "bytes=90-")]), Part::Range(90..=99));
        assert_eq!(part(&[("range", "bytes=-5")]), Part::Range(95..=99));
        assert_eq!(part(&[("range", "bytes=95-500")]), Part::Range(95..=99));
        assert_eq!(part(&[("range", "bytes=100-")]), Part::Unsatisfiable);
        assert_eq!(part(&[("range", "bytes=0-1,5-6")]), Part::Whole);
        assert_eq!(part(&[("range", "items=0-1")]), Part::Whole);
        assert_eq!(part(&[("range", "bytes=oops")]), Part::Whole);
        let with = |if_range: &str| part(&[("range", "bytes=0-9"), ("if-range", if_range)]);
        assert_eq!(with("\"abc-10\""), Part::Range(0..=9));
        assert_eq!(with(&date), Part::Range(0..=9));
        assert_eq!(with("\"changed\""), Part::Whole);
        assert_eq!(with("W/\"abc-10\""), Part::Whole, "weak tags never match");
        assert_eq!(with("Tue, 14 Nov 2023 22:13:21 GMT"), Part::Whole);
    }
}
