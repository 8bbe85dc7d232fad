//! Identity: the directory (tenants, service principals, users and their credentials), the
//! Entra-ID-compatible token service (OIDC discovery, JWKS, the token endpoint) and RBAC
//! evaluation. HTTP framing lives in the binary; this crate gives typed operations and errors.

pub mod audiences;
pub mod device_code;
pub mod devicelogin;
pub mod directory;
pub mod error;
pub mod keys;
pub mod lockbox;
pub mod mfa;
pub mod oidc;
pub mod operators;
pub mod rbac;
pub mod token;

pub use error::IdentityError;

/// Well-known public client ids that may use the password and refresh-token grants without a
/// secret, as Entra allows them: the Azure CLI and Azure PowerShell.
pub const PUBLIC_CLIENTS: &[&str] = &[
    "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
    "1950a258-227b-4e31-a9cf-717495945fc2",
];

/// Access token lifetime, seconds.
pub const ACCESS_TOKEN_LIFETIME: i64 = 3600;
/// Refresh token lifetime, seconds (90 days, Entra's default inactivity window).
pub const REFRESH_TOKEN_LIFETIME: i64 = 90 * 24 * 3600;
/// Clock skew tolerated when validating tokens.
pub const LEEWAY_SECS: u64 = 300;
/// Failed password attempts before a user is locked out, and for how long (SecNumCloud 9.5.b).
pub const LOCKOUT_THRESHOLD: i64 = 5;
pub const LOCKOUT_SECS: i64 = 15 * 60;
