//! `kubectl bmc list`: one row per opted-in VM, printed the way `kubectl get` prints (a table,
//! `-o wide` with more columns, or a List document in JSON or YAML).

use kubevirt_bmc_contract::names;
use serde::Serialize;
use serde_json::{Value, json};

use crate::vm::{OptIn, Vm};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub ready: bool,
    /// What the controller wrote; the reason when not ready, "ready" when ready.
    pub reason: String,
    /// The launcher Pod's IP, where the sidecar listens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// The stable name, `<vm>-bmc.<ns>.svc`.
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    pub ports: Vec<Port>,
    pub power: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_power: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_override: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

impl Port {
    /// As `kubectl get service` prints a port: `623/UDP`, `623:31623/UDP`.
    fn display(&self) -> String {
        match self.node_port {
            Some(node) => format!("{}:{node}/{}", self.port, self.protocol),
            None => format!("{}/{}", self.port, self.protocol),
        }
    }
}

/// The ports the controller gives every `<vm>-bmc` Service, for when the Service is not there
/// (yet) or may not be read.
fn default_ports() -> Vec<Port> {
    vec![
        Port {
            name: names::IPMI_PORT_NAME.to_owned(),
            port: names::IPMI_PORT,
            protocol: "UDP".to_owned(),
            node_port: None,
        },
        Port {
            name: names::REDFISH_PORT_NAME.to_owned(),
            port: names::REDFISH_PORT,
            protocol: "TCP".to_owned(),
            node_port: None,
        },
    ]
}

fn service_ports(service: &Value) -> Vec<Port> {
    service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                port: u16::try_from(p["port"].as_u64()?).ok()?,
                protocol: p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                node_port: p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()),
            })
        })
        .collect()
}

