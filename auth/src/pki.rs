//! The cluster's certificate authority: generated once into the data directory, it signs the
//! API server's and the gateway's serving certificates (and, later, nodes' client
//! certificates), and every client of the cluster trusts it instead of the system's roots, as
//! kubeadm's cluster CA.
//!
//! Keys are ECDSA P-256; certificates are X.509 v3 with the extensions WebPKI verifiers ask
//! for (basic constraints and key usages on the CA, subject alternative names and extended key
//! usages on leaves).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

/// The CA's subject. A CA read back from disk is rebuilt with it, so it must never change.
const CA_COMMON_NAME: &str = "stratus-ca";
const ORGANIZATION: &str = "Stratus";

/// How long a generated CA is valid: ten years, as kubeadm's.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How long a generated serving certificate is valid by default; it is renewed at two thirds.
pub const SERVING_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// Leaves start being valid a little before they are made, for clocks slightly behind.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The CA's certificate and key files in a PKI directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

/// What can go wrong making or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating {what} failed: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PEM private key this CA can sign with: {source}")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{0}: holds a key but no certificate beside it (or the reverse); remove both to make a new CA")]
    HalfCa(PathBuf),
    #[error("{name:?} is not a DNS name or IP address a certificate can name")]
    BadName { name: String },
    #[error("not a certificate signing request this CA signs: {0}")]
    BadRequest(String),
    #[error("{what}: not an X.509 certificate: {detail}")]
    BadCertificate { what: String, detail: String },
}

/// A certificate with its private key, both PEM, and when it stops being valid.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Issued").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server: names are its DNS names and IP addresses.
    Server,
    /// A TLS client: the common name is its identity, the organisation its group.
    Client,
}

/// The cluster's certificate authority.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn ca_params(now: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(CA_COMMON_NAME, Some(ORGANIZATION));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(now));
    params.not_after = offset(now + CA_VALIDITY);
    params
}

fn distinguished_name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let seconds = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn generate_key(what: &str) -> Result<KeyPair, Error> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|source| Error::Generate { what: format!("a key for {what}"), source })
}

/// A random positive 128-bit serial number (RFC 5280 allows up to 20 octets).
fn serial() -> SerialNumber {
    let mut bytes = rand::random::<[u8; 16]>();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

impl Ca {
    /// A new CA, valid for [`CA_VALIDITY`] from now.
    pub fn generate() -> Result<Ca, Error> {
        let key = generate_key("the cluster CA")?;
        let params = ca_params(SystemTime::now());
        let cert = params
            .self_signed(&key)
            .map_err(|source| Error::Generate { what: "the cluster CA's certificate".into(), source })?;
        Ok(Ca { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA whose certificate and key are `cert_pem` and `key_pem`. The certificate must be
    /// one [`Ca::generate`] made: the issuer is rebuilt from the key and the fixed subject.
    fn from_pem(cert_pem: String, key_pem: &str, key_path: &Path) -> Result<Ca, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(|source| Error::BadKey { path: key_path.into(), source })?;
        Ok(Ca { cert_pem, issuer: Issuer::new(ca_params(SystemTime::now()), key) })
    }

    /// The CA kept in `dir` (`ca.crt`, `ca.key`), made there first if neither file exists. The
    /// directory is made private to the user (0700) and the key file is 0600.
    pub fn load_or_create(dir: &Path) -> Result<Ca, Error> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        create_private_dir(dir)?;
        match (read_optional(&cert_path)?, read_optional(&key_path)?) {
            (Some(cert), Some(key)) => Ca::from_pem(cert, &key, &key_path),
            (None, None) => {
                let ca = Ca::generate()?;
                // The key first: a crash between the two leaves a key without a certificate,
                // which the next start reports rather than silently pairing a new key.
                write_private(&key_path, ca.issuer.key().serialize_pem().as_bytes())?;
                write_file(&cert_path, ca.cert_pem.as_bytes(), 0o644)?;
                Ok(ca)
            }
            (Some(_), None) => Err(Error::HalfCa(cert_path)),
            (None, Some(_)) => Err(Error::HalfCa(key_path)),
        }
    }

    /// The CA's certificate, PEM: what clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new leaf certificate and key signed by this CA, valid for `validity` from now.
    ///
    /// For [`Usage::Server`], `names` are DNS names (a leading `*.` for a wildcard) and IP
    /// addresses; the first is also the common name. For [`Usage::Client`], `names[0]` is the
    /// common name (the identity) and `names[1]`, if any, the organisation (the group).
    pub fn issue(&self, usage: Usage, names: &[String], validity: Duration) -> Result<Issued, Error> {
        let first = names.first().cloned().unwrap_or_default();
        let mut params = match usage {
            Usage::Server => {
                if let Some(name) = names.iter().find(|n| !is_subject_name(n)) {
                    return Err(Error::BadName { name: name.clone() });
                }
                let mut params =
                    CertificateParams::new(names.to_vec()).map_err(|_| Error::BadName { name: names.join(", ") })?;
                params.distinguished_name = distinguished_name(&first, Some(ORGANIZATION));
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params
            }
            Usage::Client => {
                let mut params = CertificateParams::default();
                params.distinguished_name = distinguished_name(&first, names.get(1).map(String::as_str));
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params
            }
        };
        let now = SystemTime::now();
        let not_after = now + validity;
        params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(now));
        params.not_after = offset(not_after);
        params.serial_number = Some(serial());
        params.use_authority_key_identifier_extension = true;
        let key = generate_key(&first)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Generate { what: format!("the certificate of {first}"), source })?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after })
    }
}

