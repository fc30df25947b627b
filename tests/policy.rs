//! The policy engine through its public API: request bodies in the exact shape
//! kube-apiserver sends them (ImagePolicyWebhook's `ImageReview`, a validating
//! webhook's `AdmissionReview`), the responses staticpin answers with, a mirror
//! pod of a pinned static pod, and a property that no body makes the parsers
//! or the decision panic.

use proptest::prelude::*;
use serde_json::{json, Value};
use staticpin::policy::review::{
    AdmissionReview, AdmissionReviewResponse, ImageReview, ImageReviewResponse,
    BREAK_GLASS_ANNOTATION,
};
use staticpin::policy::{
    decide, evaluate, Mode, Outcome, Policy, RawPolicy, ReviewError, Rule, TrustedPrefix,
    Untrusted, MAX_REASON_LEN,
};
use staticpin::reference::ImageRef;

const DIGEST: &str = "sha256:0d3bc3b4e2bc0c9bb2b07a3d7bbb8cd9c4cc1c8a6e0b1b7a7b3f5c8f0b3b7f11";

fn pinned_apiserver() -> String {
    format!("registry.k8s.io/kube-apiserver:v1.31.0@{DIGEST}")
}

fn policy() -> Policy {
    Policy::from_raw(&RawPolicy {
        trusted_registries: Some(vec!["registry.k8s.io".into(), "docker.io/library".into()]),
        untrusted: Some(Untrusted::Deny),
        require_digest: Some(true),
        deny_latest: Some(true),
        exempt_namespaces: Some(vec!["ci-sandbox".into()]),
        allow_break_glass: Some(true),
    })
    .unwrap()
}

/// What `imagePolicyWebhook.Admit` POSTs: Go's encoding of a
/// `v1alpha1.ImageReview` with TypeMeta first, an empty ObjectMeta, the
/// `omitempty` spec, and a zero status (`allowed` has no omitempty).
fn apiserver_image_review(images: &[&str], annotations: Value, namespace: &str) -> Vec<u8> {
    let containers: Vec<Value> = images.iter().map(|i| json!({ "image": i })).collect();
    let body = format!(
        r#"{{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{{"creationTimestamp":null}},"spec":{{"containers":{},"annotations":{},"namespace":"{}"}},"status":{{"allowed":false}}}}"#,
        serde_json::to_string(&containers).unwrap(),
        annotations,
        namespace
    );
    body.into_bytes()
}

#[test]
fn image_review_containers_and_init_containers() {
    // A pod with one container and one init container: the apiserver lists
    // both, containers first, and forwards only `*.image-policy.k8s.io/*`
    // annotations.
    let init = format!("docker.io/library/busybox:1.36@{DIGEST}");
    let body = apiserver_image_review(
        &[&pinned_apiserver(), &init],
        json!({"mycluster.image-policy.k8s.io/ticket-1234": "break-glass"}),
        "default",
    );
    let review = ImageReview::from_json(&body).unwrap();
    let request = review.to_request();
    assert_eq!(request.images, [pinned_apiserver(), init]);
    assert_eq!(request.namespace, "default");
    assert_eq!(request.annotations.len(), 1);

    let decision = decide(&request, &policy(), Mode::Enforce);
    assert!(decision.allowed, "{}", decision.reason);
    let answer = serde_json::to_value(ImageReviewResponse::from_decision(&decision)).unwrap();
    assert_eq!(
        answer,
        json!({"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","status":{"allowed":true}})
    );

    // Serialising our view and parsing it again gives the same review, and
    // the spec has exactly the apiserver's shape (the cache key is its JSON).
    let again = serde_json::to_vec(&review).unwrap();
    assert_eq!(ImageReview::from_json(&again).unwrap(), review);
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(serde_json::to_value(&review.spec).unwrap(), sent["spec"]);
}

#[test]
fn image_review_denial_has_reason_and_status_200_shape() {
    let body = apiserver_image_review(
        &["registry.k8s.io.evil.com/kube-apiserver:v1.31.0", "nginx"],
        json!({}),
        "default",
    );
    let decision = decide(
        &ImageReview::from_json(&body).unwrap().to_request(),
        &policy(),
        Mode::Enforce,
    );
    assert!(!decision.allowed);
    assert_eq!(decision.outcome, Outcome::Denied(Rule::UntrustedRegistry));
    assert_eq!(decision.outcome.code(), "untrusted-registry");
    let answer = serde_json::to_value(ImageReviewResponse::from_decision(&decision)).unwrap();
    assert_eq!(answer["status"]["allowed"], json!(false));
    let reason = answer["status"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("2 of 2 images denied: "), "{reason}");
    assert!(reason.contains("\"registry.k8s.io.evil.com/kube-apiserver:v1.31.0\""));
    assert!(reason.contains("\"nginx\" is not pinned by digest"));
    assert!(answer["status"].get("auditAnnotations").is_none());
}

