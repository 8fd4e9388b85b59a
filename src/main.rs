//! The `quiver` command line: parse arguments, call the library.

use quiver::backend::cpu::Cpu;
use quiver::gguf::{GgufFile, ModelBytes};
use quiver::model::Model;
use std::process::ExitCode;
use std::sync::Arc;

/// The bundled default model, aligned so its tensors can be read in place.
#[cfg(feature = "bundled-model")]
static BUNDLED: &quiver::store::bundled::Aligned<[u8]> =
    &quiver::store::bundled::Aligned(*include_bytes!("../fixtures/all-minilm-f16.gguf"));

fn bundled() -> Option<&'static [u8]> {
    #[cfg(feature = "bundled-model")]
    return Some(&BUNDLED.0);
    #[cfg(not(feature = "bundled-model"))]
    None
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    match args.first().map(String::as_str) {
        Some("embed") => {
            let (model, texts) = match args.get(1).map(String::as_str) {
                Some("-m") => (args.get(2).ok_or("-m needs a model")?.as_str(), &args[3..]),
                _ => ("all-minilm", &args[1..]),
            };
            let file = if model.ends_with(".gguf") {
                GgufFile::open(std::path::Path::new(model))?
            } else if model == "all-minilm" || model == "all-minilm:latest" {
                GgufFile::from_bytes(ModelBytes::Static(bundled().ok_or("no bundled model")?))?
            } else {
                return Err(format!("model {model:?} not found").into());
            };
            let m = Model::load(file, Arc::new(Cpu))?;
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            let v = m.embed(&texts)?;
            println!("{}", serde_json::json!({"model": model, "embeddings": v}));
            Ok(())
        }
        _ => Err("usage: quiver embed [-m MODEL] TEXT...".into()),
    }
}
