//! The `quiver` command line: hands the arguments and the bundled model to `quiver::cli`.

use std::process::ExitCode;

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
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect()
    {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("Error: argument {bad:?} is not valid UTF-8");
            return ExitCode::FAILURE;
        }
    };
    quiver::cli::main(args, bundled())
}
