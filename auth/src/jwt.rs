//! JSON Web Tokens in JWS compact serialization, signed with Ed25519 only (RFC 8037), verified
//! the way RFC 8725 asks: the verifier fixes the algorithm and the keys, never the token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Deserializer, Serialize};

use crate::keys::{KeySet, PublicKeys};

/// The only JWS algorithm signed and accepted.
pub const ALGORITHM: &str = "EdDSA";

/// Tokens longer than this are refused before any parsing: ours are a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The claims of a Stratus token. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who issued the token (the API server's issuer URL).
    pub iss: String,
    /// Who the token is for. Serialized as one string; a token whose `aud` is an array is accepted
    /// by [`verify`] when the array contains the expected audience, and then reads back as it.
    #[serde(deserialize_with = "one_audience")]
    pub aud: String,
    /// The subject: the user or service account name the token speaks for.
    pub sub: String,
    /// Expiry: the token is refused from this time on (plus leeway).
    pub exp: i64,
    /// Not before: the token is refused before this time (minus leeway).
    pub nbf: i64,
    /// Issued at.
    pub iat: i64,
    /// A unique id of this token, for revocation and audit.
    pub jti: String,
    /// The tenant the subject belongs to; empty when none.
    #[serde(default)]
    pub tenant: String,
    /// The uid of the User or ServiceAccount object the token was issued to, so that a token
    /// outlives neither the deletion nor the re-creation of its subject under the same name.
    #[serde(default)]
    pub uid: String,
}

/// What the verifier requires of a token besides its signature.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// `iss` must equal this.
    pub issuer: &'a str,
    /// `aud` must equal this, or contain it when it is an array.
    pub audience: &'a str,
    /// The current time, seconds since the Unix epoch.
    pub now: i64,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway: i64,
}

/// Why a token was refused. Each variant is one step of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed JWS compact token with our claims: wrong number of parts, bad base64url,
    /// bad JSON, a missing or mistyped claim, an over-long token, or a `crit` header.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm other than EdDSA (the string is the algorithm, empty when
    /// the header has none).
    #[error("token algorithm {0:?} is not accepted: only EdDSA is")]
    Algorithm(String),
    /// The header names no key id, or one this verifier does not know (the string is the key id,
    /// empty when there is none).
    #[error("token key id {0:?} is not one of the issuer's keys")]
    UnknownKey(String),
    /// The signature does not verify over the header and payload with the named key.
    #[error("token signature does not verify")]
    Signature,
    /// `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` has not come yet.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` is not the expected issuer.
    #[error("token was issued by another issuer")]
    Issuer,
    /// `aud` is not (and does not contain) the expected audience.
    #[error("token is meant for another audience")]
    Audience,
}

