//! The webhook's side of the policy: ImageReview and AdmissionReview bodies in
//! and out, and [`decide`], the one decision both endpoints answer with.
//!
//! Requests are parsed leniently (unknown fields ignored, `null` read as
//! empty), as kube-apiserver's own decoder does, but the `apiVersion` and
//! `kind` must be exactly the ones served: anything else is a [`ReviewError`],
//! which the server answers with 400. Responses are built strictly from a
//! [`Decision`]. Everything here is pure, like the rest of [`crate::policy`].
//!
//! A mirror pod (kubelet's API copy of a static pod) is reviewed like any other
//! pod: an ImageReview cannot tell it apart, and treating the two endpoints
//! differently would make the policy depend on how it is wired.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::{bounded, evaluate_str, Policy, Rule, Verdict, MAX_REASON_LEN};

/// The only ImageReview `apiVersion` served (and answered with).
pub const IMAGE_REVIEW_API_VERSION: &str = "imagepolicy.k8s.io/v1alpha1";
/// ImageReview's `kind`.
pub const IMAGE_REVIEW_KIND: &str = "ImageReview";
/// The only AdmissionReview `apiVersion` served (and answered with).
pub const ADMISSION_REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
/// AdmissionReview's `kind`.
pub const ADMISSION_REVIEW_KIND: &str = "AdmissionReview";

/// The pod annotation that asks for break-glass admission; its value is the
/// reason, which must not be empty.
pub const BREAK_GLASS_ANNOTATION: &str = "break-glass.image-policy.k8s.io/reason";

/// kube-apiserver sends only annotations whose key contains this
/// (`filterAnnotations`, a substring test); AdmissionReview pods are filtered
/// the same way so both endpoints see the same request.
pub const IMAGE_POLICY_ANNOTATION_MARK: &str = ".image-policy.k8s.io/";

/// AdmissionReview warnings longer than this are truncated by clients.
pub const MAX_WARNING_LEN: usize = 120;
const MAX_WARNINGS: usize = 8;
const MAX_ANNOTATION_VALUE: usize = 512;

/// Whether denials are enforced or only recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Denials are answered as denials.
    #[default]
    Enforce,
    /// Allow everything; what would have been denied goes into the audit
    /// annotations and the log.
    Audit,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "audit" => Ok(Mode::Audit),
            other => Err(format!(
                "mode {:?} is neither \"enforce\" nor \"audit\"",
                bounded(other, 40)
            )),
        }
    }
}

/// Why a request body cannot be reviewed. The server answers 400 with this
/// message; it is bounded and quotes nothing unescaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON of the expected shape, or a Pod request without the pod.
    #[error("request body is not a valid {kind}: {message}")]
    Malformed {
        /// The review type expected: `ImageReview` or `AdmissionReview`.
        kind: &'static str,
        /// The decoder's complaint, bounded.
        message: String,
    },
    /// An `apiVersion` other than the one served.
    #[error("expected apiVersion {expected:?}, got {found:?}")]
    WrongApiVersion {
        /// The one served.
        expected: &'static str,
        /// The one sent, bounded.
        found: String,
    },
    /// A `kind` other than the one served.
    #[error("expected kind {expected:?}, got {found:?}")]
    WrongKind {
        /// The one served.
        expected: &'static str,
        /// The one sent, bounded.
        found: String,
    },
    /// An AdmissionReview without `request`.
    #[error("AdmissionReview has no request")]
    MissingRequest,
    /// An AdmissionReview whose `request.uid` is empty: there is nothing to
    /// echo, so no valid answer.
    #[error("AdmissionReview request has no uid")]
    MissingUid,
}

fn malformed(kind: &'static str, e: serde_json::Error) -> ReviewError {
    ReviewError::Malformed {
        kind,
        message: bounded(&e.to_string(), 300),
    }
}

fn check_type(
    api_version: &str,
    kind: &str,
    want_version: &'static str,
    want_kind: &'static str,
) -> Result<(), ReviewError> {
    if api_version != want_version {
        return Err(ReviewError::WrongApiVersion {
            expected: want_version,
            found: bounded(api_version, 100),
        });
    }
    if kind != want_kind {
        return Err(ReviewError::WrongKind {
            expected: want_kind,
            found: bounded(kind, 100),
        });
    }
    Ok(())
}

