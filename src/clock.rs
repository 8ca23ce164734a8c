//! Wall-clock time as Unix seconds: the one place that reads the clock's epoch, so that the
//! milter, the stores and the outbox agree on what "now" is. A clock before 1970 reads as 0.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since 1970-01-01 UTC, now.
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// Seconds since 1970-01-01 UTC at `t`, rounded down.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds since 1970-01-01 UTC at `t`, rounded up, so that "in 200 ms" is never "now".
pub fn unix_secs_ceil(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// The moment `secs` seconds after 1970-01-01 UTC.
pub fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        let t = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(unix_secs(t), 1);
        assert_eq!(unix_secs_ceil(t), 2);
        assert_eq!(unix_secs_ceil(from_unix(7)), 7);
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert!(unix_now() > 1_700_000_000);
    }
}
