//! [`EtcdStore`]: the store on an etcd v3 cluster, through `etcd-client`.
//!
//! Every conditional write is one etcd transaction whose failure branch reads the key, so a
//! failed precondition is told apart (not found or conflict) without a second round trip.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity, KvClient,
    PutOptions, ResponseHeader, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
    WatchResponse,
};
use futures::StreamExt;

use crate::{
    Error, KeyValue, LeaseId, ListOptions, ListResult, Result, Revision, Store, WatchEvent, WatchStream,
    check_value_size,
};

const COMPACTED: &str = "required revision has been compacted";
const FUTURE_REVISION: &str = "required revision is a future revision";
const LEASE_NOT_FOUND: &str = "requested lease not found";
/// Large lists and watch responses are legitimate; the gRPC default of 4 MiB is not a limit
/// the store wants (the Kubernetes API server lifts it the same way).
const MAX_RESPONSE: usize = i32::MAX as usize;
/// A key nobody writes, watched to learn the compaction revision.
const PROBE_KEY: &str = "\0stratus/compaction-probe";
/// How many times a request is made while it fails before reaching etcd, and the pause before
/// the third try (the second is made at once; doubled for each one after it: 0.3 s in all).
const SEND_ATTEMPTS: u32 = 6;
const FIRST_RESEND_PAUSE: Duration = Duration::from_millis(20);

/// Whether the request failed before it was sent: no connection to the member the channel
/// chose could be made. Such a request is safe to make again, a write included.
///
/// The client balances requests over every endpoint, and a member it has lost stays in the
/// balance while it reconnects: the next request given to it fails with the connect error
/// instead of going to a member that is up (tonic's `Reconnect` reports ready and hands the
/// error to the next call). Without sending again, a member restarting would fail requests
/// the others could serve.
fn never_sent(e: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(status) if status.code() == tonic::Code::Unavailable => Some(status),
        etcd_client::Error::TransportError(e) => Some(e),
        _ => None,
    };
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Makes the request the expression `$call` makes (evaluated again for each try) until it
/// reaches etcd, up to [`SEND_ATTEMPTS`] times: the balance gives the next try to another
/// member, or to the same member once it is back.
macro_rules! send {
    ($call:expr) => {{
        let mut attempt = 1;
        loop {
            match $call.await {
                Err(e) if attempt < SEND_ATTEMPTS && never_sent(&e) => {
                    tracing::debug!(error = %e, attempt, "an etcd request was not sent; sending it again");
                    tokio::time::sleep(resend_pause(attempt)).await;
                    attempt += 1;
                }
                result => break result,
            }
        }
    }};
}

/// The pause after the failed try number `attempt` (from 1): none before the second, which
/// the balance will likely give to another member, then doubling from [`FIRST_RESEND_PAUSE`].
fn resend_pause(attempt: u32) -> Duration {
    match attempt {
        0 | 1 => Duration::ZERO,
        n => FIRST_RESEND_PAUSE * 2u32.saturating_pow(n - 2),
    }
}

/// The etcd backend. Lease TTLs are whole seconds on etcd (rounded up here), and etcd
/// lengthens TTLs below its minimum (1.5 election timeouts).
pub struct EtcdStore {
    client: Client,
    kv: KvClient,
    watch: WatchClient,
}

