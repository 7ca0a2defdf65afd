//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`) as exact
//! integers of nano-units, for `resourceFieldRef` and its `divisor`.

/// Nano-units per unit.
const NANO: i128 = 1_000_000_000;

/// `q` in nano-units (`1` → 10^9, `1m` → 10^6, `1Ki` → 1024·10^9), or
/// why it is not a quantity.
pub fn parse_nanos(q: &str) -> Result<i128, String> {
    let s = q.trim();
    let bad = || format!("quantity {q:?} is not a Kubernetes quantity");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (negative, number) = match number.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !whole.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return Err(bad());
    }
    let digits = |d: &str| -> Result<i128, String> {
        if d.is_empty() {
            Ok(0)
        } else {
            d.parse::<i128>().map_err(|_| bad())
        }
    };
    let frac_nanos = digits(frac)? * 10i128.pow(9 - frac.len() as u32);
    let base = digits(whole)?
        .checked_mul(NANO)
        .and_then(|w| w.checked_add(frac_nanos))
        .ok_or_else(bad)?;
    // (multiplier, divisor) of the suffix.
    let (mul, div): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, NANO),
        "u" => (1, 1_000_000),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1_000_000, 1),
        "G" => (NANO, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| bad())?;
            if exp.unsigned_abs() > 18 {
                return Err(bad());
            }
            let p = 10i128.pow(exp.unsigned_abs());
            if exp >= 0 { (p, 1) } else { (1, p) }
        }
        _ => return Err(bad()),
    };
    let value = base.checked_mul(mul).ok_or_else(bad)? / div;
    Ok(if negative { -value } else { value })
}

/// `value / divisor` rounded up, as kubelet reports a resource through the
/// downward API (at least 1 when the value is positive).
pub fn ceil_div(value: i128, divisor: i128) -> i128 {
    if divisor <= 0 {
        return value;
    }
    let q = value / divisor;
    if value % divisor > 0 { q + 1 } else { q }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_fractions() {
        assert_eq!(parse_nanos("1").unwrap(), NANO);
        assert_eq!(parse_nanos("500m").unwrap(), NANO / 2);
        assert_eq!(parse_nanos("1.5").unwrap(), 3 * NANO / 2);
        assert_eq!(parse_nanos("64Mi").unwrap(), (64 << 20) * NANO);
        assert_eq!(parse_nanos("1k").unwrap(), 1000 * NANO);
        assert_eq!(parse_nanos("2e3").unwrap(), 2000 * NANO);
        assert_eq!(parse_nanos(".5").unwrap(), NANO / 2);
        for bad in ["", "abc", "1x", "1.2.3", "1Zi", "e5"] {
            assert!(parse_nanos(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn division_rounds_up() {
        let m = parse_nanos("1m").unwrap();
        assert_eq!(ceil_div(parse_nanos("250m").unwrap(), m), 250);
        assert_eq!(ceil_div(parse_nanos("250m").unwrap(), parse_nanos("1").unwrap()), 1);
        assert_eq!(ceil_div(parse_nanos("64Mi").unwrap(), parse_nanos("1Mi").unwrap()), 64);
        assert_eq!(ceil_div(0, NANO), 0);
    }
}
