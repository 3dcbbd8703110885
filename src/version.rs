//! Kubernetes versions and what this release supports.

use serde::Serialize;
use std::fmt;

/// The minors with a pinned catalog; the last is the default.
pub const CATALOG_MINORS: [u32; 3] = [35, 36, 37];
/// The newest patch release pinned per catalog minor.
pub const CATALOG_PATCHES: [(u32, u32); 3] = [(35, 8), (36, 4), (37, 2)];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub fn default_version() -> Version {
        let (minor, patch) = CATALOG_PATCHES[CATALOG_PATCHES.len() - 1];
        Version {
            major: 1,
            minor,
            patch,
        }
    }

    /// Parses `1.36.4`, `v1.36.4` or `1.36` (the pinned patch of that minor).
    pub fn parse(s: &str) -> Result<Version, String> {
        let t = s.trim().strip_prefix('v').unwrap_or(s.trim());
        let parts: Vec<&str> = t.split('.').collect();
        let num = |p: &str| -> Result<u32, String> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("\"{s}\" is not a version like 1.37.2"));
            }
            p.parse()
                .map_err(|_| format!("\"{s}\" is not a version like 1.37.2"))
        };
        match parts.as_slice() {
            [ma, mi] => {
                let (major, minor) = (num(ma)?, num(mi)?);
                let patch = CATALOG_PATCHES
                    .iter()
                    .find(|(m, _)| *m == minor)
                    .map(|(_, p)| *p)
                    .ok_or_else(|| {
                        format!("\"{s}\" names no patch release, and 1.{minor} has no pinned one")
                    })?;
                Ok(Version {
                    major,
                    minor,
                    patch,
                })
            }
            [ma, mi, pa] => Ok(Version {
                major: num(ma)?,
                minor: num(mi)?,
                patch: num(pa)?,
            }),
            _ => Err(format!("\"{s}\" is not a version like 1.37.2")),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn parses_the_forms_users_write() -> R {
        assert_eq!(Version::parse("v1.35.2")?.to_string(), "1.35.2");
        assert_eq!(Version::parse("1.35")?.to_string(), "1.35.8");
        assert_eq!(Version::parse("1.34.2")?.to_string(), "1.34.2");
        assert!(Version::parse("latest").is_err());
        assert!(Version::parse("1.x.2").is_err());
        assert!(Version::parse("1.34").is_err());
        assert_eq!(Version::default_version().to_string(), "1.37.2");
        Ok(())
    }
}
