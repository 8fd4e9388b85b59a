//! Builds GGUF v2/v3 files in memory: tiny random models for tests, and the valid starting point
//! that the fuzz tests corrupt. Nothing on the serving path uses it.
//!
//! The layout written is the one [`super::Gguf::parse`] reads (see the module docs there): the
//! header, the metadata in insertion order, the tensor directory with offsets relative to the
//! data section, padding to the alignment, then each tensor's bytes, each starting on an
//! alignment boundary. v2 and v3 share that layout (v3 only added big-endian files, which this
//! writer does not produce), so `version` changes nothing but the number in the header.
//!
//! The writer checks nothing about what it is given (a dtype's block size, a value's type
//! against its array's element type, a sensible `general.alignment`): tests use it to build
//! hostile files too, and the reader is what must refuse them.

use super::{Value, ValueType, DEFAULT_ALIGNMENT, MAGIC};
use crate::tensor::DType;

/// One tensor waiting to be written.
struct PendingTensor {
    name: String,
    dtype: DType,
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// An in-memory GGUF file under construction. See the module docs.
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty v3 file (alignment 32 unless a `general.alignment` key says otherwise).
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// The version number written in the header (2 and 3 share a layout; anything else makes a
    /// file the reader refuses).
    pub fn version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// Appends a metadata key/value pair. Keys are written in call order, duplicates included.
    /// `general.alignment` (any unsigned integer value that is a power of two) also sets the
    /// alignment the writer pads to.
    pub fn meta(mut self, key: &str, value: Value) -> Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Appends a tensor: `dims` in GGML order (`dims[0]` is the row length), `data` its raw
    /// bytes in the dtype's layout.
    pub fn tensor(mut self, name: &str, dtype: DType, dims: &[usize], data: Vec<u8>) -> Self {
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dtype,
            dims: dims.to_vec(),
            data,
        });
        self
    }

    /// Appends an F32 tensor holding `values`.
    pub fn tensor_f32(self, name: &str, dims: &[usize], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, DType::F32, dims, data)
    }

    /// The alignment the data section is padded to: the last `general.alignment` if it is a
    /// usable power of two, else the default. A bad value is still written, for the reader to
    /// refuse; the padding then simply follows the default.
    fn alignment(&self) -> usize {
        self.metadata
            .iter()
            .rev()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .filter(|a| a.is_power_of_two() && *a <= 1 << 20)
            .unwrap_or(DEFAULT_ALIGNMENT) as usize
    }

    /// The complete file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend_from_slice(&(value_type(value) as u32).to_le_bytes());
            put_value(&mut out, value);
        }

        // Each tensor's offset within the data section, every one on an alignment boundary.
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&(t.dtype as u32).to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = (offset + t.data.len()).next_multiple_of(align);
        }

        for t in &self.tensors {
            out.resize(out.len().next_multiple_of(align), 0);
            out.extend_from_slice(&t.data);
        }
        // A file with tensors ends where the last tensor ends; one without still needs its data
        // section to start inside the file, which it does at its (padded) end.
        if self.tensors.is_empty() {
            out.resize(out.len().next_multiple_of(align), 0);
        }
        out
    }
}

