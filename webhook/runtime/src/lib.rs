//! kubevirt-bmc-runtime: what both binaries (`kubevirt-bmc-webhook` and the `kubevirt-bmc`
//! sidecar) run on, in the manner of kubert: the rustls provider, TLS identities loaded from
//! PEM and followed on disk, logging set-up, how a binary ends with an error, and the
//! shutdown signal. Nothing here knows about IPMI, Redfish, admission or KubeVirt.

pub mod exit;
pub mod telemetry;
pub mod tls;
pub mod tls_reload;