/// Signs `claims` with the key set's active key: header `{"alg":"EdDSA","typ":"JWT","kid":…}`,
/// every part base64url without padding.
pub fn sign(keys: &KeySet, claims: &Claims) -> String {
    let header = Header {
        alg: Some(ALGORITHM.to_owned()),
        typ: Some("JWT".to_owned()),
        kid: Some(keys.active_kid().to_owned()),
        crit: None,
    };
    // Serializing strings and integers cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let signature = keys.active_pair().sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// Verifies `token` and returns its claims.
///
/// The algorithm is fixed by the verifier, never taken from the token: only `alg: "EdDSA"` with a
/// `kid` known to `keys` is accepted, and headers that try to bring their own key (`jwk`, `jku`,
/// `x5c`, `x5u`) are ignored. Then, in order: the Ed25519 signature over `header.payload`, and
/// only after it the payload; `exp` (valid while `now < exp + leeway`), `nbf`
/// (`nbf <= now + leeway`), `iss == issuer`, `aud == audience` (or containing it when an array).
/// A `crit` header is refused (no extension is understood), as is a token over [`MAX_TOKEN_LEN`].
pub fn verify(token: &str, keys: &dyn PublicKeys, expect: &Expect) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed(format!("token is {} bytes, over the limit of {MAX_TOKEN_LEN}", token.len())));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(format!("expected 3 dot-separated parts, found {}", token.split('.').count())));
    };

    let header: Header = parse_object("header", &decode("header", header_b64)?)?;
    match header.alg.as_deref() {
        Some(ALGORITHM) => {}
        other => return Err(TokenError::Algorithm(other.unwrap_or_default().to_owned())),
    }
    if header.crit.is_some() {
        return Err(malformed("header has crit: no critical extension is understood".to_owned()));
    }
    if let Some(typ) = &header.typ
        && !typ.eq_ignore_ascii_case("JWT")
    {
        return Err(malformed(format!("header typ is {typ:?}, not JWT")));
    }
    let kid = header.kid.unwrap_or_default();
    let public_key = keys.public_key(&kid).ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;

    let signature = decode("signature", signature_b64)?;
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| TokenError::Signature)?;

    let claims: WireClaims = parse_object("payload", &decode("payload", payload_b64)?)?;
    if expect.now >= claims.exp.saturating_add(expect.leeway) {
        return Err(TokenError::Expired);
    }
    if claims.nbf > expect.now.saturating_add(expect.leeway) {
        return Err(TokenError::NotYetValid);
    }
    if claims.iss != expect.issuer {
        return Err(TokenError::Issuer);
    }
    if !claims.aud.contains(expect.audience) {
        return Err(TokenError::Audience);
    }
    Ok(Claims {
        iss: claims.iss,
        aud: expect.audience.to_owned(),
        sub: claims.sub,
        exp: claims.exp,
        nbf: claims.nbf,
        iat: claims.iat,
        jti: claims.jti,
        tenant: claims.tenant,
        uid: claims.uid,
    })
}

/// The JOSE header, as far as it is read. Unknown members are ignored; duplicate members are
/// refused by serde.
#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crit: Option<serde_json::Value>,
}

/// The claims as they may arrive: `aud` a string or an array of strings.
#[derive(Deserialize)]
struct WireClaims {
    iss: String,
    aud: Audience,
    sub: String,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    uid: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(aud) => aud == audience,
            Audience::Many(auds) => auds.iter().any(|aud| aud == audience),
        }
    }
}

/// `Claims::aud` from a string, or from an array holding exactly one string (a bigger array has
/// no single audience to read back; [`verify`] handles those).
fn one_audience<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Audience::deserialize(deserializer)? {
        Audience::One(aud) => Ok(aud),
        Audience::Many(auds) => match <[String; 1]>::try_from(auds) {
            Ok([aud]) => Ok(aud),
            Err(auds) => {
                Err(serde::de::Error::custom(format!("aud has {} audiences where one was expected", auds.len())))
            }
        },
    }
}

fn decode(part: &str, b64: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(b64).map_err(|e| malformed(format!("{part} is not unpadded base64url: {e}")))
}

/// Parses a JSON object. serde would also read a struct from an array; a JOSE header or claims
/// set is an object and nothing else.
fn parse_object<T: serde::de::DeserializeOwned>(part: &str, json: &[u8]) -> Result<T, TokenError> {
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(malformed(format!("{part} is not a JSON object")));
    }
    serde_json::from_slice(json).map_err(|e| malformed(format!("{part} is not of the expected form: {e}")))
}

