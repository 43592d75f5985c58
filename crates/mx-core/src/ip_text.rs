//! Addresses as text, the very text of `IpAddr`'s `Display` (RFC 5952 for IPv6), written
//! into a buffer on the stack without `fmt`.
//!
//! A route's JSON names every address twice (exchangers and attempts) and a private one a
//! third time in its diagnostic; through `fmt`, one segment at a time, that was a twentieth of
//! a bulk run's own work.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Deref;

use serde::{Serialize, Serializer};

/// The longest text of an address: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255` would be
/// 45; what this writes is at most 39 (eight groups) or `::ffff:` and a dotted quad.
const MAX_LEN: usize = 45;

/// An address as text, held on the stack.
#[derive(Clone, Copy)]
pub struct IpText {
    bytes: [u8; MAX_LEN],
    len: usize,
}

impl IpText {
    pub fn new(ip: &IpAddr) -> IpText {
        let mut text = IpText {
            bytes: [0; MAX_LEN],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => text.push_v4(v4),
            IpAddr::V6(v6) => text.push_v6(v6),
        }
        text
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits, hex digits, '.' and ':' are ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn push_str(&mut self, text: &str) {
        self.bytes[self.len..self.len + text.len()].copy_from_slice(text.as_bytes());
        self.len += text.len();
    }

    fn push_decimal(&mut self, value: u8) {
        if value >= 100 {
            self.push(b'0' + value / 100);
        }
        if value >= 10 {
            self.push(b'0' + value / 10 % 10);
        }
        self.push(b'0' + value % 10);
    }

    /// Lower-case hex without leading zeros, as `{:x}`.
    fn push_hex(&mut self, value: u16) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut started = false;
        for shift in [12, 8, 4, 0] {
            let digit = (value >> shift) & 0xf;
            if digit != 0 || started || shift == 0 {
                self.push(DIGITS[usize::from(digit)]);
                started = true;
            }
        }
    }

    fn push_v4(&mut self, ip: &Ipv4Addr) {
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                self.push(b'.');
            }
            self.push_decimal(octet);
        }
    }

    fn push_groups(&mut self, groups: &[u16]) {
        for (i, group) in groups.iter().enumerate() {
            if i > 0 {
                self.push(b':');
            }
            self.push_hex(*group);
        }
    }

    /// As std does: an IPv4-mapped address as `::ffff:` and a dotted quad; otherwise the
    /// first longest run of two or more zero groups becomes `::`.
    fn push_v6(&mut self, ip: &Ipv6Addr) {
        if let Some(v4) = ip.to_ipv4_mapped() {
            self.push_str("::ffff:");
            self.push_v4(&v4);
            return;
        }
        let groups = ip.segments();
        let (mut best_start, mut best_len) = (0, 0);
        let (mut start, mut len) = (0, 0);
        for (i, group) in groups.iter().enumerate() {
            if *group == 0 {
                if len == 0 {
                    start = i;
                }
                len += 1;
                if len > best_len {
                    (best_start, best_len) = (start, len);
                }
            } else {
                len = 0;
            }
        }
        if best_len > 1 {
            self.push_groups(&groups[..best_start]);
            self.push_str("::");
            self.push_groups(&groups[best_start + best_len..]);
        } else {
            self.push_groups(&groups);
        }
    }
}

impl Deref for IpText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for IpText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An address as a serde string: what serde's own `IpAddr` writes in a human-readable
/// format, which is the only kind a route is written in.
impl serde::Serialize for IpText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

/// `serialize_with` for an address.
pub(crate) fn serialize_ip<S: Serializer>(ip: &IpAddr, serializer: S) -> Result<S::Ok, S::Error> {
    IpText::new(ip).serialize(serializer)
}

/// `serialize_with` for a list of addresses.
pub(crate) fn serialize_ips<S: Serializer>(
    ips: &[IpAddr],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(ips.iter().map(IpText::new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_text_of_std() {
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.20.3.4",
            "::",
            "::1",
            "1::",
            "2001:db8::d",
            "2001:db8:0:1:1:1:1:1",
            "2001:0:0:1::1",
            "1:0:0:2:0:0:0:3",
            "::ffff:192.0.2.1",
            "::192.0.2.1",
            "fe80::1:2:3:4",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(IpText::new(&ip).as_str(), ip.to_string(), "{text}");
        }
    }

    #[test]
    fn padded_like_an_address() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(format!("{:>12}", IpText::new(&ip)), format!("{ip:>12}"));
    }

    fn group() -> impl Strategy<Value = u16> {
        // Zero groups often, so that runs of every length and position come up.
        prop_oneof![3 => Just(0u16), 1 => Just(0xffff), 4 => any::<u16>(), 2 => 0u16..16]
    }

    proptest! {
        #[test]
        fn v6_as_std_writes_it(groups in proptest::array::uniform8(group()), mapped in any::<bool>()) {
            let mut groups = groups;
            if mapped {
                groups[..5].fill(0);
                groups[5] = 0xffff;
            }
            let ip = IpAddr::V6(Ipv6Addr::from(groups));
            prop_assert_eq!(IpText::new(&ip).to_string(), ip.to_string());
        }

        #[test]
        fn v4_as_std_writes_it(octets in any::<[u8; 4]>()) {
            let ip = IpAddr::V4(Ipv4Addr::from(octets));
            prop_assert_eq!(IpText::new(&ip).to_string(), ip.to_string());
        }
    }
}
