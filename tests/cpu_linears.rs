//! `Backend::linears` on the CPU (several products of one input, the input quantised once per
//! packed path) must give bit for bit what `linear` gives for each weight alone: for 13-bit
//! integer weights (f16, bf16, a K-quant widened at load), for 8-bit block weights, for a mix
//! of those and of weights that are not packed at all (f32), at row counts on both sides of
//! the few-rows path and not a multiple of any tile.

mod common;

use common::{gguf_from_bytes, q8_0_encode, quant_zoo, Rng};
use quiver::backend::cpu::Cpu;
use quiver::backend::{Backend, LinearOut};
use quiver::gguf::writer::GgufWriter;
use quiver::gguf::GgufFile;
use quiver::tensor::DType;
use std::sync::Arc;

/// The zoo's tensors are 4 × 512: every weight here has k = 512.
const K: usize = 512;

/// Q4_0 / Q4_1 blocks of random nibbles with small f16 scales (and minima).
fn q4_bytes(rng: &mut Rng, n: usize, with_min: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n * K / 32 {
        out.extend_from_slice(&half::f16::from_f32(0.02 * rng.next()).to_le_bytes());
        if with_min {
            out.extend_from_slice(&half::f16::from_f32(0.05 * rng.next()).to_le_bytes());
        }
        out.extend((0..16).map(|_| ((rng.next() + 1.0) * 127.9) as u8));
    }
    out
}

/// A model file of layer matrices `blk.0.<name>.weight`, one per dtype and width.
fn model(rng: &mut Rng) -> Arc<GgufFile> {
    let zoo = quant_zoo();
    let f16 = |v: Vec<f32>| -> Vec<u8> {
        v.iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect()
    };
    let bf16: Vec<u8> = rng
        .vec(37 * K, 0.1)
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    let f32s: Vec<u8> = rng
        .vec(20 * K, 0.1)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let writer = GgufWriter::new()
        .tensor(
            "blk.0.q.weight",
            DType::F16,
            &[K, 100],
            f16(rng.vec(100 * K, 0.1)),
        )
        .tensor(
            "blk.0.k.weight",
            DType::F16,
            &[K, 64],
            f16(rng.vec(64 * K, 0.1)),
        )
        .tensor("blk.0.v.weight", DType::BF16, &[K, 37], bf16)
        .tensor(
            "blk.0.q4k.weight",
            DType::Q4_K,
            &[K, 4],
            zoo.tensor("Q4_K.q").unwrap().data.to_vec(),
        )
        .tensor(
            "blk.0.q8.weight",
            DType::Q8_0,
            &[K, 70],
            q8_0_encode(&rng.vec(70 * K, 0.1)),
        )
        .tensor(
            "blk.0.q40.weight",
            DType::Q4_0,
            &[K, 32],
            q4_bytes(rng, 32, false),
        )
        .tensor(
            "blk.0.q41.weight",
            DType::Q4_1,
            &[K, 45],
            q4_bytes(rng, 45, true),
        )
        .tensor("blk.0.f32.weight", DType::F32, &[K, 20], f32s);
    Arc::new(gguf_from_bytes(&writer.to_bytes()))
}

/// `linears` over the named weights (each with a bias or not) against `linear` on each.
fn check(cpu: &Cpu, file: &GgufFile, rng: &mut Rng, names: &[&str], m: usize) {
    let ws: Vec<_> = names
        .iter()
        .map(|name| file.tensor(&format!("blk.0.{name}.weight")).unwrap())
        .collect();
    // Every other product has a bias.
    let biases: Vec<Option<Vec<f32>>> = ws
        .iter()
        .enumerate()
        .map(|(i, w)| (i % 2 == 0).then(|| rng.vec(w.n_rows(), 1.0)))
        .collect();
    let x = rng.vec(m * K, 1.0);
    let alone: Vec<Vec<f32>> = ws
        .iter()
        .zip(&biases)
        .map(|(w, b)| {
            let mut y = vec![f32::NAN; m * w.n_rows()];
            cpu.linear(&x, m, w, b.as_deref(), &mut y);
            y
        })
        .collect();
    let mut ys: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; m * w.n_rows()]).collect();
    let mut outs: Vec<LinearOut<'_>> = ws
        .iter()
        .zip(&biases)
        .zip(ys.iter_mut())
        .map(|((w, b), y)| LinearOut::new(*w, b.as_deref(), y))
        .collect();
    cpu.linears(&x, m, &mut outs);
    drop(outs);
    for ((name, a), b) in names.iter().zip(&alone).zip(&ys) {
        assert!(a.iter().all(|v| v.is_finite()), "{name} m={m}: not finite");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b), "{name} m={m} of {names:?}");
    }
}

