//! The GGUF reader never panics, never allocates out of proportion to its input, and every
//! tensor view of a file it accepts lies inside the file's bytes.
//!
//! Starting from a valid file built with `GgufWriter`: (a) every truncation, (b) random byte
//! flips and huge values written over its counts and lengths, (c) random bytes, and (d) a list
//! of specific hostile files, each with the error it must give.

use proptest::prelude::*;
use quiver::gguf::writer::GgufWriter;
use quiver::gguf::{Gguf, GgufError, Value, ValueType};
use quiver::tensor::DType;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// ---------------------------------------------------------------------------------------------
// The largest single allocation made on this thread, so a parse can be checked for allocations
// sized by a count the file chose rather than by its length.

struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

fn note(size: usize) {
    // `try_with`: the thread-local may already be gone while a thread shuts down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Parses `bytes`, failing the test if any single allocation made while parsing exceeds a small
/// multiple of the input (a metadata value takes at least one byte in the file and at most a few
/// dozen in memory), and checking the invariants of any header it accepts.
fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
    LARGEST.with(|l| l.set(0));
    let result = Gguf::parse(bytes);
    let largest = LARGEST.with(|l| l.get());
    let bound = 64 * bytes.len() + 4096;
    assert!(
        largest <= bound,
        "parse of {} bytes allocated {largest} bytes at once",
        bytes.len()
    );
    if let Ok(g) = &result {
        check_views(g, bytes);
    }
    result
}

/// Every tensor of an accepted file has a view inside `bytes` whose size agrees with its shape
/// and dtype, and whose shape arithmetic cannot overflow.
fn check_views(g: &Gguf, bytes: &[u8]) {
    let range = bytes.as_ptr_range();
    assert!(g.data_offset <= bytes.len());
    for t in &g.tensors {
        let v = g
            .tensor(bytes, &t.name)
            .expect("a listed tensor has a view");
        let vr = v.data.as_ptr_range();
        assert!(
            range.start <= vr.start && vr.end <= range.end,
            "{} outside the file",
            t.name
        );
        assert_eq!(v.data.len(), t.len);
        assert_eq!(
            (t.offset - g.data_offset) as u64 % g.alignment,
            0,
            "{} misaligned",
            t.name
        );
        let (elems, block_bytes) = v.dtype.block();
        let n = v.n_elements();
        assert_eq!(n % elems, 0);
        assert_eq!(n / elems * block_bytes, v.data.len(), "{} size", t.name);
        // Shape arithmetic the model code does must not overflow.
        let rows = v.n_rows();
        if n > 0 {
            assert_eq!(
                v.row_bytes().checked_mul(rows),
                Some(v.data.len()),
                "{} rows",
                t.name
            );
        }
        // Dequantising arbitrary bytes must not panic either (small tensors only, for speed).
        if n <= 1 << 16 {
            let f = v.to_f32();
            assert_eq!(f.len(), n);
            if rows > 0 && v.row_len() > 0 {
                let mut row = vec![0.0; v.row_len()];
                v.dequantize_row(rows - 1, &mut row);
            }
        }
    }
    for (k, _) in &g.metadata {
        assert!(g.get(k).is_some());
    }
}

// ---------------------------------------------------------------------------------------------
// The valid file the fuzzing starts from.

