//! `quiver bench` as a cargo bench target, until the CLI arm is wired:
//! `cargo bench --bench quiver_bench -- --model fixtures/all-minilm-f16.gguf --threads 2 --http`
//! (see `quiver::bench::USAGE`). No bundled model here: pass a `.gguf` path or a store name.

fn main() -> std::process::ExitCode {
    // `cargo bench` appends `--bench` to the arguments of harness-less targets.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match quiver::bench::main_args(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
