//! JSON builders for the service's own resources: service root, OData documents, sessions,
//! accounts, roles and registries.

use serde_json::{Value, json};

use super::auth::{MAX_TIMEOUT, MIN_TIMEOUT, SessionInfo};
use super::errors::BASE_REGISTRY_ID;
use super::http::rfc3339;
use super::models::{Ids, odata_id, status_enabled};

pub const ACCOUNT_ID: &str = "1";
pub const ROLES: [(&str, &[&str]); 3] = [
    (
        "Administrator",
        &[
            "Login",
            "ConfigureManager",
            "ConfigureUsers",
            "ConfigureSelf",
            "ConfigureComponents",
        ],
    ),
    (
        "Operator",
        &["Login", "ConfigureSelf", "ConfigureComponents"],
    ),
    ("ReadOnly", &["Login", "ConfigureSelf"]),
];

pub fn versions() -> Value {
    json!({"v1": "/redfish/v1/"})
}

pub fn service_root(ids: &Ids) -> Value {
    json!({
        "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
        "@odata.id": "/redfish/v1/",
        "Id": "RootService",
        "Name": "kubevirt-bmc Redfish service",
        "RedfishVersion": "1.17.0",
        "UUID": ids.service_uuid,
        "Product": "kubevirt-bmc",
        "Vendor": "KubeVirt",
        "ProtocolFeaturesSupported": {
            "ExpandQuery": {
                "ExpandAll": true,
                "Levels": true,
                "MaxLevels": super::expand::MAX_LEVELS,
                "Links": true,
                "NoLinks": true,
            },
            "FilterQuery": false,
            "SelectQuery": false,
            "OnlyMemberQuery": false,
            "ExcerptQuery": false,
        },
        "Systems": odata_id("/redfish/v1/Systems"),
        "Chassis": odata_id("/redfish/v1/Chassis"),
        "Managers": odata_id("/redfish/v1/Managers"),
        "SessionService": odata_id("/redfish/v1/SessionService"),
        "AccountService": odata_id("/redfish/v1/AccountService"),
        "EventService": odata_id("/redfish/v1/EventService"),
        "Tasks": odata_id("/redfish/v1/TaskService"),
        "UpdateService": odata_id("/redfish/v1/UpdateService"),
        "Registries": odata_id("/redfish/v1/Registries"),
        "Links": {"Sessions": odata_id("/redfish/v1/SessionService/Sessions")},
    })
}

/// The OData service document: the top-level resources.
pub fn odata_document() -> Value {
    let entries = [
        ("Service", "/redfish/v1/", "Singleton"),
        ("Systems", "/redfish/v1/Systems", "Singleton"),
        ("Chassis", "/redfish/v1/Chassis", "Singleton"),
        ("Managers", "/redfish/v1/Managers", "Singleton"),
        ("SessionService", "/redfish/v1/SessionService", "Singleton"),
        ("AccountService", "/redfish/v1/AccountService", "Singleton"),
        ("EventService", "/redfish/v1/EventService", "Singleton"),
        ("Tasks", "/redfish/v1/TaskService", "Singleton"),
        ("UpdateService", "/redfish/v1/UpdateService", "Singleton"),
        ("Registries", "/redfish/v1/Registries", "Singleton"),
    ];
    json!({
        "@odata.context": "/redfish/v1/$metadata",
        "value": entries.iter().map(|(name, url, kind)| json!({"name": name, "kind": kind, "url": url})).collect::<Vec<_>>(),
    })
}

