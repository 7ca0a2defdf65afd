//! The conflist splice as properties over generated texts, not cases: for
//! any valid conflist (or single-plugin `.conf`) in any formatting, install
//! gives valid JSON holding the original plugins and our entry, keeps every
//! byte outside the inserted span, is idempotent, and uninstall restores the
//! original bytes. Text that is not strict JSON, or not a conflist, is
//! refused, never edited.
//!
//! The oracle is serde_json's reading of the generated text (Go's reading:
//! escapes decoded, last duplicate key wins), so the generator may produce
//! anything JSON allows without modelling its meaning.

use istio_cni_agent::install::conflist::{self, Shape};
use istio_cni_agent::install::entry::{self, Empty, Entry};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError};
use serde_json::Value;

type Checked = Result<(), TestCaseError>;

/// A JSON value as spelled in a file: scalars carry their literal text.
#[derive(Debug, Clone)]
enum Json {
    Lit(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// How a generated document is laid out.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Compact,
    /// Consistent indentation; containers below the second level may be inline.
    Pretty {
        unit: &'static str,
        eol: &'static str,
        comma_first: bool,
    },
    /// Random whitespace (spaces, tabs, `\n`, `\r\n`) in every gap, commas
    /// anywhere in theirs.
    Chaos,
}

/// A generated text and where it may be broken for the negative property.
#[derive(Debug, Clone)]
struct Doc {
    text: String,
    /// Byte offsets between two tokens.
    gaps: Vec<usize>,
    /// Byte offsets right after the last item of a non-empty container.
    ends: Vec<usize>,
}

struct Printer {
    layout: Layout,
    seed: u64,
    out: String,
    gaps: Vec<usize>,
    ends: Vec<usize>,
}

const CHAOS_WS: [&str; 8] = [" ", "  ", "\t", "\n", "\r\n", "\n    ", "\r\n\t", " \t"];

impl Printer {
    /// splitmix64: the layout's choices, reproducible from the case's seed.
    fn next(&mut self) -> u64 {
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// A gap between tokens: `fixed` unless the layout is chaos.
    fn gap(&mut self, fixed: &str) {
        self.gaps.push(self.out.len());
        if let Layout::Chaos = self.layout {
            for _ in 0..self.next() % 4 {
                let ws = CHAOS_WS[(self.next() % CHAOS_WS.len() as u64) as usize];
                self.out.push_str(ws);
            }
        } else {
            self.out.push_str(fixed);
        }
    }

    fn line(&self, depth: usize) -> String {
        match self.layout {
            Layout::Pretty { unit, eol, .. } => format!("{eol}{}", unit.repeat(depth)),
            _ => String::new(),
        }
    }

    fn document(mut self, root: &Json) -> Doc {
        let eol = match self.layout {
            Layout::Pretty { eol, .. } => eol,
            _ => "\n",
        };
        let lead = if self.chance(10) { eol } else { "" };
        self.gap(lead);
        self.value(root, 0);
        let trail = if self.chance(70) { eol } else { "" };
        self.gap(trail);
        Doc {
            text: self.out,
            gaps: self.gaps,
            ends: self.ends,
        }
    }

    fn value(&mut self, v: &Json, depth: usize) {
        match v {
            Json::Lit(s) => self.out.push_str(s),
            Json::Arr(items) => self.container(['[', ']'], items.len(), depth, |p, i| p.value(&items[i], depth + 1)),
            Json::Obj(props) => self.container(['{', '}'], props.len(), depth, |p, i| {
                let (key, value) = &props[i];
                p.out.push_str(key);
                p.gap("");
                p.out.push(':');
                let space = if let Layout::Pretty { .. } = p.layout { " " } else { "" };
                p.gap(space);
                p.value(value, depth + 1);
            }),
        }
    }

    fn container(&mut self, [open, close]: [char; 2], n: usize, depth: usize, mut item: impl FnMut(&mut Self, usize)) {
        self.out.push(open);
        if n == 0 {
            let inside = match self.next() % 4 {
                0 => self.line(depth),
                1 => " ".into(),
                2 => format!("{}{}", self.line(depth + 1), self.line(depth)),
                _ => String::new(),
            };
            self.gap(&inside);
            self.out.push(close);
            return;
        }
        let inline = match self.layout {
            Layout::Pretty { .. } => depth >= 2 && self.chance(40),
            _ => true,
        };
        let comma_first = match self.layout {
            Layout::Pretty { comma_first, .. } => comma_first,
            Layout::Chaos => self.chance(50),
            Layout::Compact => false,
        };
        let (inner, outer) = if inline {
            (String::new(), String::new())
        } else {
            (self.line(depth + 1), self.line(depth))
        };
        for i in 0..n {
            if i == 0 {
                self.gap(&inner);
            } else if comma_first {
                self.gap(&inner);
                self.out.push(',');
                self.gap(if inline { " " } else { "" });
            } else {
                self.gap("");
                self.out.push(',');
                self.gap(if inline { " " } else { &inner });
            }
            item(self, i);
        }
        self.ends.push(self.out.len());
        self.gap(&outer);
        self.out.push(close);
    }
}

/// A string literal for `s`, each character spelled raw or escaped as
/// `how` says (short escapes, `\uXXXX` in either case, surrogate pairs).
fn spell(s: &str, how: &[u8]) -> String {
    let mut out = String::from('"');
    for (c, h) in s.chars().zip(how.iter().cycle()) {
        let escape = |upper: bool| {
            let mut units = [0u16; 2];
            c.encode_utf16(&mut units)
                .iter()
                .map(|u| {
                    if upper {
                        format!("\\u{u:04X}")
                    } else {
                        format!("\\u{u:04x}")
                    }
                })
                .collect::<String>()
        };
        match (c, h % 4) {
            ('"', 0 | 1) => out.push_str("\\\""),
            ('\\', 0 | 1) => out.push_str("\\\\"),
            ('\n', 0 | 1) => out.push_str("\\n"),
            ('\t', 0 | 1) => out.push_str("\\t"),
            ('/', 1) => out.push_str("\\/"),
            (_, 2) => out.push_str(&escape(false)),
            (_, 3) => out.push_str(&escape(true)),
            (c, _) if c < ' ' => out.push_str(&escape(false)),
            (c, _) => out.push(c),
        }
    }
    out.push('"');
    out
}

fn spelled(s: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (s, prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(s, how)| spell(&s, &how))
}

fn spelled_word(words: &'static [&'static str]) -> impl Strategy<Value = String> {
    spelled(select(words).prop_map(String::from))
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9./_ -]{0,10}",
        1 => "[a-zé\u{1F600}\"\\\\/\\n\\t\\x01]{0,6}",
    ]
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "10",
    "1e3",
    "-0.5",
    "1.50E+3",
    "2e-2",
    "-7",
    "12345678901234567890123",
];

