//! Istio's pod annotations that shape traffic redirection, read the way
//! Istio reads them: comma-separated ports and CIDRs.

use std::collections::BTreeMap;

/// `traffic.sidecar.istio.io/excludeInboundPorts`.
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// `traffic.sidecar.istio.io/excludeOutboundPorts`.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
/// `traffic.sidecar.istio.io/excludeOutboundIPRanges`.
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";

/// What a pod asks to keep out of its proxy.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrafficExclusions {
    /// Inbound ports not redirected.
    pub inbound_ports: Vec<u16>,
    /// Outbound destination ports not redirected.
    pub outbound_ports: Vec<u16>,
    /// Outbound destination CIDRs not redirected (`a.b.c.d/n`).
    pub outbound_cidrs: Vec<String>,
}

fn items(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn ports(key: &str, v: &str) -> Result<Vec<u16>, (String, String)> {
    items(v)
        .map(|p| {
            p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                (
                    key.to_string(),
                    format!("{p:?} is not a port (1-65535); give a comma-separated list"),
                )
            })
        })
        .collect()
}

fn cidr(key: &str, c: &str) -> Result<String, (String, String)> {
    let bad = || {
        (
            key.to_string(),
            format!("{c:?} is not an IPv4 CIDR such as 10.0.0.0/8"),
        )
    };
    let (ip, len) = c.split_once('/').unwrap_or((c, "32"));
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
    Ok(format!("{ip}/{len}"))
}

impl TrafficExclusions {
    /// Reads the annotations; an error names the annotation and the value.
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Result<Self, (String, String)> {
        let get = |k: &str| a.get(k).map(String::as_str).unwrap_or("");
        Ok(Self {
            inbound_ports: ports(EXCLUDE_INBOUND_PORTS, get(EXCLUDE_INBOUND_PORTS))?,
            outbound_ports: ports(EXCLUDE_OUTBOUND_PORTS, get(EXCLUDE_OUTBOUND_PORTS))?,
            outbound_cidrs: items(get(EXCLUDE_OUTBOUND_IP_RANGES))
                .map(|c| cidr(EXCLUDE_OUTBOUND_IP_RANGES, c))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The `mesh-proxy init` flags that keep these out of redirection.
    pub fn init_args(&self) -> Vec<String> {
        let list = |v: &[u16]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut args = Vec::new();
        if !self.inbound_ports.is_empty() {
            args.push(format!(
                "--exclude-inbound-ports={}",
                list(&self.inbound_ports)
            ));
        }
        if !self.outbound_ports.is_empty() {
            args.push(format!(
                "--exclude-outbound-ports={}",
                list(&self.outbound_ports)
            ));
        }
        if !self.outbound_cidrs.is_empty() {
            args.push(format!(
                "--exclude-outbound-cidrs={}",
                self.outbound_cidrs.join(",")
            ));
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_lists() {
        let t = TrafficExclusions::from_annotations(&annotations(&[
            (EXCLUDE_INBOUND_PORTS, "22, 8081"),
            (EXCLUDE_OUTBOUND_PORTS, "5353"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8,192.168.1.1"),
        ]))
        .unwrap();
        assert_eq!(t.inbound_ports, [22, 8081]);
        assert_eq!(t.outbound_ports, [5353]);
        assert_eq!(t.outbound_cidrs, ["10.0.0.0/8", "192.168.1.1/32"]);
        assert_eq!(
            TrafficExclusions::from_annotations(&BTreeMap::new()).unwrap(),
            TrafficExclusions::default()
        );
    }

    #[test]
    fn names_the_bad_annotation() {
        let e = TrafficExclusions::from_annotations(&annotations(&[(
            EXCLUDE_OUTBOUND_PORTS,
            "53,dns",
        )]))
        .unwrap_err();
        assert_eq!(e.0, EXCLUDE_OUTBOUND_PORTS);
        assert!(e.1.contains("\"dns\""));
        let e = TrafficExclusions::from_annotations(&annotations(&[(
            EXCLUDE_OUTBOUND_IP_RANGES,
            "10.0.0.0/40",
        )]))
        .unwrap_err();
        assert_eq!(e.0, EXCLUDE_OUTBOUND_IP_RANGES);
    }
}
