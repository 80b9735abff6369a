//! Support for end-to-end tests: locating the built binaries and the installed clients.

pub mod launcher;

pub mod fake_apiserver;
pub mod images;
pub mod kubelet;
pub mod sushy;
