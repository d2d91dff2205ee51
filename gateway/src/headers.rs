//! What the gateway changes in the headers it forwards: hop-by-hop headers go, forwarding and
//! tracing headers are added; everything else passes unchanged.

use std::net::IpAddr;

use http::header::{CONNECTION, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, header};

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The longest client-chosen request id that is kept; longer ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1, plus the legacy
/// `Keep-Alive` and `Proxy-Connection`). `Trailer` is not among them: it announces the
/// message's trailer fields, which HTTP/1.1 servers only send when announced.
const HOP_BY_HOP: [HeaderName; 7] =
    [CONNECTION, KEEP_ALIVE, PROXY_CONNECTION, TE, TRANSFER_ENCODING, UPGRADE, header::PROXY_AUTHENTICATE];

/// The protocol a request asks to switch to (`Connection: upgrade` with `Upgrade: …`).
pub(crate) fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers.get_all(CONNECTION).iter().any(|v| has_token(v, "upgrade"));
    asks.then(|| headers.get(UPGRADE).cloned()).flatten()
}

/// Removes hop-by-hop headers: the standard ones and those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests have none: one look at the few names there is cheaper than a removal
    // (a hash and a probe) for each of the eight.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name) || name == header::PROXY_AUTHORIZATION) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove(header::PROXY_AUTHORIZATION);
}

/// Who sent a request, as the gateway saw the connection it came on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer<'a> {
    /// The address the connection came from.
    pub(crate) ip: IpAddr,
    /// The host the request asked for.
    pub(crate) host: &'a str,
    /// The scheme of the listener it came to: `http` or `https`.
    pub(crate) scheme: &'static str,
    /// Whether the peer is a proxy the gateway trusts with forwarding headers.
    pub(crate) trusted: bool,
}

/// The forwarding headers a client may set; only a trusted proxy's are believed.
const FORWARDING: [HeaderName; 5] =
    [header::FORWARDED, X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST, X_REAL_IP];

/// Makes a client's request headers the upstream's: hop-by-hop headers removed (but `TE:
/// trailers`, which gRPC needs, and the upgrade being asked for are kept), forwarding headers
/// written, and a `traceparent` started unless a valid one came in.
///
/// From a trusted proxy the forwarding headers are kept: the peer is appended to `Forwarded`
/// and `X-Forwarded-For`, and `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Real-IP` are set
/// only when the proxy did not set them. From anyone else they are what the gateway saw, and
/// only that: whatever the client sent in `Forwarded`, `X-Forwarded-*` and `X-Real-IP` is
/// dropped, so a workload can believe them.
pub(crate) fn prepare_request(headers: &mut HeaderMap, peer: Peer<'_>, upgrade: Option<&HeaderValue>) {
    let trailers = headers.get_all(TE).iter().any(|v| has_token(v, "trailers"));
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol.clone());
    }
    if !peer.trusted && headers.keys().any(|name| FORWARDING.contains(name)) {
        for name in &FORWARDING {
            headers.remove(name);
        }
    }
    let client = peer.ip.to_canonical();
    let address = ip_text(client);
    append(headers, header::FORWARDED, &forwarded_element(client, &address, peer.host, peer.scheme));
    append(headers, X_FORWARDED_FOR, &address);
    headers.entry(X_FORWARDED_PROTO).or_insert(HeaderValue::from_static(peer.scheme));
    if let Ok(host) = HeaderValue::from_str(peer.host) {
        headers.entry(X_FORWARDED_HOST).or_insert(host);
    }
    if let Ok(ip) = HeaderValue::from_str(&address) {
        headers.entry(X_REAL_IP).or_insert(ip);
    }
    if !headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).is_some_and(valid_traceparent) {
        // A new trace: the old state belongs to a trace that is not continued (W3C §3.3).
        headers.remove(TRACESTATE);
        if let Ok(value) = HeaderValue::try_from(new_traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
    }
}

/// The request's `X-Request-Id`: the client's when it is a short printable token, else a new
/// random one, which is written into `headers`.
pub(crate) fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(X_REQUEST_ID)
        && !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id.as_bytes().iter().all(u8::is_ascii_graphic)
    {
        return id.clone();
    }
    let id = HeaderValue::try_from(random_hex::<16>()).unwrap_or(HeaderValue::from_static("0"));
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// Whether `value` is a `traceparent` of version 00 (W3C Trace Context) with non-zero ids.
pub(crate) fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if *version == "00" && hex(trace, 32) && nonzero(trace) && hex(parent, 16) && nonzero(parent) && hex(flags, 2))
}

