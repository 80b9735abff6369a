//! The Manager's network: `NetworkProtocol` (which protocols the BMC serves, on which
//! ports) and its `EthernetInterfaces` (the address it is reached at). OpenShift's
//! installers and Ironic's Redfish inspection read them (sushy
//! `sushy/resources/manager/manager.py` `network_protocol`, `ethernet_interfaces`); the
//! DMTF profile for bare-metal provisioning lists both.
//!
//! The BMC is a sidecar in the VM's launcher Pod: it has the Pod's address (the downward
//! API's `status.podIP`, what `serve` listens on) and no MAC of its own that it could
//! honestly claim, so none is shown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::Context;
use super::errors::{ApiError, ApiResult};
use super::http::resource;
use super::models::{Ids, MANAGER_ID, collection, status_enabled};

/// The one interface: the Pod's.
const INTERFACE_ID: &str = "eth0";

fn require_manager(id: &str, uri: &str) -> ApiResult<()> {
    if id == MANAGER_ID {
        Ok(())
    } else {
        Err(ApiError::not_found(uri))
    }
}

fn protocol(addr: Option<SocketAddr>) -> Value {
    match addr {
        Some(addr) => json!({"ProtocolEnabled": true, "Port": addr.port()}),
        None => json!({"ProtocolEnabled": true}),
    }
}

/// HTTPS is Redfish itself; IPMI is IPMI over LAN (UDP). Nothing else is served: no HTTP,
/// SSH, SNMP or KVM-IP, so those say disabled rather than being left out.
pub fn network_protocol_json(
    ids: &Ids,
    hostname: &str,
    redfish: Option<SocketAddr>,
    ipmi: Option<SocketAddr>,
) -> Value {
    let off = json!({"ProtocolEnabled": false});
    json!({
        "@odata.type": "#ManagerNetworkProtocol.v1_6_0.ManagerNetworkProtocol",
        "@odata.id": format!("{}/NetworkProtocol", ids.manager_uri()),
        "Id": "NetworkProtocol",
        "Name": "Manager Network Protocol",
        "HostName": hostname,
        "Status": status_enabled(),
        "HTTPS": protocol(redfish),
        "IPMI": protocol(ipmi),
        "HTTP": off,
        "SSH": off,
        "SNMP": off,
        "KVMIP": off,
    })
}

/// The address clients reach the BMC at (the CNI assigned it: no origin is claimed); an unspecified listen address (simulate's
/// default, `0.0.0.0`) says nothing about it, so no address is claimed then.
pub fn interface_json(ids: &Ids, listen: Option<SocketAddr>) -> Value {
    let mut value = json!({
        "@odata.type": "#EthernetInterface.v1_6_0.EthernetInterface",
        "@odata.id": format!("{}/EthernetInterfaces/{INTERFACE_ID}", ids.manager_uri()),
        "Id": INTERFACE_ID,
        "Name": "BMC network interface (the launcher Pod's)",
        "InterfaceEnabled": true,
        "LinkStatus": "LinkUp",
        "Status": status_enabled(),
    });
    match listen.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()) {
        Some(std::net::IpAddr::V4(ip)) => {
            value["IPv4Addresses"] = json!([{"Address": ip.to_string()}]);
        }
        Some(std::net::IpAddr::V6(ip)) => {
            value["IPv6Addresses"] = json!([{"Address": ip.to_string()}]);
        }
        None => {}
    }
    value
}

pub async fn network_protocol(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_manager(&id, &format!("/redfish/v1/Managers/{id}/NetworkProtocol"))?;
    Ok(resource(network_protocol_json(
        &context.ids,
        &context.ids.system,
        context.redfish_listen,
        context.ipmi_listen,
    )))
}

pub async fn interfaces(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_manager(
        &id,
        &format!("/redfish/v1/Managers/{id}/EthernetInterfaces"),
    )?;
    let uri = format!("{}/EthernetInterfaces", context.ids.manager_uri());
    Ok(resource(collection(
        "EthernetInterfaceCollection",
        "BMC Ethernet Interfaces",
        &uri,
        &[format!("{uri}/{INTERFACE_ID}")],
    )))
}

pub async fn interface(
    State(context): State<Arc<Context>>,
    Path((id, interface)): Path<(String, String)>,
) -> ApiResult<Response> {
    let uri = format!("/redfish/v1/Managers/{id}/EthernetInterfaces/{interface}");
    require_manager(&id, &uri)?;
    if interface != INTERFACE_ID {
        return Err(ApiError::not_found(&uri));
    }
    Ok(resource(interface_json(
        &context.ids,
        context.redfish_listen,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Ids {
        Ids {
            system: "vm".into(),
            uuid: "u".into(),
            service_uuid: "s".into(),
        }
    }

    #[test]
    fn protocols_name_the_ports_served() {
        let redfish: SocketAddr = "10.0.0.7:8443".parse().unwrap();
        let ipmi: SocketAddr = "10.0.0.7:6230".parse().unwrap();
        let value = network_protocol_json(&ids(), "vm", Some(redfish), Some(ipmi));
        assert_eq!(value["HTTPS"]["Port"], 8443);
        assert_eq!(value["IPMI"]["Port"], 6230);
        assert_eq!(value["SSH"]["ProtocolEnabled"], false);
        let interface = interface_json(&ids(), Some(redfish));
        assert_eq!(interface["IPv4Addresses"][0]["Address"], "10.0.0.7");
        let anywhere = interface_json(&ids(), Some("0.0.0.0:8443".parse().unwrap()));
        assert!(anywhere.get("IPv4Addresses").is_none());
    }
}
