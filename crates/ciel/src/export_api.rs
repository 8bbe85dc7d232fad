//! `Ciel.Export`: the tenant export for a tenant administrator, through the API
//! (docs/openapi/ciel.json, docs/export-format.md "Through the API").
//!
//! `POST /providers/Ciel.Export/exports?api-version=2026-11-01` with
//! `{"properties": {"destination": {"containerSasUri": "…"}, "recipient": "PEM or JWK", "prefix": "…"}}`
//! starts an export of the caller's tenant: 202 with `Location` and `Azure-AsyncOperation` at
//! `/providers/Ciel.Export/exports/{id}`, which answers the operation's status. The work runs
//! in the server: the export is written to `DATA/exports/{id}` (the same code as `ciel export`),
//! pushed into the container under `{prefix}/` with `manifest.json` last, then removed.
//!
//! Permission: the tenant's whole content leaves, so the caller must hold the Owner role (or a
//! role granting `*`) on every subscription of its tenant (at the subscription scope or above).
//! Every request of an authenticated caller is audited, granted or denied.

use crate::http::{arm_error, json_response, read_body, App};
use axum::body::Body;
use axum::response::Response;
use ciel_core::{ApiError, Caller};
use ciel_store::{Found, Operation};
use http::{HeaderValue, Request, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

pub const PATH: &str = "/providers/Ciel.Export/exports";
const TYPE: &str = "Ciel.Export/exports";

/// What the server needs to run an export: the same sources as `ciel export`.
pub struct ExportEnv {
    pub master: Arc<ciel_core::seal::MasterKey>,
    pub custody: Arc<dyn ciel_keyvault::custody::Custody>,
    pub blob_root: PathBuf,
    /// `DATA/exports`: each running export's directory, removed when pushed.
    pub work_dir: PathBuf,
    /// This Ciel's CA (PEM): trusted when the destination is one of its own accounts.
    pub ca_pem: Option<Vec<u8>>,
}

fn draft(
    caller: &Caller,
    outcome: &str,
    target: &str,
    details: Value,
    rid: &str,
    peer: &Option<String>,
) -> ciel_core::audit::AuditDraft {
    ciel_core::audit::AuditDraft {
        tenant_id: Some(caller.tenant_id.clone()),
        actor: caller.display(),
        action: "Ciel.Export/exports/write".into(),
        target: target.into(),
        outcome: outcome.into(),
        details,
        request_id: Some(rid.to_string()),
        client_ip: peer.clone(),
    }
}

async fn audit(app: &App, d: ciel_core::audit::AuditDraft) -> Result<(), Response> {
    ciel_store::run(&app.store, move |s| {
        s.append_audit(std::slice::from_ref(&d))
    })
    .await
    .map(|_| ())
    .map_err(|e| {
        tracing::error!(error = %e, "could not audit an export request");
        arm_error(&ApiError::internal())
    })
}

/// Owner (`*`) on every subscription of the caller's tenant.
async fn allowed(app: &App, caller: &Caller) -> bool {
    use ciel_identity::rbac;
    let (oid, tid) = (caller.object_id.clone(), caller.tenant_id.clone());
    let r = ciel_store::run(&app.store, move |s| {
        let (assignments, custom) = rbac::grants(s, &oid, &tid)?;
        let subs = s.list_subscriptions(&tid)?;
        Ok(!subs.is_empty()
            && subs.iter().all(|sub| {
                ciel_core::ResourceId::parse(&format!("/subscriptions/{}", sub.id))
                    .map(|id| {
                        rbac::is_allowed(&assignments, &custom, &id, "Ciel.Export/exports/write")
                            && rbac::is_allowed(
                                &assignments,
                                &custom,
                                &id,
                                "Microsoft.Authorization/roleAssignments/write",
                            )
                    })
                    .unwrap_or(false)
            }))
    })
    .await;
    matches!(r, Ok(true))
}

fn location(app: &App, id: &str) -> String {
    format!(
        "{}providers/Ciel.Export/exports/{id}?api-version={}",
        app.endpoints.management(),
        crate::sovereignty::API_VERSION
    )
}

/// The operation as the status endpoint shows it (Azure's asynchronous-operation shape, with
/// the export's own properties).
fn render(op: &Operation) -> Value {
    let t = ciel_core::time::unix_to_rfc3339;
    let mut v = json!({
        "id": format!("{PATH}/{}", op.id),
        "name": op.id,
        "type": TYPE,
        "status": op.status,
        "startTime": t(op.created),
        "properties": op.result.clone().unwrap_or(json!({})),
    });
    if let Some(f) = op.finished {
        v["endTime"] = json!(t(f));
    }
    if let Some(e) = &op.error {
        v["error"] = e.clone();
    }
    v
}

pub async fn handle(
    app: &App,
    env: &Arc<ExportEnv>,
    caller: Caller,
    req: Request<Body>,
    rid: &str,
    peer: Option<String>,
) -> Response {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let rest = path.get(PATH.len()..).unwrap_or("").trim_start_matches('/');
    if let Err(e) = crate::http::own_api_version(req.uri()) {
        return arm_error(&e);
    }
    match (req.method().clone(), rest.is_empty()) {
        (http::Method::POST, true) => create(app, env, caller, req, rid, peer).await,
        (http::Method::GET, false) if !rest.contains('/') => {
            status(app, caller, rest.to_string(), rid, peer).await
        }
        _ => arm_error(&ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Exports are started with POST /providers/Ciel.Export/exports and read with GET /providers/Ciel.Export/exports/{id}.",
        )),
    }
}