fn value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        select(&["null", "true", "false"][..]).prop_map(|s| Json::Lit(s.into())),
        select(NUMBERS).prop_map(|s| Json::Lit(s.into())),
        spelled(text()).prop_map(Json::Lit),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Arr),
            prop::collection::vec((extra_key(), inner), 0..4).prop_map(Json::Obj),
        ]
    })
}

fn extra_key() -> impl Strategy<Value = String> {
    spelled_word(&[
        "ipam",
        "mtu",
        "capabilities",
        "log_level",
        "subnet",
        "é",
        "",
        "a\"b",
        "type",
        "plugins",
    ])
}

const TYPES: &[&str] = &[
    "ptp",
    "bridge",
    "portmap",
    "bandwidth",
    "calico",
    "istio-cni",
    "istio-cni",
    "Istio-cni",
    "istio-cnix",
];

fn shuffled(props: Vec<(String, Json)>) -> impl Strategy<Value = Json> {
    Just(props).prop_shuffle().prop_map(Json::Obj)
}

/// A plugin object: a `type` most of the time (istio-cni among them),
/// extra keys with nested values, sometimes a second `type`.
fn plugin() -> impl Strategy<Value = Json> {
    (
        prop::option::weighted(0.9, (spelled_word(&["type"]), spelled_word(TYPES))),
        prop::option::weighted(0.1, (spelled_word(&["type"]), spelled_word(TYPES))),
        prop::collection::vec((extra_key(), value()), 0..4),
    )
        .prop_flat_map(|(ty, second, mut props)| {
            let typed = ty.into_iter().chain(second).map(|(k, v)| (k, Json::Lit(v)));
            props.extend(typed);
            shuffled(props)
        })
}

