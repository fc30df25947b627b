//! `staticpin serve`: flags over the `serve:` config, then the server, in a
//! runtime of its own (two worker threads: the decision path is CPU only).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{fail, path_flag, show, ConfigFlag, EXIT_OK};
use crate::config;
use crate::policy::Mode;
use crate::serve;

const SERVE_EXIT_CODES_HELP: &str = "Exit codes:\n  0  stopped by SIGTERM or SIGINT after answering the requests in progress\n  2  could not start: invalid configuration, unreadable TLS files, a listen\n     address that is not loopback or is taken";

#[derive(Debug, Args)]
#[command(after_help = SERVE_EXIT_CODES_HELP)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigFlag,

    #[arg(long, value_name = "IP:PORT", value_parser = loopback_flag, help = format!(
        "Decision port (HTTPS, client certificates required); loopback only [default: {}]",
        config::DEFAULT_SERVE_LISTEN
    ))]
    pub listen: Option<String>,

    #[arg(long, value_name = "IP:PORT", value_parser = loopback_flag, help = format!(
        "/healthz and /metrics (plain HTTP); loopback only [default: {}]",
        config::DEFAULT_METRICS_LISTEN
    ))]
    pub metrics_listen: Option<String>,

    /// Serving certificate chain, PEM (serve.tlsCert).
    #[arg(long, value_name = "FILE", value_parser = path_flag)]
    pub tls_cert: Option<PathBuf>,

    /// Its private key, PEM (serve.tlsKey).
    #[arg(long, value_name = "FILE", value_parser = path_flag)]
    pub tls_key: Option<PathBuf>,

    /// CA that signs kube-apiserver's client certificate (serve.clientCA).
    #[arg(long = "client-ca", value_name = "FILE", value_parser = path_flag)]
    pub client_ca: Option<PathBuf>,

    /// enforce: deny what the policy denies; audit: allow all, record what would be denied [default: enforce].
    #[arg(long, value_name = "MODE", value_parser = mode_flag)]
    pub mode: Option<Mode>,

    #[arg(long, value_name = "DURATION", value_parser = config::duration::parse, help = format!(
        "A request must arrive whole within this, from its first byte [default: {}]",
        show(serve::DEFAULT_REQUEST_TIMEOUT)
    ))]
    pub request_timeout: Option<Duration>,

    #[arg(long, value_name = "DURATION", value_parser = config::duration::parse, help = format!(
        "Close a keep-alive connection idle this long [default: {}]",
        show(serve::DEFAULT_IDLE_TIMEOUT)
    ))]
    pub idle_timeout: Option<Duration>,

    #[arg(long, value_name = "N", help = format!(
        "Decision-port connections open at once; more wait in the backlog [default: {}]",
        serve::DEFAULT_MAX_CONNECTIONS
    ))]
    pub max_connections: Option<usize>,
}

fn loopback_flag(s: &str) -> Result<String, String> {
    config::check_loopback_listen(s).map(|_| s.to_string())
}

fn mode_flag(s: &str) -> Result<Mode, String> {
    s.parse()
}

impl ServeArgs {
    fn fragment(&self) -> config::Fragment {
        let mut f = config::Fragment::default();
        f.serve = Some(config::ServeFragment {
            listen: self.listen.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            client_ca: self.client_ca.clone(),
            mode: self.mode,
            metrics_listen: self.metrics_listen.clone(),
        });
        f
    }
}

pub fn run(args: ServeArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let fragment = args.fragment();
    let config_flag = args.config.clone();
    let opts = serve::Options {
        timeouts: serve::conn::Timeouts {
            request: args
                .request_timeout
                .unwrap_or(serve::DEFAULT_REQUEST_TIMEOUT),
            idle: args.idle_timeout.unwrap_or(serve::DEFAULT_IDLE_TIMEOUT),
        },
        max_connections: args
            .max_connections
            .unwrap_or(serve::DEFAULT_MAX_CONNECTIONS),
        load: Box::new(move || config_flag.load(fragment.clone())),
    };
    match runtime.block_on(serve::run(opts)) {
        Ok(()) => EXIT_OK,
        Err(e) => fail(e),
    }
}
