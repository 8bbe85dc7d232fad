//! Who is calling, established by authentication and carried to every handler.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PrincipalKind {
    ServicePrincipal,
    User,
    /// A platform operator (the operator directory): no role in any tenant; reaches tenant data
    /// only through an approved lockbox grant.
    Operator,
}

impl PrincipalKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PrincipalKind::ServicePrincipal => "ServicePrincipal",
            PrincipalKind::User => "User",
            PrincipalKind::Operator => "Operator",
        }
    }
}

/// An authenticated caller, from a verified access token.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    pub tenant_id: String,
    pub object_id: String,
    /// Application (client) id the token was issued to.
    pub app_id: String,
    pub kind: PrincipalKind,
    /// User principal name, for users.
    pub upn: Option<String>,
    /// Audience of the token that authenticated the call.
    pub audience: String,
}

impl Caller {
    /// A short human-readable name for logs and the audit record.
    pub fn display(&self) -> String {
        match &self.upn {
            Some(u) => u.clone(),
            None => format!("sp:{}", self.app_id),
        }
    }
}

/// Per-request facts every layer may need.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub correlation_id: String,
    pub client_ip: Option<String>,
    pub caller: Option<Caller>,
}
