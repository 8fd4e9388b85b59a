//! What can be wrong with a GGUF file.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum GgufError {
    BadMagic([u8; 4]),
    UnsupportedVersion(u32),
    /// The file ends inside `what`, at byte `offset`.
    Truncated {
        what: String,
        offset: usize,
    },
    /// A count or length larger than the rest of the file could hold.
    TooLarge {
        what: String,
        count: u64,
        offset: usize,
    },
    BadValueType {
        key: String,
        code: u32,
    },
    BadString {
        what: String,
        offset: usize,
    },
    /// A value that its type does not allow (a bool other than 0 or 1).
    BadValue {
        key: String,
        why: String,
    },
    NestedTooDeep {
        key: String,
    },
    DuplicateKey(String),
    DuplicateTensor(String),
    BadAlignment(String),
    UnsupportedType {
        name: String,
        type_id: u32,
    },
    BadTensor {
        name: String,
        why: String,
    },
    Io(String),
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GgufError::*;
        match self {
            BadMagic(m) => write!(f, "not a GGUF file (magic {m:02x?}, expected \"GGUF\")"),
            UnsupportedVersion(v) => write!(f, "unsupported GGUF version {v} (2 and 3 are read)"),
            Truncated { what, offset } => write!(f, "file truncated in {what} at byte {offset}"),
            TooLarge {
                what,
                count,
                offset,
            } => {
                write!(
                    f,
                    "{what} of {count} at byte {offset} is larger than the file"
                )
            }
            BadValueType { key, code } => write!(f, "metadata {key:?}: unknown value type {code}"),
            BadString { what, offset } => write!(f, "{what} at byte {offset} is not UTF-8"),
            BadValue { key, why } => write!(f, "metadata {key:?}: {why}"),
            NestedTooDeep { key } => write!(f, "metadata {key:?}: arrays nested too deep"),
            DuplicateKey(k) => write!(f, "metadata key {k:?} appears twice"),
            DuplicateTensor(n) => write!(f, "tensor {n:?} appears twice"),
            BadAlignment(v) => write!(f, "general.alignment {v} is not a power of two"),
            UnsupportedType { name, type_id } => {
                write!(f, "tensor {name:?}: unsupported GGML type {type_id}")
            }
            BadTensor { name, why } => write!(f, "tensor {name:?}: {why}"),
            Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GgufError {}
