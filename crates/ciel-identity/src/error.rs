use crate::device_code::PollError;
use ciel_core::ApiError;
use http::StatusCode;

/// Errors of the identity layer. `code` values for token errors follow Entra's OAuth2 codes, and
/// each carries its AADSTS number, which the CLI shows to the user.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unsupported grant type {0}")]
    UnsupportedGrantType(String),
    #[error("invalid client: {0}")]
    InvalidClient(String),
    #[error("invalid grant: {0}")]
    InvalidGrant(String),
    #[error("invalid scope: {0}")]
    InvalidScope(String),
    #[error("tenant not found: {0}")]
    TenantNotFound(String),
    #[error("account locked")]
    Locked,
    /// The user has a second factor: the password alone does not sign in.
    #[error("multi-factor authentication required")]
    MfaRequired,
    /// The tenant requires a second factor of this user, who has none yet.
    #[error("multi-factor enrolment required")]
    MfaEnrolmentRequired,
    /// A device-code poll that gives no token.
    #[error("device code: {0:?}")]
    Device(crate::device_code::PollError),
    #[error("token rejected: {0}")]
    TokenRejected(TokenRejection),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// Why a bearer token was refused; each maps to the ARM error code Azure uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
}

impl std::fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl From<ciel_store::StoreError> for IdentityError {
    fn from(e: ciel_store::StoreError) -> Self {
        match e {
            ciel_store::StoreError::NotFound => IdentityError::NotFound("record".into()),
            ciel_store::StoreError::Conflict(w) => IdentityError::Conflict(w),
            other => IdentityError::Internal(other.to_string()),
        }
    }
}

impl From<ciel_audit::AuditError> for IdentityError {
    fn from(e: ciel_audit::AuditError) -> Self {
        IdentityError::Internal(e.to_string())
    }
}

impl IdentityError {
    /// The AADSTS number Entra uses for this error.
    pub fn aadsts(&self) -> u32 {
        match self {
            IdentityError::InvalidRequest(_) => 900144,
            IdentityError::UnsupportedGrantType(_) => 70003,
            IdentityError::InvalidClient(_) => 7000215,
            IdentityError::InvalidGrant(_) => 50126,
            IdentityError::InvalidScope(_) => 500011,
            IdentityError::TenantNotFound(_) => 90002,
            IdentityError::Locked => 50053,
            IdentityError::MfaRequired => 50076,
            IdentityError::MfaEnrolmentRequired => 50079,
            IdentityError::Device(p) => match p {
                PollError::Pending | PollError::SlowDown => 70016,
                PollError::Expired => 70020,
                PollError::Declined => 70000,
                PollError::BadCode => 70019,
            },
            _ => 0,
        }
    }

    /// Entra's `suberror`, which tells MSAL whether an interactive sign-in resolves the error.
    pub fn suberror(&self) -> Option<&'static str> {
        match self {
            IdentityError::MfaRequired => Some("basic_action"),
            IdentityError::MfaEnrolmentRequired => Some("additional_action"),
            _ => None,
        }
    }

    /// OAuth2 wire form for the token endpoint.
    pub fn to_oauth(&self) -> ApiError {
        let n = self.aadsts();
        let (status, code, msg) = match self {
            IdentityError::InvalidRequest(m) => {
                (StatusCode::BAD_REQUEST, "invalid_request", m.clone())
            }
            IdentityError::UnsupportedGrantType(g) => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("The grant type '{g}' is not supported."),
            ),
            IdentityError::InvalidClient(m) => {
                (StatusCode::UNAUTHORIZED, "invalid_client", m.clone())
            }
            IdentityError::InvalidGrant(m) => (StatusCode::BAD_REQUEST, "invalid_grant", m.clone()),
            IdentityError::InvalidScope(m) => (StatusCode::BAD_REQUEST, "invalid_scope", m.clone()),
            IdentityError::TenantNotFound(t) => (
                StatusCode::BAD_REQUEST,
                "invalid_tenant",
                format!("Tenant '{t}' not found. Check the tenant identifier."),
            ),
            IdentityError::Locked => (
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The account is locked after repeated sign-in failures. Try again later."
                    .to_string(),
            ),
            IdentityError::MfaRequired => (
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access this resource. Sign in interactively: az login --use-device-code.".to_string(),
            ),
            IdentityError::MfaEnrolmentRequired => (
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "Your organization requires you to set up multi-factor authentication. Sign in with az login --use-device-code to register a second factor.".to_string(),
            ),
            IdentityError::Device(p) => (
                StatusCode::BAD_REQUEST,
                match p {
                    PollError::Pending => "authorization_pending",
                    PollError::SlowDown => "slow_down",
                    PollError::Expired => "expired_token",
                    PollError::Declined => "authorization_declined",
                    PollError::BadCode => "bad_verification_code",
                },
                match p {
                    PollError::Pending => "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                    PollError::SlowDown => "OAuth 2.0 device flow error. Polling too often: wait the interval between polls.",
                    PollError::Expired => "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
                    PollError::Declined => "The user declined or could not complete the sign-in.",
                    PollError::BadCode => "The provided value for the input parameter 'device_code' is not valid.",
                }
                .to_string(),
            ),
            IdentityError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            IdentityError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            IdentityError::TokenRejected(_) | IdentityError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The token service failed.".to_string(),
            ),
        };
        ApiError::new(
            status,
            code,
            if n != 0 {
                format!("AADSTS{n}: {msg}")
            } else {
                msg
            },
        )
    }

    /// ARM / Graph wire form (for bearer-token failures on the resource side).
    pub fn to_arm(&self) -> ApiError {
        match self {
            IdentityError::TokenRejected(r) => {
                let (code, msg) = match r {
                    TokenRejection::Missing => (
                        "AuthenticationFailed",
                        "Authentication failed. The 'Authorization' header is missing.",
                    ),
                    TokenRejection::Malformed => (
                        "InvalidAuthenticationToken",
                        "The access token is invalid: it is not a well-formed RS256 JSON Web Token.",
                    ),
                    TokenRejection::BadSignature => (
                        "InvalidAuthenticationToken",
                        "The access token is invalid: its signature does not verify against this cloud's signing keys.",
                    ),
                    TokenRejection::Expired => ("ExpiredAuthenticationToken", "The access token has expired."),
                    TokenRejection::NotYetValid => ("InvalidAuthenticationToken", "The access token is not yet valid."),
                    TokenRejection::WrongAudience => (
                        "InvalidAuthenticationTokenAudience",
                        "The access token has been obtained for the wrong audience or resource.",
                    ),
                    TokenRejection::WrongIssuer => (
                        "InvalidAuthenticationTokenTenant",
                        "The access token is from the wrong issuer: it was not issued by this cloud for the tenant it names.",
                    ),
                };
                ApiError::unauthorized(code, msg)
            }
            IdentityError::NotFound(m) => ApiError::not_found("NotFound", m.clone()),
            IdentityError::Conflict(m) => ApiError::conflict("Conflict", m.clone()),
            IdentityError::InvalidRequest(m) => ApiError::bad_request("BadRequest", m.clone()),
            _ => ApiError::internal(),
        }
    }
}