/// Go's decoder reads `null` as the zero value; serde's would refuse it.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn filter_annotations(all: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    all.iter()
        .filter(|(k, _)| k.contains(IMAGE_POLICY_ANNOTATION_MARK))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

// ---------------------------------------------------------------------------
// ImageReview (imagepolicy.k8s.io/v1alpha1)

/// An ImageReview as kube-apiserver's ImagePolicyWebhook sends it. It also
/// serialises, with Go's `omitempty` rules, so tests can play the apiserver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageReview {
    /// Must be [`IMAGE_REVIEW_API_VERSION`].
    #[serde(deserialize_with = "nullable")]
    pub api_version: String,
    /// Must be [`IMAGE_REVIEW_KIND`].
    #[serde(deserialize_with = "nullable")]
    pub kind: String,
    /// What is to be admitted.
    #[serde(deserialize_with = "nullable")]
    pub spec: ImageReviewSpec,
}

/// An ImageReview's `spec`: the pod's images, annotations and namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageReviewSpec {
    /// Containers and init containers, or only the ephemeral containers for
    /// the `pods/ephemeralcontainers` subresource.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ImageReviewContainerSpec>,
    /// The pod's annotations; kube-apiserver sends only those whose key
    /// contains [`IMAGE_POLICY_ANNOTATION_MARK`].
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// The pod's namespace.
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
}

/// One container in an ImageReview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageReviewContainerSpec {
    /// The image as written in the pod spec.
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub image: String,
}

impl ImageReview {
    /// Parses a request body; the type must be `imagepolicy.k8s.io/v1alpha1`
    /// `ImageReview`.
    pub fn from_json(body: &[u8]) -> Result<ImageReview, ReviewError> {
        let review: ImageReview =
            serde_json::from_slice(body).map_err(|e| malformed(IMAGE_REVIEW_KIND, e))?;
        check_type(
            &review.api_version,
            &review.kind,
            IMAGE_REVIEW_API_VERSION,
            IMAGE_REVIEW_KIND,
        )?;
        Ok(review)
    }

    /// What [`decide`] reads: the namespace, every image, the image-policy
    /// annotations.
    pub fn to_request(&self) -> ReviewRequest {
        ReviewRequest {
            namespace: self.spec.namespace.clone(),
            images: self
                .spec
                .containers
                .iter()
                .map(|c| c.image.clone())
                .collect(),
            annotations: filter_annotations(&self.spec.annotations),
            not_reviewed: None,
        }
    }
}

/// The answer to an ImageReview. A denial is HTTP 200 with `allowed: false`:
/// any other status is a backend failure, which `defaultAllow` decides.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReviewResponse {
    /// [`IMAGE_REVIEW_API_VERSION`].
    pub api_version: String,
    /// [`IMAGE_REVIEW_KIND`].
    pub kind: String,
    /// The answer.
    pub status: ImageReviewStatus,
}

/// An ImageReview answer's `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReviewStatus {
    /// Whether the pod is admitted.
    pub allowed: bool,
    /// Why, for the user whose pod was refused; omitted when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The apiserver prefixes each key with
    /// `imagepolicywebhook.image-policy.k8s.io/` in the audit event.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

