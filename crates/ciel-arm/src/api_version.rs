//! api-version validation. Azure rejects a version its resource provider does not know; so do
//! we, naming the versions we accept.

use ciel_core::ApiError;

/// Microsoft.Resources (groups, resources, providers, subscriptions, tenants, locations).
pub const RESOURCES: &[&str] = &[
    "2014-04-01",
    "2015-01-01",
    "2015-11-01",
    "2016-02-01",
    "2016-06-01",
    "2016-07-01",
    "2016-09-01",
    "2017-05-10",
    "2017-06-01",
    "2018-02-01",
    "2018-05-01",
    "2018-06-01",
    "2019-03-01",
    "2019-05-01",
    "2019-05-10",
    "2019-06-01",
    "2019-07-01",
    "2019-08-01",
    "2019-10-01",
    "2019-11-01",
    "2020-01-01",
    "2020-06-01",
    "2020-08-01",
    "2020-10-01",
    "2021-01-01",
    "2021-04-01",
    "2022-01-01",
    "2022-09-01",
    "2022-12-01",
    "2023-07-01",
    "2024-03-01",
    "2024-07-01",
    "2024-11-01",
    "2025-01-01",
    "2025-03-01",
    "2025-04-01",
];

/// Microsoft.Authorization (role assignments and definitions).
pub const AUTHORIZATION: &[&str] = &[
    "2015-06-01",
    "2015-07-01",
    "2017-10-01-preview",
    "2018-01-01-preview",
    "2018-07-01-preview",
    "2018-09-01-preview",
    "2020-03-01-preview",
    "2020-04-01-preview",
    "2020-08-01-preview",
    "2020-10-01",
    "2020-10-01-preview",
    "2021-03-01-preview",
    "2021-12-01-preview",
    "2022-01-01-preview",
    "2022-04-01",
    "2022-05-01-preview",
    "2022-08-01-preview",
    "2023-07-01-preview",
    "2024-04-01-preview",
    "2024-07-01-preview",
    "2024-09-01-preview",
    "2025-12-01-preview",
];

/// Checks the `api-version` query value against a provider's list.
pub fn check<'a>(
    given: Option<&'a str>,
    supported: &[&str],
    what: &str,
) -> Result<&'a str, ApiError> {
    match given {
        None | Some("") => Err(ApiError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if supported.contains(&v) => Ok(v),
        Some(v) => Err(ApiError::bad_request(
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{}' is invalid for {what}. The supported versions are '{}'.",
                v.chars().take(40).collect::<String>(),
                supported.join(",")
            ),
        )),
    }
}
