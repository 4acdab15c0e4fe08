//! `meshctl validate -f`: every document checked as the runtime and the
//! controller would, nothing applied. Exit 0 when all are valid, 1 when
//! any is not; one line per problem, `FILE:DOC Kind/name: field: message`.
//! `-o yaml` prints what the valid documents become in the native model
//! (Linkerd's ServiceProfile and TrafficSplit as their translation).

use std::collections::BTreeSet;

use crate::cli::{Output, ValidateArgs};

/// Checks the files; returns the exit code.
pub fn validate(args: &ValidateArgs) -> anyhow::Result<i32> {
    let (docs, errors) = super::apply::read_all(&args.files)?;
    let invalid = errors
        .iter()
        .map(|e| (&e.source, e.document))
        .collect::<BTreeSet<_>>()
        .len();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&errors)?),
        Output::Table => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!("{} valid, {invalid} invalid", docs.len());
        }
        Output::Yaml => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            for (file, d) in &docs {
                let native = d.object.native();
                if native.len() != 1 || native[0] != d.object {
                    println!(
                        "# {file}:{} {} becomes:",
                        d.index,
                        api::manifest::address(&d.object)
                    );
                }
                for o in native {
                    println!(
                        "---\n{}",
                        serde_yaml_ng::to_string(&o.to_document())?.trim_end()
                    );
                }
            }
        }
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}
