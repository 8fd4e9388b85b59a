//! The CPU backend packs a prepared model's layer matrices once (f16/bf16 and the formats
//! without a kernel as 13-bit integers, Q8_0/Q4_0/Q4_1 as integer panels). For every block
//! format of the quant zoo, `linear` on the packed weights must give the f32 product with the
//! values gguf-py dequantised, within the rounding of its integer path.

mod common;

use common::{gguf_from_bytes, quant_zoo, ZOO_TYPES};
use quiver::backend::cpu::Cpu;
use quiver::backend::Backend;
use quiver::gguf::writer::GgufWriter;
use quiver::tensor::DType;
use std::sync::Arc;

#[test]
fn packed_linear_matches_the_dequantised_product_for_every_format() {
    let zoo = quant_zoo();
    let (k, n) = (512, 4);
    for name in ZOO_TYPES {
        let dtype = DType::from_name(name).unwrap();
        let q = zoo.tensor(&format!("{name}.q")).unwrap();
        let vals: Vec<f32> =
            bytemuck::pod_collect_to_vec(zoo.tensor(&format!("{name}.f32")).unwrap().data);
        let file = Arc::new(gguf_from_bytes(
            &GgufWriter::new()
                .tensor("blk.0.test.weight", dtype, &[k, n], q.data.to_vec())
                .to_bytes(),
        ));
        let cpu = Cpu::new();
        cpu.prepare(&file);
        assert!(cpu.packed_bytes() > 0, "{name}: nothing was packed");
        let w = file.tensor("blk.0.test.weight").unwrap();
        // Enough rows to take the packed (not the few-rows) path of every format.
        let m = 7;
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let mut y = vec![f32::NAN; m * n];
        cpu.linear(&x, m, &w, None, &mut y);
        for i in 0..m {
            for j in 0..n {
                let (xr, wr) = (&x[i * k..(i + 1) * k], &vals[j * k..(j + 1) * k]);
                let want: f32 = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
                let scale: f32 = xr.iter().zip(wr).map(|(a, b)| (a * b).abs()).sum();
                // 8-bit activation blocks (Q8_0/Q4_x) round to 1/254 of a block's maximum;
                // the 13-bit path to 1/8190 of a row's.
                let tol = scale * 8e-3 + 1e-4;
                let got = y[i * n + j];
                assert!(
                    (got - want).abs() <= tol,
                    "{name} y[{i}][{j}] = {got}, want {want} ± {tol}"
                );
            }
        }
        // Packing must not change what the unprepared backend computes beyond that rounding.
        let mut plain = vec![f32::NAN; m * n];
        Cpu::new().linear(&x, m, &w, None, &mut plain);
        for (a, b) in y.iter().zip(&plain) {
            assert!(
                (a - b).abs() <= 1e-2 * (1.0 + b.abs()),
                "{name}: packed {a} vs file {b}"
            );
        }
    }
}

/// Tables outside the layers stay in the file; an F32 layer matrix is packed as exact f32
/// panels (4 rows padded to one panel of 32 columns × 64 values × 4 bytes).
#[test]
fn tables_outside_the_layers_are_not_packed_and_f32_stays_f32() {
    let f16: Vec<u8> = (0..64 * 4)
        .flat_map(|i| half::f16::from_f32(i as f32 * 0.01).to_le_bytes())
        .collect();
    let f32b: Vec<u8> = (0..64 * 4).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let file = Arc::new(gguf_from_bytes(
        &GgufWriter::new()
            .tensor("token_embd.weight", DType::F16, &[64, 4], f16)
            .tensor("blk.0.f32.weight", DType::F32, &[64, 4], f32b)
            .to_bytes(),
    ));
    let cpu = Cpu::new();
    cpu.prepare(&file);
    assert_eq!(cpu.packed_bytes(), 32 * 64 * 4);
    // Exact: the packed product is the f32 product of the file's values.
    let view = file.tensor("blk.0.f32.weight").unwrap();
    let x: Vec<f32> = (0..2 * 64).map(|i| (i % 7) as f32 - 3.0).collect();
    let mut y = vec![f32::NAN; 2 * 4];
    cpu.linear(&x, 2, &view, None, &mut y);
    for (i, row) in y.chunks(4).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let want: f32 = (0..64).map(|p| x[i * 64 + p] * (j * 64 + p) as f32).sum();
            assert_eq!(v, want, "y[{i}][{j}]");
        }
    }
}

/// A 3-D stack of experts (nomic-bert-moe's `ffn_up_exps`) is packed matrix by matrix: a
/// product with expert e's slab takes a packed copy and gives, bit for bit, the product with
/// the same bytes stored as a 2-D matrix of its own.
#[test]
fn each_expert_of_a_stack_is_packed_and_multiplies_as_its_own_matrix() {
    let zoo = quant_zoo();
    let q = zoo.tensor("Q8_0.q").unwrap().data.to_vec();
    // The zoo's 4×512 tensor read as 2 experts of 2 rows of 512.
    let (k, n, n_expert) = (512, 2, 2);
    let slab = q.len() / n_expert;
    let mut w = GgufWriter::new().tensor(
        "blk.0.ffn_up_exps.weight",
        DType::Q8_0,
        &[k, n, n_expert],
        q.clone(),
    );
    for e in 0..n_expert {
        w = w.tensor(
            &format!("blk.1.expert{e}.weight"),
            DType::Q8_0,
            &[k, n],
            q[e * slab..(e + 1) * slab].to_vec(),
        );
    }
    let file = Arc::new(gguf_from_bytes(&w.to_bytes()));
    let (stacked, alone) = (Cpu::new(), Cpu::new());
    stacked.prepare(&file);
    // Only the stack is packed on `stacked`: its packed bytes are those of every expert.
    let single = Arc::new(gguf_from_bytes(
        &GgufWriter::new()
            .tensor("blk.0.one.weight", DType::Q8_0, &[k, n], q[..slab].to_vec())
            .to_bytes(),
    ));
    alone.prepare(&single);
    assert_eq!(
        stacked.packed_bytes(),
        (n_expert + n_expert) * alone.packed_bytes()
    );
    let stack = file.tensor("blk.0.ffn_up_exps.weight").unwrap();
    let m = 3;
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 29 % 97) as f32 - 48.0) / 24.0)
        .collect();
    for e in 0..n_expert {
        let view = quiver::tensor::TensorView {
            dtype: DType::Q8_0,
            shape: [k, n, 1, 1],
            n_dims: 2,
            data: &stack.data[e * slab..(e + 1) * slab],
        };
        let own = file.tensor(&format!("blk.1.expert{e}.weight")).unwrap();
        let (mut y, mut want) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
        stacked.linear(&x, m, &view, None, &mut y);
        stacked.linear(&x, m, &own, None, &mut want);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&want), "expert {e}");
    }
}