#[test]
fn image_review_ephemeral_containers() {
    // For `pods/ephemeralcontainers` the apiserver sends only the ephemeral
    // containers' images, in the same body shape.
    let body = apiserver_image_review(&["busybox:latest"], json!({}), "default");
    let request = ImageReview::from_json(&body).unwrap().to_request();
    assert_eq!(request.images, ["busybox:latest"]);
    let decision = decide(&request, &policy(), Mode::Enforce);
    assert!(!decision.allowed);
    assert!(
        decision.reason.contains("policy.denyLatest"),
        "{}",
        decision.reason
    );
}

#[test]
fn image_review_accepts_nulls_and_unknown_fields() {
    let body = br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview",
        "metadata":{"name":"x","labels":null},"future":{"a":[1,2]},
        "spec":{"containers":null,"annotations":null,"namespace":null,"newField":true},
        "status":null}"#;
    let request = ImageReview::from_json(body).unwrap().to_request();
    assert!(request.images.is_empty() && request.namespace.is_empty());
    assert!(decide(&request, &policy(), Mode::Enforce).allowed);
    let body = br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{},{"image":null}]}}"#;
    let decision = decide(
        &ImageReview::from_json(body).unwrap().to_request(),
        &policy(),
        Mode::Enforce,
    );
    // A container without an image cannot be judged: fail closed.
    assert_eq!(decision.outcome, Outcome::Denied(Rule::InvalidReference));
}

/// kubelet's mirror pod for a static kube-apiserver that staticpin pinned, as
/// a validating webhook receives it on CREATE.
fn mirror_pod_admission_review(image: &str) -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "5f7a8e0c-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "kube-apiserver-cp1",
            "namespace": "kube-system",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:node:cp1",
                "groups": ["system:nodes", "system:authenticated"]
            },
            "object": {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "name": "kube-apiserver-cp1",
                    "namespace": "kube-system",
                    "creationTimestamp": null,
                    "labels": {"component": "kube-apiserver", "tier": "control-plane"},
                    "annotations": {
                        "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": "10.0.0.10:6443",
                        "kubernetes.io/config.hash": "3c2a1b0d9e8f7a6b5c4d3e2f1a0b9c8d",
                        "kubernetes.io/config.mirror": "3c2a1b0d9e8f7a6b5c4d3e2f1a0b9c8d",
                        "kubernetes.io/config.seen": "2026-11-30T09:00:00.000000000Z",
                        "kubernetes.io/config.source": "file"
                    },
                    "ownerReferences": [{
                        "apiVersion": "v1", "kind": "Node", "name": "cp1",
                        "uid": "0b1c2d3e-0000-4000-8000-000000000001", "controller": true
                    }]
                },
                "spec": {
                    "containers": [{
                        "name": "kube-apiserver",
                        "image": image,
                        "command": ["kube-apiserver", "--advertise-address=10.0.0.10"],
                        "resources": {"requests": {"cpu": "250m"}},
                        "imagePullPolicy": "IfNotPresent"
                    }],
                    "hostNetwork": true,
                    "priorityClassName": "system-node-critical",
                    "nodeName": "cp1"
                },
                "status": {}
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

