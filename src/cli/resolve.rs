//! `staticpin resolve IMAGE...`: print each reference pinned to its digest.

use clap::Args;
use serde_json::json;

use super::{fail, OutputFormat, RegistryArgs, EXIT_FAILED, EXIT_OK};
use crate::reference::ImageRef;
use crate::registry::{resolve_all, ErrorKind, HttpResolver, Resolution, ResolveError, Settings};

#[derive(Debug, Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: OutputFormat,

    /// Image references, e.g. registry.k8s.io/etcd:3.5.16-0
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

/// The pinned spelling and what the registry said, or why not.
type Outcome = Result<(String, Resolution), ResolveError>;

pub async fn run(args: ResolveArgs) -> u8 {
    let settings = match args
        .registry
        .load_config()
        .and_then(|c| args.registry.settings(&c))
    {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let results = resolve(settings, &args.images).await;

    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    for e in results.iter().filter_map(|(_, r)| r.as_ref().err()) {
        eprintln!("staticpin: {e}");
    }
    print(&results, args.output);
    if failed > 0 {
        if results.len() > 1 {
            eprintln!(
                "staticpin: {failed} of {} images failed to resolve",
                results.len()
            );
        }
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

/// Each image as given, with its outcome, in the order given. Invalid
/// references fail on their own; only the valid ones reach a registry.
async fn resolve(settings: Settings, images: &[String]) -> Vec<(String, Outcome)> {
    let parsed: Vec<Result<ImageRef, ResolveError>> = images
        .iter()
        .map(|s| {
            ImageRef::parse(s).map_err(|e| ResolveError {
                image: s.clone(),
                registry: "-".into(),
                kind: ErrorKind::InvalidReference,
                detail: e.reason,
            })
        })
        .collect();
    let valid: Vec<ImageRef> = parsed
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let concurrency = settings.concurrency;
    let resolver = HttpResolver::new(settings);
    let mut answers = resolve_all(&resolver, &valid, concurrency)
        .await
        .into_iter();
    parsed
        .into_iter()
        .zip(images)
        .map(|(p, original)| {
            let result = p.and_then(|image| {
                // resolve_all answers each reference it was given, in order.
                let answer = answers.next().unwrap_or_else(|| {
                    Err(ResolveError {
                        image: original.clone(),
                        registry: image.registry_host().to_string(),
                        kind: ErrorKind::Protocol,
                        detail: "no answer for this reference".into(),
                    })
                });
                answer.map(|res| {
                    // An already pinned reference is printed as written.
                    let pinned = match image.digest() {
                        Some(_) => image.original().to_string(),
                        None => image.pinned(&res.digest),
                    };
                    (pinned, res)
                })
            });
            (original.clone(), result)
        })
        .collect()
}

/// Text: one pinned reference per line, failures only on stderr. JSON: one
/// object per image, failures included.
fn print(results: &[(String, Outcome)], output: OutputFormat) {
    match output {
        OutputFormat::Text => {
            for (pinned, _) in results.iter().filter_map(|(_, r)| r.as_ref().ok()) {
                println!("{pinned}");
            }
        }
        OutputFormat::Json => {
            let items: serde_json::Value = results
                .iter()
                .map(|(image, r)| match r {
                    Ok((pinned, res)) => json!({
                        "image": image,
                        "pinned": pinned,
                        "digest": res.digest.to_string(),
                        "mediaType": res.media_type,
                    }),
                    Err(e) => json!({
                        "image": image,
                        "registry": e.registry,
                        "kind": e.kind.as_str(),
                        "error": e.to_string(),
                    }),
                })
                .collect();
            // `{:#}` is serde_json's infallible pretty printer.
            println!("{items:#}");
        }
    }
}
