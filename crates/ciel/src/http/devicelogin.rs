//! The device code flow on the login host: the device authorization endpoint
//! (`/{tenant}/oauth2[/v2.0]/devicecode`) and the device-login page (`/devicelogin`) where the
//! person types the user code, signs in and gives their second factor.
//!
//! The page is plain server-rendered HTML (no script, no style sheet), so its
//! Content-Security-Policy allows nothing but posting the form to itself. It keeps no session
//! cookie: the only authority is the single-use page token in each form, which a third-party
//! site cannot read, so there is nothing for a cross-site request to ride on; a cross-origin
//! `Origin` is refused anyway. Secrets travel only in POST bodies, never in URLs, and nothing of
//! a form is logged.

use super::login::{oauth_error, FORM_LIMIT};
use super::{json_response, read_body, App};
use axum::body::Body;
use axum::response::Response;
use ciel_identity::devicelogin::{PageClient, PageOutcome};
use ciel_identity::mfa::Enrolment;
use http::{HeaderValue, Method, Request, StatusCode};
use serde_json::json;
use std::collections::HashMap;

/// `POST /{tenant}/oauth2/v2.0/devicecode` (v1: `/oauth2/devicecode`, which names the page
/// `verification_url`).
pub async fn devicecode(
    app: &App,
    req: Request<Body>,
    tenant: String,
    v1: bool,
    rid: &str,
    peer: Option<String>,
) -> Response {
    let body = match read_body(req.into_body(), FORM_LIMIT).await {
        Ok(b) => b,
        Err(e) => return oauth_error(e.status, "invalid_request", &e.message, rid),
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let tokens = app.tokens.clone();
    let r = rid.to_string();
    let out = tokio::task::spawn_blocking(move || {
        tokens.device_authorization(&tenant, &form, peer.as_deref(), &r)
    })
    .await;
    let page = format!("{}/devicelogin", app.endpoints.login());
    let mut resp = match out {
        Ok(Ok(s)) => {
            let mut v = json!({
                "user_code": s.user_code,
                "device_code": s.device_code,
                "expires_in": s.expires_in,
                "interval": s.interval,
                "message": format!("To sign in, use a web browser to open the page {page} and enter the code {} to authenticate.", s.user_code),
            });
            v[if v1 {
                "verification_url"
            } else {
                "verification_uri"
            }] = json!(page);
            json_response(StatusCode::OK, &v)
        }
        Ok(Err(e)) => {
            let api = e.to_oauth();
            json_response(api.status, &api.oauth_body(&[e.aadsts()], rid))
        }
        Err(_) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The device authorization endpoint failed.",
            rid,
        ),
    };
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    resp
}

/// `GET|POST /devicelogin`.
pub async fn page(app: &App, req: Request<Body>, rid: &str, peer: Option<String>) -> Response {
    if req.method() == Method::GET {
        return html(StatusCode::OK, &user_code_form(None));
    }
    // A form posted from another origin is refused (browsers send Origin on POST).
    let origin_ok = req
        .headers()
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o == "null" || o.eq_ignore_ascii_case(&app.endpoints.login()))
        .unwrap_or(true);
    if !origin_ok {
        return html(
            StatusCode::FORBIDDEN,
            &shell(
                "Sign-in refused",
                "<p id=\"error\">This form can only be sent from the sign-in page itself.</p>",
            ),
        );
    }
    let body = match read_body(req.into_body(), FORM_LIMIT).await {
        Ok(b) => b,
        Err(e) => return html(e.status, &user_code_form(Some(&e.message))),
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let tokens = app.tokens.clone();
    let (rid_s, ip) = (rid.to_string(), peer.unwrap_or_default());
    // Argon2 and the audit fsync run off the reactor.
    let out = tokio::task::spawn_blocking(move || {
        let get = |k: &str| form.get(k).cloned().unwrap_or_default();
        let c = PageClient {
            ip: &ip,
            request_id: &rid_s,
        };
        match get("step").as_str() {
            "code" => tokens.page_user_code(&get("otc"), &c),
            "password" => {
                tokens.page_credentials(&get("flow"), &get("username"), &get("password"), &c)
            }
            "totp" => tokens.page_totp(&get("flow"), &get("totp"), &c),
            "cancel" => tokens.page_cancel(&get("flow"), &c),
            _ => Ok(PageOutcome::UserCode {
                error: "Start by entering the code shown on your device.".into(),
            }),
        }
    })
    .await;
    match out {
        Ok(Ok(o)) => render(o),
        Ok(Err(e)) => {
            tracing::error!(request_id = %rid, error = %e, "device login failed");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                &shell(
                    "Sign-in failed",
                    "<p id=\"error\">The sign-in service failed. Try again.</p>",
                ),
            )
        }
        Err(_) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            &shell(
                "Sign-in failed",
                "<p id=\"error\">The sign-in service failed. Try again.</p>",
            ),
        ),
    }
}

