//! The steps of the device-login page, without their HTML: user code → password → a code of the
//! second factor (or its enrolment, when the tenant requires one) → the flow is approved and the
//! client's next poll gets the tokens. Each step answers the next one's single-use page token.
//! Every sign-in attempt on the page is audited (`identity/devicelogin/*`); TOTP outcomes are
//! audited by `Mfa` itself.

use crate::device_code::{Approval, PageHandle, PageStep, UserCodeError};
use crate::mfa::{Enrolment, MfaAttempt, MfaError};
use crate::token::{MfaNeed, TokenService};
use crate::IdentityError;
use ciel_core::audit::AuditDraft;
use ciel_store::Principal;
use serde_json::json;

/// Who submits the page, for audit and rate limits.
pub struct PageClient<'a> {
    pub ip: &'a str,
    pub request_id: &'a str,
}

/// What the page shows next.
#[derive(Debug)]
pub enum PageOutcome {
    /// Ask for username and password.
    Credentials {
        token: String,
        error: Option<String>,
    },
    /// Ask for a code of the user's factor.
    Totp {
        token: String,
        upn: String,
        error: Option<String>,
    },
    /// Show the new factor's secret (once) and ask for its first code.
    Enrol {
        token: String,
        upn: String,
        enrolment: Option<Enrolment>,
        error: Option<String>,
    },
    /// Back to the first step (user code), with why.
    UserCode { error: String },
    /// The sign-in is approved: the person may close the window.
    Done,
    /// The sign-in cannot complete; the client hears `authorization_declined`.
    Failed { error: String },
}

const EXPIRED: &str =
    "This sign-in has expired or was already completed. Start again from your device.";

fn now() -> i64 {
    ciel_core::time::now_unix()
}

impl TokenService {
    fn page_audit(
        &self,
        c: &PageClient,
        user: Option<&Principal>,
        actor: &str,
        action: &str,
        outcome: &str,
        details: serde_json::Value,
    ) -> Result<(), IdentityError> {
        self.audit(AuditDraft {
            tenant_id: user.map(|u| u.tenant_id.clone()),
            actor: actor
                .chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect(),
            action: format!("identity/devicelogin/{action}"),
            target: user
                .map(|u| u.object_id.clone())
                .unwrap_or_else(|| "devicelogin".into()),
            outcome: outcome.into(),
            details,
            request_id: Some(c.request_id.to_string()),
            client_ip: Some(c.ip.to_string()),
        })
    }

    /// Step 1: the user code shown by the client.
    pub fn page_user_code(&self, code: &str, c: &PageClient) -> Result<PageOutcome, IdentityError> {
        match self.devices.enter_user_code(code, c.ip, now()) {
            Ok(token) => Ok(PageOutcome::Credentials { token, error: None }),
            Err(e) => {
                let reason = match e {
                    UserCodeError::Wrong => "wrong user code",
                    UserCodeError::Throttled => "too many wrong user codes",
                };
                self.page_audit(
                    c,
                    None,
                    "anonymous",
                    "usercode",
                    "denied",
                    json!({"reason": reason}),
                )?;
                Ok(PageOutcome::UserCode {
                    error: match e {
                        UserCodeError::Wrong => "That code is not valid or has expired. Check the code shown on your device.".into(),
                        UserCodeError::Throttled => "Too many wrong codes from your address. Wait a few minutes and try again.".into(),
                    },
                })
            }
        }
    }

    /// Step 2: username and password; then the second factor when the user has or needs one.
    pub fn page_credentials(
        &self,
        token: &str,
        username: &str,
        password: &str,
        c: &PageClient,
    ) -> Result<PageOutcome, IdentityError> {
        let Some((h, PageStep::Credentials, req)) = self.devices.take_page(token, now()) else {
            return Ok(PageOutcome::UserCode {
                error: EXPIRED.into(),
            });
        };
        let user = match self.check_password(username, password, &req.tenant) {
            Ok(u) => u,
            Err(e @ (IdentityError::InvalidGrant(_) | IdentityError::Locked)) => {
                self.page_audit(
                    c,
                    None,
                    username,
                    "password",
                    "denied",
                    json!({"error": format!("AADSTS{}", e.aadsts())}),
                )?;
                let error = match e {
                    IdentityError::Locked => {
                        "Your account is locked after repeated sign-in failures. Try again later."
                    }
                    _ => "Your account or password is incorrect.",
                };
                return Ok(
                    match self.devices.next_page(&h, PageStep::Credentials, now()) {
                        Some(token) => PageOutcome::Credentials {
                            token,
                            error: Some(error.into()),
                        },
                        None => PageOutcome::UserCode {
                            error: EXPIRED.into(),
                        },
                    },
                );
            }
            Err(e) => return Err(e),
        };
        let upn = user.upn.clone().unwrap_or_default();
        let need = self.mfa_need(&user)?;
        self.page_audit(
            c,
            Some(&user),
            &upn,
            "password",
            "success",
            json!({"mfa": format!("{need:?}").to_ascii_lowercase()}),
        )?;
        match need {
            MfaNeed::None => self.page_approve(&h, &user, false, c),
            MfaNeed::Verify => Ok(self.page_next(
                &h,
                PageStep::Totp {
                    object_id: user.object_id.clone(),
                },
                |token| PageOutcome::Totp {
                    token,
                    upn: upn.clone(),
                    error: None,
                },
            )),
            MfaNeed::Enrol => {
                let a = MfaAttempt {
                    actor: &upn,
                    request_id: Some(c.request_id),
                    client_ip: Some(c.ip),
                };
                let e = self
                    .mfa
                    .enroll(&user.object_id, Some(&user.tenant_id), &upn, &a)
                    .map_err(|e| IdentityError::Internal(e.to_string()))?;
                Ok(self.page_next(
                    &h,
                    PageStep::Enrol {
                        object_id: user.object_id.clone(),
                    },
                    |token| PageOutcome::Enrol {
                        token,
                        upn: upn.clone(),
                        enrolment: Some(e),
                        error: None,
                    },
                ))
            }
        }
    }

