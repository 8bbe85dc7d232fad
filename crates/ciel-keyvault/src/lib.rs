//! Microsoft.KeyVault: vaults as an ARM resource provider, the secrets and keys data plane at
//! `https://{vault}.vault.{domain}`, and key custody behind one interface (`custody`) with a
//! software backend and a PKCS#11 HSM backend.

pub mod custody;