const VERSIONS: &[&str] = &["0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "", "1.0", "x.y.z"];
const NAMES: &[&str] = &["k8s-pod-network", "mynet", "my net", "a_b", "", "x.y", "é"];

/// The keys every config may have: cniVersion and name (either may be
/// repeated or not a string), and extra keys.
fn common_keys() -> impl Strategy<Value = Vec<(String, Json)>> {
    let version = prop_oneof![
        4 => spelled_word(VERSIONS).prop_map(Json::Lit),
        1 => value(),
    ];
    let name = prop_oneof![
        4 => spelled_word(NAMES).prop_map(Json::Lit),
        1 => value(),
    ];
    let top_key = spelled_word(&["ipam", "mtu", "dns", "disableCheck", "é", ""]);
    (
        prop::collection::vec((spelled_word(&["cniVersion"]), version), 0..3),
        prop::collection::vec((spelled_word(&["name"]), name), 0..3),
        prop::collection::vec((top_key, value()), 0..3),
    )
        .prop_map(|(a, b, c)| a.into_iter().chain(b).chain(c).collect())
}

/// A conflist; the real `plugins` comes after any earlier duplicate (a
/// decoy holding anything), as only the last counts.
fn conflist_with(plugins: impl Strategy<Value = Json>) -> impl Strategy<Value = Json> {
    (
        common_keys(),
        prop::option::weighted(0.15, (spelled_word(&["plugins"]), value())),
        spelled_word(&["plugins"]),
        plugins,
    )
        .prop_flat_map(|(mut props, decoy, key, plugins)| {
            props.extend(decoy);
            (Just(props).prop_shuffle(), Just((key, plugins)), any::<Index>())
        })
        .prop_map(|(mut props, real, at)| {
            let decoy = props.iter().rposition(|(k, _)| key_is(k, "plugins"));
            let from = decoy.map_or(0, |d| d + 1);
            let at = from + at.index(props.len() - from + 1);
            props.insert(at, real);
            Json::Obj(props)
        })
}

fn conflist() -> impl Strategy<Value = Json> {
    let plugins = prop_oneof![
        1 => Just(Vec::new()),
        2 => prop::collection::vec(plugin(), 1..2),
        4 => prop::collection::vec(plugin(), 2..6),
    ];
    conflist_with(plugins.prop_map(Json::Arr))
}

/// Conflists whose `plugins` is not a list of objects.
fn bad_conflist() -> impl Strategy<Value = Json> {
    let plugins = prop_oneof![
        value().prop_filter("not an array", |v| !matches!(v, Json::Arr(_))),
        (prop::collection::vec(plugin(), 0..3), value(), any::<Index>())
            .prop_filter("a non-object", |(_, v, _)| !matches!(v, Json::Obj(_)))
            .prop_map(|(mut list, v, at)| {
                list.insert(at.index(list.len() + 1), v);
                Json::Arr(list)
            }),
    ];
    conflist_with(plugins)
}

/// A single-plugin `.conf`: a top-level `type`.
fn single() -> impl Strategy<Value = Json> {
    (spelled_word(&["type"]), spelled_word(TYPES), common_keys()).prop_flat_map(|(key, ty, mut props)| {
        props.push((key, Json::Lit(ty)));
        shuffled(props)
    })
}

/// Whether a spelled key decodes to `name`.
fn key_is(spelled: &str, name: &str) -> bool {
    serde_json::from_str::<String>(spelled).is_ok_and(|k| k == name)
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        1 => Just(Layout::Compact),
        3 => (select(&["  ", "    ", "\t", " "][..]), select(&["\n", "\r\n"][..]), any::<bool>())
            .prop_map(|(unit, eol, comma_first)| Layout::Pretty { unit, eol, comma_first }),
        3 => Just(Layout::Chaos),
    ]
}

