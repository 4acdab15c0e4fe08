//! `meshctl local apply|delete -f`: manifests read and checked here, one
//! bad document reported alone (file, document, object, field), the rest
//! sent to the runtime.

use std::io::Read;
use std::path::{Path, PathBuf};

use api::manifest::{self, Object};

use crate::local::StateDir;
use crate::local::client::Client;
use crate::local::objects::ObjectResult;

/// Files named by `-f`: a directory means its YAML files, recursively.
pub(crate) fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" || !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                out.extend(expand(&[e])?);
            } else if e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(e);
            }
        }
    }
    Ok(out)
}

pub(crate) fn read(path: &Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A document and the file it came from.
pub type Sourced = (String, manifest::Document);

/// Every document of `files`: the valid ones with where they came from,
/// and the errors.
pub fn read_all(files: &[PathBuf]) -> anyhow::Result<(Vec<Sourced>, Vec<manifest::ManifestError>)> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for f in expand(files)? {
        let name = if f.as_os_str() == "-" {
            "-".to_string()
        } else {
            f.display().to_string()
        };
        let (good, bad) = manifest::parse(&name, &read(&f)?);
        errors.extend(bad);
        docs.extend(good.into_iter().map(|d| (name.clone(), d)));
    }
    Ok((docs, errors))
}

/// Every valid object of `files` with where it came from; errors printed.
pub fn load(files: &[PathBuf]) -> anyhow::Result<(Vec<(String, manifest::Document)>, usize)> {
    let (docs, errors) = read_all(files)?;
    for e in &errors {
        eprintln!("error: {e}");
    }
    Ok((docs, errors.len()))
}

fn report(
    sources: &[(String, usize)],
    results: &[ObjectResult],
    notes: &[Vec<(String, String)>],
) -> usize {
    let mut errors = 0;
    for (((file, doc), r), notes) in sources.iter().zip(results).zip(notes) {
        let at = if r.field.is_empty() {
            String::new()
        } else {
            format!("{}: ", r.field)
        };
        if r.error {
            errors += 1;
            eprintln!("error: {file}:{doc} {}: {at}{}", r.object, r.message);
        } else {
            println!("{} {}", r.object, r.action);
            if !r.message.is_empty() {
                eprintln!("warning: {file}:{doc} {}: {at}{}", r.object, r.message);
            }
            // Never accepted silently: what is stored and not acted on.
            for (field, note) in notes {
                let at = if field.is_empty() {
                    String::new()
                } else {
                    format!("{field}: ")
                };
                eprintln!("warning: {file}:{doc} {}: {at}{note}", r.object);
            }
        }
    }
    errors
}

async fn send(state: &StateDir, files: &[PathBuf], path: &str) -> anyhow::Result<i32> {
    let (docs, errors) = load(files)?;
    send_docs(state, docs, errors, path).await
}

/// Applies a manifest given as text (`name` is used in messages).
pub async fn apply_text(state: &StateDir, name: &str, text: &str) -> anyhow::Result<i32> {
    let (good, bad) = manifest::parse(name, text);
    for e in &bad {
        eprintln!("error: {e}");
    }
    let docs = good.into_iter().map(|d| (name.to_string(), d)).collect();
    send_docs(state, docs, bad.len(), "/apply").await
}

async fn send_docs(
    state: &StateDir,
    mut docs: Vec<(String, manifest::Document)>,
    mut errors: usize,
    path: &str,
) -> anyhow::Result<i32> {
    // The runtime applies in dependency order; send in that order so that
    // results line up with their documents.
    docs.sort_by_key(|(_, d)| d.object.apply_rank());
    let sources: Vec<(String, usize)> = docs.iter().map(|(f, d)| (f.clone(), d.index)).collect();
    let objects: Vec<Object> = docs.into_iter().map(|(_, d)| d.object).collect();
    let notes: Vec<Vec<(String, String)>> = objects
        .iter()
        .map(|o| {
            if path == "/apply" {
                api::enforcement::not_enforced(o)
            } else {
                Vec::new()
            }
        })
        .collect();
    if !objects.is_empty() {
        let results: Vec<ObjectResult> = Client::new(state.clone()).post(path, &objects).await?;
        errors += report(&sources, &results, &notes);
    }
    Ok(if errors > 0 { 1 } else { 0 })
}

/// `apply -f`.
pub async fn apply(state: &StateDir, files: &[PathBuf]) -> anyhow::Result<i32> {
    send(state, files, "/apply").await
}

/// `delete -f`.
pub async fn delete(state: &StateDir, files: &[PathBuf]) -> anyhow::Result<i32> {
    send(state, files, "/delete").await
}
