//! Sizes and times written the way Ollama's CLI writes them (its `format` package).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Ollama's `format.HumanBytes`: decimal units, no decimals from 10 up, one below unless whole
/// (`46 MB`, `1.5 GB`, `512 B`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "KB"),
    ];
    let Some(&(scale, unit)) = UNITS.iter().find(|(s, _)| b >= *s) else {
        return format!("{b} B");
    };
    let value = b as f64 / scale as f64;
    if value >= 10.0 || value == value.trunc() {
        format!("{} {unit}", value as u64)
    } else {
        format!("{value:.1} {unit}")
    }
}

/// Ollama's `format.HumanTime` relative to `now`: `2 weeks ago`, `4 minutes from now`,
/// `Forever` for a time far in the future (a model kept loaded for good).
pub fn human_time(t: SystemTime, now: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(ago) => format!("{} ago", human_duration(ago)),
        Err(e) => {
            let ahead = e.duration();
            if ahead.as_secs() / 3600 / 24 / 365 > 20 {
                "Forever".to_string()
            } else {
                format!("{} from now", human_duration(ahead))
            }
        }
    }
}

fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    match seconds {
        0 => return "Less than a second".to_string(),
        1 => return "1 second".to_string(),
        2..=59 => return format!("{seconds} seconds"),
        _ => {}
    }
    let minutes = seconds / 60;
    match minutes {
        1 => return "About a minute".to_string(),
        2..=59 => return format!("{minutes} minutes"),
        _ => {}
    }
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    match hours {
        1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// Parses an RFC 3339 time (`2026-11-24T14:38:31.83753-07:00`, `...Z`). `None` if malformed.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 9)];
        nanos = format!("{frac:0<9}").parse().ok()?;
    }
    let offset = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && (tz.starts_with('+') || tz.starts_with('-'))
            && tz.as_bytes()[3] == b':' =>
        {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec - offset;
    let base = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    Some(base + Duration::from_nanos(nanos as u64))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_like_ollama() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1_500), "1.5 KB");
        assert_eq!(human_bytes(2_000_000), "2 MB");
        assert_eq!(human_bytes(46_223_616), "46 MB");
        assert_eq!(human_bytes(25_000_000), "25 MB");
        assert_eq!(human_bytes(4_683_087_332), "4.7 GB");
    }

    #[test]
    fn times_like_ollama() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let ago = |s: u64| human_time(now - Duration::from_secs(s), now);
        assert_eq!(ago(0), "Less than a second ago");
        assert_eq!(ago(30), "30 seconds ago");
        assert_eq!(ago(61), "About a minute ago");
        assert_eq!(ago(5 * 60), "5 minutes ago");
        assert_eq!(ago(3600), "About an hour ago");
        assert_eq!(ago(5 * 3600), "5 hours ago");
        assert_eq!(ago(3 * 86400), "3 days ago");
        assert_eq!(ago(20 * 86400), "2 weeks ago");
        assert_eq!(ago(100 * 86400), "3 months ago");
        assert_eq!(ago(800 * 86400), "2 years ago");
        assert_eq!(
            human_time(now + Duration::from_secs(4 * 60 + 30), now),
            "4 minutes from now"
        );
        assert_eq!(
            human_time(now + Duration::from_secs(300 * 365 * 86400), now),
            "Forever"
        );
    }

    #[test]
    fn rfc3339() {
        let t = parse_rfc3339("2026-11-24T14:38:31.5-07:00").unwrap();
        let z = parse_rfc3339("2026-11-24T21:38:31.5Z").unwrap();
        assert_eq!(t, z);
        assert_eq!(
            parse_rfc3339("1970-01-02T00:00:00Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(86400)
        );
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z")
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            951_868_800
        );
        for bad in [
            "",
            "2026-11-24",
            "2026-13-01T00:00:00Z",
            "2026-11-24T14:38:31",
            "2026-11-24T14:38:31.Z",
            "ÿÿÿÿ-11-24T14:38:31Z",
        ] {
            assert!(parse_rfc3339(bad).is_none(), "{bad}");
        }
    }
}