/// How long a node's client certificate is valid by default; its agent renews it at two
/// thirds.
pub const NODE_CLIENT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// The parameters of a certificate that is both a TLS client's and a server's: a node's, which
/// its agent presents to the API server and serves on its own port. The subject is
/// `common_name` and `organization`; `server_names` (DNS names or IP addresses) are its subject
/// alternative names.
fn client_and_server_params(
    common_name: &str,
    organization: &str,
    server_names: &[String],
    validity: Duration,
) -> Result<(CertificateParams, SystemTime), Error> {
    if let Some(name) = server_names.iter().find(|n| !is_subject_name(n) || n.starts_with("*.")) {
        return Err(Error::BadName { name: name.clone() });
    }
    let mut params =
        CertificateParams::new(server_names.to_vec()).map_err(|_| Error::BadName { name: server_names.join(", ") })?;
    params.distinguished_name = distinguished_name(common_name, Some(organization));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = SystemTime::now();
    let not_after = now + validity;
    params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(now));
    params.not_after = offset(not_after);
    params.serial_number = Some(serial());
    params.use_authority_key_identifier_extension = true;
    Ok((params, not_after))
}

impl Ca {
    /// A new key and a certificate for it that serves both as a client's (subject
    /// `common_name`, `organization`) and as a server's for `server_names`: what a node's agent
    /// holds when the CA is in its own process.
    pub fn issue_client_and_server(
        &self,
        common_name: &str,
        organization: &str,
        server_names: &[String],
        validity: Duration,
    ) -> Result<Issued, Error> {
        let (params, not_after) = client_and_server_params(common_name, organization, server_names, validity)?;
        let key = generate_key(common_name)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Generate { what: format!("the certificate of {common_name}"), source })?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after })
    }

    /// As [`Ca::sign_client`], and the certificate also serves as a server's for
    /// `server_names` (a node's: its agent serves it on its own port).
    pub fn sign_client_and_server(
        &self,
        request: &CertificateRequest,
        common_name: &str,
        organization: &str,
        server_names: &[String],
        validity: Duration,
    ) -> Result<Signed, Error> {
        let (params, not_after) = client_and_server_params(common_name, organization, server_names, validity)?;
        let cert = params
            .signed_by(&request.params.public_key, &self.issuer)
            .map_err(|source| Error::Generate { what: format!("the certificate of {common_name}"), source })?;
        Ok(Signed { cert_pem: cert.pem(), not_after })
    }
}