fn doc(root: impl Strategy<Value = Json>) -> impl Strategy<Value = Doc> {
    (root, layout(), any::<u64>()).prop_map(|(root, layout, seed)| {
        Printer {
            layout,
            seed,
            out: String::new(),
            gaps: Vec::new(),
            ends: Vec::new(),
        }
        .document(&root)
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        select(&["info", "debug"][..]),
        prop::option::of(prop::collection::vec("[a-z]{1,8}", 1..3)),
        any::<[bool; 4]>(),
        select(&["istio-system", "kube-système"][..]),
    )
        .prop_map(|(level, exclude, [ambient, nft, retry, status], ns)| Entry {
            cni_version: None,
            name: entry::PLUGIN_TYPE.into(),
            plugin_type: entry::PLUGIN_TYPE.into(),
            ipam: Empty {},
            dns: Empty {},
            plugin_log_level: level.into(),
            cni_agent_run_dir: "/var/run/istio-cni".into(),
            ambient_enabled: ambient,
            enablement_selectors: Vec::new(),
            exclude_namespaces: exclude,
            pod_namespace: ns.into(),
            native_nftables: nft,
            enable_ambient_detection_retry: retry,
            status_check: status,
        })
}

fn parsed(text: &str) -> Result<(Value, Shape), TestCaseError> {
    conflist::parse(text).map_err(|e| TestCaseError::fail(format!("{e}: {text:?}")))
}

fn ok<T>(r: Result<T, String>, what: &str, text: &str) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what} failed: {e}: {text:?}")))
}

/// Whether `short` is `long` with some bytes left out.
fn is_subsequence(short: &[u8], long: &[u8]) -> bool {
    let mut rest = long.iter();
    short.iter().all(|b| rest.any(|c| c == b))
}

/// Properties 1–4 for a conflist holding anything, istio-cni entries included.
fn check_list(text: &str, ours: &Entry) -> Checked {
    let (original, _) = parsed(text)?;
    let theirs: Vec<Value> = ok(conflist::plugins(&original).cloned(), "plugins", text)?
        .into_iter()
        .filter(|p| !entry::is_ours(p))
        .collect();
    let with_list = |mut list: Vec<Value>| {
        let mut v = original.clone();
        v["plugins"] = Value::Array(std::mem::take(&mut list));
        v
    };
    let count = conflist::plugins(&original).map_or(0, Vec::len) - theirs.len();

    // Removal: only istio-cni entries go, every other byte stays in order.
    let (without, removed) = ok(conflist::remove_ours(text), "remove_ours", text)?;
    prop_assert_eq!(removed, count, "{:?}", text);
    if count == 0 {
        prop_assert_eq!(&without, text);
    }
    prop_assert!(is_subsequence(without.as_bytes(), text.as_bytes()), "{:?}", without);
    prop_assert_eq!(parsed(&without)?.0, with_list(theirs.clone()), "{:?}", without);

    // 1: valid, the original plugins then exactly our entry.
    let out = ok(conflist::insert(text, ours), "insert", text)?;
    let (value, shape) = parsed(&out)?;
    prop_assert_eq!(shape, Shape::List);
    let mut want = theirs;
    want.push(ours.to_value());
    prop_assert_eq!(value, with_list(want), "{:?}", out);

    // 2: out = prefix + inserted + suffix with prefix + suffix = without.
    let (o, w) = (out.as_bytes(), without.as_bytes());
    let k = o.iter().zip(w).take_while(|(a, b)| a == b).count();
    prop_assert!(o.len() > w.len() && o.ends_with(&w[k..]), "{:?}", out);
    let inserted =
        std::str::from_utf8(&o[k..o.len() - (w.len() - k)]).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let bare = inserted.trim_matches([' ', '\t', '\r', '\n', ',']);
    prop_assert_eq!(
        serde_json::from_str::<Value>(bare).ok(),
        Some(ours.to_value()),
        "{:?}",
        inserted
    );

    // 3: installing twice is installing once.
    prop_assert_eq!(ok(conflist::insert(&out, ours), "insert twice", &out)?, out.clone());

    // 4: uninstall gives back the text without istio-cni entries: the
    // original bytes when it had none.
    prop_assert_eq!(ok(conflist::remove_ours(&out), "remove", &out)?, (without, 1));
    Ok(())
}

/// Whether a CNI version chains (0.3.0 or later), as the wrap decides.
fn chains(v: &str) -> bool {
    let parts: Vec<Option<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
    matches!(parts[..], [Some(major), Some(minor), Some(_)] if (major, minor) >= (0, 3))
}

