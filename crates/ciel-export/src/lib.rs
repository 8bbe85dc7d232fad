//! Reversibility (issue 6): a tenant leaves with everything, in an open format, at no cost.
//!
//! - [`export`]: the export directory (docs/export-format.md) from a data directory, streamed,
//!   resumable (`--resume`) and incremental (`--since`);
//! - [`manifest`]: the manifest, the journal, `verify`;
//! - [`import`]: an export into another Ciel (or the same under another tenant);
//! - [`names`]: blob names as file paths;
//! - [`progress`]: a progress bar on terminals, log lines otherwise.
//!
//! - [`keyvault`]: vaults, every secret and key version (`keyvault/` in the format), secret
//!   values and software private keys encrypted to the tenant's recipient ([`recipient`]: compact
//!   JWE, RSA-OAEP-256 + A256GCM).

pub mod erase;
pub mod export;
pub mod import;
pub mod keyvault;
pub mod manifest;
pub mod names;
pub mod progress;
pub mod push;
pub mod recipient;