/// A certificate signing request (PKCS#10) whose signature verified: the requester holds the
/// private key of the public key in it.
pub struct CertificateRequest {
    params: rcgen::CertificateSigningRequestParams,
}

impl std::fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRequest").field("common_name", &self.common_name()).finish_non_exhaustive()
    }
}

impl CertificateRequest {
    /// Parses a PEM request (`-----BEGIN CERTIFICATE REQUEST-----`) and checks its signature.
    pub fn from_pem(pem: &str) -> Result<CertificateRequest, Error> {
        let params = rcgen::CertificateSigningRequestParams::from_pem(pem).map_err(|e| {
            Error::BadRequest(match e {
                rcgen::Error::InvalidCertificationRequestSignature => "its signature does not verify".into(),
                rcgen::Error::CouldNotParseCertificationRequest => "not a PEM PKCS#10 request".into(),
                other => other.to_string(),
            })
        })?;
        Ok(CertificateRequest { params })
    }

    /// The common name the request asks for (empty when it names none).
    pub fn common_name(&self) -> String {
        match self.params.params.distinguished_name.get(&DnType::CommonName) {
            Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
            Some(rcgen::DnValue::PrintableString(s)) => s.as_str().to_owned(),
            // Other string types are not what a node's request names.
            Some(other) => format!("{other:?}"),
            None => String::new(),
        }
    }
}

/// A certificate this CA signed for a key it never saw.
#[derive(Debug, Clone)]
pub struct Signed {
    pub cert_pem: String,
    pub not_after: SystemTime,
}

impl Ca {
    /// A client certificate for the key of `request`, naming `common_name` (the identity) and
    /// `organization` (the group), valid for `validity` from now. Only the request's public
    /// key is used: its subject and extensions are the caller's to check, and are not copied.
    pub fn sign_client(
        &self,
        request: &CertificateRequest,
        common_name: &str,
        organization: &str,
        validity: Duration,
    ) -> Result<Signed, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name, Some(organization));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        let not_after = now + validity;
        params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(now));
        params.not_after = offset(not_after);
        params.serial_number = Some(serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&request.params.public_key, &self.issuer)
            .map_err(|source| Error::Generate { what: format!("the certificate of {common_name}"), source })?;
        Ok(Signed { cert_pem: cert.pem(), not_after })
    }
}

/// A new ECDSA P-256 key (PEM) and a request (PEM) for a client certificate naming
/// `common_name` and `organization`: what a node sends to be given its certificate.
pub fn client_request(common_name: &str, organization: &str) -> Result<(String, String), Error> {
    let key = generate_key(common_name)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name, Some(organization));
    let csr = params
        .serialize_request(&key)
        .map_err(|source| Error::Generate { what: format!("the certificate request of {common_name}"), source })?;
    let csr = csr
        .pem()
        .map_err(|source| Error::Generate { what: format!("the certificate request of {common_name}"), source })?;
    Ok((key.serialize_pem(), csr))
}

/// Who a certificate names: its subject's common name and organisations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// When the certificate starts and stops being valid.
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The subject of a DER certificate (which must have been verified already: this only reads).
pub fn subject_of(der: &[u8]) -> Result<Subject, Error> {
    let bad = |detail: String| Error::BadCertificate { what: "the client certificate".into(), detail };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
    let text = |attr: &x509_parser::x509::AttributeTypeAndValue| attr.as_str().map(str::to_owned);
    let common_name = match cert.subject().iter_common_name().next() {
        Some(attr) => text(attr).map_err(|e| bad(format!("the common name: {e}")))?,
        None => String::new(),
    };
    let organizations = cert
        .subject()
        .iter_organization()
        .map(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("the organisation: {e}")))?;
    let at =
        |t: x509_parser::time::ASN1Time| UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0));
    Ok(Subject {
        common_name,
        organizations,
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
    })
}

