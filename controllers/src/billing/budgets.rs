//! Budgets: thresholds of an amount per period, checked against the tenant's current invoice
//! (see the [module documentation](super)).
//!
//! **Exactly one Event per crossing.** A crossing is written to the Budget's status
//! (`status.crossed`, with `status.period`) before anything announces it, conditional on the
//! resourceVersion read; only a successful write is followed by its Event. A restarted (or new)
//! leader reads the crossing back and announces nothing; a second writer's write fails. The
//! price of that order: a crash between the write and the Event loses that Event (the crossing
//! stays recorded in the status). Events about a Budget (cluster-scoped) are in the "default"
//! namespace, as every cluster-scoped object's.
//!
//! **Webhooks: at least once.** A crossing of a Budget with `webhookUrl` is also put in
//! `status.webhookPending`, and each pending threshold is POSTed (a JSON body signed
//! `X-Stratus-Signature: sha256=HEX`, HMAC-SHA256 of the body under the key in the Secret
//! `webhookSecretRef`) until it is answered 2xx, then taken out of the status; failures are
//! retried with a doubling backoff from 1 s to 5 min. A crash between the 2xx and the status
//! write repeats the call: the body's `id` (`{budget}.{period}.{threshold}`) lets the receiver
//! ignore a repeat. A new period clears `crossed`; the calls still pending then move to
//! `status.earlierWebhooksPending` and are made as before, with their own period's id.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stratus_api::Resource;
use stratus_api::billing::{self, Amount, Prices};
use stratus_api::v1::{Budget, BudgetCall, BudgetSpec, BudgetStatus, Secret};
use stratus_client::Error as ClientError;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Error, Result};
use crate::context::Context;
use crate::events::EventType;
use crate::metrics::WebhookResult;

/// The Event reason of a crossing.
pub const REASON: &str = "BudgetThresholdCrossed";
/// The header carrying a webhook body's signature.
pub const SIGNATURE_HEADER: &str = "X-Stratus-Signature";

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(300);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The new status of a Budget whose tenant spent `spent` in `period`, and the thresholds it
/// crosses now (not crossed before in this period), in increasing order.
pub fn crossings(
    spec: &BudgetSpec,
    old: &BudgetStatus,
    period: &str,
    limit: Amount,
    spent: Amount,
    currency: &str,
) -> (BudgetStatus, Vec<i32>) {
    let mut next = if old.period == period {
        old.clone()
    } else {
        // The calls not delivered in the period that ended are still owed.
        let mut earlier = old.earlier_webhooks_pending.clone();
        earlier.extend(old.webhook_pending.iter().map(|&threshold| BudgetCall {
            period: old.period.clone(),
            threshold,
            spent: old.spent.clone(),
        }));
        BudgetStatus { period: period.into(), earlier_webhooks_pending: earlier, ..Default::default() }
    };
    let minor = usize::try_from(billing::minor_digits(currency)).unwrap_or(2);
    next.spent = spent.to_decimal(minor);
    let mut thresholds: Vec<i32> = spec.thresholds.iter().copied().filter(|t| *t > 0).collect();
    thresholds.sort_unstable();
    thresholds.dedup();
    let newly: Vec<i32> = thresholds
        .into_iter()
        .filter(|t| !next.crossed.contains(t))
        .filter(|t| spent.0.saturating_mul(100) >= limit.0.saturating_mul(i128::from(*t)))
        .collect();
    next.crossed.extend(&newly);
    if !spec.webhook_url.is_empty() {
        next.webhook_pending.extend(&newly);
    }
    (next, newly)
}

/// The webhook calls a Budget still owes: those of earlier periods, then this period's.
pub fn pending_calls(status: &BudgetStatus) -> Vec<BudgetCall> {
    let current = status.webhook_pending.iter().map(|&threshold| BudgetCall {
        period: status.period.clone(),
        threshold,
        spent: status.spent.clone(),
    });
    status.earlier_webhooks_pending.iter().cloned().chain(current).collect()
}

