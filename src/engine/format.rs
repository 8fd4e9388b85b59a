//! How Ollama writes numbers and times: `parameter_size` ("22.57M") and RFC 3339 timestamps
//! with the local UTC offset and trimmed nanoseconds (Go's `time.RFC3339Nano`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Ollama's `format.HumanNumber`: whole numbers without decimals, otherwise two decimals for
/// millions and one for billions; thousands rounded.
pub fn human_number(n: u64) -> String {
    const THOUSAND: u64 = 1_000;
    const MILLION: u64 = 1_000_000;
    const BILLION: u64 = 1_000_000_000;
    let scaled = |div: u64, decimals: usize, suffix: &str| {
        let v = n as f64 / div as f64;
        if v == v.floor() {
            format!("{v:.0}{suffix}")
        } else {
            format!("{v:.decimals$}{suffix}")
        }
    };
    if n >= BILLION {
        scaled(BILLION, 1, "B")
    } else if n >= MILLION {
        scaled(MILLION, 2, "M")
    } else if n >= THOUSAND {
        format!("{:.0}K", n as f64 / THOUSAND as f64)
    } else {
        n.to_string()
    }
}

/// The local UTC offset in seconds at `unix_secs` (0 where the platform cannot say).
fn local_offset_secs(unix_secs: i64) -> i64 {
    #[cfg(unix)]
    {
        let t = unix_secs as libc::time_t;
        // SAFETY: localtime_r writes only into `tm`, which we own; it is thread-safe.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
        if ok {
            return tm.tm_gmtoff as i64;
        }
    }
    let _ = unix_secs;
    0
}

/// `t` as RFC 3339 in local time, like Go's `time.Time` JSON: `2026-11-24T14:38:31.83753-07:00`
/// (fraction trimmed of trailing zeros, absent when zero; `Z` for UTC).
pub fn rfc3339_local(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    };
    rfc3339_with_offset(secs, nanos, local_offset_secs(secs))
}

/// The formatting itself, with an explicit offset (testable without the machine's zone).
pub fn rfc3339_with_offset(unix_secs: i64, nanos: u32, offset_secs: i64) -> String {
    let local = unix_secs + offset_secs;
    let days = local.div_euclid(86_400);
    let sod = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", sod / 3600, sod / 60 % 60, sod % 60);
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    if offset_secs == 0 {
        out.push('Z');
    } else {
        let sign = if offset_secs < 0 { '-' } else { '+' };
        let a = offset_secs.abs();
        out.push_str(&format!("{sign}{:02}:{:02}", a / 3600, a / 60 % 60));
    }
    out
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_numbers_like_ollama() {
        assert_eq!(human_number(22_565_376), "22.57M");
        assert_eq!(human_number(137_000_000), "137M");
        assert_eq!(human_number(136_727_040), "136.73M");
        assert_eq!(human_number(7_241_732_096), "7.2B");
        assert_eq!(human_number(8_000_000_000), "8B");
        assert_eq!(human_number(1_500), "2K");
        assert_eq!(human_number(999), "999");
    }

    #[test]
    fn rfc3339_forms() {
        // 2026-11-24T21:38:31.83753Z
        let t = 1_795_556_311;
        assert_eq!(rfc3339_with_offset(t, 837_530_000, 0), "2026-11-24T21:38:31.83753Z");
        assert_eq!(rfc3339_with_offset(t, 837_530_000, -7 * 3600), "2026-11-24T14:38:31.83753-07:00");
        assert_eq!(rfc3339_with_offset(t, 0, 5 * 3600 + 1800), "2026-11-25T03:08:31+05:30");
        assert_eq!(rfc3339_with_offset(0, 0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_with_offset(951_782_400, 0, 0), "2000-02-29T00:00:00Z");
        // Ollama's "forever" is now + MaxInt64 ns: a year in the 2300s, still formatted.
        assert!(rfc3339_local(SystemTime::now() + std::time::Duration::from_nanos(i64::MAX as u64)).starts_with("23"));
    }
}
