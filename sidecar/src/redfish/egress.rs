//! The I/O half of the egress guard (`kubevirt_bmc_contract::egress` decides): a resolver
//! for the event client that drops every address the policy refuses, so the check holds for
//! the address actually connected to at delivery time (DNS rebinding gains nothing), and the
//! resolution of a media image's host when a client inserts it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use kubevirt_bmc_contract::egress::{EgressError, EgressPolicy, Host, Target};

/// Resolves like the system resolver, then keeps only addresses the policy allows; a name
/// with none left fails the connection with the reason.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<EgressPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<EgressPolicy>) -> GuardedResolver {
        GuardedResolver { policy }
    }
}

type Resolving = Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            allowed(&policy, name.as_str(), found).map(Vec::into_iter)
        })
    }
}

/// The addresses of `found` the policy allows, or why there are none.
pub fn allowed(
    policy: &EgressPolicy,
    name: &str,
    found: Vec<SocketAddr>,
) -> io::Result<Vec<SocketAddr>> {
    let mut refusal = None;
    let kept: Vec<SocketAddr> = found
        .into_iter()
        .filter(|addr| match policy.check(addr.ip()) {
            Ok(()) => true,
            Err(error) => {
                refusal.get_or_insert(error);
                false
            }
        })
        .collect();
    match (kept.is_empty(), refusal) {
        (false, _) => Ok(kept),
        (true, Some(error)) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{name} resolves to a refused address: {error}"),
        )),
        (true, None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} has no address"),
        )),
    }
}

/// Checks a URL a client hands us, resolving a name now: every address it has must be
/// allowed, since the fetch (CDI's importer for media) may pick any of them. A name that
/// does not resolve here is accepted: the fetch will fail and say so, and the delivery-time
/// check still applies to event destinations.
pub async fn check_now(policy: &EgressPolicy, url: &str) -> Result<Target, EgressError> {
    let target = policy.check_url(url)?;
    if let Host::Name(name) = &target.host
        && let Ok(found) = tokio::net::lookup_host((name.as_str(), target.port)).await
    {
        for addr in found {
            policy.check(addr.ip())?;
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubevirt_bmc_contract::egress::parse_list;

    #[test]
    fn only_allowed_addresses_survive_resolution() {
        let policy = EgressPolicy::default();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let error = allowed(&policy, "rebound.example", vec![addr("127.0.0.1:0")]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            error.to_string().contains("127.0.0.1 (loopback)"),
            "{error}"
        );
        let mixed = vec![addr("169.254.169.254:0"), addr("192.0.2.7:0")];
        assert_eq!(
            allowed(&policy, "mixed.example", mixed).unwrap(),
            vec![addr("192.0.2.7:0")]
        );
        let open = EgressPolicy::new(parse_list("127.0.0.0/8").unwrap(), vec![]);
        assert!(allowed(&open, "local", vec![addr("127.0.0.1:0")]).is_ok());
    }

    #[tokio::test]
    async fn a_name_for_loopback_is_refused_when_resolved() {
        let policy = EgressPolicy::default();
        let error = check_now(&policy, "http://localhost:8080/boot.iso")
            .await
            .unwrap_err();
        assert!(matches!(error, EgressError::Refused { .. }), "{error}");
        let mut resolver = GuardedResolver::new(Arc::new(policy));
        let error = tower::Service::call(&mut resolver, "localhost".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
    }
}
