//! Content digests as upstream publishes them: `sha256:<hex>` or `sha512:<hex>`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algo {
    Sha256,
    Sha512,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    pub algo: Algo,
    pub hex: String,
}

impl Digest {
    /// Parses `sha256:<64 hex>` or `sha512:<128 hex>`; a bare 64-hex string is sha256.
    pub fn parse(s: &str) -> Result<Digest, String> {
        let s = s.trim();
        let (algo, hex) = match s.split_once(':') {
            Some(("sha256", h)) => (Algo::Sha256, h),
            Some(("sha512", h)) => (Algo::Sha512, h),
            Some((other, _)) => {
                return Err(format!(
                    "unknown digest algorithm \"{other}\" (use sha256: or sha512:)"
                ));
            }
            None => (Algo::Sha256, s),
        };
        let hex = hex.to_ascii_lowercase();
        if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "\"{s}\" is not a {} digest ({} hex characters)",
                algo.name(),
                algo.hex_len()
            ));
        }
        Ok(Digest { algo, hex })
    }

    pub fn sha256(hex: &str) -> Digest {
        Digest {
            algo: Algo::Sha256,
            hex: hex.to_string(),
        }
    }

    /// Hashes a file with this digest's algorithm.
    pub fn of_file(algo: Algo, path: &Path) -> std::io::Result<Digest> {
        let mut f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut hasher = Hasher::new(algo);
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.finish())
    }

    pub fn of_bytes(algo: Algo, data: &[u8]) -> Digest {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finish()
    }
}

/// Incremental hashing in either algorithm.
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algo: Algo) -> Hasher {
        match algo {
            Algo::Sha256 => Hasher::Sha256(Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algo: Algo::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algo: Algo::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn parses_and_prints_both_algorithms() -> R {
        let d = Digest::of_bytes(Algo::Sha256, b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&d.to_string())?, d);
        assert_eq!(Digest::parse(&d.hex.to_uppercase())?, d);
        let d5 = Digest::of_bytes(Algo::Sha512, b"abc");
        assert_eq!(Digest::parse(&d5.to_string())?, d5);
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("md5:900150983cd24fb0d6963f7d28e17f72").is_err());
        Ok(())
    }
}