/// The hash that pins the cluster CA for a joining node, as kubeadm's
/// `--discovery-token-ca-cert-hash`: `sha256:` and the lowercase hex SHA-256 of the DER
/// SubjectPublicKeyInfo of the first certificate in `ca_pem`. It stays the same when the CA's
/// certificate is re-issued with the same key.
pub fn ca_cert_hash(ca_pem: &str) -> Result<String, Error> {
    let bad = |detail: String| Error::BadCertificate { what: "the CA certificate".into(), detail };
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// Whether `name` is an IP address or a DNS name (RFC 1123 labels, an optional leading `*.`).
pub fn is_subject_name(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Makes `dir` (and its parents) and sets it to 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| Error::Io { path: dir.into(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path: path.into(), source }),
    }
}

/// Writes `contents` to `path` with mode 0600, replacing it atomically (a temporary file
/// renamed over it), so a reader never sees half a key.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    write_file(path, contents, 0o600)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io { path: path.into(), source };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_is_made_once_and_read_back_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let first = Ca::load_or_create(&pki).unwrap();
        let again = Ca::load_or_create(&pki).unwrap();
        assert_eq!(first.cert_pem(), again.cert_pem());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pki), 0o700);
        assert_eq!(mode(&pki.join(CA_KEY_FILE)), 0o600);
        // A certificate signed by the CA read back carries the same issuer as the CA's subject.
        let leaf = again.issue(Usage::Server, &["localhost".into()], Duration::from_secs(60)).unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn half_a_ca_is_an_error_not_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        Ca::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(CA_CERT_FILE)).unwrap();
        let err = Ca::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("remove both"), "{err}");
    }

    #[test]
    fn a_request_is_signed_for_its_key_with_the_name_the_ca_chooses() {
        let ca = Ca::generate().unwrap();
        let (key_pem, csr_pem) = client_request("system:node:n1", "system:nodes").unwrap();
        let request = CertificateRequest::from_pem(&csr_pem).unwrap();
        assert_eq!(request.common_name(), "system:node:n1");
        let signed = ca.sign_client(&request, "system:node:n1", "system:nodes", Duration::from_secs(3600)).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(signed.cert_pem.as_bytes()).unwrap();
        let subject = subject_of(&pem.contents).unwrap();
        assert_eq!(subject.common_name, "system:node:n1");
        assert_eq!(subject.organizations, vec!["system:nodes".to_string()]);
        let left = subject.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600), "{left:?}");
        // The certificate carries the requester's key.
        let key = KeyPair::from_pem(&key_pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let (_, csr_pem) = client_request("system:node:n1", "system:nodes").unwrap();
        let (_, mut pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).unwrap();
        // Change one byte of the common name: the signature no longer covers it.
        let at = pem.contents.windows(2).position(|w| w == b"n1").unwrap();
        pem.contents[at + 1] = b'2';
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(&pem.contents);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let tampered =
            format!("-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n", lines.join("\n"));
        let err = CertificateRequest::from_pem(&tampered).unwrap_err();
        assert!(err.to_string().contains("signature does not verify"), "{err}");
        assert!(CertificateRequest::from_pem("not a request").is_err());
    }

    #[test]
    fn the_ca_hash_is_of_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let hash = ca_cert_hash(ca.cert_pem()).unwrap();
        assert!(hash.starts_with("sha256:") && hash.len() == 7 + 64, "{hash}");
        // The same key read back (its certificate made again) pins the same hash; another does not.
        assert_eq!(ca_cert_hash(Ca::load_or_create(dir.path()).unwrap().cert_pem()).unwrap(), hash);
        assert_ne!(ca_cert_hash(Ca::generate().unwrap().cert_pem()).unwrap(), hash);
        assert!(ca_cert_hash("garbage").is_err());
    }

    #[test]
    fn names_that_are_not_names_are_refused() {
        let ca = Ca::generate().unwrap();
        let err = ca.issue(Usage::Server, &["bad name with spaces\u{0}".into()], Duration::from_secs(60)).unwrap_err();
        assert!(matches!(err, Error::BadName { .. }), "{err}");
    }
}