#[test]
fn mirror_pod_of_a_pinned_static_pod_is_allowed_and_uid_echoed() {
    let body = serde_json::to_vec(&mirror_pod_admission_review(&pinned_apiserver())).unwrap();
    let review = AdmissionReview::from_json(&body).unwrap();
    let request = review.to_request().unwrap();
    assert_eq!(request.images, [pinned_apiserver()]);
    assert_eq!(request.namespace, "kube-system");
    // kubelet's config.* annotations are not policy input.
    assert!(request.annotations.is_empty());
    let decision = decide(&request, &policy(), Mode::Enforce);
    assert!(decision.allowed, "{}", decision.reason);
    let answer = serde_json::to_value(AdmissionReviewResponse::from_decision(
        review.uid(),
        &decision,
    ))
    .unwrap();
    assert_eq!(
        answer,
        json!({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",
               "response":{"uid":"5f7a8e0c-1a2b-4c3d-9e8f-0a1b2c3d4e5f","allowed":true}})
    );

    // The same mirror pod as an ImageReview gets the same decision.
    let image_review = apiserver_image_review(&[&pinned_apiserver()], json!({}), "kube-system");
    let same = decide(
        &ImageReview::from_json(&image_review).unwrap().to_request(),
        &policy(),
        Mode::Enforce,
    );
    assert_eq!(same, decision);

    // An unpinned static pod's mirror is denied like any pod: no exemption by
    // namespace or by the mirror annotation.
    let body = serde_json::to_vec(&mirror_pod_admission_review(
        "registry.k8s.io/kube-apiserver:v1.31.0",
    ))
    .unwrap();
    let review = AdmissionReview::from_json(&body).unwrap();
    let decision = decide(&review.to_request().unwrap(), &policy(), Mode::Enforce);
    assert_eq!(decision.outcome, Outcome::Denied(Rule::NotDigestPinned));
    let answer = serde_json::to_value(AdmissionReviewResponse::from_decision(
        review.uid(),
        &decision,
    ))
    .unwrap();
    assert_eq!(
        answer["response"]["uid"],
        json!("5f7a8e0c-1a2b-4c3d-9e8f-0a1b2c3d4e5f")
    );
    assert_eq!(answer["response"]["allowed"], json!(false));
    assert_eq!(answer["response"]["status"]["code"], json!(403));
    assert!(answer["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("is not pinned by digest"));
}

fn pod_review(sub_resource: &str, operation: &str, pod: Value, annotations: Value) -> Vec<u8> {
    let mut object = pod;
    object["metadata"] = json!({"name": "p", "namespace": "default", "annotations": annotations});
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": sub_resource,
            "namespace": "default",
            "operation": operation,
            "object": object
        }
    }))
    .unwrap()
}

#[test]
fn admission_review_container_lists_and_subresources() {
    let ok = format!("nginx:1.25@{DIGEST}");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {
        "containers": [{"name": "a", "image": ok}],
        "initContainers": [{"name": "i", "image": "evil.com/init:1"}],
        "ephemeralContainers": [{"name": "debug", "image": "busybox"}]
    }});
    let review =
        AdmissionReview::from_json(&pod_review("", "CREATE", pod.clone(), json!({}))).unwrap();
    let request = review.to_request().unwrap();
    assert_eq!(request.images, [ok.as_str(), "evil.com/init:1", "busybox"]);
    let decision = decide(&request, &policy(), Mode::Enforce);
    assert_eq!(decision.outcome, Outcome::Denied(Rule::UntrustedRegistry));
    assert!(
        decision.reason.starts_with("2 of 3 images denied"),
        "{}",
        decision.reason
    );

    let review = AdmissionReview::from_json(&pod_review(
        "ephemeralcontainers",
        "UPDATE",
        pod.clone(),
        json!({}),
    ))
    .unwrap();
    assert_eq!(review.to_request().unwrap().images, ["busybox"]);

    let review =
        AdmissionReview::from_json(&pod_review("status", "UPDATE", pod.clone(), json!({})))
            .unwrap();
    let decision = decide(&review.to_request().unwrap(), &policy(), Mode::Enforce);
    assert!(decision.allowed);
    assert_eq!(decision.outcome, Outcome::NotReviewed);

    // Annotations are filtered like the apiserver filters them for ImageReview,
    // and break-glass works the same through both.
    let review = AdmissionReview::from_json(&pod_review(
        "",
        "CREATE",
        pod,
        json!({BREAK_GLASS_ANNOTATION: "INC-7 mirror outage", "team": "x"}),
    ))
    .unwrap();
    let request = review.to_request().unwrap();
    assert_eq!(
        request.annotations.keys().collect::<Vec<_>>(),
        [BREAK_GLASS_ANNOTATION]
    );
    let decision = decide(&request, &policy(), Mode::Enforce);
    assert!(decision.allowed && decision.loud);
    let answer =
        serde_json::to_value(AdmissionReviewResponse::from_decision("u-1", &decision)).unwrap();
    assert_eq!(
        answer["response"]["auditAnnotations"]["break-glass"],
        json!("INC-7 mirror outage")
    );
    assert!(answer["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("break-glass"));
}

#[test]
fn admission_review_without_pod_images() {
    let deployment = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                    "operation": "CREATE", "object": {"spec": {"template": {}}}}
    }))
    .unwrap();
    let d = decide(
        &AdmissionReview::from_json(&deployment)
            .unwrap()
            .to_request()
            .unwrap(),
        &policy(),
        Mode::Enforce,
    );
    assert_eq!(d.outcome, Outcome::NotReviewed);
    let delete = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "operation": "DELETE", "object": null, "oldObject": {"spec": {}}}
    }))
    .unwrap();
    let r = AdmissionReview::from_json(&delete)
        .unwrap()
        .to_request()
        .unwrap();
    assert!(r.not_reviewed.is_some());
    let create = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "operation": "CREATE"}
    }))
    .unwrap();
    let e = AdmissionReview::from_json(&create)
        .unwrap()
        .to_request()
        .unwrap_err();
    assert!(matches!(e, ReviewError::Malformed { .. }), "{e}");
    // A request that does not say what it is cannot be passed as "not a pod".
    let kindless = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "operation": "CREATE", "object": {"spec": {}}}
    }))
    .unwrap();
    let e = AdmissionReview::from_json(&kindless)
        .unwrap()
        .to_request()
        .unwrap_err();
    assert!(e.to_string().contains("no kind"), "{e}");
}

