//! Sensors and the SDR repository, the (empty) SEL, the FRU inventory and DCMI capability
//! discovery: enough for `ipmitool sdr`, `sensor`, `sel`, `fru` and `dcmi discover`.

use kubevirt_bmc_ipmi::IpmiRequest;
use kubevirt_bmc_ipmi::message::{cc, netfn};

use super::commands::{Decision, Snapshot};
use crate::machine::PowerState;

const SDR_VERSION: u8 = 0x51;
const RESERVATION: u16 = 0x0001;
const SENSOR_TEMP: u8 = 1;
const SENSOR_POWER_UNIT: u8 = 2;
const SENSOR_ACPI: u8 = 3;

/// The SDR records, each complete with its 5-byte header; record IDs are 1..=N.
pub fn sdr_records() -> Vec<Vec<u8>> {
    vec![
        full_record(1, SENSOR_TEMP, b"System Temp"),
        compact_record(2, SENSOR_POWER_UNIT, 0x09, 0x0001, b"Power Unit"),
        compact_record(3, SENSOR_ACPI, 0x22, 0x0041, b"ACPI State"),
    ]
}

fn header(id: u16, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = id.to_le_bytes().to_vec();
    out.extend_from_slice(&[SDR_VERSION, kind, body.len() as u8]);
    out.extend_from_slice(body);
    out
}

/// A threshold temperature sensor, degrees C, linear with M=1 (no thresholds set).
fn full_record(id: u16, number: u8, name: &[u8]) -> Vec<u8> {
    let mut b = vec![
        0x20, 0x00, number, // owner, LUN, sensor number
        0x07, 0x01, // entity: system board, instance 1
        0x7F, 0x40, // initialisation; auto re-arm, no thresholds
        0x01, 0x01, // sensor type temperature, threshold reading type
        0, 0, 0, 0, 0, 0, // event masks
        0x00, 0x01, 0x00, // units: unsigned, degrees C
        0x00, // linear
        0x01, 0x00, // M = 1
        0x00, 0x00, // B = 0
        0x00, 0x00, // accuracy, direction; R and B exponents
        0x01, // nominal reading specified
        40, 0, 0, // nominal, normal max, normal min
        0xFF, 0x00, // sensor max / min
        0, 0, 0, 0, 0, 0, // thresholds
        0, 0, // hysteresis
        0, 0, 0, // reserved, OEM
    ];
    b.push(0xC0 | name.len() as u8);
    b.extend_from_slice(name);
    header(id, 0x01, &b)
}

/// A discrete, sensor-specific sensor whose states `mask` can be asserted.
fn compact_record(id: u16, number: u8, sensor_type: u8, mask: u16, name: &[u8]) -> Vec<u8> {
    let m = mask.to_le_bytes();
    let mut b = vec![
        0x20,
        0x00,
        number,
        0x07,
        0x01,
        0x7F,
        0x40,
        sensor_type,
        0x6F, // sensor-specific
        m[0],
        m[1],
        0,
        0,
        m[0],
        m[1], // assertion, deassertion, reading masks
        0x00,
        0x00,
        0x00, // units: none
        0x01,
        0x00, // record sharing: one sensor
        0,
        0,
        0,
        0,
        0,
        0, // hysteresis, reserved, OEM
    ];
    b.push(0xC0 | name.len() as u8);
    b.extend_from_slice(name);
    header(id, 0x02, &b)
}

fn sensor_reading(number: u8, snap: &Snapshot<'_>) -> Decision {
    let on = snap.power.settled() == PowerState::On;
    match number {
        // Scanning enabled; the reading is unavailable while the machine is off.
        SENSOR_TEMP if on => Decision::ok(vec![40, 0xC0, 0x00]),
        SENSOR_TEMP => Decision::ok(vec![0, 0xE0, 0x00]),
        // Power Unit offset 0: power off / power down.
        SENSOR_POWER_UNIT => Decision::ok(vec![0, 0xC0, u8::from(!on), 0x00]),
        // System ACPI Power State: offset 0 S0/G0 working, offset 6 S5/G2 soft-off.
        SENSOR_ACPI => Decision::ok(vec![0, 0xC0, if on { 0x01 } else { 0x40 }, 0x00]),
        _ => Decision::error(cc::NOT_PRESENT),
    }
}

