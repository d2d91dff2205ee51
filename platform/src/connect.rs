//! The flags of every standalone part that talks to an API server of another process: where
//! the server is, and the token the part presents (its service account's, made with
//! `stratus create serviceaccount … --cluster-role system:…` and `stratus create token`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use stratus_client::Credentials;

use crate::Builder;

/// How often a token file is read again, so that a renewed token is picked up.
const REREAD: Duration = Duration::from_secs(30);

/// `--apiserver`, `--certificate-authority`, `--token-file`, `--token`.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiFlags {
    /// The API server, or several separated by commas (`https://a:7070,https://b:7070`): calls go
    /// to the next when one cannot be reached.
    #[arg(long, env = "STRATUS_SERVER", default_value = stratus_client::DEFAULT_SERVER)]
    pub apiserver: String,
    /// A file holding this part's token (read again every 30 s, so it can be renewed in place).
    #[arg(long, env = "STRATUS_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// The CA bundle (PEM) that verifies the API server's certificate: the cluster CA,
    /// DATA_DIR/pki/ca.crt on the API server's machine.
    #[arg(long, env = "STRATUS_CERTIFICATE_AUTHORITY", value_name = "PATH")]
    pub certificate_authority: Option<PathBuf>,
    /// This part's token (prefer --token-file: a flag shows in the process list).
    #[arg(long, env = "STRATUS_TOKEN", hide_env_values = true, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
}

/// Why the token or the CA could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} {path} failed: {source}")]
pub struct TokenFileError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl ApiFlags {
    /// A builder connecting to the API with these credentials. The token file must be readable
    /// now; later read errors keep the last token.
    pub fn builder(&self) -> Result<Builder, TokenFileError> {
        let credentials = match (&self.token_file, &self.token) {
            (Some(path), _) => file_credentials(path.clone())?,
            (None, Some(token)) => Credentials::Token(token.trim().into()),
            (None, None) => Credentials::None,
        };
        let mut builder = Builder::connect(self.apiserver.clone()).credentials(credentials);
        if let Some(path) = &self.certificate_authority {
            let ca = std::fs::read_to_string(path).map_err(|source| TokenFileError {
                what: "the certificate authority",
                path: path.clone(),
                source,
            })?;
            builder = builder.certificate_authority(ca);
        }
        Ok(builder)
    }
}

fn read_token(path: &PathBuf) -> Result<String, TokenFileError> {
    std::fs::read_to_string(path).map(|t| t.trim().to_string()).map_err(|source| TokenFileError {
        what: "the token file",
        path: path.clone(),
        source,
    })
}

fn file_credentials(path: PathBuf) -> Result<Credentials, TokenFileError> {
    let held = Mutex::new((read_token(&path)?, Instant::now()));
    Ok(Credentials::Source(Arc::new(move || {
        let mut held = held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.1.elapsed() >= REREAD {
            match read_token(&path) {
                Ok(token) => *held = (token, Instant::now()),
                Err(e) => tracing::warn!(error = %e, "keeping the last token"),
            }
        }
        held.0.clone()
    })))
}
