//! The ResourceProvider plug, driven through the ARM router without HTTP: a test provider
//! (`Ciel.Test/widgets`) gets residency, api-version checks, RBAC and the long-running delete of
//! its resource group from the router, as Microsoft.Storage and Microsoft.KeyVault will.

use bytes::Bytes;
use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse, ResourceProvider, ResourceTypeInfo};
use ciel_arm::{Arm, ArmRequest, ArmResponse};
use ciel_audit::{Auditor, CheckpointSigner};
use ciel_core::audit::AuditDraft;
use ciel_core::config::Endpoints;
use ciel_core::seal::MasterKey;
use ciel_core::{ApiError, Caller, ResourceId};
use ciel_identity::keys::KeyRing;
use ciel_identity::token::{TokenRequest, TokenService};
use ciel_identity::{directory, rbac};
use ciel_store::sqlite::SqliteStore;
use ciel_store::{Resource, RoleAssignment, Store, Subscription};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct Widgets {
    store: Store,
    deleted: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl ResourceProvider for Widgets {
    fn namespace(&self) -> &'static str {
        "Ciel.Test"
    }
    fn resource_types(&self) -> Vec<ResourceTypeInfo> {
        vec![ResourceTypeInfo {
            resource_type: "widgets".into(),
            api_versions: vec!["2024-01-01".into()],
            located: true,
        }]
    }
    async fn handle(&self, req: ProviderRequest) -> ArmResult<ProviderResponse> {
        let key = req.id.key();
        match req.method {
            Method::PUT => {
                let body = req.body.unwrap_or_default();
                let r = Resource {
                    id: req.id.to_string(),
                    subscription_id: req.id.subscription.clone(),
                    resource_group: req.id.resource_group.clone(),
                    rtype: "Ciel.Test/widgets".into(),
                    name: req.id.name().unwrap_or_default().to_string(),
                    location: body["location"].as_str().map(str::to_string),
                    tenant_id: req.caller.tenant_id.clone(),
                    body: json!({"id": req.id.to_string(), "location": body["location"], "tags": {}}),
                    created: 0,
                    changed: 0,
                    sealed: None,
                };
                let out = r.body.clone();
                let d = AuditDraft {
                    actor: req.caller.display(),
                    action: "Ciel.Test/widgets/write".into(),
                    target: r.id.clone(),
                    outcome: "success".into(),
                    ..Default::default()
                };
                self.store.put_resource(&r, &d)?;
                Ok(ProviderResponse::Done {
                    status: StatusCode::OK,
                    body: Some(out),
                })
            }
            Method::GET => match self.store.get_resource(&key) {
                Ok(r) => Ok(ProviderResponse::Done {
                    status: StatusCode::OK,
                    body: Some(r.body),
                }),
                Err(_) => Err(ApiError::not_found("ResourceNotFound", "no such widget").into()),
            },
            _ => Err(ApiError::feature_not_supported("this method").into()),
        }
    }
    async fn delete_for_group(&self, _id: &ResourceId, _caller: &Caller) -> ArmResult<()> {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        self.deleted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct World {
    _dir: tempfile::TempDir,
    arm: Arm,
    tokens: Arc<TokenService>,
    sub: String,
    owner: (String, String, String),
    reader: (String, String, String),
    deleted: Arc<AtomicUsize>,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(SqliteStore::open(&dir.path().join("ciel.db")).unwrap());
    let master = Arc::new(MasterKey::from_bytes(&MasterKey::generate_bytes().unwrap()).unwrap());
    let ring = KeyRing::new(store.clone(), master.clone()).unwrap();
    ring.ensure_active("test").unwrap();
    let e = Endpoints::new("ciel.localhost", 443);
    let mfa = ciel_identity::mfa::Mfa::new(store.clone(), master, "Ciel test");
    let tokens = TokenService::new(store.clone(), ring, mfa, e.clone());
    let auditor = Auditor::new(
        store.clone(),
        CheckpointSigner::from_pkcs8(&CheckpointSigner::generate_pkcs8().unwrap()).unwrap(),
        dir.path().join("cp"),
    );
    let t = directory::create_tenant(store.as_ref(), "test", "T", "t.fr").unwrap();
    let sub = Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: t.id.clone(),
        display_name: "s".into(),
        state: "Enabled".into(),
        created: 0,
    };
    store
        .create_subscription(&sub, &AuditDraft::default())
        .unwrap();
    let mut sps = vec![];
    for role in [rbac::OWNER, rbac::READER] {
        let sp = directory::create_service_principal(store.as_ref(), "test", &t.id, role).unwrap();
        store
            .put_role_assignment(
                &RoleAssignment {
                    name: uuid::Uuid::new_v4().to_string(),
                    tenant_id: t.id.clone(),
                    scope: format!("/subscriptions/{}", sub.id),
                    role_definition_id: rbac::role_definition_id(&sub.id, role),
                    principal_id: sp.principal.object_id.clone(),
                    principal_type: "ServicePrincipal".into(),
                    description: None,
                    created_by: "test".into(),
                    created: 0,
                },
                &AuditDraft::default(),
            )
            .unwrap();
        sps.push((t.id.clone(), sp.principal.app_id.unwrap(), sp.secret));
    }
    let deleted = Arc::new(AtomicUsize::new(0));
    let arm = Arm {
        store: store.clone(),
        tokens: tokens.clone(),
        auditor,
        endpoints: e,
        providers: vec![Arc::new(Widgets {
            store: store.clone(),
            deleted: deleted.clone(),
        })],
    };
    let reader = sps.pop().unwrap();
    let owner = sps.pop().unwrap();
    World {
        _dir: dir,
        arm,
        tokens,
        sub: sub.id,
        owner,
        reader,
        deleted,
    }
}

fn token(w: &World, who: &(String, String, String)) -> String {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", who.1.as_str()),
        ("client_secret", who.2.as_str()),
        ("scope", "https://management.ciel.localhost//.default"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let v = w
        .tokens
        .token(&TokenRequest {
            tenant: who.0.clone(),
            form,
            basic: None,
            client_ip: None,
            request_id: "r".into(),
        })
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

async fn call(
    w: &World,
    tok: &str,
    method: Method,
    path_and_query: &str,
    body: Option<serde_json::Value>,
) -> ArmResponse {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {tok}")).unwrap(),
    );
    w.arm
        .handle(ArmRequest {
            method,
            segments: path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            query: form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
            headers,
            body: body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
            request_id: "test".into(),
            client_ip: None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_gets_residency_rbac_and_async_group_delete() {
    let w = world();
    let owner = token(&w, &w.owner);
    let reader = token(&w, &w.reader);
    let s = w.sub.clone();
    let rg = format!("/subscriptions/{s}/resourceGroups/rg");
    let r = call(
        &w,
        &owner,
        Method::PUT,
        &format!("{rg}?api-version=2024-11-01"),
        Some(json!({"location": "francecentral"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let widget = format!("{rg}/providers/Ciel.Test/widgets/w1");
    // Residency: refused, nothing stored.
    let r = call(
        &w,
        &owner,
        Method::PUT,
        &format!("{widget}?api-version=2024-01-01"),
        Some(json!({"location": "westeurope"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body.unwrap()["error"]["code"],
        "LocationNotAvailableForResourceType"
    );
    assert_eq!(
        call(
            &w,
            &owner,
            Method::GET,
            &format!("{widget}?api-version=2024-01-01"),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    // The provider's api-versions are enforced by the router.
    let r = call(
        &w,
        &owner,
        Method::PUT,
        &format!("{widget}?api-version=2099-01-01"),
        Some(json!({"location": "francecentral"})),
    )
    .await;
    assert_eq!(
        r.body.unwrap()["error"]["code"],
        "InvalidApiVersionParameter"
    );
    // RBAC: a Reader cannot write, an Owner can; the Reader can read.
    let r = call(
        &w,
        &reader,
        Method::PUT,
        &format!("{widget}?api-version=2024-01-01"),
        Some(json!({"location": "francecentral"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(
        &w,
        &owner,
        Method::PUT,
        &format!("{widget}?api-version=2024-01-01"),
        Some(json!({"location": "France Central"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        call(
            &w,
            &reader,
            Method::GET,
            &format!("{widget}?api-version=2024-01-01"),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    // Generic listing sees it.
    let r = call(
        &w,
        &reader,
        Method::GET,
        &format!("/subscriptions/{s}/resources?api-version=2021-04-01"),
        None,
    )
    .await;
    assert_eq!(r.body.unwrap()["value"].as_array().unwrap().len(), 1);
    // Unknown namespaces are refused.
    let r = call(
        &w,
        &owner,
        Method::GET,
        &format!("{rg}/providers/Nope.Nothing/things/x?api-version=2024-01-01"),
        None,
    )
    .await;
    assert_eq!(r.body.unwrap()["error"]["code"], "InvalidResourceNamespace");

    // Deleting the group: the provider must destroy its data, so the delete is asynchronous.
    let r = call(
        &w,
        &owner,
        Method::DELETE,
        &format!("{rg}?api-version=2024-11-01"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.headers.get("retry-after").unwrap(), "1");
    let loc = r
        .headers
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let path = loc
        .strip_prefix("https://management.ciel.localhost/")
        .unwrap()
        .to_string();
    let mut polls = 0;
    loop {
        let r = call(&w, &owner, Method::GET, &format!("/{path}"), None).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert_eq!(r.headers.get("retry-after").unwrap(), "1");
        polls += 1;
        assert!(polls < 100, "the operation never finished");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(w.deleted.load(Ordering::SeqCst), 1);
    assert_eq!(
        call(
            &w,
            &owner,
            Method::GET,
            &format!("{rg}?api-version=2024-11-01"),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    // Another tenant's caller cannot see the operation.
    let _ = reader;
}

#[tokio::test]
async fn bad_tokens_are_refused_and_audited() {
    let w = world();
    let s = w.sub.clone();
    let before = w.arm.store.audit_head().unwrap().unwrap().0;
    for bad in ["", "garbage", "eyJhbGciOiJub25lIn0.eyJhdWQiOiJ4In0."] {
        let r = call(
            &w,
            bad,
            Method::GET,
            &format!("/subscriptions/{s}/resourcegroups?api-version=2024-11-01"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "token {bad:?}");
        assert!(r.headers.get("www-authenticate").is_some());
    }
    let after = w.arm.store.audit_head().unwrap().unwrap().0;
    assert_eq!(after - before, 3, "each refusal is audited");
    let denied = w.arm.store.read_audit(before, 10).unwrap();
    assert!(denied.iter().all(|r| r.outcome == "denied"));
}
