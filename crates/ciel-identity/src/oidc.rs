//! OIDC discovery documents, Entra style and ADFS style.

use ciel_core::config::Endpoints;
use serde_json::json;

/// `/{tenant}/v2.0/.well-known/openid-configuration`. For the `organizations` and `common`
/// aliases the issuer keeps Entra's `{tenantid}` placeholder.
pub fn openid_configuration(e: &Endpoints, tenant: &str) -> serde_json::Value {
    let login = e.login();
    let issuer_tenant = if matches!(
        tenant.to_ascii_lowercase().as_str(),
        "organizations" | "common"
    ) {
        "{tenantid}"
    } else {
        tenant
    };
    json!({
        "token_endpoint": format!("{login}/{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "jwks_uri": format!("{login}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{login}/{issuer_tenant}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{}v1.0/me", e.graph()),
        "authorization_endpoint": format!("{login}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{login}/{tenant}/oauth2/v2.0/devicecode"),
        "http_logout_supported": false,
        "frontchannel_logout_supported": false,
        "end_session_endpoint": format!("{login}/{tenant}/oauth2/v2.0/logout"),
        "claims_supported": ["sub","iss","aud","exp","iat","nbf","name","oid","tid","upn","preferred_username","ver"],
        "grant_types_supported": ["client_credentials", "password", "refresh_token"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": e.domain,
        "cloud_graph_host_name": e.host("graph"),
        "msgraph_host": e.host("graph"),
    })
}

/// `/adfs/.well-known/openid-configuration`: MSAL treats an authority ending in `/adfs` as ADFS
/// and skips instance discovery, so clients that cannot switch discovery off still work.
pub fn adfs_configuration(e: &Endpoints) -> serde_json::Value {
    let login = e.login();
    json!({
        "issuer": format!("{login}/adfs"),
        "authorization_endpoint": format!("{login}/adfs/oauth2/authorize"),
        "token_endpoint": format!("{login}/adfs/oauth2/token"),
        "jwks_uri": format!("{login}/adfs/discovery/keys"),
        "device_authorization_endpoint": format!("{login}/adfs/oauth2/devicecode"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "grant_types_supported": ["client_credentials", "password", "refresh_token"],
    })
}
