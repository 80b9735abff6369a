//! Support for end-to-end tests: locating the built binaries and the installed clients.
//! Also the shared code of the bench and load commands (`bench`, run by `src/bin/`).

pub mod bench;

pub mod launcher;

pub mod fake_apiserver;
pub mod images;
pub mod kubelet;
pub mod sushy;
pub mod testkit;