/// The type code of `v` as written before it.
fn value_type(v: &Value) -> ValueType {
    match v {
        Value::U8(_) => ValueType::U8,
        Value::I8(_) => ValueType::I8,
        Value::U16(_) => ValueType::U16,
        Value::I16(_) => ValueType::I16,
        Value::U32(_) => ValueType::U32,
        Value::I32(_) => ValueType::I32,
        Value::F32(_) => ValueType::F32,
        Value::Bool(_) => ValueType::Bool,
        Value::String(_) => ValueType::String,
        Value::Array(..) => ValueType::Array,
        Value::U64(_) => ValueType::U64,
        Value::I64(_) => ValueType::I64,
        Value::F64(_) => ValueType::F64,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The payload of `v`, without its type code (arrays carry their element type instead).
fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(et, items) => {
            out.extend_from_slice(&(*et as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{Gguf, GgufFile, ModelBytes};

    /// One value of every metadata type, arrays of each, and arrays nested three deep.
    fn every_value() -> Vec<(String, Value)> {
        use Value::*;
        let scalars = vec![
            ("u8", U8(200)),
            ("i8", I8(-100)),
            ("u16", U16(60000)),
            ("i16", I16(-30000)),
            ("u32", U32(4_000_000_000)),
            ("i32", I32(-2_000_000_000)),
            ("f32", F32(-1.5e-7)),
            ("bool.t", Bool(true)),
            ("bool.f", Bool(false)),
            ("string", String("héllo ▁wörld".into())),
            ("empty", String(std::string::String::new())),
            ("u64", U64(u64::MAX - 7)),
            ("i64", I64(i64::MIN + 3)),
            ("f64", F64(std::f64::consts::PI)),
        ];
        let mut kv: Vec<(std::string::String, Value)> = scalars
            .iter()
            .map(|(k, v)| (format!("test.{k}"), v.clone()))
            .collect();
        for (k, v) in &scalars {
            let t = value_type(v);
            kv.push((
                format!("test.array.{k}"),
                Array(t, vec![v.clone(), v.clone(), v.clone()]),
            ));
        }
        kv.push(("test.array.none".into(), Array(ValueType::U32, vec![])));
        let inner = |n: u32| Array(ValueType::U32, (0..n).map(U32).collect());
        let mid = Array(ValueType::Array, vec![inner(0), inner(1), inner(3)]);
        kv.push((
            "test.nested".into(),
            Array(ValueType::Array, vec![mid.clone(), mid]),
        ));
        kv.push((
            "test.nested.strings".into(),
            Array(
                ValueType::Array,
                vec![Array(
                    ValueType::String,
                    vec![String("a".into()), String("bc".into())],
                )],
            ),
        ));
        kv
    }

    fn build(version: u32) -> (GgufWriter, Vec<(std::string::String, Value)>) {
        let kv = every_value();
        let mut w = GgufWriter::new().version(version);
        for (k, v) in &kv {
            w = w.meta(k, v.clone());
        }
        let f32s: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 3.0).collect();
        let q8: Vec<u8> = (0..2 * 34).map(|i| i as u8).collect();
        let w = w
            .tensor_f32("a.weight", &[4, 6], &f32s)
            .tensor("b.odd", DType::F16, &[3], vec![1, 2, 3, 4, 5, 6])
            .tensor("c.q8", DType::Q8_0, &[32, 2], q8)
            .tensor_f32("d.bias", &[5], &f32s[..5]);
        (w, kv)
    }

    #[test]
    fn metadata_and_tensors_round_trip_v2_and_v3() {
        for version in [2, 3] {
            let (w, kv) = build(version);
            let bytes = w.to_bytes();
            let g = Gguf::parse(&bytes).unwrap();
            assert_eq!(g.version, version);
            assert_eq!(g.alignment, 32);
            assert_eq!(g.metadata, kv, "metadata in order, every value equal");
            for (k, v) in &kv {
                assert_eq!(g.get(k), Some(v), "{k}");
            }

            let names: Vec<&str> = g.tensors.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["a.weight", "b.odd", "c.q8", "d.bias"]);
            for t in &g.tensors {
                assert_eq!(t.offset % 32, 0, "{} aligned", t.name);
            }
            let a = g.tensor(&bytes, "a.weight").unwrap();
            assert_eq!((a.dtype, a.n_dims, a.shape), (DType::F32, 2, [4, 6, 1, 1]));
            let want: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 3.0).collect();
            assert_eq!(a.to_f32(), want);
            let b = g.tensor(&bytes, "b.odd").unwrap();
            assert_eq!((b.dtype, b.n_dims, b.shape[0]), (DType::F16, 1, 3));
            assert_eq!(b.data, [1, 2, 3, 4, 5, 6]);
            let c = g.tensor(&bytes, "c.q8").unwrap();
            assert_eq!(c.data, (0..68).map(|i| i as u8).collect::<Vec<_>>());
            assert_eq!(g.tensor(&bytes, "d.bias").unwrap().to_f32(), want[..5]);
            let d = g.tensor_info("d.bias").unwrap();
            assert_eq!(
                d.offset + d.len,
                bytes.len(),
                "the file ends where its last tensor does"
            );
        }
    }

    #[test]
    fn alignment_key_sets_the_padding() {
        let bytes = GgufWriter::new()
            .meta("general.alignment", Value::U32(64))
            .tensor_f32("x", &[3], &[1.0, 2.0, 3.0])
            .tensor_f32("y", &[1], &[4.0])
            .to_bytes();
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!(g.alignment, 64);
        assert_eq!(g.data_offset % 64, 0);
        assert_eq!(g.tensor_info("y").unwrap().offset, g.data_offset + 64);
        let file = GgufFile::from_bytes(ModelBytes::Owned(crate::gguf::AlignedBytes::copy_from(
            &bytes,
        )))
        .unwrap();
        assert_eq!(file.tensor("y").unwrap().to_f32(), [4.0]);
    }

    #[test]
    fn empty_file_parses() {
        let bytes = GgufWriter::new().to_bytes();
        let g = Gguf::parse(&bytes).unwrap();
        assert!(g.metadata.is_empty() && g.tensors.is_empty());
        assert_eq!(g.version, 3);
    }

    #[test]
    fn other_versions_are_written_and_refused() {
        let bytes = GgufWriter::new().version(1).to_bytes();
        assert_eq!(
            Gguf::parse(&bytes).unwrap_err(),
            crate::gguf::GgufError::UnsupportedVersion(1)
        );
    }
}
