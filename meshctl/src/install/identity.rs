//! Where an installation's trust anchors and issuer come from: files
//! given on the command line, the values, the cluster's existing Secret
//! (so that `upgrade` and a second `install` keep every proxy's trust),
//! or newly generated.

use std::path::PathBuf;

use anyhow::Context;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::render::IDENTITY_SECRET;
use super::values::{Identity, Values};

/// `--identity-*` flags (Linkerd's names).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IdentityFiles {
    /// Trust anchors, PEM (one or more roots).
    #[arg(long)]
    pub identity_trust_anchors_file: Option<PathBuf>,
    /// Issuer certificate, PEM, signed by a trust anchor.
    #[arg(long, requires = "identity_issuer_key_file")]
    pub identity_issuer_certificate_file: Option<PathBuf>,
    /// Issuer private key, PEM.
    #[arg(long, requires = "identity_issuer_certificate_file")]
    pub identity_issuer_key_file: Option<PathBuf>,
    /// A Secret in the mesh's namespace that holds the issuer as
    /// `tls.crt`, `tls.key` and `ca.crt` (e.g. made by cert-manager).
    #[arg(long, conflicts_with = "identity_issuer_certificate_file")]
    pub identity_external_secret: Option<String>,
}

/// Where the identity came from, for the progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Files or values.
    Given,
    /// The cluster's Secret.
    Kept,
    /// Generated now.
    Generated,
}

fn read(p: &PathBuf) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    if common::pki::pem_certs(&text)
        .map(|c| c.is_empty())
        .unwrap_or(true)
        && !text.contains("PRIVATE KEY")
    {
        anyhow::bail!("{}: no PEM certificate or key in it", p.display());
    }
    Ok(text)
}

/// Fills `values.identity`.
pub async fn resolve(
    values: &mut Values,
    files: &IdentityFiles,
    client: Option<&kube::Client>,
    namespace: &str,
) -> anyhow::Result<Source> {
    let id = &mut values.identity;
    if let Some(secret) = &files.identity_external_secret {
        id.external_secret = secret.clone();
    }
    if let Some(p) = &files.identity_trust_anchors_file {
        id.trust_anchors_pem = read(p)?;
    }
    if let (Some(c), Some(k)) = (
        &files.identity_issuer_certificate_file,
        &files.identity_issuer_key_file,
    ) {
        id.issuer.cert_pem = read(c)?;
        id.issuer.key_pem = read(k)?;
    }
    let issuer_known = !id.external_secret.is_empty() || !id.issuer.cert_pem.is_empty();
    if !id.trust_anchors_pem.is_empty() && issuer_known {
        return Ok(Source::Given);
    }
    if let Some(client) = client {
        let name = if id.external_secret.is_empty() {
            IDENTITY_SECRET
        } else {
            &id.external_secret
        };
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        if let Some(s) = secrets.get_opt(name).await? {
            let field = |k: &str| crate::k8s::secret_text(&s, k);
            if id.trust_anchors_pem.is_empty() {
                id.trust_anchors_pem = field("ca.crt");
            }
            if id.external_secret.is_empty() {
                id.issuer.cert_pem = field("tls.crt");
                id.issuer.key_pem = field("tls.key");
            }
            if id.trust_anchors_pem.is_empty() {
                anyhow::bail!(
                    "Secret {namespace}/{name} has no ca.crt: give the trust anchors with --identity-trust-anchors-file"
                );
            }
            return Ok(Source::Kept);
        }
        if !id.external_secret.is_empty() {
            anyhow::bail!(
                "Secret {namespace}/{name} (identity.externalSecret) does not exist: create it first (tls.crt, tls.key, ca.crt), e.g. with cert-manager"
            );
        }
    }
    if !id.trust_anchors_pem.is_empty() || issuer_known {
        anyhow::bail!(
            "give both the trust anchors and the issuer (or neither, and they are generated)"
        );
    }
    let root = common::pki::generate_root(&values.trust_domain)?;
    let issuer = common::pki::generate_issuer(&root, &values.trust_domain)?;
    values.identity = Identity {
        trust_anchors_pem: root.cert,
        issuer: super::values::Issuer {
            cert_pem: issuer.cert,
            key_pem: issuer.key,
        },
        external_secret: String::new(),
    };
    Ok(Source::Generated)
}
