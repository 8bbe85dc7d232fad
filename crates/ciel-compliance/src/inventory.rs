//! The software inventory of the running build (SecNumCloud 8.1.b): Ciel's version, the
//! compiler that built it, and every crate compiled in, read from the workspace Cargo.lock
//! embedded at build time (so it is the lock file of this build, not of a checkout nearby).

use serde::Serialize;

const CARGO_LOCK: &str = include_str!("../../../Cargo.lock");

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// "crates.io", "workspace", or the source URL as Cargo.lock gives it.
    pub source: String,
    pub checksum: Option<String>,
}

/// Parses the `[[package]]` tables of a Cargo.lock (name, version, source, checksum).
pub fn packages_of(lock: &str) -> Vec<Package> {
    let mut out = vec![];
    let mut cur: Option<Package> = None;
    let unq = |v: &str| v.trim().trim_matches('"').to_string();
    for line in lock.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            out.extend(cur.take());
            cur = Some(Package {
                name: String::new(),
                version: String::new(),
                source: "workspace".into(),
                checksum: None,
            });
            continue;
        }
        let Some(p) = cur.as_mut() else { continue };
        if let Some((k, v)) = line.split_once(" = ") {
            match k {
                "name" => p.name = unq(v),
                "version" => p.version = unq(v),
                "source" => {
                    let s = unq(v);
                    p.source = if s == "registry+https://github.com/rust-lang/crates.io-index" {
                        "crates.io".into()
                    } else {
                        s
                    }
                }
                "checksum" => p.checksum = Some(unq(v)),
                _ => {}
            }
        }
    }
    out.extend(cur);
    out
}

/// The inventory of this build.
pub fn this_build() -> serde_json::Value {
    let packages = packages_of(CARGO_LOCK);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    serde_json::json!({
        "software": {"name": "Ciel", "version": env!("CARGO_PKG_VERSION")},
        "compiler": env!("CIEL_RUSTC_VERSION"),
        "buildProfile": env!("CIEL_BUILD_PROFILE"),
        "target": env!("CIEL_BUILD_TARGET"),
        "cargoLockSha256": crate::tls::sha256_hex(CARGO_LOCK.as_bytes()),
        "host": {"operatingSystem": os, "kernel": kernel},
        "packageCount": packages.len(),
        "thirdPartyCount": packages.iter().filter(|p| p.source != "workspace").count(),
        "packages": packages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_embedded_lock_file() {
        let p = packages_of(CARGO_LOCK);
        assert!(p
            .iter()
            .any(|p| p.name == "ciel" && p.source == "workspace"));
        assert!(p
            .iter()
            .any(|p| p.name == "rustls" && p.source == "crates.io" && p.checksum.is_some()));
        assert!(p
            .iter()
            .all(|p| !p.name.is_empty() && !p.version.is_empty()));
        let v = this_build();
        assert!(v["compiler"].as_str().unwrap_or("").starts_with("rustc"));
    }
}