/// The webhook body of a crossing.
pub fn webhook_body(budget: &Budget, call: &BudgetCall, currency: &str) -> String {
    let spec = budget.spec.clone().unwrap_or_default();
    let name = &budget.meta().name;
    serde_json::json!({
        "id": format!("{name}.{}.{}", call.period, call.threshold),
        "budget": name,
        "tenant": spec.tenant,
        "period": call.period,
        "threshold": call.threshold,
        "amount": spec.amount,
        "spent": call.spent,
        "currency": currency,
    })
    .to_string()
}

/// `sha256=HEX` of the HMAC-SHA256 of `body` under `key`: the signature header's value.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Why a webhook call failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("reading the key {key:?} of the Secret {namespace}/{name} (spec.webhookSecretRef) failed")]
    Secret {
        namespace: String,
        name: String,
        key: String,
        #[source]
        source: ClientError,
    },
    #[error(
        "namespace {namespace:?} is not tenant {tenant:?}'s: a budget's webhook is signed with a key of its own tenant"
    )]
    ForeignSecret { namespace: String, tenant: String },
    #[error("the Secret {namespace}/{name} has no key {key:?} (spec.webhookSecretRef)")]
    NoKey { namespace: String, name: String, key: String },
    #[error("spec.webhookUrl {url:?} is not a URL: {reason}")]
    Url { url: String, reason: String },
    #[error("spec.webhookUrl {url:?} is HTTPS, but no CA certificates could be loaded")]
    NoTls { url: String },
    #[error("calling spec.webhookUrl {url:?} failed: {reason}")]
    Call { url: String, reason: String },
    #[error("spec.webhookUrl {url:?} answered {status}")]
    Status { url: String, status: u16 },
}

/// The webhook client and the retry schedule of undelivered calls (kept in memory: after a
/// restart every pending call is tried at once).
pub struct Webhooks {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    https: Option<HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>>,
    retries: HashMap<(String, String, i32), (u32, Instant)>,
}

impl Default for Webhooks {
    fn default() -> Webhooks {
        Webhooks::new()
    }
}

impl Webhooks {
    pub fn new() -> Webhooks {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CALL_TIMEOUT));
        connector.enforce_http(false);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let https = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider) {
            Ok(builder) => Some(
                HttpClient::builder(TokioExecutor::new())
                    .build(builder.https_or_http().enable_http1().wrap_connector(connector.clone())),
            ),
            Err(e) => {
                warn!(error = %e, "no CA certificates: budget webhooks are called over plain HTTP only");
                None
            }
        };
        Webhooks { http: HttpClient::builder(TokioExecutor::new()).build(connector), https, retries: HashMap::new() }
    }

    fn due(&self, key: &(String, String, i32)) -> bool {
        self.retries.get(key).is_none_or(|(_, at)| Instant::now() >= *at)
    }

    fn failed(&mut self, key: (String, String, i32)) {
        let attempts = self.retries.get(&key).map_or(0, |(n, _)| *n);
        let delay = FIRST_RETRY.saturating_mul(2u32.saturating_pow(attempts)).min(LAST_RETRY);
        self.retries.insert(key, (attempts.saturating_add(1), Instant::now() + delay));
    }

    /// POSTs `body` to `url`, signed under `key` when there is one.
    async fn post(&self, url: &str, key: Option<&[u8]>, body: String) -> Result<(), CallError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| CallError::Url { url: url.into(), reason: e.to_string() })?;
        let mut req = Request::post(uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("stratus-controllers/", env!("CARGO_PKG_VERSION")));
        if let Some(key) = key {
            req = req.header(SIGNATURE_HEADER, signature(key, body.as_bytes()));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Url { url: url.into(), reason: e.to_string() })?;
        let call = async {
            match uri.scheme_str() {
                Some("https") => match &self.https {
                    Some(client) => client.request(req).await.map_err(|e| e.to_string()),
                    None => Err(String::new()),
                },
                Some("http") => self.http.request(req).await.map_err(|e| e.to_string()),
                _ => Err("the scheme is not http or https".into()),
            }
        };
        let resp = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(reason)) if reason.is_empty() => return Err(CallError::NoTls { url: url.into() }),
            Ok(Err(reason)) => return Err(CallError::Call { url: url.into(), reason }),
            Err(_) => {
                return Err(CallError::Call { url: url.into(), reason: format!("no answer in {CALL_TIMEOUT:?}") });
            }
        };
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(CallError::Status { url: url.into(), status: resp.status().as_u16() })
        }
    }
}

