//! `regate fsck [REGISTRY]`: the command line around [`crate::fsck`]: the
//! flags, the progress bar (stderr, only on a terminal), the summary table or
//! JSON on stdout, and the exit code (0 clean, 1 broken, 2 could not check).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Args;

use super::connect::Connect;
use crate::client::Scheme;
use crate::fsck::{Options, Report, Severity, DEFAULT_CONCURRENCY};

#[derive(Args, Debug)]
pub struct FsckArgs {
    /// The registry: HOST:PORT (https), https://HOST:PORT or http://HOST:PORT.
    pub registry: String,
    /// Check only this repository (repeatable); default: every repository of the catalog.
    #[arg(long = "repo")]
    pub repos: Vec<String>,
    /// Requests in flight at most.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: Connect,
}

pub fn run(args: FsckArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("regate fsck: {msg}");
        ExitCode::from(2)
    };
    if args.concurrency == 0 {
        return fail("--concurrency must be at least 1".into());
    }
    let (scheme, host) = Scheme::split(&args.registry);
    if host.is_empty() || host.contains('/') {
        return fail(format!(
            "{:?} is not a registry address; write HOST:PORT, https://HOST:PORT or http://HOST:PORT",
            args.registry
        ));
    }
    let client = match args.connect.client(scheme, host) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} checked  {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let options = Options {
        repositories: args.repos,
        concurrency: args.concurrency,
        page_size: None,
    };
    let result = rt.block_on(crate::fsck::run(&client, &options, &bar));
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(format!("cannot write the report: {e}")),
        }
    } else {
        print_table(&report);
    }
    if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_table(report: &Report) {
    let width = report
        .repositories
        .iter()
        .map(|r| r.repository.len())
        .max()
        .unwrap_or(0)
        .max("REPOSITORY".len());
    println!(
        "{:width$}  {:>6}  {:>9}  {:>6}  {:>6}  {:>8}",
        "REPOSITORY", "TAGS", "MANIFESTS", "BLOBS", "ERRORS", "WARNINGS"
    );
    for r in &report.repositories {
        println!(
            "{:width$}  {:>6}  {:>9}  {:>6}  {:>6}  {:>8}",
            r.repository,
            r.tags,
            r.manifests,
            r.blobs,
            r.count(Severity::Error),
            r.count(Severity::Warning)
        );
    }
    let findings: Vec<_> = report.findings().collect();
    if !findings.is_empty() {
        println!();
        for (repo, f) in findings {
            let severity = match f.severity {
                Severity::Error => "ERROR",
                Severity::Warning => "warning",
            };
            let tags = if f.tags.is_empty() {
                "-".to_owned()
            } else {
                f.tags.join(",")
            };
            println!(
                "{severity:7}  {repo}  tags={tags}  {}  manifest={}  missing={}  {}",
                f.problem.as_str(),
                f.manifest.as_deref().unwrap_or("-"),
                f.missing.as_deref().unwrap_or("-"),
                f.detail
            );
        }
    }
    println!();
    println!(
        "{}: {} repositories, {} errors, {} warnings: {}",
        report.registry,
        report.repositories.len(),
        report.errors,
        report.warnings,
        if report.clean { "clean" } else { "BROKEN" }
    );
}
