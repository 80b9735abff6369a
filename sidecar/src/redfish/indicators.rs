//! The virtual identify LEDs of the System and of the Chassis: `IndicatorLED` (Lit, Blinking,
//! Off) and its successor `LocationIndicatorActive` (on or off), as Ironic's indicator
//! management sets and reads them (`ironic/drivers/modules/redfish/management.py`
//! `set_indicator_state`/`get_indicator_state`, through sushy's `set_indicator_led`, a PATCH
//! of `IndicatorLED`). A VM has no LED; the state is kept by the machine (`Record::Indicators`,
//! on the VM in KubeVirt) so it reads back exactly and survives a restart of the BMC.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::errors::{ApiError, ApiResult};
use crate::machine::{Machine, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Led {
    #[default]
    Off,
    Lit,
    Blinking,
}

impl Led {
    pub fn name(self) -> &'static str {
        match self {
            Led::Off => "Off",
            Led::Lit => "Lit",
            Led::Blinking => "Blinking",
        }
    }

    fn parse(name: &str) -> Option<Led> {
        [Led::Off, Led::Lit, Led::Blinking]
            .into_iter()
            .find(|led| led.name() == name)
    }
}

/// Both LEDs, as the record stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Indicators {
    #[serde(default)]
    pub system: Led,
    #[serde(default)]
    pub chassis: Led,
}

impl Indicators {
    /// The stored state; a record that does not parse reads as all off (and is replaced by
    /// the next write) rather than making the System unreadable.
    pub async fn load(machine: &dyn Machine) -> ApiResult<Indicators> {
        let record = machine.record(Record::Indicators).await?;
        Ok(record
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default())
    }

    pub async fn store(self, machine: &dyn Machine) -> ApiResult<()> {
        let text = serde_json::to_string(&self).expect("indicators always serialize");
        machine.store_record(Record::Indicators, Some(text)).await?;
        Ok(())
    }
}

/// The two indicator properties of a resource showing `led`.
pub fn properties(led: Led, into: &mut Map<String, Value>) {
    into.insert("IndicatorLED".to_owned(), Value::from(led.name()));
    into.insert(
        "LocationIndicatorActive".to_owned(),
        Value::from(led != Led::Off),
    );
}

/// Takes `IndicatorLED` and `LocationIndicatorActive` out of a PATCH body and returns the
/// LED they ask for (`None` when the body names neither). Pure; the rest of the body is left
/// for the caller to check.
pub fn from_patch(body: &mut Map<String, Value>, current: Led) -> ApiResult<Option<Led>> {
    let mut wanted = None;
    if let Some(value) = body.remove("IndicatorLED") {
        let name = value
            .as_str()
            .ok_or_else(|| ApiError::property_type(&value, "IndicatorLED"))?;
        wanted = Some(
            Led::parse(name)
                .ok_or_else(|| ApiError::property_not_in_list(&value, "IndicatorLED"))?,
        );
    }
    if let Some(value) = body.remove("LocationIndicatorActive") {
        let active = value
            .as_bool()
            .ok_or_else(|| ApiError::property_type(&value, "LocationIndicatorActive"))?;
        let from_led = wanted.unwrap_or(current);
        let led = match (active, from_led) {
            (false, _) => Led::Off,
            (true, Led::Off) => Led::Lit,
            (true, on) => on,
        };
        if wanted.is_some_and(|w| w != led) {
            let mut error = ApiError::bad_request(
                "PropertyValueFormatError",
                &[&active.to_string(), "LocationIndicatorActive"],
            );
            error.text = format!(
                "LocationIndicatorActive {active} contradicts IndicatorLED {} in the same request",
                wanted.map_or("", |w| w.name())
            );
            return Err(error);
        }
        wanted = Some(led);
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn patches_name_a_led_state() {
        let mut b = body(json!({"IndicatorLED": "Blinking", "Boot": {}}));
        assert_eq!(from_patch(&mut b, Led::Off).unwrap(), Some(Led::Blinking));
        assert_eq!(b.keys().collect::<Vec<_>>(), ["Boot"], "the rest is left");
        let mut b = body(json!({"LocationIndicatorActive": true}));
        assert_eq!(from_patch(&mut b, Led::Off).unwrap(), Some(Led::Lit));
        let mut b = body(json!({"LocationIndicatorActive": true}));
        assert_eq!(
            from_patch(&mut b, Led::Blinking).unwrap(),
            Some(Led::Blinking)
        );
        let mut b = body(json!({"LocationIndicatorActive": false}));
        assert_eq!(from_patch(&mut b, Led::Lit).unwrap(), Some(Led::Off));
        assert_eq!(from_patch(&mut body(json!({})), Led::Lit).unwrap(), None);
        for bad in [
            json!({"IndicatorLED": "Green"}),
            json!({"IndicatorLED": 1}),
            json!({"LocationIndicatorActive": "yes"}),
            json!({"IndicatorLED": "Off", "LocationIndicatorActive": true}),
        ] {
            assert!(
                from_patch(&mut body(bad.clone()), Led::Off).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn properties_agree() {
        let mut map = Map::new();
        properties(Led::Blinking, &mut map);
        assert_eq!(
            Value::Object(map),
            json!({"IndicatorLED": "Blinking", "LocationIndicatorActive": true})
        );
    }
}
