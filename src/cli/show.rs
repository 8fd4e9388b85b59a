//! `quiver show MODEL`: what the GGUF header says, laid out like `ollama show`. Only the header
//! is read, so any GGUF file can be shown, including ones Quiver cannot run.

use super::{resolve_model, CliResult};
use crate::embed::Pooling;
use crate::gguf::{Gguf, Value};
use crate::model::{file_type_name, human_number};
use crate::store::Store;
use std::sync::Arc;

/// Arrays longer than this are summarised by type and length (the vocabulary has 30k entries).
const MAX_ARRAY_SHOWN: usize = 8;
/// Strings longer than this (chat templates, licences) are cut.
const MAX_STRING_SHOWN: usize = 80;

pub fn run(store: &Store, model: &str) -> CliResult {
    let entry = resolve_model(store, model)?;
    let file = Arc::new(entry.open()?);
    // The pooling the model runs with: the file's `pooling_type`, else its architecture's
    // default (BERT mean, decoders last token), which only the architecture knows. A file
    // Quiver cannot run is still shown, with the key's pooling if it has one.
    let pooling = match crate::arch::load(file.clone()) {
        Ok(a) => Some(a.pooling()),
        Err(_) => pooling_key(&file.header),
    };
    print!("{}", describe(&file.header, pooling));
    Ok(())
}

/// `<arch>.pooling_type`, when the file has a known one.
fn pooling_key(h: &Gguf) -> Option<Pooling> {
    let arch = h.architecture().unwrap_or("unknown");
    h.get_u64(&format!("{arch}.pooling_type"))
        .and_then(Pooling::from_gguf)
}

/// The text `quiver show` prints for a parsed header, with the pooling the model runs with.
pub fn describe(h: &Gguf, pooling: Option<Pooling>) -> String {
    let arch = h.architecture().unwrap_or("unknown");
    let key = |k: &str| h.get_u64(&format!("{arch}.{k}"));
    let mut model_rows = vec![
        ("architecture".to_string(), arch.to_string()),
        ("parameters".to_string(), human_number(h.parameter_count())),
    ];
    if let Some(n) = key("context_length") {
        model_rows.push(("context length".to_string(), n.to_string()));
    }
    if let Some(n) = key("embedding_length") {
        model_rows.push(("embedding length".to_string(), n.to_string()));
    }
    model_rows.push((
        "quantization".to_string(),
        file_type_name(h.get_u64("general.file_type")).to_string(),
    ));
    if let Some(p) = pooling {
        model_rows.push(("pooling".to_string(), p.name().to_string()));
    }
    // Which tokenizer the file asks for, and for byte-level BPE how it splits words first.
    for (row, k) in [
        ("tokenizer", "tokenizer.ggml.model"),
        ("pre-tokenizer", "tokenizer.ggml.pre"),
    ] {
        if let Some(v) = h.get_str(k) {
            model_rows.push((row.to_string(), show_value(&Value::String(v.into()))));
        }
    }

    let mut out = String::new();
    section(&mut out, "Model", &model_rows);
    // Quiver serves embeddings only; a model with a pooling type (or an encoder) is one.
    let capability = if pooling.is_some_and(|p| p != Pooling::None) || arch.contains("bert") {
        "embedding"
    } else {
        "embedding (last-token pooling)"
    };
    section(
        &mut out,
        "Capabilities",
        &[(capability.to_string(), String::new())],
    );
    let meta: Vec<(String, String)> = h
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), show_value(v)))
        .collect();
    section(&mut out, "Metadata", &meta);
    out
}

fn section(out: &mut String, title: &str, rows: &[(String, String)]) {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    out.push_str(&format!("  {title}\n"));
    for (k, v) in rows {
        if v.is_empty() {
            out.push_str(&format!("    {k}\n"));
        } else {
            out.push_str(&format!("    {k:width$}    {v}\n"));
        }
    }
    out.push('\n');
}

/// One metadata value on one line: long arrays as `[String; 30522]`, long strings cut, control
/// characters escaped so a hostile file cannot drive the terminal.
fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let cut: String = s.chars().take(MAX_STRING_SHOWN).collect();
            let shown = cut.escape_debug().to_string();
            if cut.len() < s.len() {
                format!("{shown}…")
            } else {
                shown
            }
        }
        Value::Array(_, items) if items.len() <= MAX_ARRAY_SHOWN => {
            format!(
                "[{}]",
                items.iter().map(show_value).collect::<Vec<_>>().join(", ")
            )
        }
        other => other.to_string(),
    }
}
