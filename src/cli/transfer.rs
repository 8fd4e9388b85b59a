//! `quiver pull` and `quiver push`: the registry client run in this process, with a progress bar
//! per layer on a terminal (bytes, rate, ETA) and plain lines otherwise. Ctrl-C stops between
//! reads and leaves the partial download for the next `pull` to resume; a second Ctrl-C exits.

use super::CliResult;
use crate::registry::{self, Options, Progress};
use crate::store::Store;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;

pub fn pull(store: &Store, name: &str, insecure: bool) -> CliResult {
    run(store, name, insecure, registry::pull)
}

pub fn push(store: &Store, name: &str, insecure: bool) -> CliResult {
    run(store, name, insecure, registry::push)
}

type Transfer =
    fn(&Store, &str, &Options, &mut dyn FnMut(Progress)) -> Result<(), registry::RegistryError>;

fn run(store: &Store, name: &str, insecure: bool, transfer: Transfer) -> CliResult {
    let opts = Options::from_env(insecure);
    // The first Ctrl-C sets the flag (the transfer stops cleanly); the second exits at once.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, opts.cancel.clone())?;
        signal_hook::flag::register(sig, opts.cancel.clone())?;
    }
    let mut view = View::new(std::io::stderr().is_terminal());
    let result = transfer(store, name, &opts, &mut |p| view.show(&p));
    view.finish();
    Ok(result?)
}

/// Bars on a terminal, lines elsewhere.
struct View {
    bars: Option<MultiProgress>,
    layers: HashMap<String, ProgressBar>,
    /// Plain mode: the last line printed, so repeated byte counts are not printed again.
    last: String,
    spinner: Option<ProgressBar>,
}

impl View {
    fn new(tty: bool) -> View {
        View {
            bars: tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            layers: HashMap::new(),
            last: String::new(),
            spinner: None,
        }
    }

    fn show(&mut self, p: &Progress) {
        let Some(bars) = &self.bars else {
            // One line per status change and one when a layer is complete.
            let line = match (p.total, p.completed) {
                (Some(t), Some(c)) if c >= t => format!("{} {}", p.status, super::human_bytes(t)),
                (Some(_), Some(_)) => p.status.clone(),
                _ => p.status.clone(),
            };
            if line != self.last {
                eprintln!("{line}");
                self.last = line;
            }
            return;
        };
        match (&p.digest, p.total, p.completed) {
            (Some(d), Some(total), Some(done)) => {
                if let Some(s) = self.spinner.take() {
                    s.finish();
                }
                let bar = self.layers.entry(d.clone()).or_insert_with(|| {
                    let b = bars.add(ProgressBar::new(total));
                    b.set_style(
                        ProgressStyle::with_template(
                            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    b.set_message(p.status.clone());
                    b
                });
                bar.set_position(done);
                if done >= total {
                    bar.finish();
                }
            }
            _ => {
                if let Some(s) = self.spinner.take() {
                    s.finish();
                }
                let s = bars.add(ProgressBar::new_spinner());
                s.set_message(p.status.clone());
                s.tick();
                self.spinner = Some(s);
            }
        }
    }

    fn finish(&mut self) {
        for b in self.layers.values() {
            if !b.is_finished() {
                b.abandon();
            }
        }
        if let Some(s) = self.spinner.take() {
            s.finish();
        }
    }
}
