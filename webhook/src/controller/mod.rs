//! The VM controller: per opted-in VM, the scoped identity, credentials and Service, then the
//! VM preparation. Decisions in `plan` (pure); kube calls in `apply`; wiring in `run`.

pub mod apply;
pub mod cache;
pub mod cdi;
pub mod children;
pub mod lease;
pub mod media;
pub mod plan;
pub mod run;