/// Schemas the service uses, for `$metadata`.
const SCHEMAS: &[(&str, &str)] = &[
    ("ServiceRoot_v1.xml", "ServiceRoot.v1_15_0"),
    (
        "ComputerSystemCollection_v1.xml",
        "ComputerSystemCollection",
    ),
    ("ComputerSystem_v1.xml", "ComputerSystem.v1_20_0"),
    ("ChassisCollection_v1.xml", "ChassisCollection"),
    ("Chassis_v1.xml", "Chassis.v1_14_0"),
    ("Thermal_v1.xml", "Thermal.v1_7_0"),
    ("Power_v1.xml", "Power.v1_7_1"),
    ("ManagerCollection_v1.xml", "ManagerCollection"),
    ("Manager_v1.xml", "Manager.v1_10_0"),
    ("VirtualMediaCollection_v1.xml", "VirtualMediaCollection"),
    ("VirtualMedia_v1.xml", "VirtualMedia.v1_6_0"),
    (
        "EthernetInterfaceCollection_v1.xml",
        "EthernetInterfaceCollection",
    ),
    ("EthernetInterface_v1.xml", "EthernetInterface.v1_6_0"),
    ("ProcessorCollection_v1.xml", "ProcessorCollection"),
    ("Processor_v1.xml", "Processor.v1_10_0"),
    ("MemoryCollection_v1.xml", "MemoryCollection"),
    ("Memory_v1.xml", "Memory.v1_10_0"),
    ("StorageCollection_v1.xml", "StorageCollection"),
    ("Storage_v1.xml", "Storage.v1_9_0"),
    ("Drive_v1.xml", "Drive.v1_9_0"),
    (
        "StorageControllerCollection_v1.xml",
        "StorageControllerCollection",
    ),
    ("StorageController_v1.xml", "StorageController.v1_7_0"),
    ("VolumeCollection_v1.xml", "VolumeCollection"),
    ("SimpleStorageCollection_v1.xml", "SimpleStorageCollection"),
    ("SimpleStorage_v1.xml", "SimpleStorage.v1_3_0"),
    ("SecureBoot_v1.xml", "SecureBoot.v1_1_0"),
    ("Bios_v1.xml", "Bios.v1_1_0"),
    ("Settings_v1.xml", "Settings.v1_3_5"),
    ("UpdateService_v1.xml", "UpdateService.v1_11_0"),
    (
        "SoftwareInventoryCollection_v1.xml",
        "SoftwareInventoryCollection",
    ),
    ("SoftwareInventory_v1.xml", "SoftwareInventory.v1_4_0"),
    (
        "ManagerNetworkProtocol_v1.xml",
        "ManagerNetworkProtocol.v1_6_0",
    ),
    ("SessionService_v1.xml", "SessionService.v1_1_8"),
    ("SessionCollection_v1.xml", "SessionCollection"),
    ("Session_v1.xml", "Session.v1_7_0"),
    ("AccountService_v1.xml", "AccountService.v1_10_0"),
    (
        "ManagerAccountCollection_v1.xml",
        "ManagerAccountCollection",
    ),
    ("ManagerAccount_v1.xml", "ManagerAccount.v1_7_0"),
    ("RoleCollection_v1.xml", "RoleCollection"),
    ("Role_v1.xml", "Role.v1_3_1"),
    ("EventService_v1.xml", "EventService.v1_7_0"),
    (
        "EventDestinationCollection_v1.xml",
        "EventDestinationCollection",
    ),
    ("EventDestination_v1.xml", "EventDestination.v1_10_0"),
    ("Event_v1.xml", "Event.v1_7_0"),
    ("TaskService_v1.xml", "TaskService.v1_2_0"),
    ("TaskCollection_v1.xml", "TaskCollection"),
    ("Task_v1.xml", "Task.v1_5_1"),
    (
        "MessageRegistryFileCollection_v1.xml",
        "MessageRegistryFileCollection",
    ),
    ("MessageRegistryFile_v1.xml", "MessageRegistryFile.v1_1_3"),
    ("Message_v1.xml", "Message.v1_1_2"),
    ("Resource_v1.xml", "Resource.v1_14_0"),
    ("RedfishExtensions_v1.xml", "RedfishExtensions.v1_0_0"),
];

pub fn metadata() -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n",
    );
    for (file, namespace) in SCHEMAS {
        xml.push_str(&format!(
            "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/{file}\">\n"
        ));
        let base = namespace.split('.').next().unwrap_or(namespace);
        if base != *namespace {
            xml.push_str(&format!("    <edmx:Include Namespace=\"{base}\"/>\n"));
        }
        let alias = if *namespace == "RedfishExtensions.v1_0_0" {
            " Alias=\"Redfish\""
        } else {
            ""
        };
        xml.push_str(&format!(
            "    <edmx:Include Namespace=\"{namespace}\"{alias}/>\n  </edmx:Reference>\n"
        ));
    }
    xml.push_str(
        "  <edmx:DataServices>\n\
         \x20   <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"Service\">\n\
         \x20     <EntityContainer Name=\"Service\" Extends=\"ServiceRoot.v1_15_0.ServiceContainer\"/>\n\
         \x20   </Schema>\n\
         \x20 </edmx:DataServices>\n\
         </edmx:Edmx>\n",
    );
    xml
}

