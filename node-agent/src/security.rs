//! The node's half of the restricted profile: who a container runs as, and which capabilities
//! it gets back, decided against its image before the container is made.
//!
//! The API server refuses what a manifest may not ask for (see `stratus_api::pod_security`);
//! this is the part only a node can check, because only it has the image: `runAsNonRoot`
//! (asked for by the container, or by the node for every container with `--require-non-root`)
//! is kept the way the kubelet keeps it. A container with a non-zero numeric `runAsUser` is
//! fine; without one, the image's `USER` decides: none, `root`, `0` or `0:…` runs as root and
//! is refused, and a user name is refused too, since nothing outside the image can tell which
//! uid it stands for. Capabilities are checked again, in case an Instance was stored before
//! the API server refused them.

use stratus_api::pod_security::{ALLOWED_CAPABILITIES, capability_allowed, capability_name};
use stratus_api::v1::SecurityContext;

use crate::runtime::{self, Runtime};

/// The reason an Instance's status gives when its container may not run as asked (the
/// kubelet's).
pub const REFUSED_REASON: &str = "CreateContainerConfigError";

/// What a container runs as and may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The engine's `User`: "uid", "uid:gid", "name:gid"; empty = the image's own.
    pub user: String,
    /// The capabilities added back (all others are dropped), by their canonical names.
    pub cap_add: Vec<String>,
}

/// Why a container cannot be given an [`Identity`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The container must not run as asked: the message says why, for the Instance's status.
    #[error("{0}")]
    Refused(String),
    /// The image could not be inspected.
    #[error("inspecting the image failed: {0}")]
    Runtime(#[from] runtime::Error),
}

/// The identity of a container of `image` (present locally) with the security context `sc`,
/// on a node that requires non-root users for every container if `require_non_root`.
pub async fn identity(
    runtime: &dyn Runtime,
    image: &str,
    sc: Option<&SecurityContext>,
    require_non_root: bool,
) -> Result<Identity, Error> {
    let sc = sc.cloned().unwrap_or_default();
    let added = sc.capabilities.as_ref().map(|c| c.add.clone()).unwrap_or_default();
    if let Some(refused) = added.iter().find(|raw| !capability_allowed(raw)) {
        return Err(Error::Refused(format!(
            "securityContext.capabilities.add: {refused:?} cannot be added; only {} may be",
            ALLOWED_CAPABILITIES.join(", ")
        )));
    }
    let mut cap_add: Vec<String> = added.iter().map(|raw| capability_name(raw)).collect();
    cap_add.sort_unstable();
    cap_add.dedup();

    let asked = sc.run_as_non_root == Some(true);
    let non_root = asked || require_non_root;
    // The image's user matters when the container does not name its own.
    let image_user = match sc.run_as_user {
        None if non_root || sc.run_as_group.is_some() => runtime.image_user(image).await?.unwrap_or_default(),
        _ => String::new(),
    };
    if non_root {
        check_non_root(sc.run_as_user, &image_user, asked, image)?;
    }
    let user = match (sc.run_as_user, sc.run_as_group) {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        (Some(u), None) => u.to_string(),
        // The engine takes a user and a group together: the image's user, with this group.
        (None, Some(g)) => match image_user.split(':').next().unwrap_or_default() {
            "" => format!("0:{g}"),
            user => format!("{user}:{g}"),
        },
        (None, None) => String::new(),
    };
    Ok(Identity { user, cap_add })
}

