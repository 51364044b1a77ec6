//! The console's actions (POST forms): pause and resume, limits, roll back,
//! upload a version, retry or skip dead letters. Each checks the session's
//! CSRF token and admin scope, then calls the function the API's handler
//! calls, so both are audited alike (with the session's token name) and
//! refuse alike. A bulk action shows what it will touch and asks first.

use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;

use super::pages::{DeadForm, DEAD_PAGE};
use super::session::Session;
use super::view::{self, count, csrf, page, Refused};
use super::UiState;
use crate::api::connectors::{deploy, roll_back, set_limits, set_paused};
use crate::api::error::ApiError;
use crate::api::extract::MAX_COMPONENT_BYTES;
use crate::api::operate::{act_on, action_of, MAX_LIMIT};
use crate::store::LimitOverrides;

fn back_to(name: &str) -> Redirect {
    Redirect::to(&format!("/ui/connectors/{}", view::segment(name)))
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn bad(message: String) -> Refused {
    Refused::from(ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_form",
        message,
    ))
}

/// `POST /ui/connectors/{name}/{pause|resume|rollback|limits}`.
pub async fn connector(
    session: Session,
    State(state): State<UiState>,
    Path((name, what)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, Response> {
    session.may_act(field(&form, "csrf"))?;
    let app = &state.app;
    let done = match what.as_str() {
        "pause" => set_paused(app, &name, true, &session.actor).await,
        "resume" => set_paused(app, &name, false, &session.actor).await,
        "rollback" => roll_back(app, &name, &session.actor).await.map(|_| ()),
        "limits" => {
            let limits = limits_of(field(&form, "concurrency"), field(&form, "rate"))
                .map_err(IntoResponse::into_response)?;
            set_limits(app, &name, limits, &session.actor).await
        }
        _ => {
            return Err(view::refusal(
                StatusCode::NOT_FOUND,
                "There is no such action.",
            ))
        }
    };
    done.map_err(|e| Refused::from(e).into_response())?;
    Ok(back_to(&name).into_response())
}

/// The limits form: an empty field means "as configured".
fn limits_of(concurrency: &str, rate: &str) -> Result<LimitOverrides, Refused> {
    let concurrency = match concurrency.trim() {
        "" => None,
        c => Some(
            c.parse::<u32>()
                .map_err(|_| bad(format!("concurrency {c:?} is not a whole number")))?,
        ),
    };
    let rate = match rate.trim() {
        "" => None,
        r => Some(
            r.parse::<f64>()
                .map_err(|_| bad(format!("rate {r:?} is not a number")))?,
        ),
    };
    Ok(LimitOverrides { concurrency, rate })
}

/// `POST /ui/connectors/{name}/component`: a `.wasm` from a file field.
pub async fn upload(
    session: Session,
    State(state): State<UiState>,
    Path(name): Path<String>,
    mut multipart: Multipart,
) -> Result<Response, Response> {
    // Refused before a byte of the file is read: a read-only session, and a
    // form whose CSRF field (first in the form) is missing or wrong.
    session.admin_only()?;
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        view::refusal(
            e.status(),
            &format!("The upload could not be read: {}", e.body_text()),
        )
    };
    let mut checked = false;
    let mut wasm = None;
    while let Some(part) = multipart.next_field().await.map_err(unreadable)? {
        match part.name() {
            Some("csrf") => {
                session.may_act(&part.text().await.map_err(unreadable)?)?;
                checked = true;
            }
            Some("component") if checked => wasm = Some(part.bytes().await.map_err(unreadable)?),
            _ => {}
        }
    }
    if !checked {
        session.may_act("")?;
    }
    let wasm = wasm.unwrap_or_default();
    if wasm.len() > MAX_COMPONENT_BYTES {
        return Err(view::refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("A component may be at most {MAX_COMPONENT_BYTES} bytes."),
        ));
    }
    deploy(&state.app, &name, &wasm, &session.actor)
        .await
        .map_err(|e| Refused::from(e).into_response())?;
    Ok(back_to(&name).into_response())
}

