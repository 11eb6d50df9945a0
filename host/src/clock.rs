//! Time as the host stores it (milliseconds since the Unix epoch, in one
//! BIGINT column that both backends order the same way) and as the API shows
//! it (RFC 3339 UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_777_593_600_123), "2026-05-01T00:00:00.123Z");
    }
}
