//! `staticpin status [PATH...]`: every image with its pin, trust and drift.
//! The work is [`pass::drift::status`]; this prints it and picks the exit code.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use clap::Args;
use serde_json::json;

use super::{fail, OutputFormat, PolicyArgs, RegistryArgs, EXIT_CHECK, EXIT_FAILED, EXIT_OK};
use crate::config;
use crate::pass::drift::{self, Status};
use crate::pass::metrics::{self, Counters, Metrics};
use crate::pass::Outcome;
use crate::registry::HttpResolver;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Report format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: OutputFormat,

    /// Also write Prometheus metrics (with the drifted count) here. Config: metricsFile.
    #[arg(long, value_name = "FILE", value_parser = super::path_flag)]
    pub metrics_file: Option<PathBuf>,

    /// Manifest files or directories [default: the configured manifestDir].
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

pub async fn run(args: StatusArgs) -> u8 {
    let mut flags = config::Fragment::default();
    flags.metrics_file = args.metrics_file.clone();
    args.policy.apply(&mut flags);
    let cfg = match args.registry.load_config_with(flags) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let settings = match args.registry.settings(&cfg) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let paths = if args.paths.is_empty() {
        vec![cfg.manifest_dir.clone()]
    } else {
        args.paths.clone()
    };
    let started = Instant::now();
    let concurrency = settings.concurrency;
    let resolver = HttpResolver::new(settings);
    let status = drift::status(&paths, &cfg.policy, &resolver, concurrency).await;
    let mut code = if status.has_errors() {
        EXIT_FAILED
    } else if status.needs_attention() {
        EXIT_CHECK
    } else {
        EXIT_OK
    };
    if let Some(file) = &cfg.metrics_file {
        let mut counters = Counters::default();
        counters.record_status(&status);
        let m = Metrics::from_status(&status, &counters, SystemTime::now(), started.elapsed());
        if let Err(e) = metrics::write_textfile(file, &m) {
            eprintln!("staticpin: cannot write the metrics file: {e}");
            code = EXIT_FAILED;
        }
    }
    match args.output {
        OutputFormat::Text => print_text(&status, cfg.policy.has_registry_policy()),
        OutputFormat::Json => {
            let files: Vec<_> = status
                .report
                .files
                .iter()
                .filter_map(|f| {
                    file_problem(&f.outcome).map(|why| json!({"path": f.path, "problem": why}))
                })
                .collect();
            let v = json!({
                "images": status.rows,
                "files": files,
                "registryPolicy": cfg.policy.has_registry_policy(),
                "errors": status.report.errors,
            });
            match serde_json::to_string_pretty(&v) {
                Ok(s) => println!("{s}"),
                Err(e) => return fail(format!("cannot write the JSON report: {e}")),
            }
        }
    }
    code
}

/// Why a file has no rows, when that is worth saying.
fn file_problem(o: &Outcome) -> Option<String> {
    match o {
        Outcome::Failed(e) => Some(e.to_string()),
        Outcome::Skipped(s) if s.is_error => Some(s.reason.clone()),
        _ => None,
    }
}

fn print_text(status: &Status, has_policy: bool) {
    let header = [
        "FILE",
        "CONTAINER",
        "REFERENCE",
        "DIGEST",
        "TRUSTED",
        "DRIFT",
    ];
    let mut table: Vec<[String; 6]> = vec![header.map(String::from)];
    for r in &status.rows {
        let digest = r
            .digest
            .as_deref()
            .map(|d| d.chars().take(19).collect::<String>())
            .unwrap_or_else(|| "-".into());
        let trusted = match r.trusted {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let drift = match (r.drift.label(), r.drift.reason()) {
            (label, Some(why)) => format!("{label} ({why})"),
            (label, None) => label.to_string(),
        };
        table.push([
            format!("{}:{}", r.file.display(), r.line),
            r.container.clone().unwrap_or_else(|| "-".into()),
            r.reference.clone(),
            digest,
            trusted.into(),
            drift,
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &table {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", line.trim_end());
    }
    for f in &status.report.files {
        if let Some(why) = file_problem(&f.outcome) {
            eprintln!("staticpin: {}: {why}", f.path.display());
        }
    }
    for e in &status.report.errors {
        eprintln!("staticpin: {e}");
    }
    if !has_policy {
        println!("no registry policy: policy.trustedRegistries is empty");
    }
}