/// `POST /ui/dead-letters/act`: `action` retry or skip; `scope` `selected`
/// (the `id` fields) or `filter` (the filter fields, up to 1,000). Without
/// `confirmed`, a page lists what would be touched and asks.
pub async fn dead_letters(
    session: Session,
    State(state): State<UiState>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, Response> {
    session.may_act(field(&form, "csrf"))?;
    let fail = |e: Refused| e.into_response();
    let action = field(&form, "action");
    let (op, verb) = action_of(action).map_err(|e| fail(e.into()))?;
    let filter = DeadForm {
        connector: field(&form, "connector").into(),
        event_type: field(&form, "type").into(),
        key: field(&form, "key").into(),
        reason: field(&form, "reason").into(),
        since: field(&form, "since").into(),
        until: field(&form, "until").into(),
        ..DeadForm::default()
    };
    let ids: Vec<i64> = match field(&form, "scope") {
        "selected" => {
            let ids: Result<Vec<i64>, _> = form
                .iter()
                .filter(|(k, _)| k == "id")
                .map(|(_, v)| v.parse::<i64>())
                .collect();
            let ids =
                ids.map_err(|_| fail(bad("a selected delivery id is not a number".into())))?;
            if ids.len() > MAX_LIMIT {
                return Err(fail(bad(format!(
                    "at most {MAX_LIMIT} dead letters per action, got {}",
                    ids.len()
                ))));
            }
            ids
        }
        "filter" => state
            .app
            .store
            .catalog()
            .dead_letters(&filter.filter(MAX_LIMIT).map_err(fail)?)
            .await
            .map_err(|e| fail(e.into()))?
            .into_iter()
            .map(|d| d.delivery_id)
            .collect(),
        other => return Err(fail(bad(format!("unknown scope {other:?}")))),
    };
    if ids.is_empty() {
        return Err(view::refusal(
            StatusCode::BAD_REQUEST,
            "Nothing was selected: tick the dead letters to act on, or act on the whole filter.",
        ));
    }
    if field(&form, "confirmed") != "1" {
        return Ok(confirm(&session, verb, field(&form, "scope"), &filter, &ids).into_response());
    }
    let applied = act_on(&state.app, &ids, op, &session.actor)
        .await
        .map_err(|e| fail(e.into()))?;
    let back = format!(
        "/ui/dead-letters?connector={}&type={}&key={}&reason={}&since={}&until={}",
        view::query_value(&filter.connector),
        view::query_value(&filter.event_type),
        view::query_value(&filter.key),
        view::query_value(&filter.reason),
        view::query_value(&filter.since),
        view::query_value(&filter.until),
    );
    Ok(page(
        "Done",
        &session,
        html! {
            p.done role="status" {
                (match verb { "retry" => "Retried ", _ => "Skipped " }) (count(applied as i64)) " of " (count(ids.len() as i64)) " dead letter(s)."
                @if applied < ids.len() { " The others were no longer dead (retried or skipped meanwhile)." }
            }
            p { a href=(back) { "Back to the dead letters" } " · " a href="/ui/audit" { "Audit log" } }
        },
    )
    .into_response())
}

fn confirm(
    session: &Session,
    verb: &str,
    scope: &str,
    filter: &DeadForm,
    ids: &[i64],
) -> maud::Markup {
    let what = if verb == "retry" {
        "Retry: each goes back to ready at its place in its lanes, and is attempted again."
    } else {
        "Skip: each ends as skipped and releases its lanes; it is never delivered."
    };
    page(
        &format!(
            "{} {} dead letter(s)?",
            if verb == "retry" { "Retry" } else { "Skip" },
            ids.len()
        ),
        session,
        html! {
            p { (what) }
            @if scope == "filter" && ids.len() == MAX_LIMIT {
                p.hint { "At most " (MAX_LIMIT) " per action; run it again for the rest." }
            }
            form method="post" action="/ui/dead-letters/act" {
                (csrf(session))
                (filter.hidden())
                input type="hidden" name="scope" value="selected";
                input type="hidden" name="confirmed" value="1";
                @for id in ids { input type="hidden" name="id" value=(id); }
                button.danger type="submit" name="action" value=(verb) { "Yes, " (verb) " " (ids.len()) }
                " "
                a href="/ui/dead-letters" { "Cancel" }
            }
            p.hint { "Deliveries: "
                @for id in ids.iter().take(DEAD_PAGE) { (id) " " }
                @if ids.len() > DEAD_PAGE { "…" }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_limit_fields_mean_as_configured() {
        assert_eq!(limits_of("", " ").ok(), Some(LimitOverrides::default()));
        let l = limits_of("8", "2.5").ok();
        assert_eq!(
            l,
            Some(LimitOverrides {
                concurrency: Some(8),
                rate: Some(2.5)
            })
        );
        assert!(limits_of("x", "").is_err());
        assert!(limits_of("", "fast").is_err());
    }
}
