//! Byte sizes as people type them: `4096`, `4KiB`, `512k`, `1G`.
//!
//! Accepted: a whole number, optionally followed (with or without a space) by a unit, in any
//! case. Every unit is binary (powers of 1024):
//!
//! | unit | also written | bytes |
//! |---|---|---|
//! | (none) | `B` | 1 |
//! | `KiB` | `K`, `k` | 1024 |
//! | `MiB` | `M` | 1024² |
//! | `GiB` | `G` | 1024³ |
//! | `TiB` | `T` | 1024⁴ |
//! | `PiB` | `P` | 1024⁵ |
//!
//! `KB`, `MB`, `GB`, ... are refused as ambiguous (1000 or 1024?), and so are fractions
//! (`1.5GiB`): write `1536MiB`.

use std::fmt;

/// A string that is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {reason}")]
pub struct ParseSizeError {
    input: String,
    reason: &'static str,
}

/// Parses a size (see the [module docs](self)).
///
/// ```
/// use dagraid_client::size::parse_size;
/// assert_eq!(parse_size("4096").unwrap(), 4096);
/// assert_eq!(parse_size("4KiB").unwrap(), 4096);
/// assert_eq!(parse_size("512k").unwrap(), 512 * 1024);
/// assert_eq!(parse_size("1G").unwrap(), 1 << 30);
/// assert!(parse_size("1GB").is_err());
/// ```
pub fn parse_size(input: &str) -> Result<u64, ParseSizeError> {
    let err = |reason| ParseSizeError {
        input: input.to_owned(),
        reason,
    };
    let text = input.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(err(
            "expected a whole number, optionally with a unit (4096, 4KiB, 1GiB)",
        ));
    }
    let unit = unit.trim_start();
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "p" | "pib" => 50,
        "kb" | "mb" | "gb" | "tb" | "pb" => {
            return Err(err(
                "ambiguous unit: write KiB, MiB, GiB (powers of 1024) or the number of bytes",
            ));
        }
        u if u.starts_with('.') || u.starts_with(',') => {
            return Err(err(
                "fractions are not accepted: use a smaller unit (1536MiB)",
            ));
        }
        _ => {
            return Err(err(
                "unknown unit (expected B, K/KiB, M/MiB, G/GiB, T/TiB or P/PiB)",
            ));
        }
    };
    let number: u64 = digits.parse().map_err(|_| err("number too large"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| err("too large (more than 16 EiB)"))
}

/// Shows a byte count the way [`parse_size`] reads it back when exact (`1 GiB`, `64 KiB`,
/// `4097 B`), else with one decimal (`1.5 GiB`).
///
/// ```
/// use dagraid_client::size::Size;
/// assert_eq!(Size(1 << 30).to_string(), "1 GiB");
/// assert_eq!(Size(1536 << 20).to_string(), "1.5 GiB");
/// assert_eq!(Size(4097).to_string(), "4.0 KiB");
/// assert_eq!(Size(100).to_string(), "100 B");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let bytes = self.0;
        let mut exp = 0;
        while exp + 1 < UNITS.len() && bytes >= 1u64 << (10 * (exp + 1)) {
            exp += 1;
        }
        let unit = 1u64 << (10 * exp);
        if bytes.is_multiple_of(unit) {
            write!(f, "{} {}", bytes / unit, UNITS[exp])
        } else {
            write!(f, "{:.1} {}", bytes as f64 / unit as f64, UNITS[exp])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("4096B", 4096),
            ("4096 b", 4096),
            ("4KiB", 4096),
            ("4kib", 4096),
            ("4 KiB", 4096),
            ("4k", 4096),
            ("4K", 4096),
            ("512k", 512 << 10),
            ("64KiB", 64 << 10),
            ("1MiB", 1 << 20),
            ("1m", 1 << 20),
            ("1GiB", 1 << 30),
            ("1G", 1 << 30),
            ("2TiB", 2 << 40),
            ("1P", 1 << 50),
            (" 7 ", 7),
            ("16383P", 16383 << 50),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_size(input), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn refused_forms() {
        for input in [
            "",
            " ",
            "KiB",
            "-1",
            "+1",
            "1.5GiB",
            "1,5G",
            "1GB",
            "1kb",
            "1 MB",
            "1x",
            "1 GiBs",
            "1 G iB",
            "0x10",
            "18446744073709551616",
            "16384P",
            "1e3",
        ] {
            assert!(parse_size(input).is_err(), "{input:?} was accepted");
        }
        let err = parse_size("1GB").unwrap_err().to_string();
        assert!(err.contains("ambiguous"), "{err}");
    }

    #[test]
    fn display_round_trips_when_exact() {
        for bytes in [
            0u64,
            1,
            1023,
            1024,
            4096,
            65536,
            1 << 20,
            5 << 30,
            1 << 50,
            3 << 50,
        ] {
            let shown = Size(bytes).to_string();
            assert_eq!(parse_size(&shown), Ok(bytes), "{shown}");
        }
        assert_eq!(Size(u64::MAX).to_string(), "16384.0 PiB");
    }
}
