//! The API server's serving certificate: issued by the cluster CA kept in the data directory
//! (made on first start) and renewed before it expires, or supplied as files and read again
//! when they change. Either way the new certificate is served to new connections at once, and
//! open connections keep the one they started with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stratus_auth::pki::{self, Ca, Usage};
use stratus_support::tls::Certificates;
use tokio::sync::watch;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum ServingTls {
    /// Issued by the cluster CA in `pki_dir` (`ca.crt`, `ca.key`, made if missing) for `names`
    /// (DNS names and IP addresses), valid for `validity` and renewed at two thirds of it. The
    /// certificate and key are also written to `pki_dir` as `<part>.crt` and `<part>.key`.
    Issued { pki_dir: PathBuf, names: Vec<String>, validity: Duration },
    /// Supplied files, read again when they change (checked every `recheck`); `ca` is the
    /// bundle clients are told to trust.
    Files { cert: PathBuf, key: PathBuf, ca: PathBuf, recheck: Duration },
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the cluster CA: {0}")]
    Pki(#[from] pki::Error),
    #[error("the serving certificate: {0}")]
    Tls(#[from] stratus_support::tls::Error),
    #[error("reading the CA bundle {path}: {source}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A server's certificates, what its clients trust, and the task that keeps them current.
pub struct Serving {
    pub certificates: Arc<Certificates>,
    /// The CA certificate(s), PEM, that clients verify the server with.
    pub ca_pem: String,
    /// The cluster CA, when it is the one in the data directory (it can sign more).
    pub ca: Option<Arc<Ca>>,
    source: ServingTls,
    part: String,
    /// When the served certificate stops being valid (issued ones only).
    not_after: Option<SystemTime>,
    /// The modification times of supplied files when they were read (none for issued ones).
    read_stamp: Option<(SystemTime, SystemTime)>,
}

impl ServingTls {
    /// The same kind of certificate for another part listening on `listen`: issued by the
    /// cluster CA in the same directory, for the names a server on this machine is reached by;
    /// `None` for supplied files (each part then needs files of its own).
    pub fn for_listener(&self, listen: SocketAddr) -> Option<ServingTls> {
        match self {
            ServingTls::Issued { pki_dir, validity, .. } => Some(ServingTls::Issued {
                pki_dir: pki_dir.clone(),
                names: ServingTls::default_names(listen, &[]),
                validity: *validity,
            }),
            ServingTls::Files { .. } => None,
        }
    }

    /// How long the certificates the cluster CA issues here are valid.
    pub fn validity(&self) -> Duration {
        match self {
            ServingTls::Issued { validity, .. } => *validity,
            ServingTls::Files { .. } => pki::SERVING_VALIDITY,
        }
    }

    /// The names a server on this machine is reached by: localhost, the loopback addresses,
    /// the host's name, the listening address when it is a specific one, and `extra`.
    pub fn default_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if let Some(host) = stratus_support::hostname().filter(|h| pki::is_subject_name(h)) {
            names.push(host);
        }
        if !listen.ip().is_unspecified() {
            names.push(listen.ip().to_string());
        }
        for name in extra {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// Loads or makes the certificate of `part` (e.g. `apiserver`).
    pub fn prepare(&self, part: &str) -> Result<Serving, Error> {
        let certificates = Certificates::new();
        let serving = match self {
            ServingTls::Issued { pki_dir, names, validity } => {
                let ca = Arc::new(Ca::load_or_create(pki_dir)?);
                let not_after = issue(&ca, &certificates, pki_dir, part, names, *validity)?;
                Serving {
                    certificates,
                    ca_pem: ca.cert_pem().to_owned(),
                    ca: Some(ca),
                    source: self.clone(),
                    part: part.to_owned(),
                    not_after: Some(not_after),
                    read_stamp: None,
                }
            }
            ServingTls::Files { cert, key, ca, .. } => {
                // Stamped before reading: a change made while reading is read again later.
                let read_stamp = file_stamp(cert, key);
                certificates.set_default(stratus_support::tls::read_certified_key(cert, key)?);
                let ca_pem =
                    std::fs::read_to_string(ca).map_err(|source| Error::ReadCa { path: ca.clone(), source })?;
                stratus_support::tls::certificates(ca_pem.as_bytes(), &ca.display().to_string())?;
                Serving {
                    certificates,
                    ca_pem,
                    ca: None,
                    source: self.clone(),
                    part: part.to_owned(),
                    not_after: None,
                    read_stamp,
                }
            }
        };
        Ok(serving)
    }
}

/// Issues `part`'s certificate for `names`, serves it, and writes it beside the CA.
fn issue(
    ca: &Ca,
    certificates: &Certificates,
    pki_dir: &Path,
    part: &str,
    names: &[String],
    validity: Duration,
) -> Result<SystemTime, Error> {
    let issued = ca.issue(Usage::Server, names, validity)?;
    let key = stratus_support::tls::certified_key(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), part)?;
    pki::write_private(&pki_dir.join(format!("{part}.key")), issued.key_pem.as_bytes())?;
    pki::write_private(&pki_dir.join(format!("{part}.crt")), issued.cert_pem.as_bytes())?;
    certificates.set_default(key);
    Ok(issued.not_after)
}

impl Serving {
    /// Keeps the certificate current until `stop` turns true: an issued one is renewed when two
    /// thirds of its validity have passed (a failed renewal is retried a minute later, or
    /// sooner near expiry); supplied files are read again when their modification time
    /// changes.
    pub async fn keep_current(self, mut stop: watch::Receiver<bool>) {
        let mut read_stamp = self.read_stamp;
        let mut not_after = self.not_after;
        loop {
            let wait = match (&self.source, not_after) {
                (ServingTls::Issued { validity, .. }, Some(end)) => {
                    let left = end.duration_since(SystemTime::now()).unwrap_or_default();
                    left.saturating_sub(*validity / 3)
                }
                (ServingTls::Files { recheck, .. }, _) => *recheck,
                (ServingTls::Issued { .. }, None) => Duration::from_secs(60),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match &self.source {
                ServingTls::Issued { pki_dir, names, validity } => {
                    let Some(ca) = &self.ca else { return };
                    match issue(ca, &self.certificates, pki_dir, &self.part, names, *validity) {
                        Ok(end) => {
                            tracing::info!(part = %self.part, "renewed the serving certificate");
                            not_after = Some(end);
                        }
                        Err(e) => {
                            tracing::error!(part = %self.part, error = %e, "renewing the serving certificate failed");
                            // Retry in a minute, or at a tenth of what is left if that is sooner,
                            // but never in a tight loop once the certificate has run out.
                            let left = not_after
                                .and_then(|end| end.duration_since(SystemTime::now()).ok())
                                .unwrap_or_default();
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_secs(60).min(left / 10).max(Duration::from_secs(1))) => {}
                                _ = stop.wait_for(|s| *s) => return,
                            }
                        }
                    }
                }
                ServingTls::Files { cert, key, .. } => {
                    let stamp = file_stamp(cert, key);
                    if stamp == read_stamp {
                        continue;
                    }
                    match stratus_support::tls::read_certified_key(cert, key) {
                        Ok(certified) => {
                            self.certificates.set_default(certified);
                            read_stamp = stamp;
                            tracing::info!(cert = %cert.display(), "serving the changed certificate");
                        }
                        // Half-written files are read again at the next check.
                        Err(e) => tracing::warn!(error = %e, "keeping the current certificate"),
                    }
                }
            }
        }
    }
}

/// Keeps `identity` (a client certificate the cluster CA in this process issued, which expires
/// at `not_after`) current until `stop`: `issue` makes a new one when two thirds of the
/// current one's life (from `issued`) have passed, presented (or served) on new connections
/// at once. A failed renewal is retried a minute later (sooner near expiry, never in a tight
/// loop). `what` names the certificate in logs.
pub async fn keep_issued_current(
    what: String,
    identity: stratus_support::tls::ClientIdentity,
    issue: impl Fn() -> Result<pki::Issued, pki::Error> + Send,
    mut issued: SystemTime,
    mut not_after: SystemTime,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let life = not_after.duration_since(issued).unwrap_or_default();
        let wait = (issued + life * 2 / 3).duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = SystemTime::now();
        let renewed = issue().map_err(Error::from).and_then(|new| {
            identity.set(new.cert_pem.as_bytes(), new.key_pem.as_bytes()).map_err(Error::from)?;
            Ok(new.not_after)
        });
        match renewed {
            Ok(end) => {
                tracing::info!(certificate = %what, "renewed the certificate");
                (issued, not_after) = (now, end);
            }
            Err(e) => {
                tracing::error!(certificate = %what, error = %e, "renewing the certificate failed");
                let left = not_after.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(60).min(left / 10).max(Duration::from_secs(1))) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// A certificate `issue` makes now, held in a [`stratus_support::tls::ClientIdentity`] (to
/// present or serve), and when it was issued and expires, for [`keep_issued_current`].
pub fn issue_identity(
    issue: &impl Fn() -> Result<pki::Issued, pki::Error>,
) -> Result<(stratus_support::tls::ClientIdentity, SystemTime, SystemTime), Error> {
    let now = SystemTime::now();
    let issued = issue()?;
    let identity = stratus_support::tls::ClientIdentity::new(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())?;
    Ok((identity, now, issued.not_after))
}

/// The modification times of a certificate file and its key file.
fn file_stamp(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((modified(cert)?, modified(key)?))
}

/// A certificate the gateway serves for `name` (`*.example.com` for every subdomain; none: the
/// default one), from PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppliedCertificate {
    pub name: Option<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl std::str::FromStr for SuppliedCertificate {
    type Err = String;

    /// `NAME=CERT,KEY` or `CERT,KEY` (the default certificate).
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, files) = match s.split_once('=') {
            Some((name, files)) => {
                let name = name.trim().to_ascii_lowercase();
                if !pki::is_subject_name(&name) {
                    return Err(format!("{name:?} is not a host name (or *.domain)"));
                }
                (Some(name), files)
            }
            None => (None, s),
        };
        let (cert, key) = files
            .split_once(',')
            .filter(|(c, k)| !c.is_empty() && !k.is_empty())
            .ok_or_else(|| format!("{s:?}: expected [NAME=]CERT_FILE,KEY_FILE"))?;
        Ok(SuppliedCertificate { name, cert: cert.into(), key: key.into() })
    }
}

/// How the gateway serves HTTPS: supplied certificates by name, and, when the cluster CA is
/// in this process (`stratus up`), certificates it issues for hosts under the domain.
#[derive(Debug, Clone, Default)]
pub struct GatewayTls {
    pub certificates: Vec<SuppliedCertificate>,
    /// Issue certificates for hosts under the gateway's domain with the cluster CA.
    pub issue_with_cluster_ca: bool,
}

impl GatewayTls {
    /// The supplied certificates, read now.
    pub fn supplied(&self) -> Result<Arc<Certificates>, Error> {
        let certificates = Certificates::new();
        for c in &self.certificates {
            let key = stratus_support::tls::read_certified_key(&c.cert, &c.key)?;
            match &c.name {
                Some(name) => certificates.set(name, key),
                None => certificates.set_default(key),
            }
        }
        Ok(certificates)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Waits (bounded) until the default certificate of `certs` is another than `old`.
    async fn replaced(certs: &Certificates, old: &Arc<rustls::sign::CertifiedKey>) -> bool {
        tokio::time::timeout(Duration::from_secs(20), async {
            while certs.get(None).is_some_and(|now| Arc::ptr_eq(&now, old)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn an_issued_certificate_is_renewed_at_two_thirds_of_its_life() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ServingTls::Issued {
            pki_dir: dir.path().join("pki"),
            names: vec!["127.0.0.1".into()],
            validity: Duration::from_secs(3),
        };
        let serving = tls.prepare("apiserver").unwrap();
        let certs = Arc::clone(&serving.certificates);
        let first = certs.get(None).unwrap();
        let written = std::fs::read(dir.path().join("pki/apiserver.crt")).unwrap();
        let (_stop, stopping) = watch::channel(false);
        tokio::spawn(serving.keep_current(stopping));
        assert!(replaced(&certs, &first).await, "the certificate was not renewed");
        // The renewed one is written beside the CA too.
        assert_ne!(std::fs::read(dir.path().join("pki/apiserver.crt")).unwrap(), written);
    }

    #[tokio::test]
    async fn supplied_files_are_read_again_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate().unwrap();
        let write = |name: &str| {
            let issued = ca.issue(Usage::Server, &[name.into()], Duration::from_secs(3600)).unwrap();
            pki::write_private(&dir.path().join("tls.key"), issued.key_pem.as_bytes()).unwrap();
            pki::write_private(&dir.path().join("tls.crt"), issued.cert_pem.as_bytes()).unwrap();
        };
        write("first.example.com");
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        let tls = ServingTls::Files {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            ca: dir.path().join("ca.crt"),
            recheck: Duration::from_millis(50),
        };
        let serving = tls.prepare("apiserver").unwrap();
        assert_eq!(serving.ca_pem, ca.cert_pem());
        let certs = Arc::clone(&serving.certificates);
        let first = certs.get(None).unwrap();
        let (_stop, stopping) = watch::channel(false);
        tokio::spawn(serving.keep_current(stopping));
        write("second.example.com");
        // A coarse file system clock may give the rewrite the same mtime: make it differ.
        let later = std::fs::metadata(dir.path().join("tls.crt")).unwrap().modified().unwrap() + Duration::from_secs(5);
        for file in ["tls.crt", "tls.key"] {
            std::fs::File::options().write(true).open(dir.path().join(file)).unwrap().set_modified(later).unwrap();
        }
        assert!(replaced(&certs, &first).await, "the changed files were not served");
    }

    #[test]
    fn supplied_certificate_flags_parse() {
        let named: SuppliedCertificate = "*.example.com=c.pem,k.pem".parse().unwrap();
        assert_eq!(named.name.as_deref(), Some("*.example.com"));
        let default: SuppliedCertificate = "c.pem,k.pem".parse().unwrap();
        assert_eq!((default.name, default.cert, default.key), (None, "c.pem".into(), "k.pem".into()));
        assert!("c.pem".parse::<SuppliedCertificate>().is_err());
        assert!("bad name=c.pem,k.pem".parse::<SuppliedCertificate>().is_err());
    }
}
