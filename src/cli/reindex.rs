//! `regate reindex`: rebuilds the referrers index in regate's state database
//! from the registry's storage (managed mode, or `gc.storage_root`), else
//! through the registry API at `upstream.url`.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Settings;
use crate::referrers::reindex;

pub fn run(config: &Path) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let state = match crate::state::State::from_settings(&settings.state) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("regate reindex: {e}");
            return ExitCode::FAILURE;
        }
    };
    let storage = match (&settings.upstream.managed, &settings.gc.storage_root) {
        (Some(m), _) => Some(m.data_dir.join("storage")),
        (None, Some(root)) => Some(root.clone()),
        (None, None) => None,
    };
    let result = match (storage, &settings.upstream.url) {
        (Some(root), _) => {
            println!("reading manifests from the storage at {}", root.display());
            reindex::from_storage(&state, &root)
        }
        (None, Some(url)) => {
            println!("walking the registry API at {} (referrers pushed by digest only cannot be found this way; set gc.storage_root to read the storage)", url.origin());
            let authorization = match crate::auth::upstream_authorization(&settings.auth) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("regate reindex: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let up = &settings.upstream;
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(async {
                    // The server's client: its timeouts and credentials.
                    let client = crate::proxy::UpstreamClient::new(
                        up.connect_timeout,
                        up.response_timeout,
                        authorization,
                    );
                    let api = crate::registry_api::RegistryApi::new(client, &url.origin());
                    reindex::from_api(&state, &api).await
                }),
                Err(e) => {
                    eprintln!("regate reindex: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        (None, None) => unreachable!("validation requires upstream.url or [upstream.managed]"),
    };
    match result {
        Ok(stats) => {
            println!(
                "{} repositories, {} manifests read, {} referrers indexed",
                stats.repositories, stats.manifests, stats.referrers
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("regate reindex: {e}");
            ExitCode::FAILURE
        }
    }
}
