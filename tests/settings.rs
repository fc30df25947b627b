//! Flags and config files end to end: each value is parsed and bounded the
//! same way whether it comes from a flag or a key, a bad one is exit 2 with a
//! message (never a panic), and nothing is written on the way out.

mod support;

use support::cli::{Out, Sandbox};

/// Asks no registry: `resolve` prints a digest-pinned reference as is.
const PINNED: &str =
    "127.0.0.1:1/etcd:3.5.16-0@sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// A static pod whose image points at a loopback port nothing listens on.
const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  namespace: kube-system\nspec:\n  containers:\n  - name: etcd\n    image: 127.0.0.1:1/etcd:3.5.16-0\n";

fn assert_refused(out: &Out, flag: &str, why: &str) {
    assert_eq!(out.code, 2, "{flag}: {out}");
    assert!(!out.stderr.contains("panicked"), "{flag}: {out}");
    assert!(out.stderr.contains(flag), "{flag}: {out}");
    assert!(out.stderr.contains(why), "{flag}: want {why:?}\n{out}");
}

#[test]
fn out_of_range_duration_flags_exit_2_and_write_nothing() {
    let sb = Sandbox::new();
    let file = sb.path("manifests/etcd.yaml");
    std::fs::write(&file, POD).unwrap();
    let manifests = sb.path("manifests");
    let dir = manifests.to_str().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("--timeout", "1e20", "at most 1 day"),
        ("--timeout", "86401", "at most 1 day"),
        ("--timeout", "25h", "at most 1 day"),
        ("--timeout", "inf", "at most 1 day"),
        ("--timeout", "nan", "positive"),
        ("--timeout", "0", "positive"),
        ("--timeout", "-1", "positive"),
        ("--timeout", "soon", "e.g. 30, 2.5, 500ms, 30s, 5m or 1h"),
        ("--timeout", "30 s", "e.g. 30, 2.5"),
        ("--connect-timeout", "1e20", "at most 1 day"),
        ("--health-timeout", "1e20", "at most 1 day"),
        // Parsed today, then overflows the health gate's deadline after
        // kube-apiserver.yaml was written.
        ("--health-timeout", "1e19", "at most 1 day"),
        ("--health-timeout", "0", "positive"),
        ("--health-settle", "1e20", "at most 1 day"),
        ("--health-settle", "-1", "must not be negative"),
    ];
    for (flag, value, why) in cases {
        let mut args = vec!["--insecure-registry", "127.0.0.1:1", "--retries", "0"];
        if flag.starts_with("--health") {
            args.push("--wait-healthy");
        }
        // `--flag=value`, so that "-1" is a value and not a flag.
        let arg = format!("{flag}={value}");
        args.extend([arg.as_str(), dir]);
        let out = sb.run("pin", &args);
        assert_refused(&out, flag, why);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            POD,
            "{flag} {value}"
        );
    }
    for flag in ["--timeout", "--connect-timeout"] {
        let out = sb.resolve(&[flag, "1e20", PINNED]);
        assert_refused(&out, flag, "at most 1 day");
    }
    assert_eq!(std::fs::read_dir(sb.path("backups")).unwrap().count(), 0);
}

#[test]
fn duration_flags_take_seconds_or_units() {
    let sb = Sandbox::new();
    for value in [
        "30", "2.5", "0.5", "500ms", "30s", "5m", "1.5m", "1h", "24h", "86400",
    ] {
        for flag in ["--timeout", "--connect-timeout"] {
            let out = sb.resolve(&[flag, value, PINNED]);
            assert_eq!(out.code, 0, "{flag} {value}: {out}");
            assert_eq!(out.stdout.trim(), PINNED);
        }
    }
    let out = sb.run(
        "pin",
        &["--check", "--health-settle", "0", "--health-timeout", "5m"],
    );
    assert_eq!(out.code, 0, "{out}");
}

