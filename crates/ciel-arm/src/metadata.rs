//! `GET /metadata/endpoints`: what `az cloud register` and `ARM_CLOUD_METADATA_URL` read.

use crate::error::ArmResult;
use crate::{Arm, ArmRequest, ArmResponse};
use ciel_core::ApiError;
use http::StatusCode;
use serde_json::json;

pub fn document(arm: &Arm) -> serde_json::Value {
    let e = &arm.endpoints;
    let mgmt = e.management();
    let graph = e.graph();
    json!({
        "name": "Ciel",
        "portal": format!("https://{}", e.host("portal")),
        "resourceManager": mgmt,
        "authentication": {
            "loginEndpoint": format!("{}/", e.login()),
            "audiences": [mgmt, mgmt.trim_end_matches('/')],
            "tenant": "common",
            "identityProvider": "AAD"
        },
        "media": format!("https://{}/", e.host("media")),
        "graphAudience": graph,
        "graph": graph,
        "microsoftGraphResourceId": graph,
        "batch": format!("https://{}/", e.host("batch")),
        "sqlManagement": format!("https://{}/", e.host("sqlmanagement")),
        "vmImageAliasDoc": format!("https://{}/vm-image-aliases.json", e.host("management")),
        "activeDirectoryDataLake": format!("https://{}/", e.host("datalake")),
        "gallery": format!("https://{}/", e.host("gallery")),
        "suffixes": {
            "storage": e.storage_suffix(),
            "keyVaultDns": e.keyvault_suffix(),
            "mhsmDns": format!("managedhsm.{}", e.host_suffix()),
            "acrLoginServer": format!("cr.{}", e.host_suffix()),
            "sqlServerHostname": format!("database.{}", e.host_suffix())
        }
    })
}

pub fn endpoints(arm: &Arm, req: &ArmRequest) -> ArmResult<ArmResponse> {
    let v = req.api_version().ok_or_else(|| {
        ApiError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    })?;
    let valid = v.len() >= 10
        && v.as_bytes()[4] == b'-'
        && v.as_bytes()[7] == b'-'
        && v[..4].chars().all(|c| c.is_ascii_digit());
    if !valid {
        return Err(ApiError::bad_request(
            "InvalidApiVersionParameter",
            "The api-version must be a date such as '2022-09-01'.",
        )
        .into());
    }
    // From 2022-09-01 the document is one object (what `az cloud register` reads); before, an
    // array of clouds (what ARM_CLOUD_METADATA_URL expects).
    let doc = document(arm);
    Ok(ArmResponse::json(
        StatusCode::OK,
        if v >= "2022-09-01" { doc } else { json!([doc]) },
    ))
}