/// A new `traceparent`: version 00, random trace and parent ids, not sampled (the gateway
/// records no spans; a traced application decides for itself).
fn new_traceparent() -> String {
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    push_random_hex::<16>(&mut out);
    out.push('-');
    push_random_hex::<8>(&mut out);
    out.push_str("-00");
    out
}

/// `N` random bytes as lowercase hex, never all zeros.
fn random_hex<const N: usize>() -> String {
    let mut out = String::with_capacity(N * 2);
    push_random_hex::<N>(&mut out);
    out
}

/// Appends `N` random bytes as lowercase hex, never all zeros, to `out`. Every request needs
/// a few of these: one draw of the generator, not one per byte, and no formatting machinery.
fn push_random_hex<const N: usize>(out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; N];
    while bytes.iter().all(|b| *b == 0) {
        rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    }
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// One `Forwarded` element (RFC 7239): `for=…;proto=…;host=…`, quoting what is not a token.
/// `address` is `client` as [`ip_text`] writes it.
fn forwarded_element(client: IpAddr, address: &str, host: &str, proto: &str) -> String {
    let mut out = String::with_capacity(address.len() + host.len() + proto.len() + 24);
    out.push_str("for=");
    match client {
        IpAddr::V4(_) => out.push_str(address),
        IpAddr::V6(_) => {
            out.push_str("\"[");
            out.push_str(address);
            out.push_str("]\"");
        }
    }
    out.push_str(";proto=");
    out.push_str(proto);
    out.push_str(";host=");
    push_token_or_quoted(&mut out, host);
    out
}

