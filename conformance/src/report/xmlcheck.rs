//! A tiny strict XML reader for the tests: elements, attributes, text,
//! entity and character references, comments, `<?..?>` and `<!DOCTYPE>`.
//! It refuses what a real parser refuses in our output (unbalanced or
//! mismatched tags, a raw `<` or `&` in text or attributes, unknown
//! entities, forbidden control characters), which is what the escaping
//! tests need to prove.

/// An element.
#[derive(Debug, Clone, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// Its direct text, references decoded.
    pub text: String,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every element below (and including) this one, depth first.
    pub fn descendants(&self) -> Vec<&Element> {
        let mut all = vec![self];
        for c in &self.children {
            all.extend(c.descendants());
        }
        all
    }

    /// All text below this element.
    pub fn all_text(&self) -> String {
        let mut t = self.text.clone();
        for c in &self.children {
            t.push_str(&c.all_text());
        }
        t
    }
}

/// Parses a document with one root element.
pub fn parse(doc: &str) -> Result<Element, String> {
    let mut p = Parser { s: doc, at: 0 };
    p.misc()?;
    let root = p.element()?;
    p.misc()?;
    if p.at != doc.len() {
        return Err(format!("content after the root element at {}", p.at));
    }
    Ok(root)
}

struct Parser<'a> {
    s: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.at..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.at = self.s.len() - trimmed.len();
    }

    fn skip_past(&mut self, end: &str) -> Result<(), String> {
        match self.rest().find(end) {
            Some(i) => {
                self.at += i + end.len();
                Ok(())
            }
            None => Err(format!("unterminated construct at {}, expected {end:?}", self.at)),
        }
    }

    /// Comments, processing instructions, doctype and whitespace.
    fn misc(&mut self) -> Result<(), String> {
        loop {
            self.skip_ws();
            if self.rest().starts_with("<?") {
                self.skip_past("?>")?;
            } else if self.rest().starts_with("<!--") {
                self.skip_past("-->")?;
            } else if self.rest().starts_with("<!DOCTYPE") || self.rest().starts_with("<!doctype") {
                self.skip_past(">")?;
            } else {
                return Ok(());
            }
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let len = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '.')))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(format!("expected a name at {}", self.at));
        }
        let name = self.rest()[..len].to_owned();
        self.at += len;
        Ok(name)
    }

    fn element(&mut self) -> Result<Element, String> {
        if !self.rest().starts_with('<') {
            return Err(format!("expected an element at {}", self.at));
        }
        self.at += 1;
        let mut el = Element {
            name: self.name()?,
            ..Element::default()
        };
        loop {
            self.skip_ws();
            if self.rest().starts_with("/>") {
                self.at += 2;
                return Ok(el);
            }
            if self.rest().starts_with('>') {
                self.at += 1;
                break;
            }
            let key = self.name()?;
            if !self.rest().starts_with('=') {
                return Err(format!("attribute {key} without a value at {}", self.at));
            }
            self.at += 1;
            let quote = self.rest().chars().next().filter(|c| *c == '"' || *c == '\'');
            let Some(quote) = quote else {
                return Err(format!("unquoted attribute {key} at {}", self.at));
            };
            self.at += 1;
            let end = self.rest().find(quote).ok_or("unterminated attribute")?;
            let raw = &self.rest()[..end];
            if raw.contains('<') {
                return Err(format!("raw < in attribute {key}"));
            }
            let value = decode(raw)?;
            self.at += end + 1;
            if el.attrs.iter().any(|(k, _)| *k == key) {
                return Err(format!("duplicate attribute {key}"));
            }
            el.attrs.push((key, value));
        }
        loop {
            let next = self
                .rest()
                .find('<')
                .ok_or_else(|| format!("<{}> is never closed", el.name))?;
            el.text.push_str(&decode(&self.rest()[..next])?);
            self.at += next;
            if self.rest().starts_with("</") {
                self.at += 2;
                let name = self.name()?;
                if name != el.name {
                    return Err(format!("</{name}> closes <{}>", el.name));
                }
                self.skip_ws();
                if !self.rest().starts_with('>') {
                    return Err(format!("bad end tag </{name}"));
                }
                self.at += 1;
                return Ok(el);
            } else if self.rest().starts_with("<!--") {
                self.skip_past("-->")?;
            } else if self.rest().starts_with("<![CDATA[") {
                let start = self.at + 9;
                self.skip_past("]]>")?;
                el.text.push_str(&self.s[start..self.at - 3]);
            } else {
                el.children.push(self.element()?);
            }
        }
    }
}

fn decode(raw: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp + 1..];
        let semi = rest.find(';').ok_or("& without ;")?;
        let entity = &rest[..semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ if entity.starts_with("#x") => char_ref(&entity[2..], 16)?,
            _ if entity.starts_with('#') => char_ref(&entity[1..], 10)?,
            _ => return Err(format!("unknown entity &{entity};")),
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    if let Some(bad) = out
        .chars()
        .find(|c| (*c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(format!("control character {:?} not allowed in XML", bad));
    }
    Ok(out)
}

fn char_ref(digits: &str, radix: u32) -> Result<char, String> {
    u32::from_str_radix(digits, radix)
        .ok()
        .and_then(char::from_u32)
        .ok_or_else(|| format!("bad character reference {digits}"))
}

#[test]
fn the_checker_refuses_broken_documents() {
    assert!(parse("<a><b></a>").is_err());
    assert!(parse("<a>x & y</a>").is_err());
    assert!(parse("<a x=\"<\"/>").is_err());
    assert!(parse("<a>\u{1b}</a>").is_err());
    assert!(parse("<a>&nbsp;</a>").is_err());
    let ok = parse("<?xml version=\"1.0\"?>\n<a k='v &amp; w'>t&#10;<b/>u</a>").unwrap();
    assert_eq!(ok.attr("k"), Some("v & w"));
    assert_eq!(ok.text, "t\nu");
    assert_eq!(ok.children[0].name, "b");
}
