//! Where challenge validators may connect. An ACME client names the host (and, through
//! redirects, any URL): unchecked, the validator is a proxy into the CA's own network and a
//! port scanner. Only public addresses are reached, plus the internal ranges a profile lists
//! deliberately (device-management networks are often internal).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// The addresses one profile's validations may reach.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    internal: Vec<IpNet>,
}

impl Targets {
    /// Public addresses, and those in `internal` (a profile's `internal_targets`).
    pub fn new(internal: Vec<IpNet>) -> Self {
        Self { internal }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        !is_internal(ip) || self.internal.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4 address carried in an IPv6 one (mapped, compatible, NAT64, 6to4) is judged as the
/// IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let embedded = |hi: u16, lo: u16| {
        IpAddr::V4(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        ))
    };
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated), not :: or ::1.
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => embedded(hi, lo),
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => embedded(hi, lo),
        // 64:ff9b::/96, the well-known NAT64 prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(hi, lo),
        // 2002:AABB:CCDD::/48, 6to4.
        [0x2002, hi, lo, ..] => embedded(hi, lo),
        _ => ip,
    }
}

/// Loopback, private, shared (CGNAT), link-local, multicast, unspecified, broadcast and
/// reserved ranges: nothing an ACME client's public name should resolve to.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_unspecified()
                || a == 0
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || v4.is_multicast()
                || v4.is_broadcast()
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_in_every_form() {
        let none = Targets::default();
        for refused in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.8",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
        ] {
            assert!(!none.permits(ip(refused)), "{refused}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.2.1",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert!(none.permits(ip(public)), "{public}");
        }
    }

    #[test]
    fn a_profile_may_allow_internal_ranges_deliberately() {
        let lab = Targets::new(vec![
            "10.20.0.0/16".parse().unwrap(),
            "127.0.0.0/8".parse().unwrap(),
        ]);
        assert!(lab.permits(ip("10.20.3.4")));
        assert!(lab.permits(ip("127.0.0.1")));
        assert!(
            lab.permits(ip("::ffff:127.0.0.1")),
            "a mapped form of an allowed one"
        );
        assert!(!lab.permits(ip("10.21.0.1")));
        assert!(!lab.permits(ip("::1")), "IPv6 loopback is not in the list");
    }
}
