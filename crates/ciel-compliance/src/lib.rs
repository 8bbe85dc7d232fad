//! SecNumCloud 3.2 evidence for the operator of a Ciel deployment.
//!
//! - [`catalogue`]: every requirement identifier of SecNumCloud 3.2 (chapters 5 to 19) with a
//!   short French and English paraphrase, its kind, and the checks that bring evidence for it.
//!   The data is `catalogue/secnumcloud-3.2.toml`, embedded in the binary.
//! - [`checks`]: checks run against a live deployment (its data directory, through the store
//!   APIs, and its listeners, over the network). Each keeps its evidence as JSON with timestamps.
//!   A check that needs a capability Ciel does not have yet says "not yet checkable", never pass.
//! - [`attest`]: the operator's attestations for what only people and documents can show.
//! - [`report`]: per requirement pass / fail / attested / missing / not yet checkable, a summary
//!   by chapter, the diff of two reports; [`html`] renders it for an auditor.
//!
//! This crate reads the store through `ciel_store::MetadataStore` only (no SQL here).

pub mod attest;
pub mod catalogue;
pub mod checks;
pub mod html;
pub mod inventory;
pub mod report;
pub mod tls;

pub use catalogue::{Catalogue, Kind, Requirement};
pub use checks::{CheckResult, CheckStatus, Context};
pub use report::{Report, RequirementStatus};
pub use tls::TlsTarget;

/// The framework identifier used in attestations and reports.
pub const FRAMEWORK: &str = "secnumcloud-3.2";

/// The api-version of Ciel's own compliance API (same as Ciel's other own APIs).
pub const API_VERSION: &str = "2026-11-01";

#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Store(#[from] ciel_store::StoreError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
