//! IPMI over LAN: the RMCP / RMCP+ codec and the session state machine.
//!
//! Deliberately free of sockets, tokio, clocks and randomness: the caller passes time and
//! random bytes in, so every protocol path is deterministic under test and fuzzing.
//!
//! Layers, bottom up: [`wire`] (bounds-checked reading), [`rmcp`] (RMCP and ASF ping),
//! [`message`] (the IPMI request/response with checksums), [`v15`] (IPMI 1.5 session
//! header), [`v20`] (RMCP+ header, integrity, confidentiality), [`crypto`] (cipher suites and
//! keys), [`rakp`] (Open Session and RAKP 1-4), [`session`] (the BMC side: session table and
//! the state machine) and [`client`] (a small RAKP initiator for tests, fuzzing and benches).

pub mod client;
pub mod crypto;
pub mod error;
pub mod message;
pub mod privilege;
pub mod rakp;
pub mod rmcp;
pub mod session;
pub mod sol;
pub mod v15;
pub mod v20;
pub mod wire;

pub use error::CodecError;
pub use message::{IpmiRequest, IpmiResponse};
pub use privilege::Privilege;
pub use session::{AppRequest, Outcome, Random, Server, ServerConfig};
