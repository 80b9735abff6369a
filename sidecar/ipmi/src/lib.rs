//! IPMI over LAN: the RMCP / RMCP+ codec and the session state machine.
//!
//! Deliberately free of sockets, tokio, clocks and randomness: the caller passes time and
//! random bytes in, so every protocol path is deterministic under test and fuzzing.
