//! Who may send what where: local domains for anyone, everything else only for trusted
//! networks or authenticated clients. Never an open relay.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use mx_core::normalize_domain;

use crate::users::Users;

/// Where an accepted recipient's copy goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Into `maildir_root/<domain>/<mailbox>/`.
    Local { domain: String, mailbox: String },
    /// Out through MX routing.
    Remote { domain: String },
}

/// A refusal with its SMTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: String,
}

pub struct RelayPolicy {
    local_domains: HashSet<String>,
    catch_all: HashSet<String>,
    trusted: Vec<IpNet>,
    postmaster_domain: String,
}

impl RelayPolicy {
    pub fn new(
        local_domains: &[String],
        catch_all: &[String],
        trusted: &[IpNet],
        hostname: &str,
    ) -> Self {
        RelayPolicy {
            local_domains: local_domains.iter().cloned().collect(),
            catch_all: catch_all.iter().cloned().collect(),
            trusted: trusted.to_vec(),
            postmaster_domain: local_domains
                .first()
                .cloned()
                .unwrap_or_else(|| hostname.to_string()),
        }
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains.contains(domain)
    }

    /// Judge one RCPT TO address. The address is taken literally: the domain is what follows
    /// the last `@`; `%`, `!` and anything else in the local part are just characters of a
    /// mailbox name, never routing (the percent hack and bang paths are how open relays were
    /// abused).
    pub fn recipient(
        &self,
        address: &str,
        client: IpAddr,
        authenticated: bool,
        users: &Users,
    ) -> Result<Destination, Refusal> {
        // RFC 5321 §4.5.1: <Postmaster> without a domain must always be accepted.
        if address.eq_ignore_ascii_case("postmaster") {
            return Ok(Destination::Local {
                domain: self.postmaster_domain.clone(),
                mailbox: "postmaster".into(),
            });
        }
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Err(refusal(501, "5.1.3", "Recipient address needs a domain"));
        };
        let domain = if domain.starts_with('[') {
            // Address literals are never one of our domains by name: relay rules apply.
            domain.to_ascii_lowercase()
        } else {
            normalize_domain(domain)
                .map_err(|_| refusal(501, "5.1.3", "Recipient domain is not valid"))?
        };
        if self.local_domains.contains(&domain) {
            let mailbox = mailbox_name(local)
                .ok_or_else(|| refusal(550, "5.1.3", "Mailbox name is not acceptable here"))?;
            let known = self.catch_all.contains(&domain)
                || mailbox == "postmaster"
                || users.has_mailbox(&mailbox, &domain);
            return if known {
                Ok(Destination::Local { domain, mailbox })
            } else {
                Err(refusal(550, "5.1.1", "No such user here"))
            };
        }
        if authenticated || self.is_trusted(client) {
            return Ok(Destination::Remote { domain });
        }
        Err(refusal(
            554,
            "5.7.1",
            "Relay access denied: authenticate or send from a trusted network",
        ))
    }
}

/// An IPv4 client seen on a dual-stack socket (`::ffff:a.b.c.d`) is judged as IPv4.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The Maildir folder for a local part, or None when it cannot safely be one. Lower-cased:
/// RFC 5321 lets local parts be case-sensitive, but every mail system users meet folds them.
pub fn mailbox_name(local: &str) -> Option<String> {
    let name = local.to_lowercase();
    let acceptable = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-=?^_`{|}~.".contains(c));
    acceptable.then_some(name)
}

fn refusal(code: u16, enhanced: &'static str, text: &str) -> Refusal {
    Refusal {
        code,
        enhanced,
        text: text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RelayPolicy {
        RelayPolicy::new(
            &["example.com".into(), "catch.example".into()],
            &["catch.example".into()],
            &["127.0.0.0/8".parse().unwrap()],
            "mx.example.com",
        )
    }

    fn users() -> Users {
        Users::parse("alice@example.com\n", "<test>").unwrap()
    }

    const OUTSIDE: &str = "192.0.2.66";
    const INSIDE: &str = "127.0.0.1";

    fn judge(addr: &str, ip: &str, auth: bool) -> Result<Destination, Refusal> {
        policy().recipient(addr, ip.parse().unwrap(), auth, &users())
    }

    #[test]
    fn local_domains_take_mail_from_anyone_for_known_users() {
        assert_eq!(
            judge("Alice@Example.COM", OUTSIDE, false),
            Ok(Destination::Local {
                domain: "example.com".into(),
                mailbox: "alice".into()
            })
        );
        assert_eq!(
            judge("bob@example.com", OUTSIDE, false)
                .unwrap_err()
                .enhanced,
            "5.1.1"
        );
        assert!(judge("anyone@catch.example", OUTSIDE, false).is_ok());
        assert!(judge("postmaster", OUTSIDE, false).is_ok());
        assert!(judge("postmaster@example.com", OUTSIDE, false).is_ok());
    }

    #[test]
    fn other_domains_only_for_trusted_or_authenticated() {
        assert_eq!(
            judge("x@elsewhere.example", OUTSIDE, false)
                .unwrap_err()
                .enhanced,
            "5.7.1"
        );
        assert!(judge("x@elsewhere.example", INSIDE, false).is_ok());
        assert!(judge("x@elsewhere.example", OUTSIDE, true).is_ok());
        assert!(judge("x@elsewhere.example", "::ffff:127.0.0.1", false).is_ok());
    }

    #[test]
    fn percent_hack_and_bang_paths_are_never_routing() {
        for addr in [
            "x%elsewhere.example@example.com",
            "elsewhere.example!x@example.com",
            "\"x@elsewhere.example\"@example.com",
        ] {
            let verdict = judge(addr, OUTSIDE, false);
            assert!(
                matches!(&verdict, Err(r) if r.code == 550),
                "{addr}: {verdict:?}"
            );
        }
        assert_eq!(
            judge("x%elsewhere.example@catch.example", OUTSIDE, false),
            Ok(Destination::Local {
                domain: "catch.example".into(),
                mailbox: "x%elsewhere.example".into()
            })
        );
        assert_eq!(
            judge("x@[192.0.2.1]", OUTSIDE, false).unwrap_err().enhanced,
            "5.7.1"
        );
    }

    #[test]
    fn mailbox_names_cannot_escape_the_maildir() {
        for bad in ["../etc", ".hidden", "a/b", "", "a..b", "sp ace"] {
            assert_eq!(mailbox_name(bad), None, "{bad:?}");
        }
        assert_eq!(mailbox_name("Bob.Smith+tag"), Some("bob.smith+tag".into()));
    }
}