/// Step 5 of a pass: each Budget against its tenant's spending this period (`current`, by
/// tenant; none spent when absent); new crossings recorded, then announced; pending webhook
/// calls made.
pub async fn follow(
    ctx: &Context,
    webhooks: &mut Webhooks,
    prices: &Prices,
    now: i64,
    current: &BTreeMap<String, Amount>,
    budgets: Vec<Budget>,
) -> Result<()> {
    let period = prices.period.holding(now).0;
    for mut budget in budgets {
        let name = budget.meta().name.clone();
        let Some(spec) = budget.spec.clone() else { continue };
        let limit: Amount = match spec.amount.parse() {
            Ok(a) => a,
            Err(e) => {
                warn!(budget = name, error = e, "spec.amount is not an amount: the budget is not followed");
                continue;
            }
        };
        let spent = current.get(&spec.tenant).copied().unwrap_or_default();
        let old = budget.status.clone().unwrap_or_default();
        let (next, newly) = crossings(&spec, &old, &period, limit, spent, &prices.currency);
        if next != old {
            budget.status = Some(next);
            budget = match ctx.client.update_status(budget).await {
                Ok(b) => b,
                // Changed meanwhile: the next pass decides on what is stored.
                Err(ClientError::Conflict(_) | ClientError::NotFound(_)) => continue,
                Err(source) => return Err(Error::WriteBudget { budget: name, source }),
            };
            let status = budget.status.clone().unwrap_or_default();
            for t in newly {
                let message = format!(
                    "tenant {} spent {} {} of the budget {} {} in period {}: the {t}% threshold is crossed",
                    spec.tenant, status.spent, prices.currency, spec.amount, prices.currency, status.period
                );
                info!(budget = name, threshold = t, "{message}");
                ctx.metrics.billing_budget_crossings.inc();
                ctx.events.record(&budget, EventType::Warning, REASON, &message).await;
            }
        }
        deliver(ctx, webhooks, &prices.currency, budget).await?;
    }
    Ok(())
}

/// Calls the webhook for each pending threshold whose retry is due; delivered ones leave
/// `status.webhookPending`.
async fn deliver(ctx: &Context, webhooks: &mut Webhooks, currency: &str, mut budget: Budget) -> Result<()> {
    let name = budget.meta().name.clone();
    let uid = budget.meta().uid.clone();
    let spec = budget.spec.clone().unwrap_or_default();
    let mut status = budget.status.clone().unwrap_or_default();
    let calls = pending_calls(&status);
    if calls.is_empty() || spec.webhook_url.is_empty() {
        return Ok(());
    }
    let mut delivered = Vec::new();
    for call in calls {
        let key = (uid.clone(), call.period.clone(), call.threshold);
        if !webhooks.due(&key) {
            continue;
        }
        let body = webhook_body(&budget, &call, currency);
        let made = async {
            let secret = match &spec.webhook_secret_ref {
                Some(r) if !r.name.is_empty() => Some(secret_key(ctx, &spec.tenant, r).await?),
                _ => None,
            };
            webhooks.post(&spec.webhook_url, secret.as_deref(), body).await
        };
        match made.await {
            Ok(()) => {
                ctx.metrics.billing_webhook_calls.get_or_create(&WebhookResult { result: "ok".into() }).inc();
                webhooks.retries.remove(&key);
                delivered.push((call.period, call.threshold));
            }
            Err(e) => {
                ctx.metrics.billing_webhook_calls.get_or_create(&WebhookResult { result: "error".into() }).inc();
                warn!(budget = name, period = call.period, threshold = call.threshold, error = %super::chain(&e), "budget webhook call failed; retrying");
                webhooks.failed(key);
            }
        }
    }
    if delivered.is_empty() {
        return Ok(());
    }
    let period = status.period.clone();
    status.webhook_pending.retain(|t| !delivered.contains(&(period.clone(), *t)));
    status.earlier_webhooks_pending.retain(|c| !delivered.contains(&(c.period.clone(), c.threshold)));
    budget.status = Some(status);
    match ctx.client.update_status(budget).await {
        // A conflict leaves the calls pending: they are made again (the receiver sees the id twice).
        Ok(_) | Err(ClientError::Conflict(_) | ClientError::NotFound(_)) => Ok(()),
        Err(source) => Err(Error::WriteBudget { budget: name, source }),
    }
}