fn malformed(reason: String) -> TokenError {
    TokenError::Malformed(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::hmac;

    const NOW: i64 = 1_700_000_000;
    const ISSUER: &str = "https://stratus.example";
    const AUDIENCE: &str = "stratus";

    fn claims() -> Claims {
        Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: "alice".to_owned(),
            exp: NOW + 3600,
            nbf: NOW - 5,
            iat: NOW - 5,
            jti: crate::random_id(),
            tenant: "acme".to_owned(),
            uid: "0b8e3a7c-uid".to_owned(),
        }
    }

    fn expect() -> Expect<'static> {
        Expect { issuer: ISSUER, audience: AUDIENCE, now: NOW, leeway: 30 }
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with any header and payload, signed properly with the set's active key: lets a test
    /// reach the checks after the signature.
    fn sign_raw(keys: &KeySet, header: &serde_json::Value, payload: &[u8]) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(payload));
        let signature = keys.active_pair().sign(input.as_bytes());
        format!("{input}.{}", b64(signature))
    }

    fn header(keys: &KeySet) -> serde_json::Value {
        serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": keys.active_kid()})
    }

    fn keys() -> KeySet {
        KeySet::generate(NOW).expect("generate a key set")
    }

    fn malformed_reason(result: Result<Claims, TokenError>) -> String {
        match result {
            Err(TokenError::Malformed(reason)) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips_its_claims() {
        let keys = keys();
        let claims = claims();
        let token = sign(&keys, &claims);
        assert_eq!(token.split('.').count(), 3);
        assert!(!token.contains('='), "base64url without padding: {token}");
        assert_eq!(verify(&token, &keys, &expect()), Ok(claims));
    }

    #[test]
    fn the_header_names_eddsa_jwt_and_the_active_kid() {
        let keys = keys();
        let token = sign(&keys, &claims());
        let header_b64 = token.split('.').next().expect("a header part");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).expect("base64url")).expect("JSON");
        assert_eq!(header, serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": keys.active_kid()}));
    }

    #[test]
    fn tokens_without_three_parts_are_malformed() {
        let keys = keys();
        let token = sign(&keys, &claims());
        let mut parts = token.split('.');
        let (h, p, s) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        for bad in ["", "abc", &format!("{h}.{p}"), &format!("{h}.{p}.{s}.{s}"), &format!("{h}.{p}.{s}.")] {
            let reason = malformed_reason(verify(bad, &keys, &expect()));
            assert!(reason.contains("3 dot-separated parts"), "{bad:?}: {reason}");
        }
    }

    #[test]
    fn bad_base64url_is_malformed() {
        let keys = keys();
        let token = sign(&keys, &claims());
        let (h, rest) = token.split_once('.').unwrap();
        // Padding, the standard alphabet and stray characters are all refused.
        for bad_header in [format!("{h}="), h.replace('-', "+").replace('_', "/") + "+/", format!("{h}!")] {
            let reason = malformed_reason(verify(&format!("{bad_header}.{rest}"), &keys, &expect()));
            assert!(reason.contains("header is not unpadded base64url"), "{reason}");
        }
        let (signing_input, _) = token.rsplit_once('.').unwrap();
        let reason = malformed_reason(verify(&format!("{signing_input}.%%%"), &keys, &expect()));
        assert!(reason.contains("signature is not unpadded base64url"), "{reason}");
    }

    #[test]
    fn bad_json_is_malformed() {
        let keys = keys();
        let payload = serde_json::to_vec(&claims()).unwrap();
        let token = format!("{}.{}.{}", b64("{not json"), b64(&payload), b64([0u8; 64]));
        assert!(malformed_reason(verify(&token, &keys, &expect())).contains("header"));
        let token = format!("{}.{}.{}", b64("[\"EdDSA\"]"), b64(&payload), b64([0u8; 64]));
        assert!(malformed_reason(verify(&token, &keys, &expect())).contains("header"));

        // A properly signed payload that is not JSON, or lacks a claim, is still refused.
        let token = sign_raw(&keys, &header(&keys), b"{\"sub\":");
        assert!(malformed_reason(verify(&token, &keys, &expect())).contains("payload"));
        let mut missing_exp = serde_json::to_value(claims()).unwrap();
        missing_exp.as_object_mut().unwrap().remove("exp");
        let token = sign_raw(&keys, &header(&keys), missing_exp.to_string().as_bytes());
        let reason = malformed_reason(verify(&token, &keys, &expect()));
        assert!(reason.contains("exp"), "{reason}");
    }

    #[test]
    fn tokens_over_8_kib_are_refused_unread() {
        let keys = keys();
        let mut claims = claims();
        claims.sub = "a".repeat(MAX_TOKEN_LEN);
        let token = sign(&keys, &claims);
        let reason = malformed_reason(verify(&token, &keys, &expect()));
        assert!(reason.contains("over the limit"), "{reason}");
    }

    #[test]
    fn alg_none_is_refused() {
        let keys = keys();
        let payload = b64(serde_json::to_vec(&claims()).unwrap());
        for header in [
            serde_json::json!({"alg": "none", "typ": "JWT"}),
            serde_json::json!({"alg": "none", "kid": keys.active_kid()}),
        ] {
            let token = format!("{}.{payload}.", b64(header.to_string()));
            assert_eq!(verify(&token, &keys, &expect()), Err(TokenError::Algorithm("none".to_owned())));
        }
    }

    #[test]
    fn hs256_keyed_with_the_public_key_is_refused() {
        // The classic confusion: an HMAC whose secret is the (public) verification key.
        let keys = keys();
        let public = keys.public_key(keys.active_kid()).unwrap().to_vec();
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": keys.active_kid()});
        let input = format!("{}.{}", b64(header.to_string()), b64(serde_json::to_vec(&claims()).unwrap()));
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &public), input.as_bytes());
        let token = format!("{input}.{}", b64(tag));
        assert_eq!(verify(&token, &keys, &expect()), Err(TokenError::Algorithm("HS256".to_owned())));
    }

    #[test]
    fn other_algorithms_and_a_missing_alg_are_refused() {
        let keys = keys();
        for (alg, reported) in [
            (serde_json::json!("RS256"), "RS256"),
            (serde_json::json!("ES256"), "ES256"),
            (serde_json::json!("eddsa"), "eddsa"),
            (serde_json::json!("Ed25519"), "Ed25519"),
        ] {
            let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": keys.active_kid()});
            let token = sign_raw(&keys, &header, &serde_json::to_vec(&claims()).unwrap());
            assert_eq!(verify(&token, &keys, &expect()), Err(TokenError::Algorithm(reported.to_owned())));
        }
        let token = sign_raw(&keys, &serde_json::json!({"kid": keys.active_kid()}), b"{}");
        assert_eq!(verify(&token, &keys, &expect()), Err(TokenError::Algorithm(String::new())));
    }

    #[test]
    fn a_crit_header_is_refused() {
        let keys = keys();
        let mut header = header(&keys);
        header["crit"] = serde_json::json!(["exp"]);
        let token = sign_raw(&keys, &header, &serde_json::to_vec(&claims()).unwrap());
        assert!(malformed_reason(verify(&token, &keys, &expect())).contains("crit"));
    }

    #[test]
    fn a_foreign_typ_is_refused() {
        let keys = keys();
        let mut header = header(&keys);
        header["typ"] = serde_json::json!("at+jwt");
        let token = sign_raw(&keys, &header, &serde_json::to_vec(&claims()).unwrap());
        assert!(malformed_reason(verify(&token, &keys, &expect())).contains("typ"));
    }

    #[test]
    fn an_unknown_or_missing_kid_is_refused() {
        let keys = keys();
        let payload = serde_json::to_vec(&claims()).unwrap();
        let token = sign_raw(&keys, &serde_json::json!({"alg": "EdDSA", "kid": "nope"}), &payload);
        assert_eq!(verify(&token, &keys, &expect()), Err(TokenError::UnknownKey("nope".to_owned())));
        let token = sign_raw(&keys, &serde_json::json!({"alg": "EdDSA"}), &payload);
        assert_eq!(verify(&token, &keys, &expect()), Err(TokenError::UnknownKey(String::new())));
    }

    #[test]
    fn a_token_of_another_cluster_is_refused() {
        let ours = keys();
        let theirs = keys();
        let token = sign(&theirs, &claims());
        assert_eq!(verify(&token, &ours, &expect()), Err(TokenError::UnknownKey(theirs.active_kid().to_owned())));

        // Even when the other cluster's key happens to carry the same kid, the signature fails.
        let mut header = header(&ours);
        header["kid"] = serde_json::json!(ours.active_kid());
        let token = sign_raw(&theirs, &header, &serde_json::to_vec(&claims()).unwrap());
        assert_eq!(verify(&token, &ours, &expect()), Err(TokenError::Signature));
    }

    #[test]
    fn a_tampered_payload_or_header_fails_the_signature() {
        let keys = keys();
        let token = sign(&keys, &claims());
        let parts: Vec<&str> = token.split('.').collect();

        let mut admin = claims();
        admin.sub = "admin".to_owned();
        let forged = format!("{}.{}.{}", parts[0], b64(serde_json::to_vec(&admin).unwrap()), parts[2]);
        assert_eq!(verify(&forged, &keys, &expect()), Err(TokenError::Signature));

        let mut header = header(&keys);
        header["extra"] = serde_json::json!(1);
        let forged = format!("{}.{}.{}", b64(header.to_string()), parts[1], parts[2]);
        assert_eq!(verify(&forged, &keys, &expect()), Err(TokenError::Signature));

        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let mut flipped = signature.clone();
        flipped[10] ^= 1;
        let forged = format!("{}.{}.{}", parts[0], parts[1], b64(flipped));
        assert_eq!(verify(&forged, &keys, &expect()), Err(TokenError::Signature));
        let truncated = format!("{}.{}.{}", parts[0], parts[1], b64(&signature[..63]));
        assert_eq!(verify(&truncated, &keys, &expect()), Err(TokenError::Signature));
    }

    #[test]
    fn expiry_holds_with_leeway() {
        let keys = keys();
        let mut claims = claims();
        claims.exp = NOW - 30;
        let token = sign(&keys, &claims);
        assert_eq!(verify(&token, &keys, &expect()), Err(TokenError::Expired));
        assert!(verify(&token, &keys, &Expect { now: NOW - 1, ..expect() }).is_ok(), "within leeway");
        assert_eq!(verify(&token, &keys, &Expect { leeway: 0, now: NOW - 30, ..expect() }), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_from_the_future_is_not_valid_yet() {
        let keys = keys();
        let mut claims = claims();
        claims.nbf = NOW + 31;
        let token = sign(&keys, &claims);
        assert_eq!(verify(&token, &keys, &expect()), Err(TokenError::NotYetValid));
        assert!(verify(&token, &keys, &Expect { now: NOW + 1, ..expect() }).is_ok(), "nbf == now + leeway");
    }

    #[test]
    fn the_wrong_issuer_or_audience_is_refused() {
        let keys = keys();
        let token = sign(&keys, &claims());
        assert_eq!(
            verify(&token, &keys, &Expect { issuer: "https://other.example", ..expect() }),
            Err(TokenError::Issuer)
        );
        assert_eq!(verify(&token, &keys, &Expect { audience: "gateway", ..expect() }), Err(TokenError::Audience));
    }

    #[test]
    fn aud_as_an_array_is_accepted_when_it_contains_the_audience() {
        let keys = keys();
        let claims = claims();
        let mut payload = serde_json::to_value(&claims).unwrap();
        payload["aud"] = serde_json::json!(["gateway", AUDIENCE]);
        let token = sign_raw(&keys, &header(&keys), payload.to_string().as_bytes());
        assert_eq!(verify(&token, &keys, &expect()), Ok(claims));
        assert_eq!(verify(&token, &keys, &Expect { audience: "other", ..expect() }), Err(TokenError::Audience));

        payload["aud"] = serde_json::json!([]);
        let token = sign_raw(&keys, &header(&keys), payload.to_string().as_bytes());
        assert_eq!(verify(&token, &keys, &expect()), Err(TokenError::Audience));
    }

    #[test]
    fn claims_deserialize_with_defaults_and_a_single_audience() {
        let mut value = serde_json::to_value(claims()).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("tenant");
        object.remove("uid");
        object.insert("aud".to_owned(), serde_json::json!([AUDIENCE]));
        let parsed: Claims = serde_json::from_value(value.clone()).unwrap();
        assert_eq!((parsed.aud.as_str(), parsed.tenant.as_str(), parsed.uid.as_str()), (AUDIENCE, "", ""));

        value["aud"] = serde_json::json!(["a", "b"]);
        let error = serde_json::from_value::<Claims>(value).unwrap_err().to_string();
        assert!(error.contains("2 audiences"), "{error}");
    }
}
