//! The two HTTP services: decisions (`POST /imagepolicy`, `POST /validate`)
//! on the TLS port, and `/healthz` + `/metrics` on the plain loopback port.
//!
//! A decision is a pure function of the body and the loaded policy; nothing
//! here does I/O beyond reading the body and writing the answer. Every
//! failure is an HTTP status with a one-line message: 400 for a body that is
//! not the review it should be, 413 over [`MAX_BODY`], 404/405 for other
//! routes. A denial is 200 with `allowed: false`; any other status makes
//! kube-apiserver fall back to `defaultAllow`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::Shared;
use crate::policy::review::{
    decide, AdmissionReview, AdmissionReviewResponse, Decision, ImageReview, ImageReviewResponse,
    Outcome,
};
use crate::policy::MAX_REASON_LEN;

/// kube-apiserver's own request limit is 3 MiB, but an ImageReview carries
/// only images, a namespace and filtered annotations; 1 MiB is generous.
pub const MAX_BODY: usize = 1024 * 1024;

/// Where ImagePolicyWebhook POSTs ImageReviews.
pub const IMAGE_POLICY_PATH: &str = "/imagepolicy";
/// Where a ValidatingAdmissionWebhook POSTs AdmissionReviews.
pub const VALIDATE_PATH: &str = "/validate";

type Answer = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<String>) -> Answer {
    let mut body: String = body.into();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(body: Vec<u8>) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn refuse(shared: &Shared, status: StatusCode, message: impl Into<String>) -> Answer {
    shared.metrics.refused(status.as_u16());
    let message: String = message.into();
    tracing::info!(status = status.as_u16(), "refused request: {message}");
    text(status, message)
}

/// The decision port.
pub async fn decisions(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Answer, Infallible> {
    let endpoint = match req.uri().path() {
        IMAGE_POLICY_PATH => IMAGE_POLICY_PATH,
        VALIDATE_PATH => VALIDATE_PATH,
        other => {
            let other = crate::policy::bounded(other, 200);
            return Ok(refuse(
                &shared,
                StatusCode::NOT_FOUND,
                format!("no such endpoint {other:?}: POST {IMAGE_POLICY_PATH} (ImageReview) or {VALIDATE_PATH} (AdmissionReview)"),
            ));
        }
    };
    if req.method() != Method::POST {
        let mut r = refuse(
            &shared,
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{endpoint} takes POST only"),
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("POST"),
        );
        return Ok(r);
    }
    // Refuse a declared oversize at once rather than read a mebibyte first.
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Ok(too_large(&shared));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Ok(too_large(&shared)),
        Err(e) => {
            return Ok(refuse(
                &shared,
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ))
        }
    };
    let start = Instant::now();
    let answer = if endpoint == IMAGE_POLICY_PATH {
        image_review(&shared, &body, start)
    } else {
        admission_review(&shared, &body, start)
    };
    Ok(answer)
}

fn too_large(shared: &Shared) -> Answer {
    refuse(
        shared,
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over {MAX_BODY} bytes"),
    )
}

fn image_review(shared: &Shared, body: &[u8], start: Instant) -> Answer {
    let review = match ImageReview::from_json(body) {
        Ok(r) => r,
        Err(e) => return refuse(shared, StatusCode::BAD_REQUEST, e.to_string()),
    };
    let request = review.to_request();
    let loaded = shared.current();
    let decision = decide(&request, &loaded.policy, loaded.mode);
    let answer = serde_json::to_vec(&ImageReviewResponse::from_decision(&decision));
    finish(
        shared,
        IMAGE_POLICY_PATH,
        &request.images,
        &decision,
        answer,
        start,
        None,
    )
}

fn admission_review(shared: &Shared, body: &[u8], start: Instant) -> Answer {
    let review = match AdmissionReview::from_json(body) {
        Ok(r) => r,
        Err(e) => return refuse(shared, StatusCode::BAD_REQUEST, e.to_string()),
    };
    let request = match review.to_request() {
        Ok(r) => r,
        Err(e) => return refuse(shared, StatusCode::BAD_REQUEST, e.to_string()),
    };
    let loaded = shared.current();
    let decision = decide(&request, &loaded.policy, loaded.mode);
    let answer = serde_json::to_vec(&AdmissionReviewResponse::from_decision(
        review.uid(),
        &decision,
    ));
    finish(
        shared,
        VALIDATE_PATH,
        &request.images,
        &decision,
        answer,
        start,
        Some(review.uid()),
    )
}

fn finish(
    shared: &Shared,
    endpoint: &'static str,
    images: &[String],
    decision: &Decision,
    answer: serde_json::Result<Vec<u8>>,
    start: Instant,
    uid: Option<&str>,
) -> Answer {
    let body = match answer {
        Ok(b) => b,
        // Serialising plain strings and maps cannot fail; if it ever did,
        // a 500 lets kube-apiserver retry and then apply defaultAllow.
        Err(e) => {
            return refuse(
                shared,
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the answer: {e}"),
            )
        }
    };
    let verdict = if decision.allowed { "allow" } else { "deny" };
    let reason = decision.outcome.code();
    shared
        .metrics
        .decision(endpoint, verdict, reason, start.elapsed());
    log_decision(endpoint, images, decision, verdict, reason, uid);
    json(body)
}

/// One line per decision. Values from the pod spec are Debug-quoted, so a
/// hostile image name cannot forge a log line; no credential is ever in a
/// review.
fn log_decision(
    endpoint: &str,
    images: &[String],
    decision: &Decision,
    verdict: &str,
    reason: &str,
    uid: Option<&str>,
) {
    let images: Vec<String> = images
        .iter()
        .map(|i| crate::policy::bounded(i, 300))
        .collect();
    let message = crate::policy::bounded(&decision.reason, MAX_REASON_LEN);
    let uid = uid.unwrap_or("");
    if decision.loud {
        tracing::warn!(
            endpoint,
            namespace = ?decision.namespace,
            ?images,
            verdict,
            reason,
            uid,
            "BREAK-GLASS decision: {message:?}"
        );
    } else if !decision.allowed || matches!(decision.outcome, Outcome::AuditOnly(_)) {
        tracing::warn!(endpoint, namespace = ?decision.namespace, ?images, verdict, reason, uid, "decision: {message:?}");
    } else {
        tracing::info!(endpoint, namespace = ?decision.namespace, ?images, verdict, reason, uid, "decision: {message:?}");
    }
}

/// The plain-HTTP loopback port: liveness and metrics, never a decision.
pub async fn health(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Answer, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "GET only"));
    }
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok"),
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "GET /healthz or /metrics"),
    })
}