fn sample_writer() -> GgufWriter {
    use Value::*;
    let nested = Array(
        ValueType::Array,
        vec![
            Array(ValueType::U32, vec![U32(1), U32(2)]),
            Array(ValueType::U32, vec![]),
            Array(ValueType::U32, vec![U32(3)]),
        ],
    );
    GgufWriter::new()
        .meta("general.architecture", String("bert".into()))
        .meta("general.alignment", U32(32))
        .meta("fuzz.u8", U8(7))
        .meta("fuzz.i16", I16(-300))
        .meta("fuzz.f32", F32(1.5))
        .meta("fuzz.bool", Bool(true))
        .meta("fuzz.u64", U64(1 << 40))
        .meta("fuzz.f64", F64(-2.25))
        .meta(
            "fuzz.strings",
            Array(
                ValueType::String,
                vec![String("a".into()), String("▁bc".into())],
            ),
        )
        .meta("fuzz.nested", nested)
        .meta(
            "fuzz.i32s",
            Array(ValueType::I32, vec![I32(-1), I32(2), I32(-3)]),
        )
        .tensor_f32("t.f32", &[4, 2], &[0.5, -1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
        .tensor("t.f16", DType::F16, &[3], vec![0, 60, 0, 188, 255, 123])
        .tensor(
            "t.q4_0",
            DType::Q4_0,
            &[32, 2],
            (0..36).map(|i| i as u8 * 7).collect(),
        )
        .tensor(
            "t.q6_k",
            DType::Q6_K,
            &[256],
            (0..210).map(|i| (i * 31 % 251) as u8).collect(),
        )
}

fn sample() -> Vec<u8> {
    let bytes = sample_writer().to_bytes();
    assert_eq!(parse(&bytes).expect("the sample parses").tensors.len(), 4);
    bytes
}

/// Offsets of every u64 count or length in a valid file (tensor and metadata counts, key and
/// string lengths, array counts, tensor dims and offsets), found by walking it independently of
/// the reader.
fn u64_fields(b: &[u8]) -> Vec<usize> {
    fn u32_at(b: &[u8], p: usize) -> u32 {
        u32::from_le_bytes(b[p..p + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], p: usize) -> usize {
        u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize
    }
    fn value(b: &[u8], t: u32, p: &mut usize, out: &mut Vec<usize>) {
        match t {
            0 | 1 | 7 => *p += 1,
            2 | 3 => *p += 2,
            4..=6 => *p += 4,
            10..=12 => *p += 8,
            8 => {
                out.push(*p);
                *p += 8 + u64_at(b, *p);
            }
            9 => {
                let et = u32_at(b, *p);
                out.push(*p + 4);
                let n = u64_at(b, *p + 4);
                *p += 12;
                for _ in 0..n {
                    value(b, et, p, out);
                }
            }
            _ => unreachable!("the sample holds valid types only"),
        }
    }
    let mut out = vec![8, 16];
    let (n_tensors, n_kv) = (u64_at(b, 8), u64_at(b, 16));
    let mut p = 24;
    for _ in 0..n_kv {
        value(b, 8, &mut p, &mut out);
        let t = u32_at(b, p);
        p += 4;
        value(b, t, &mut p, &mut out);
    }
    for _ in 0..n_tensors {
        value(b, 8, &mut p, &mut out);
        let n_dims = u32_at(b, p) as usize;
        p += 4;
        out.extend((0..n_dims).map(|i| p + 8 * i));
        p += 8 * n_dims + 4;
        out.push(p);
        p += 8;
    }
    out
}

/// Where tensor `name`'s directory entry keeps its n_dims, first dim, type and offset.
struct Entry {
    n_dims: usize,
    dims: usize,
    dtype: usize,
    offset: usize,
}

fn entry(b: &[u8], name: &str) -> Entry {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend_from_slice(name.as_bytes());
    let at = b
        .windows(pat.len())
        .position(|w| w == pat)
        .expect("tensor name in file");
    let n_dims = at + pat.len();
    let nd = u32::from_le_bytes(b[n_dims..n_dims + 4].try_into().unwrap()) as usize;
    let dtype = n_dims + 4 + 8 * nd;
    Entry {
        n_dims,
        dims: n_dims + 4,
        dtype,
        offset: dtype + 4,
    }
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

const HUGE: [u64; 10] = [
    u64::MAX,
    u64::MAX - 1,
    1 << 63,
    1 << 62,
    1 << 60,
    1 << 40,
    1 << 32,
    u32::MAX as u64,
    (1 << 31) + 1,
    1 << 20,
];

// ---------------------------------------------------------------------------------------------
// (a) every truncation

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample();
    for len in 0..bytes.len() {
        let cut = &bytes[..len];
        let r = std::panic::catch_unwind(|| parse(cut).map(|_| ()));
        match r {
            Err(_) => panic!("parse panicked on the file truncated to {len} bytes"),
            Ok(Ok(())) => panic!("the file truncated to {len} bytes parsed"),
            Ok(Err(_)) => {}
        }
    }
}

#[test]
fn the_walker_finds_the_counts() {
    // Guards (b): the field offsets really are the sample's counts and lengths.
    let bytes = sample();
    let fields = u64_fields(&bytes);
    assert!(fields.len() > 25, "{fields:?}");
    let e = entry(&bytes, "t.q6_k");
    assert!(fields.contains(&e.offset) && fields.contains(&e.dims));
    assert_eq!(
        u32::from_le_bytes(bytes[e.dtype..e.dtype + 4].try_into().unwrap()),
        14
    );
}

// ---------------------------------------------------------------------------------------------
// (b) and (c): proptest

proptest! {
    #![proptest_config(ProptestConfig { cases: 8192, ..ProptestConfig::default() })]

    #[test]
    fn byte_flips_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8)) {
        let mut bytes = sample();
        for (i, x) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        let _ = parse(&bytes);
    }

    #[test]
    fn huge_counts_never_panic(
        picks in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u64>(), any::<bool>()), 1..4)
    ) {
        let mut bytes = sample();
        let fields = u64_fields(&bytes);
        for (field, huge, random, use_random) in picks {
            let at = fields[field.index(fields.len())];
            let v = if use_random { random } else { HUGE[huge.index(HUGE.len())] };
            put_u64(&mut bytes, at, v);
        }
        let _ = parse(&bytes);
    }

    #[test]
    fn overwrites_anywhere_never_panic(at in any::<prop::sample::Index>(), huge in any::<prop::sample::Index>()) {
        let mut bytes = sample();
        let at = at.index(bytes.len() - 8);
        put_u64(&mut bytes, at, HUGE[huge.index(HUGE.len())]);
        let _ = parse(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..512), header in any::<bool>(), version in 0u32..5) {
        // Half the cases start with a plausible header so the parse gets past the magic.
        if header && bytes.len() >= 8 {
            bytes[..4].copy_from_slice(b"GGUF");
            put_u32(&mut bytes, 4, version);
        }
        let _ = parse(&bytes);
    }

    #[test]
    fn random_tails_never_panic(tail in prop::collection::vec(any::<u8>(), 0..256), cut in any::<prop::sample::Index>()) {
        // A valid prefix followed by garbage: reaches deeper into the directory than (c).
        let mut bytes = sample();
        bytes.truncate(cut.index(bytes.len()));
        bytes.extend(tail);
        let _ = parse(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// (d) specific hostile files

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(version.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

fn err(bytes: &[u8]) -> GgufError {
    match parse(bytes) {
        Ok(_) => panic!("a hostile file parsed"),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

#[test]
fn huge_tensor_and_metadata_counts() {
    let mut b = header(3, 1 << 60, 0);
    b.resize(4096, 0);
    assert!(
        matches!(err(&b), GgufError::TooLarge { .. }),
        "{:?}",
        err(&b)
    );
    let mut b = header(3, 0, 1 << 60);
    b.resize(4096, 0);
    assert!(matches!(err(&b), GgufError::TooLarge { .. }));
    let mut b = header(3, u64::MAX, u64::MAX);
    b.resize(4096, 0);
    assert!(matches!(err(&b), GgufError::TooLarge { .. }));
}

#[test]
fn huge_string_length() {
    for len in [1u64 << 63, u64::MAX, 1 << 40] {
        let mut b = header(3, 0, 1);
        b.extend(len.to_le_bytes());
        b.extend(b"general.name");
        b.resize(256, b'x');
        assert!(
            matches!(err(&b), GgufError::TooLarge { .. }),
            "{len}: {:?}",
            err(&b)
        );

        // The same in a string value.
        let mut b = header(3, 0, 1);
        b.extend(3u64.to_le_bytes());
        b.extend(b"key");
        b.extend(8u32.to_le_bytes());
        b.extend(len.to_le_bytes());
        b.resize(256, b'x');
        assert!(matches!(err(&b), GgufError::TooLarge { .. }));
    }
}

#[test]
fn huge_array_count() {
    for (et, n) in [
        (0u32, u64::MAX),
        (8, 1 << 62),
        (9, 1 << 40),
        (4, (1 << 62) + 1),
    ] {
        let mut b = header(3, 0, 1);
        b.extend(3u64.to_le_bytes());
        b.extend(b"arr");
        b.extend(9u32.to_le_bytes());
        b.extend(et.to_le_bytes());
        b.extend(n.to_le_bytes());
        b.resize(1024, 0);
        assert!(
            matches!(err(&b), GgufError::TooLarge { .. }),
            "type {et} count {n}"
        );
    }
}

#[test]
fn arrays_nested_1000_deep() {
    let mut v = Value::Array(ValueType::U8, vec![Value::U8(1)]);
    for _ in 0..1000 {
        v = Value::Array(ValueType::Array, vec![v]);
    }
    let bytes = GgufWriter::new().meta("deep", v).to_bytes();
    assert_eq!(err(&bytes), GgufError::NestedTooDeep { key: "deep".into() });

    // Just within the limit parses.
    let mut v = Value::Array(ValueType::U8, vec![Value::U8(1)]);
    for _ in 0..quiver::gguf::MAX_ARRAY_DEPTH - 1 {
        v = Value::Array(ValueType::Array, vec![v]);
    }
    let bytes = GgufWriter::new().meta("ok", v.clone()).to_bytes();
    assert_eq!(parse(&bytes).unwrap().get("ok"), Some(&v));
}

#[test]
fn tensor_offset_past_the_end() {
    let mut b = sample();
    let e = entry(&b, "t.f32");
    put_u64(&mut b, e.offset, 1 << 20);
    assert!(matches!(err(&b), GgufError::BadTensor { ref name, .. } if name == "t.f32"));
    // Exactly at the end, with data to read: also past it.
    let mut b = sample();
    let g = parse(&b).unwrap();
    let end = (b.len() - g.data_offset) as u64;
    let e = entry(&b, "t.q6_k");
    put_u64(&mut b, e.offset, end.next_multiple_of(32));
    assert!(matches!(err(&b), GgufError::BadTensor { .. }));
}

#[test]
fn tensor_offset_plus_size_overflows() {
    for off in [0xffff_ffff_ffff_ffe0, 1u64 << 63, u64::MAX - 94] {
        let mut b = sample();
        let e = entry(&b, "t.f32");
        put_u64(&mut b, e.offset, off);
        assert!(
            matches!(err(&b), GgufError::BadTensor { .. }),
            "offset {off}"
        );
    }
    // A dim so large that the byte size overflows, and dims whose product does.
    let mut b = sample();
    let e = entry(&b, "t.f32");
    put_u64(&mut b, e.dims, 1 << 62);
    assert!(matches!(err(&b), GgufError::BadTensor { .. }));
    let mut b = sample();
    let e = entry(&b, "t.f32");
    put_u64(&mut b, e.dims, u64::MAX);
    put_u64(&mut b, e.dims + 8, u64::MAX);
    assert!(matches!(err(&b), GgufError::BadTensor { .. }));
}

#[test]
fn zero_row_length_cannot_hide_huge_dims() {
    // [0, 2^40, 2^40]: zero elements, but the number of rows overflows.
    let bytes = GgufWriter::new()
        .tensor("t", DType::F32, &[0, 1 << 40, 1 << 40], vec![])
        .to_bytes();
    assert!(matches!(err(&bytes), GgufError::BadTensor { .. }));
    // So is an empty tensor of sane dims: no model has one.
    let bytes = GgufWriter::new()
        .tensor("t", DType::F32, &[3, 0], vec![])
        .to_bytes();
    assert!(matches!(err(&bytes), GgufError::BadTensor { ref why, .. } if why.contains("0")));
}

#[test]
fn unknown_dtype() {
    for id in [4u32, 5, 9, 15, 16, 29, 31, 99, u32::MAX] {
        let mut b = sample();
        let e = entry(&b, "t.f16");
        put_u32(&mut b, e.dtype, id);
        assert_eq!(
            err(&b),
            GgufError::UnsupportedType {
                name: "t.f16".into(),
                type_id: id
            }
        );
    }
}

#[test]
fn bad_dimension_counts() {
    for n in [0u32, 5, u32::MAX] {
        let mut b = sample();
        let e = entry(&b, "t.f16");
        put_u32(&mut b, e.n_dims, n);
        assert!(matches!(
            err(&b),
            GgufError::BadTensor { .. } | GgufError::Truncated { .. }
        ));
    }
}

#[test]
fn misaligned_offset() {
    let mut b = sample();
    let e = entry(&b, "t.f16");
    let off = u64::from_le_bytes(b[e.offset..e.offset + 8].try_into().unwrap());
    put_u64(&mut b, e.offset, off + 2);
    assert!(matches!(err(&b), GgufError::BadTensor { ref why, .. } if why.contains("aligned")));
}

#[test]
fn partial_blocks() {
    let bytes = GgufWriter::new()
        .tensor("q", DType::Q4_0, &[16], vec![0; 9])
        .to_bytes();
    assert!(matches!(err(&bytes), GgufError::BadTensor { .. }));
}

#[test]
fn duplicate_keys_and_tensors() {
    let b = GgufWriter::new()
        .meta("k", Value::U8(1))
        .meta("k", Value::U8(2))
        .to_bytes();
    assert_eq!(err(&b), GgufError::DuplicateKey("k".into()));
    let b = GgufWriter::new()
        .tensor_f32("t", &[1], &[1.0])
        .tensor_f32("t", &[1], &[2.0])
        .to_bytes();
    assert_eq!(err(&b), GgufError::DuplicateTensor("t".into()));
}

#[test]
fn non_utf8_key_string_and_name() {
    let b = GgufWriter::new().meta("k\u{e9}", Value::U8(1)).to_bytes();
    let bad = |mut b: Vec<u8>| {
        // 'é' is C3 A9; C3 followed by 0xFF is not UTF-8.
        let at = b.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
        b[at + 1] = 0xff;
        b
    };
    assert!(matches!(err(&bad(b)), GgufError::BadString { .. }));
    let b = GgufWriter::new()
        .meta("k", Value::String("\u{e9}".into()))
        .to_bytes();
    assert!(matches!(err(&bad(b)), GgufError::BadString { .. }));
    let b = GgufWriter::new()
        .tensor_f32("t\u{e9}", &[1], &[1.0])
        .to_bytes();
    assert!(matches!(err(&bad(b)), GgufError::BadString { .. }));
}

#[test]
fn bad_alignment() {
    for v in [
        Value::U32(0),
        Value::U32(3),
        Value::U32(48),
        Value::U64(1 << 40),
        Value::I32(-32),
        Value::String("32".into()),
        Value::F32(32.0),
    ] {
        let b = GgufWriter::new()
            .meta("general.alignment", v.clone())
            .tensor_f32("t", &[1], &[1.0])
            .to_bytes();
        assert!(matches!(err(&b), GgufError::BadAlignment(_)), "{v:?}");
    }
}

#[test]
fn bad_value_types_and_bools() {
    let mut b = GgufWriter::new().meta("k", Value::U8(1)).to_bytes();
    put_u32(&mut b, 24 + 8 + 1, 13);
    assert_eq!(
        err(&b),
        GgufError::BadValueType {
            key: "k".into(),
            code: 13
        }
    );
    let mut b = GgufWriter::new().meta("k", Value::Bool(true)).to_bytes();
    b[24 + 8 + 1 + 4] = 2;
    assert!(matches!(err(&b), GgufError::BadValue { ref key, .. } if key == "k"));
}

#[test]
fn bad_magic_and_versions() {
    let mut b = sample();
    b[0] = b'X';
    assert!(matches!(err(&b), GgufError::BadMagic(_)));
    for v in [0u32, 1, 4, u32::MAX] {
        let b = sample_writer().version(v).to_bytes();
        assert_eq!(err(&b), GgufError::UnsupportedVersion(v));
    }
    assert!(parse(&sample_writer().version(2).to_bytes()).is_ok());
}

#[test]
fn views_stay_inside_the_bytes_they_were_parsed_from() {
    let bytes = sample();
    let g = parse(&bytes).unwrap();
    // Asked with fewer bytes than the header was parsed from, a view is refused, not sliced.
    let short = &bytes[..bytes.len() - 1];
    assert!(g.tensor(short, "t.q6_k").is_none());
    assert!(g.tensor(&bytes, "missing").is_none());
}

#[test]
fn the_allocation_tracker_sees_large_allocations() {
    // Guards `parse`'s allocation bound: the tracker must notice a big allocation.
    LARGEST.with(|l| l.set(0));
    let v = vec![0u8; 1 << 20];
    assert!(LARGEST.with(|l| l.get()) >= 1 << 20);
    drop(v);
}

#[test]
fn the_real_fixture_models_still_parse() {
    // The checks above must not refuse a real file.
    for name in [
        "all-minilm-f16.gguf",
        "all-minilm-q8_0.gguf",
        "quant-zoo.gguf",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name);
        let file = quiver::gguf::GgufFile::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let g = parse(file.bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!g.tensors.is_empty(), "{name}");
    }
}
