//! Token review for the platform's own servers (the agent's logs service, the autoscaler's
//! demand service): a caller presents `authorization: Bearer TOKEN`; the API server, asked
//! `WhoAmI` with that token, says who it is, and only the cluster roles given are let in. As
//! Kubernetes' TokenReview, this keeps one authority over tokens: a deleted account or a
//! retired key stops working here as it does at the API. Answers are cached briefly per token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::{Client, Error};

/// How long an accepted token is trusted without asking again.
const ACCEPTED_FOR: Duration = Duration::from_secs(30);
/// How long a refused token stays refused without asking again.
const REFUSED_FOR: Duration = Duration::from_secs(5);
/// The most tokens remembered; past it the cache starts afresh.
const MAX_CACHED: usize = 4096;

type Answer = Result<String, Status>;

/// Reviews the tokens of calls to one server.
pub struct TokenReview {
    client: Client,
    roles: &'static [&'static str],
    cache: Mutex<HashMap<String, (Answer, Instant)>>,
}

impl std::fmt::Debug for TokenReview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReview").field("roles", &self.roles).finish_non_exhaustive()
    }
}

impl TokenReview {
    /// Lets in callers whose cluster role is one of `roles`, asking the API through `client`
    /// (whose own credentials are not used for the question: the caller's token is).
    pub fn new(client: Client, roles: &'static [&'static str]) -> TokenReview {
        TokenReview { client, roles, cache: Mutex::new(HashMap::new()) }
    }

    /// The caller's user name, or `UNAUTHENTICATED` / `PERMISSION_DENIED`.
    pub async fn check(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Status::unauthenticated("no credentials: send authorization: Bearer TOKEN"))?;
        if let Some(answer) = self.cached(&token) {
            return answer;
        }
        let answer = match self.client.with_token(&token).who_am_i().await {
            Ok(who) if self.roles.contains(&who.cluster_role.as_str()) => Ok(who.username),
            Ok(who) => Err(Status::permission_denied(format!("{} may not call this service", who.username))),
            Err(Error::Unauthenticated(m)) => Err(Status::unauthenticated(m)),
            // The API could not answer: refuse this call, remember nothing.
            Err(e) => return Err(Status::unavailable(format!("cannot review the token: {e}"))),
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(token, (answer.clone(), Instant::now()));
        }
        answer
    }

    fn cached(&self, token: &str) -> Option<Answer> {
        let cache = self.cache.lock().ok()?;
        let (answer, at) = cache.get(token)?;
        let ttl = if answer.is_ok() { ACCEPTED_FOR } else { REFUSED_FOR };
        (at.elapsed() < ttl).then(|| answer.clone())
    }
}
