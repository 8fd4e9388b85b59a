//! Whole forward passes with `Backend::linears` as the CPU backend runs it (Q/K/V and gate/up
//! quantise their input once, one parallel region) against the trait's default (one `linear`
//! per weight: what the architectures called before), alternated pass by pass in one process
//! so that both see the same machine load. Prints per case the minimum and median wall time
//! and the mean CPU time of all threads per pass.
//!
//! cargo run --release --example linears_ab [MODEL.gguf...] [--reps N]
//! (default: the all-minilm F16 and Q8_0 fixtures; 64 × 250, 256 × 10 and 1 × 10 tokens)

use quiver::backend::cpu::Cpu;
use quiver::backend::{AttnShape, Backend, Mask};
use quiver::gguf::GgufFile;
use quiver::model::Model;
use quiver::tensor::TensorView;
use quiver_kernels::matmul::peak::process_cpu_ns;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The CPU backend with the trait's default `linears` (it must not define its own).
struct Separate(Cpu);

impl Backend for Separate {
    fn name(&self) -> &'static str {
        "cpu (separate linears)"
    }
    fn prepare(&self, file: &Arc<GgufFile>) {
        self.0.prepare(file)
    }
    fn linear(&self, x: &[f32], m: usize, w: &TensorView, bias: Option<&[f32]>, y: &mut [f32]) {
        self.0.linear(x, m, w, bias, y)
    }
    fn layer_norm(&self, x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        self.0.layer_norm(x, w, b, eps)
    }
    fn add_layer_norm(&self, x: &mut [f32], residual: &[f32], w: &[f32], b: &[f32], eps: f32) {
        self.0.add_layer_norm(x, residual, w, b, eps)
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
        seqs: &[Range<usize>],
        shape: AttnShape,
        mask: Mask,
        out: &mut [f32],
    ) {
        self.0.attention(q, k, v, seqs, shape, mask, out)
    }
}

/// `count` sequences of `len` ids of the model's own tokens of a text, each from its own
/// offset.
fn sequences(model: &Model, count: usize, len: usize) -> Vec<Vec<u32>> {
    let text = "Quiver serves text embeddings through Ollama's API; this passage only gives the \
                tokenizer something ordinary to chew on, with numbers like 42 and 3.14, names \
                like Ada Lovelace, and a few longer words: quantisation, parallelism, throughput.";
    let ids = model.tokenize(text);
    (0..count)
        .map(|s| ids.iter().cycle().skip(s * 7).take(len).copied().collect())
        .collect()
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let reps = match args.iter().position(|a| a == "--reps") {
        Some(i) => {
            let n = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(5);
            args.drain(i..(i + 2).min(args.len()));
            n
        }
        None => 5,
    };
    let files: Vec<PathBuf> = if args.is_empty() {
        ["all-minilm-f16.gguf", "all-minilm-q8_0.gguf"]
            .iter()
            .map(|f| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("fixtures")
                    .join(f)
            })
            .collect()
    } else {
        args.iter().map(PathBuf::from).collect()
    };
    println!(
        "rayon threads {}, {reps} passes each",
        rayon::current_num_threads()
    );
    for path in files {
        let load = |be: Arc<dyn Backend>| Model::load(GgufFile::open(&path).unwrap(), be).unwrap();
        let models = [
            load(Arc::new(Separate(Cpu::new()))),
            load(Arc::new(Cpu::new())),
        ];
        let name = path.file_name().unwrap().to_string_lossy();
        for (count, len) in [(64, 250), (256, 10), (1, 10)] {
            let seqs = sequences(&models[0], count, len);
            let mut wall = [Vec::new(), Vec::new()];
            let mut cpu = [0u64; 2];
            let mut out: [Vec<Vec<f32>>; 2] = Default::default();
            let passes = if count == 1 { reps * 20 } else { reps };
            for pass in 0..=passes {
                for (i, model) in models.iter().enumerate() {
                    let c = process_cpu_ns();
                    let t = Instant::now();
                    out[i] = model.embed_tokens(&seqs).unwrap();
                    // Pass 0 warms up (buffers, pages).
                    if pass > 0 {
                        wall[i].push(t.elapsed().as_secs_f64() * 1e3);
                        cpu[i] += process_cpu_ns() - c;
                    }
                }
            }
            let same = out[0]
                .iter()
                .flatten()
                .map(|v| v.to_bits())
                .eq(out[1].iter().flatten().map(|v| v.to_bits()));
            let stat = |mut t: Vec<f64>| {
                t.sort_by(|a, b| a.total_cmp(b));
                (t[0], t[t.len() / 2])
            };
            let [(amin, amed), (bmin, bmed)] = wall.map(stat);
            let [ac, bc] = cpu.map(|c| c as f64 / 1e6 / passes as f64);
            println!(
                "{name} {count}x{len}: separate min {amin:.2} med {amed:.2} cpu {ac:.2} ms | linears min {bmin:.2} med {bmed:.2} cpu {bc:.2} ms | min {:.3} med {:.3} cpu {:.3} | bits {}",
                bmin / amin,
                bmed / amed,
                bc / ac,
                if same { "identical" } else { "DIFFERENT" }
            );
        }
    }
}