#[test]
fn audit_mode_and_exempt_namespaces_through_image_review() {
    let body = apiserver_image_review(&["evil.com/x:1"], json!({}), "default");
    let request = ImageReview::from_json(&body).unwrap().to_request();
    let decision = decide(&request, &policy(), Mode::Audit);
    let answer = serde_json::to_value(ImageReviewResponse::from_decision(&decision)).unwrap();
    assert_eq!(answer["status"]["allowed"], json!(true));
    assert!(answer["status"]["auditAnnotations"]["would-deny"]
        .as_str()
        .unwrap()
        .contains("\"evil.com/x:1\""));

    let body = apiserver_image_review(&["evil.com/x:1"], json!({}), "ci-sandbox");
    let decision = decide(
        &ImageReview::from_json(&body).unwrap().to_request(),
        &policy(),
        Mode::Enforce,
    );
    assert_eq!(decision.outcome, Outcome::ExemptNamespace);
}

#[test]
fn evaluate_judges_the_name_not_the_mirror() {
    // `pin` resolves through a hosts.toml mirror but passes the name.
    let p = policy();
    let name = ImageRef::parse(&pinned_apiserver()).unwrap();
    assert!(evaluate(&name, &p).allowed());
    let mirror = ImageRef::parse(&format!("mirror.corp.example/kube-apiserver@{DIGEST}")).unwrap();
    assert_eq!(
        evaluate(&mirror, &p).reason(),
        Some(Rule::UntrustedRegistry)
    );
}

// ---------------------------------------------------------------------------
// Properties

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "spec",
    "containers",
    "initContainers",
    "ephemeralContainers",
    "image",
    "annotations",
    "namespace",
    "request",
    "uid",
    "object",
    "subResource",
    "operation",
    "metadata",
    "group",
    "status",
    BREAK_GLASS_ANNOTATION,
];

