//! Numbers as libostree reads them from its configuration and options:
//! C's `strtoll` in base 10.

/// `strtoll`'s value of `s`: leading blanks, a sign, then digits, anything
/// after them ignored (`2x` is 2); beyond `i64` saturates. `None` when
/// there are no digits (where C returns 0).
pub fn strtoll(s: &str) -> Option<i64> {
    let t = s.trim_start();
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let v: i64 = rest[..digits].parse().unwrap_or(i64::MAX);
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::strtoll;

    #[test]
    fn like_c() {
        assert_eq!(strtoll("2"), Some(2));
        assert_eq!(strtoll("2x"), Some(2));
        assert_eq!(strtoll(" -1"), Some(-1));
        assert_eq!(strtoll("+7"), Some(7));
        assert_eq!(strtoll("99999999999999999999"), Some(i64::MAX));
        assert_eq!(strtoll("10s"), Some(10));
        assert_eq!(strtoll("-"), None);
        assert_eq!(strtoll("abc"), None);
        assert_eq!(strtoll(""), None);
    }
}
