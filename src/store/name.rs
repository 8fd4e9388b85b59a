//! Model names as Ollama parses them: `[scheme://][host/][namespace/]model[:tag]`.
//!
//! Every part is checked against Ollama's character and length rules before the name can become
//! a path, so a part is never empty, never `.` or `..`, and never holds a separator: the four
//! parts are safe to join under a store root as they are.

use super::{ModelName, StoreError};

/// The defaults Ollama fills in for missing parts.
pub const DEFAULT_HOST: &str = "registry.ollama.ai";
pub const DEFAULT_NAMESPACE: &str = "library";
pub const DEFAULT_TAG: &str = "latest";

/// Ollama's limits: a host may be a long DNS name (with a port), the other parts 80 bytes.
const MAX_HOST_LEN: usize = 350;
const MAX_PART_LEN: usize = 80;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Host,
    Namespace,
    Model,
    Tag,
}

impl Part {
    fn label(self) -> &'static str {
        match self {
            Part::Host => "host",
            Part::Namespace => "namespace",
            Part::Model => "model",
            Part::Tag => "tag",
        }
    }

    fn max_len(self) -> usize {
        if self == Part::Host {
            MAX_HOST_LEN
        } else {
            MAX_PART_LEN
        }
    }
}

/// Checks one part: starts with an ASCII letter, digit or `_`; continues with those or `-`, `_`,
/// `.` (not in a namespace) and `:` (only in a host, for the port).
fn check_part(kind: Part, s: &str, whole: &str) -> Result<(), StoreError> {
    let bad = |why: String| Err(StoreError::InvalidName(format!("{whole:?}: {why}")));
    if s.is_empty() {
        return bad(format!("the {} is empty", kind.label()));
    }
    if s.len() > kind.max_len() {
        return bad(format!(
            "the {} is longer than {} characters",
            kind.label(),
            kind.max_len()
        ));
    }
    for (i, c) in s.chars().enumerate() {
        let ok = match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => true,
            _ if i == 0 => false,
            '-' => true,
            '.' => kind != Part::Namespace,
            ':' => kind == Part::Host,
            _ => false,
        };
        if !ok {
            let what = if i == 0 { "start with" } else { "contain" };
            return bad(format!("a {} may not {what} {c:?}", kind.label()));
        }
    }
    Ok(())
}

pub(super) fn parse(s: &str) -> Result<ModelName, StoreError> {
    if s.len() > MAX_HOST_LEN + 3 * (MAX_PART_LEN + 1) + "https://".len() {
        let shown: String = s.chars().take(40).collect();
        return Err(StoreError::InvalidName(format!(
            "{shown:?}…: the name is too long"
        )));
    }
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);

    // A tag follows the last ':' only when it comes after the last '/': otherwise the ':' is a
    // host's port (`localhost:5000/ns/model`).
    let (path, tag) = match (rest.rfind(':'), rest.rfind('/')) {
        (Some(c), slash) if slash.is_none_or(|sl| c > sl) => (&rest[..c], Some(&rest[c + 1..])),
        _ => (rest, None),
    };
    let mut parts = path.rsplitn(3, '/');
    let model = parts.next().unwrap_or("");
    let namespace = parts.next();
    let host = parts.next();

    // A host that still holds a '/' (more than three path parts) fails the character check.
    check_part(Part::Model, model, s)?;
    if let Some(ns) = namespace {
        check_part(Part::Namespace, ns, s)?;
    }
    if let Some(h) = host {
        check_part(Part::Host, h, s)?;
    }
    if let Some(t) = tag {
        check_part(Part::Tag, t, s)?;
    }
    Ok(ModelName {
        host: host.unwrap_or(DEFAULT_HOST).to_string(),
        namespace: namespace.unwrap_or(DEFAULT_NAMESPACE).to_string(),
        model: model.to_string(),
        tag: tag.unwrap_or(DEFAULT_TAG).to_string(),
    })
}

/// Ollama's `DisplayShortest`: drop the default host, then the default namespace, from the left.
pub(super) fn display_short(n: &ModelName) -> String {
    let default_host = n.host.eq_ignore_ascii_case(DEFAULT_HOST);
    let default_ns = n.namespace.eq_ignore_ascii_case(DEFAULT_NAMESPACE);
    match (default_host, default_ns) {
        (true, true) => format!("{}:{}", n.model, n.tag),
        (true, false) => format!("{}/{}:{}", n.namespace, n.model, n.tag),
        _ => format!("{}/{}/{}:{}", n.host, n.namespace, n.model, n.tag),
    }
}

impl ModelName {
    /// The four path parts, in order: host, namespace, model, tag.
    pub fn parts(&self) -> [&str; 4] {
        [&self.host, &self.namespace, &self.model, &self.tag]
    }

    /// Ollama's case-insensitive equality (`Mistral` and `mistral` are the same model).
    pub fn eq_fold(&self, other: &ModelName) -> bool {
        self.parts()
            .iter()
            .zip(other.parts())
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
    }

    /// The name in lower case, the way current Ollama versions lay it out on disk.
    pub fn to_lowercase(&self) -> ModelName {
        ModelName {
            host: self.host.to_ascii_lowercase(),
            namespace: self.namespace.to_ascii_lowercase(),
            model: self.model.to_ascii_lowercase(),
            tag: self.tag.to_ascii_lowercase(),
        }
    }
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&display_short(self))
    }
}
