//! Reversibility (issue 6): a tenant leaves with everything, in an open format, at no cost.
//!
//! - [`export`]: the export directory (docs/export-format.md) from a data directory, streamed,
//!   resumable (`--resume`) and incremental (`--since`);
//! - [`manifest`]: the manifest, the journal, `verify`;
//! - [`import`]: an export into another Ciel (or the same under another tenant);
//! - [`names`]: blob names as file paths;
//! - [`progress`]: a progress bar on terminals, log lines otherwise.
//!
//! Key Vault (vaults, secrets, keys) plugs in as a `keyvault/` section of the format: see
//! docs/export-format.md for the planned layout and recipient encryption; the hook points are
//! marked `KEYVAULT:` in this crate.

pub mod erase;
pub mod export;
pub mod import;
pub mod manifest;
pub mod names;
pub mod progress;
pub mod push;