/// The webhook's key, from a Secret of the Budget's own tenant only: the API refuses a Budget
/// naming another tenant's namespace, and this is checked again here, since a namespace can
/// change hands after the Budget was written (the controllers may read any Secret).
async fn secret_key(ctx: &Context, tenant: &str, r: &stratus_api::v1::BudgetSecretRef) -> Result<Vec<u8>, CallError> {
    let owner = match ctx.client.get::<stratus_api::v1::Namespace>("", &r.namespace).await {
        Ok(ns) => ns.spec.map(|s| s.tenant).unwrap_or_default(),
        Err(ClientError::NotFound(_)) => String::new(),
        Err(source) => {
            return Err(CallError::Secret {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                key: r.key.clone(),
                source,
            });
        }
    };
    if owner.is_empty() || owner != tenant {
        return Err(CallError::ForeignSecret { namespace: r.namespace.clone(), tenant: tenant.to_string() });
    }
    let secret = ctx.client.get::<Secret>(&r.namespace, &r.name).await.map_err(|source| CallError::Secret {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        key: r.key.clone(),
        source,
    })?;
    secret.data.get(&r.key).map(|v| v.as_bytes().to_vec()).ok_or_else(|| CallError::NoKey {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        key: r.key.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(s: &str) -> Amount {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_threshold_is_crossed_once_per_period() {
        let spec = BudgetSpec {
            tenant: "acme".into(),
            amount: "10".into(),
            thresholds: vec![90, 50, 100, 50],
            webhook_url: "http://127.0.0.1:1/hook".into(),
            webhook_secret_ref: None,
        };
        let (s, newly) = crossings(&spec, &BudgetStatus::default(), "p1", amount("10"), amount("4.99"), "USD");
        assert!(newly.is_empty());
        assert_eq!(s.spent, "4.99");
        let (s, newly) = crossings(&spec, &s, "p1", amount("10"), amount("9.00"), "USD");
        assert_eq!(newly, [50, 90], "9.00 is exactly 90%");
        assert_eq!((s.crossed.clone(), s.webhook_pending.clone()), (vec![50, 90], vec![50, 90]));
        let (s, newly) = crossings(&spec, &s, "p1", amount("10"), amount("9.50"), "USD");
        assert!(newly.is_empty(), "crossed already");
        let (s, newly) = crossings(&spec, &s, "p2", amount("10"), amount("5"), "USD");
        assert_eq!((newly, s.crossed.clone(), s.period.as_str()), (vec![50], vec![50], "p2"));
        // The calls p1 still owed are made with p1's period and spending, before p2's.
        let owed: Vec<_> = pending_calls(&s).into_iter().map(|c| (c.period, c.threshold, c.spent)).collect();
        assert_eq!(
            owed,
            [("p1".into(), 50, "9.50".into()), ("p1".into(), 90, "9.50".into()), ("p2".into(), 50, "5.00".to_string())]
        );
        let (s, _) = crossings(&spec, &s, "p3", amount("10"), amount("0"), "USD");
        assert_eq!(pending_calls(&s).len(), 3, "still owed a period later");
    }

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
