//! `data check`: open every set of a plan and report what is there, how many images, the list
//! hash, and for anything missing or broken the expected layout and where to get it.

use crate::error::DataError;
use crate::open::open;
use crate::plan::{Plan, PlannedSet, Role};
use oodforge_core::config::SetSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// The set opens but some image files named by its list are absent.
    Incomplete,
    Missing,
    Corrupt,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Incomplete => "INCOMPLETE",
            Self::Missing => "MISSING",
            Self::Corrupt => "CORRUPT",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SetReport {
    pub role: &'static str,
    pub name: String,
    pub format: &'static str,
    pub location: String,
    pub status: Status,
    pub count: Option<usize>,
    pub fingerprint: Option<String>,
    /// Image files named by a list or found missing; the first few are in `detail`.
    pub missing_files: usize,
    /// The error (with layout and hint) or the first missing files.
    pub detail: Option<String>,
}

pub fn format_name(spec: &SetSpec) -> (&'static str, String) {
    match spec {
        SetSpec::Cifar10 { path, split } => ("cifar10", format!("{path} [{split}]")),
        SetSpec::Cifar100 {
            path,
            split,
            labels,
        } => ("cifar100", format!("{path} [{split}, {labels}]")),
        SetSpec::Svhn { path } => ("svhn", path.clone()),
        SetSpec::ImageFolder { path } => ("image_folder", path.clone()),
        SetSpec::FlatFolder { path } => ("flat_folder", path.clone()),
        SetSpec::ImgList { list, root } => ("imglist", format!("{list} over {root}")),
        SetSpec::MixoeList { list, root } => ("mixoe_list", format!("{list} over {root}")),
        SetSpec::Npy { path } => ("npy", path.clone()),
        SetSpec::Webvision { path, exclude } => {
            ("webvision", format!("{path} [exclude {exclude}]"))
        }
    }
}

/// Check one set (opens it; for file lists also stats every file).
pub fn check_set(
    role: &'static str,
    set: &PlannedSet,
    num_classes: Option<usize>,
    earlier: &[(Role, usize)],
) -> SetReport {
    let (format, location) = format_name(&set.spec);
    let mut report = SetReport {
        role,
        name: set.name.clone(),
        format,
        location,
        status: Status::Ok,
        count: None,
        fingerprint: None,
        missing_files: 0,
        detail: None,
    };
    match open(set, num_classes, earlier) {
        Ok(o) => {
            report.count = Some(o.source.len());
            report.fingerprint = Some(o.source.fingerprint());
            // Lists name files that may be absent; folder scans only find files that exist.
            let is_list = matches!(
                set.spec,
                SetSpec::ImgList { .. } | SetSpec::MixoeList { .. }
            );
            if let Some(list) = o.listing.filter(|_| is_list) {
                let missing = list.missing_files();
                if !missing.is_empty() {
                    report.status = Status::Incomplete;
                    report.missing_files = missing.len();
                    let shown: Vec<String> = missing
                        .iter()
                        .take(5)
                        .map(|p| format!("    {}", p.display()))
                        .collect();
                    report.detail = Some(format!(
                        "{} of {} listed images are missing, e.g.\n{}\n  how to get it: {}",
                        missing.len(),
                        list.files.len(),
                        shown.join("\n"),
                        set.hint
                    ));
                }
            }
        }
        Err(e) => {
            report.status = match e {
                DataError::Missing { .. } => Status::Missing,
                _ => Status::Corrupt,
            };
            report.detail = Some(e.to_string());
        }
    }
    report
}

pub fn check_plan(plan: &Plan) -> Vec<SetReport> {
    let mut sizes = Vec::new();
    plan.sets
        .iter()
        .map(|(role, set)| {
            let classes =
                matches!(role, Role::Train | Role::Test | Role::Val).then_some(plan.num_classes);
            let report = check_set(role.as_str(), set, classes, &sizes);
            if let Some(n) = report.count {
                sizes.push((*role, n));
            }
            report
        })
        .collect()
}

/// A plain-text report, one block per set.
pub fn render(reports: &[SetReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let count = r.count.map_or("-".to_owned(), |c| c.to_string());
        let hash = r
            .fingerprint
            .as_deref()
            .map_or("-".to_owned(), |h| h[..16.min(h.len())].to_owned());
        out.push_str(&format!(
            "{:<10} {:<10} {:<20} {:>9} images  sha256 {:<16}  {} {}\n",
            r.status.as_str(),
            r.role,
            r.name,
            count,
            hash,
            r.format,
            r.location
        ));
        if let Some(d) = &r.detail {
            for line in d.lines() {
                out.push_str(&format!("           {line}\n"));
            }
        }
    }
    let bad = reports.iter().filter(|r| r.status != Status::Ok).count();
    out.push_str(&format!(
        "{} of {} sets ready\n",
        reports.len() - bad,
        reports.len()
    ));
    out
}