/// `ip` as `Display` writes it; IPv4 (every request's peer on most gateways) without the
/// formatting machinery, which took 2% of the gateway's CPU under load.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// Appends `value` to `out` as an RFC 7230 token when it is one, else as a quoted string.
fn push_token_or_quoted(out: &mut String, value: &str) {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !value.is_empty() && value.chars().all(tchar) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Appends `item` to a list-valued header, joining repeated fields into one.
fn append(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    if !headers.contains_key(&name) {
        if let Ok(value) = HeaderValue::from_str(item) {
            headers.insert(name, value);
        }
        return;
    }
    let mut list: Vec<&str> = headers.get_all(&name).iter().filter_map(|v| v.to_str().ok()).collect();
    list.push(item);
    if let Ok(value) = HeaderValue::from_str(&list.join(", ")) {
        headers.insert(name, value);
    }
}

pub(crate) fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn ip_text_writes_what_display_writes() {
        for octet in 0..=255u8 {
            let ip = IpAddr::from([octet, 255 - octet, octet / 2, 7]);
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for ip in ["::1", "fe80::1:2", "::ffff:10.1.2.3"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
            assert_eq!(ip_text(ip.to_canonical()), ip.to_canonical().to_string());
        }
    }

    /// Each hop-by-hop header goes also when it is the only one (the removals are skipped
    /// when none is there), and so does each forwarding header from an untrusted client.
    #[test]
    fn each_hop_by_hop_and_forwarding_header_goes_on_its_own() {
        let hop = ["keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "proxy-authenticate"];
        for name in hop.into_iter().chain(["proxy-authorization", "connection"]) {
            let mut h = map(&[(name, "x")]);
            prepare_request(&mut h, client("10.0.0.1", "hello.default.localhost", "http"), None);
            assert!(h.get(name).is_none(), "{name}");
        }
        for name in ["forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"] {
            let mut h = map(&[(name, "evil")]);
            prepare_request(&mut h, client("10.0.0.1", "hello.default.localhost", "http"), None);
            assert!(h.get_all(name).iter().all(|v| !v.to_str().unwrap().contains("evil")), "{name}");
        }
    }

    /// A trusted proxy at `ip` on a plain HTTP listener, forwarding a request for `host`.
    fn proxy<'a>(ip: &str, host: &'a str) -> Peer<'a> {
        Peer { ip: ip.parse().unwrap(), host, scheme: "http", trusted: true }
    }

    /// An untrusted client at `ip` on a listener of `scheme`, asking for `host`.
    fn client<'a>(ip: &str, host: &'a str, scheme: &'static str) -> Peer<'a> {
        Peer { ip: ip.parse().unwrap(), host, scheme, trusted: false }
    }

    #[test]
    fn hop_by_hop_headers_go_and_the_rest_stays() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip, trailers"),
            ("proxy-authorization", "Basic x"),
            ("trailer", "grpc-status"),
            ("x-custom", "a"),
            ("x-custom", "b"),
            ("cookie", "c=1"),
        ]);
        prepare_request(&mut h, client("10.0.0.1", "hello.default.localhost", "http"), None);
        for gone in ["connection", "keep-alive", "x-secret", "transfer-encoding", "proxy-authorization", "upgrade"] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert_eq!(get(&h, "te"), Some("trailers"));
        assert_eq!(get(&h, "trailer"), Some("grpc-status"));
        assert_eq!(h.get_all("x-custom").iter().count(), 2);
        assert_eq!(get(&h, "cookie"), Some("c=1"));
    }

    #[test]
    fn a_trusted_proxy_s_forwarding_headers_are_appended_to() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("forwarded", "for=1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "1.1.1.1"),
        ]);
        prepare_request(&mut h, proxy("::ffff:10.0.0.2", "hello.default.localhost:8080"), None);
        assert_eq!(get(&h, "x-forwarded-for"), Some("1.1.1.1, 10.0.0.2"));
        assert_eq!(
            get(&h, "forwarded"),
            Some(r#"for=1.1.1.1, for=10.0.0.2;proto=http;host="hello.default.localhost:8080""#)
        );
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"), "a proxy in front knows better");
        assert_eq!(get(&h, "x-forwarded-host"), Some("hello.default.localhost:8080"));
        assert_eq!(get(&h, "x-real-ip"), Some("1.1.1.1"));

        let mut h = HeaderMap::new();
        prepare_request(&mut h, proxy("2001:db8::1", "a.b.localhost"), None);
        assert_eq!(get(&h, "forwarded"), Some(r#"for="[2001:db8::1]";proto=http;host=a.b.localhost"#));
        assert_eq!(get(&h, "x-forwarded-for"), Some("2001:db8::1"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-real-ip"), Some("2001:db8::1"));
    }

    #[test]
    fn an_untrusted_client_s_forwarding_headers_are_replaced_by_what_the_gateway_saw() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("forwarded", "for=1.1.1.1;proto=https"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "bank.example"),
            ("x-real-ip", "1.1.1.1"),
        ]);
        prepare_request(&mut h, client("10.0.0.2", "hello.default.localhost", "http"), None);
        assert_eq!(get(&h, "x-forwarded-for"), Some("10.0.0.2"));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(get(&h, "forwarded"), Some("for=10.0.0.2;proto=http;host=hello.default.localhost"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("hello.default.localhost"));
        assert_eq!(get(&h, "x-real-ip"), Some("10.0.0.2"));

        // The listener's scheme, not the client's word, names the protocol.
        let mut h = map(&[("x-forwarded-proto", "http")]);
        prepare_request(&mut h, client("10.0.0.2", "h", "https"), None);
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, "forwarded"), Some("for=10.0.0.2;proto=https;host=h"));
    }

    #[test]
    fn a_valid_traceparent_is_kept_and_an_invalid_one_replaced() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = map(&[("traceparent", valid), ("tracestate", "a=b")]);
        prepare_request(&mut h, client("10.0.0.1", "h", "http"), None);
        assert_eq!(get(&h, "traceparent"), Some(valid));
        assert_eq!(get(&h, "tracestate"), Some("a=b"));

        let mut h =
            map(&[("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"), ("tracestate", "a=b")]);
        prepare_request(&mut h, client("10.0.0.1", "h", "http"), None);
        let new = get(&h, "traceparent").unwrap_or_default();
        assert!(valid_traceparent(new), "{new}");
        assert!(h.get("tracestate").is_none());
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn upgrades_are_kept_only_when_asked_for() {
        let h = map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        let protocol = upgrade_protocol(&h);
        assert_eq!(protocol.as_ref().and_then(|v| v.to_str().ok()), Some("websocket"));
        let mut forwarded = h.clone();
        prepare_request(&mut forwarded, client("10.0.0.1", "h", "http"), protocol.as_ref());
        assert_eq!(get(&forwarded, "connection"), Some("upgrade"));
        assert_eq!(get(&forwarded, "upgrade"), Some("websocket"));
        assert_eq!(upgrade_protocol(&map(&[("upgrade", "websocket")])), None);
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let mut h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(ensure_request_id(&mut h), "abc-123");
        let mut h = map(&[("x-request-id", "has space")]);
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 32);
        assert_eq!(h.get("x-request-id"), Some(&id));
        assert_ne!(ensure_request_id(&mut HeaderMap::new()), ensure_request_id(&mut HeaderMap::new()));
    }
}
