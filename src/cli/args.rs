//! The command line's grammar.

/// What the user asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Serve,
    /// `texts` empty: read one input per line from stdin.
    Embed {
        model: String,
        texts: Vec<String>,
    },
    Show {
        model: String,
    },
    List,
    Ps,
    Create {
        name: String,
        file: String,
    },
    Rm {
        names: Vec<String>,
    },
    /// `quiver pull [--insecure] NAME` / `quiver push [--insecure] NAME`.
    Pull {
        name: String,
        insecure: bool,
    },
    Push {
        name: String,
        insecure: bool,
    },
    /// `quiver bench …`: its own flags, parsed by `quiver::bench`.
    Bench {
        args: Vec<String>,
    },
}

pub const USAGE: &str = "\
Quiver: text embeddings through Ollama's API

Usage:
  quiver [command]

Commands:
  serve       Start the server (address from OLLAMA_HOST, default 127.0.0.1:11434)
  embed       Embed text: quiver embed [-m MODEL] [TEXT...] (stdin lines without TEXT)
  show        Show a model: quiver show MODEL
  list        List models the running server offers (alias: ls)
  ps          List models the running server has loaded
  create      Add a GGUF file to the store: quiver create NAME -f FILE.gguf
  rm          Remove models from the store: quiver rm NAME...
  pull        Pull a model from a registry: quiver pull [--insecure] NAME
  push        Push a model to a registry: quiver push [--insecure] NAME
  bench       Measure embeddings/s and tokens/s: quiver bench [--model M] [--http] [--json F]
  help        Show this help

Flags:
  -h, --help      help
  -v, --version   version

Models come from QUIVER_MODELS, then OLLAMA_MODELS or ~/.ollama/models (Ollama's layout),
then the bundled all-minilm. MODEL may also be a path to a .gguf file.
";

fn usage_err(msg: &str) -> String {
    format!("{msg}\nRun 'quiver help' for usage.")
}

/// Parses `args` (without the program name).
pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let Some((first, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    let wants_help = rest.iter().any(|a| a == "-h" || a == "--help");
    let command = match first.as_str() {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "-v" | "--version" | "version" => return Ok(Command::Version),
        "bench" => {
            return Ok(Command::Bench {
                args: rest.to_vec(),
            })
        }
        _ if wants_help => return Ok(Command::Help),
        "serve" | "start" => {
            no_more(rest)?;
            Command::Serve
        }
        "list" | "ls" => {
            no_more(rest)?;
            Command::List
        }
        "ps" => {
            no_more(rest)?;
            Command::Ps
        }
        "embed" => {
            let mut model = None;
            let mut texts = Vec::new();
            let mut it = rest.iter();
            let mut only_text = false;
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--" if !only_text => only_text = true,
                    "-m" | "--model" if !only_text => {
                        model = Some(
                            it.next()
                                .ok_or_else(|| usage_err("-m needs a model name or .gguf path"))?
                                .clone(),
                        )
                    }
                    s if !only_text && s.starts_with("--model=") => {
                        model = Some(s["--model=".len()..].to_string())
                    }
                    s if !only_text && s.starts_with('-') && s.len() > 1 => {
                        return Err(usage_err(&format!("unknown flag {s:?} for embed")))
                    }
                    _ => texts.push(a.clone()),
                }
            }
            Command::Embed {
                model: model.unwrap_or_else(|| crate::store::bundled::NAME.to_string()),
                texts,
            }
        }
        "show" => match rest {
            [model] => Command::Show {
                model: model.clone(),
            },
            _ => return Err(usage_err("show takes one model: quiver show MODEL")),
        },
        "create" => {
            let mut name = None;
            let mut file = None;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-f" | "--file" => {
                        file = Some(
                            it.next()
                                .ok_or_else(|| usage_err("-f needs a .gguf file"))?
                                .clone(),
                        )
                    }
                    s if s.starts_with('-') && s.len() > 1 => {
                        return Err(usage_err(&format!("unknown flag {s:?} for create")))
                    }
                    _ if name.is_none() => name = Some(a.clone()),
                    _ => return Err(usage_err("create takes one name")),
                }
            }
            match (name, file) {
                (Some(name), Some(file)) => Command::Create { name, file },
                _ => return Err(usage_err("usage: quiver create NAME -f FILE.gguf")),
            }
        }
        "rm" => {
            if rest.is_empty() {
                return Err(usage_err("usage: quiver rm NAME..."));
            }
            Command::Rm {
                names: rest.to_vec(),
            }
        }
        "pull" => {
            let (name, insecure) = transfer_args("pull", rest)?;
            Command::Pull { name, insecure }
        }
        "push" => {
            let (name, insecure) = transfer_args("push", rest)?;
            Command::Push { name, insecure }
        }
        other => return Err(usage_err(&format!("unknown command {other:?}"))),
    };
    Ok(command)
}

/// `[--insecure] NAME` for pull and push.
fn transfer_args(verb: &str, rest: &[String]) -> Result<(String, bool), String> {
    let mut name = None;
    let mut insecure = false;
    for a in rest {
        match a.as_str() {
            "--insecure" => insecure = true,
            s if s.starts_with('-') => {
                return Err(usage_err(&format!("unknown flag {s:?} for {verb}")))
            }
            _ if name.is_none() => name = Some(a.clone()),
            _ => return Err(usage_err(&format!("{verb} takes one model name"))),
        }
    }
    let name = name.ok_or_else(|| usage_err(&format!("usage: quiver {verb} [--insecure] NAME")))?;
    Ok((name, insecure))
}

fn no_more(rest: &[String]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(a) => Err(usage_err(&format!("unexpected argument {a:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_each_command() {
        assert_eq!(p(&[]), Ok(Command::Help));
        assert_eq!(p(&["--version"]), Ok(Command::Version));
        assert_eq!(p(&["serve"]), Ok(Command::Serve));
        assert_eq!(p(&["ls"]), Ok(Command::List));
        assert_eq!(
            p(&["embed", "-m", "x", "a", "b"]),
            Ok(Command::Embed {
                model: "x".into(),
                texts: vec!["a".into(), "b".into()]
            })
        );
        assert_eq!(
            p(&["embed", "--", "-m"]),
            Ok(Command::Embed {
                model: "all-minilm".into(),
                texts: vec!["-m".into()]
            })
        );
        assert_eq!(
            p(&["create", "-f", "a.gguf", "name"]),
            Ok(Command::Create {
                name: "name".into(),
                file: "a.gguf".into()
            })
        );
        assert_eq!(
            p(&["rm", "a", "b"]),
            Ok(Command::Rm {
                names: vec!["a".into(), "b".into()]
            })
        );
        assert_eq!(p(&["show", "m", "--help"]), Ok(Command::Help));
        assert_eq!(
            p(&["pull", "--insecure", "h:5000/a/b"]),
            Ok(Command::Pull {
                name: "h:5000/a/b".into(),
                insecure: true
            })
        );
        assert_eq!(
            p(&["push", "a"]),
            Ok(Command::Push {
                name: "a".into(),
                insecure: false
            })
        );
    }

    #[test]
    fn refuses_malformed_command_lines() {
        for bad in [
            &["frobnicate"][..],
            &["embed", "-m"],
            &["embed", "-x", "t"],
            &["show"],
            &["show", "a", "b"],
            &["create", "name"],
            &["create", "-f"],
            &["rm"],
            &["serve", "extra"],
            &["pull"],
            &["pull", "a", "b"],
            &["push", "--secure", "a"],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }
}