async fn status(
    app: &App,
    caller: Caller,
    id: String,
    rid: &str,
    peer: Option<String>,
) -> Response {
    if !allowed(app, &caller).await {
        let d = draft(
            &caller,
            "denied",
            &format!("{PATH}/{id}"),
            json!({"read": true}),
            rid,
            &peer,
        );
        if let Err(r) = audit(app, d).await {
            return r;
        }
        return forbidden();
    }
    let i = id.clone();
    let op = ciel_store::run(&app.store, move |s| s.get_operation(&i).found()).await;
    match op {
        Ok(Some(op)) if op.tenant_id == caller.tenant_id && op.resource_id.starts_with(PATH) => {
            json_response(StatusCode::OK, &render(&op))
        }
        Ok(_) => arm_error(&ApiError::new(
            StatusCode::NOT_FOUND,
            "ExportNotFound",
            format!(
                "There is no export '{}' in your tenant.",
                ciel_arm::clip(&id)
            ),
        )),
        Err(e) => {
            tracing::error!(error = %e, "reading an export operation");
            arm_error(&ApiError::internal())
        }
    }
}

fn forbidden() -> Response {
    arm_error(&ApiError::new(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        "Exporting the tenant needs the Owner role on every subscription of the tenant.",
    ))
}

fn bad(msg: impl Into<String>) -> Response {
    arm_error(&ApiError::bad_request("InvalidRequestContent", msg))
}