/// How the store speaks TLS to etcd (`https://` endpoints): whom it trusts, and what it
/// presents to an etcd that asks clients for a certificate (`--client-cert-auth`).
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA certificates (PEM) etcd's serving certificate must chain to; only these are
    /// trusted, not the system's roots.
    pub ca_pem: Vec<u8>,
    /// The client certificate and its private key (both PEM), when etcd asks for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("EtcdTls").field("client_certificate", &self.identity.is_some()).finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster serving at `endpoints` (such as `http://127.0.0.1:2379`)
    /// and checks that it answers within 10 s.
    pub async fn connect(endpoints: &[String]) -> Result<Arc<EtcdStore>> {
        EtcdStore::connect_with(endpoints, None).await
    }

    /// [`EtcdStore::connect`], over TLS when `tls` is given: then every endpoint must be
    /// `https://`, etcd's certificate must chain to `tls.ca_pem` and name the endpoint's host,
    /// and the client certificate is presented when etcd asks. A TLS failure (an untrusted
    /// server, a refused client) shows as etcd not answering, with the handshake's error.
    pub async fn connect_with(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<Arc<EtcdStore>> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(tls) = tls {
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(config);
        }
        let client = Client::connect(endpoints, Some(options)).await.map_err(Error::Etcd)?;
        let store = EtcdStore {
            kv: client.kv_client().max_decoding_message_size(MAX_RESPONSE),
            watch: client.watch_client().max_decoding_message_size(MAX_RESPONSE),
            client,
        };
        match tokio::time::timeout(Duration::from_secs(10), store.current_revision()).await {
            Ok(result) => result?,
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "etcd did not answer");
                return Err(Error::Etcd(etcd_client::Error::IoError(e)));
            }
        };
        Ok(Arc::new(store))
    }

    /// The revision etcd has compacted to, learned from a watch from revision 1, which etcd
    /// cancels naming it. Only asked after etcd said a revision was compacted, so the answer
    /// is immediate; falls back to `fallback` if etcd does not give it.
    async fn compacted(&self, fallback: Revision) -> Revision {
        let probe = async {
            let opts = WatchOptions::new().with_start_revision(1);
            let mut stream = send!(self.watch.clone().watch(PROBE_KEY, Some(opts.clone()))).ok()?;
            while let Some(resp) = stream.message().await.ok()? {
                if resp.canceled() {
                    return Some(resp.compact_revision()).filter(|r| *r > 0);
                }
            }
            None
        };
        let found = tokio::time::timeout(Duration::from_secs(5), probe).await;
        found.ok().flatten().unwrap_or(fallback)
    }

    /// Maps the error of a read at `revision`.
    async fn read_error(&self, e: etcd_client::Error, revision: Option<Revision>) -> Error {
        match revision {
            Some(requested) if is(&e, COMPACTED) => {
                Error::Compacted { requested, compacted: self.compacted(requested + 1).await }
            }
            Some(requested) if is(&e, FUTURE_REVISION) => match self.current_revision().await {
                Ok(current) => Error::FutureRevision { requested, current },
                Err(e) => e,
            },
            _ => Error::Etcd(e),
        }
    }
}

fn is(e: &etcd_client::Error, message: &str) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status) if status.message().contains(message))
}

fn header_revision(header: Option<&ResponseHeader>) -> Result<Revision> {
    header
        .map(ResponseHeader::revision)
        .ok_or_else(|| Error::Etcd(etcd_client::Error::Internal("response has no header".into())))
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: kv.key_str().map_err(|_| Error::Corrupt("etcd key is not utf-8".into()))?.to_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    })
}

/// The key range of a prefix: `[prefix, end)`, where an end of `\0` means "to the last key".
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let key = prefix.as_bytes().to_vec();
    let mut end = key.clone();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (key, end);
        }
    }
    (if key.is_empty() { vec![0] } else { key }, vec![0])
}

