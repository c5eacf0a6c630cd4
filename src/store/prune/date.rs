//! Dates for `keep_younger_than`, in the forms `ostree prune
//! --keep-younger-than` users write (ostree uses gnulib's
//! `parse_datetime`; this is the part of its grammar people use):
//!
//! * `2021-06-01`, `2021-06-01 12:30[:45]`, `2021-06-01T12:30:45`, local
//!   time unless followed by `Z`, `UTC` or `±HH[:]MM`;
//! * `@1622505600` (seconds since the epoch);
//! * `now`, `today`, `yesterday`, `tomorrow`;
//! * relative items, each `[±]N UNIT` (`UNIT` one of second, minute, hour,
//!   day, week, fortnight, month, year, singular or plural, or `sec`,
//!   `min`), optionally followed by `ago`, which negates them all:
//!   `1 week ago`, `2 days 3 hours ago`, `-1 month`. Calendar units move
//!   the local date (so `1 month ago` on March 31st is March 3rd, as with
//!   `mktime`), the others add seconds.

/// Seconds since the epoch of `text`, relative items counted from `now`;
/// `None` when it is not understood.
pub fn parse_date(text: &str, now: i64) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    if let Some(n) = text.strip_prefix('@') {
        return n.trim().parse().ok();
    }
    let mut words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        return None;
    }
    // An absolute date (and time) first, if there is one.
    let mut base: Option<Calendar> = None;
    if let Some(d) = parse_ymd(words[0]) {
        let mut cal = d;
        words.remove(0);
        if let Some(&w) = words.first()
            && let Some((h, m, s, zone)) = parse_hms(w)
        {
            cal.set_time(h, m, s);
            cal.zone = zone;
            words.remove(0);
        }
        if let Some(&w) = words.first()
            && cal.zone.is_none()
            && let Some(z) = parse_zone(w)
        {
            cal.zone = Some(z);
            words.remove(0);
        }
        base = Some(cal);
    } else if let Some((date, time)) = words[0].split_once('t')
        && let Some(mut cal) = parse_ymd(date)
        && let Some((h, m, s, zone)) = parse_hms(time)
    {
        cal.set_time(h, m, s);
        cal.zone = zone;
        words.remove(0);
        base = Some(cal);
    }
    let mut cal = match base {
        Some(c) => c,
        None => Calendar::local(now)?,
    };
    // Relative items.
    let mut rel = Relative::default();
    let mut i = 0;
    let mut ago = false;
    while i < words.len() {
        let w = words[i];
        match w {
            "now" | "today" => {}
            "yesterday" => rel.days -= 1,
            "tomorrow" => rel.days += 1,
            "ago" => {
                if ago {
                    return None;
                }
                ago = true;
            }
            _ => {
                // `N UNIT`, `NUNIT` or a bare `UNIT` (one).
                let (num, unit) = match w.find(|c: char| c.is_ascii_alphabetic()) {
                    Some(0) => (1, w),
                    Some(k) => (w[..k].parse::<i64>().ok()?, &w[k..]),
                    None => {
                        let n = w.parse::<i64>().ok()?;
                        i += 1;
                        (n, *words.get(i)?)
                    }
                };
                rel.add(num, unit)?;
            }
        }
        i += 1;
    }
    if ago {
        rel = rel.negated();
    }
    cal.year = cal.year.checked_add(rel.years)?;
    cal.month = cal.month.checked_add(rel.months)?;
    cal.day = cal.day.checked_add(rel.days)?;
    cal.to_epoch()?.checked_add(rel.seconds)
}

#[derive(Default, Clone, Copy)]
struct Relative {
    years: i64,
    months: i64,
    days: i64,
    seconds: i64,
}

impl Relative {
    fn add(&mut self, n: i64, unit: &str) -> Option<()> {
        let unit = unit
            .strip_suffix('s')
            .filter(|u| u.len() > 1)
            .unwrap_or(unit);
        let slot = match unit {
            "year" => (&mut self.years, 1),
            "month" => (&mut self.months, 1),
            "fortnight" => (&mut self.days, 14),
            "week" => (&mut self.days, 7),
            "day" => (&mut self.days, 1),
            "hour" => (&mut self.seconds, 3600),
            "minute" | "min" => (&mut self.seconds, 60),
            "second" | "sec" => (&mut self.seconds, 1),
            _ => return None,
        };
        *slot.0 = slot.0.checked_add(n.checked_mul(slot.1)?)?;
        Some(())
    }

    fn negated(self) -> Relative {
        Relative {
            years: -self.years,
            months: -self.months,
            days: -self.days,
            seconds: -self.seconds,
        }
    }
}

/// A broken-down time, normalised by `mktime` (or, with a zone, by
/// `timegm` and the offset).
#[derive(Clone, Copy)]
struct Calendar {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    /// Offset east of UTC in seconds; `None` for local time.
    zone: Option<i64>,
}

impl Calendar {
    fn local(t: i64) -> Option<Calendar> {
        // SAFETY: localtime_r writes only into `tm`, which we own; a zeroed
        // `tm` is a valid value.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let tt = t as libc::time_t;
        if unsafe { libc::localtime_r(&tt, &mut tm) }.is_null() {
            return None;
        }
        Some(Calendar {
            year: i64::from(tm.tm_year) + 1900,
            month: i64::from(tm.tm_mon) + 1,
            day: i64::from(tm.tm_mday),
            hour: i64::from(tm.tm_hour),
            minute: i64::from(tm.tm_min),
            second: i64::from(tm.tm_sec),
            zone: None,
        })
    }

