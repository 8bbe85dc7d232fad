//! checkNameAvailability: names are unique in the whole cloud (they become DNS labels), so the
//! answer does not depend on the caller's tenant — and reveals nothing but "taken".

use super::create::valid_name;
use super::TYPE;
use crate::StorageProvider;
use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse};
use ciel_core::ApiError;
use http::StatusCode;
use serde_json::json;

pub async fn check_name_availability(
    p: &StorageProvider,
    req: &ProviderRequest,
) -> ArmResult<ProviderResponse> {
    let body = req.json()?;
    let name = body
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let ty = body.get("type").and_then(|v| v.as_str()).unwrap_or(TYPE);
    if !ty.eq_ignore_ascii_case(TYPE) {
        return Err(
            ApiError::bad_request("InvalidValue", format!("The type must be '{TYPE}'.")).into(),
        );
    }
    let out = if !valid_name(&name) {
        json!({"nameAvailable": false, "reason": "AccountNameInvalid",
               "message": format!("{} is not a valid storage account name. Storage account name must be between 3 and 24 characters in length and use numbers and lower-case letters only.", ciel_arm::clip(&name))})
    } else {
        let (n, t) = (name.clone(), TYPE.to_string());
        let taken = !ciel_store::run(&p.store, move |s| s.find_resources_by_name(&t, &n))
            .await?
            .is_empty();
        if taken {
            json!({"nameAvailable": false, "reason": "AlreadyExists", "message": format!("The storage account named {name} is already taken.")})
        } else {
            json!({"nameAvailable": true})
        }
    };
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(out),
    })
}
