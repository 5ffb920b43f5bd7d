//! CIDR input of `user add --cidr` (cli.md §2.2, auth.md §5): parsed and normalised before the coordinator is
//! contacted, so a typo exits 2 with a suggestion. The coordinator validates again on its side; this module only
//! gives the operator the early, exact message.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};

/// Parses one CIDR: a bare address becomes `/32` or `/128`, an IPv4-mapped IPv6 network becomes its IPv4 network
/// (auth.md §5 treats `::ffff:a.b.c.d` as `a.b.c.d` everywhere), and a network with host bits set is refused. The
/// error is the message after `dffmpeg-admin: `.
pub(crate) fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let net = if text.contains('/') {
        IpNet::from_str(text).map_err(|_| not_a_network(text))?
    } else {
        IpNet::from(IpAddr::from_str(text).map_err(|_| not_a_network(text))?)
    };
    let net = unmap_ipv4(net);
    let network = net.trunc();
    if network != net {
        return Err(format!(
            "invalid CIDR '{text}': host bits set; did you mean {network}?"
        ));
    }
    Ok(net)
}

fn not_a_network(text: &str) -> String {
    format!("invalid CIDR '{text}': not an IP address or network")
}

/// `::ffff:10.0.0.0/104` → `10.0.0.0/8`; anything else unchanged.
fn unmap_ipv4(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else {
        return net;
    };
    match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
        (Some(v4), Some(prefix)) => Ipv4Net::new(v4, prefix).map(IpNet::V4).unwrap_or(net),
        _ => net,
    }
}

/// Parses every CIDR in order and drops duplicates (after normalisation), keeping the first occurrence. An empty
/// result means the coordinator's default (`0.0.0.0/0`, `::/0`).
pub(crate) fn normalise_cidrs<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(inputs.len());
    for input in inputs {
        let text = parse_cidr(input.as_ref())?.to_string();
        if !out.contains(&text) {
            out.push(text);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_become_host_networks() {
        assert_eq!(
            parse_cidr("192.168.1.7").unwrap().to_string(),
            "192.168.1.7/32"
        );
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_cidr("2001:DB8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            parse_cidr("::ffff:10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
    }

    #[test]
    fn networks_are_checked_for_host_bits() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(parse_cidr("::/0").unwrap().to_string(), "::/0");
        assert_eq!(
            parse_cidr("::ffff:10.0.0.0/104").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_cidr("10.0.0.1/8").unwrap_err(),
            "invalid CIDR '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            parse_cidr("2001:db8::1/32").unwrap_err(),
            "invalid CIDR '2001:db8::1/32': host bits set; did you mean 2001:db8::/32?"
        );
    }

    #[test]
    fn garbage_is_not_a_network() {
        for bad in [
            "lan",
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0/",
            "/8",
            " 10.0.0.1",
            "fe80::1%eth0",
            "1.2.3.4/x",
        ] {
            assert_eq!(
                parse_cidr(bad).unwrap_err(),
                format!("invalid CIDR '{bad}': not an IP address or network")
            );
        }
    }

    #[test]
    fn duplicates_are_dropped_in_order() {
        let inputs = [
            "10.0.0.1",
            "192.168.1.0/24",
            "10.0.0.1/32",
            "::1",
            "192.168.1.0/24",
        ];
        assert_eq!(
            normalise_cidrs(&inputs).unwrap(),
            vec!["10.0.0.1/32", "192.168.1.0/24", "::1/128"]
        );
        assert!(normalise_cidrs::<&str>(&[]).unwrap().is_empty());
        assert!(
            normalise_cidrs(&["10.0.0.0/8", "lan"])
                .unwrap_err()
                .contains("'lan'")
        );
    }
}
