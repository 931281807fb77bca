//! The identity of a client certificate: its first DNS subject alternative name, else its
//! subject common name.
//!
//! Only called on certificates rustls has already verified against `tls_client_ca`. It reads
//! just the few DER fields it needs (a full X.509 parser would be a heavy dependency for two
//! strings) and gives up — no identity — on anything it does not expect.

/// DER tags used below.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
/// `[0] EXPLICIT Version` of a TBSCertificate.
const VERSION: u8 = 0xa0;
/// `[3] EXPLICIT Extensions` of a TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// `dNSName [2] IA5String` of a GeneralName.
const DNS_NAME: u8 = 0x82;
/// String types a common name may have (UTF8String, PrintableString, TeletexString,
/// IA5String); BMPString and UniversalString are not supported.
const CN_STRING_TAGS: [u8; 4] = [0x0c, 0x13, 0x14, 0x16];
/// id-at-commonName, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// id-ce-subjectAltName, 2.5.29.17.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The identity of the DER-encoded certificate `der`: its first DNS subject alternative name,
/// else its subject common name; `None` when it has neither or cannot be read.
pub fn of_certificate(der: &[u8]) -> Option<String> {
    let certificate = Der(der).expect(SEQUENCE)?;
    let mut tbs = Der(Der(certificate).expect(SEQUENCE)?);
    let (mut tag, _) = tbs.next()?;
    if tag == VERSION {
        (tag, _) = tbs.next()?; // serialNumber
    }
    if tag != 0x02 {
        return None;
    }
    tbs.expect(SEQUENCE)?; // signature
    tbs.expect(SEQUENCE)?; // issuer
    tbs.expect(SEQUENCE)?; // validity
    let subject = tbs.expect(SEQUENCE)?;
    tbs.expect(SEQUENCE)?; // subjectPublicKeyInfo
    let mut dns_name = None;
    while let Some((tag, value)) = tbs.next() {
        if tag == EXTENSIONS {
            dns_name = first_dns_name(value);
        }
    }
    dns_name.or_else(|| common_name(subject))
}

/// The first dNSName of the subjectAltName extension in `extensions` (`[3]`'s content).
fn first_dns_name(extensions: &[u8]) -> Option<String> {
    let mut list = Der(Der(extensions).expect(SEQUENCE)?);
    while let Some((tag, extension)) = list.next() {
        if tag != SEQUENCE {
            return None;
        }
        let mut extension = Der(extension);
        if extension.expect(OID)? != OID_SUBJECT_ALT_NAME {
            continue;
        }
        let (mut tag, mut value) = extension.next()?;
        if tag == BOOLEAN {
            (tag, value) = extension.next()?; // critical
        }
        if tag != OCTET_STRING {
            return None;
        }
        let mut names = Der(Der(value).expect(SEQUENCE)?);
        while let Some((tag, name)) = names.next() {
            if tag == DNS_NAME {
                return text(name);
            }
        }
        return None;
    }
    None
}

/// The first common name in the Name `subject` (a SEQUENCE's content).
fn common_name(subject: &[u8]) -> Option<String> {
    let mut rdns = Der(subject);
    while let Some((tag, rdn)) = rdns.next() {
        if tag != SET {
            return None;
        }
        let mut attributes = Der(rdn);
        while let Some((tag, attribute)) = attributes.next() {
            if tag != SEQUENCE {
                return None;
            }
            let mut attribute = Der(attribute);
            if attribute.expect(OID)? == OID_COMMON_NAME {
                let (tag, value) = attribute.next()?;
                return if CN_STRING_TAGS.contains(&tag) { text(value) } else { None };
            }
        }
    }
    None
}

/// A non-empty UTF-8 string without control characters.
fn text(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?;
    (!s.is_empty() && !s.chars().any(char::is_control)).then(|| s.to_owned())
}

/// A reader of consecutive DER elements (single-byte tags, definite lengths).
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element's tag and content.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // multi-byte tag: never used by the fields read here
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            bytes.iter().fold(0usize, |len, &b| (len << 8) | usize::from(b))
        };
        if rest.len() < len {
            return None;
        }
        let (content, rest) = rest.split_at(len);
        self.0 = rest;
        Some((tag, content))
    }

    /// The next element's content, if its tag is `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.next().filter(|(t, _)| *t == tag).map(|(_, content)| content)
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn certificate(sans: Vec<SanType>, cn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "zkcoord tests");
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("certificate").der().to_vec()
    }

    fn dns(name: &str) -> SanType {
        SanType::DnsName(name.try_into().expect("dns name"))
    }

    #[test]
    fn first_dns_san_wins() {
        let der = certificate(vec![dns("ledger-node-a"), dns("other")], Some("cn-name"));
        assert_eq!(of_certificate(&der).as_deref(), Some("ledger-node-a"));
    }

    #[test]
    fn common_name_without_dns_san() {
        let der = certificate(vec![], Some("intruder"));
        assert_eq!(of_certificate(&der).as_deref(), Some("intruder"));
        let der = certificate(vec![SanType::IpAddress([127, 0, 0, 1].into())], Some("by-cn"));
        assert_eq!(of_certificate(&der).as_deref(), Some("by-cn"));
    }

    #[test]
    fn neither_or_garbage_is_no_identity() {
        assert_eq!(of_certificate(&certificate(vec![], None)), None);
        let der = certificate(vec![dns("a")], None);
        for cut in [0, 1, 10, der.len() / 2] {
            let _ = of_certificate(&der[..cut]); // must not panic
        }
        assert_eq!(of_certificate(b""), None);
        assert_eq!(of_certificate(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
