//! `Via` on forwarded requests (RFC 9110 7.6.3 asks a proxy to send it), naming this
//! process by a pseudonym, so that a request that comes back to the gateway that sent it
//! is caught. A rule whose target is the gateway itself, or the balancer in front of it,
//! otherwise sent each request round until the open-files limit was reached (about 19,000
//! connections in seconds), and then no client could connect.

use http::{HeaderMap, HeaderValue, Version, header::VIA};

pub struct Via {
    pseudonym: String,
    /// `1.1 <pseudonym>`, and `1.0 <pseudonym>` for an HTTP/1.0 client's request.
    v11: HeaderValue,
    v10: HeaderValue,
}

impl Via {
    /// A pseudonym new for each process: two gateways chained on purpose differ.
    pub fn new() -> Via {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let pseudonym = format!("buntime-{}", &id[..12]);
        let value =
            |v: &str| HeaderValue::from_str(&format!("{v} {pseudonym}")).expect("ASCII pseudonym");
        Via {
            v11: value("1.1"),
            v10: value("1.0"),
            pseudonym,
        }
    }

    /// Whether this process already forwarded the request: its pseudonym is in `Via`.
    pub fn looped(&self, headers: &HeaderMap) -> bool {
        let ours = self.pseudonym.as_bytes();
        headers
            .get_all(VIA)
            .iter()
            .any(|v| v.as_bytes().windows(ours.len()).any(|w| w == ours))
    }

    /// The `Via` an upstream request carries: the client's, with this hop added.
    pub fn forwarded(&self, version: Version, incoming: &HeaderMap) -> HeaderValue {
        let ours = if version == Version::HTTP_10 {
            &self.v10
        } else {
            &self.v11
        };
        let earlier: Vec<&str> = incoming
            .get_all(VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if earlier.is_empty() {
            return ours.clone();
        }
        let ours = ours.to_str().unwrap_or_default();
        HeaderValue::from_str(&format!("{}, {ours}", earlier.join(", ")))
            .unwrap_or_else(|_| HeaderValue::from_static("1.1 buntime"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_a_hop_and_knows_its_own() {
        let via = Via::new();
        let mut h = HeaderMap::new();
        let first = via.forwarded(Version::HTTP_11, &h);
        assert!(first.to_str().unwrap().starts_with("1.1 buntime-"));
        assert!(!via.looped(&h));
        h.insert(VIA, HeaderValue::from_static("1.1 cdn"));
        let chained = via.forwarded(Version::HTTP_10, &h);
        let text = chained.to_str().unwrap();
        assert!(text.starts_with("1.1 cdn, 1.0 buntime-"), "{text}");
        assert!(!via.looped(&h));
        h.insert(VIA, chained);
        assert!(via.looped(&h));
        assert!(
            !Via::new().looped(&h),
            "another process's pseudonym differs"
        );
    }
}