impl ImageReviewResponse {
    /// The answer that carries `decision`.
    pub fn from_decision(decision: &Decision) -> ImageReviewResponse {
        ImageReviewResponse {
            api_version: IMAGE_REVIEW_API_VERSION.to_string(),
            kind: IMAGE_REVIEW_KIND.to_string(),
            status: ImageReviewStatus {
                allowed: decision.allowed,
                reason: decision.reason.clone(),
                audit_annotations: decision.audit_annotations.clone(),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// AdmissionReview (admission.k8s.io/v1), for a ValidatingAdmissionWebhook

/// An AdmissionReview as a ValidatingAdmissionWebhook receives it. Also
/// serialises, so tests can play the apiserver.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AdmissionReview {
    /// Must be [`ADMISSION_REVIEW_API_VERSION`].
    #[serde(deserialize_with = "nullable")]
    pub api_version: String,
    /// Must be [`ADMISSION_REVIEW_KIND`].
    #[serde(deserialize_with = "nullable")]
    pub kind: String,
    /// The request; required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<AdmissionRequest>,
}

/// The fields of `request` the decision needs; the rest is ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AdmissionRequest {
    /// Identifies the request; the response must echo it.
    #[serde(deserialize_with = "nullable")]
    pub uid: String,
    /// The object's type; only a core `Pod` is reviewed.
    #[serde(deserialize_with = "nullable")]
    pub kind: GroupVersionKind,
    /// `subResource`: empty for the pod itself, `ephemeralcontainers` for
    /// `kubectl debug`; others carry no images.
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub sub_resource: String,
    /// The namespace; the pod's own is used when empty.
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`; the last two carry no pod.
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub operation: String,
    /// Kept as JSON until the kind is known to be a Pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<serde_json::Value>,
}

/// An object's API type, as AdmissionReview names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct GroupVersionKind {
    /// API group; empty for the core group.
    #[serde(deserialize_with = "nullable")]
    pub group: String,
    /// API version, e.g. `v1`.
    #[serde(deserialize_with = "nullable")]
    pub version: String,
    /// Kind, e.g. `Pod`.
    #[serde(deserialize_with = "nullable")]
    pub kind: String,
}

/// The parts of a Pod the policy reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    /// Its namespace and annotations.
    #[serde(deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
    /// Its containers.
    #[serde(deserialize_with = "nullable")]
    pub spec: PodSpec,
}

/// A Pod's `metadata`, as far as the policy reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    /// The pod's name; not used by the decision.
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// The pod's namespace, used when the request names none.
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
    /// Every annotation; only image-policy ones reach the decision.
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// A Pod's `spec`: its three container lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    /// `containers`.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    /// `initContainers`.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    /// `ephemeralContainers`: the only list reviewed for the
    /// `ephemeralcontainers` subresource.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub ephemeral_containers: Vec<Container>,
}

/// One container of any of the lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Container {
    /// The container's name; not used by the decision.
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// The image as written.
    #[serde(deserialize_with = "nullable")]
    pub image: String,
}

impl AdmissionReview {
    /// Parses a request body; the type must be `admission.k8s.io/v1`
    /// `AdmissionReview` with a `request` carrying a `uid` to echo.
    pub fn from_json(body: &[u8]) -> Result<AdmissionReview, ReviewError> {
        let review: AdmissionReview =
            serde_json::from_slice(body).map_err(|e| malformed(ADMISSION_REVIEW_KIND, e))?;
        check_type(
            &review.api_version,
            &review.kind,
            ADMISSION_REVIEW_API_VERSION,
            ADMISSION_REVIEW_KIND,
        )?;
        match &review.request {
            None => Err(ReviewError::MissingRequest),
            Some(r) if r.uid.is_empty() => Err(ReviewError::MissingUid),
            Some(_) => Ok(review),
        }
    }

    /// The uid to echo; empty only for a review not built by [`from_json`](Self::from_json).
    pub fn uid(&self) -> &str {
        self.request.as_ref().map_or("", |r| r.uid.as_str())
    }

    /// The images to review, as ImagePolicyWebhook would send them: for the
    /// `ephemeralcontainers` subresource only the ephemeral containers, for
    /// the pod itself every container list. Requests that carry no pod images
    /// (another kind, another subresource, a DELETE) are passed through as not
    /// reviewed, so a too-wide webhook registration cannot block them.
    pub fn to_request(&self) -> Result<ReviewRequest, ReviewError> {
        let request = self.request.as_ref().ok_or(ReviewError::MissingRequest)?;
        let skip = |why: String| ReviewRequest {
            namespace: request.namespace.clone(),
            not_reviewed: Some(bounded(&why, 200)),
            ..ReviewRequest::default()
        };
        if request.kind.kind.is_empty() {
            return Err(ReviewError::Malformed {
                kind: ADMISSION_REVIEW_KIND,
                message: "request has no kind".into(),
            });
        }
        if request.kind.kind != "Pod" || !request.kind.group.is_empty() {
            return Ok(skip(format!(
                "kind {:?} is not a core Pod",
                format!("{}/{}", request.kind.group, request.kind.kind)
            )));
        }
        let ephemeral_only = match request.sub_resource.as_str() {
            "" => false,
            "ephemeralcontainers" => true,
            other => return Ok(skip(format!("subresource {other:?} carries no images"))),
        };
        let object = match (&request.object, request.operation.as_str()) {
            (Some(object), _) => object,
            (None, op @ ("DELETE" | "CONNECT")) => {
                return Ok(skip(format!("{op} carries no pod to review")));
            }
            (None, op) => {
                return Err(ReviewError::Malformed {
                    kind: ADMISSION_REVIEW_KIND,
                    message: format!("{:?} request for a Pod has no object", bounded(op, 40)),
                });
            }
        };
        let pod = Pod::deserialize(object).map_err(|e| malformed(ADMISSION_REVIEW_KIND, e))?;
        let images = if ephemeral_only {
            pod.spec
                .ephemeral_containers
                .iter()
                .map(|c| c.image.clone())
                .collect()
        } else {
            pod.spec
                .containers
                .iter()
                .chain(&pod.spec.init_containers)
                .chain(&pod.spec.ephemeral_containers)
                .map(|c| c.image.clone())
                .collect()
        };
        let namespace = if request.namespace.is_empty() {
            pod.metadata.namespace.clone()
        } else {
            request.namespace.clone()
        };
        Ok(ReviewRequest {
            namespace,
            images,
            annotations: filter_annotations(&pod.metadata.annotations),
            not_reviewed: None,
        })
    }
}

/// The answer to an AdmissionReview.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse {
    /// [`ADMISSION_REVIEW_API_VERSION`].
    pub api_version: String,
    /// [`ADMISSION_REVIEW_KIND`].
    pub kind: String,
    /// The answer.
    pub response: AdmissionResponse,
}

/// An AdmissionReview answer's `response`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's `uid`, echoed.
    pub uid: String,
    /// Whether the pod is admitted.
    pub allowed: bool,
    /// Set only on a denial: 403 Forbidden with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AdmissionStatus>,
    /// Shown by kubectl; each at most [`MAX_WARNING_LEN`] bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The apiserver prefixes each key with the webhook's name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

/// The `metav1.Status` subset a denial carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionStatus {
    /// HTTP status shown to the client: 403.
    pub code: u16,
    /// Why the pod was denied, for the user.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Machine-readable reason: `Forbidden`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl AdmissionReviewResponse {
    /// The answer to request `uid` that carries `decision`.
    pub fn from_decision(uid: &str, decision: &Decision) -> AdmissionReviewResponse {
        let status = (!decision.allowed).then(|| AdmissionStatus {
            code: 403,
            message: decision.reason.clone(),
            reason: "Forbidden".to_string(),
        });
        AdmissionReviewResponse {
            api_version: ADMISSION_REVIEW_API_VERSION.to_string(),
            kind: ADMISSION_REVIEW_KIND.to_string(),
            response: AdmissionResponse {
                uid: uid.to_string(),
                allowed: decision.allowed,
                status,
                warnings: decision.warnings.clone(),
                audit_annotations: decision.audit_annotations.clone(),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// The decision

/// What either review asks, reduced to what the policy reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewRequest {
    /// The pod's namespace, for `exemptNamespaces`.
    pub namespace: String,
    /// Verbatim from the pod spec, in order.
    pub images: Vec<String>,
    /// Only keys containing [`IMAGE_POLICY_ANNOTATION_MARK`].
    pub annotations: BTreeMap<String, String>,
    /// Set when the request carries no pod images to review; the reason.
    pub not_reviewed: Option<String>,
}

/// Why the decision came out as it did. [`code`](Outcome::code) is stable
/// (metrics label it `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Every image passed (warnings may remain).
    Allowed,
    /// Denied for this rule (the first denial's).
    Denied(Rule),
    /// The namespace is in `policy.exemptNamespaces`.
    ExemptNamespace,
    /// Would be denied for this rule; admitted by break-glass.
    BreakGlass(Rule),
    /// Would be denied for this rule; admitted because the mode is audit.
    AuditOnly(Rule),
    /// Nothing to review (not a pod, another subresource, no object).
    NotReviewed,
}

impl Outcome {
    /// The stable code: `allowed`, a [`Rule`] code, `exempt-namespace`,
    /// `break-glass`, `audit-would-deny` or `not-reviewed`.
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied(rule) => rule.code(),
            Outcome::ExemptNamespace => "exempt-namespace",
            Outcome::BreakGlass(_) => "break-glass",
            Outcome::AuditOnly(_) => "audit-would-deny",
            Outcome::NotReviewed => "not-reviewed",
        }
    }

