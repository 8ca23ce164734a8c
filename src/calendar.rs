//! Days and ISO 8601 weeks, in UTC, as the statistics count them: a day is a number of days
//! since 1970-01-01, a week is known by its Monday and written `2026-W47`.

use time::{Date, Duration};

const DAY: u64 = 86400;

/// The day number of a moment given in Unix seconds.
pub fn day_of_unix(secs: u64) -> u32 {
    u32::try_from(secs / DAY).unwrap_or(u32::MAX)
}

/// An ISO 8601 week, by its Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Week(Date);

impl Week {
    pub fn of(date: Date) -> Week {
        Week(date - Duration::days(i64::from(date.weekday().number_days_from_monday())))
    }

    /// The week of a day counted from 1970-01-01 (as in the store).
    pub fn of_day(day: u32) -> Week {
        Week::of(date_of_day(day))
    }

    pub fn monday(self) -> Date {
        self.0
    }

    /// `2026-W47`: the ISO week-numbering year, which differs from the calendar year around
    /// 1 January.
    pub fn label(self) -> String {
        let (year, week, _) = self.0.to_iso_week_date();
        format!("{year}-W{week:02}")
    }

    pub fn plus(self, weeks: i64) -> Week {
        Week(self.0.saturating_add(Duration::weeks(weeks)))
    }

    /// Weeks from `self` to `later` (0 when the same).
    pub fn until(self, later: Week) -> i64 {
        (later.0 - self.0).whole_weeks()
    }

    /// Reads `2026-W41` (a week) or `2026-10-05` (the week of that day).
    pub fn parse(s: &str) -> Result<Week, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is neither a week such as 2026-W41 nor a date such as 2026-10-05");
        if let Some((year, week)) = s.split_once(['W', 'w']) {
            let year: i32 = year.strip_suffix('-').unwrap_or(year).parse().map_err(|_| bad())?;
            let week: u8 = week.parse().map_err(|_| bad())?;
            return Date::from_iso_week_date(year, week, time::Weekday::Monday)
                .map(Week)
                .map_err(|_| format!("{s:?}: the year {year} has no week {week}"));
        }
        parse_date(s).map(Week::of).map_err(|_| bad())
    }
}

/// Reads `2026-10-05`.
pub fn parse_date(s: &str) -> Result<Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s.trim(), format).map_err(|e| format!("{s:?} is not a date such as 2026-10-05: {e}"))
}

pub fn date_of_day(day: u32) -> Date {
    time::OffsetDateTime::UNIX_EPOCH.date().saturating_add(Duration::days(i64::from(day)))
}

/// The day number (as in the store) of a date.
pub fn day_of_date(date: Date) -> u32 {
    let epoch = time::OffsetDateTime::UNIX_EPOCH.date();
    u32::try_from((date - epoch).whole_days()).unwrap_or(0)
}

/// Today in UTC, as the daemon counts days.
pub fn today() -> Date {
    time::OffsetDateTime::now_utc().date()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_weeks() {
        assert_eq!(day_of_unix(86399), 0);
        assert_eq!(day_of_unix(86400), 1);
        let d = parse_date("2026-11-21").unwrap();
        assert_eq!(date_of_day(day_of_date(d)), d);
        assert_eq!(Week::of_day(day_of_date(d)).label(), "2026-W47");
        assert_eq!(Week::parse("2026-W47").unwrap(), Week::of(d));
    }
}