async fn create(
    app: &App,
    env: &Arc<ExportEnv>,
    caller: Caller,
    req: Request<Body>,
    rid: &str,
    peer: Option<String>,
) -> Response {
    let tenant_target = format!("/tenants/{}", caller.tenant_id);
    if !allowed(app, &caller).await {
        let d = draft(&caller, "denied", &tenant_target, json!({}), rid, &peer);
        if let Err(r) = audit(app, d).await {
            return r;
        }
        return forbidden();
    }
    let body = match read_body(req.into_body(), app.max_body).await {
        Ok(b) => b,
        Err(e) => return arm_error(&e),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad("The request body must be JSON.");
    };
    let p = &body["properties"];
    let Some(uri) = p["destination"]["containerSasUri"].as_str() else {
        return bad("'properties.destination.containerSasUri' is required: a SAS URL of the container the export goes to.");
    };
    let dest = match ciel_export::push::ContainerSas::parse(uri) {
        Ok(d) => d,
        Err(e) => return bad(format!("'properties.destination.containerSasUri': {e}.")),
    };
    // Ciel opens no outbound connection (the sovereignty statement says so and the test suite
    // checks it): the server pushes only into this deployment's own accounts. Leaving for another
    // endpoint is the tenant's own copy from there (azcopy, rclone) or the operator's
    // `ciel export --to-blob-endpoint`.
    if !is_own_blob_host(&app.endpoints, dest.host()) {
        return bad(format!(
            "'properties.destination.containerSasUri' must be a container of a storage account of this deployment (https://{{account}}.blob.{}/...); the server opens no connection elsewhere. Copy the export onwards from there with azcopy or rclone.",
            app.endpoints.storage_suffix()
        ));
    }
    let recipient = match &p["recipient"] {
        Value::Null => None,
        Value::String(s) if s.trim_start().starts_with("-----BEGIN") => {
            match ciel_export::recipient::Recipient::parse(s) {
                Ok(r) => Some(r),
                Err(e) => return bad(format!("'properties.recipient': {e}.")),
            }
        }
        Value::Object(_) => {
            match ciel_export::recipient::Recipient::parse(&p["recipient"].to_string()) {
                Ok(r) => Some(r),
                Err(e) => return bad(format!("'properties.recipient': {e}.")),
            }
        }
        _ => {
            return bad(
                "'properties.recipient' must be an RSA public key: PEM text or a JWK object.",
            )
        }
    };
    let prefix = match &p["prefix"] {
        Value::Null => None,
        Value::String(s)
            if !s.is_empty()
                && s.len() <= 200
                && s.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..") =>
        {
            Some(s.clone())
        }
        _ => return bad("'properties.prefix' must be a blob name prefix: non-empty '/'-separated segments, at most 200 characters."),
    };
    // Key Vault material needs a recipient: refused now rather than failing later.
    let tid = caller.tenant_id.clone();
    let needs = ciel_store::run(&app.store, move |s| {
        let v = ciel_export::keyvault::tenant_vaults(s, &tid)
            .and_then(|v| ciel_export::keyvault::holds_material(s, &v));
        Ok(v.unwrap_or(true))
    })
    .await
    .unwrap_or(true);
    if needs && recipient.is_none() {
        return bad("The tenant has Key Vault secrets or keys: 'properties.recipient' (an RSA public key, PEM or JWK) is required; they are encrypted to it and never written in clear.");
    }
    let id = uuid::Uuid::new_v4().to_string();
    let prefix = prefix.unwrap_or_else(|| format!("ciel-export-{id}"));
    let op = Operation {
        id: id.clone(),
        tenant_id: caller.tenant_id.clone(),
        status: "InProgress".into(),
        resource_id: format!("{PATH}/{id}"),
        result: Some(
            json!({"destination": {"host": dest.host(), "container": dest.container_url.rsplit('/').next(), "prefix": prefix}}),
        ),
        error: None,
        created: ciel_core::time::now_unix(),
        finished: None,
    };
    let d = draft(
        &caller,
        "success",
        &format!("{PATH}/{id}"),
        json!({"destinationHost": dest.host(), "prefix": prefix, "recipient": recipient.as_ref().map(|r| r.kid.clone())}),
        rid,
        &peer,
    );
    let o = op.clone();
    if let Err(e) = ciel_store::run(&app.store, move |s| {
        s.put_operation(&o)?;
        s.append_audit(std::slice::from_ref(&d))
    })
    .await
    {
        tracing::error!(error = %e, "recording an export");
        return arm_error(&ApiError::internal());
    }
    let (store, env2, tenant) = (app.store.clone(), env.clone(), caller.tenant_id.clone());
    let domain = app.endpoints.domain.clone();
    let op_id = id.clone();
    tokio::spawn(async move {
        let st = store.clone();
        let res = tokio::task::spawn_blocking(move || {
            run(
                &st, &env2, &tenant, &op_id, &domain, recipient, &dest, &prefix,
            )
        })
        .await;
        let mut done = op;
        done.finished = Some(ciel_core::time::now_unix());
        match res {
            Ok(Ok(v)) => {
                done.status = "Succeeded".into();
                let mut r = done.result.take().unwrap_or(json!({}));
                if let (Some(o), Some(add)) = (r.as_object_mut(), v.as_object()) {
                    o.extend(add.clone());
                }
                done.result = Some(r);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), export = %done.id, "export failed");
                done.status = "Failed".into();
                done.error = Some(json!({"code": "ExportFailed", "message": format!("{e:#}")}));
            }
            Err(e) => {
                tracing::error!(error = %e, "the export task failed");
                done.status = "Failed".into();
                done.error = Some(
                    json!({"code": "InternalServerError", "message": "The export stopped unexpectedly."}),
                );
            }
        }
        let d = done.clone();
        if let Err(e) = ciel_store::run(&store, move |s| s.put_operation(&d)).await {
            tracing::error!(error = %e, "could not record the end of an export");
        }
    });
    let loc = location(app, &id);
    let mut r = json_response(StatusCode::ACCEPTED, &render(&op_view(&id, &caller)));
    for (h, v) in [
        ("location", loc.as_str()),
        ("azure-asyncoperation", loc.as_str()),
        ("retry-after", "1"),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(h, v);
        }
    }
    r
}