/// Property 5: a single plugin is wrapped into a list holding its text
/// verbatim and our entry, idempotently.
fn check_single(text: &str, ours: &Entry) -> Checked {
    let (original, _) = parsed(text)?;
    if entry::is_ours(&original) {
        return refused(conflist::insert(text, ours), "config itself", text);
    }
    let out = ok(conflist::insert(text, ours), "insert", text)?;
    let body = text.trim_matches([' ', '\t', '\r', '\n']);
    let (lead, trail) = text.split_at(text.find(body).unwrap_or(0));
    let trail = &trail[body.len()..];
    prop_assert!(
        out.starts_with(lead) && out.ends_with(trail) && out.contains(body),
        "{:?}",
        out
    );

    let (value, shape) = parsed(&out)?;
    prop_assert_eq!(shape, Shape::List);
    let list = ok(conflist::plugins(&value), "plugins", &out)?;
    prop_assert_eq!(list, &vec![original.clone(), ours.to_value()], "{:?}", out);
    let version = original["cniVersion"].as_str().filter(|v| chains(v)).unwrap_or("0.3.1");
    prop_assert_eq!(value["cniVersion"].as_str(), Some(version), "{:?}", out);
    let name = original["name"]
        .as_str()
        .filter(|n| istio_cni::cni::config::valid_name(n))
        .unwrap_or("k8s-pod-network");
    prop_assert_eq!(value["name"].as_str(), Some(name), "{:?}", out);

    prop_assert_eq!(ok(conflist::insert(&out, ours), "insert twice", &out)?, out.clone());
    let (without, removed) = ok(conflist::remove_ours(&out), "remove", &out)?;
    prop_assert_eq!(removed, 1);
    let (rest, _) = parsed(&without)?;
    prop_assert_eq!(
        ok(conflist::plugins(&rest), "plugins", &without)?,
        &vec![original],
        "{:?}",
        without
    );
    Ok(())
}

/// The text is refused with an error saying `why`.
fn refused<T: std::fmt::Debug>(r: Result<T, String>, why: &str, text: &str) -> Checked {
    match r {
        Err(e) if e.contains(why) => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "want an error with {why:?}, got {other:?}: {text:?}"
        ))),
    }
}

fn check(text: &str, ours: &Entry) -> Checked {
    match parsed(text)?.1 {
        Shape::List => check_list(text, ours),
        Shape::Single => check_single(text, ours),
    }
}

/// What Go's decoder refuses between two tokens: jsonc comments, Unicode
/// and other non-JSON whitespace.
const NOT_JSON: &[&str] = &[
    "// a comment\n",
    "/* a comment */",
    "#",
    "\u{a0}",
    "\u{c}",
    "\u{b}",
    "\u{feff}",
    "\u{2028}",
];

/// Thousands of cases each, in seconds: the default ChaCha generator
/// dominates the run time in a debug build, and needs no cryptographic
/// quality here.
fn config(cases: u32) -> Config {
    Config {
        rng_algorithm: RngAlgorithm::XorShift,
        // A failure prints its minimal input; it belongs in conflist.rs's
        // unit tests, readable, rather than as a seed file.
        failure_persistence: None,
        ..Config::with_cases(cases)
    }
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn conflists_splice_exactly(doc in doc(conflist()), ours in entry()) {
        check(&doc.text, &ours)?;
    }

}

proptest! {
    #![proptest_config(config(2500))]

    #[test]
    fn single_confs_wrap_exactly(doc in doc(single()), ours in entry()) {
        check(&doc.text, &ours)?;
    }

    #[test]
    fn broken_json_is_refused_not_edited(
        doc in doc(prop_oneof![conflist(), single()]),
        piece in select(NOT_JSON),
        comma in any::<bool>(),
        at in any::<Index>(),
        ours in entry(),
    ) {
        let mut text = doc.text.clone();
        if comma && !doc.ends.is_empty() {
            // A trailing comma: jsonc allows it, JSON does not.
            text.insert(doc.ends[at.index(doc.ends.len())], ',');
        } else {
            text.insert_str(doc.gaps[at.index(doc.gaps.len())], piece);
        }
        refused(conflist::insert(&text, &ours), "not valid JSON", &text)?;
        refused(conflist::remove_ours(&text), "not valid JSON", &text)?;
    }

    #[test]
    fn lists_of_non_plugins_are_refused(doc in doc(bad_conflist()), ours in entry()) {
        refused(conflist::insert(&doc.text, &ours), "error reading plugin list", &doc.text)?;
        refused(conflist::remove_ours(&doc.text), "error reading plugin list", &doc.text)?;
    }
}
