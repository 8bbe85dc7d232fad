//! The custody backend as configuration: a type `ciel up` can read from its TOML and a
//! constructor that opens the backend.
//!
//! ```toml
//! [keyvault.custody]
//! backend = "software"          # the default: keys sealed under the platform master key
//!
//! [keyvault.custody]
//! backend = "pkcs11"
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token_label = "ciel"
//! pin_env = "CIEL_HSM_PIN"      # or pin_file = "/etc/ciel/hsm.pin"
//! ```

use super::pkcs11::{Pkcs11Config, Pkcs11Custody};
use super::software::SoftwareCustody;
use super::{Custody, CustodyResult};
use ciel_core::seal::MasterKey;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyConfig {
    #[serde(flatten)]
    pub backend: CustodyBackend,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum CustodyBackend {
    #[default]
    Software,
    Pkcs11(Pkcs11Config),
}

/// Opens the configured backend. The master key is used by the software backend only (an HSM
/// wraps vault keys under its own AES key), but is always given so that switching needs no other
/// change. Opening a PKCS#11 backend loads the module and logs in: call it on a blocking thread
/// at start, and fail the start if it fails.
pub fn open(config: &CustodyConfig, master: Arc<MasterKey>) -> CustodyResult<Arc<dyn Custody>> {
    Ok(match &config.backend {
        CustodyBackend::Software => Arc::new(SoftwareCustody::new(master)),
        CustodyBackend::Pkcs11(c) => Arc::new(Pkcs11Custody::open(c)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custody::PinSource;
    #[test]
    fn parses_from_toml_shapes() {
        let c: CustodyConfig = serde_json::from_str(r#"{"backend":"software"}"#).unwrap();
        assert_eq!(c.backend, CustodyBackend::Software);
        let c: CustodyConfig = serde_json::from_str(
            r#"{"backend":"pkcs11","module":"/m.so","token_label":"ciel","pin_env":"PIN"}"#,
        )
        .unwrap();
        assert_eq!(
            c.backend,
            CustodyBackend::Pkcs11(Pkcs11Config {
                module: "/m.so".into(),
                token_label: "ciel".into(),
                pin: PinSource::Env("PIN".into()),
            })
        );
        let c: CustodyConfig = serde_json::from_str(
            r#"{"backend":"pkcs11","module":"/m.so","token_label":"ciel","pin_file":"/p"}"#,
        )
        .unwrap();
        assert!(matches!(
            c.backend,
            CustodyBackend::Pkcs11(Pkcs11Config {
                pin: PinSource::File(_),
                ..
            })
        ));
    }
}
