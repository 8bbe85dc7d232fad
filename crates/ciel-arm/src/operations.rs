//! Long-running operations. Quick work is answered synchronously; slow work runs in the
//! background behind an operation record, answered 202 with `Location` and
//! `Azure-AsyncOperation` and `Retry-After: 1` (never 0: clients treat 0 as absent and sleep 30 s).

use crate::error::{ArmError, ArmResult};
use crate::{api_version, clip, ArmResponse, Ctx};
use ciel_core::ApiError;
use ciel_store::{Found, Operation};
use http::{HeaderValue, StatusCode};
use serde_json::json;
use std::future::Future;

pub const RETRY_AFTER_SECS: &str = "1";

/// Records an operation and runs `work` in the background; its result (a resource JSON, or
/// none) or its error is stored on the operation.
pub async fn start<F>(ctx: &Ctx<'_>, resource_id: &str, work: F) -> ArmResult<Operation>
where
    F: Future<Output = ArmResult<Option<serde_json::Value>>> + Send + 'static,
{
    let op = Operation {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: ctx.caller.tenant_id.clone(),
        status: "InProgress".into(),
        resource_id: resource_id.to_string(),
        result: None,
        error: None,
        created: ciel_core::time::now_unix(),
        finished: None,
    };
    let o = op.clone();
    ciel_store::run(&ctx.arm.store, move |s| s.put_operation(&o)).await?;
    let store = ctx.arm.store.clone();
    let mut done = op.clone();
    tokio::spawn(async move {
        let outcome = work.await;
        done.finished = Some(ciel_core::time::now_unix());
        match outcome {
            Ok(result) => {
                done.status = "Succeeded".into();
                done.result = result;
            }
            Err(e) => {
                let api = e.into_api();
                done.status = "Failed".into();
                done.error = Some(json!({"code": api.code, "message": api.message}));
            }
        }
        let d = done.clone();
        if let Err(e) = ciel_store::run(&store, move |s| s.put_operation(&d)).await {
            tracing::error!(error = %e, operation = %done.id, "could not record the end of an operation");
        }
    });
    Ok(op)
}

fn location(ctx: &Ctx<'_>, sub: &str, id: &str) -> String {
    let v = ctx.req.api_version().unwrap_or("2024-11-01");
    format!(
        "{}subscriptions/{sub}/operationresults/{id}?api-version={v}",
        ctx.base()
    )
}

/// 202 Accepted pointing at the operation.
pub fn accepted(ctx: &Ctx<'_>, sub: &str, op: &Operation) -> ArmResponse {
    let mut r = ArmResponse::empty(StatusCode::ACCEPTED);
    let loc = location(ctx, sub, &op.id);
    if let Ok(v) = HeaderValue::from_str(&loc) {
        r.headers.insert(http::header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{loc}&status=1")) {
        r.headers.insert("azure-asyncoperation", v);
    }
    r.headers.insert(
        http::header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    r
}

/// `GET /subscriptions/S/operationresults/{id}`: 202 while running; when done the final answer
/// (200 with the resource, or 204), or the error. With `status=1` (the Azure-AsyncOperation
/// form) the status document instead.
pub async fn get_result(ctx: &Ctx<'_>, sub: &str, id: &str) -> ArmResult<ArmResponse> {
    api_version::check(
        ctx.req.api_version(),
        api_version::RESOURCES,
        "Microsoft.Resources/operationresults",
    )?;
    let oid = id.to_string();
    let op = ciel_store::run(&ctx.arm.store, move |s| s.get_operation(&oid).found()).await?;
    let op = match op {
        Some(o) if o.tenant_id == ctx.caller.tenant_id => o,
        _ => {
            return Err(ApiError::not_found(
                "OperationNotFound",
                format!("The operation '{}' could not be found.", clip(id)),
            )
            .into())
        }
    };
    if ctx.req.q("status").is_some() {
        let mut r = ArmResponse::json(
            StatusCode::OK,
            json!({
                "id": format!("/subscriptions/{sub}/operationresults/{}", op.id), "name": op.id, "status": op.status,
                "startTime": ciel_core::time::unix_to_rfc3339(op.created),
                "endTime": op.finished.map(ciel_core::time::unix_to_rfc3339), "error": op.error,
            }),
        );
        if op.status == "InProgress" {
            r.headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        return Ok(r);
    }
    match op.status.as_str() {
        "InProgress" => Ok(accepted(ctx, sub, &op)),
        "Succeeded" => Ok(match op.result {
            Some(v) => ArmResponse::json(StatusCode::OK, v),
            None => ArmResponse::empty(StatusCode::OK),
        }),
        _ => {
            let e = op.error.unwrap_or_else(
                || json!({"code": "OperationFailed", "message": "The operation failed."}),
            );
            Err(ArmError::Api(ApiError::new(
                StatusCode::BAD_REQUEST,
                e["code"].as_str().unwrap_or("OperationFailed"),
                e["message"].as_str().unwrap_or("The operation failed."),
            )))
        }
    }
}
