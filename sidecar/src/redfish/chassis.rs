//! The Chassis: its indicator LED, and its `Thermal` and `Power` resources, which Ironic's
//! sensor collection reads (`ironic/drivers/modules/redfish/management.py`
//! `_get_sensors_temperatures`, `_get_sensors_power`, `_get_sensors_fan`, on the Chassis sushy
//! fetches with `?$expand=.($levels=1)`, `sushy/resources/system/system.py`
//! `chassis_expanded`).
//!
//! The readings are the virtual sensors the IPMI SDR already reports (`ipmi/inventory.rs`
//! `sensor_reading`): a System temperature while the machine runs, unavailable while it is
//! off, and its power unit. A VM has no fans, so `Fans` is empty rather than invented.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::Context;
use super::errors::{ApiError, ApiResult};
use super::http::{JsonBody, check_if_match, resource};
use super::indicators::{self, Indicators};
use super::models::{self, Ids, collection, odata_id};
use crate::machine::PowerState;

/// What the IPMI temperature sensor reads while the machine runs (`ipmi/inventory.rs`).
pub const SYSTEM_TEMP_CELSIUS: u32 = 40;

impl Context {
    /// The Chassis is the VM's (its name) or the alias bmclib knows ([`models::ALIAS`]).
    fn require_chassis(&self, id: &str, uri: &str) -> ApiResult<Ids> {
        if id == models::ALIAS {
            Ok(self.ids.aliased())
        } else if id == self.ids.system {
            Ok(self.ids.clone())
        } else {
            Err(ApiError::not_found(uri))
        }
    }

    async fn chassis_json(&self, ids: &Ids) -> ApiResult<Value> {
        let inventory = self.machine.inventory().await?;
        let power = self.machine.power_state().await?;
        let leds = Indicators::load(self.machine.as_ref()).await?;
        let mut value = models::chassis(ids, &inventory, power);
        if let Some(map) = value.as_object_mut() {
            let uri = ids.chassis_uri();
            map.insert("Thermal".to_owned(), odata_id(&format!("{uri}/Thermal")));
            map.insert("Power".to_owned(), odata_id(&format!("{uri}/Power")));
            indicators::properties(leds.chassis, map);
        }
        Ok(value)
    }
}

pub async fn list(State(context): State<Arc<Context>>) -> Response {
    resource(collection(
        "ChassisCollection",
        "Chassis",
        "/redfish/v1/Chassis",
        &[context.ids.aliased().chassis_uri()],
    ))
}

pub async fn get(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let ids = context.require_chassis(&id, &format!("/redfish/v1/Chassis/{id}"))?;
    Ok(resource(context.chassis_json(&ids).await?))
}

/// Only the indicator LED of the Chassis is writable; anything else is refused and nothing
/// changes.
pub async fn patch(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    let ids = context.require_chassis(&id, &format!("/redfish/v1/Chassis/{id}"))?;
    let mut body = body.required()?;
    let current = context.chassis_json(&ids).await?;
    check_if_match(&headers, &current)?;
    let machine = context.machine.as_ref();
    let mut leds = Indicators::load(machine).await?;
    let led = indicators::from_patch(&mut body, leds.chassis)?;
    if let Some(name) = body.keys().next() {
        return Err(if current.get(name).is_some() {
            ApiError::property_not_writable(name)
        } else {
            ApiError::property_unknown(name)
        });
    }
    if let Some(led) = led.filter(|led| *led != leds.chassis) {
        leds.chassis = led;
        leds.store(machine).await?;
        tracing::info!(?led, "Redfish: chassis indicator set");
    }
    Ok(resource(context.chassis_json(&ids).await?))
}

pub async fn thermal(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let ids = context.require_chassis(&id, &format!("/redfish/v1/Chassis/{id}/Thermal"))?;
    let power = context.machine.power_state().await?;
    Ok(resource(thermal_json(&ids, power)))
}

pub async fn power(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let ids = context.require_chassis(&id, &format!("/redfish/v1/Chassis/{id}/Power"))?;
    let power = context.machine.power_state().await?;
    Ok(resource(power_json(&ids, power)))
}

fn sensor_status(on: bool) -> Value {
    if on {
        json!({"State": "Enabled", "Health": "OK"})
    } else {
        json!({"State": "StandbyOffline"})
    }
}

pub fn thermal_json(ids: &Ids, power: PowerState) -> Value {
    let uri = format!("{}/Thermal", ids.chassis_uri());
    let on = power.settled() == PowerState::On;
    json!({
        "@odata.type": "#Thermal.v1_7_0.Thermal",
        "@odata.id": uri,
        "Id": "Thermal",
        "Name": "Thermal",
        "Temperatures": [{
            "@odata.id": format!("{uri}#/Temperatures/0"),
            "MemberId": "0",
            "Name": "System Temp",
            "SensorNumber": 1,
            "ReadingCelsius": if on { json!(SYSTEM_TEMP_CELSIUS) } else { Value::Null },
            "PhysicalContext": "SystemBoard",
            "Status": sensor_status(on),
        }],
        "Fans": [],
    })
}

pub fn power_json(ids: &Ids, power: PowerState) -> Value {
    let uri = format!("{}/Power", ids.chassis_uri());
    let on = power.settled() == PowerState::On;
    json!({
        "@odata.type": "#Power.v1_7_1.Power",
        "@odata.id": uri,
        "Id": "Power",
        "Name": "Power",
        // The IPMI "Power Unit" sensor's counterpart: present, with no wattage a VM could
        // honestly report.
        "PowerSupplies": [{
            "@odata.id": format!("{uri}#/PowerSupplies/0"),
            "MemberId": "0",
            "Name": "Power Unit",
            "PowerSupplyType": "Unknown",
            "Status": sensor_status(on),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Ids {
        Ids {
            system: "vm".to_owned(),
            uuid: "u".to_owned(),
            service_uuid: "s".to_owned(),
        }
    }

    #[test]
    fn temperature_reads_only_while_on() {
        let on = thermal_json(&ids(), PowerState::On);
        assert_eq!(on["Temperatures"][0]["ReadingCelsius"], SYSTEM_TEMP_CELSIUS);
        assert_eq!(on["Temperatures"][0]["Status"]["State"], "Enabled");
        let off = thermal_json(&ids(), PowerState::PoweringOff);
        assert!(off["Temperatures"][0]["ReadingCelsius"].is_null());
        assert_eq!(off["Temperatures"][0]["Status"]["State"], "StandbyOffline");
        assert_eq!(off["Fans"], json!([]));
        let power = power_json(&ids(), PowerState::On);
        assert_eq!(power["PowerSupplies"][0]["Status"]["Health"], "OK");
        assert_eq!(power["@odata.id"], "/redfish/v1/Chassis/vm/Power");
    }
}
