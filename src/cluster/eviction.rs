//! The kubelet's hard eviction thresholds: the kubelet's own defaults with the inventory's
//! `spec.kubelet.evictionHard` over them. Preflight compares the disk signals with each host's
//! free space, so a node that would evict every pod at once is refused before anything runs.

use serde::Serialize;
use std::collections::BTreeMap;

/// The kubelet's defaults on Linux (KubeletConfiguration `evictionHard`). They are written out
/// whole when the inventory changes any: a partial map turns the other signals off.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("imagefs.available", "15%"),
    ("imagefs.inodesFree", "5%"),
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
];

/// Signals the kubelet knows besides the defaults' (it rejects a configuration naming others).
const OTHER_SIGNALS: &[&str] = &[
    "containerfs.available",
    "containerfs.inodesFree",
    "pid.available",
];

/// A threshold: a share of the resource, or an amount of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Threshold {
    Percent(f64),
    Amount(u64),
}

impl Threshold {
    /// `10%`, `2Gi`, `500M`, `1024`: a Kubernetes quantity (binary or decimal suffix) or a
    /// percentage.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            return match p.parse::<f64>() {
                Ok(v) if (0.0..=100.0).contains(&v) => Ok(Threshold::Percent(v)),
                _ => Err(format!("{text:?} is not a percentage from 0% to 100%")),
            };
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, suffix) = t.split_at(split);
        let factor: u64 = match suffix {
            "" => 1,
            "k" => 1000,
            "M" => 1000u64.pow(2),
            "G" => 1000u64.pow(3),
            "T" => 1000u64.pow(4),
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => return Err(format!("{text:?} is not a quantity")),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a quantity"))?;
        n.checked_mul(factor)
            .map(Threshold::Amount)
            .ok_or_else(|| format!("{text:?} is too large"))
    }

    /// The amount this threshold means for a resource of `capacity`.
    pub fn of(self, capacity: u64) -> u64 {
        match self {
            Threshold::Percent(p) => (capacity as f64 * p / 100.0).ceil() as u64,
            Threshold::Amount(a) => a,
        }
    }
}

/// The thresholds every kubelet runs with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Eviction {
    /// signal -> threshold as written (`10%`, `2Gi`)
    pub hard: BTreeMap<String, String>,
    /// Whether the inventory changed any; if not the kubelet keeps its built-in defaults.
    pub customized: bool,
}

impl Default for Eviction {
    fn default() -> Eviction {
        Eviction {
            hard: DEFAULTS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            customized: false,
        }
    }
}

impl Eviction {
    /// The defaults with `overrides` over them; an error names the signal at fault.
    pub fn with(overrides: &BTreeMap<String, String>) -> Result<Eviction, (String, String)> {
        let mut e = Eviction::default();
        for (signal, value) in overrides {
            let known =
                DEFAULTS.iter().any(|(k, _)| k == signal) || OTHER_SIGNALS.contains(&&**signal);
            if !known {
                return Err((
                    signal.clone(),
                    format!("{signal:?} is not an eviction signal"),
                ));
            }
            Threshold::parse(value).map_err(|m| (signal.clone(), m))?;
            e.hard.insert(signal.clone(), value.trim().to_string());
            e.customized = true;
        }
        Ok(e)
    }

    /// The threshold of `signal`, when one is set.
    pub fn threshold(&self, signal: &str) -> Option<Threshold> {
        self.hard.get(signal).and_then(|t| Threshold::parse(t).ok())
    }

    /// The free bytes below which the kubelet evicts pods, on the filesystem holding both its
    /// own files and the runtime's images (one filesystem, as on most hosts): the larger of the
    /// node and image thresholds, with the signal that sets it.
    pub fn disk_floor(&self, capacity: u64) -> Option<(&'static str, u64)> {
        ["imagefs.available", "nodefs.available"]
            .into_iter()
            .filter_map(|s| Some((s, self.threshold(s)?.of(capacity))))
            .max_by_key(|&(_, bytes)| bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_as_the_kubelet_reads_them() {
        assert_eq!(Threshold::parse("10%"), Ok(Threshold::Percent(10.0)));
        assert_eq!(Threshold::parse("2Gi"), Ok(Threshold::Amount(2 << 30)));
        assert_eq!(Threshold::parse("500M"), Ok(Threshold::Amount(500_000_000)));
        assert_eq!(Threshold::parse("100"), Ok(Threshold::Amount(100)));
        assert!(Threshold::parse("101%").is_err());
        assert!(Threshold::parse("2GB").is_err());
        assert!(Threshold::parse("lots").is_err());
        assert!(Threshold::parse("").is_err());
        assert_eq!(Threshold::Percent(15.0).of(1000), 150);
    }

    #[test]
    fn overrides_keep_the_other_defaults() -> Result<(), Box<dyn std::error::Error>> {
        let e = Eviction::with(&BTreeMap::from([(
            "imagefs.available".to_string(),
            "2Gi".to_string(),
        )]))
        .map_err(|e| format!("{e:?}"))?;
        assert!(e.customized);
        assert_eq!(e.hard["imagefs.available"], "2Gi");
        assert_eq!(e.hard["nodefs.available"], "10%");
        assert_eq!(e.hard.len(), DEFAULTS.len());
        assert!(!Eviction::default().customized);
        Ok(())
    }

    #[test]
    fn unknown_signals_and_bad_values_are_named() {
        let bad = |k: &str, v: &str| {
            Eviction::with(&BTreeMap::from([(k.to_string(), v.to_string())])).unwrap_err()
        };
        assert_eq!(bad("disk.available", "1Gi").0, "disk.available");
        assert!(bad("nodefs.available", "ten").1.contains("not a quantity"));
    }

    #[test]
    fn the_disk_floor_is_the_larger_threshold() -> Result<(), Box<dyn std::error::Error>> {
        let gib = 1u64 << 30;
        // defaults: 15% of images beats 10% of the node
        assert_eq!(
            Eviction::default().disk_floor(100 * gib),
            Some(("imagefs.available", 15 * gib))
        );
        let e = Eviction::with(&BTreeMap::from([
            ("imagefs.available".to_string(), "1Gi".to_string()),
            ("nodefs.available".to_string(), "2Gi".to_string()),
        ]))
        .map_err(|e| format!("{e:?}"))?;
        assert_eq!(e.disk_floor(100 * gib), Some(("nodefs.available", 2 * gib)));
        Ok(())
    }
}
