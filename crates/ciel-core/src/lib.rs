//! Shared vocabulary of Ciel. Nothing here does I/O: this crate is the bottom of the
//! dependency graph and every other crate may use it.

pub mod audit;
pub mod config;
pub mod context;
pub mod error;
pub mod names;
pub mod region;
pub mod resource_id;
pub mod seal;
pub mod time;

pub use context::{Caller, PrincipalKind, RequestContext};
pub use error::ApiError;
pub use resource_id::ResourceId;
