//! Serving certificates for the sidecars, signed by a CA the installation owns, so Redfish
//! clients verify the BMC instead of sending Basic credentials to whoever answers (issue 12).
//!
//! A sidecar makes its key in memory and sends a CSR to the controller's HTTPS server with its
//! own ServiceAccount token; the API server says whose token it is (TokenReview), and only
//! `<vm>-bmc` of the VM's namespace gets a certificate, for the VM's Service names and its
//! launcher Pods' addresses ([`decide`]). The CA ([`ca`]) is in Secret `kubevirt-bmc-ca`,
//! which the controller reads by name only ([`signer`]).

pub mod ca;
pub mod decide;
pub mod signer;
