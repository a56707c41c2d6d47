//! `data check`: what a config or benchmark needs, what is on disk, and how to get the rest.

use clap::{Parser, Subcommand};
use oodforge_cli::{init_logging, report};
use oodforge_core::config;
use oodforge_data::bags;
use oodforge_data::check::{Status, check_plan, render};
use oodforge_data::plan::{self, Plan};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "data",
    version,
    about = "Inspect the datasets of a config or benchmark"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Report, per dataset, whether it is present, its image count and list hash; for anything
    /// missing, the expected folder tree and where to get it. Exit code 1 if a set is not ready.
    Check {
        /// Experiment config (TOML) whose [data.source] to check.
        #[arg(long, short, conflicts_with_all = ["openood", "classic"])]
        config: Option<PathBuf>,
        /// Override a config key (as `train --set`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// An OpenOOD v1.5 benchmark: cifar10, cifar100, imagenet200, imagenet1k.
        #[arg(long, conflicts_with = "classic")]
        openood: Option<String>,
        /// CIFAR binaries with a paper's OOD suite: cifar10 or cifar100 (with --suite).
        #[arg(long)]
        classic: Option<String>,
        /// energy, oe or palm (with --classic).
        #[arg(long, default_value = "energy")]
        suite: String,
        /// Also check the outlier set (OpenOOD list, or 300K Random Images for --classic).
        #[arg(long)]
        outliers: bool,
        /// Data root for --openood / --classic.
        #[arg(long, default_value = "data")]
        root: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let Command::Check {
        config: cfg_path,
        set,
        openood,
        classic,
        suite,
        outliers,
        root,
    } = args.command;
    let mut bags_read = false;
    let plan: Result<Option<Plan>, Box<dyn std::error::Error>> = (|| {
        if let Some(path) = cfg_path {
            let resolved = config::load(&path, &set)?;
            let c = &resolved.config;
            if let Some(splits) = bags::load(&c.data.source, c.seed) {
                let s = splits?;
                println!(
                    "{}: {} classes, {}-d instance features; slides: {} train, {} validation, {} test (split of seed {})",
                    s.name,
                    s.num_classes,
                    s.dim,
                    s.train.len(),
                    s.val.len(),
                    s.test.len(),
                    c.seed
                );
                bags_read = true;
                return Ok(None);
            }
            return Ok(plan::plan(&c.data.source)?);
        }
        if let Some(b) = openood {
            return Ok(Some(plan::openood(&b, &root, outliers)?));
        }
        if let Some(id) = classic {
            let o = if outliers { "300k" } else { "none" };
            return Ok(Some(plan::classic(&id, &root, &suite, o)?));
        }
        Err("give --config FILE, --openood BENCHMARK or --classic cifar10|cifar100".into())
    })();
    let plan = match plan {
        Ok(Some(p)) => p,
        Ok(None) => {
            if !bags_read {
                println!("the synthetic source is generated in memory: nothing to check");
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => return report(e.as_ref()),
    };
    let reports = check_plan(&plan);
    print!("{}", render(&reports));
    if reports.iter().all(|r| r.status == Status::Ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
