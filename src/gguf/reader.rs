//! A bounds-checked little-endian cursor over the file's bytes.

use super::{GgufError, Value, ValueType, MAX_ARRAY_DEPTH};

pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N, what)?);
        Ok(a)
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Refuses `count` items of at least `min_len` bytes each when the rest of the file is too
    /// short for them: no allocation is ever sized by an unchecked count.
    pub fn check_count(&self, count: u64, min_len: u64, what: &str) -> Result<(), GgufError> {
        match count.checked_mul(min_len) {
            Some(n) if n <= self.remaining() as u64 => Ok(()),
            _ => Err(GgufError::TooLarge {
                what: what.to_string(),
                count,
                offset: self.pos,
            }),
        }
    }

    pub fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let start = self.pos;
        let len = self.u64(what)?;
        self.check_count(len, 1, what)?;
        let raw = self.bytes(len as usize, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| GgufError::BadString {
            what: what.to_string(),
            offset: start,
        })
    }

    pub fn value_type(&mut self, key: &str) -> Result<ValueType, GgufError> {
        let code = self.u32(key)?;
        ValueType::from_code(code).ok_or_else(|| GgufError::BadValueType {
            key: key.into(),
            code,
        })
    }

    pub fn value(&mut self, t: ValueType, key: &str, depth: usize) -> Result<Value, GgufError> {
        Ok(match t {
            ValueType::U8 => Value::U8(self.array::<1>(key)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(key)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            ValueType::U32 => Value::U32(self.u32(key)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            ValueType::Bool => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(GgufError::BadValue {
                        key: key.to_string(),
                        why: format!("bool value {b} is neither 0 nor 1"),
                    })
                }
            },
            ValueType::String => Value::String(self.string(key)?),
            ValueType::U64 => Value::U64(self.u64(key)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestedTooDeep {
                        key: key.to_string(),
                    });
                }
                let et = self.value_type(key)?;
                let n = self.u64(key)?;
                self.check_count(n, et.min_encoded_len(), key)?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(et, key, depth + 1)?);
                }
                Value::Array(et, items)
            }
        })
    }
}
