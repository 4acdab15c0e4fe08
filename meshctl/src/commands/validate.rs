//! `meshctl validate -f`: every document checked as the runtime and the
//! controller would, nothing applied. Exit 0 when all are valid, 1 when
//! any is not; one line per problem, `FILE:DOC Kind/name: field: message`.

use crate::cli::{Output, ValidateArgs};

/// Checks the files; returns the exit code.
pub fn validate(args: &ValidateArgs) -> anyhow::Result<i32> {
    let (docs, errors) = super::apply::read_all(&args.files)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&errors)?),
        Output::Table => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!(
                "{} valid, {} invalid",
                docs.len(),
                errors
                    .iter()
                    .map(|e| (&e.source, e.document))
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            );
        }
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}
