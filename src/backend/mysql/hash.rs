//! What MySQL and MariaDB compute for a reconciliation, reproduced in
//! ferry: the 64-bit hash of a row's encoding (the first 8 bytes of its
//! MD5, the cheapest 64-bit hash both servers have) and the text a float
//! prints as, which the canonical encoding hashes.

use md5::{Digest, Md5};

/// The hash the server computes of a row or key encoding: the first 8
/// bytes of its MD5, big-endian (`CONV(SUBSTRING(MD5(e), 1, 16), 16, 10)`).
pub fn hash64(encoding: &[u8]) -> u64 {
    let digest = Md5::digest(encoding);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A double (or a single) as MySQL and MariaDB print it: the shortest
/// round-trip digits, in positional form while the decimal point sits
/// within 15 places either way of the digits, scientific (`1e15`,
/// `1.5e-300`) beyond.
pub fn float_text(v: f64, single: bool) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let sci = if single { format!("{:e}", v as f32) } else { format!("{v:e}") };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // The value is 0.<digits> x 10^decpt.
    let decpt = exp + 1;
    if decpt <= -15 || decpt > 15 {
        return sci;
    }
    if decpt <= 0 {
        return format!("{sign}0.{}{digits}", "0".repeat(decpt.unsigned_abs() as usize));
    }
    let decpt = decpt as usize;
    if digits.len() <= decpt {
        format!("{sign}{digits}{}", "0".repeat(decpt - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..decpt], &digits[decpt..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_floats_print_as_the_server_does() {
        // Each expected text is what MariaDB 10.11 printed for the value.
        for (v, want) in [
            (0.1 + 0.2, "0.30000000000000004"),
            (1e14, "100000000000000"),
            (1e15, "1e15"),
            (1.5e16, "1.5e16"),
            (1.2345678901234568e20, "1.2345678901234568e20"),
            (1e-15, "0.000000000000001"),
            (1e-16, "1e-16"),
            (1.23456e-15, "0.00000000000000123456"),
            (1.5e-300, "1.5e-300"),
            (-2.5e100, "-2.5e100"),
            (12345.678, "12345.678"),
            (999_999_999_999_999.0, "999999999999999"),
            (9_999_999_999_999_998.0, "9.999999999999998e15"),
            (-0.0, "0"),
        ] {
            assert_eq!(float_text(v, false), want, "{v:e}");
        }
        assert_eq!(float_text(f64::from(0.1f32), true), "0.1");
        assert_eq!(float_text(f64::from(3.4e38f32), true), "3.4e38");
    }
}
