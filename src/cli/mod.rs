//! The `quiver` command line, in Ollama's style: `serve`, `embed`, `show`, `list`, `ps`,
//! `create`, `rm`. `main.rs` only hands over the arguments and the bundled model's bytes.
//!
//! Arguments are parsed by hand: seven subcommands with a flag or two each do not justify a
//! derive-macro dependency (and its build time) in every build of the workspace.

mod args;
mod client;
mod embed;
mod format;
mod show;
mod tables;
mod transfer;

pub use args::{parse_args, Command, USAGE};
pub use format::{human_bytes, human_time, parse_rfc3339};

use crate::store::{ModelEntry, Store};
use std::path::Path;
use std::process::ExitCode;

/// Runs the command line `args` (without the program name). Errors go to stderr as
/// `Error: message` with exit status 1, as Ollama's CLI does.
pub fn main(args: Vec<String>, bundled: Option<&'static [u8]>) -> ExitCode {
    match run(args, bundled) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub type CliResult = Result<(), Box<dyn std::error::Error>>;

pub fn run(args: Vec<String>, bundled: Option<&'static [u8]>) -> CliResult {
    let command = parse_args(&args)?;
    let store = || Store::from_env(bundled);
    match command {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            println!("quiver version {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Serve => {
            // Before anything is opened or computed: see `crate::server::malloc`.
            if let Some(t) = crate::server::malloc::exec_without_thread_caches() {
                eprintln!("malloc: GLIBC_TUNABLES={t}");
            }
            serve(store())
        }
        Command::Bench { args } => Ok(crate::bench::main_args_with(&args, bundled)?),
        Command::Embed { model, texts } => embed::run(&store(), &model, texts),
        Command::Show { model } => show::run(&store(), &model),
        Command::List => tables::list(),
        Command::Ps => tables::ps(),
        Command::Create { name, file } => {
            let entry = store().create(&name, Path::new(&file))?;
            println!(
                "created {} ({})",
                entry.name.display_short(),
                &entry.digest[..12]
            );
            Ok(())
        }
        Command::Pull { name, insecure } => transfer::pull(&store(), &name, insecure),
        Command::Push { name, insecure } => transfer::push(&store(), &name, insecure),
        Command::Rm { names } => {
            let store = store();
            for name in names {
                store.remove(&name)?;
                println!("deleted '{name}'");
            }
            Ok(())
        }
    }
}

/// `quiver serve`.
fn serve(store: Store) -> CliResult {
    let config = crate::server::ServerConfig::from_env()?;
    crate::server::serve(config, std::sync::Arc::new(store))?;
    Ok(())
}

/// A model given on the command line: a path when it ends in `.gguf`, otherwise a name in the
/// store. The rule looks only at the text, never at what happens to exist on disk, so a name
/// like `../../etc/passwd` is always judged (and refused) as a name.
pub fn resolve_model(store: &Store, model: &str) -> Result<ModelEntry, crate::store::StoreError> {
    if model.to_ascii_lowercase().ends_with(".gguf") {
        store.resolve_path(Path::new(model))
    } else {
        store.resolve(model)
    }
}
