//! The error as it leaves Ciel. Every layer has its own typed error; each converts into
//! `ApiError` at the edge, which chooses the status, the Azure error code and the message the
//! client may see. Internal context stays in the layer's error and goes to the log only.

use http::StatusCode;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Azure's error code, e.g. `ResourceGroupNotFound`.
    pub code: String,
    /// The message the client sees. Never carries secrets or internal paths.
    pub message: String,
    /// Optional `target` field of the ARM error envelope.
    pub target: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            target: None,
        }
    }
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn unauthorized(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn forbidden(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The server encountered an internal error. The request id identifies it in the server log.",
        )
    }
    pub fn feature_not_supported(what: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "FeatureNotSupported",
            format!("{what} is not supported by this Ciel deployment yet."),
        )
    }

    /// The ARM / Graph envelope: `{"error":{"code","message"[,"target"]}}`.
    pub fn arm_body(&self) -> serde_json::Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(t) = &self.target {
            e["target"] = json!(t);
        }
        json!({ "error": e })
    }

    /// The OAuth2 / Entra token-endpoint envelope.
    pub fn oauth_body(&self, error_codes: &[u32], trace_id: &str) -> serde_json::Value {
        json!({
            "error": self.code,
            "error_description": self.message,
            "error_codes": error_codes,
            "timestamp": crate::time::now_rfc3339(),
            "trace_id": trace_id,
            "correlation_id": trace_id,
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}
