//! Time as the host stores it (milliseconds since the Unix epoch, in one
//! BIGINT column that both backends order the same way) and as the API shows
//! it (RFC 3339 UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Violation};

/// The longest `ttl`, `extra_time` or `retention_seconds` the API takes:
/// ten years of 365 days. Every expiry then stays a plain integer and a
/// date the formatter can write, however often it is extended.
pub const MAX_DURATION_SECS: i64 = 10 * 365 * 86_400;

/// The latest instant the API shows: 9999-12-31T23:59:59.999Z.
const MAX_SHOWN_MS: i64 = 253_402_300_799_999;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Total: instants before 1970 or after 9999 show as those bounds.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, MAX_SHOWN_MS) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn rfc3339_opt(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

/// Seconds to milliseconds, saturating, so a huge TTL means "far future"
/// instead of an overflow.
pub fn secs_to_ms(secs: i64) -> i64 {
    secs.saturating_mul(1000)
}

/// A duration the client gave in `field`, checked against 1 s to
/// [`MAX_DURATION_SECS`]: 422 otherwise.
pub fn duration_secs(field: &str, secs: i64) -> Result<i64, Error> {
    if (1..=MAX_DURATION_SECS).contains(&secs) {
        return Ok(secs);
    }
    let message = format!("{field} must be from 1 to {MAX_DURATION_SECS} seconds (ten years), got {secs}");
    Err(Error::validation(message.clone(), vec![Violation { path: format!("/{field}"), message }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_777_593_600_123), "2026-05-01T00:00:00.123Z");
    }

    #[test]
    fn formatting_is_total() {
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(i64::MIN), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(duration_secs("ttl", 1).unwrap(), 1);
        assert_eq!(duration_secs("ttl", MAX_DURATION_SECS).unwrap(), MAX_DURATION_SECS);
        for bad in [0, -5, MAX_DURATION_SECS + 1, i64::MAX, 9_223_372_036_854_775] {
            let e = duration_secs("extra_time", bad).unwrap_err();
            assert_eq!((e.status().as_u16(), e.code()), (422, "validation_failed"), "{bad}");
        }
    }
}
