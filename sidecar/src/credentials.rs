//! The BMC's one user. The password is wiped from memory when dropped and compared in
//! constant time.

use zeroize::Zeroizing;

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Zeroizing<String>,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: Zeroizing::new(password.into()),
        }
    }

    /// Both compared without an early exit, so timing tells an attacker nothing about which
    /// part was wrong or how much of it matched.
    pub fn matches(&self, username: &[u8], password: &[u8]) -> bool {
        let user_ok = constant_time_eq(self.username.as_bytes(), username);
        let password_ok = constant_time_eq(self.password.as_bytes(), password);
        user_ok & password_ok
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Equal-length inputs are compared in constant time; a length difference is not hidden
/// (lengths are not secret in IPMI or HTTP Basic, where they are visible on the wire).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_both_parts() {
        let credentials = Credentials::new("admin", "password");
        assert!(credentials.matches(b"admin", b"password"));
        assert!(!credentials.matches(b"admin", b"passwore"));
        assert!(!credentials.matches(b"admim", b"password"));
        assert!(!credentials.matches(b"admin", b""));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let text = format!("{:?}", Credentials::new("admin", "s3cret"));
        assert!(!text.contains("s3cret"), "{text}");
    }
}
