use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::pki::{Signer, generate_issuer, generate_root, new_csr, pem_certs};

struct Mesh {
    signer: Signer,
    issuer_der: Vec<u8>,
    anchor: Vec<u8>,
}

fn mesh(td: &str) -> Mesh {
    let root = generate_root(td).unwrap();
    let issuer = generate_issuer(&root, td).unwrap();
    Mesh {
        signer: Signer::new(&issuer).unwrap(),
        issuer_der: pem_certs(&issuer.cert).unwrap().remove(0),
        anchor: pem_certs(&root.cert).unwrap().remove(0),
    }
}

fn workload(m: &Mesh, id: &str, anchors: Vec<Vec<u8>>) -> Arc<Identity> {
    let id: SpiffeId = id.parse().unwrap();
    let ident = Identity::new(id.clone(), anchors).unwrap();
    let (key, csr) = new_csr(&id).unwrap();
    let leaf = m
        .signer
        .sign_csr(&csr, &id, Duration::from_secs(600))
        .unwrap();
    ident
        .set_certificate(vec![leaf, m.issuer_der.clone()], key.serialize_der())
        .unwrap();
    ident
}

/// Runs a handshake in memory; returns what each side saw of the other.
fn handshake(
    client: &Arc<Identity>,
    server: &Arc<Identity>,
) -> Result<(Option<SpiffeId>, Option<SpiffeId>), rustls::Error> {
    let mut c = rustls::ClientConnection::new(
        client.client_config(&[b"x"]).unwrap(),
        server_name(server.id()),
    )?;
    let mut s = rustls::ServerConnection::new(server.server_config(&[b"x"]).unwrap())?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut buf.as_slice()).unwrap();
        s.process_new_packets()?;
        let mut buf = Vec::new();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut buf.as_slice()).unwrap();
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((
                peer_identity(c.peer_certificates()),
                peer_identity(s.peer_certificates()),
            ));
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn mutual_tls_sees_both_identities() {
    let m = mesh("cluster.local");
    let a = workload(
        &m,
        "spiffe://cluster.local/ns/a/sa/front",
        vec![m.anchor.clone()],
    );
    let b = workload(
        &m,
        "spiffe://cluster.local/ns/b/sa/back",
        vec![m.anchor.clone()],
    );
    let (server_seen, client_seen) = handshake(&a, &b).unwrap();
    assert_eq!(server_seen.as_ref(), Some(b.id()));
    assert_eq!(client_seen.as_ref(), Some(a.id()));
}

#[test]
fn rejects_a_foreign_root() {
    let m = mesh("cluster.local");
    let other = mesh("cluster.local");
    let a = workload(
        &m,
        "spiffe://cluster.local/ns/a/sa/front",
        vec![m.anchor.clone()],
    );
    let evil = workload(
        &other,
        "spiffe://cluster.local/ns/b/sa/back",
        vec![other.anchor.clone()],
    );
    assert!(handshake(&a, &evil).is_err());
    assert!(handshake(&evil, &a).is_err());
}

#[test]
fn rejects_another_trust_domain_and_missing_client_cert() {
    let m = mesh("cluster.local");
    let a = workload(
        &m,
        "spiffe://cluster.local/ns/a/sa/front",
        vec![m.anchor.clone()],
    );
    let stranger = workload(
        &m,
        "spiffe://other.domain/ns/b/sa/back",
        vec![m.anchor.clone()],
    );
    let err = handshake(&a, &stranger).unwrap_err().to_string();
    assert!(err.contains("outside trust domain"), "{err}");
    let no_cert = Identity::new(
        "spiffe://cluster.local/ns/c/sa/new".parse().unwrap(),
        vec![m.anchor.clone()],
    )
    .unwrap();
    assert!(handshake(&no_cert, &a).is_err());
}

#[test]
fn rotation_swaps_the_certificate_in_place() {
    let m = mesh("cluster.local");
    let a = workload(
        &m,
        "spiffe://cluster.local/ns/a/sa/front",
        vec![m.anchor.clone()],
    );
    let first = a.credentials().unwrap().info.serial.clone();
    let (key, csr) = new_csr(a.id()).unwrap();
    let leaf = m
        .signer
        .sign_csr(&csr, a.id(), Duration::from_secs(600))
        .unwrap();
    a.set_certificate(vec![leaf, m.issuer_der.clone()], key.serialize_der())
        .unwrap();
    assert_ne!(a.credentials().unwrap().info.serial, first);
    // A certificate for someone else is refused and the old one kept.
    let other: SpiffeId = "spiffe://cluster.local/ns/x/sa/y".parse().unwrap();
    let (key, csr) = new_csr(&other).unwrap();
    let leaf = m
        .signer
        .sign_csr(&csr, &other, Duration::from_secs(600))
        .unwrap();
    assert!(a.set_certificate(vec![leaf], key.serialize_der()).is_err());
    assert_eq!(a.credentials().unwrap().info.identity, *a.id());
}