/// Refuses a container that would run as root, or as a user whose uid cannot be told.
fn check_non_root(run_as_user: Option<i64>, image_user: &str, asked: bool, image: &str) -> Result<(), Error> {
    let who = if asked {
        "container has runAsNonRoot".to_owned()
    } else {
        "this node requires every container to run as a non-root user (--require-non-root)".to_owned()
    };
    let remedy = "set securityContext.runAsUser to a non-zero uid, or give the image a numeric non-root USER";
    if let Some(uid) = run_as_user {
        return if uid == 0 { Err(Error::Refused(format!("{who} and runAsUser 0 is root; {remedy}"))) } else { Ok(()) };
    }
    let user = image_user.split(':').next().unwrap_or_default().trim();
    match user.parse::<u32>() {
        Ok(0) => Err(Error::Refused(format!("{who} and image {image} will run as root (USER {image_user}); {remedy}"))),
        Ok(_) => Ok(()),
        Err(_) if user.is_empty() || user == "root" => {
            Err(Error::Refused(format!("{who} and image {image} will run as root; {remedy}")))
        }
        Err(_) => Err(Error::Refused(format!(
            "{who} and image {image} has non-numeric user ({user}), cannot verify user is non-root; {remedy}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use stratus_api::v1::Capabilities;

    use super::*;
    use crate::runtime::fake::FakeRuntime;

    const IMAGE: &str = "img:v1";

    fn runtime(user: &str) -> FakeRuntime {
        let fake = FakeRuntime::new();
        fake.add_image(IMAGE, "img@sha256:1");
        fake.set_image_user(IMAGE, user);
        fake
    }

    fn context(user: Option<i64>, group: Option<i64>, non_root: Option<bool>) -> SecurityContext {
        SecurityContext { run_as_user: user, run_as_group: group, run_as_non_root: non_root, ..Default::default() }
    }

    async fn refusal(image_user: &str, sc: SecurityContext, require: bool) -> Option<String> {
        match identity(&runtime(image_user), IMAGE, Some(&sc), require).await {
            Ok(_) => None,
            Err(Error::Refused(message)) => Some(message),
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn run_as_non_root_refuses_root_and_unverifiable_users_as_the_kubelet_does() {
        let asked = context(None, None, Some(true));
        for root in ["", "root", "0", "0:0", "0:1000"] {
            let message = refusal(root, asked.clone(), false).await.unwrap_or_else(|| panic!("{root:?} accepted"));
            assert!(message.starts_with("container has runAsNonRoot and image img:v1 will run as root"), "{message}");
        }
        let named = refusal("app", asked.clone(), false).await.unwrap();
        assert!(named.contains("non-numeric user (app), cannot verify user is non-root"), "{named}");
        for fine in ["1000", "1000:1000", "65534:0"] {
            assert_eq!(refusal(fine, asked.clone(), false).await, None, "{fine:?}");
        }
        // The container's own uid decides over the image's.
        assert_eq!(refusal("", context(Some(1000), None, Some(true)), false).await, None);
        let root = refusal("1000", context(Some(0), None, Some(true)), false).await.unwrap();
        assert!(root.contains("runAsUser 0 is root"), "{root}");
        // Without runAsNonRoot, root is allowed.
        assert_eq!(refusal("", SecurityContext::default(), false).await, None);
    }

    #[tokio::test]
    async fn a_node_that_requires_non_root_holds_every_container_to_it() {
        let message = refusal("", SecurityContext::default(), true).await.unwrap();
        assert!(message.contains("requires every container to run as a non-root user"), "{message}");
        // Even one that says runAsNonRoot: false.
        assert!(refusal("0", context(None, None, Some(false)), true).await.is_some());
        assert_eq!(refusal("1000", SecurityContext::default(), true).await, None);
        assert_eq!(refusal("", context(Some(1000), None, None), true).await, None);
    }

    #[tokio::test]
    async fn a_group_alone_keeps_the_images_user() {
        async fn user(image_user: &str, sc: SecurityContext) -> String {
            identity(&runtime(image_user), IMAGE, Some(&sc), false).await.unwrap().user
        }
        assert_eq!(user("1000", context(None, Some(2000), None)).await, "1000:2000");
        assert_eq!(user("app:app", context(None, Some(2000), None)).await, "app:2000");
        assert_eq!(user("", context(None, Some(2000), None)).await, "0:2000");
        assert_eq!(user("app", context(Some(7), Some(8), None)).await, "7:8");
        assert_eq!(user("app", context(Some(7), None, None)).await, "7");
        assert_eq!(user("app", SecurityContext::default()).await, "");
    }

    #[tokio::test]
    async fn only_allowed_capabilities_come_back_by_their_canonical_names() {
        let adding = |caps: &[&str]| SecurityContext {
            capabilities: Some(Capabilities { add: caps.iter().map(|c| c.to_string()).collect(), drop: vec![] }),
            ..Default::default()
        };
        let fake = runtime("");
        let id = identity(&fake, IMAGE, Some(&adding(&["cap_net_bind_service"])), false).await.unwrap();
        assert_eq!(id.cap_add, ["NET_BIND_SERVICE"]);
        for bad in ["SYS_ADMIN", "ALL"] {
            match identity(&fake, IMAGE, Some(&adding(&["NET_BIND_SERVICE", bad])), false).await {
                Err(Error::Refused(message)) => {
                    assert!(message.contains(&format!("{bad:?} cannot be added")), "{message}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
