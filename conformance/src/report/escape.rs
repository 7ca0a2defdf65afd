//! Escaping for XML and HTML: `&`, `<`, `>`, quotes, and the characters XML
//! 1.0 cannot carry at all (control characters from logs) shown as `\u{..}`.

/// Text content (element bodies).
pub fn text(s: &str) -> String {
    escape(s, false)
}

/// Attribute values (double-quoted); newlines and tabs are kept as
/// character references so they survive attribute normalisation.
pub fn attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, in_attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' if in_attr => out.push_str("&#10;"),
            '\r' if in_attr => out.push_str("&#13;"),
            '\t' if in_attr => out.push_str("&#9;"),
            '\n' | '\r' | '\t' => out.push(c),
            c if allowed(c) => out.push(c),
            c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    out
}

/// Whether XML 1.0 allows `c` (Char production, minus the whitespace handled above).
fn allowed(c: char) -> bool {
    matches!(u32::from(c), 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_controls() {
        assert_eq!(text("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
        assert_eq!(text("x\ny\u{1b}[0m"), "x\ny\\u{1b}[0m");
        assert_eq!(attr("x\ny\tz"), "x&#10;y&#9;z");
        assert_eq!(text("ünïcode ✓"), "ünïcode ✓");
    }
}