fn get_sdr(data: &[u8]) -> Decision {
    if data.len() != 6 {
        return Decision::error(cc::REQUEST_LENGTH_INVALID);
    }
    let reservation = u16::from_le_bytes([data[0], data[1]]);
    let id = u16::from_le_bytes([data[2], data[3]]);
    let (offset, count) = (data[4] as usize, data[5] as usize);
    // A reservation is only needed for partial reads, as the spec says.
    if offset != 0 && reservation != RESERVATION {
        return Decision::error(0xC5); // reservation cancelled or invalid
    }
    let records = sdr_records();
    let index = if id == 0 { 0 } else { id as usize - 1 };
    let Some(record) = records.get(index) else {
        return Decision::error(cc::NOT_PRESENT);
    };
    if offset > record.len() {
        return Decision::error(cc::PARAMETER_OUT_OF_RANGE);
    }
    let end = if count == 0xFF {
        record.len()
    } else {
        (offset + count).min(record.len())
    };
    let next: u16 = if index + 1 < records.len() {
        index as u16 + 2
    } else {
        0xFFFF
    };
    let mut out = next.to_le_bytes().to_vec();
    out.extend_from_slice(&record[offset..end]);
    Decision::ok(out)
}

/// The FRU inventory: a common header and a product info area.
pub fn fru_data(snap: &Snapshot<'_>) -> Vec<u8> {
    let mut area = vec![0x01, 0x00, 0x00]; // version, length (set below), English
    let mut field = |bytes: &[u8]| {
        let bytes = &bytes[..bytes.len().min(63)];
        area.push(0xC0 | bytes.len() as u8);
        area.extend_from_slice(bytes);
    };
    field(b"KubeVirt");
    field(b"KubeVirt VirtualMachine");
    field(snap.inventory.name.as_bytes()); // part / model: the VM's name
    field(env!("CARGO_PKG_VERSION").as_bytes());
    field(snap.inventory.uuid.as_bytes()); // serial: the VM's UUID
    field(snap.inventory.name.as_bytes()); // asset tag
    field(b""); // FRU file ID
    area.push(0xC1);
    while (area.len() + 1) % 8 != 0 {
        area.push(0);
    }
    area[1] = ((area.len() + 1) / 8) as u8;
    area.push(kubevirt_bmc_ipmi::message::checksum(&area));
    let mut common = vec![0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
    common.push(kubevirt_bmc_ipmi::message::checksum(&common));
    common.extend_from_slice(&area);
    common
}

fn read_fru(data: &[u8], snap: &Snapshot<'_>) -> Decision {
    let [device, lo, hi, count] = data else {
        return Decision::error(cc::REQUEST_LENGTH_INVALID);
    };
    if *device != 0 {
        return Decision::error(cc::NOT_PRESENT);
    }
    let fru = fru_data(snap);
    let offset = u16::from_le_bytes([*lo, *hi]) as usize;
    if offset >= fru.len() {
        return Decision::error(cc::PARAMETER_OUT_OF_RANGE);
    }
    let end = (offset + *count as usize).min(fru.len());
    let mut out = vec![(end - offset) as u8];
    out.extend_from_slice(&fru[offset..end]);
    Decision::ok(out)
}

/// DCMI capability discovery, honestly: conformance 1.5, no power management, no in-band
/// or serial access, GUID identification only.
fn dcmi(request: &IpmiRequest) -> Decision {
    let data = &request.data;
    if data.first() != Some(&0xDC) {
        return Decision::error(cc::INVALID_COMMAND);
    }
    match (request.cmd, data.get(1)) {
        (0x01, Some(1)) if data.len() == 2 => {
            Decision::ok(vec![0xDC, 0x01, 0x05, 0x02, 0x00, 0x00, 0x00])
        }
        (0x01, Some(2)) if data.len() == 2 => {
            // SEL: 0 entries, no flush; identification: GUID; temperature: not sampled.
            Decision::ok(vec![0xDC, 0x01, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00])
        }
        (0x01, Some(3)) if data.len() == 2 => {
            // Optional platform attributes: no power management controller.
            Decision::ok(vec![0xDC, 0x01, 0x05, 0x02, 0x00, 0x00])
        }
        (0x01, Some(4)) if data.len() == 2 => {
            // Manageability access: primary LAN is channel 1; no secondary LAN, no serial.
            Decision::ok(vec![0xDC, 0x01, 0x05, 0x02, 0x01, 0xFF, 0xFF])
        }
        (0x01, Some(5)) if data.len() == 2 => {
            // Enhanced power statistics: no rolling average periods.
            Decision::ok(vec![0xDC, 0x01, 0x05, 0x02, 0x00])
        }
        (0x01, Some(_)) if data.len() == 2 => Decision::error(cc::INVALID_DATA),
        (0x01, _) => Decision::error(cc::REQUEST_LENGTH_INVALID),
        _ => Decision::error(cc::INVALID_COMMAND),
    }
}

pub fn decide(request: &IpmiRequest, snap: &Snapshot<'_>) -> Decision {
    let data = &request.data[..];
    let records = || sdr_records();
    match (request.netfn, request.cmd) {
        (netfn::SENSOR, 0x2D) => match data {
            [number] => sensor_reading(*number, snap),
            _ => Decision::error(cc::REQUEST_LENGTH_INVALID),
        },
        (netfn::SENSOR, 0x27) => match data {
            [n] if (SENSOR_TEMP..=SENSOR_ACPI).contains(n) => Decision::ok(vec![0; 7]),
            [_] => Decision::error(cc::NOT_PRESENT),
            _ => Decision::error(cc::REQUEST_LENGTH_INVALID),
        },
        (netfn::STORAGE, 0x10) => match data {
            [0] => {
                let size = fru_data(snap).len() as u16;
                let s = size.to_le_bytes();
                Decision::ok(vec![s[0], s[1], 0x00])
            }
            [_] => Decision::error(cc::NOT_PRESENT),
            _ => Decision::error(cc::REQUEST_LENGTH_INVALID),
        },
        (netfn::STORAGE, 0x11) => read_fru(data, snap),
        (netfn::STORAGE, 0x12) => Decision::error(0x80), // write protected
        (netfn::STORAGE, 0x20) => {
            let count = (records().len() as u16).to_le_bytes();
            let mut out = vec![SDR_VERSION, count[0], count[1], 0x00, 0x00];
            out.extend_from_slice(&[0; 8]); // addition and erase timestamps
            out.push(0x02); // reserve supported; no modal update, no delete
            Decision::ok(out)
        }
        (netfn::STORAGE, 0x22) => Decision::ok(RESERVATION.to_le_bytes().to_vec()),
        (netfn::STORAGE, 0x23) => get_sdr(data),
        (netfn::STORAGE, 0x40) => {
            let mut out = vec![SDR_VERSION, 0x00, 0x00, 0x00, 0x00];
            out.extend_from_slice(&[0; 8]);
            out.push(0x02); // reserve supported
            Decision::ok(out)
        }
        (netfn::STORAGE, 0x42) => Decision::ok(RESERVATION.to_le_bytes().to_vec()),
        (netfn::STORAGE, 0x43) => match data.len() {
            6 => Decision::error(cc::NOT_PRESENT), // the SEL is empty
            _ => Decision::error(cc::REQUEST_LENGTH_INVALID),
        },
        (netfn::STORAGE, 0x47) => match data {
            [_, _, b'C', b'L', b'R', 0x00 | 0xAA] => Decision::ok(vec![0x01]),
            [_, _, _, _, _, _] => Decision::error(cc::INVALID_DATA),
            _ => Decision::error(cc::REQUEST_LENGTH_INVALID),
        },
        (netfn::STORAGE, 0x48) => Decision::ok(snap.unix_time.to_le_bytes().to_vec()),
        (netfn::GROUP, _) => dcmi(request),
        _ => Decision::error(cc::INVALID_COMMAND),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{BootOverride, Inventory};

    fn inventory() -> Inventory {
        Inventory {
            name: "vm1".into(),
            uuid: "5d307ca9-b3ef-428c-8861-06e72d69f223".into(),
            vcpus: 1,
            memory_mib: 1,
            interfaces: vec![],
            disks: vec![],
            secure_boot: false,
            architecture: None,
        }
    }

    fn snap(inventory: &Inventory) -> Snapshot<'_> {
        use crate::machine::RestorePolicy;
        Snapshot {
            power: PowerState::On,
            boot: BootOverride::default(),
            restore_policy: RestorePolicy::Previous,
            inventory,
            supported_actions: &[],
            supported_targets: &[],
            username: b"admin",
            unix_time: 0,
        }
    }

    #[test]
    fn sdr_records_have_consistent_lengths_and_chain() {
        for (i, r) in sdr_records().iter().enumerate() {
            assert_eq!(r[4] as usize, r.len() - 5);
            assert_eq!(u16::from_le_bytes([r[0], r[1]]) as usize, i + 1);
        }
        let d = get_sdr(&[0, 0, 0, 0, 0, 0xFF]);
        assert_eq!((d.cc, &d.data[..2]), (0, &[2u8, 0][..]));
        let d = get_sdr(&[0, 0, 3, 0, 0, 5]);
        assert_eq!((d.cc, &d.data[..2]), (0, &[0xFF, 0xFF][..]));
        assert_eq!(get_sdr(&[0, 0, 9, 0, 0, 5]).cc, cc::NOT_PRESENT);
    }

    #[test]
    fn fru_areas_checksum_and_hold_the_uuid() {
        let inv = inventory();
        let fru = fru_data(&snap(&inv));
        assert_eq!(kubevirt_bmc_ipmi::message::checksum(&fru[..8]), 0);
        let area = &fru[8..];
        assert_eq!(area.len(), area[1] as usize * 8);
        assert_eq!(kubevirt_bmc_ipmi::message::checksum(area), 0);
        let text = String::from_utf8_lossy(&fru);
        assert!(text.contains(&inv.uuid));
    }
}
