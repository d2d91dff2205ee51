//! `stratus config`: the contexts of the config file, as `kubectl config` manages them.

use std::path::Path;

use crate::args::ConfigCommand;
use crate::config::{Config, Context, writable};
use crate::error::{Error, Result};
use crate::{Environment, Io, table};

pub(crate) fn run(
    cmd: ConfigCommand,
    server: Option<&str>,
    namespace: Option<&str>,
    env: &Environment,
    io: &mut Io,
) -> Result<()> {
    let path = env.config_path.as_deref();
    let mut config = Config::load(path)?;
    let out = io.out.as_mut();
    match cmd {
        ConfigCommand::GetContexts => {
            let header: Vec<String> = ["CURRENT", "NAME", "SERVER", "NAMESPACE", "USER"].map(String::from).into();
            let rows: Vec<Vec<String>> = config
                .contexts
                .iter()
                .map(|c| {
                    vec![
                        if c.name == config.current_context { "*" } else { "" }.to_string(),
                        c.name.clone(),
                        c.server.clone(),
                        c.namespace.clone(),
                        // Who is logged in; the last user once logged out.
                        c.user.clone(),
                    ]
                })
                .collect();
            out.write_all(table::render(&header, &rows, false).as_bytes())?;
        }
        ConfigCommand::CurrentContext => {
            if config.current_context.is_empty() {
                return Err(config_error(path, "current-context is not set".into()));
            }
            writeln!(out, "{}", config.current_context)?;
        }
        ConfigCommand::UseContext { name } => {
            if config.context(&name).is_none() {
                return Err(config_error(path, format!("no context exists with the name {name:?}")));
            }
            config.current_context = name.clone();
            config.save(writable(path)?)?;
            writeln!(out, "Switched to context {name:?}.")?;
        }
        ConfigCommand::SetContext { name } => {
            let verb = if config.context(&name).is_some() {
                "modified"
            } else {
                config.contexts.push(Context { name: name.clone(), ..Default::default() });
                "created"
            };
            for context in config.contexts.iter_mut().filter(|c| c.name == name) {
                if let Some(server) = server {
                    context.server = server.to_string();
                }
                if let Some(namespace) = namespace {
                    context.namespace = namespace.to_string();
                }
            }
            config.save(writable(path)?)?;
            writeln!(out, "Context {name:?} {verb}.")?;
        }
        ConfigCommand::DeleteContext { name } => {
            let before = config.contexts.len();
            config.contexts.retain(|c| c.name != name);
            if config.contexts.len() == before {
                return Err(config_error(path, format!("no context exists with the name {name:?}")));
            }
            if config.current_context == name {
                config.current_context.clear();
            }
            let path = writable(path)?;
            config.save(path)?;
            writeln!(out, "Deleted context {name:?} from {}.", path.display())?;
        }
        ConfigCommand::View { raw } => {
            if !raw {
                // As kubectl: a file shown on screen or pasted in a bug report gives no token away.
                config.contexts.iter_mut().filter(|c| !c.token.is_empty()).for_each(|c| c.token = "REDACTED".into());
            }
            let text = yaml_serde::to_string(&config).map_err(|e| Error::Output(std::io::Error::other(e)))?;
            out.write_all(text.as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn config_error(path: Option<&Path>, reason: String) -> Error {
    Error::Config { path: path.map_or_else(|| "~/.stratus/config".to_string(), |p| p.display().to_string()), reason }
}
