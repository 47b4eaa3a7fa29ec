//! Duration and size syntax shared by every config surface (SPEC 8.2):
//! durations are a number of seconds or `500ms`, `30s`, `1m`, `1h`, `1d`;
//! sizes are bytes or `10kb`, `10mb`, `1gb` (1024-based).

use std::time::Duration;

/// Parses `30`, `500ms`, `30s`, `1m`, `1h`, `1d`. A bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(text, "ms, s, m, h or d")?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m, h or d)")),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| "duration is too large".to_string())
}

/// Parses `1024`, `10kb`, `10mb`, `1gb` (1024-based, case-insensitive).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let (n, unit) = number_and_unit(&lower, "kb, mb or gb")?;
    let mult: u64 = match unit {
        "" | "b" => 1,
        "kb" | "k" => 1 << 10,
        "mb" | "m" => 1 << 20,
        "gb" | "g" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} (use kb, mb or gb)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| "size is too large".to_string())
}

/// `"30s"` -> `(30, "s")`: leading digits, then the (trimmed) rest.
fn number_and_unit<'a>(text: &'a str, units: &str) -> Result<(u64, &'a str), String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!("expected a number with an optional unit {units}"));
    }
    let n = digits
        .parse()
        .map_err(|_| "number is too large".to_string())?;
    Ok((n, unit.trim()))
}

/// Renders a duration the way a user would write it, for JSON output and messages.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let units: [(u128, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    units
        .iter()
        .find(|(per, _)| ms > 0 && ms.is_multiple_of(*per))
        .map(|(per, unit)| format!("{}{unit}", ms / per))
        .unwrap_or_else(|| {
            if ms == 0 {
                "0s".into()
            } else {
                format!("{ms}ms")
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "s",
            "1x",
            "-1",
            "1.5s",
            "1 m m",
            "1w",
            "99999999999999999999",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("10kb"), Ok(10 * 1024));
        assert_eq!(parse_size("10MB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        for bad in ["", "mb", "1tb", "-5", "1.5mb"] {
            assert!(parse_size(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["500ms", "30s", "1m", "1h", "1d", "0s", "90s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