fn op_view(id: &str, caller: &Caller) -> Operation {
    Operation {
        id: id.to_string(),
        tenant_id: caller.tenant_id.clone(),
        status: "InProgress".into(),
        resource_id: format!("{PATH}/{id}"),
        result: None,
        error: None,
        created: ciel_core::time::now_unix(),
        finished: None,
    }
}

/// The export itself, on the blocking pool: write, push, remove; the working directory goes
/// whatever the outcome.
#[allow(clippy::too_many_arguments)]
fn run(
    store: &ciel_store::Store,
    env: &ExportEnv,
    tenant: &str,
    id: &str,
    domain: &str,
    recipient: Option<ciel_export::recipient::Recipient>,
    dest: &ciel_export::push::ContainerSas,
    prefix: &str,
) -> anyhow::Result<Value> {
    let dir = env.work_dir.join(id);
    let res = (|| {
        let public_key = store
            .get_setting("audit.public_key")?
            .ok_or_else(|| anyhow::anyhow!("no audit public key"))?;
        let src = ciel_export::export::DataSource {
            store: store.as_ref(),
            master: &env.master,
            blob_root: env.blob_root.clone(),
            domain: domain.to_string(),
            audit_public_key: public_key,
            custody: Some(env.custody.as_ref()),
        };
        let rep = ciel_export::export::export(
            &src,
            &ciel_export::export::ExportOptions {
                tenant: tenant.to_string(),
                out: dir.clone(),
                resume: false,
                since: None,
                recipient,
            },
        )?;
        let (files, bytes) =
            ciel_export::push::push_dir(&dir, dest, prefix, env.ca_pem.as_deref())?;
        store.append_audit(&[ciel_core::audit::AuditDraft {
            tenant_id: Some(tenant.to_string()),
            actor: "system:export".into(),
            action: "Ciel.Export/export/action".into(),
            target: format!("{PATH}/{id}"),
            outcome: "success".into(),
            details: json!({"files": files, "bytes": bytes, "manifestSha256": rep.manifest_sha256, "destinationHost": dest.host()}),
            ..Default::default()
        }])?;
        Ok(
            json!({"manifestSha256": rep.manifest_sha256, "files": files, "bytes": bytes, "summary": rep.summary}),
        )
    })();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = &res {
        // A failed exit is evidence too (SecNumCloud 19.4): the tenant sees it in its trail.
        let failed = ciel_core::audit::AuditDraft {
            tenant_id: Some(tenant.to_string()),
            actor: "system:export".into(),
            action: "Ciel.Export/export/action".into(),
            target: format!("{PATH}/{id}"),
            outcome: "failure".into(),
            details: json!({"error": format!("{e:#}").chars().filter(|c| !c.is_control()).take(500).collect::<String>(), "destinationHost": dest.host()}),
            ..Default::default()
        };
        if let Err(ae) = store.append_audit(&[failed]) {
            tracing::error!(error = %ae, export = %id, "could not audit a failed export");
        }
    }
    res
}

/// `{account}.blob.core.D[:p]` of this deployment, the port included when it is not 443.
fn is_own_blob_host(e: &ciel_core::config::Endpoints, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let suffix = format!(".blob.{}", e.storage_suffix());
    host.strip_suffix(&suffix).is_some_and(|account| {
        !account.is_empty()
            && account
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::is_own_blob_host;
    use ciel_core::config::Endpoints;

    #[test]
    fn only_own_accounts_are_destinations() {
        let e = Endpoints::new("ciel.localhost", 8443);
        assert!(is_own_blob_host(&e, "acct1.blob.core.ciel.localhost:8443"));
        assert!(is_own_blob_host(&e, "ACCT1.blob.core.ciel.localhost:8443"));
        assert!(!is_own_blob_host(&e, "acct1.blob.core.ciel.localhost"));
        assert!(!is_own_blob_host(&e, "acct1.blob.core.windows.net"));
        assert!(!is_own_blob_host(&e, "127.0.0.1:10000"));
        assert!(!is_own_blob_host(
            &e,
            "evil.example/x.blob.core.ciel.localhost:8443"
        ));
        assert!(!is_own_blob_host(&e, ".blob.core.ciel.localhost:8443"));
        assert!(!is_own_blob_host(&e, "a.b.blob.core.ciel.localhost:8443"));
        let e443 = Endpoints::new("ciel.example.fr", 443);
        assert!(is_own_blob_host(&e443, "acct.blob.core.ciel.example.fr"));
    }
}
