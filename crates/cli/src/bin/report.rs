//! `report SPEC`: our numbers beside a paper's (`ours (mean ± std) | paper | Δ`), written next to
//! the spec as `<spec>.md` and `<spec>.csv`. `--check` exits 1 when a cell differs from the paper
//! by more than its tolerance or is missing from our results.
//!
//!     report experiments/palm_cifar100/table.toml --runs runs/palm_cifar100/*/s*
//!     report experiments/palm_cifar100/table.toml --aggregate runs/palm_cifar100/seeds/results.json --check

use clap::Parser;
use oodforge_cli::init_logging;
use oodforge_experiments::report::{Report, TableSpec, load_runs, run_dirs};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "report",
    version,
    about = "Compare a paper's table with our runs (mean ± std over seeds)"
)]
struct Args {
    /// Table spec (TOML).
    spec: PathBuf,
    /// Run folders (seeds), for every row; default: the spec's `runs` patterns (table and rows).
    #[arg(long, num_args = 1.., conflicts_with = "aggregate")]
    runs: Vec<PathBuf>,
    /// A results.json written by `eval --runs` (already aggregated over seeds).
    #[arg(long)]
    aggregate: Option<PathBuf>,
    /// Folder for the .md / .csv (default: beside the spec).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit 1 when a difference exceeds its tolerance or a number is missing.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let spec = TableSpec::load(&args.spec)?;
    let ours = if let Some(path) = &args.aggregate {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        oodforge_experiments::Ours::Ood(serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: not an `eval --runs` results.json ({e})",
                path.display()
            )
        })?)
    } else {
        let dirs: Vec<PathBuf> = if args.runs.is_empty() {
            run_dirs(&spec.runs)
        } else {
            args.runs.clone()
        };
        if dirs.is_empty() {
            return Err(format!(
                "{}: no run folder matches {:?}; train the experiment's configs first or pass --runs",
                args.spec.display(),
                spec.runs
            )
            .into());
        }
        load_runs(&dirs)?
    };
    // Rows with runs of their own (another method's folders).
    let mut row_runs = std::collections::BTreeMap::new();
    // (`--runs` / `--aggregate` replace every `runs` of the spec, the rows' included.)
    let overridden = !args.runs.is_empty() || args.aggregate.is_some();
    for patterns in spec
        .rows
        .iter()
        .filter_map(|r| r.runs.clone())
        .filter(|_| !overridden)
    {
        if row_runs.contains_key(&patterns) {
            continue;
        }
        let dirs = run_dirs(&patterns);
        // Rows whose runs do not exist yet show their cells as missing.
        if !dirs.is_empty() {
            row_runs.insert(patterns, load_runs(&dirs)?);
        }
    }
    let mut spec = spec;
    if overridden {
        for r in &mut spec.rows {
            r.runs = None;
        }
    }
    let report = Report::build(&spec, &ours, &row_runs)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.spec.parent().map(PathBuf::from).unwrap_or_default());
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let stem = args
        .spec
        .file_stem()
        .map_or("table".into(), |s| s.to_string_lossy().into_owned());
    let md = report.to_markdown();
    for (ext, body) in [("md", md.clone()), ("csv", report.to_csv())] {
        let path = out.join(format!("{stem}.{ext}"));
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!("{md}");
    let failures = report.failures();
    if args.check && !failures.is_empty() {
        eprintln!("{} cell(s) outside tolerance or missing:", failures.len());
        for c in failures {
            eprintln!(
                "  {} {}: ours {:?}, paper {}",
                c.row,
                c.metric,
                c.ours.map(|o| o.mean),
                c.paper
            );
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
