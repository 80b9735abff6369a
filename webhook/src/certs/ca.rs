//! The installation's CA: made once (by the controller, or by cert-manager in that overlay),
//! kept in the Secret `kubevirt-bmc-ca`, and used to sign the sidecars' CSRs. Only the subject
//! alternative names of a CSR that [`super::decide::authorize`] allowed reach a certificate;
//! everything else in it (subject, extensions, CA flags) is ignored.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use super::decide::Asked;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the CSR is not a PKCS#10 request with a valid self-signature")]
    Csr,
    #[error("the CSR asks for a name type other than DNS names and IP addresses")]
    SanType,
    #[error("the CA Secret holds no usable certificate and key: {0}")]
    Load(String),
    #[error("cannot make a certificate: {0}")]
    Sign(String),
}

/// A CA's certificate and key, PEM, as kept in its Secret (`tls.crt`, `tls.key`).
pub struct CaPem {
    pub cert: String,
    pub key: String,
}

fn offset(at: SystemTime) -> time::OffsetDateTime {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn serial() -> SerialNumber {
    use rand::Rng;
    let mut bytes: [u8; 16] = rand::rng().random();
    // Positive, as RFC 5280 section 4.1.2.2 requires.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// A new CA, valid ten years from `now` (cert-manager's CA Certificate in the other overlay
/// has the same shape: ECDSA P-256, `isCA`, key and CRL signing).
pub fn generate(now: SystemTime) -> Result<CaPem, CaError> {
    let sign = |e: rcgen::Error| CaError::Sign(e.to_string());
    let key = KeyPair::generate().map_err(sign)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "kubevirt-bmc CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = offset(now - Duration::from_secs(300));
    params.not_after = offset(now + Duration::from_secs(10 * 365 * 24 * 3600));
    params.serial_number = Some(serial());
    let cert = params.self_signed(&key).map_err(sign)?;
    Ok(CaPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A CA ready to sign.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn from_pem(pem: &CaPem) -> Result<Ca, CaError> {
        let load = |e: rcgen::Error| CaError::Load(e.to_string());
        let key = KeyPair::from_pem(&pem.key).map_err(load)?;
        let issuer = Issuer::from_ca_cert_pem(&pem.cert, key).map_err(load)?;
        Ok(Ca {
            cert_pem: pem.cert.clone(),
            issuer,
        })
    }

    /// A server certificate for the CSR's key and exactly `asked`, valid `from`..`until`.
    pub fn issue(
        &self,
        csr: &CertificateSigningRequestParams,
        asked: &Asked,
        (from, until): (SystemTime, SystemTime),
    ) -> Result<String, CaError> {
        let sign = |e: rcgen::Error| CaError::Sign(e.to_string());
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let common_name = asked
            .dns
            .iter()
            .find(|n| n.ends_with(".svc"))
            .or(asked.dns.first())
            .cloned()
            .unwrap_or_else(|| "kubevirt-bmc".to_owned());
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = asked
            .dns
            .iter()
            .map(|n| n.clone().try_into().map(SanType::DnsName).map_err(sign))
            .chain(asked.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset(from);
        params.not_after = offset(until);
        params.serial_number = Some(serial());
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(sign)?;
        Ok(cert.pem())
    }
}

/// Parses a PEM CSR, checks its self-signature (proof that the sender holds the key) and
/// reads what it asks for.
pub fn parse_csr(pem: &str) -> Result<(CertificateSigningRequestParams, Asked), CaError> {
    let csr = CertificateSigningRequestParams::from_pem(pem).map_err(|_| CaError::Csr)?;
    let mut asked = Asked::default();
    for san in &csr.params.subject_alt_names {
        match san {
            SanType::DnsName(name) => asked.dns.push(name.as_str().to_owned()),
            SanType::IpAddress(ip) => asked.ips.push(normalise(*ip)),
            _ => return Err(CaError::SanType),
        }
    }
    Ok((csr, asked))
}

/// An IPv4 address written as IPv4-mapped IPv6 is the IPv4 address (the Pod IP list holds
/// the plain form).
fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(names: &[&str], ips: &[&str]) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        for ip in ips {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().unwrap()));
        }
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn a_csr_is_read_as_what_it_asks_for_and_signed_with_only_that() {
        let now = SystemTime::now();
        let ca = Ca::from_pem(&generate(now).unwrap()).unwrap();
        let (request, asked) = parse_csr(&csr(&["vm1-bmc.vms.svc"], &["10.0.0.5"])).unwrap();
        assert_eq!(asked.dns, ["vm1-bmc.vms.svc"]);
        assert_eq!(asked.ips, ["10.0.0.5".parse::<IpAddr>().unwrap()]);
        let pem = ca
            .issue(&request, &asked, (now, now + Duration::from_secs(60)))
            .unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    }

    #[test]
    fn a_tampered_or_foreign_csr_is_refused() {
        assert!(matches!(parse_csr("not a csr"), Err(CaError::Csr)));
        let pem = csr(&["vm1-bmc.vms.svc"], &[]);
        // Flip one byte inside the base64 body: the signature no longer matches.
        let mut lines: Vec<String> = pem.lines().map(str::to_owned).collect();
        let body = &mut lines[2];
        let flipped = if body.starts_with('A') { "B" } else { "A" };
        body.replace_range(0..1, flipped);
        assert!(parse_csr(&lines.join("\n")).is_err());
    }

    #[test]
    fn a_ca_that_is_not_pem_is_a_clear_error() {
        let bad = CaPem {
            cert: "x".into(),
            key: "y".into(),
        };
        assert!(matches!(Ca::from_pem(&bad), Err(CaError::Load(_))));
    }
}