    fn set_time(&mut self, h: i64, m: i64, s: i64) {
        self.hour = h;
        self.minute = m;
        self.second = s;
    }

    fn to_epoch(self) -> Option<i64> {
        let field = |v: i64| i32::try_from(v).ok();
        // SAFETY: as above; mktime/timegm read and normalise `tm` only.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        tm.tm_year = field(self.year.checked_sub(1900)?)?;
        tm.tm_mon = field(self.month.checked_sub(1)?)?;
        tm.tm_mday = field(self.day)?;
        tm.tm_hour = field(self.hour)?;
        tm.tm_min = field(self.minute)?;
        tm.tm_sec = field(self.second)?;
        tm.tm_isdst = -1;
        let t = match self.zone {
            None => unsafe { libc::mktime(&mut tm) },
            Some(_) => unsafe { libc::timegm(&mut tm) },
        };
        if t == -1 && !(self.year == 1969 && self.month == 12 && self.day == 31) {
            return None;
        }
        Some(t as i64 - self.zone.unwrap_or(0))
    }
}

fn parse_ymd(s: &str) -> Option<Calendar> {
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if y.len() < 4 || !digits(y) || !digits(m) || !digits(d) || m.len() > 2 || d.len() > 2 {
        return None;
    }
    let (month, day) = (m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(Calendar {
        year: y.parse().ok()?,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        zone: None,
    })
}

/// `HH:MM[:SS]` with an optional zone glued on (`Z`, `±HH[:]MM`).
fn parse_hms(s: &str) -> Option<(i64, i64, i64, Option<i64>)> {
    if s.is_empty() || !s.is_ascii() {
        return None;
    }
    let split = s[1..]
        .find(['z', '+', '-'])
        .map(|k| k + 1)
        .unwrap_or(s.len());
    let (time, zone) = s.split_at(split);
    let zone = if zone.is_empty() {
        None
    } else {
        Some(parse_zone(zone)?)
    };
    let parts: Vec<&str> = time.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let num = |x: &str, max: i64| -> Option<i64> {
        let v: i64 = (x.len() <= 2 && !x.is_empty()).then(|| x.parse().ok())??;
        (0..=max).contains(&v).then_some(v)
    };
    Some((
        num(parts[0], 23)?,
        num(parts[1], 59)?,
        parts.get(2).map_or(Some(0), |p| num(p, 60))?,
        zone,
    ))
}

fn parse_zone(s: &str) -> Option<i64> {
    if s == "z" || s == "utc" || s == "gmt" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = digits[2..].parse().ok()?;
    (h <= 23 && m <= 59).then_some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_dates() {
        assert_eq!(parse_date("@1622505600", 0), Some(1_622_505_600));
        assert_eq!(parse_date("2021-06-01Z", 0), None);
        assert_eq!(parse_date("2021-06-01 00:00 UTC", 0), Some(1_622_505_600));
        assert_eq!(parse_date("2021-06-01T12:30:00Z", 0), Some(1_622_550_600));
        assert_eq!(
            parse_date("2021-06-01T12:30:00+02:00", 0),
            Some(1_622_550_600 - 7200)
        );
        assert_eq!(parse_date("2021-13-01", 0), None);
        assert_eq!(parse_date("yesterday-ish", 0), None);
        assert_eq!(parse_date("", 0), None);
    }

    #[test]
    fn local_midnight_matches_mktime() {
        // Whatever the machine's zone, a plain date is its local midnight.
        let t = parse_date("2021-06-01", 0).unwrap();
        let cal = Calendar::local(t).unwrap();
        assert_eq!(
            (cal.year, cal.month, cal.day, cal.hour, cal.minute),
            (2021, 6, 1, 0, 0)
        );
    }

    #[test]
    fn relative_dates() {
        let now = parse_date("2021-06-15 12:00:00 UTC", 0).unwrap();
        assert_eq!(parse_date("now", now), Some(now));
        assert_eq!(parse_date("1 week ago", now), Some(now - 7 * 86400));
        assert_eq!(
            parse_date("2 days 3 hours ago", now),
            Some(now - 2 * 86400 - 3 * 3600)
        );
        assert_eq!(parse_date("3hours", now), Some(now + 3 * 3600));
        assert_eq!(parse_date("-90 min", now), Some(now - 90 * 60));
        assert_eq!(parse_date("yesterday", now), Some(now - 86400));
        assert_eq!(parse_date("1 parsec ago", now), None);
        assert_eq!(parse_date("ago ago", now), None);
        assert_eq!(parse_date("-9223372036854775807 years", now), None);
        assert_eq!(parse_date("9223372036854775807 months ago", now), None);
        assert_eq!(parse_date("@99999999999999999999", now), None);
    }

    proptest::proptest! {
        /// Any text: an answer or `None`, never a panic or an overflow.
        #[test]
        fn never_panics(text in "[0-9a-zA-Z@:+ .-]{0,40}", now in proptest::num::i64::ANY) {
            let _ = parse_date(&text, now);
            let _ = crate::store::gc::parse_size(&text);
        }
    }
}
