//! The gateway's HTTPS certificates: one per domain, chosen by the name the client asks for
//! (SNI). Supplied certificates are served for the names they were given for; with the cluster
//! CA at hand, a host under the cluster domain that no supplied certificate covers gets a
//! certificate for `*.{namespace}.{domain}` issued on its first handshake and kept (renewed
//! once two thirds of its life have passed). Wildcards cover one label, so one certificate per
//! namespace serves every service in it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use stratus_auth::pki::{Ca, Usage};
use stratus_support::tls::{Certificates, certified_key};

/// The most certificates issued on demand: names come from clients, so the cache is bounded.
const MAX_ISSUED: usize = 4096;

/// How long a certificate issued on demand is valid.
const ISSUED_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// Picks the certificate of a handshake: a supplied one for the name, else one issued by the
/// cluster CA for names under the domain, else the default.
pub struct GatewayCertificates {
    supplied: Arc<Certificates>,
    issuer: Option<(Arc<Ca>, String)>,
    issued: Mutex<HashMap<String, (Arc<CertifiedKey>, SystemTime)>>,
}

impl std::fmt::Debug for GatewayCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCertificates").field("domain", &self.issuer.as_ref().map(|(_, d)| d)).finish()
    }
}

impl GatewayCertificates {
    /// Serves `supplied` (by name, and its default); with `ca`, issues certificates for hosts
    /// under `domain` that `supplied` does not cover.
    pub fn new(supplied: Arc<Certificates>, ca: Option<Arc<Ca>>, domain: &str) -> Arc<GatewayCertificates> {
        let domain = domain.trim_matches('.').to_ascii_lowercase();
        Arc::new(GatewayCertificates { supplied, issuer: ca.map(|ca| (ca, domain)), issued: Mutex::default() })
    }

    /// A TLS configuration for the gateway's HTTPS listener: HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, stratus_support::tls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(stratus_support::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(stratus_support::tls::Error::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The wildcard a host under the domain is served with: `*.{namespace}.{domain}` for
    /// `{service}.{namespace}.{domain}`, `*.{domain}` for a host one label under it.
    fn wildcard_for(&self, host: &str) -> Option<String> {
        let (_, domain) = self.issuer.as_ref()?;
        let under = host.strip_suffix(domain.as_str())?.strip_suffix('.')?;
        let (_, parent) = host.split_once('.')?;
        (!under.is_empty() && stratus_auth::pki::is_subject_name(host)).then(|| format!("*.{parent}"))
    }

    /// The certificate issued for `wildcard`, issuing (or renewing) it when needed.
    fn issued(&self, wildcard: &str) -> Option<Arc<CertifiedKey>> {
        let (ca, _) = self.issuer.as_ref()?;
        let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        let now = SystemTime::now();
        if let Some((key, renew_at)) = issued.get(wildcard)
            && now < *renew_at
        {
            return Some(Arc::clone(key));
        }
        if issued.len() >= MAX_ISSUED && !issued.contains_key(wildcard) {
            tracing::warn!(name = wildcard, "too many certificates issued on demand; serving the default");
            return None;
        }
        let made = ca.issue(Usage::Server, &[wildcard.to_owned()], ISSUED_VALIDITY).map_err(|e| e.to_string());
        let key = made.and_then(|c| {
            certified_key(c.cert_pem.as_bytes(), c.key_pem.as_bytes(), wildcard).map_err(|e| e.to_string())
        });
        match key {
            Ok(key) => {
                issued.insert(wildcard.to_owned(), (Arc::clone(&key), now + ISSUED_VALIDITY * 2 / 3));
                tracing::info!(name = wildcard, "issued a certificate");
                Some(key)
            }
            Err(e) => {
                tracing::error!(name = wildcard, error = %e, "issuing a certificate failed");
                None
            }
        }
    }
}

impl ResolvesServerCert for GatewayCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        if let Some(name) = &name
            && let Some(found) = self.supplied.get_named(name)
        {
            return Some(found);
        }
        if let Some(wildcard) = name.as_deref().and_then(|n| self.wildcard_for(n))
            && let Some(found) = self.issued(&wildcard)
        {
            return Some(found);
        }
        self.supplied.get(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_under_the_domain_get_their_namespace_s_wildcard() {
        let ca = Arc::new(Ca::generate().unwrap());
        let certs = GatewayCertificates::new(Certificates::new(), Some(ca), "example.com");
        assert_eq!(certs.wildcard_for("hello.default.example.com").as_deref(), Some("*.default.example.com"));
        assert_eq!(certs.wildcard_for("default.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(certs.wildcard_for("example.com"), None);
        assert_eq!(certs.wildcard_for("hello.default.example.org"), None);
        assert_eq!(certs.wildcard_for("evilexample.com"), None);
        assert_eq!(certs.wildcard_for("bad_name.default.example.com"), None);
        // Issued once, then kept.
        let first = certs.issued("*.default.example.com").unwrap();
        let again = certs.issued("*.default.example.com").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }
}
