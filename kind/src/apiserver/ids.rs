//! Random identifiers (uids, tokens, generated names) and timestamps.

use k8s_openapi::jiff::Timestamp;

/// Fills `buf` from the operating system's secure random source.
pub fn random_bytes(buf: &mut [u8]) {
    let provider = rustls::crypto::ring::default_provider();
    if provider.secure_random.fill(buf).is_err() {
        // Never expected; fall back to time-derived bytes rather than panic.
        let seed = Timestamp::now().as_nanosecond().to_le_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = seed[i % seed.len()] ^ (i as u8).wrapping_mul(151);
        }
    }
}

/// A random (version 4) UUID.
pub fn uuid4() -> String {
    let mut b = [0u8; 16];
    random_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A random token of `n` bytes, hex-encoded.
pub fn token(n: usize) -> String {
    let mut b = vec![0u8; n];
    random_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The 5-character suffix of a `generateName` (Kubernetes' alphabet without vowels).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = [0u8; 5];
    random_bytes(&mut b);
    b.iter()
        .map(|x| ALPHABET[usize::from(*x) % ALPHABET.len()] as char)
        .collect()
}

/// Now, as Kubernetes writes timestamps (`2024-01-02T03:04:05Z`).
pub fn now_rfc3339() -> String {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now).to_string()
}

/// Seconds since a Kubernetes timestamp (`None` when it does not parse).
pub fn seconds_since(ts: &str) -> Option<i64> {
    let t: Timestamp = ts.parse().ok()?;
    Some(Timestamp::now().as_second() - t.as_second())
}

/// Kubernetes' short human duration (`45s`, `3m`, `5h`, `2d`, `3y`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 60 * 10 {
        let m = s / 60;
        let rem = s % 60;
        if rem == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rem}s")
        }
    } else if s < 3600 * 3 {
        let m = s / 60;
        if m % 60 == 0 || m < 60 {
            format!("{m}m")
        } else {
            format!("{}h{}m", m / 60, m % 60)
        }
    } else if s < 3600 * 48 {
        let h = s / 3600;
        if h < 8 && (s / 60) % 60 != 0 {
            format!("{h}h{}m", (s / 60) % 60)
        } else {
            format!("{h}h")
        }
    } else if s < 86400 * 365 * 2 {
        format!("{}d", s / 86400)
    } else {
        format!("{}y", s / (86400 * 365))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        let u = uuid4();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_ne!(uuid4(), u);
    }

    #[test]
    fn suffix_and_tokens() {
        assert_eq!(name_suffix().len(), 5);
        assert_eq!(token(16).len(), 32);
    }

    #[test]
    fn timestamps() {
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && !now.contains('.'), "{now}");
        assert!(seconds_since(&now).is_some_and(|s| (0..5).contains(&s)));
        assert_eq!(seconds_since("garbage"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(60 * 30), "30m");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(3600 * 10), "10h");
        assert_eq!(human_duration(86400 * 3), "3d");
        assert_eq!(human_duration(-3), "0s");
    }
}