    /// The rule that denied or would have denied, if any.
    pub fn rule(self) -> Option<Rule> {
        match self {
            Outcome::Denied(r) | Outcome::BreakGlass(r) | Outcome::AuditOnly(r) => Some(r),
            _ => None,
        }
    }
}

/// The answer to one review, for either response type and the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the pod is admitted.
    pub allowed: bool,
    /// Why.
    pub outcome: Outcome,
    /// Human text: why denied, or what was let through. Empty for a plain
    /// allow; at most [`MAX_REASON_LEN`] bytes.
    pub reason: String,
    /// The request's namespace, for the log line.
    pub namespace: String,
    /// One per reviewed image, in request order.
    pub verdicts: Vec<Verdict>,
    /// Unprefixed keys (`would-deny`, `break-glass`, …); bounded values.
    pub audit_annotations: BTreeMap<String, String>,
    /// For AdmissionReview's `warnings`: each at most [`MAX_WARNING_LEN`].
    pub warnings: Vec<String>,
    /// Log this decision at warning level whatever the verbosity: break-glass
    /// was used.
    pub loud: bool,
}

/// Decides a review. Total and pure: the same request and policy always give
/// the same decision, and no input makes it fail.
///
/// Order: nothing to review → exempt namespace → every image judged by
/// [`evaluate_str`] → if any is denied: break-glass (when allowed and the pod
/// carries a non-empty [`BREAK_GLASS_ANNOTATION`]), else audit mode, else deny.
pub fn decide(request: &ReviewRequest, policy: &Policy, mode: Mode) -> Decision {
    let mut decision = Decision {
        allowed: true,
        outcome: Outcome::Allowed,
        reason: String::new(),
        namespace: request.namespace.clone(),
        verdicts: Vec::new(),
        audit_annotations: BTreeMap::new(),
        warnings: Vec::new(),
        loud: false,
    };
    if let Some(why) = &request.not_reviewed {
        decision.outcome = Outcome::NotReviewed;
        decision.reason = format!("not reviewed: {why}");
        return decision;
    }
    if policy.is_exempt(&request.namespace) {
        exempt(&mut decision);
        return decision;
    }

    evaluate(&mut decision, request, policy);
    let denied: Vec<&Verdict> = decision.verdicts.iter().filter(|v| !v.allowed()).collect();
    let Some(rule) = denied.first().and_then(|v| v.reason()) else {
        return decision;
    };
    let denial = denial_text(&denied, decision.verdicts.len());

    if policy.allow_break_glass {
        if let Some(why) = break_glass_reason(request) {
            break_glass(&mut decision, rule, why, &denial);
            return decision;
        }
    }
    if mode == Mode::Audit {
        audit_only(&mut decision, rule, &denial);
        return decision;
    }
    deny(&mut decision, rule, &denial, request, policy);
    decision
}

