//! Authentication: HTTP Basic and stateless session tokens.
//!
//! A token is `<session id>.<expiry>.<signature>`, signed with HMAC-SHA256 under a key
//! derived from a secret the backend keeps (`Record::SessionKey`: in the cluster the
//! controller's credentials Secret, so every sidecar of the VM shares it), so a restarted
//! sidecar honours tokens it issued before. The session timeout and the sessions logged out
//! early live in `Record::SessionSettings`, so a logout survives a restart too.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Context;
use super::errors::ApiError;
use crate::credentials::Credentials;
use crate::machine::{Machine, MachineError, Record};

type HmacSha256 = Hmac<Sha256>;

pub const DEFAULT_TIMEOUT: u64 = 1800;
pub const MIN_TIMEOUT: u64 = 30;
pub const MAX_TIMEOUT: u64 = 86_400;
/// Live sessions one process keeps; a login beyond it is refused (SessionLimitExceeded)
/// until one is logged out or expires.
pub const MAX_SESSIONS: usize = 64;
/// Sessions logged out early that the stored record lists (about 47 bytes each: the record is
/// a VM annotation, and a VM's annotations together may not exceed 256 KiB). One more logout
/// logs every session out instead: the signing epoch moves on and the list starts empty.
pub const MAX_REVOKED: usize = 256;

/// What `Record::SessionSettings` holds.
#[derive(Clone, Serialize, Deserialize)]
struct SessionSettings {
    timeout: u64,
    /// Session id -> expiry, for sessions deleted before they expired.
    #[serde(default)]
    revoked: BTreeMap<String, u64>,
    /// Signed into every token (when not 0, so tokens from before epochs existed stay
    /// valid): moving it on logs out every session at once.
    #[serde(default, skip_serializing_if = "is_zero")]
    epoch: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            timeout: DEFAULT_TIMEOUT,
            revoked: BTreeMap::new(),
            epoch: 0,
        }
    }
}

/// A session as the Sessions collection lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub username: String,
    pub created: u64,
    pub expires: u64,
}

/// Failed password logins (Basic or a session login) per client address, with IPMI's rule
/// (`kubevirt_bmc_ipmi::session::Failures`): answers to an address that failed more than
/// three times within a minute are held back 250 ms, doubling up to 4 s; a success clears it.
/// At most 64 addresses are remembered (the oldest forgotten), so a flood cannot grow it.
pub struct LoginThrottle {
    start: std::time::Instant,
    failures: Mutex<kubevirt_bmc_ipmi::session::Failures>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            start: std::time::Instant::now(),
            failures: Mutex::new(Default::default()),
        }
    }
}

impl LoginThrottle {
    /// How long to hold back the answer to a login from `peer` (no peer: not throttled,
    /// as for in-process callers).
    pub fn delay(&self, peer: Option<IpAddr>) -> Duration {
        peer.map_or(Duration::ZERO, |ip| {
            lock(&self.failures).delay(ip, self.start.elapsed())
        })
    }

    pub fn failed(&self, peer: Option<IpAddr>) {
        if let Some(ip) = peer {
            lock(&self.failures).record(ip, self.start.elapsed());
        }
    }

    pub fn succeeded(&self, peer: Option<IpAddr>) {
        if let Some(ip) = peer {
            lock(&self.failures).clear(ip);
        }
    }

    /// Checks a password login from `peer`, holding the answer back while it is throttled.
    pub async fn check(&self, peer: Option<IpAddr>, valid: impl FnOnce() -> bool) -> bool {
        let delay = self.delay(peer);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let ok = valid();
        if ok {
            self.succeeded(peer);
        } else {
            self.failed(peer);
            tracing::debug!(?peer, "Redfish: failed login");
        }
        ok
    }
}

