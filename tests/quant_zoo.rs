//! Every GGML block format Quiver reads, dequantised, must equal what the reference `gguf`
//! Python package computed for the same blocks, bit for bit.
//!
//! fixtures/quant-zoo.gguf holds, for each type, `<TYPE>.q` (a 4×512 tensor of random valid
//! blocks) and `<TYPE>.f32` (those blocks dequantised by gguf-py).

mod common;

use common::{quant_zoo, ZOO_TYPES};
use quiver::tensor::{dequantize, DType};

#[test]
fn every_block_format_matches_gguf_py_bit_for_bit() {
    let zoo = quant_zoo();
    let mut failures = Vec::new();
    for name in ZOO_TYPES {
        let q = zoo
            .tensor(&format!("{name}.q"))
            .unwrap_or_else(|| panic!("{name}.q missing"));
        let want = zoo
            .tensor(&format!("{name}.f32"))
            .unwrap_or_else(|| panic!("{name}.f32"));
        assert_eq!(
            q.dtype,
            DType::from_name(name).unwrap(),
            "{name}.q has the wrong dtype"
        );
        assert_eq!(want.dtype, DType::F32);
        assert_eq!(
            q.n_elements(),
            want.n_elements(),
            "{name}: element counts differ"
        );
        assert!(q.n_elements() >= 256, "{name}: at least one super-block");

        let mut got = vec![f32::NAN; q.n_elements()];
        dequantize(q.dtype, q.data, &mut got);
        let want = want.to_f32();
        if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            let diffs = (0..got.len())
                .filter(|&i| got[i].to_bits() != want[i].to_bits())
                .count();
            failures.push(format!(
                "{name}: {diffs} of {} differ; first at element {i} (row {}, col {}): got {:e} \
                 ({:#010x}), want {:e} ({:#010x})",
                got.len(),
                i / q.row_len(),
                i % q.row_len(),
                got[i],
                got[i].to_bits(),
                want[i],
                want[i].to_bits()
            ));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// Row-by-row dequantisation (what matmuls use) agrees with whole-tensor dequantisation.
#[test]
fn rows_dequantise_like_the_whole_tensor() {
    let zoo = quant_zoo();
    for name in ZOO_TYPES {
        let q = zoo.tensor(&format!("{name}.q")).unwrap();
        let whole = q.to_f32();
        let mut row = vec![0.0; q.row_len()];
        for r in 0..q.n_rows() {
            q.dequantize_row(r, &mut row);
            assert_eq!(
                row,
                whole[r * q.row_len()..(r + 1) * q.row_len()],
                "{name} row {r}"
            );
        }
    }
}