/// The step for a namespace the policy never reviews; the audit annotation
/// keeps the exemption visible in kube-apiserver's audit log.
fn exempt(decision: &mut Decision) {
    decision.outcome = Outcome::ExemptNamespace;
    decision.reason = format!(
        "namespace {:?} is exempt (policy.exemptNamespaces)",
        decision.namespace
    );
    decision
        .audit_annotations
        .insert("exempt-namespace".into(), decision.namespace.clone());
}

/// Judges every image; untrusted-but-allowed ones are surfaced as a warning
/// and an audit annotation even when the pod is admitted.
fn evaluate(decision: &mut Decision, request: &ReviewRequest, policy: &Policy) {
    decision.verdicts = request
        .images
        .iter()
        .map(|image| evaluate_str(image, policy))
        .collect();
    let warned: Vec<&str> = decision
        .verdicts
        .iter()
        .filter(|v| v.warnings().next().is_some())
        .map(|v| v.image.as_str())
        .collect();
    if !warned.is_empty() {
        let list = bounded(&warned.join(", "), MAX_ANNOTATION_VALUE);
        decision
            .audit_annotations
            .insert("untrusted-images".into(), list.clone());
        decision.warnings.push(bounded(
            &format!("untrusted images: {list}"),
            MAX_WARNING_LEN,
        ));
    }
}

