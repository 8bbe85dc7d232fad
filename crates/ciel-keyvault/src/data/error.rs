//! Errors of the data plane, rendered as Key Vault's JSON envelope
//! `{"error": {"code", "message", "innererror": {"code"}}}` only at the edge.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// A client error with Key Vault's code and, optionally, an inner code.
    #[error("{code}: {message}")]
    Client {
        status: StatusCode,
        code: &'static str,
        inner: Option<&'static str>,
        message: String,
    },
    /// 401 with the bearer challenge (set by the service, which knows the vault's tenant).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("store: {0}")]
    Store(#[from] ciel_store::StoreError),
    #[error("custody: {0}")]
    Custody(#[from] crate::custody::CustodyError),
    #[error("internal: {0}")]
    Internal(String),
}

pub type KvResult<T> = Result<T, KvError>;

impl KvError {
    pub fn bad(message: impl Into<String>) -> Self {
        KvError::Client {
            status: StatusCode::BAD_REQUEST,
            code: "BadParameter",
            inner: None,
            message: message.into(),
        }
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        KvError::Client {
            status: StatusCode::NOT_FOUND,
            code,
            inner: None,
            message: message.into(),
        }
    }
    pub fn forbidden(inner: &'static str, message: impl Into<String>) -> Self {
        KvError::Client {
            status: StatusCode::FORBIDDEN,
            code: "Forbidden",
            inner: Some(inner),
            message: message.into(),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        KvError::Client {
            status: StatusCode::CONFLICT,
            code,
            inner: None,
            message: message.into(),
        }
    }
    pub fn not_supported(what: &str) -> Self {
        KvError::Client {
            status: StatusCode::BAD_REQUEST,
            code: "FeatureNotSupported",
            inner: None,
            message: format!("{what} is not available in this Ciel deployment yet."),
        }
    }

    /// Status, code, inner code and message for the wire. Internal detail goes to the log only.
    pub fn wire(&self) -> (StatusCode, &'static str, Option<&'static str>, String) {
        match self {
            KvError::Client {
                status,
                code,
                inner,
                message,
            } => (*status, code, *inner, message.clone()),
            KvError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "Unauthorized", None, m.clone()),
            KvError::Custody(crate::custody::CustodyError::AlgorithmMismatch(a)) => (
                StatusCode::BAD_REQUEST,
                "BadParameter",
                None,
                format!("The algorithm '{a}' does not fit this key's type or size."),
            ),
            KvError::Custody(crate::custody::CustodyError::Decrypt) => (
                StatusCode::BAD_REQUEST,
                "BadParameter",
                None,
                "The ciphertext could not be decrypted with this key and algorithm.".into(),
            ),
            KvError::Custody(crate::custody::CustodyError::Invalid(m)) => {
                (StatusCode::BAD_REQUEST, "BadParameter", None, m.clone())
            }
            KvError::Custody(crate::custody::CustodyError::Unsupported(m)) => (
                StatusCode::BAD_REQUEST,
                "BadParameter",
                None,
                format!("Not supported: {m}"),
            ),
            other => {
                tracing::error!(error = %other, "internal error in Key Vault");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    None,
                    "The service met an internal error; the request changed nothing.".into(),
                )
            }
        }
    }
}

impl IntoResponse for KvError {
    fn into_response(self) -> Response {
        let (status, code, inner, message) = self.wire();
        let mut e = json!({"code": code, "message": message});
        if let Some(i) = inner {
            e["innererror"] = json!({"code": i});
        }
        (status, axum::Json(json!({ "error": e }))).into_response()
    }
}