/// The row of one VM, or `None` when it did not opt in. `services` are the Services of its
/// namespace the user could read (the VM's own is found by its contract name).
pub fn row(object: &Value, services: &[Value]) -> Option<Row> {
    let vm = Vm::new(object);
    let status = vm.status();
    let (ready, reason) = match (vm.opt_in(), &status) {
        (Err(e), _) => (false, e.to_string()),
        (Ok(OptIn::No), _) => return None,
        (Ok(_), Some(s)) => (s.ready, s.reason.clone()),
        (Ok(_), None) => (
            false,
            "no report from the controller yet (is kubevirt-bmc installed and running?)".to_owned(),
        ),
    };
    let service_name = names::service(vm.name);
    let service = services.iter().find(|s| {
        s["metadata"]["name"] == service_name.as_str() && s["metadata"]["namespace"] == vm.namespace
    });
    Some(Row {
        namespace: vm.namespace.to_owned(),
        name: vm.name.to_owned(),
        ready,
        reason,
        pod_ip: status.as_ref().and_then(|s| s.address.clone()),
        service: status
            .as_ref()
            .map(|s| s.service.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{service_name}.{}.svc", vm.namespace)),
        service_type: service
            .and_then(|s| s["spec"]["type"].as_str())
            .map(str::to_owned),
        ports: service.map(service_ports).unwrap_or_else(default_ports),
        power: vm.power(),
        requested_power: vm.requested_power().map(|p| p.as_str().to_owned()),
        boot_override: vm.boot_override().map(|b| b.to_annotation()),
    })
}

pub fn rows(vms: &[Value], services: &[Value]) -> Vec<Row> {
    let mut rows: Vec<Row> = vms.iter().filter_map(|vm| row(vm, services)).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Wide,
    Json,
    Yaml,
}

/// The table `kubectl get` would print: columns padded to the widest cell plus three spaces,
/// a NAMESPACE column first with `-A`.
pub fn table(rows: &[Row], wide: bool, all_namespaces: bool) -> String {
    let mut header = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "READY", "POWER", "POD IP", "SERVICE"]);
    if wide {
        header.extend(["TYPE", "PORTS", "REQUESTED", "BOOT OVERRIDE"]);
    }
    header.push("REASON");
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for r in rows {
        let mut cells = Vec::new();
        if all_namespaces {
            cells.push(r.namespace.clone());
        }
        cells.push(r.name.clone());
        cells.push(if r.ready { "True" } else { "False" }.to_owned());
        cells.push(r.power.clone());
        cells.push(r.pod_ip.clone().unwrap_or_else(|| "<none>".to_owned()));
        cells.push(r.service.clone());
        if wide {
            cells.push(
                r.service_type
                    .clone()
                    .unwrap_or_else(|| "<none>".to_owned()),
            );
            cells.push(
                r.ports
                    .iter()
                    .map(Port::display)
                    .collect::<Vec<_>>()
                    .join(","),
            );
            cells.push(
                r.requested_power
                    .clone()
                    .unwrap_or_else(|| "<none>".to_owned()),
            );
            cells.push(
                r.boot_override
                    .clone()
                    .unwrap_or_else(|| "<none>".to_owned()),
            );
        }
        // A ready BMC's reason is just "ready": say nothing, as kubectl leaves a column empty.
        cells.push(if r.ready {
            String::new()
        } else {
            r.reason.clone()
        });
        lines.push(cells);
    }
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            text.push_str(cell);
            if c + 1 < columns {
                text.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// A `kubectl get -o json` style List of the rows.
pub fn document(rows: &[Row]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, annotations: Value, printable: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "vms", "annotations": annotations},
            "status": {"printableStatus": printable},
        })
    }

    #[test]
    fn rows_show_what_the_controller_and_the_sidecar_wrote() {
        let ready = vm(
            "vm1",
            json!({
                "bmc.kubevirt.io/enabled": "true",
                "bmc.kubevirt.io/status": r#"{"address":"10.244.0.7","service":"vm1-bmc.vms.svc","ready":true,"reason":"ready"}"#,
                "bmc.kubevirt.io/power-state": "Off",
                "bmc.kubevirt.io/boot-override": "Pxe/Once/UEFI",
            }),
            "Paused",
        );
        let waiting = vm(
            "vm2",
            json!({
                "bmc.kubevirt.io/enabled": "true",
                "bmc.kubevirt.io/status": r#"{"service":"vm2-bmc.vms.svc","ready":false,"reason":"waiting for the VM's launcher Pod"}"#,
            }),
            "Starting",
        );
        let not_opted = vm("vm3", json!({}), "Running");
        let service = json!({
            "metadata": {"name": "vm1-bmc", "namespace": "vms"},
            "spec": {"type": "NodePort", "ports": [
                {"name": "ipmi", "port": 623, "protocol": "UDP", "nodePort": 31623},
                {"name": "redfish", "port": 443, "protocol": "TCP", "nodePort": 30443},
            ]},
        });
        let rows = rows(&[waiting, not_opted, ready], &[service]);
        assert_eq!(rows.len(), 2, "vm3 did not opt in");
        assert_eq!(rows[0].name, "vm1");
        assert_eq!(rows[0].power, "Off");
        assert_eq!(rows[0].pod_ip.as_deref(), Some("10.244.0.7"));
        assert_eq!(rows[0].boot_override.as_deref(), Some("Pxe/Once/UEFI"));
        assert_eq!(rows[0].ports[0].node_port, Some(31623));
        assert!(!rows[1].ready);
        assert_eq!(rows[1].ports, default_ports());

        let text = table(&rows, true, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "NAME",
                "READY",
                "POWER",
                "POD",
                "IP",
                "SERVICE",
                "TYPE",
                "PORTS",
                "REQUESTED",
                "BOOT",
                "OVERRIDE",
                "REASON"
            ]
        );
        assert!(
            lines[1].contains("623:31623/UDP,443:30443/TCP"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].ends_with("waiting for the VM's launcher Pod"),
            "{}",
            lines[2]
        );
        let narrow = table(&rows, false, true);
        assert!(narrow.starts_with("NAMESPACE   NAME"), "{narrow}");
        assert!(!narrow.contains("PORTS"));
    }

    #[test]
    fn a_vm_the_controller_has_not_reported_on_says_so() {
        let fresh = vm("vm1", json!({"bmc.kubevirt.io/enabled": "true"}), "Stopped");
        let row = row(&fresh, &[]).unwrap();
        assert!(!row.ready);
        assert!(
            row.reason.contains("no report from the controller"),
            "{}",
            row.reason
        );
        assert_eq!(row.service, "vm1-bmc.vms.svc");
    }
}