/// The mod revision of the key read by a failed transaction's `or_else` branch.
fn failed_read(resp: &TxnResponse) -> Option<Revision> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => get.kvs().first().map(etcd_client::KeyValue::mod_revision),
        _ => None,
    })
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = send!(self.kv.clone().get(key, None)).map_err(Error::Etcd)?;
        resp.kvs().first().map(convert).transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let (mut start, end) = prefix_range(prefix);
        if let Some(after) = opts.start_after.as_deref().filter(|a| *a >= prefix) {
            start = [after.as_bytes(), b"\0"].concat();
        }
        let mut get = GetOptions::new().with_range(end);
        if opts.limit > 0 {
            get = get.with_limit(i64::try_from(opts.limit).unwrap_or(i64::MAX));
        }
        let requested = opts.revision.filter(|r| *r > 0);
        if let Some(revision) = requested {
            get = get.with_revision(revision);
        }
        let resp = match send!(self.kv.clone().get(start.clone(), Some(get.clone()))) {
            Ok(resp) => resp,
            Err(e) => return Err(self.read_error(e, requested).await),
        };
        Ok(ListResult {
            items: resp.kvs().iter().map(convert).collect::<Result<_>>()?,
            revision: match requested {
                Some(revision) => revision,
                None => header_revision(resp.header())?,
            },
            more: resp.more(),
        })
    }

    async fn create(&self, key: &str, value: Bytes, lease: LeaseId) -> Result<Revision> {
        check_value_size(&value)?;
        let put = PutOptions::new().with_lease(lease);
        let txn = Txn::new().when([Compare::create_revision(key, CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key,
            Vec::from(value),
            Some(put),
        )]);
        let resp = send!(self.kv.clone().txn(txn.clone()))
            .map_err(|e| if is(&e, LEASE_NOT_FOUND) { Error::LeaseNotFound(lease) } else { Error::Etcd(e) })?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists { key: key.to_owned() });
        }
        header_revision(resp.header())
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        check_value_size(&value)?;
        let txn = Txn::new()
            .when([
                // A missing key has mod revision 0; it must not be "updated" into existence.
                Compare::create_revision(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(key, Vec::from(value), Some(PutOptions::new().with_ignore_lease()))])
            .or_else([TxnOp::get(key, None)]);
        let resp = send!(self.kv.clone().txn(txn.clone())).map_err(Error::Etcd)?;
        if resp.succeeded() {
            return header_revision(resp.header());
        }
        Err(match failed_read(&resp) {
            Some(actual) => Error::Conflict { key: key.to_owned(), expected, actual },
            None => Error::NotFound { key: key.to_owned() },
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        let mut when = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
        when.extend(expected.map(|e| Compare::mod_revision(key, CompareOp::Equal, e)));
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(key, None)]);
        let resp = send!(self.kv.clone().txn(txn.clone())).map_err(Error::Etcd)?;
        let not_found = || Error::NotFound { key: key.to_owned() };
        if !resp.succeeded() {
            return Err(match (failed_read(&resp), expected) {
                (Some(actual), Some(expected)) => Error::Conflict { key: key.to_owned(), expected, actual },
                _ => not_found(),
            });
        }
        let prev = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().map(convert),
            _ => None,
        });
        Ok((prev.ok_or_else(not_found)??, header_revision(resp.header())?))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let (key, end) = prefix_range(prefix);
        let mut opts = WatchOptions::new().with_range(end).with_prev_key().with_progress_notify();
        if after == Revision::MAX {
            return Err(Error::FutureRevision { requested: after, current: self.current_revision().await? });
        }
        if after > 0 {
            // etcd accepts a watch from a compacted revision and cancels it shortly after;
            // the contract wants the answer now, so read at that revision first.
            let probe = GetOptions::new().with_revision(after + 1).with_count_only();
            match send!(self.kv.clone().get(PROBE_KEY, Some(probe.clone()))) {
                // Watching from a revision not yet written is fine: the watch waits for it.
                Err(e) if !is(&e, FUTURE_REVISION) => return Err(self.read_error(e, Some(after + 1)).await),
                _ => {}
            }
            opts = opts.with_start_revision(after + 1);
        }
        let stream = send!(self.watch.clone().watch(key.clone(), Some(opts.clone()))).map_err(Error::Etcd)?;
        // Wait until etcd has registered the watch, so that a watch "from now" covers every
        // write made after this returns.
        let mut watch = EtcdWatch { stream, pending: VecDeque::new(), next: after + 1, done: false };
        loop {
            match watch.stream.message().await {
                Ok(Some(resp)) if resp.created() && !resp.canceled() => break,
                Ok(Some(resp)) => {
                    watch.absorb(resp);
                    if watch.done {
                        break;
                    }
                }
                Ok(None) => return Err(Error::Closed),
                Err(e) => return Err(Error::Etcd(e)),
            }
        }
        Ok(futures::stream::unfold(watch, EtcdWatch::next).boxed())
    }

    async fn current_revision(&self) -> Result<Revision> {
        let opts = GetOptions::new().with_count_only();
        let resp = send!(self.kv.clone().get(PROBE_KEY, Some(opts.clone()))).map_err(Error::Etcd)?;
        header_revision(resp.header())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match send!(self.kv.clone().compact(revision, None)) {
            Ok(_) => Ok(()),
            // Already compacted that far: the request is satisfied.
            Err(e) if is(&e, COMPACTED) => Ok(()),
            Err(e) if is(&e, FUTURE_REVISION) => {
                Err(Error::FutureRevision { requested: revision, current: self.current_revision().await? })
            }
            Err(e) => Err(Error::Etcd(e)),
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        // etcd counts whole seconds; round up so a lease never lives shorter than asked.
        let secs = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        let resp = send!(self.client.clone().lease_grant(secs, None)).map_err(Error::Etcd)?;
        if !resp.error().is_empty() {
            return Err(Error::Etcd(etcd_client::Error::Internal(resp.error().to_owned())));
        }
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        // One request and its response; dropping the keeper and stream ends the RPC.
        match send!(self.client.clone().lease_keep_alive(lease)) {
            Ok(_) => Ok(()),
            Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                Err(Error::LeaseNotFound(lease))
            }
            Err(e) if is(&e, LEASE_NOT_FOUND) => Err(Error::LeaseNotFound(lease)),
            Err(e) => Err(Error::Etcd(e)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        match send!(self.client.clone().lease_revoke(lease)) {
            Ok(_) => Ok(()),
            Err(e) if is(&e, LEASE_NOT_FOUND) => Err(Error::LeaseNotFound(lease)),
            Err(e) => Err(Error::Etcd(e)),
        }
    }

    async fn health(&self) -> Result<()> {
        let status = send!(self.client.maintenance_client().status()).map_err(Error::Etcd)?;
        let mut problems: Vec<String> = status.errors().to_vec();
        if status.leader() == 0 {
            problems.push("the member has no leader".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Unhealthy(format!("etcd reports: {}", problems.join("; "))))
        }
    }
}

/// Turns etcd watch responses into [`WatchEvent`]s.
struct EtcdWatch {
    stream: etcd_client::WatchStream,
    pending: VecDeque<Result<WatchEvent>>,
    /// The revision of the next change the consumer needs.
    next: Revision,
    /// An error is queued (or the stream ended); nothing follows it.
    done: bool,
}

impl EtcdWatch {
    async fn next(mut self) -> Option<(Result<WatchEvent>, EtcdWatch)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some((item, self));
            }
            if self.done {
                return None;
            }
            match self.stream.message().await {
                Ok(Some(resp)) => self.absorb(resp),
                Ok(None) => {
                    let e = etcd_client::Error::WatchError("etcd ended the watch".into());
                    self.fail(Error::Etcd(e));
                }
                Err(e) => self.fail(Error::Etcd(e)),
            }
        }
    }

    fn fail(&mut self, e: Error) {
        self.pending.push_back(Err(e));
        self.done = true;
    }

    fn absorb(&mut self, resp: WatchResponse) {
        if resp.canceled() {
            let compacted = resp.compact_revision();
            self.fail(if compacted > 0 {
                Error::Compacted { requested: self.next, compacted }
            } else {
                let reason = format!("etcd canceled the watch: {}", resp.cancel_reason());
                Error::Etcd(etcd_client::Error::WatchError(reason))
            });
            return;
        }
        if resp.events().is_empty() {
            // An empty response that is not the creation is a progress notification: etcd
            // sends those only to watchers that have been sent everything up to its revision.
            if let (false, Some(header)) = (resp.created(), resp.header()) {
                self.next = self.next.max(header.revision() + 1);
                self.pending.push_back(Ok(WatchEvent::Progress { revision: header.revision() }));
            }
            return;
        }
        for event in resp.events() {
            match self.convert(event) {
                Ok(e) => {
                    self.next = e.revision() + 1;
                    self.pending.push_back(Ok(e));
                }
                Err(e) => return self.fail(e),
            }
        }
    }

    fn convert(&self, event: &etcd_client::Event) -> Result<WatchEvent> {
        let missing = || Error::Etcd(etcd_client::Error::WatchError("event without kv".into()));
        let kv = event.kv().ok_or_else(missing)?;
        let prev = event.prev_kv().map(convert).transpose()?;
        // etcd leaves out a previous value that compaction removed while the watch was
        // catching up; an event without it would break the contract, so relist instead.
        let prev_compacted = Error::Compacted { requested: kv.mod_revision(), compacted: kv.mod_revision() };
        match event.event_type() {
            EventType::Put => {
                let kv = convert(kv)?;
                if prev.is_none() && kv.create_revision != kv.mod_revision {
                    return Err(prev_compacted);
                }
                Ok(WatchEvent::Put { kv, prev })
            }
            EventType::Delete => {
                Ok(WatchEvent::Delete { prev: prev.ok_or(prev_compacted)?, revision: kv.mod_revision() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> tonic::ConnectError {
        tonic::ConnectError(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)))
    }

    #[test]
    fn only_a_request_that_could_not_connect_counts_as_never_sent() {
        // How tonic reports a member it could not connect to: Unavailable, caused by the
        // connect error.
        let status = tonic::Status::from_error(Box::new(refused()));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(never_sent(&etcd_client::Error::GRpcStatus(status)));
        // An answer of Unavailable from etcd (or a connection lost mid-request): it may have
        // been applied, so it is not made again.
        assert!(!never_sent(&etcd_client::Error::GRpcStatus(tonic::Status::unavailable("etcdserver: no leader"))));
        let lost = tonic::Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert!(!never_sent(&etcd_client::Error::GRpcStatus(lost)));
        assert!(!never_sent(&etcd_client::Error::GRpcStatus(tonic::Status::unknown("tcp connect error"))));
    }

    #[test]
    fn resends_pause_longer_each_time_after_one_at_once() {
        let pauses: Vec<_> = (1..SEND_ATTEMPTS).map(resend_pause).collect();
        assert_eq!(pauses[0], Duration::ZERO);
        assert_eq!(pauses[1], FIRST_RESEND_PAUSE);
        assert!(pauses.windows(2).all(|w| w[0] < w[1]), "{pauses:?}");
        assert_eq!(pauses.iter().sum::<Duration>(), Duration::from_millis(300));
    }
}
