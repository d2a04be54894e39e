//! The two things read from a certificate that rustls does not expose: its validity period's end
//! (`notAfter`, for expiry checks and warnings) and its DNS names (subjectAltName `dNSName`, to
//! choose it by SNI). A bounds-checked DER walk over the fields in front of them (RFC 5280 §4.1);
//! the certificate's structure and signature are left to rustls and webpki.

use std::time::{Duration, SystemTime};

/// What is read from one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// End of the validity period.
    pub not_after: SystemTime,
    /// The subjectAltName DNS names, lowercased (wildcards as written: `*.example.com`).
    pub dns_names: Vec<String>,
}

/// Reads `der` (one X.509 certificate); `None` when it is not a well-formed one.
pub fn facts(der: &[u8]) -> Option<CertFacts> {
    let (SEQUENCE, cert) = Der(der).next()? else { return None };
    let (SEQUENCE, tbs) = Der(cert).next()? else { return None };
    let mut tbs = Der(tbs);
    let mut field = tbs.next()?;
    if field.0 == VERSION {
        field = tbs.next()?;
    }
    // serialNumber (in `field` now), signature, issuer, validity.
    let (INTEGER, _) = field else { return None };
    let (SEQUENCE, _) = tbs.next()? else { return None };
    let (SEQUENCE, _) = tbs.next()? else { return None };
    let (SEQUENCE, validity) = tbs.next()? else { return None };
    let mut validity = Der(validity);
    let _not_before = validity.next()?;
    let (tag, not_after) = validity.next()?;
    let not_after = time(tag, not_after)?;
    // subject, subjectPublicKeyInfo, then the optional unique IDs and extensions.
    let (SEQUENCE, _) = tbs.next()? else { return None };
    let (SEQUENCE, _) = tbs.next()? else { return None };
    let mut dns_names = Vec::new();
    while let Some((tag, value)) = tbs.next() {
        if tag != EXTENSIONS {
            continue;
        }
        let (SEQUENCE, list) = Der(value).next()? else { return None };
        let mut list = Der(list);
        while let Some((SEQUENCE, ext)) = list.next() {
            let mut ext = Der(ext);
            let (OID, oid) = ext.next()? else { return None };
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            let mut value = ext.next()?;
            if value.0 == BOOLEAN {
                value = ext.next()?;
            }
            let (OCTET_STRING, names) = value else { return None };
            let (SEQUENCE, names) = Der(names).next()? else { return None };
            let mut names = Der(names);
            while let Some((tag, name)) = names.next() {
                if tag == DNS_NAME {
                    dns_names.push(std::str::from_utf8(name).ok()?.to_ascii_lowercase());
                }
            }
        }
    }
    Some(CertFacts { not_after, dns_names })
}

const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT Version`.
const VERSION: u8 = 0xa0;
/// `[3] EXPLICIT Extensions`.
const EXTENSIONS: u8 = 0xa3;
/// `GeneralName` `[2] IMPLICIT IA5String`.
const DNS_NAME: u8 = 0x82;
/// 2.5.29.17, id-ce-subjectAltName.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// DER elements, one after the other.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element's tag and contents (definite lengths only, as DER requires).
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (digits, after) = rest.split_at(n);
            rest = after;
            digits.iter().fold(0usize, |len, &b| (len << 8) | usize::from(b))
        };
        if rest.len() < len {
            return None;
        }
        let (value, after) = rest.split_at(len);
        self.0 = after;
        Some((tag, value))
    }
}

/// A `Time` (RFC 5280 §4.1.2.5): UTCTime `YYMMDDHHMMSSZ` (years 1950-2049) or GeneralizedTime
/// `YYYYMMDDHHMMSSZ`.
fn time(tag: u8, v: &[u8]) -> Option<SystemTime> {
    let digits = |s: &[u8]| -> Option<u64> {
        s.iter().try_fold(0u64, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
    };
    let (year, rest) = match (tag, v.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&v[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &v[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&v[..4])?, &v[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let [month, day, hour, min, sec] = [0, 2, 4, 6, 8].map(|i| digits(&rest[i..i + 2]));
    let (month, day) = (month?, day?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour? * 3600 + min? * 60 + sec?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`, for years from 1970 on).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert_to_unix_time() {
        let at =
            |t, s: &str| time(t, s.as_bytes()).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(at(UTC_TIME, "700101000000Z"), Some(0));
        assert_eq!(at(UTC_TIME, "231114221320Z"), Some(1_700_000_000));
        assert_eq!(at(GENERALIZED_TIME, "20240229120000Z"), Some(1_709_208_000));
        assert_eq!(at(GENERALIZED_TIME, "40960101000000Z"), Some(67_090_118_400));
        assert_eq!(at(UTC_TIME, "231314221320Z"), None, "month 13");
        assert_eq!(at(UTC_TIME, "2311142213Z"), None, "too short");
    }

    #[test]
    fn truncated_input_is_refused() {
        assert_eq!(facts(&[0x30, 0x82, 0x01]), None);
        assert_eq!(facts(&[0x30, 0x05, 0x30, 0x03, 0x02, 0x01]), None);
    }
}