#[test]
fn linears_give_the_bits_of_one_linear_per_weight() {
    let mut rng = Rng(0x11ea_0005);
    let file = model(&mut rng);
    let cpu = Cpu::new();
    cpu.prepare(&file);
    assert!(cpu.packed_bytes() > 0);
    let groups: [&[&str]; 5] = [
        // Q, K, V: all 13-bit integers (two f16 widths and a bf16).
        &["q", "k", "v"],
        // With a K-quant, widened to 13-bit integers at load.
        &["q", "q4k", "v"],
        // 8-bit block formats, with and without the Q4_1 minimum.
        &["q8", "q40", "q41"],
        // Both packed paths and an unpacked f32 matrix in one call.
        &["q8", "q", "f32", "q41", "k"],
        &["v"],
    ];
    // 1..4 rows take the few-rows path for block weights; 97 and 203 are past one task block.
    for m in [1, 3, 4, 5, 7, 97, 203] {
        for names in groups {
            check(&cpu, &file, &mut rng, names, m);
        }
    }
}

#[test]
fn the_default_linears_is_one_linear_per_weight() {
    // A backend that keeps the trait's default `linears`.
    struct Plain(Cpu);
    impl Backend for Plain {
        fn name(&self) -> &'static str {
            "plain"
        }
        fn linear(
            &self,
            x: &[f32],
            m: usize,
            w: &quiver::tensor::TensorView,
            bias: Option<&[f32]>,
            y: &mut [f32],
        ) {
            self.0.linear(x, m, w, bias, y)
        }
        fn layer_norm(&self, x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
            self.0.layer_norm(x, w, b, eps)
        }
        fn rms_norm(&self, x: &mut [f32], w: &[f32], eps: f32) {
            self.0.rms_norm(x, w, eps)
        }
        fn gelu(&self, x: &mut [f32]) {
            self.0.gelu(x)
        }
        fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
            self.0.silu_mul(gate, up)
        }
        fn attention(
            &self,
            q: &[f32],
            k: &[f32],
            v: &[f32],
            seqs: &[std::ops::Range<usize>],
            shape: quiver::backend::AttnShape,
            mask: quiver::backend::Mask,
            out: &mut [f32],
        ) {
            self.0.attention(q, k, v, seqs, shape, mask, out)
        }
    }
    let mut rng = Rng(0x11ea_0006);
    let file = model(&mut rng);
    let cpu = Cpu::new();
    cpu.prepare(&file);
    let plain = Plain(Cpu::new());
    plain.0.prepare(&file);
    let m = 9;
    let x = rng.vec(m * K, 1.0);
    let (q, q8) = (
        file.tensor("blk.0.q.weight").unwrap(),
        file.tensor("blk.0.q8.weight").unwrap(),
    );
    let (mut a0, mut a1) = (vec![0.0; m * 100], vec![0.0; m * 70]);
    let (mut b0, mut b1) = (vec![0.0; m * 100], vec![0.0; m * 70]);
    cpu.linears(
        &x,
        m,
        &mut [
            LinearOut::new(q, None, &mut a0),
            LinearOut::new(q8, None, &mut a1),
        ],
    );
    plain.linears(
        &x,
        m,
        &mut [
            LinearOut::new(q, None, &mut b0),
            LinearOut::new(q8, None, &mut b1),
        ],
    );
    assert_eq!(a0, b0);
    assert_eq!(a1, b1);
}