/// The pod's break-glass reason; a blank one counts as none, so an empty
/// annotation can never wave a denied image through.
fn break_glass_reason(request: &ReviewRequest) -> Option<&str> {
    request
        .annotations
        .get(BREAK_GLASS_ANNOTATION)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// Admits a denied pod loudly: the reason and what would have been denied
/// go to the audit log and back to the user.
fn break_glass(decision: &mut Decision, rule: Rule, why: &str, denial: &str) {
    let why = bounded(why, MAX_ANNOTATION_VALUE);
    decision.outcome = Outcome::BreakGlass(rule);
    decision.loud = true;
    decision.reason = bounded(
        &format!("break-glass ({why:?}) admitted: {denial}"),
        MAX_REASON_LEN,
    );
    decision
        .audit_annotations
        .insert("break-glass".into(), why.clone());
    decision
        .audit_annotations
        .insert("would-deny".into(), bounded(denial, MAX_ANNOTATION_VALUE));
    decision.warnings.push(bounded(
        &format!("break-glass used: {why:?}"),
        MAX_WARNING_LEN,
    ));
    decision.warnings.truncate(MAX_WARNINGS);
}

/// Admits a denied pod in audit mode; the would-be denial goes first among
/// the warnings so truncation never drops it.
fn audit_only(decision: &mut Decision, rule: Rule, denial: &str) {
    decision.outcome = Outcome::AuditOnly(rule);
    decision.reason = bounded(&format!("audit mode, would deny: {denial}"), MAX_REASON_LEN);
    decision
        .audit_annotations
        .insert("would-deny".into(), bounded(denial, MAX_ANNOTATION_VALUE));
    decision.warnings.insert(
        0,
        bounded(&format!("would be denied: {denial}"), MAX_WARNING_LEN),
    );
    decision.warnings.truncate(MAX_WARNINGS);
}

/// Denies; a break-glass annotation that did not apply says why in the
/// reason, so the user is not left guessing.
fn deny(
    decision: &mut Decision,
    rule: Rule,
    denial: &str,
    request: &ReviewRequest,
    policy: &Policy,
) {
    let hint = if request.annotations.contains_key(BREAK_GLASS_ANNOTATION) {
        if !policy.allow_break_glass {
            " (break-glass is not enabled: policy.allowBreakGlass is false)"
        } else {
            " (break-glass needs a non-empty reason)"
        }
    } else {
        ""
    };
    decision.allowed = false;
    decision.outcome = Outcome::Denied(rule);
    decision.reason = bounded_with_tail(denial, hint, MAX_REASON_LEN);
}

/// `N of M images denied: <first message>; <second>…`, bounded.
fn denial_text(denied: &[&Verdict], total: usize) -> String {
    let messages: Vec<String> = denied
        .iter()
        .map(|v| {
            let all: Vec<&str> = v.denials().map(|f| f.message.as_str()).collect();
            all.join("; ")
        })
        .collect();
    bounded(
        &format!(
            "{} of {total} images denied: {}",
            denied.len(),
            messages.join("; ")
        ),
        MAX_REASON_LEN,
    )
}

/// `head` cut so that `tail` always fits within `max`.
fn bounded_with_tail(head: &str, tail: &str, max: usize) -> String {
    let mut s = bounded(head, max.saturating_sub(tail.len()));
    s.push_str(tail);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{RawPolicy, Untrusted};

    const D: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn strict() -> Policy {
        Policy::from_raw(&RawPolicy {
            trusted_registries: Some(vec!["registry.k8s.io".into(), "docker.io/library".into()]),
            untrusted: Some(Untrusted::Deny),
            require_digest: Some(true),
            deny_latest: Some(true),
            exempt_namespaces: Some(vec!["tools".into()]),
            allow_break_glass: Some(true),
        })
        .unwrap()
    }

    fn req(ns: &str, images: &[&str], annotations: &[(&str, &str)]) -> ReviewRequest {
        ReviewRequest {
            namespace: ns.into(),
            images: images.iter().map(|s| s.to_string()).collect(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            not_reviewed: None,
        }
    }

    #[test]
    fn each_rule_allows_and_denies_with_its_reason() {
        let p = strict();
        let pinned = format!("registry.k8s.io/pause:3.9@{D}");
        let table: &[(&str, Outcome)] = &[
            (&pinned, Outcome::Allowed),
            (
                "registry.k8s.io/pause:3.9",
                Outcome::Denied(Rule::NotDigestPinned),
            ),
            ("nginx", Outcome::Denied(Rule::NotDigestPinned)),
            (
                "evil.com/pause:3.9",
                Outcome::Denied(Rule::UntrustedRegistry),
            ),
            ("not a reference", Outcome::Denied(Rule::InvalidReference)),
        ];
        for (image, want) in table {
            let d = decide(&req("default", &[image], &[]), &p, Mode::Enforce);
            assert_eq!(d.outcome, *want, "{image}");
            assert_eq!(d.allowed, *want == Outcome::Allowed, "{image}");
            if !d.allowed {
                assert!(d.reason.contains(&format!("{image:?}")), "{}", d.reason);
                assert!(d.reason.starts_with("1 of 1 images denied"), "{}", d.reason);
            } else {
                assert!(d.reason.is_empty());
            }
        }
        let d = decide(&req("default", &["nginx:latest"], &[]), &p, Mode::Enforce);
        assert!(d.reason.contains("policy.denyLatest") && d.reason.contains("requireDigest"));
    }

    #[test]
    fn exempt_namespace_skips_checks() {
        let d = decide(
            &req("tools", &["evil.com/x"], &[]),
            &strict(),
            Mode::Enforce,
        );
        assert!(d.allowed);
        assert_eq!(d.outcome, Outcome::ExemptNamespace);
        assert_eq!(d.audit_annotations["exempt-namespace"], "tools");
        assert!(d.verdicts.is_empty());
        // Exemption is by exact name.
        let d = decide(
            &req("tools2", &["evil.com/x"], &[]),
            &strict(),
            Mode::Enforce,
        );
        assert!(!d.allowed);
    }

    #[test]
    fn break_glass_is_allowed_only_when_enabled_and_loud() {
        let glass = [(BREAK_GLASS_ANNOTATION, "INC-42 registry down")];
        let d = decide(
            &req("default", &["evil.com/x"], &glass),
            &strict(),
            Mode::Enforce,
        );
        assert!(d.allowed && d.loud);
        assert_eq!(d.outcome, Outcome::BreakGlass(Rule::UntrustedRegistry));
        assert_eq!(d.audit_annotations["break-glass"], "INC-42 registry down");
        assert!(d.audit_annotations["would-deny"].contains("evil.com/x"));
        assert!(d.warnings.iter().any(|w| w.contains("break-glass")));

        // The reason is the pod author's text: escaped where a terminal shows it.
        let forged = [(BREAK_GLASS_ANNOTATION, "x\nWarning: all clear")];
        let d = decide(
            &req("default", &["evil.com/x"], &forged),
            &strict(),
            Mode::Enforce,
        );
        assert!(
            d.warnings.iter().all(|w| !w.contains('\n')),
            "{:?}",
            d.warnings
        );
        assert!(!d.reason.contains('\n'));

        let mut off = strict();
        off.allow_break_glass = false;
        let d = decide(
            &req("default", &["evil.com/x"], &glass),
            &off,
            Mode::Enforce,
        );
        assert!(!d.allowed && !d.loud);
        assert!(
            d.reason.ends_with("policy.allowBreakGlass is false)"),
            "{}",
            d.reason
        );

        let empty = [(BREAK_GLASS_ANNOTATION, "  ")];
        let d = decide(
            &req("default", &["evil.com/x"], &empty),
            &strict(),
            Mode::Enforce,
        );
        assert!(!d.allowed);
        assert!(d.reason.ends_with("non-empty reason)"), "{}", d.reason);

        // Break-glass on an allowed pod changes nothing.
        let ok = format!("registry.k8s.io/pause@{D}");
        let d = decide(&req("default", &[&ok], &glass), &strict(), Mode::Enforce);
        assert_eq!(d.outcome, Outcome::Allowed);
        assert!(!d.loud);
    }

    #[test]
    fn audit_mode_allows_and_records() {
        let d = decide(
            &req("default", &["evil.com/x", "nginx:1"], &[]),
            &strict(),
            Mode::Audit,
        );
        assert!(d.allowed && !d.loud);
        assert_eq!(d.outcome, Outcome::AuditOnly(Rule::UntrustedRegistry));
        assert_eq!(d.outcome.code(), "audit-would-deny");
        let would = &d.audit_annotations["would-deny"];
        assert!(would.starts_with("2 of 2 images denied"), "{would}");
        assert!(d.warnings[0].len() <= MAX_WARNING_LEN);
        let d = decide(&req("default", &[], &[]), &strict(), Mode::Audit);
        assert_eq!(d.outcome, Outcome::Allowed);
        assert!(d.audit_annotations.is_empty());
    }

    #[test]
    fn untrusted_warn_allows_with_annotation() {
        let mut p = strict();
        p.untrusted = Untrusted::Warn;
        p.require_digest = false;
        let d = decide(&req("default", &["evil.com/x:1"], &[]), &p, Mode::Enforce);
        assert!(d.allowed);
        assert_eq!(d.outcome, Outcome::Allowed);
        assert_eq!(d.audit_annotations["untrusted-images"], "evil.com/x:1");
        assert_eq!(d.warnings, ["untrusted images: evil.com/x:1"]);
    }

    #[test]
    fn reasons_and_annotations_are_bounded() {
        let images: Vec<String> = (0..500)
            .map(|i| format!("evil{i}.example.com/{}:v1", "x".repeat(200)))
            .collect();
        let images: Vec<&str> = images.iter().map(String::as_str).collect();
        for mode in [Mode::Enforce, Mode::Audit] {
            let mut p = strict();
            p.allow_break_glass = false;
            let d = decide(&req("default", &images, &[]), &p, mode);
            assert!(d.reason.len() <= MAX_REASON_LEN, "{}", d.reason.len());
            assert!(d
                .audit_annotations
                .values()
                .all(|v| v.len() <= MAX_ANNOTATION_VALUE));
            assert!(d.warnings.iter().all(|w| w.len() <= MAX_WARNING_LEN));
            assert!(d.warnings.len() <= MAX_WARNINGS);
        }
        let glass = "g".repeat(10_000);
        let d = decide(
            &req("default", &images, &[(BREAK_GLASS_ANNOTATION, &glass)]),
            &strict(),
            Mode::Enforce,
        );
        assert!(d.loud && d.reason.len() <= MAX_REASON_LEN);
        assert!(d.audit_annotations["break-glass"].len() <= MAX_ANNOTATION_VALUE);
        let d = decide(
            &req("default", &images, &[(BREAK_GLASS_ANNOTATION, "")]),
            &strict(),
            Mode::Enforce,
        );
        assert!(d.reason.len() <= MAX_REASON_LEN);
        assert!(d.reason.ends_with("non-empty reason)"));
    }

    #[test]
    fn wrong_types_are_typed_errors() {
        let e = ImageReview::from_json(
            br#"{"apiVersion":"imagepolicy.k8s.io/v1","kind":"ImageReview"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, ReviewError::WrongApiVersion { .. }), "{e}");
        let e = ImageReview::from_json(
            br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"AdmissionReview"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, ReviewError::WrongKind { .. }), "{e}");
        let e = ImageReview::from_json(br#"{"kind":"ImageReview"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected apiVersion \"imagepolicy.k8s.io/v1alpha1\", got \"\""
        );
        let e = AdmissionReview::from_json(
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, ReviewError::WrongApiVersion { .. }));
        let e = AdmissionReview::from_json(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        )
        .unwrap_err();
        assert_eq!(e, ReviewError::MissingRequest);
        let e = AdmissionReview::from_json(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
        )
        .unwrap_err();
        assert_eq!(e, ReviewError::MissingUid);
        let long = format!(
            r#"{{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{{"namespace":5,"x":"{}"}}}}"#,
            "y".repeat(5000)
        );
        let e = ImageReview::from_json(long.as_bytes()).unwrap_err();
        assert!(matches!(e, ReviewError::Malformed { .. }));
        assert!(e.to_string().len() < 400);
        let e = ImageReview::from_json(&[0xff, 0xfe]).unwrap_err();
        assert!(matches!(e, ReviewError::Malformed { .. }));
    }

    #[test]
    fn mode_parses() {
        assert_eq!("audit".parse::<Mode>(), Ok(Mode::Audit));
        assert_eq!("enforce".parse::<Mode>(), Ok(Mode::Enforce));
        assert!("Audit".parse::<Mode>().unwrap_err().contains("\"Audit\""));
        assert_eq!(Mode::default(), Mode::Enforce);
    }
}