const STRINGS: &[&str] = &[
    "imagepolicy.k8s.io/v1alpha1",
    "ImageReview",
    "admission.k8s.io/v1",
    "AdmissionReview",
    "Pod",
    "",
    "ephemeralcontainers",
    "CREATE",
    "DELETE",
    "nginx",
    "registry.k8s.io/pause:3.9",
    "evil.com/x@sha256:0000",
    "kube-system",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        proptest::sample::select(STRINGS).prop_map(|s| json!(s)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((proptest::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// A well-formed review whose type fields may be right, so the generated
/// values reach the spec and the pod.
fn review_value() -> impl Strategy<Value = Value> {
    (json_value(), json_value(), any::<bool>()).prop_map(|(spec, object, image_review)| {
        if image_review {
            json!({"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":spec})
        } else {
            json!({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",
                   "request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},
                              "operation":"CREATE","object":object}})
        }
    })
}

fn image_string() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(STRINGS).prop_map(str::to_string),
        "[a-zA-Z0-9./:@_-]{0,60}",
        ".{0,80}",
        "[a-z]{1,5}\\.[a-z]{2}(:[0-9]{1,4})?/[a-z]{1,6}(:[a-z0-9]{1,5})?(@sha256:[0-9a-f]{64})?",
    ]
}

/// Bodies with the right types throughout, so the images reach `decide`.
fn plausible_review() -> impl Strategy<Value = Value> {
    let containers = || prop::collection::vec(image_string(), 0..5);
    let annotations = prop::collection::btree_map(
        prop_oneof![Just(BREAK_GLASS_ANNOTATION.to_string()), ".{0,20}"],
        ".{0,30}",
        0..3,
    );
    let namespace = prop_oneof![Just("ci-sandbox".to_string()), "[a-z-]{0,10}"];
    let sub = proptest::sample::select(&["", "ephemeralcontainers", "status"][..]);
    (
        containers(),
        containers(),
        annotations,
        namespace,
        sub,
        any::<bool>(),
    )
        .prop_map(
            |(images, more, annotations, namespace, sub, image_review)| {
                let list = |v: &[String]| -> Vec<Value> {
                    v.iter().map(|i| json!({"name": "c", "image": i})).collect()
                };
                if image_review {
                    json!({"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview",
                       "spec":{"containers": list(&images), "annotations": annotations,
                               "namespace": namespace}})
                } else {
                    json!({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",
                       "request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},
                                  "subResource": sub, "namespace": namespace,
                                  "operation":"CREATE",
                                  "object":{"metadata":{"annotations": annotations},
                                            "spec":{"containers": list(&images),
                                                    "ephemeralContainers": list(&more)}}}})
                }
            },
        )
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        review_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        plausible_review().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        // Valid bodies cut short or with one byte changed.
        (
            prop_oneof![review_value(), plausible_review()],
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(v, at, byte, cut)| {
                let mut b = serde_json::to_vec(&v).unwrap();
                let i = at.index(b.len());
                if cut {
                    b.truncate(i);
                } else {
                    b[i] = byte;
                }
                b
            }),
    ]
}

fn check(body: &[u8], policy: &Policy) {
    for mode in [Mode::Enforce, Mode::Audit] {
        if let Ok(review) = ImageReview::from_json(body) {
            let d = decide(&review.to_request(), policy, mode);
            assert!(d.reason.len() <= MAX_REASON_LEN);
            assert!(mode == Mode::Enforce || d.allowed);
            serde_json::to_vec(&ImageReviewResponse::from_decision(&d)).unwrap();
        }
        if let Ok(review) = AdmissionReview::from_json(body) {
            assert!(!review.uid().is_empty());
            if let Ok(request) = review.to_request() {
                let d = decide(&request, policy, mode);
                assert!(d.reason.len() <= MAX_REASON_LEN);
                let answer = AdmissionReviewResponse::from_decision(review.uid(), &d);
                assert_eq!(answer.response.uid, review.uid());
                serde_json::to_vec(&answer).unwrap();
            }
        }
    }
}

fn name_component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,5}((\\.|_|-)[a-z0-9]{1,3}){0,1}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn review_parsers_never_panic(body in bodies()) {
        check(&body, &policy());
        check(&body, &Policy::default());
    }

    /// A prefix cut at a component boundary of an image's own name trusts it;
    /// the same prefix with one more character on its last component does not.
    #[test]
    fn prefix_matching_respects_component_boundaries(
        host in "[a-z]{1,6}\\.[a-z]{2,3}(:[1-9][0-9]{0,3})?",
        path in prop::collection::vec(name_component(), 1..4),
        keep in 0usize..4,
        extra in "[a-z0-9]",
        upper in any::<bool>(),
    ) {
        let image = format!("{host}/{}:v1", path.join("/"));
        let image = ImageRef::parse(&image).unwrap();
        let keep = keep.min(path.len());
        let prefix_host = if upper { host.to_uppercase() } else { host.clone() };
        let mut prefix = prefix_host;
        for c in &path[..keep] {
            prefix.push('/');
            prefix.push_str(c);
        }
        prop_assert!(TrustedPrefix::parse(&prefix).unwrap().matches(&image));
        let slashed = format!("{prefix}/");
        prop_assert!(TrustedPrefix::parse(&slashed).unwrap().matches(&image));
        let longer = format!("{prefix}{extra}");
        if let Ok(p) = TrustedPrefix::parse(&longer) {
            prop_assert!(!p.matches(&image), "{longer} trusts {image}");
        }
    }
}