#[test]
fn config_durations_are_bounded_like_flags() {
    let sb = Sandbox::new();
    let check = |text: &str| {
        let path = sb.path("check.yaml");
        std::fs::write(&path, text).unwrap();
        sb.raw(&["check-config", path.to_str().unwrap()])
    };
    for (text, why) in [
        ("timeout: 1e20\n", "timeout: must be at most 1 day"),
        ("timeout: 86401\n", "timeout: must be at most 1 day"),
        (
            "connectTimeout: 25h\n",
            "connectTimeout: must be at most 1 day",
        ),
        ("timeout: 0\n", "timeout: must be positive"),
        ("timeout: soon\n", "timeout: expected seconds"),
    ] {
        let out = check(text);
        assert_eq!(out.code, 2, "{text:?}: {out}");
        assert!(out.stderr.contains(why), "{text:?}: want {why:?}\n{out}");
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
    for text in [
        "timeout: 30s\nconnectTimeout: 500ms\n",
        "timeout: 2.5\n",
        "timeout: '5m'\n",
    ] {
        let out = check(text);
        assert_eq!(out.code, 0, "{text:?}: {out}");
    }
    // The same bound applies when the run reads the config.
    sb.write_config("timeout: 1e20\n");
    let out = sb.resolve(&[PINNED]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("timeout: must be at most 1 day"),
        "{out}"
    );
}

#[test]
fn flags_accept_exactly_what_the_config_accepts() {
    let sb = Sandbox::new();
    // (flag, config text, value, accepted)
    let cases: &[(&str, &str, &str, bool)] = &[
        ("--concurrency", "concurrency", "1", true),
        ("--concurrency", "concurrency", "256", true),
        ("--concurrency", "concurrency", "257", false),
        ("--concurrency", "concurrency", "300", false),
        ("--concurrency", "concurrency", "0", false),
        (
            "--insecure-registry",
            "insecureRegistries",
            "reg.local:5000",
            true,
        ),
        (
            "--insecure-registry",
            "insecureRegistries",
            "[::1]:5000",
            true,
        ),
        (
            "--insecure-registry",
            "insecureRegistries",
            "http://reg.local",
            false,
        ),
        (
            "--insecure-registry",
            "insecureRegistries",
            "reg.local/library",
            false,
        ),
        ("--insecure-registry", "insecureRegistries", "reg:0", false),
        (
            "--insecure-registry",
            "insecureRegistries",
            "reg:65536",
            false,
        ),
        ("--insecure-registry", "insecureRegistries", "", false),
        ("--timeout", "timeout", "30s", true),
        ("--timeout", "timeout", "86401", false),
        ("--retries", "retries", "0", true),
        ("--retries", "retries", "-1", false),
    ];
    for (flag, key, value, accepted) in cases {
        let by_flag = sb.resolve(&[&format!("{flag}={value}"), PINNED]);
        // Numbers stay YAML numbers, as an operator would write them.
        let yaml_value = if *key == "insecureRegistries" {
            format!("['{value}']")
        } else if value.parse::<f64>().is_ok() {
            value.to_string()
        } else {
            format!("'{value}'")
        };
        sb.write_config(&format!("{key}: {yaml_value}\n"));
        let by_config = sb.resolve(&[PINNED]);
        sb.write_config("");
        assert_eq!(by_flag.code == 0, *accepted, "{flag} {value:?}: {by_flag}");
        assert_eq!(
            by_config.code == 0,
            *accepted,
            "{key}: {yaml_value}: {by_config}"
        );
        if !accepted {
            assert!(by_flag.stderr.contains(flag), "{by_flag}");
            assert!(by_config.stderr.contains(key), "{by_config}");
        }
    }
}

#[test]
fn admission_enabled_needs_a_config_file() {
    let sb = Sandbox::new();
    let path = sb.path("check.yaml");
    std::fs::write(&path, "admission:\n  enabled: true\n").unwrap();
    let out = sb.raw(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "{}: admission.configFile: must be set when admission.enabled is true",
            path.display()
        )),
        "{out}"
    );
    std::fs::write(
        &path,
        "admission:\n  enabled: true\n  configFile: /etc/kubernetes/admission/admission_config.yaml\n",
    )
    .unwrap();
    let out = sb.raw(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    // Off needs no file.
    std::fs::write(&path, "admission:\n  enabled: false\n").unwrap();
    let out = sb.raw(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
}

#[test]
fn verbose_logs_have_no_colour_codes_off_a_terminal() {
    let sb = Sandbox::new();
    let out = sb.resolve(&["-vv", PINNED]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("read config"), "{out}");
    assert!(!out.stderr.contains('\u{1b}'), "{out:?}", out = out.stderr);
}

#[test]
fn pin_flags_are_validated_with_the_config() {
    let sb = Sandbox::new();
    let manifests = sb.path("manifests");
    std::fs::write(manifests.join("etcd.yaml"), POD).unwrap();
    // kubelet would run backups kept in its manifest directory.
    let out = sb.run(
        "pin",
        &[
            "--backup-dir",
            manifests.to_str().unwrap(),
            "--insecure-registry",
            "127.0.0.1:1",
        ],
    );
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("backupDir: must not be manifestDir"),
        "{out}"
    );
    assert_eq!(std::fs::read_dir(&manifests).unwrap().count(), 1, "{out}");
    let out = sb.run("pin", &["--backup-dir", "", "--check"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("--backup-dir"), "{out}");
}