/// The client's address, when the request came over a connection (not in process).
pub fn peer_of(request_extensions: &axum::http::Extensions) -> Option<IpAddr> {
    request_extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// Who made a request, as the handlers see it.
#[derive(Debug, Clone)]
pub enum Caller {
    Basic,
    Session(String),
}

pub struct Sessions {
    machine: Arc<dyn Machine>,
    record: Mutex<SessionSettings>,
    /// Serialises read-modify-write of the stored record (timeout, logouts).
    writes: tokio::sync::Mutex<()>,
    key: zeroize::Zeroizing<Vec<u8>>,
    /// Sessions seen by this process: issued here, or presented after a restart.
    known: Mutex<BTreeMap<String, SessionInfo>>,
}

impl Sessions {
    /// Loads the key and settings from the backend, making and storing a secret when the
    /// backend has none.
    pub async fn load(machine: Arc<dyn Machine>) -> Result<Self, MachineError> {
        let secret = match machine.record(Record::SessionKey).await? {
            Some(secret) if !secret.trim().is_empty() => secret,
            _ => {
                let secret = encode_hex(&rand::random::<[u8; 32]>());
                machine
                    .store_record(Record::SessionKey, Some(secret.clone()))
                    .await?;
                secret
            }
        };
        let stored = machine.record(Record::SessionSettings).await?;
        let record = match stored
            .as_deref()
            .map(serde_json::from_str::<SessionSettings>)
        {
            Some(Ok(settings)) => settings,
            Some(Err(error)) => {
                tracing::warn!(%error, "stored session settings are unreadable; using defaults");
                SessionSettings::default()
            }
            None => SessionSettings::default(),
        };
        let key = zeroize::Zeroizing::new(signing_key(&secret));
        Ok(Sessions {
            machine,
            record: Mutex::new(record),
            writes: tokio::sync::Mutex::new(()),
            key,
            known: Mutex::new(BTreeMap::new()),
        })
    }

    /// For secrets clients hand the BMC that must survive a restart ([`super::seal`]): the
    /// same root as the tokens, so every sidecar of the VM opens them.
    pub fn seal(&self) -> super::seal::Seal {
        super::seal::Seal::derive(&self.key)
    }

    pub fn timeout(&self) -> u64 {
        lock(&self.record).timeout
    }

    pub async fn set_timeout(&self, timeout: u64) -> Result<(), MachineError> {
        let _write = self.writes.lock().await;
        let mut next = lock(&self.record).clone();
        next.timeout = timeout;
        self.store(next).await
    }

    async fn store(&self, next: SessionSettings) -> Result<(), MachineError> {
        let text = serde_json::to_string(&next).expect("settings serialize");
        self.machine
            .store_record(Record::SessionSettings, Some(text))
            .await?;
        *lock(&self.record) = next;
        Ok(())
    }

    /// A new session for `username`; returns it with its token. Refused while
    /// [`MAX_SESSIONS`] live sessions exist.
    pub fn create(&self, username: &str, now: u64) -> Result<(SessionInfo, String), ApiError> {
        let mut known = lock(&self.known);
        known.retain(|_, info| info.expires > now);
        if known.len() >= MAX_SESSIONS {
            let mut error = ApiError::bad_request("SessionLimitExceeded", &[]);
            error.status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
            error.text = format!(
                "{MAX_SESSIONS} sessions are open; log one out (DELETE its URI) or wait until one expires"
            );
            return Err(error);
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let expires = now + self.timeout();
        let token = self.sign(&id, expires, username);
        let info = SessionInfo {
            id: id.clone(),
            username: username.to_owned(),
            created: now,
            expires,
        };
        known.insert(id, info.clone());
        Ok((info, token))
    }

    fn sign(&self, id: &str, expires: u64, username: &str) -> String {
        let payload = format!("{id}.{expires}");
        let signature = self.mac(&payload, username);
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn mac(&self, payload: &str, username: &str) -> Vec<u8> {
        self.hmac(payload, username)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    fn hmac(&self, payload: &str, username: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac.update(b"\0");
        mac.update(username.as_bytes());
        let epoch = lock(&self.record).epoch;
        if epoch != 0 {
            mac.update(b"\0");
            mac.update(&epoch.to_be_bytes());
        }
        mac
    }

    /// The session a token names when it is genuine, unexpired and not logged out.
    pub fn verify(&self, token: &str, username: &str, now: u64) -> Option<SessionInfo> {
        let mut parts = token.splitn(3, '.');
        let (id, expires, signature) = (parts.next()?, parts.next()?, parts.next()?);
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mac = self.hmac(&format!("{id}.{expires}"), username);
        // verify_slice compares in constant time.
        mac.verify_slice(&signature).ok()?;
        let expires: u64 = expires.parse().ok()?;
        if now >= expires || lock(&self.record).revoked.contains_key(id) {
            return None;
        }
        let mut known = lock(&self.known);
        if let Some(info) = known.get(id) {
            return Some(info.clone());
        }
        let info = SessionInfo {
            id: id.to_owned(),
            username: username.to_owned(),
            // Issued by an earlier process: its creation time is not in the token.
            created: expires.saturating_sub(self.timeout()),
            expires,
        };
        known.retain(|_, info| info.expires > now);
        // A full table still honours the token; it is just not listed.
        if known.len() < MAX_SESSIONS {
            known.insert(id.to_owned(), info.clone());
        }
        Some(info)
    }

    /// Live sessions this process knows of.
    pub fn list(&self, now: u64) -> Vec<SessionInfo> {
        let mut known = lock(&self.known);
        known.retain(|_, info| info.expires > now);
        known.values().cloned().collect()
    }

    pub fn get(&self, id: &str, now: u64) -> Option<SessionInfo> {
        lock(&self.known)
            .get(id)
            .filter(|info| info.expires > now)
            .cloned()
    }

    /// Logs a session out for good (the revocation is stored with the key).
    pub async fn delete(&self, id: &str, now: u64) -> Result<bool, MachineError> {
        let Some(info) = self.get(id, now) else {
            return Ok(false);
        };
        let _write = self.writes.lock().await;
        let mut next = lock(&self.record).clone();
        next.revoked.retain(|_, expires| *expires > now);
        if next.revoked.len() >= MAX_REVOKED {
            // Listing one more would grow the record without bound under a logout storm;
            // a new epoch invalidates every token instead, this one included.
            next.revoked.clear();
            next.epoch += 1;
            self.store(next).await?;
            lock(&self.known).clear();
            tracing::warn!(
                max = MAX_REVOKED,
                "Redfish: more logouts than the record keeps within one session timeout; every session is logged out"
            );
            return Ok(true);
        }
        next.revoked.insert(info.id.clone(), info.expires);
        self.store(next).await?;
        lock(&self.known).remove(id);
        Ok(true)
    }
}

/// Taken even when poisoned: a panic in one request must not refuse every later one.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The HMAC key: SHA-256 of the backend's secret, so any secret text (the controller's
/// random string, or the hex this module makes) gives a full-strength 32-byte key.
pub fn signing_key(secret: &str) -> Vec<u8> {
    use sha2::Digest;
    Sha256::digest(secret.trim().as_bytes()).to_vec()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Requests anyone may make: what a client needs to find the service and log in.
pub fn is_public(method: &Method, path: &str) -> bool {
    let readable = method == Method::GET || method == Method::HEAD;
    match path {
        "/redfish" | "/redfish/v1" | "/redfish/v1/odata" | "/redfish/v1/$metadata" => readable,
        "/redfish/v1/SessionService/Sessions" | "/redfish/v1/SessionService/Sessions/Members" => {
            method == Method::POST
        }
        _ => false,
    }
}

/// Checks Basic credentials (constant time).
pub fn basic_matches(credentials: &Credentials, value: &str) -> bool {
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let decoded = zeroize::Zeroizing::new(decoded);
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    credentials.matches(&decoded[..colon], &decoded[colon + 1..])
}

/// Lets public requests through; others need a valid token or Basic credentials.
pub async fn require(
    State(context): State<Arc<Context>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if is_public(request.method(), path) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let caller = if let Some(token) = headers.get("X-Auth-Token") {
        let token = token.to_str().unwrap_or_default();
        match context.sessions.verify(
            token,
            &context.credentials.username,
            super::http::now_unix(),
        ) {
            Some(info) => Caller::Session(info.id),
            None => {
                return ApiError::unauthorized(
                    "The session token is invalid, expired or logged out; log in again",
                )
                .into_response();
            }
        }
    } else if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default().to_owned();
        let peer = peer_of(request.extensions());
        let valid = context
            .logins
            .check(peer, || basic_matches(&context.credentials, &value))
            .await;
        if valid {
            Caller::Basic
        } else {
            return ApiError::unauthorized("The credentials are not valid").into_response();
        }
    } else {
        return ApiError::unauthorized(
            "Authentication required: HTTP Basic or an X-Auth-Token from SessionService",
        )
        .into_response();
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::simulated::{SimulatedConfig, SimulatedMachine};

    async fn sessions() -> (Arc<dyn Machine>, Sessions) {
        let machine: Arc<dyn Machine> =
            Arc::new(SimulatedMachine::new(SimulatedConfig::default()).unwrap());
        let sessions = Sessions::load(machine.clone()).await.unwrap();
        (machine, sessions)
    }

    #[tokio::test]
    async fn tokens_verify_until_they_expire() {
        let (_, sessions) = sessions().await;
        let (info, token) = sessions.create("admin", 1000).unwrap();
        assert_eq!(sessions.verify(&token, "admin", 1001).unwrap().id, info.id);
        assert!(sessions.verify(&token, "admin", info.expires).is_none());
        assert!(sessions.verify(&token, "root", 1001).is_none());
        let forged = format!("{}.{}.AAAA", info.id, info.expires + 10_000);
        assert!(sessions.verify(&forged, "admin", 1001).is_none());
    }

    #[tokio::test]
    async fn a_restarted_service_honours_tokens_and_logouts() {
        let (machine, sessions) = sessions().await;
        let (kept, kept_token) = sessions.create("admin", 1000).unwrap();
        let (gone, gone_token) = sessions.create("admin", 1000).unwrap();
        assert!(sessions.delete(&gone.id, 1001).await.unwrap());
        let restarted = Sessions::load(machine).await.unwrap();
        assert_eq!(
            restarted.verify(&kept_token, "admin", 1002).unwrap().id,
            kept.id
        );
        assert!(restarted.verify(&gone_token, "admin", 1002).is_none());
    }

    #[tokio::test]
    async fn the_session_table_is_bounded() {
        let (_, sessions) = sessions().await;
        for _ in 0..MAX_SESSIONS {
            sessions.create("admin", 1000).unwrap();
        }
        let error = sessions.create("admin", 1000).unwrap_err();
        assert_eq!(error.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            error.text.contains("64 sessions are open"),
            "{}",
            error.text
        );
        // Expired sessions make room.
        let later = 1000 + DEFAULT_TIMEOUT;
        assert!(sessions.create("admin", later).is_ok());
    }

    #[tokio::test]
    async fn a_logout_storm_keeps_the_stored_record_bounded_and_logs_everyone_out() {
        let (machine, sessions) = sessions().await;
        let (survivor, survivor_token) = sessions.create("admin", 1000).unwrap();
        let mut largest = 0;
        // Far more logouts within one session timeout than the record may list.
        for round in 0..(MAX_REVOKED * 4) {
            let now = 1001 + round as u64 / 100;
            let (info, _) = sessions.create("admin", now).unwrap();
            assert!(sessions.delete(&info.id, now).await.unwrap());
            let stored = machine
                .record(Record::SessionSettings)
                .await
                .unwrap()
                .unwrap();
            largest = largest.max(stored.len());
        }
        assert!(
            largest <= MAX_REVOKED * 48 + 64,
            "record grew to {largest} bytes"
        );
        assert!(largest < 16 * 1024, "{largest}");
        // The storm moved the epoch on: the session that was never logged out is gone too,
        // and a restarted service agrees.
        assert!(sessions.verify(&survivor_token, "admin", 1020).is_none());
        assert!(sessions.get(&survivor.id, 1020).is_none());
        let restarted = Sessions::load(machine).await.unwrap();
        assert!(restarted.verify(&survivor_token, "admin", 1020).is_none());
        let (_, fresh) = restarted.create("admin", 1020).unwrap();
        assert!(restarted.verify(&fresh, "admin", 1021).is_some());
    }

    #[test]
    fn failed_logins_are_slowed_down_after_three_per_address() {
        let throttle = LoginThrottle::default();
        let guesser: Option<IpAddr> = Some("192.0.2.9".parse().unwrap());
        let other: Option<IpAddr> = Some("192.0.2.10".parse().unwrap());
        for _ in 0..3 {
            throttle.failed(guesser);
        }
        assert_eq!(throttle.delay(guesser), Duration::ZERO);
        throttle.failed(guesser);
        assert_eq!(throttle.delay(guesser), Duration::from_millis(250));
        for _ in 0..10 {
            throttle.failed(guesser);
        }
        assert_eq!(throttle.delay(guesser), Duration::from_secs(4));
        assert_eq!(throttle.delay(other), Duration::ZERO);
        assert_eq!(throttle.delay(None), Duration::ZERO);
        throttle.succeeded(guesser);
        assert_eq!(throttle.delay(guesser), Duration::ZERO);
    }

    #[test]
    fn basic_needs_both_parts() {
        let credentials = Credentials::new("admin", "password");
        let good = format!("Basic {}", STANDARD.encode("admin:password"));
        let bad = format!("Basic {}", STANDARD.encode("admin:passwore"));
        assert!(basic_matches(&credentials, &good));
        assert!(!basic_matches(&credentials, &bad));
        assert!(!basic_matches(&credentials, "Bearer x"));
        assert!(!basic_matches(&credentials, "Basic !!!"));
    }
}