pub fn session_service(timeout: u64) -> Value {
    json!({
        "@odata.type": "#SessionService.v1_1_8.SessionService",
        "@odata.id": "/redfish/v1/SessionService",
        "Id": "SessionService",
        "Name": "Session Service",
        "Description": "Stateless signed session tokens: a token expires SessionTimeout seconds after login",
        "ServiceEnabled": true,
        "SessionTimeout": timeout,
        "SessionTimeout@Redfish.AllowableNumbers": [format!("{MIN_TIMEOUT}:{MAX_TIMEOUT}")],
        "Status": status_enabled(),
        "Sessions": odata_id("/redfish/v1/SessionService/Sessions"),
    })
}

pub fn session_uri(id: &str) -> String {
    format!("/redfish/v1/SessionService/Sessions/{id}")
}

pub fn session(info: &SessionInfo) -> Value {
    json!({
        "@odata.type": "#Session.v1_7_0.Session",
        "@odata.id": session_uri(&info.id),
        "Id": info.id,
        "Name": "User session",
        "UserName": info.username,
        "Password": null,
        "CreatedTime": rfc3339(info.created),
        "SessionType": "Redfish",
    })
}

pub fn account_service() -> Value {
    json!({
        "@odata.type": "#AccountService.v1_10_0.AccountService",
        "@odata.id": "/redfish/v1/AccountService",
        "Id": "AccountService",
        "Name": "Account Service",
        "Description": "The BMC has one user, set by its credentials Secret",
        "ServiceEnabled": true,
        "Status": status_enabled(),
        "LocalAccountAuth": "Enabled",
        "MinPasswordLength": 1,
        "MaxPasswordLength": 256,
        "Accounts": odata_id("/redfish/v1/AccountService/Accounts"),
        "Roles": odata_id("/redfish/v1/AccountService/Roles"),
    })
}

pub fn account(username: &str) -> Value {
    json!({
        "@odata.type": "#ManagerAccount.v1_7_0.ManagerAccount",
        "@odata.id": format!("/redfish/v1/AccountService/Accounts/{ACCOUNT_ID}"),
        "Id": ACCOUNT_ID,
        "Name": "BMC user",
        "Description": "Managed through the VM's BMC credentials Secret; not changeable over Redfish",
        "UserName": username,
        "Password": null,
        "RoleId": "Administrator",
        "Enabled": true,
        "Locked": false,
        "AccountTypes": ["Redfish"],
        "Links": {"Role": odata_id("/redfish/v1/AccountService/Roles/Administrator")},
    })
}

pub fn role(id: &str) -> Option<Value> {
    let (name, privileges) = ROLES.iter().find(|(name, _)| *name == id)?;
    Some(json!({
        "@odata.type": "#Role.v1_3_1.Role",
        "@odata.id": format!("/redfish/v1/AccountService/Roles/{name}"),
        "Id": name,
        "Name": format!("{name} role"),
        "RoleId": name,
        "IsPredefined": true,
        "AssignedPrivileges": privileges,
    }))
}

pub fn registry_file() -> Value {
    json!({
        "@odata.type": "#MessageRegistryFile.v1_1_3.MessageRegistryFile",
        "@odata.id": "/redfish/v1/Registries/Base",
        "Id": "Base",
        "Name": "Base Message Registry File",
        "Registry": BASE_REGISTRY_ID,
        "Languages": ["en"],
        "Location": [{
            "Language": "en",
            "Uri": format!("/redfish/v1/Registries/Base/{BASE_REGISTRY_ID}.json"),
            "PublicationUri": format!("https://redfish.dmtf.org/registries/{BASE_REGISTRY_ID}.json"),
        }],
    })
}
