//! Strict TOML experiment configs: `extends`, `--set key=value` overrides, typed schema,
//! value checks, and errors that name the file, the line, the key and what is allowed.
//!
//! Resolution order: the `extends` chain (depth first, in list order), then the file itself,
//! then each `--set` in command-line order. Tables merge key by key, except that a layer which
//! switches a table's variant (`backbone`, `name`, `kind`) replaces that table whole; any other
//! value (arrays included) replaces the earlier one whole.

mod schema;
mod validate;

pub use schema::*;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::{Table, Value};

/// Where a key's value came from: a file and line, or a `--set` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    /// 1-based; 0 for a `--set` override.
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// One thing wrong with a config value.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub origin: Origin,
    /// Dotted key path, e.g. `optim.lr` or `eval.postprocessors[2].temperature`.
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: key `{}`: {}", self.origin, self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: invalid TOML: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: `extends` forms a cycle: {chain}")]
    ExtendsCycle { path: PathBuf, chain: String },
    #[error("--set {arg}: {message}")]
    Override { arg: String, message: String },
    #[error("invalid config:\n{}", render_problems(.0))]
    Invalid(Vec<Problem>),
}

fn render_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A config after `extends` and overrides, checked, with its canonical text and hash.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    pub config: ExperimentConfig,
    /// Canonical TOML of the full config, every default written out (saved as `resolved.toml`).
    pub text: String,
    /// SHA-256 of `text`, hex.
    pub hash: String,
    /// The file given on the command line.
    pub source: PathBuf,
}

impl ResolvedConfig {
    /// First 8 hex digits of the hash (the run folder name).
    pub fn hash8(&self) -> &str {
        &self.hash[..8]
    }
}

/// Key path → origin, for every key and array element of every layer.
type Origins = BTreeMap<String, Origin>;

/// Load `path`, follow its `extends`, apply `overrides` (`a.b=value`, value parsed as TOML and
/// taken as a plain string when it is not valid TOML), deserialize and check.
pub fn load(path: &Path, overrides: &[String]) -> Result<ResolvedConfig, ConfigError> {
    let mut origins = Origins::new();
    let mut table = load_layer(path, &mut Vec::new(), &mut origins)?;
    for arg in overrides {
        apply_override(&mut table, arg, &mut origins)?;
    }
    // Sections whose tag has a default: `[optim]` without `name` is SGD, `[objective]` without
    // `name` is CE, so `--set optim.lr=0.05` works on a config that has no `[optim]` table.
    for (section, tag, default) in [("optim", "name", "sgd"), ("objective", "name", "ce")] {
        if let Some(Value::Table(t)) = table.get_mut(section)
            && !t.contains_key(tag)
        {
            t.insert(tag.into(), Value::String(default.into()));
        }
    }
    if !table.contains_key("name") {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".to_owned());
        table.insert("name".into(), Value::String(stem));
    }
    let fallback = Origin {
        file: path.display().to_string(),
        line: 0,
    };
    let config = deserialize(table, &origins, &fallback)?;
    finish(config, path, &origins)
}

/// Build a resolved config from an in-memory one (tests, programmatic sweeps).
pub fn resolve(config: ExperimentConfig, source: &Path) -> Result<ResolvedConfig, ConfigError> {
    finish(config, source, &Origins::new())
}

/// Check the values, then write the canonical text and its hash.
fn finish(
    config: ExperimentConfig,
    source: &Path,
    origins: &Origins,
) -> Result<ResolvedConfig, ConfigError> {
    let fallback = Origin {
        file: source.display().to_string(),
        line: 0,
    };
    let problems: Vec<Problem> = validate::check(&config)
        .into_iter()
        .map(|(key, message)| Problem {
            origin: locate(origins, &key, &fallback),
            key,
            message,
        })
        .collect();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    let text = toml::to_string(&config).expect("the schema serializes to TOML");
    let hash = hex(&Sha256::digest(text.as_bytes()));
    Ok(ResolvedConfig {
        config,
        text,
        hash,
        source: source.to_path_buf(),
    })
}

