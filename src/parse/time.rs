//! RFC 3339 timestamps to nanoseconds since the Unix epoch, without a calendar crate on the
//! hot path: every framed line and every entry's `start_time` goes through here.

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; 1 to 9 fraction digits (Go's RFC3339Nano
/// drops trailing zeros, Envoy prints milliseconds). `t`/`z` and a space for `T` are accepted.
pub fn parse_rfc3339_ns(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // 60 is a leap second; it folds into the next minute like most libraries do.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut pos = 19;
    let mut nanos = 0i64;
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        let n = pos - start;
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(&b[start..pos])? * 10i64.pow(9 - n as u32);
    }
    let offset_s = match b.get(pos)? {
        b'Z' | b'z' if pos + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let oh = digits(&b[pos + 1..pos + 3])?;
            let om = digits(&b[pos + 4..pos + 6])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC with milliseconds (Envoy's style).
pub fn format_rfc3339_ms(ns: i64) -> String {
    let millis = ns.rem_euclid(1_000_000_000) / 1_000_000;
    format!("{}.{millis:03}Z", format_seconds(ns))
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC with all nine fraction digits (the
/// kubelet's and `kubectl --timestamps` style).
pub fn format_rfc3339_ns(ns: i64) -> String {
    let nanos = ns.rem_euclid(1_000_000_000);
    format!("{}.{nanos:09}Z", format_seconds(ns))
}

/// The UTC date (`2025-08-18`) and hour (`09`) of a time: the store's partition.
pub fn utc_date_hour(ns: i64) -> (String, String) {
    let secs = ns.div_euclid(1_000_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    (format!("{y:04}-{m:02}-{d:02}"), format!("{:02}", secs.rem_euclid(86_400) / 3600))
}

fn format_seconds(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rfc3339_variants() {
        let base = 1_755_509_790_000_000_000; // 2025-08-18T09:36:30Z
        for (text, want) in [
            ("2025-08-18T09:36:30Z", base),
            ("2025-08-18T09:36:30.123Z", base + 123_000_000),
            ("2025-08-18T09:36:30.06736659Z", base + 67_366_590),
            ("2025-08-18T09:36:30.001392687Z", base + 1_392_687),
            ("2025-08-18T11:36:30.5+02:00", base + 500_000_000),
            ("2025-08-18T04:36:30-05:00", base),
            ("2025-08-18 09:36:30z", base),
            ("1970-01-01T00:00:00Z", 0),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000_000_000),
        ] {
            assert_eq!(parse_rfc3339_ns(text), Some(want), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for text in [
            "",
            "2025-08-18",
            "2025-08-18T09:36:30",
            "2025-13-18T09:36:30Z",
            "2025-02-29T09:36:30Z",
            "2025-08-18T24:00:00Z",
            "2025-08-18T09:36:30.Z",
            "2025-08-18T09:36:30.1234567891Z",
            "2025-08-18T09:36:30+0200",
            "2025-08-18T09:36:30Zjunk",
            "2025-0a-18T09:36:30Z",
        ] {
            assert_eq!(parse_rfc3339_ns(text), None, "{text}");
        }
    }

    #[test]
    fn formats_back_to_rfc3339() {
        let ns = parse_rfc3339_ns("2025-08-18T09:36:30.123456Z").unwrap();
        assert_eq!(format_rfc3339_ms(ns), "2025-08-18T09:36:30.123Z");
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_ns(ns), "2025-08-18T09:36:30.123456000Z");
        assert_eq!(utc_date_hour(ns), ("2025-08-18".to_owned(), "09".to_owned()));
    }
}
