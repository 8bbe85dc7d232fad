//! `POST /subscriptions/S/providers/Microsoft.KeyVault/checkNameAvailability`: names are unique
//! in the whole cloud, and a deleted vault keeps its name until it is purged.

use super::{valid_name, TYPE};
use crate::KeyVaultProvider;
use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse};
use ciel_core::ApiError;
use ciel_store::Found;
use http::StatusCode;
use serde_json::json;

pub async fn check_name_availability(
    p: &KeyVaultProvider,
    req: &ProviderRequest,
) -> ArmResult<ProviderResponse> {
    let body = req.json()?;
    let name = body["name"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("BadRequest", "'name' is required."))?
        .to_string();
    if let Some(t) = body["type"].as_str() {
        if !t.eq_ignore_ascii_case(TYPE) {
            return Err(
                ApiError::bad_request("BadRequest", format!("'type' must be '{TYPE}'.")).into(),
            );
        }
    }
    let answer = if !valid_name(&name) {
        json!({"nameAvailable": false, "reason": "AccountNameInvalid",
               "message": super::invalid_name(&name).message})
    } else {
        let (n1, n2) = (name.clone(), name.to_ascii_lowercase());
        let (live, deleted) = ciel_store::run(&p.store, move |s| {
            Ok((
                s.find_resources_by_name(TYPE, &n1)?,
                s.get_deleted_vault(&n2).found()?,
            ))
        })
        .await?;
        if !live.is_empty() || deleted.is_some() {
            json!({"nameAvailable": false, "reason": "AlreadyExists",
                   "message": format!("The vault name '{name}' is already in use.")})
        } else {
            json!({"nameAvailable": true})
        }
    };
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(answer),
    })
}