/// Dotted paths of the keys whose values differ between two TOML documents (changed, added or
/// removed), sorted. An array is compared whole and reported under its own key.
pub fn differing_keys(a: &str, b: &str) -> Result<Vec<String>, toml::de::Error> {
    fn walk(prefix: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(Value::Table(x)), Some(Value::Table(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, x.get(k), y.get(k), out);
                }
            }
            (x, y) if x != y => out.push(prefix.to_owned()),
            _ => {}
        }
    }
    let a = Value::Table(toml::from_str::<Table>(a)?);
    let b = Value::Table(toml::from_str::<Table>(b)?);
    let mut out = Vec::new();
    walk("", Some(&a), Some(&b), &mut out);
    Ok(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn load_layer(
    path: &Path,
    stack: &mut Vec<PathBuf>,
    origins: &mut Origins,
) -> Result<Table, ConfigError> {
    let canonical = path.canonicalize().map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if stack.contains(&canonical) {
        let mut chain: Vec<String> = stack.iter().map(|p| p.display().to_string()).collect();
        chain.push(canonical.display().to_string());
        return Err(ConfigError::ExtendsCycle {
            path: path.to_path_buf(),
            chain: chain.join(" -> "),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed = DeTable::parse(&text).map_err(|e| syntax_error(path, &text, &e))?;
    let file = path.display().to_string();
    let mut layer_origins = Origins::new();
    collect_table(parsed.get_ref(), "", &text, &file, &mut layer_origins);
    let mut table: Table = toml::from_str(&text).map_err(|e| syntax_error(path, &text, &e))?;

    // `extends` is resolved relative to the file that names it.
    let mut merged = Table::new();
    if let Some(extends) = table.remove("extends") {
        let bases = match extends {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(other),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|v| v.type_str()),
            Value::String(s) => Ok(vec![s]),
            other => Err(other.type_str()),
        }
        .map_err(|found| {
            ConfigError::Invalid(vec![Problem {
                origin: locate(
                    &layer_origins,
                    "extends",
                    &Origin {
                        file: file.clone(),
                        line: 0,
                    },
                ),
                key: "extends".into(),
                message: format!("expected an array of file paths, found {found}"),
            }])
        })?;
        stack.push(canonical);
        let dir = path.parent().unwrap_or(Path::new("."));
        for base in bases {
            let base_table = load_layer(&dir.join(&base), stack, origins)?;
            merge(&mut merged, base_table);
        }
        stack.pop();
    }
    layer_origins.remove("extends");
    // A later layer's keys shadow the earlier origins of the same path and everything below it.
    for key in layer_origins.keys() {
        let prefix = format!("{key}.");
        origins.retain(|k, _| !k.starts_with(&prefix));
    }
    origins.extend(layer_origins);
    merge(&mut merged, std::mem::take(&mut table));
    Ok(merged)
}

fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message: e.message().trim().to_owned(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

fn collect_table(table: &DeTable<'_>, prefix: &str, text: &str, file: &str, out: &mut Origins) {
    for (key, value) in table.iter() {
        let path = join(prefix, key.get_ref());
        let (line, _) = line_col(text, key.span().start);
        out.insert(
            path.clone(),
            Origin {
                file: file.to_owned(),
                line,
            },
        );
        collect_value(value.get_ref(), &path, text, file, out);
    }
}

fn collect_value(value: &DeValue<'_>, path: &str, text: &str, file: &str, out: &mut Origins) {
    match value {
        DeValue::Table(t) => collect_table(t, path, text, file, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                let (line, _) = line_col(text, item.span().start);
                out.insert(
                    item_path.clone(),
                    Origin {
                        file: file.to_owned(),
                        line,
                    },
                );
                collect_value(item.get_ref(), &item_path, text, file, out);
            }
        }
        _ => {}
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Keys that pick a variant of a table (`[model] backbone`, `[objective] name`, `[optim] name`,
/// `[data.source] kind`).
const VARIANT_TAGS: [&str; 3] = ["backbone", "name", "kind"];

/// A layer that switches a table to another variant replaces the table whole: the old variant's
/// keys (a ResNet's `width`, OE's `oe_weight`) mean nothing to the new one.
fn switches_variant(base: &Table, layer: &Table) -> bool {
    VARIANT_TAGS
        .iter()
        .any(|t| matches!((base.get(*t), layer.get(*t)), (Some(a), Some(b)) if a != b))
}

fn merge(base: &mut Table, layer: Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(l)) if !switches_variant(b, &l) => merge(b, l),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn apply_override(table: &mut Table, arg: &str, origins: &mut Origins) -> Result<(), ConfigError> {
    let bad = |message: &str| ConfigError::Override {
        arg: arg.to_owned(),
        message: message.to_owned(),
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE, e.g. optim.lr=0.05"))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key segment"));
    }
    let value = parse_override_value(raw.trim());
    let mut node = table;
    for part in &parts[..parts.len() - 1] {
        let entry = node
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        node = match entry {
            Value::Table(t) => t,
            other => {
                return Err(bad(&format!(
                    "`{part}` is a {}, not a table, so it has no keys",
                    other.type_str()
                )));
            }
        };
    }
    node.insert(parts[parts.len() - 1].to_string(), value);
    let prefix = format!("{key}.");
    origins.retain(|k, _| !k.starts_with(&prefix) && !k.starts_with(&format!("{key}[")));
    origins.insert(
        key.to_owned(),
        Origin {
            file: format!("--set {arg}"),
            line: 0,
        },
    );
    Ok(())
}

fn parse_override_value(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<Table>(&doc) {
        Ok(mut t) => t.remove("v").expect("the key `v` was just written"),
        Err(_) => Value::String(raw.to_owned()),
    }
}

fn deserialize(
    table: Table,
    origins: &Origins,
    fallback: &Origin,
) -> Result<ExperimentConfig, ConfigError> {
    serde_path_to_error::deserialize(table).map_err(|err| {
        let mut key = path_string(err.path());
        let mut message = err.inner().message().trim().to_owned();
        // Tagged enums buffer their content, so the path stops at the enum; the unknown key is
        // still in the message and gives a better line.
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            let candidate = join_path(&key, unknown);
            if !key.ends_with(unknown) {
                key = candidate;
            }
        }
        if message.starts_with("missing field") {
            message = format!(
                "{message} (in table `{}`)",
                if key.is_empty() { "<top level>" } else { &key }
            );
        }
        ConfigError::Invalid(vec![Problem {
            origin: locate(origins, &key, fallback),
            key: if key.is_empty() {
                "<top level>".into()
            } else {
                key
            },
            message,
        }])
    })
}

fn join_path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() || prefix == "?" {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// The origin of `key`, or of its nearest ancestor that has one.
fn locate(origins: &Origins, key: &str, fallback: &Origin) -> Origin {
    let mut probe = key.to_owned();
    loop {
        if let Some(origin) = origins.get(&probe) {
            return origin.clone();
        }
        match probe.rfind(['.', '[']) {
            Some(i) => probe.truncate(i),
            None => return fallback.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
