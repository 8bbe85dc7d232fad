//! Storage errors on the wire: XML `<Error><Code/><Message/></Error>` and `x-ms-error-code`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

#[derive(Debug, Clone)]
pub struct BlobError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl BlobError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "The server encountered an internal error. Please retry the request.",
        )
    }
    pub fn not_supported(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "FeatureNotSupported",
            format!("{what} is not supported by this Ciel deployment yet."),
        )
    }
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn auth_failed(detail: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            format!("Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.\nAuthenticationErrorDetail:{detail}"),
        )
    }
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        )
    }
    pub fn container_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ContainerNotFound",
            "The specified container does not exist.",
        )
    }
    pub fn blob_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BlobNotFound",
            "The specified blob does not exist.",
        )
    }
}

fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

impl IntoResponse for BlobError {
    fn into_response(self) -> Response {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>",
            self.code,
            escape(&self.message)
        );
        let mut r = (self.status, body).into_response();
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
        r.headers_mut()
            .insert("x-ms-error-code", HeaderValue::from_static(self.code));
        r
    }
}

impl From<ciel_store::StoreError> for BlobError {
    fn from(e: ciel_store::StoreError) -> Self {
        tracing::error!(error = %e, "blob store error");
        BlobError::internal()
    }
}

impl From<crate::blobstore::ObjectError> for BlobError {
    fn from(e: crate::blobstore::ObjectError) -> Self {
        tracing::error!(error = %e, "blob object error");
        BlobError::internal()
    }
}

pub type BlobResult<T> = Result<T, BlobError>;
