//! GGUF v2/v3 reader over a byte slice (a memory-mapped file, or bytes compiled into the binary).
//!
//! Layout: magic `GGUF`, u32 version, u64 tensor count, u64 metadata count; the metadata
//! key/value pairs; the tensor directory (name, dims, GGML type, offset); padding to
//! `general.alignment` (32 by default); the tensor data. Every count and length is checked
//! against what is left of the file before anything is allocated for it, so a hostile file gets
//! a typed error, never a panic, an overflow or a huge allocation.

mod error;
mod file;
mod reader;
mod value;
pub mod writer;

pub use error::GgufError;
pub use file::{AlignedBytes, GgufFile, ModelBytes};
pub use value::{Value, ValueType};

use crate::tensor::{DType, TensorView};
use reader::Reader;
use std::collections::HashMap;

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deeper nesting of arrays than this is refused (the recursion would otherwise be the file's
/// to choose).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// GGML tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;

/// One entry of the tensor directory. `offset` is absolute (from the start of the file).
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: [usize; 4],
    pub n_dims: usize,
    pub offset: usize,
    pub len: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The dims that the file lists (GGML order).
    pub fn dims(&self) -> &[usize] {
        &self.shape[..self.n_dims]
    }
}

/// A parsed GGUF header: metadata and tensor directory. It owns its data and borrows nothing,
/// so it can live beside the bytes it was read from (see [`GgufFile`]).
#[derive(Clone, Debug)]
pub struct Gguf {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: usize,
    meta_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl Gguf {
    /// Parses and validates the header of a GGUF file held in `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
        let mut r = Reader::new(bytes);
        let magic = r.bytes(4, "magic")?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic([
                magic[0], magic[1], magic[2], magic[3],
            ]));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // A key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor entry at
        // least 8 + 4 + 4 + 8.
        r.check_count(n_kv, 13, "metadata count")?;

        let mut metadata = Vec::new();
        let mut meta_index = HashMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let vtype = r.value_type(&key)?;
            let value = r.value(vtype, &key, 0)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(GgufError::BadAlignment(v.to_string())),
            },
        };

        r.check_count(n_tensors, 24, "tensor count")?;
        let mut raw = Vec::new();
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::BadTensor {
                    name,
                    why: format!("{n_dims} dimensions"),
                });
            }
            let mut shape = [1usize; 4];
            for d in shape.iter_mut().take(n_dims) {
                let dim = r.u64(&name)?;
                *d = usize::try_from(dim).map_err(|_| GgufError::BadTensor {
                    name: name.clone(),
                    why: format!("dimension {dim} too large"),
                })?;
            }
            let type_id = r.u32(&name)?;
            let offset = r.u64(&name)?;
            let dtype = DType::from_ggml(type_id).ok_or_else(|| GgufError::UnsupportedType {
                name: name.clone(),
                type_id,
            })?;
            raw.push((name, dtype, shape, n_dims, offset));
        }

        let data_offset = align_up(r.pos() as u64, alignment)
            .filter(|&o| o <= bytes.len() as u64)
            .ok_or(GgufError::Truncated {
                what: "tensor data".into(),
                offset: r.pos(),
            })? as usize;
        let data_len = (bytes.len() - data_offset) as u64;

        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::new();
        for (name, dtype, shape, n_dims, offset) in raw {
            let bad = |why: String| GgufError::BadTensor {
                name: name.clone(),
                why,
            };
            let n: u64 = shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
                .ok_or_else(|| bad("element count overflows".into()))?;
            // A zero dim would make that product 0 whatever the others are, hiding dims whose
            // partial products (the row count, dims[1..]) overflow, or a row count of 2^60 over
            // empty rows for a loop to walk. No model has an empty weight: refuse it.
            if shape[..n_dims].contains(&0) {
                return Err(bad(format!(
                    "dimensions {:?} include a 0",
                    &shape[..n_dims]
                )));
            }
            if shape[0] % dtype.block().0 != 0 {
                return Err(bad(format!(
                    "row of {} elements is not a whole number of {dtype} blocks",
                    shape[0]
                )));
            }
            let len = dtype
                .bytes_for(n)
                .ok_or_else(|| bad("size overflows".into()))?;
            if offset % alignment != 0 {
                return Err(bad(format!("offset {offset} not aligned to {alignment}")));
            }
            match offset.checked_add(len) {
                Some(end) if end <= data_len => {}
                _ => {
                    return Err(bad(format!(
                        "data [{offset}, +{len}) runs past the end of the file ({data_len} bytes of data)"
                    )))
                }
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor(name));
            }
            tensors.push(TensorInfo {
                name,
                dtype,
                shape,
                n_dims,
                offset: data_offset + offset as usize,
                len: len as usize,
            });
        }

        Ok(Gguf {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            meta_index,
            tensor_index,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Option<&[Value]> {
        self.get(key).and_then(Value::as_array)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// A view of tensor `name` over `bytes`, the same bytes this header was parsed from.
    pub fn tensor<'a>(&self, bytes: &'a [u8], name: &str) -> Option<TensorView<'a>> {
        let t = self.tensor_info(name)?;
        Some(TensorView {
            dtype: t.dtype,
            shape: t.shape,
            n_dims: t.n_dims,
            data: bytes.get(t.offset..t.offset.checked_add(t.len)?)?,
        })
    }

    /// Total number of weights in the file.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_elements() as u64).sum()
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|v| v / a * a)
}
