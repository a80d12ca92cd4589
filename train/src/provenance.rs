//! What decides a run's bytes besides its config and seed: where it ran and what built it.
//!
//! Floating-point results depend on the order of every sum. That order is fixed by the
//! backend, the thread count (how work is split), the compiler and burn (which kernels exist),
//! the CPU's vector features (which kernels are dispatched to) and the L1 data cache (how the
//! GEMM blocks its inner dimension). Two runs that agree on all of these write the same bytes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub backend: String,
    pub threads: usize,
    pub burn: String,
    pub rustc: String,
    /// Architecture and operating system, e.g. `x86_64-linux`.
    pub target: String,
    /// Those of the vector features the kernels dispatch on that this CPU has.
    pub cpu_features: Vec<String>,
    /// Size, ways and line size of the L1 data cache, as the GEMM reads them.
    pub l1d_cache: String,
}

impl Provenance {
    /// This process, training on `backend` with `threads` threads.
    pub fn current(backend: &str, threads: usize) -> Self {
        Self {
            backend: backend.into(),
            threads,
            burn: env!("TRAIN_BURN_VERSION").into(),
            rustc: env!("TRAIN_RUSTC_VERSION").into(),
            target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
            cpu_features: vector_features(),
            l1d_cache: l1d_cache(),
        }
    }

    /// One `field: recorded vs here` line per difference from `recorded`; empty when the two
    /// runs would write the same bytes.
    pub fn differences(&self, recorded: &Provenance) -> Vec<String> {
        let mut out = Vec::new();
        let mut compare = |name: &str, recorded: String, here: String| {
            if recorded != here {
                out.push(format!("{name}: {recorded} there, {here} here"));
            }
        };
        compare("backend", recorded.backend.clone(), self.backend.clone());
        compare("threads", recorded.threads.to_string(), self.threads.to_string());
        compare("burn", recorded.burn.clone(), self.burn.clone());
        compare("rustc", recorded.rustc.clone(), self.rustc.clone());
        compare("target", recorded.target.clone(), self.target.clone());
        compare("cpu features", recorded.cpu_features.join(" "), self.cpu_features.join(" "));
        compare("L1d cache", recorded.l1d_cache.clone(), self.l1d_cache.clone());
        out
    }
}

/// The vector features burn's GEMM and SIMD kernels and this project's own dispatch on, those
/// this CPU has.
fn vector_features() -> Vec<String> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let features = [
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("avx512f", has!("avx512f")),
            ("avx512bw", has!("avx512bw")),
            ("avx512cd", has!("avx512cd")),
            ("avx512dq", has!("avx512dq")),
            ("avx512vl", has!("avx512vl")),
        ];
        features.iter().filter(|(_, present)| *present).map(|(name, _)| name.to_string()).collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// `32K 8-way 64B` from Linux's sysfs, or `unknown`.
fn l1d_cache() -> String {
    let read = |index: usize, file: &str| {
        std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{index}/{file}"))
            .map(|s| s.trim().to_string())
            .ok()
    };
    (0..8)
        .find(|&i| read(i, "level").as_deref() == Some("1") && read(i, "type").as_deref() == Some("Data"))
        .and_then(|i| {
            Some(format!(
                "{} {}-way {}B",
                read(i, "size")?,
                read(i, "ways_of_associativity")?,
                read(i, "coherency_line_size")?
            ))
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_difference_and_nothing_else() {
        let here = Provenance::current("flex", 2);
        assert!(here.differences(&here).is_empty());
        assert!(here.burn.starts_with("0.22"), "{}", here.burn);
        assert!(here.rustc.starts_with("rustc "), "{}", here.rustc);
        let other = Provenance { threads: 4, cpu_features: vec!["avx2".into()], ..here.clone() };
        let differences = here.differences(&other);
        assert_eq!(differences.len(), 2, "{differences:?}");
        assert!(differences[0].starts_with("threads: 4 there, 2 here"), "{differences:?}");
        assert!(differences[1].starts_with("cpu features: avx2 there"), "{differences:?}");
    }
}