    /// Step 3: a code of the factor (confirming it, when it was enrolled on step 2).
    pub fn page_totp(
        &self,
        token: &str,
        code: &str,
        c: &PageClient,
    ) -> Result<PageOutcome, IdentityError> {
        let (h, step, object_id) = match self.devices.take_page(token, now()) {
            Some((h, s @ PageStep::Totp { .. }, _)) | Some((h, s @ PageStep::Enrol { .. }, _)) => {
                let oid = match &s {
                    PageStep::Totp { object_id } | PageStep::Enrol { object_id } => {
                        object_id.clone()
                    }
                    PageStep::Credentials => String::new(),
                };
                (h, s, oid)
            }
            _ => {
                return Ok(PageOutcome::UserCode {
                    error: EXPIRED.into(),
                })
            }
        };
        let user = self.store().get_principal(&object_id)?;
        let upn = user.upn.clone().unwrap_or_default();
        let a = MfaAttempt {
            actor: &upn,
            request_id: Some(c.request_id),
            client_ip: Some(c.ip),
        };
        match self.mfa.verify(&object_id, code, &a) {
            Ok(()) => self.page_approve(&h, &user, true, c),
            Err(MfaError::Invalid | MfaError::Replayed) => {
                let error = Some("That code is not right, or was already used. Wait for the next code of your app.".to_string());
                Ok(self.page_next(&h, step.clone(), |token| match step {
                    PageStep::Enrol { .. } => PageOutcome::Enrol {
                        token,
                        upn: upn.clone(),
                        enrolment: None,
                        error,
                    },
                    _ => PageOutcome::Totp {
                        token,
                        upn: upn.clone(),
                        error,
                    },
                }))
            }
            Err(MfaError::Locked(_)) => {
                self.devices.decline(&h);
                Ok(PageOutcome::Failed {
                    error: "Your second factor is locked after repeated wrong codes. Try again later, or ask your administrator.".into(),
                })
            }
            Err(MfaError::NotEnrolled) => {
                self.devices.decline(&h);
                Ok(PageOutcome::Failed {
                    error: "Your second factor was removed during the sign-in. Start again.".into(),
                })
            }
            Err(MfaError::Internal(m)) => Err(IdentityError::Internal(m)),
        }
    }

    /// The person declines the sign-in.
    pub fn page_cancel(&self, token: &str, c: &PageClient) -> Result<PageOutcome, IdentityError> {
        if let Some((h, _, _)) = self.devices.take_page(token, now()) {
            self.devices.decline(&h);
            self.page_audit(c, None, "anonymous", "cancel", "success", json!({}))?;
        }
        Ok(PageOutcome::Failed {
            error: "Sign-in cancelled. You may close this window.".into(),
        })
    }

    fn page_next(
        &self,
        h: &PageHandle,
        step: PageStep,
        render: impl FnOnce(String) -> PageOutcome,
    ) -> PageOutcome {
        match self.devices.next_page(h, step, now()) {
            Some(token) => render(token),
            None => PageOutcome::UserCode {
                error: EXPIRED.into(),
            },
        }
    }

    fn page_approve(
        &self,
        h: &PageHandle,
        user: &Principal,
        mfa: bool,
        c: &PageClient,
    ) -> Result<PageOutcome, IdentityError> {
        let ok = self.devices.approve(
            h,
            Approval {
                object_id: user.object_id.clone(),
                mfa,
            },
        );
        self.page_audit(
            c,
            Some(user),
            user.upn.as_deref().unwrap_or(""),
            "approve",
            if ok { "success" } else { "denied" },
            json!({"mfa": mfa}),
        )?;
        Ok(if ok {
            PageOutcome::Done
        } else {
            PageOutcome::UserCode {
                error: EXPIRED.into(),
            }
        })
    }
}
