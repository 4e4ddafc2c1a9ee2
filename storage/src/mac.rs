//! MAC addresses: how terminals are identified at boot.
//!
//! Terminals and operators write MACs in three common forms, any case: `52:54:00:12:34:56`,
//! `52-54-00-12-34-56` and `525400123456`. [`Mac::parse`] accepts all of them; [`Mac`]'s `Display` gives the one
//! canonical form (lower-case, colon-separated) used as the key of the terminal index.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

/// Why a text is not a MAC address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a MAC address (use 52:54:00:12:34:56, 52-54-00-12-34-56 or 525400123456)")]
pub struct MacParseError(pub String);

impl Mac {
    /// Parses any of the accepted forms.
    pub fn parse(text: &str) -> Result<Mac, MacParseError> {
        let fail = || MacParseError(text.chars().take(64).collect());
        let bytes = text.as_bytes();
        let hex: Vec<u8> = match bytes.len() {
            12 => bytes.to_vec(),
            17 => {
                let separator = bytes[2];
                if separator != b':' && separator != b'-' {
                    return Err(fail());
                }
                let mut digits = Vec::with_capacity(12);
                for (i, &b) in bytes.iter().enumerate() {
                    if i % 3 == 2 {
                        if b != separator {
                            return Err(fail());
                        }
                    } else {
                        digits.push(b);
                    }
                }
                digits
            }
            _ => return Err(fail()),
        };
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(fail());
        }
        let mut mac = [0u8; 6];
        for (i, pair) in hex.chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).map_err(|_| fail())?;
            mac[i] = u8::from_str_radix(pair, 16).map_err(|_| fail())?;
        }
        Ok(Mac(mac))
    }
}

impl FromStr for Mac {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mac::parse(s)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_forms_in_any_case() {
        let want = Mac([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        for text in ["52:54:00:ab:cd:ef", "52-54-00-AB-CD-EF", "525400AbCdEf"] {
            assert_eq!(Mac::parse(text), Ok(want), "{text}");
        }
        assert_eq!(want.to_string(), "52:54:00:ab:cd:ef");
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "",
            "52:54:00:ab:cd",
            "52:54-00:ab:cd:ef",
            "52:54:00:ab:cd:eg",
            "5254000abcdef0",
            "+2:54:00:ab:cd:ef",
            "é2:54:00:ab:cd:e",
        ] {
            assert!(Mac::parse(text).is_err(), "{text}");
        }
    }
}