fn render(o: PageOutcome) -> Response {
    match o {
        PageOutcome::UserCode { error } => html(StatusCode::OK, &user_code_form(Some(&error))),
        PageOutcome::Credentials { token, error } => html(
            StatusCode::OK,
            &shell(
                "Sign in",
                &format!(
                    "{}<form method=\"post\" action=\"/devicelogin\">\
                     <input type=\"hidden\" name=\"step\" value=\"password\">\
                     <input type=\"hidden\" name=\"flow\" value=\"{}\">\
                     <p><label>User name <input name=\"username\" autocomplete=\"username\" required autofocus></label></p>\
                     <p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
                     <p><button type=\"submit\">Sign in</button></p></form>{}",
                    error_p(error.as_deref()),
                    esc(&token),
                    cancel_form(&token)
                ),
            ),
        ),
        PageOutcome::Totp { token, upn, error } => html(
            StatusCode::OK,
            &shell(
                "Verify your identity",
                &format!(
                    "{}<p>Signing in as <strong id=\"upn\">{}</strong>. Enter the 6-digit code of your authenticator app.</p>{}{}",
                    error_p(error.as_deref()),
                    esc(&upn),
                    totp_form(&token),
                    cancel_form(&token)
                ),
            ),
        ),
        PageOutcome::Enrol {
            token,
            upn,
            enrolment,
            error,
        } => html(
            StatusCode::OK,
            &shell(
                "Set up your second factor",
                &format!(
                    "{}<p>Your organization requires a second factor for <strong id=\"upn\">{}</strong>.</p>{}\
                     <p>Then enter the first 6-digit code your app shows.</p>{}{}",
                    error_p(error.as_deref()),
                    esc(&upn),
                    enrolment.as_ref().map(secret_block).unwrap_or_default(),
                    totp_form(&token),
                    cancel_form(&token)
                ),
            ),
        ),
        PageOutcome::Done => html(
            StatusCode::OK,
            &shell(
                "Signed in",
                "<p id=\"done\">You have signed in to the application on your device. You may now close this window.</p>",
            ),
        ),
        PageOutcome::Failed { error } => html(
            StatusCode::OK,
            &shell("Sign-in not completed", &error_p(Some(&error))),
        ),
    }
}

fn secret_block(e: &Enrolment) -> String {
    format!(
        "<p>Add this account to your authenticator app (TOTP, {} digits, every {} seconds, {}). \
         This secret is shown only now.</p>\
         <p>Secret: <code id=\"secret\">{}</code></p><p>Or as a link: <code id=\"otpauth\">{}</code></p>",
        e.digits,
        e.period,
        e.algorithm,
        esc(&e.secret),
        esc(&e.otpauth_uri)
    )
}

fn totp_form(token: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/devicelogin\">\
         <input type=\"hidden\" name=\"step\" value=\"totp\">\
         <input type=\"hidden\" name=\"flow\" value=\"{}\">\
         <p><label>Code <input name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9]{{6}}\" required autofocus></label></p>\
         <p><button type=\"submit\">Verify</button></p></form>",
        esc(token)
    )
}

fn cancel_form(token: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/devicelogin\">\
         <input type=\"hidden\" name=\"step\" value=\"cancel\">\
         <input type=\"hidden\" name=\"flow\" value=\"{}\">\
         <p><button type=\"submit\">Cancel</button></p></form>",
        esc(token)
    )
}

fn user_code_form(error: Option<&str>) -> String {
    shell(
        "Enter code",
        &format!(
            "{}<p>Enter the code displayed on your device or in your terminal.</p>\
             <form method=\"post\" action=\"/devicelogin\">\
             <input type=\"hidden\" name=\"step\" value=\"code\">\
             <p><label>Code <input name=\"otc\" autocomplete=\"off\" required autofocus></label></p>\
             <p><button type=\"submit\">Next</button></p></form>",
            error_p(error)
        ),
    )
}

fn error_p(error: Option<&str>) -> String {
    error
        .map(|e| format!("<p id=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default()
}

fn shell(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} - Ciel</title></head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    )
}

/// HTML text and attribute escaping.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html(status: StatusCode, body: &str) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
