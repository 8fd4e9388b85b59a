//! `keep_alive` in every form Ollama accepts: a JSON number of seconds, a Go duration string
//! (`"5m"`, `"1h30m"`, `"300ms"`), a plain integer string of seconds (`"-1"`), negative = forever.

use std::time::Duration;

/// How long a model stays loaded after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// Unload this long after the last request finished (`0` = right after it).
    For(Duration),
    /// Never unload.
    Forever,
}

impl KeepAlive {
    /// Ollama's default: five minutes.
    pub const DEFAULT: KeepAlive = KeepAlive::For(Duration::from_secs(300));

    /// From nanoseconds, where a negative count means forever (as Ollama does).
    fn from_nanos(ns: i128) -> KeepAlive {
        if ns < 0 || ns > i64::MAX as i128 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_nanos(ns as u64))
        }
    }

    /// The `OLLAMA_KEEP_ALIVE` form: a Go duration, or an integer number of seconds.
    pub fn parse_str(s: &str) -> Result<KeepAlive, String> {
        match parse_go_duration(s) {
            Ok(ns) => Ok(KeepAlive::from_nanos(ns)),
            Err(e) => match s.trim().parse::<i64>() {
                Ok(secs) => Ok(KeepAlive::from_nanos(secs as i128 * 1_000_000_000)),
                Err(_) => Err(e),
            },
        }
    }

    /// The request field. `null` is "absent" (`Ok(None)`); a type other than a number or a
    /// string is an error, worded like Ollama's.
    pub fn from_json(v: &serde_json::Value) -> Result<Option<KeepAlive>, String> {
        use serde_json::Value as J;
        match v {
            J::Null => Ok(None),
            J::Number(n) => {
                let secs = n.as_f64().unwrap_or(f64::INFINITY);
                if secs < 0.0 {
                    return Ok(Some(KeepAlive::Forever));
                }
                let ns = secs * 1e9;
                if !ns.is_finite() || ns >= i64::MAX as f64 {
                    return Ok(Some(KeepAlive::Forever));
                }
                Ok(Some(KeepAlive::For(Duration::from_nanos(ns as u64))))
            }
            J::String(s) => KeepAlive::parse_str(s).map(Some),
            J::Bool(_) => Err("Unsupported type: 'bool'".into()),
            J::Array(_) => Err("Unsupported type: '[]interface {}'".into()),
            J::Object(_) => Err("Unsupported type: 'map[string]interface {}'".into()),
        }
    }

    /// The length as a `Duration`; `Forever` is Go's `math.MaxInt64` nanoseconds (≈292 years),
    /// which is what Ollama adds to "now" for `expires_at`.
    pub fn as_duration(self) -> Duration {
        match self {
            KeepAlive::For(d) => d,
            KeepAlive::Forever => Duration::from_nanos(i64::MAX as u64),
        }
    }
}

/// Go's `time.ParseDuration`, to nanoseconds: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or `"0"`.
/// Error messages are Go's.
pub fn parse_go_duration(orig: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {orig:?}");
    let mut s = orig;
    let mut neg = false;
    if let Some(r) = s.strip_prefix('-') {
        neg = true;
        s = r;
    } else if let Some(r) = s.strip_prefix('+') {
        s = r;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                r.split_at(n)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest.bytes().take_while(|b| !b.is_ascii_digit() && *b != b'.').count();
        let (unit, rest) = rest.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {orig:?}"));
        }
        let mult: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| invalid())? };
        let mut value = int.checked_mul(mult).ok_or_else(invalid)?;
        // The fraction, exact to the nanosecond (digits past 18 cannot matter).
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        if !frac_digits.is_empty() {
            let f: u128 = frac_digits.parse().map_err(|_| invalid())?;
            value += f * mult / 10u128.pow(frac_digits.len() as u32);
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i64::MAX as u128 {
            return Err(invalid());
        }
        s = rest;
    }
    Ok(if neg { -(total as i128) } else { total as i128 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5m"), Ok(300_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("-1s"), Ok(-1_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("2us"), Ok(2_000));
        assert!(parse_go_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_go_duration("5d").unwrap_err().contains("unknown unit"));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("m").is_err());
        assert!(parse_go_duration("99999999999h").is_err());
    }

    #[test]
    fn keep_alive_json_forms() {
        let d = |s| Some(KeepAlive::For(Duration::from_secs(s)));
        assert_eq!(KeepAlive::from_json(&json!(10)), Ok(d(10)));
        assert_eq!(KeepAlive::from_json(&json!(0)), Ok(d(0)));
        assert_eq!(KeepAlive::from_json(&json!(0.5)), Ok(Some(KeepAlive::For(Duration::from_millis(500)))));
        assert_eq!(KeepAlive::from_json(&json!(-1)), Ok(Some(KeepAlive::Forever)));
        assert_eq!(KeepAlive::from_json(&json!("5m")), Ok(d(300)));
        assert_eq!(KeepAlive::from_json(&json!("-1")), Ok(Some(KeepAlive::Forever)));
        assert_eq!(KeepAlive::from_json(&json!("-1m")), Ok(Some(KeepAlive::Forever)));
        assert_eq!(KeepAlive::from_json(&json!("30")), Ok(d(30)));
        assert_eq!(KeepAlive::from_json(&json!(null)), Ok(None));
        assert!(KeepAlive::from_json(&json!(true)).is_err());
        assert!(KeepAlive::from_json(&json!([1])).is_err());
        assert!(KeepAlive::from_json(&json!({})).is_err());
        assert!(KeepAlive::from_json(&json!("soon")).is_err());
    }
}
