//! `mesh-proxy init`: the iptables rules that send a pod's TCP through its
//! proxy, in the pod's own network namespace (as Istio's istio-iptables and
//! Linkerd's proxy-init do).
//!
//! Outbound TCP goes to the outbound port and inbound TCP to the inbound
//! port, except: the proxy's own traffic (by UID), loopback, the proxy's
//! mTLS and health ports, and the configured ports and CIDRs.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::ports;

/// What to redirect and what to leave alone.
#[derive(Debug, Clone, clap::Args)]
pub struct RedirectConfig {
    /// UID the proxy runs as; its traffic is never redirected.
    #[arg(long, env = "MESH_PROXY_UID", default_value_t = 1337)]
    pub proxy_uid: u32,
    /// Inbound ports not sent to the proxy (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports not sent to the proxy (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination CIDRs not sent to the proxy (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_cidr)]
    pub exclude_outbound_cidrs: Vec<String>,
    /// Print the rules instead of installing them.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_cidr(s: &str) -> Result<String, String> {
    let (ip, len) = s.split_once('/').unwrap_or((s, "32"));
    let ip: std::net::Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{s:?}: not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{s:?}: bad prefix length"))?;
    if len > 32 {
        return Err(format!("{s:?}: prefix length above 32"));
    }
    Ok(format!("{ip}/{len}"))
}

impl RedirectConfig {
    /// The `iptables-restore` input for the nat table.
    pub fn rules(&self) -> String {
        let mut r = vec![
            "*nat".to_string(),
            ":PREROUTING ACCEPT [0:0]".into(),
            ":INPUT ACCEPT [0:0]".into(),
            ":OUTPUT ACCEPT [0:0]".into(),
            ":POSTROUTING ACCEPT [0:0]".into(),
            ":MESH_INBOUND - [0:0]".into(),
            ":MESH_OUTPUT - [0:0]".into(),
            "-A PREROUTING -p tcp -j MESH_INBOUND".into(),
        ];
        let mut inbound_skip = vec![ports::MTLS, ports::HEALTH];
        inbound_skip.extend(&self.exclude_inbound_ports);
        for p in inbound_skip {
            r.push(format!("-A MESH_INBOUND -p tcp --dport {p} -j RETURN"));
        }
        r.push(format!(
            "-A MESH_INBOUND -p tcp -j REDIRECT --to-ports {}",
            ports::INBOUND
        ));
        r.push("-A OUTPUT -p tcp -j MESH_OUTPUT".into());
        r.push(format!(
            "-A MESH_OUTPUT -m owner --uid-owner {} -j RETURN",
            self.proxy_uid
        ));
        r.push("-A MESH_OUTPUT -o lo -j RETURN".into());
        r.push("-A MESH_OUTPUT -d 127.0.0.0/8 -j RETURN".into());
        for c in &self.exclude_outbound_cidrs {
            r.push(format!("-A MESH_OUTPUT -d {c} -j RETURN"));
        }
        for p in &self.exclude_outbound_ports {
            r.push(format!("-A MESH_OUTPUT -p tcp --dport {p} -j RETURN"));
        }
        r.push(format!(
            "-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports {}",
            ports::OUTBOUND
        ));
        r.push("COMMIT".into());
        r.join("\n") + "\n"
    }

    /// Installs the rules in the current network namespace.
    pub fn apply(&self) -> anyhow::Result<()> {
        let rules = self.rules();
        if self.dry_run {
            print!("{rules}");
            return Ok(());
        }
        let mut child = Command::new("iptables-restore")
            .arg("-w")
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("running iptables-restore: {e} (install the iptables package)")
            })?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("iptables-restore: no stdin"))?
            .write_all(rules.as_bytes())?;
        let status = child.wait()?;
        anyhow::ensure!(
            status.success(),
            "iptables-restore failed ({status}); rules were:\n{rules}"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RedirectConfig {
        RedirectConfig {
            proxy_uid: 20001,
            exclude_inbound_ports: vec![22],
            exclude_outbound_ports: vec![5353],
            exclude_outbound_cidrs: vec!["10.0.0.0/8".into()],
            dry_run: true,
        }
    }

    #[test]
    fn exclusions_come_before_the_redirects() {
        let rules = config().rules();
        let pos = |needle: &str| {
            rules
                .find(needle)
                .unwrap_or_else(|| panic!("missing {needle}\n{rules}"))
        };
        let uid = pos("--uid-owner 20001 -j RETURN");
        let lo = pos("-o lo -j RETURN");
        let cidr = pos("-d 10.0.0.0/8 -j RETURN");
        let port = pos("--dport 5353 -j RETURN");
        let out = pos("REDIRECT --to-ports 15001");
        assert!(uid < out && lo < out && cidr < out && port < out);
        let mtls = pos("MESH_INBOUND -p tcp --dport 15008 -j RETURN");
        let health = pos("--dport 15020 -j RETURN");
        let ssh = pos("--dport 22 -j RETURN");
        let inb = pos("REDIRECT --to-ports 15006");
        assert!(mtls < inb && health < inb && ssh < inb);
        assert!(rules.starts_with("*nat\n") && rules.ends_with("COMMIT\n"));
    }

    #[test]
    fn cidrs_are_checked() {
        assert_eq!(parse_cidr("10.1.0.0/16").unwrap(), "10.1.0.0/16");
        assert_eq!(parse_cidr("10.1.2.3").unwrap(), "10.1.2.3/32");
        assert!(parse_cidr("10.1.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
    }
}
